//! The client's end of a link to its first hop (`docs/spec.md` §6.2): its queue of cells to
//! send and its table of circuits. The link's read and write loops are `shallot_link::pump`'s,
//! the same the relay runs; this module only says where each cell read goes (to its circuit)
//! and what happens when the link ends (every circuit on it is told).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_link::{read_loop, write_loop, LinkError, LinkSignals, ReadEnd};
use shallot_proto::cell::{Cell, ChanMsg, CircId, CELL_LEN};
use shallot_rt::lock;
use tokio::net::TcpStream;
use tracing::debug;

/// A circuit as its channel sees it: told each cell for it, and the link's end, in the
/// channel's read task (no task hop between the link and the circuit's state).
pub(crate) trait CircSink: Send + Sync {
    /// A cell for the circuit.
    fn cell(&self, msg: ChanMsg);
    /// The link closed.
    fn link_closed(&self);
}

/// A link from this client to a relay, shared by the circuits that start there.
pub struct ClientChannel {
    out: Mutex<VecDeque<[u8; CELL_LEN]>>,
    signals: LinkSignals,
    circuits: Mutex<HashMap<CircId, Arc<dyn CircSink>>>,
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
            signals: LinkSignals::default(),
            circuits: Mutex::new(HashMap::new()),
            peer: addr,
        });
        let c = chan.clone();
        tokio::spawn(async move {
            if let Err(e) = write_loop(writer, &c.signals, &c.out, |_| {}).await {
                debug!("client link write failed: {e}");
            }
            c.close();
        });
        let c = chan.clone();
        tokio::spawn(async move {
            let end = read_loop(reader, &c.signals, |cell| {
                c.deliver(cell);
                Ok::<(), std::convert::Infallible>(())
            })
            .await;
            if !matches!(end, ReadEnd::Closed) {
                debug!("client link closed: {end}");
            }
            c.close();
            let circuits: Vec<_> = lock(&c.circuits).drain().collect();
            for (_, circ) in circuits {
                circ.link_closed();
            }
        });
        Ok(chan)
    }

    /// Hands a cell read from the link to its circuit (outside the table's lock); a cell for
    /// no circuit is dropped.
    fn deliver(&self, cell: Cell) {
        let circ = lock(&self.circuits).get(&cell.circ_id).cloned();
        if let Some(circ) = circ {
            circ.cell(cell.msg);
        }
    }

    /// The relay's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the link has closed.
    pub fn is_closed(&self) -> bool {
        self.signals.is_closed()
    }

    /// Closes the link; every circuit on it ends.
    pub fn close(&self) {
        self.signals.close();
    }

    /// How many circuits use this link.
    pub fn circuit_count(&self) -> usize {
        lock(&self.circuits).len()
    }

    /// Registers a new circuit under a fresh id (top bit set: the client opened the link),
    /// made by `make` from that id.
    pub(crate) fn add_circuit<C: CircSink + 'static>(
        &self,
        make: impl FnOnce(CircId) -> Arc<C>,
    ) -> Result<Arc<C>, LinkError> {
        if self.is_closed() {
            return Err(LinkError::Closed);
        }
        let mut table = lock(&self.circuits);
        loop {
            let Some(id) = CircId::from_random(rand::random(), true) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(e) = table.entry(id) {
                let circ = make(id);
                e.insert(circ.clone());
                return Ok(circ);
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
        self.signals.wake_writer();
    }
}
