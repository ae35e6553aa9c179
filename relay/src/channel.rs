//! A relay's state for one open link (a channel): its outbound queue, its circuit table, and
//! the reader and writer tasks that move its cells (`docs/spec.md` §6.2–6.3).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use shallot_crypto::keys::RelayId;
use shallot_crypto::onion::Payload;
use shallot_link::{LinkKind, LinkReader, LinkWriter, MAX_CELLS_PER_RECORD};
use shallot_proto::cell::{Cell, ChanCmd, ChanMsg, CircId, CELL_LEN};
use tokio::sync::Notify;
use tracing::debug;

use crate::circuit::Circuit;
use crate::core::Core;
use crate::queue::{CircuitQueueFull, OutQueue, RawCell};
use crate::stats::Stats;

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section in this crate leaves its data consistent at each step.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which end of a circuit a channel is on, seen from this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Toward the client.
    Prev,
    /// Away from the client.
    Next,
}

/// A circuit as one channel's table holds it.
#[derive(Clone)]
pub(crate) struct CircRef {
    pub circ: Arc<Circuit>,
    pub side: Side,
}

/// One open link.
pub(crate) struct Channel {
    /// Unique within this relay's run.
    pub id: u64,
    /// Who opened it.
    pub kind: LinkKind,
    /// The peer's IP address (never logged above debug for client links).
    pub peer_ip: IpAddr,
    /// The peer relay, when it proved a link key listed in the consensus.
    pub peer_relay: Option<RelayId>,
    /// Whether this relay opened the link (and so chooses circuit ids with the top bit set).
    pub we_initiated: bool,
    /// Whether the connection counts toward the per-IP limit (accepted connections do).
    pub counted: bool,
    out: Mutex<OutQueue>,
    wake: Notify,
    closing: Notify,
    closed: AtomicBool,
    /// Circuits on this link, by the id this link uses for them.
    pub circuits: Mutex<HashMap<CircId, CircRef>>,
}

impl Channel {
    pub(crate) fn new(
        id: u64,
        kind: LinkKind,
        peer_ip: IpAddr,
        peer_relay: Option<RelayId>,
        we_initiated: bool,
        counted: bool,
    ) -> Self {
        Channel {
            id,
            kind,
            peer_ip,
            peer_relay,
            we_initiated,
            counted,
            out: Mutex::new(OutQueue::default()),
            wake: Notify::new(),
            closing: Notify::new(),
            closed: AtomicBool::new(false),
            circuits: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the link has closed or is closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the peer is a relay listed in the consensus (exempt from client rate limits).
    pub fn is_listed_relay(&self) -> bool {
        self.peer_relay.is_some()
    }

    /// Queues a link-level cell (create, created, destroy).
    pub fn send_control(&self, core: &Core, circ_id: CircId, msg: ChanMsg) {
        if self.is_closed() {
            return;
        }
        let pushed = lock(&self.out).push_control(Cell::new(circ_id, msg).encode(), &core.budget);
        match pushed {
            Ok(queued) => self.after_push(core, queued),
            // The peer has stopped reading: the reader task closes the link.
            Err(_) => self.begin_close(),
        }
    }

    /// Queues a relay cell for circuit `circ_id`; refuses if that circuit's queue is full.
    pub fn send_relay(
        &self,
        core: &Core,
        circ_id: CircId,
        payload: &Payload,
    ) -> Result<(), CircuitQueueFull> {
        if self.is_closed() {
            return Ok(());
        }
        let mut raw: RawCell = [0u8; CELL_LEN];
        raw[..4].copy_from_slice(&circ_id.0.to_be_bytes());
        raw[4] = ChanCmd::Relay as u8;
        raw[5..].copy_from_slice(payload);
        let queued = lock(&self.out).push_circuit(
            circ_id,
            raw,
            core.config.limits.circuit_queue_cells,
            &core.budget,
        )?;
        Stats::bump(&core.stats.cells_forwarded);
        self.after_push(core, queued);
        Ok(())
    }

    fn after_push(&self, core: &Core, queued: usize) {
        self.wake.notify_one();
        if queued > core.queue_cap_cells() {
            core.oom.notify_one();
        }
    }

    /// Drops any cells queued for `circ_id` and forgets the circuit.
    pub fn forget_circuit(&self, core: &Core, circ_id: CircId) {
        lock(&self.circuits).remove(&circ_id);
        lock(&self.out).remove_circuit(circ_id, &core.budget);
    }

    /// Adds a circuit under a fresh id of this relay's parity; `None` if the link is closed
    /// or has no room for another circuit.
    pub fn add_outbound_circuit(&self, core: &Core, circ: CircRef) -> Option<CircId> {
        if self.is_closed() {
            return None;
        }
        let mut table = lock(&self.circuits);
        if table.len() >= core.config.limits.circuits_per_link {
            return None;
        }
        loop {
            let mut v = rand::random::<u32>() & !CircId::INITIATOR_BIT;
            if self.we_initiated {
                v |= CircId::INITIATOR_BIT;
            }
            let id = CircId(v);
            if v != 0 && !table.contains_key(&id) {
                table.insert(id, circ);
                return Some(id);
            }
        }
    }

    /// The circuit this link knows as `id`.
    pub fn circuit(&self, id: CircId) -> Option<CircRef> {
        lock(&self.circuits).get(&id).cloned()
    }

    /// Starts closing: the writer flushes what is queued and stops; the reader stops.
    pub fn begin_close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
        self.closing.notify_one();
    }

    /// Drops every cell still queued (the writer has stopped).
    pub fn drop_queued(&self, core: &Core) {
        lock(&self.out).clear(&core.budget);
    }

    /// Cells queued on this link, per circuit, with the age of each circuit's oldest cell.
    pub fn oldest_cells(&self) -> Vec<(std::time::Instant, CircId)> {
        lock(&self.out).oldest_cells()
    }
}

/// Writes queued cells to the link, many to a record when many are waiting, until the link
/// closes.
pub(crate) async fn write_loop(core: Arc<Core>, chan: Arc<Channel>, mut writer: LinkWriter) {
    let mut buf = Vec::with_capacity(MAX_CELLS_PER_RECORD * CELL_LEN);
    loop {
        buf.clear();
        let n = lock(&chan.out).drain_into(MAX_CELLS_PER_RECORD, &mut buf, &core.budget);
        if n == 0 {
            if chan.is_closed() {
                break;
            }
            chan.wake.notified().await;
            continue;
        }
        if let Err(e) = writer.write_cells(&buf).await {
            debug!(channel = chan.id, "write failed: {e}");
            break;
        }
        Stats::bump(&core.stats.records_written);
        core.stats
            .cells_written
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
    writer.shutdown().await;
    core.close_channel(&chan);
}

/// Reads cells from the link and handles each, until the link closes or the peer breaks the
/// protocol.
pub(crate) async fn read_loop(core: Arc<Core>, chan: Arc<Channel>, mut reader: LinkReader) {
    'outer: loop {
        let cells = tokio::select! {
            r = reader.read_cells() => match r {
                Ok(cells) => cells,
                Err(e) => {
                    debug!(channel = chan.id, "link closed: {e}");
                    break;
                }
            },
            _ = chan.closing.notified() => break,
        };
        for raw in cells.chunks_exact(CELL_LEN) {
            let handled = crate::handler::handle_cell(&core, &chan, raw);
            // Cells enter the relay here, so this is where memory pressure is relieved: at
            // once, with no lock held, before the next cell can add to it.
            if core.budget.queued() > core.queue_cap_cells() {
                core.relieve_memory_pressure();
            }
            if let Err(e) = handled {
                if chan.kind == LinkKind::Relay {
                    tracing::info!(channel = chan.id, "dropping relay link: {e}");
                } else {
                    debug!(channel = chan.id, "dropping client link: {e}");
                }
                Stats::bump(&core.stats.links_dropped_for_protocol);
                break 'outer;
            }
        }
    }
    core.close_channel(&chan);
}
