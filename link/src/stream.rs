//! Links over TCP: the handshake and records driven over a tokio `TcpStream`
//! (`docs/spec.md` §6.1–6.2).
//!
//! Handshake messages travel as `len(2) ‖ message`, after the initiator's one preamble byte.
//! The whole handshake runs under a caller-given time limit. Afterwards the stream splits into
//! a [`LinkReader`] and a [`LinkWriter`] that work independently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::keys::LinkKeypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::error::LinkError;
use crate::handshake::{Handshake, LinkKind, MAX_HANDSHAKE_MSG};
use crate::meter::{BufferMeter, Half};
use crate::record::{Opener, Sealer};

/// The least a reader asks of the socket at once. Its buffer grows (doubling) only as bytes
/// arrive, so a peer that announces a long record and stalls makes it hold about what it sent.
const READ_CHUNK: usize = 4096;

/// The reading half of a link.
///
/// It holds no buffer while the link is quiet: its buffers are allocated when bytes arrive,
/// grow with them, and are freed whenever everything received has been handed out and the
/// socket has nothing more (`docs/spec.md` §6.6), so a silent link costs only its fixed state.
/// Given a [`BufferMeter`] ([`LinkReader::count_in`]), it reports every change of capacity
/// before it waits again, and frees the meter's share when dropped.
pub struct LinkReader {
    inner: OwnedReadHalf,
    opener: Opener,
    /// Bytes received and not yet opened, from `start` on.
    received: Vec<u8>,
    start: usize,
    /// The cells of the record last opened.
    plain: Vec<u8>,
    meter: Option<Arc<BufferMeter>>,
}

impl Drop for LinkReader {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.set(Half::Read, 0, Instant::now());
        }
    }
}

impl LinkReader {
    fn new(inner: OwnedReadHalf, opener: Opener) -> Self {
        LinkReader {
            inner,
            opener,
            received: Vec::new(),
            start: 0,
            plain: Vec::new(),
            meter: None,
        }
    }

    /// Counts this reader's buffers in `meter` from now on.
    pub fn count_in(&mut self, meter: Arc<BufferMeter>) {
        self.meter = Some(meter);
        self.report();
    }

    /// Tells the meter, if any, what the buffers hold now.
    fn report(&self) {
        if let Some(m) = &self.meter {
            m.set(Half::Read, self.buffered_capacity(), Instant::now());
        }
    }

    /// Reads the next record and returns the cells it carries, concatenated (a whole number
    /// of 514-byte cells). Fails with [`LinkError::Closed`] when the peer closes cleanly
    /// between records. Cancel-safe: bytes already received stay for the next call.
    pub async fn read_cells(&mut self) -> Result<&[u8], LinkError> {
        loop {
            let pending = &self.received[self.start..];
            if let [hi, lo, rest @ ..] = pending {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                Opener::check_len(len)?;
                if let Some(record) = rest.get(..len) {
                    self.opener.open(record, &mut self.plain)?;
                    self.start += 2 + len;
                    self.report();
                    if let Some(m) = &self.meter {
                        m.progress(Half::Read, Instant::now());
                    }
                    return Ok(&self.plain);
                }
            }
            self.fill().await?;
        }
    }

    /// Bytes of buffer this reader holds now (its allocations' capacity).
    pub fn buffered_capacity(&self) -> usize {
        self.received.capacity() + self.plain.capacity()
    }

    /// Makes room for at least [`READ_CHUNK`] more bytes: doubling what is held, as a `Vec`
    /// would, but never past the end of the record being received and one chunk more, so a
    /// record that stalls one byte short holds about its own length rather than twice it.
    fn grow(&mut self) {
        let len = self.received.len();
        if self.received.capacity() - len >= READ_CHUNK {
            return;
        }
        let record_end = match self.received[..] {
            [hi, lo, ..] => 2 + usize::from(u16::from_be_bytes([hi, lo])),
            _ => 0,
        };
        let target = (2 * len)
            .min(record_end.max(len) + READ_CHUNK)
            .max(len + READ_CHUNK);
        self.received.reserve_exact(target - len);
    }

    /// Receives at least one more byte, waiting with no buffer held if nothing is pending.
    async fn fill(&mut self) -> Result<(), LinkError> {
        if self.start > 0 {
            self.received.drain(..self.start);
            self.start = 0;
        }
        loop {
            self.grow();
            self.report();
            match self.inner.try_read_buf(&mut self.received) {
                Ok(0) if self.received.is_empty() => return Err(LinkError::Closed),
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.received.is_empty() {
                        // Quiet: free the buffers rather than keep a burst's worth per link.
                        self.received = Vec::new();
                        self.plain = Vec::new();
                        self.report();
                    }
                    self.inner.readable().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The writing half of a link.
///
/// Its buffers (the cells taken to send and the records sealed from them) are freed when its
/// link goes quiet; given a [`BufferMeter`] ([`LinkWriter::count_in`]), it reports every change
/// of their capacity before it waits, so a peer that stops reading holds counted bytes only.
pub struct LinkWriter {
    inner: OwnedWriteHalf,
    sealer: Sealer,
    /// Cells taken from the owner's queue, waiting to be sealed ([`LinkWriter::take_cells`]).
    cells: Vec<u8>,
    wire: Vec<u8>,
    meter: Option<Arc<BufferMeter>>,
}

impl Drop for LinkWriter {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.set(Half::Write, 0, Instant::now());
        }
    }
}

impl LinkWriter {
    /// Counts this writer's buffers in `meter` from now on.
    pub fn count_in(&mut self, meter: Arc<BufferMeter>) {
        self.meter = Some(meter);
        self.report();
    }

    fn report(&self) {
        if let Some(m) = &self.meter {
            m.set(Half::Write, self.buffered_capacity(), Instant::now());
        }
    }

    /// Sends encoded cells (a whole, non-zero number of them), as few records as they fit in.
    pub async fn write_cells(&mut self, cells: &[u8]) -> Result<(), LinkError> {
        self.wire.clear();
        self.sealer.seal(cells, &mut self.wire)?;
        self.send_wire().await
    }

    /// Clears the cells buffer and lets `take` append whole encoded cells to it; returns what
    /// `take` returns (how many it took).
    pub(crate) fn take_cells(&mut self, take: impl FnOnce(&mut Vec<u8>) -> usize) -> usize {
        self.cells.clear();
        let n = take(&mut self.cells);
        self.report();
        n
    }

    /// Seals and sends the cells taken by [`LinkWriter::take_cells`].
    pub(crate) async fn send_taken(&mut self) -> Result<(), LinkError> {
        self.wire.clear();
        self.sealer.seal(&self.cells, &mut self.wire)?;
        self.send_wire().await
    }

    async fn send_wire(&mut self) -> Result<(), LinkError> {
        self.report();
        self.inner.write_all(&self.wire).await?;
        if let Some(m) = &self.meter {
            m.progress(Half::Write, Instant::now());
        }
        Ok(())
    }

    /// Frees the buffers (the link has gone quiet).
    pub(crate) fn release_buffer(&mut self) {
        self.cells = Vec::new();
        self.wire = Vec::new();
        self.report();
    }

    /// Bytes of buffer this writer holds now (its allocations' capacity).
    pub fn buffered_capacity(&self) -> usize {
        self.cells.capacity() + self.wire.capacity()
    }

    /// Closes the sending direction.
    pub async fn shutdown(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}

fn split(stream: TcpStream, sealer: Sealer, opener: Opener) -> (LinkReader, LinkWriter) {
    let (r, w) = stream.into_split();
    (
        LinkReader::new(r, opener),
        LinkWriter {
            inner: w,
            sealer,
            cells: Vec::new(),
            wire: Vec::new(),
            meter: None,
        },
    )
}

async fn send_msg(stream: &mut TcpStream, msg: &[u8]) -> Result<(), LinkError> {
    let mut buf = Vec::with_capacity(msg.len() + 2);
    buf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    buf.extend_from_slice(msg);
    stream.write_all(&buf).await?;
    Ok(())
}

async fn recv_msg(stream: &mut TcpStream) -> Result<Vec<u8>, LinkError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HANDSHAKE_MSG {
        return Err(LinkError::HandshakeMessageTooLong(len));
    }
    let mut msg = vec![0u8; len];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn drive(stream: &mut TcpStream, hs: &mut Handshake) -> Result<(), LinkError> {
    while !hs.is_finished() {
        if hs.is_my_turn() {
            let msg = hs.write()?;
            send_msg(stream, &msg).await?;
        } else {
            let msg = recv_msg(stream).await?;
            hs.read(&msg)?;
        }
    }
    Ok(())
}

async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| LinkError::Timeout)?
}

async fn initiate(
    mut stream: TcpStream,
    mut hs: Handshake,
    limit: Duration,
) -> Result<(LinkReader, LinkWriter, [u8; 32]), LinkError> {
    stream.set_nodelay(true)?;
    with_timeout(limit, async {
        stream.write_all(&[hs.kind().preamble()]).await?;
        drive(&mut stream, &mut hs).await
    })
    .await?;
    let hash = hs.handshake_hash()?;
    let (sealer, opener, _) = hs.finish()?;
    let (r, w) = split(stream, sealer, opener);
    Ok((r, w, hash))
}

/// Opens a client link (Noise NK) to a relay whose static link key is `relay_key`.
pub async fn connect_client(
    stream: TcpStream,
    relay_key: &[u8; 32],
    limit: Duration,
) -> Result<(LinkReader, LinkWriter), LinkError> {
    let (r, w, _) = initiate(stream, Handshake::client(relay_key)?, limit).await?;
    Ok((r, w))
}

/// Opens a relay-to-relay link (Noise XK), proving `me` to a relay whose static link key is
/// `relay_key`.
pub async fn connect_relay(
    stream: TcpStream,
    me: &LinkKeypair,
    relay_key: &[u8; 32],
    limit: Duration,
) -> Result<(LinkReader, LinkWriter), LinkError> {
    let (r, w, _) = initiate(stream, Handshake::relay(me, relay_key)?, limit).await?;
    Ok((r, w))
}

/// Opens a probe link (Noise NK, preamble `0x03`) to a relay whose static link key is
/// `relay_key`; returns the halves and the handshake hash the relay's answer must sign
/// (`docs/spec.md` §5.7).
pub async fn connect_probe(
    stream: TcpStream,
    relay_key: &[u8; 32],
    limit: Duration,
) -> Result<(LinkReader, LinkWriter, [u8; 32]), LinkError> {
    initiate(stream, Handshake::probe(relay_key)?, limit).await
}

/// A link accepted by a relay.
pub struct Accepted {
    /// Who opened it.
    pub kind: LinkKind,
    /// The peer's proven static link key, for relay links.
    pub peer_key: Option<[u8; 32]>,
    /// The Noise handshake hash of this link.
    pub handshake_hash: [u8; 32],
    /// The reading half.
    pub reader: LinkReader,
    /// The writing half.
    pub writer: LinkWriter,
}

/// Answers a link handshake on an accepted connection, within `limit`.
pub async fn accept(
    mut stream: TcpStream,
    me: &LinkKeypair,
    limit: Duration,
) -> Result<Accepted, LinkError> {
    stream.set_nodelay(true)?;
    let hs = with_timeout(limit, async {
        let mut pre = [0u8; 1];
        stream.read_exact(&mut pre).await?;
        let mut hs = Handshake::responder(LinkKind::from_preamble(pre[0])?, me)?;
        drive(&mut stream, &mut hs).await?;
        Ok(hs)
    })
    .await?;
    let kind = hs.kind();
    let handshake_hash = hs.handshake_hash()?;
    let (sealer, opener, peer_key) = hs.finish()?;
    let (reader, writer) = split(stream, sealer, opener);
    Ok(Accepted {
        kind,
        peer_key,
        handshake_hash,
        reader,
        writer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::BufferTotal;
    use shallot_proto::cell::CELL_LEN;
    use tokio::net::TcpListener;

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn cells_flow_both_ways_over_tcp() {
        let relay = std::sync::Arc::new(LinkKeypair::generate(&mut rand::thread_rng()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r2 = relay.clone();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut acc = accept(s, &r2, LIMIT).await.unwrap();
            assert_eq!(acc.kind, LinkKind::Client);
            let cells = acc.reader.read_cells().await.unwrap().to_vec();
            acc.writer.write_cells(&cells).await.unwrap();
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = connect_client(s, relay.public().as_bytes(), LIMIT)
            .await
            .unwrap();
        let cells = vec![42u8; 3 * CELL_LEN];
        w.write_cells(&cells).await.unwrap();
        assert_eq!(r.read_cells().await.unwrap(), &cells[..]);
        server.await.unwrap();
        assert!(matches!(r.read_cells().await, Err(LinkError::Closed)));
    }

    /// Both ends of a client link over loopback.
    async fn client_link() -> ((LinkReader, LinkWriter), Accepted) {
        let relay = std::sync::Arc::new(LinkKeypair::generate(&mut rand::thread_rng()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = *relay.public().as_bytes();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            accept(s, &relay, LIMIT).await.unwrap()
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let client = connect_client(s, &key, LIMIT).await.unwrap();
        (client, server.await.unwrap())
    }

    /// A silent link holds no buffer; one that carried a full record frees its buffers
    /// once it is quiet again.
    #[tokio::test]
    async fn quiet_links_hold_no_buffers() {
        let ((_r, mut w), mut acc) = client_link().await;
        assert_eq!(acc.reader.buffered_capacity(), 0);
        assert_eq!(acc.writer.buffered_capacity(), 0);
        assert_eq!(w.buffered_capacity(), 0);
        let cells = vec![7u8; crate::record::MAX_CELLS_PER_RECORD * CELL_LEN];
        w.write_cells(&cells).await.unwrap();
        assert_eq!(acc.reader.read_cells().await.unwrap(), &cells[..]);
        assert!(acc.reader.buffered_capacity() >= cells.len());
        // Nothing more arrives: the next read frees the buffers before it waits.
        let waited =
            tokio::time::timeout(Duration::from_millis(100), acc.reader.read_cells()).await;
        assert!(waited.is_err(), "nothing was sent");
        assert_eq!(acc.reader.buffered_capacity(), 0);
    }

    /// A peer that announces a full record and sends it a few bytes at a time makes the
    /// reader hold about what it sent, not the announced length; the record still arrives.
    #[tokio::test]
    async fn a_record_trickling_in_is_buffered_as_it_arrives() {
        let ((_r, mut w), mut acc) = client_link().await;
        let total = Arc::new(BufferTotal::new(usize::MAX));
        acc.reader
            .count_in(Arc::new(BufferMeter::counted(total.clone())));
        let cells: Vec<u8> = (0..crate::record::MAX_CELLS_PER_RECORD * CELL_LEN)
            .map(|i| i as u8)
            .collect();
        let mut wire = Vec::new();
        w.sealer.seal(&cells, &mut wire).unwrap();
        w.inner.write_all(&wire[..200]).await.unwrap();
        let waited =
            tokio::time::timeout(Duration::from_millis(200), acc.reader.read_cells()).await;
        assert!(waited.is_err(), "the record is not complete");
        let held = acc.reader.buffered_capacity();
        assert!(held <= 4 * READ_CHUNK, "{held} bytes held for 200 received");
        assert!(held > 0);
        assert_eq!(
            total.bytes(),
            held,
            "what a stalled record holds is counted"
        );
        let sender = tokio::spawn(async move {
            for piece in wire[200..].chunks(999) {
                w.inner.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            w
        });
        assert_eq!(acc.reader.read_cells().await.unwrap(), &cells[..]);
        assert_eq!(total.bytes(), acc.reader.buffered_capacity());
        // The record's bytes took at most one record and a chunk, not twice that.
        assert!(
            acc.reader.received.capacity() <= 2 + crate::record::MAX_RECORD_LEN + READ_CHUNK,
            "{}",
            acc.reader.received.capacity()
        );
        let _w = sender.await.unwrap();
        drop(acc);
        assert_eq!(total.bytes(), 0, "a dropped reader leaves the total");
    }

    /// A peer that never reads: the writer blocks with its sealed records held, and those
    /// bytes are counted, with the stall dated from its last completed write; stopping the
    /// writer (as a relay does to a link it closes) frees them from the total.
    #[tokio::test]
    async fn a_writer_blocked_by_a_peer_that_does_not_read_is_counted() {
        let ((_r, _w), mut acc) = client_link().await;
        let total = Arc::new(BufferTotal::new(usize::MAX));
        let meter = Arc::new(BufferMeter::counted(total.clone()));
        acc.writer.count_in(meter.clone());
        let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = written.clone();
        let mut writer = acc.writer;
        let task = tokio::spawn(async move {
            let cells = vec![9u8; crate::record::MAX_CELLS_PER_RECORD * CELL_LEN];
            loop {
                writer.write_cells(&cells).await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // Wait (with a deadline) until no write has completed for 300 ms: the writer is blocked.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let before = written.load(std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if written.load(std::sync::atomic::Ordering::Relaxed) == before && before > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the writer never blocked");
        }
        assert!(
            total.bytes() >= crate::record::MAX_RECORD_LEN,
            "{}",
            total.bytes()
        );
        assert_eq!(total.bytes(), meter.held());
        let since = meter.stalled_since().unwrap();
        assert!(since <= Instant::now() - Duration::from_millis(300));
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(total.bytes(), 0, "a stopped writer leaves the total");
    }

    #[tokio::test]
    async fn probe_links_check_the_key_and_share_the_hash() {
        let relay = std::sync::Arc::new(LinkKeypair::generate(&mut rand::thread_rng()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r2 = relay.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (r3, tx) = (r2.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(acc) = accept(s, &r3, LIMIT).await {
                        let _ = tx.send((acc.kind, acc.handshake_hash));
                    }
                });
            }
        });
        let s = TcpStream::connect(addr).await.unwrap();
        let (_, _, hash) = connect_probe(s, relay.public().as_bytes(), LIMIT)
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), (LinkKind::Probe, hash));
        let wrong = LinkKeypair::generate(&mut rand::thread_rng());
        let s = TcpStream::connect(addr).await.unwrap();
        assert!(connect_probe(s, wrong.public().as_bytes(), LIMIT)
            .await
            .is_err());
    }
}
