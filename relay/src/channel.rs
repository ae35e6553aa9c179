//! A relay's end of one open link (a channel, `docs/spec.md` §6.2–6.3): who is at the other
//! end, and the outbound queue its writer drains. The loops that move its cells are the link
//! crate's ([`shallot_link::pump`]); the circuits on it are kept beside it (`crate::shell`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shallot_crypto::keys::RelayId;
use shallot_crypto::onion::Payload;
use shallot_link::{BufferTotal, CellQueue, LinkKind, LinkSignals};
use shallot_proto::cell::{Cell, ChanCmd, ChanMsg, CircId, CELL_LEN};
use shallot_rt::lock;

use crate::queue::{CircuitQueueFull, OutQueue, QueueBudget, RawCell};

/// A channel's number, unique within one run of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChannelId(pub(crate) u64);

/// Who is at the other end of a channel, fixed when the link is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// Who opened the link.
    pub(crate) kind: LinkKind,
    /// The peer's IP address (never logged above debug for client links).
    pub(crate) ip: IpAddr,
    /// The peer relay, when it proved a link key listed in the consensus.
    pub(crate) relay: Option<RelayId>,
    /// Whether this relay opened the link (and so chooses circuit ids with the top bit set).
    pub(crate) we_initiated: bool,
    /// Whether the connection counts toward the per-IP limit (accepted connections do).
    pub(crate) counted: bool,
}

impl Peer {
    /// Whether the peer is a relay listed in the consensus (exempt from client rate limits).
    pub(crate) fn is_listed_relay(&self) -> bool {
        self.relay.is_some()
    }
}

/// One open link's outbound side.
#[derive(Debug)]
pub(crate) struct Channel {
    /// Its number.
    pub(crate) id: ChannelId,
    /// Who is at the other end.
    pub(crate) peer: Peer,
    /// Shared with the link's two loops.
    pub(crate) signals: LinkSignals,
    out: Mutex<OutQueue>,
    budget: Arc<QueueBudget>,
}

impl Channel {
    /// The relay-wide budget this link's queue counts against.
    pub(crate) fn budget(&self) -> &QueueBudget {
        &self.budget
    }

    /// A channel whose queued cells count toward `budget`.
    pub(crate) fn new(id: ChannelId, peer: Peer, budget: Arc<QueueBudget>) -> Self {
        Channel {
            id,
            peer,
            signals: LinkSignals::default(),
            out: Mutex::new(OutQueue::default()),
            budget,
        }
    }

    /// The same channel, its link's buffers counted in `total` (`docs/spec.md` §6.6).
    pub(crate) fn counting_buffers(mut self, total: Arc<BufferTotal>) -> Self {
        self.signals = LinkSignals::counted(total);
        self
    }

    /// Whether the link has closed or is closing.
    pub(crate) fn is_closed(&self) -> bool {
        self.signals.is_closed()
    }

    /// Queues a link-level cell (create, created, destroy); returns the relay-wide count of
    /// queued cells. A peer that lets too many pile up is not reading: the link closes.
    pub(crate) fn send_control(&self, circ_id: CircId, msg: ChanMsg) -> usize {
        if self.is_closed() {
            return self.budget.queued();
        }
        let pushed = lock(&self.out).push_control(Cell::new(circ_id, msg).encode(), &self.budget);
        match pushed {
            Ok(queued) => {
                self.signals.wake_writer();
                queued
            }
            Err(CircuitQueueFull) => {
                self.close();
                self.budget.queued()
            }
        }
    }

    /// Queues a relay cell for circuit `circ_id`, refusing when that circuit already has
    /// `cap` cells waiting here; returns the relay-wide count of queued cells. A closed link
    /// takes (and drops) everything.
    pub(crate) fn send_relay(
        &self,
        circ_id: CircId,
        payload: &Payload,
        cap: usize,
    ) -> Result<usize, CircuitQueueFull> {
        if self.is_closed() {
            return Ok(self.budget.queued());
        }
        let mut raw: RawCell = [0u8; CELL_LEN];
        raw[..4].copy_from_slice(&circ_id.get().to_be_bytes());
        raw[4] = ChanCmd::Relay as u8;
        raw[5..].copy_from_slice(payload);
        let queued = lock(&self.out).push_circuit(circ_id, raw, cap, &self.budget)?;
        self.signals.wake_writer();
        Ok(queued)
    }

    /// Drops any cells queued for `circ_id`.
    pub(crate) fn drop_circuit_cells(&self, circ_id: CircId) {
        lock(&self.out).remove_circuit(circ_id, &self.budget);
    }

    /// Starts closing: the writer flushes what is queued and stops; the reader stops.
    pub(crate) fn close(&self) {
        self.signals.close();
    }

    /// Drops every cell still queued (the writer has stopped).
    pub(crate) fn drop_queued(&self) {
        lock(&self.out).clear(&self.budget);
    }

    /// Each circuit with cells queued here, with when its oldest was queued.
    pub(crate) fn oldest_cells(&self) -> Vec<(Instant, CircId)> {
        lock(&self.out).oldest_cells()
    }
}

impl CellQueue for Channel {
    fn drain_into(&self, max: usize, out: &mut Vec<u8>) -> usize {
        lock(&self.out).drain_into(max, out, &self.budget)
    }
}
