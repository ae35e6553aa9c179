//! The client's end of a link to its first hop (`docs/spec.md` §6.2): a writer that batches
//! queued cells into records, and a reader that hands each cell to its circuit.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_link::{LinkError, LinkReader, LinkWriter, MAX_CELLS_PER_RECORD};
use shallot_proto::cell::{Cell, ChanMsg, CircId, CELL_LEN};
use shallot_rt::lock;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

/// What a channel tells a circuit.
#[derive(Debug)]
pub(crate) enum CircEvent {
    /// A cell for the circuit.
    Cell(ChanMsg),
    /// The link closed.
    LinkClosed,
}

/// A link from this client to a relay, shared by the circuits that start there.
pub struct ClientChannel {
    out: Mutex<VecDeque<[u8; CELL_LEN]>>,
    wake: Notify,
    circuits: Mutex<HashMap<CircId, mpsc::UnboundedSender<CircEvent>>>,
    closed: AtomicBool,
    closing: Notify,
    peer: SocketAddr,
}

impl ClientChannel {
    /// Connects to the relay at `addr`, which must prove the static link key `link_key`.
    pub async fn connect(
        addr: SocketAddr,
        link_key: &[u8; 32],
        limit: Duration,
    ) -> Result<Arc<Self>, LinkError> {
        let stream = tokio::time::timeout(limit, TcpStream::connect(addr))
            .await
            .map_err(|_| LinkError::Timeout)??;
        let (reader, writer) = shallot_link::connect_client(stream, link_key, limit).await?;
        let chan = Arc::new(ClientChannel {
            out: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            circuits: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            peer: addr,
        });
        tokio::spawn(write_loop(chan.clone(), writer));
        tokio::spawn(read_loop(chan.clone(), reader));
        Ok(chan)
    }

    /// The relay's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the link has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the link; every circuit on it ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        self.closing.notify_one();
    }

    /// How many circuits use this link.
    pub fn circuit_count(&self) -> usize {
        lock(&self.circuits).len()
    }

    /// Registers a new circuit under a fresh id (top bit set: the client opened the link).
    pub(crate) fn add_circuit(
        &self,
    ) -> Result<(CircId, mpsc::UnboundedReceiver<CircEvent>), LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut table = lock(&self.circuits);
        loop {
            let Some(id) = CircId::from_random(rand::random(), true) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(e) = table.entry(id) {
                e.insert(tx);
                return Ok((id, rx));
            }
        }
    }

    /// Forgets a circuit.
    pub(crate) fn remove_circuit(&self, id: CircId) {
        lock(&self.circuits).remove(&id);
    }

    /// Queues a cell.
    pub(crate) fn send(&self, cell: &Cell) {
        self.send_raw(cell.encode());
    }

    /// Queues an encoded cell.
    pub(crate) fn send_raw(&self, raw: [u8; CELL_LEN]) {
        if self.is_closed() {
            return;
        }
        lock(&self.out).push_back(raw);
        self.wake.notify_one();
    }
}

async fn write_loop(chan: Arc<ClientChannel>, mut writer: LinkWriter) {
    let mut buf = Vec::with_capacity(MAX_CELLS_PER_RECORD * CELL_LEN);
    loop {
        buf.clear();
        {
            let mut out = lock(&chan.out);
            while buf.len() < MAX_CELLS_PER_RECORD * CELL_LEN {
                match out.pop_front() {
                    Some(cell) => buf.extend_from_slice(&cell),
                    None => break,
                }
            }
        }
        if buf.is_empty() {
            if chan.is_closed() {
                break;
            }
            chan.wake.notified().await;
            continue;
        }
        if let Err(e) = writer.write_cells(&buf).await {
            debug!("client link write failed: {e}");
            break;
        }
    }
    writer.shutdown().await;
    chan.close();
}

async fn read_loop(chan: Arc<ClientChannel>, mut reader: LinkReader) {
    'outer: loop {
        let cells = tokio::select! {
            r = reader.read_cells() => match r {
                Ok(cells) => cells,
                Err(e) => {
                    debug!("client link closed: {e}");
                    break;
                }
            },
            _ = chan.closing.notified() => break,
        };
        for raw in cells.chunks_exact(CELL_LEN) {
            let cell = match Cell::decode(raw) {
                Ok(Some(cell)) => cell,
                // Padding.
                Ok(None) => continue,
                Err(e) => {
                    debug!("relay sent a bad cell: {e}");
                    break 'outer;
                }
            };
            let tx = lock(&chan.circuits).get(&cell.circ_id).cloned();
            if let Some(tx) = tx {
                let _ = tx.send(CircEvent::Cell(cell.msg));
            }
        }
    }
    chan.close();
    let circuits: Vec<_> = lock(&chan.circuits).drain().collect();
    for (_, tx) in circuits {
        let _ = tx.send(CircEvent::LinkClosed);
    }
}
