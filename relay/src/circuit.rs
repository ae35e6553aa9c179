//! One circuit at a relay: its onion layer, its neighbours, and what happens to each cell
//! (`docs/spec.md` §4.3–4.4, §6.3–6.5).
//!
//! A cell from the previous hop is peeled and either forwarded to the next hop or delivered
//! here; a cell from the next hop gets this relay's layer and goes back. The layer, the
//! neighbours and the flow-control windows sit behind one mutex, and a cell is sealed and
//! queued under that mutex, so cells leave in exactly the order their nonces were used.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use shallot_crypto::onion::{Payload, Peeled, RelayLayer, CELL_PAYLOAD_LEN};
use shallot_proto::cell::{ChanMsg, CircId, DestroyReason};
use shallot_proto::flow::{RecvWindow, SendWindow};
use shallot_proto::relay_msg::{fragment, Reassembler, RelayMsg, MAX_RELAY_MSG_LEN};
use tokio::sync::Notify;
use tracing::debug;

use crate::channel::{lock, Channel, Side};
use crate::core::Core;
use crate::stats::Stats;

/// The mutable part of a circuit.
pub(crate) struct CircState {
    pub layer: RelayLayer,
    pub next: Option<(Arc<Channel>, CircId)>,
    pub extending: bool,
    pub destroyed: bool,
    reassembler: Reassembler,
    fragments: u32,
    recv: RecvWindow,
    send: SendWindow,
    /// Whole messages (as cell bodies) waiting for the send window to open.
    waiting: VecDeque<Waiting>,
    /// Cells delivered here whose SENDME waits until the replies they caused are sent.
    unacked: u32,
}

/// A reply waiting for the client's window, and the delivered cells it answers: those are
/// acknowledged only once the reply leaves, so a client that stops reading replies soon runs
/// out of window and stops sending (`docs/spec.md` §4.6).
struct Waiting {
    bodies: Vec<Vec<u8>>,
    acks: u32,
    since: std::time::Instant,
}

/// A circuit passing through (or ending at) this relay.
pub(crate) struct Circuit {
    /// This relay's depth on the circuit.
    pub depth: u8,
    /// The channel toward the client, and the circuit's id on it.
    pub prev: Arc<Channel>,
    pub prev_id: CircId,
    pub state: Mutex<CircState>,
    /// Signalled when a SENDME opens the send window (or the circuit is destroyed).
    window_open: Notify,
}

impl Circuit {
    pub(crate) fn new(layer: RelayLayer, prev: Arc<Channel>, prev_id: CircId) -> Self {
        Circuit {
            depth: layer.depth(),
            prev,
            prev_id,
            window_open: Notify::new(),
            state: Mutex::new(CircState {
                layer,
                next: None,
                extending: false,
                destroyed: false,
                reassembler: Reassembler::new(MAX_RELAY_MSG_LEN),
                fragments: 0,
                recv: RecvWindow::default(),
                send: SendWindow::default(),
                waiting: VecDeque::new(),
                unacked: 0,
            }),
        }
    }

    /// A relay cell from the previous hop.
    pub fn forward(self: &Arc<Self>, core: &Arc<Core>, mut payload: Box<Payload>) {
        let mut st = lock(&self.state);
        if st.destroyed {
            return;
        }
        match st.layer.peel(&mut payload) {
            Err(e) => {
                drop(st);
                debug!("destroying circuit: {e}");
                Stats::bump(&core.stats.circuits_destroyed_for_tamper);
                self.destroy(core, DestroyReason::Protocol, None);
            }
            Ok(Peeled::Forward) => {
                let next = match (&st.next, st.extending) {
                    (Some((chan, id)), false) => Some((chan.clone(), *id)),
                    _ => None,
                };
                let result = next.map(|(chan, id)| chan.send_relay(core, id, &payload));
                drop(st);
                match result {
                    Some(Ok(())) => {}
                    Some(Err(_)) => {
                        Stats::bump(&core.stats.circuits_destroyed_for_queue);
                        self.destroy(core, DestroyReason::ResourceLimit, None);
                    }
                    // Told to forward with nowhere to forward to.
                    None => self.destroy(core, DestroyReason::Protocol, None),
                }
            }
            Ok(Peeled::Deliver) => {
                Stats::bump(&core.stats.cells_delivered);
                let body_len = st.layer.body_len();
                if let Err(reason) = self.deliver(core, &mut st, &payload[..body_len]) {
                    drop(st);
                    self.destroy(core, reason, None);
                }
            }
        }
    }

    /// A relay cell from the next hop, travelling back to the client.
    pub fn backward(self: &Arc<Self>, core: &Arc<Core>, mut payload: Box<Payload>) {
        let mut st = lock(&self.state);
        if st.destroyed {
            return;
        }
        if st.extending {
            drop(st);
            return self.destroy(core, DestroyReason::Protocol, None);
        }
        let result = match st.layer.add_layer(&mut payload) {
            Ok(()) => self.prev.send_relay(core, self.prev_id, &payload).is_ok(),
            Err(_) => false,
        };
        drop(st);
        if !result {
            Stats::bump(&core.stats.circuits_destroyed_for_queue);
            self.destroy(core, DestroyReason::ResourceLimit, None);
        }
    }

    /// A message body delivered to this hop: reassemble, account for flow control, act.
    fn deliver(
        self: &Arc<Self>,
        core: &Arc<Core>,
        st: &mut CircState,
        body: &[u8],
    ) -> Result<(), DestroyReason> {
        st.fragments += 1;
        let msg = match st.reassembler.push(body) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(()),
            Err(e) => {
                debug!("bad fragment: {e}");
                return Err(DestroyReason::Protocol);
            }
        };
        let cells = std::mem::take(&mut st.fragments);
        let msg = RelayMsg::decode(&msg).map_err(|e| {
            debug!("bad relay message: {e}");
            DestroyReason::Protocol
        })?;
        let counted = msg.counts_for_flow_control();
        if counted {
            // Cells not yet acknowledged count against the window already.
            st.unacked += cells;
            if st.unacked > st.recv.remaining() {
                debug!("client overran its flow-control window");
                return Err(DestroyReason::Protocol);
            }
        }
        crate::endpoint::handle(core, self, st, msg)?;
        if counted {
            match st.waiting.back_mut() {
                // The reply is waiting: acknowledge when it leaves.
                Some(w) => {
                    w.acks += cells;
                }
                None => self.acknowledge(core, st, cells)?,
            }
        }
        Ok(())
    }

    /// Counts `cells` as consumed, sending the SENDMEs that fall due.
    fn acknowledge(
        &self,
        core: &Core,
        st: &mut CircState,
        cells: u32,
    ) -> Result<(), DestroyReason> {
        st.unacked = st.unacked.saturating_sub(cells);
        let sendmes = st
            .recv
            .received(cells)
            .map_err(|_| DestroyReason::Protocol)?;
        for _ in 0..sendmes {
            self.send_msg(core, st, &RelayMsg::Sendme)?;
        }
        Ok(())
    }

    /// Sends a message from this hop to the client, subject to the send window. A message is
    /// sent whole or waits whole, so fragments of two messages never interleave.
    pub fn send_msg(
        &self,
        core: &Core,
        st: &mut CircState,
        msg: &RelayMsg,
    ) -> Result<(), DestroyReason> {
        let bytes = msg.encode().map_err(|_| DestroyReason::Internal)?;
        let bodies = fragment(&bytes, st.layer.body_len()).map_err(|_| DestroyReason::Internal)?;
        if !msg.counts_for_flow_control() {
            return self.seal_and_queue(core, st, &bodies);
        }
        if st.waiting.is_empty() && st.send.take(bodies.len() as u32) {
            self.seal_and_queue(core, st, &bodies)
        } else {
            core.budget.add(bodies.len());
            st.waiting.push_back(Waiting {
                bodies,
                acks: 0,
                since: std::time::Instant::now(),
            });
            Ok(())
        }
    }

    /// Sends a message from a task that holds no lock, once the send window has room for all
    /// of it, waiting at most `limit`. Returns false if the circuit is gone or stayed full; a
    /// message that cannot be encoded destroys the circuit.
    pub async fn send_when_open(
        self: &Arc<Self>,
        core: &Core,
        msg: &RelayMsg,
        limit: std::time::Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let opened = self.window_open.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.destroyed {
                    return false;
                }
                let cells = match msg.encode() {
                    Ok(b) => b.len().div_ceil(st.layer.body_len() - 3) as u32,
                    Err(_) => 0,
                };
                if st.waiting.is_empty() && st.send.available() >= cells.max(1) {
                    let sent = self.send_msg(core, &mut st, msg);
                    drop(st);
                    return match sent {
                        Ok(()) => true,
                        Err(reason) => {
                            self.destroy(core, reason, None);
                            false
                        }
                    };
                }
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return false;
            }
        }
    }

    /// The client acknowledged cells: send what was waiting for the window.
    pub fn on_sendme(&self, core: &Core, st: &mut CircState) -> Result<(), DestroyReason> {
        st.send.sendme().map_err(|_| DestroyReason::Protocol)?;
        self.window_open.notify_waiters();
        while let Some(w) = st.waiting.front() {
            if !st.send.take(w.bodies.len() as u32) {
                break;
            }
            if let Some(w) = st.waiting.pop_front() {
                core.budget.sub(w.bodies.len());
                self.seal_and_queue(core, st, &w.bodies)?;
                if w.acks > 0 {
                    self.acknowledge(core, st, w.acks)?;
                }
            }
        }
        Ok(())
    }

    fn seal_and_queue(
        &self,
        core: &Core,
        st: &mut CircState,
        bodies: &[Vec<u8>],
    ) -> Result<(), DestroyReason> {
        for body in bodies {
            let mut payload: Payload = [0u8; CELL_PAYLOAD_LEN];
            payload[..body.len()].copy_from_slice(body);
            st.layer
                .originate(&mut payload)
                .map_err(|_| DestroyReason::Internal)?;
            self.prev
                .send_relay(core, self.prev_id, &payload)
                .map_err(|_| DestroyReason::ResourceLimit)?;
        }
        Ok(())
    }

    /// Whether the circuit has been destroyed.
    pub fn is_destroyed(&self) -> bool {
        lock(&self.state).destroyed
    }

    /// When this circuit's oldest reply started waiting for the client's window, if any is
    /// waiting (for the out-of-memory handler).
    pub fn oldest_waiting(&self) -> Option<std::time::Instant> {
        lock(&self.state).waiting.front().map(|w| w.since)
    }

    /// The next hop answered our create: the extend is complete.
    pub fn on_created(
        self: &Arc<Self>,
        core: &Arc<Core>,
        reply: shallot_crypto::ntor::ServerMessage,
    ) {
        let mut st = lock(&self.state);
        if st.destroyed {
            return;
        }
        if !st.extending {
            drop(st);
            return self.destroy(core, DestroyReason::Protocol, None);
        }
        st.extending = false;
        Stats::bump(&core.stats.circuits_extended);
        if let Err(reason) = self.send_msg(core, &mut st, &RelayMsg::Extended(reply)) {
            drop(st);
            self.destroy(core, reason, None);
        }
    }

    /// Tears the circuit down: forgets it on both channels, drops its queued cells, and
    /// tells each neighbour except `from` (the side that told us).
    pub fn destroy(self: &Arc<Self>, core: &Core, reason: DestroyReason, from: Option<Side>) {
        self.destroy_if_alive(core, reason, from);
    }

    /// [`Circuit::destroy`], returning false if the circuit was already destroyed.
    pub fn destroy_if_alive(
        self: &Arc<Self>,
        core: &Core,
        reason: DestroyReason,
        from: Option<Side>,
    ) -> bool {
        let next = {
            let mut st = lock(&self.state);
            if st.destroyed {
                return false;
            }
            st.destroyed = true;
            let waiting: usize = st.waiting.drain(..).map(|w| w.bodies.len()).sum();
            core.budget.sub(waiting);
            st.next.take()
        };
        self.window_open.notify_waiters();
        Stats::bump(&core.stats.circuits_destroyed);
        self.prev.forget_circuit(core, self.prev_id);
        if from != Some(Side::Prev) {
            self.prev
                .send_control(core, self.prev_id, ChanMsg::Destroy(reason));
        }
        if let Some((chan, id)) = next {
            chan.forget_circuit(core, id);
            if from != Some(Side::Next) {
                chan.send_control(core, id, ChanMsg::Destroy(reason));
            }
        }
        true
    }
}
