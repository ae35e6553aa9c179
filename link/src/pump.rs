//! The two loops that move cells over an open link (`docs/spec.md` §6.2–6.3), written once for
//! relays and clients: [`write_loop`] drains its owner's queue, as many cells to a record as are
//! waiting (up to 127); [`read_loop`] opens each record and hands every cell to its owner,
//! skipping padding and ending the link on a cell that does not decode.
//!
//! The owner keeps everything else: the queue (anything that is a [`CellQueue`]; a
//! `Mutex<VecDeque<[u8; CELL_LEN]>>` is one, first in first out), its circuit table, and what
//! happens when a loop ends. The two loops and the owner share one [`LinkSignals`]: the owner
//! calls [`LinkSignals::wake_writer`] after queueing cells and [`LinkSignals::close`] to end
//! the link (the writer flushes what is queued, then stops; the reader stops at once).
//!
//! Neither loop holds a buffer while its link is quiet: buffers grow with a burst and are
//! freed when it ends, so an idle link costs only its fixed state (`docs/spec.md` §6.6). Both
//! count what they hold in the link's [`BufferMeter`] ([`LinkSignals::counted`] makes it
//! count in a relay-wide total).
//!
//! ```no_run
//! use std::collections::VecDeque;
//! use std::sync::{Arc, Mutex};
//! use shallot_link::{read_loop, write_loop, LinkReader, LinkSignals, LinkWriter};
//! use shallot_proto::cell::{Cell, CELL_LEN};
//!
//! type Queue = Mutex<VecDeque<[u8; CELL_LEN]>>;
//!
//! fn run(reader: LinkReader, writer: LinkWriter, route: impl Fn(Cell) + Send + Sync + 'static)
//!     -> (Arc<LinkSignals>, Arc<Queue>)
//! {
//!     let signals = Arc::new(LinkSignals::default());
//!     let queue = Arc::new(Queue::default());
//!     let (s, q) = (signals.clone(), queue.clone());
//!     tokio::spawn(async move {
//!         let _ = write_loop(writer, &s, &*q, |_cells| {}).await;
//!         s.close();
//!     });
//!     let s = signals.clone();
//!     tokio::spawn(async move {
//!         let end = read_loop(reader, &s, |cell| {
//!             route(cell);
//!             Ok::<(), std::convert::Infallible>(())
//!         })
//!         .await;
//!         s.close();
//!         // `end` says why: closed here, the link failed, or the peer sent a bad cell.
//!         let _ = end;
//!     });
//!     (signals, queue)
//! }
//! // To send: push `cell.encode()` onto the queue, then `signals.wake_writer()`.
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use shallot_proto::cell::{Cell, CELL_LEN};
use shallot_proto::DecodeError;
use tokio::sync::Notify;

use crate::error::LinkError;
use crate::meter::{BufferMeter, BufferTotal};
use crate::record::MAX_CELLS_PER_RECORD;
use crate::stream::{LinkReader, LinkWriter};

/// What a link's owner and its two loops share: whether the link is closing, the wake-ups,
/// and the meter of the link's buffers.
#[derive(Debug, Default)]
pub struct LinkSignals {
    closed: AtomicBool,
    wake: Notify,
    closing: Notify,
    buffers: Arc<BufferMeter>,
}

impl LinkSignals {
    /// Signals for a link whose loops count their buffers in `total`.
    pub fn counted(total: Arc<BufferTotal>) -> Self {
        LinkSignals {
            buffers: Arc::new(BufferMeter::counted(total)),
            ..Default::default()
        }
    }

    /// What the link's buffers hold.
    pub fn buffers(&self) -> &BufferMeter {
        &self.buffers
    }

    /// Whether the link has closed or is closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Tells the writer that cells are waiting.
    pub fn wake_writer(&self) {
        self.wake.notify_one();
    }

    /// Starts closing the link: the writer sends what is queued and stops; the reader stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        self.closing.notify_one();
    }
}

/// Cells waiting to be written on a link.
pub trait CellQueue: Send + Sync {
    /// Moves up to `max` whole encoded cells, concatenated, onto the end of `out`; returns how
    /// many.
    fn drain_into(&self, max: usize, out: &mut Vec<u8>) -> usize;
}

impl CellQueue for Mutex<VecDeque<[u8; CELL_LEN]>> {
    fn drain_into(&self, max: usize, out: &mut Vec<u8>) -> usize {
        let mut queue = shallot_rt::lock(self);
        let n = max.min(queue.len());
        for cell in queue.drain(..n) {
            out.extend_from_slice(&cell);
        }
        n
    }
}

/// Writes queued cells until the link closes (and its queue is empty) or a write fails, then
/// shuts the sending direction. `on_write` is told how many cells each record carried. Its
/// buffers are freed whenever the queue runs dry.
pub async fn write_loop<Q: CellQueue + ?Sized>(
    mut writer: LinkWriter,
    signals: &LinkSignals,
    queue: &Q,
    mut on_write: impl FnMut(usize),
) -> Result<(), LinkError> {
    writer.count_in(signals.buffers.clone());
    let result = loop {
        let n = writer.take_cells(|buf| queue.drain_into(MAX_CELLS_PER_RECORD, buf));
        if n == 0 {
            if signals.is_closed() {
                break Ok(());
            }
            // Quiet: hold no buffer while waiting, so an idle link costs only its fixed state.
            writer.release_buffer();
            signals.wake.notified().await;
            continue;
        }
        if let Err(e) = writer.send_taken().await {
            break Err(e);
        }
        tracing::trace!(target: "shallot_trace", cells = n, "link: record written");
        on_write(n);
    };
    writer.shutdown().await;
    result
}

/// Why a [`read_loop`] ended.
#[derive(Debug)]
pub enum ReadEnd<E> {
    /// The owner closed the link.
    Closed,
    /// The link failed, or the peer closed it ([`LinkError::Closed`]).
    Link(LinkError),
    /// The peer sent a cell that does not decode: a protocol violation.
    BadCell(DecodeError),
    /// The owner's handler refused a cell.
    Refused(E),
}

impl<E> ReadEnd<E> {
    /// Whether the peer broke the protocol (as opposed to the link closing or failing).
    pub fn is_violation(&self) -> bool {
        matches!(self, ReadEnd::BadCell(_) | ReadEnd::Refused(_))
    }
}

impl<E: fmt::Display> fmt::Display for ReadEnd<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadEnd::Closed => f.write_str("closed by this side"),
            ReadEnd::Link(e) => write!(f, "{e}"),
            ReadEnd::BadCell(e) => write!(f, "peer sent a bad cell: {e}"),
            ReadEnd::Refused(e) => write!(f, "{e}"),
        }
    }
}

/// Reads cells and hands each to `on_cell`, in order, until the link closes, fails, or the
/// peer breaks the protocol. Padding cells are dropped here.
pub async fn read_loop<E>(
    mut reader: LinkReader,
    signals: &LinkSignals,
    mut on_cell: impl FnMut(Cell) -> Result<(), E>,
) -> ReadEnd<E> {
    reader.count_in(signals.buffers.clone());
    loop {
        if signals.is_closed() {
            return ReadEnd::Closed;
        }
        let cells = tokio::select! {
            r = reader.read_cells() => match r {
                Ok(cells) => cells,
                Err(e) => return ReadEnd::Link(e),
            },
            _ = signals.closing.notified() => return ReadEnd::Closed,
        };
        tracing::trace!(target: "shallot_trace", cells = cells.len() / CELL_LEN, "link: record read");
        for raw in cells.chunks_exact(CELL_LEN) {
            match Cell::decode(raw) {
                Ok(Some(cell)) => {
                    if let Err(e) = on_cell(cell) {
                        return ReadEnd::Refused(e);
                    }
                }
                Ok(None) => {}
                Err(e) => return ReadEnd::BadCell(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use shallot_crypto::keys::LinkKeypair;
    use shallot_proto::cell::{ChanMsg, CircId, DestroyReason, PADDING_CELL};
    use tokio::net::{TcpListener, TcpStream};

    const LIMIT: Duration = Duration::from_secs(5);

    async fn pair() -> ((LinkReader, LinkWriter), crate::stream::Accepted) {
        let relay = Arc::new(LinkKeypair::generate(&mut rand::thread_rng()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = *relay.public().as_bytes();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            crate::stream::accept(s, &relay, LIMIT).await.unwrap()
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let client = crate::stream::connect_client(s, &key, LIMIT).await.unwrap();
        (client, server.await.unwrap())
    }

    fn destroy(id: u32) -> [u8; CELL_LEN] {
        Cell::new(
            CircId::new(id).unwrap(),
            ChanMsg::Destroy(DestroyReason::None),
        )
        .encode()
    }

    #[tokio::test]
    async fn cells_cross_in_order_padding_is_skipped_and_close_flushes() {
        let ((_r, w), acc) = pair().await;
        let signals = Arc::new(LinkSignals::default());
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        {
            let mut q = queue.lock().unwrap();
            q.push_back(destroy(1));
            q.push_back(PADDING_CELL);
            for i in 2..=300 {
                q.push_back(destroy(i));
            }
        }
        let records = Arc::new(Mutex::new(Vec::new()));
        let (s, q, rec) = (signals.clone(), queue.clone(), records.clone());
        let writer =
            tokio::spawn(
                async move { write_loop(w, &s, &*q, |n| rec.lock().unwrap().push(n)).await },
            );
        // Closing now still sends everything queued.
        signals.close();
        writer.await.unwrap().unwrap();
        assert_eq!(*records.lock().unwrap(), vec![127, 127, 47]);

        let theirs = LinkSignals::default();
        let mut seen = Vec::new();
        let end = read_loop(acc.reader, &theirs, |cell| {
            seen.push(cell.circ_id.get());
            Ok::<(), ()>(())
        })
        .await;
        assert!(matches!(end, ReadEnd::Link(LinkError::Closed)), "{end:?}");
        assert!(!end.is_violation());
        assert_eq!(seen, (1..=300).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_bad_cell_or_a_refusal_ends_the_reader_as_a_violation() {
        let ((_r, mut w), acc) = pair().await;
        let mut bad = destroy(5);
        bad[4] = 99;
        let mut cells = destroy(4).to_vec();
        cells.extend_from_slice(&bad);
        w.write_cells(&cells).await.unwrap();
        let signals = LinkSignals::default();
        let mut seen = 0;
        let end = read_loop(acc.reader, &signals, |_| {
            seen += 1;
            Ok::<(), ()>(())
        })
        .await;
        assert_eq!(seen, 1);
        assert!(matches!(
            end,
            ReadEnd::BadCell(DecodeError::UnknownCommand(99))
        ));
        assert!(end.is_violation());

        let ((_r, mut w), acc) = pair().await;
        w.write_cells(&destroy(6)).await.unwrap();
        let end = read_loop(acc.reader, &signals, |_| Err("no")).await;
        assert!(matches!(end, ReadEnd::Refused("no")));
    }

    #[tokio::test]
    async fn closing_stops_a_waiting_reader_and_an_idle_writer() {
        let ((r, _w), acc) = pair().await;
        let signals = Arc::new(LinkSignals::default());
        let s = signals.clone();
        let reader = tokio::spawn(async move {
            matches!(
                read_loop(r, &s, |_| Ok::<(), ()>(())).await,
                ReadEnd::Closed
            )
        });
        let s = signals.clone();
        let queue = Mutex::new(VecDeque::new());
        let writer =
            tokio::spawn(async move { write_loop(acc.writer, &s, &queue, |_| {}).await.is_ok() });
        tokio::task::yield_now().await;
        signals.close();
        assert!(tokio::time::timeout(LIMIT, reader).await.unwrap().unwrap());
        assert!(tokio::time::timeout(LIMIT, writer).await.unwrap().unwrap());
    }
}
