//! The client circuit as a state machine without I/O (`docs/spec.md` §4.6, §6.3–6.4).
//!
//! Each input (a cell from the first hop, a message to send, cells the reader consumed, a
//! timer, the link closing, the user closing) is one method that takes `now` where time
//! matters and returns what happened for the user ([`Event`]), or the error that closed the
//! circuit. Cells to send pile up in an outbox, in the order their onion nonces were used; the
//! shell ([`super::Circuit`]) drains it onto the channel after every call, under the same lock.
//!
//! | input | state | result |
//! |---|---|---|
//! | CREATED | creating, in time | first hop built: [`Event::Built`] |
//! | EXTENDED from the last hop | extending, in time | hop added: [`Event::Built`] |
//! | SENDME from hop *n* | window below its start | [`Event::WindowOpened`] |
//! | other message from hop *n* | within *n*'s window | [`Event::Deliver`] |
//! | a fragment of a longer message | within the window and the size limit | [`Event::Nothing`] |
//! | consumed *k* cells from *n* | open | SENDMEs to *n* as they fall due |
//! | DESTROY | any | closed with the relay's reason, nothing sent |
//! | anything out of protocol | any | closed, DESTROY sent |
//! | timer past the deadline | creating or extending | closed, DESTROY sent |
//! | the link closes | any | closed, nothing sent |
//! | the user closes | any | closed, DESTROY sent |

use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};
use shallot_crypto::ntor::{ClientHandshake, Preparation, Prepared, ServerMessage};
use shallot_crypto::onion::{body_len, ClientLayers, HopKeys, Payload};
use shallot_link::LinkError;
use shallot_proto::cell::{ChanMsg, Create, DestroyReason};
use shallot_proto::relay_msg::{fragment, Extend, RelayMsg};
use x25519_dalek::PublicKey;

use super::hop::{Hop, HopNum, HopSpec};
use crate::err::{BuildStep, NetError, Violation};

/// A message delivered from a hop, and the counted cells it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The hop it came from.
    pub hop: HopNum,
    /// The message.
    pub msg: RelayMsg,
    /// Counted cells it took; acknowledge them with [`CircuitState::consumed`] once read.
    pub cells: u32,
}

/// What an input meant for the user of the circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Nothing to tell (a fragment of a longer message, say).
    Nothing,
    /// A hop was added: the circuit now reaches this one.
    Built(HopNum),
    /// A hop acknowledged cells: senders waiting for its window may go on.
    WindowOpened(HopNum),
    /// A message for the reader.
    Deliver(Delivery),
}

/// Whether a message went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Its cells are in the outbox.
    Queued,
    /// The hop's window has no room for it yet: wait for [`Event::WindowOpened`].
    Blocked,
}

/// A message encoded into cell bodies for one hop, ready for [`CircuitState::send`].
#[derive(Debug, Clone)]
pub struct Outgoing {
    hop: HopNum,
    bodies: Vec<Vec<u8>>,
    counted: bool,
}

impl Outgoing {
    /// Encodes `msg` for `hop` and splits it into the bodies of that hop's cells.
    pub fn new(hop: HopNum, msg: &RelayMsg) -> Result<Outgoing, NetError> {
        let bytes = msg.encode().map_err(NetError::Unsendable)?;
        let bodies = fragment(&bytes, body_len(hop.depth())).map_err(NetError::Unsendable)?;
        Ok(Outgoing {
            hop,
            bodies,
            counted: msg.counts_for_flow_control(),
        })
    }

    /// Cells it takes.
    pub fn cells(&self) -> usize {
        self.bodies.len()
    }
}

/// A handshake waiting for its answer.
enum Pending {
    Idle,
    Create {
        hs: ClientHandshake,
        spec: HopSpec,
        deadline: Instant,
    },
    Extend {
        hs: ClientHandshake,
        spec: HopSpec,
        deadline: Instant,
    },
}

impl Pending {
    fn deadline(&self) -> Option<(Instant, BuildStep)> {
        match self {
            Pending::Idle => None,
            Pending::Create { deadline, .. } => Some((*deadline, BuildStep::Creating)),
            Pending::Extend { deadline, .. } => Some((*deadline, BuildStep::Extending)),
        }
    }
}

/// Everything a client knows about one of its circuits.
pub struct CircuitState {
    /// The onion: every hop's layer keys, which wrap and unwrap cells for all hops at once.
    layers: ClientLayers,
    /// The built hops, first to last.
    hops: Vec<Hop>,
    pending: Pending,
    /// Why the circuit closed, once it has.
    closed: Option<NetError>,
    /// Cells to send on the channel, in order.
    outbox: Vec<ChanMsg>,
}

impl Default for CircuitState {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitState {
    /// A circuit with no hops, not yet created.
    pub fn new() -> Self {
        CircuitState {
            layers: ClientLayers::new(),
            hops: Vec::new(),
            pending: Pending::Idle,
            closed: None,
            outbox: Vec::new(),
        }
    }

    /// Hops built so far.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether no hop is built.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The last hop built.
    pub fn last_hop(&self) -> Option<HopNum> {
        HopNum::new(self.hops.len())
    }

    /// The relays, first to last.
    pub fn path(&self) -> Vec<HopSpec> {
        self.hops.iter().map(|h| h.spec.clone()).collect()
    }

    /// Why the circuit closed, if it has.
    pub fn closed(&self) -> Option<&NetError> {
        self.closed.as_ref()
    }

    /// Whether a CREATE or EXTEND waits for its answer.
    pub fn is_building(&self) -> bool {
        !matches!(self.pending, Pending::Idle)
    }

    /// When the handshake waiting for its answer times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.deadline().map(|(d, _)| d)
    }

    /// The part of the waiting handshake that needs no answer (`EXP(B, x)`, §3), to be done
    /// while the answer is on its way, so that it costs one Diffie-Hellman instead of two.
    /// `None` with nothing waiting, or with the work done.
    pub fn handshake_preparation(&self) -> Option<Preparation> {
        match &self.pending {
            Pending::Create { hs, .. } | Pending::Extend { hs, .. } => hs.preparation(),
            Pending::Idle => None,
        }
    }

    /// Whether `work`, taken by [`CircuitState::handshake_preparation`], is still wanted:
    /// not if the answer came first.
    pub fn wants(&self, work: &Preparation) -> bool {
        match &self.pending {
            Pending::Create { hs, .. } | Pending::Extend { hs, .. } => hs.wants(work),
            Pending::Idle => false,
        }
    }

    /// Takes a done [`CircuitState::handshake_preparation`]. It is ignored if the handshake
    /// it was taken from has been answered meanwhile.
    pub fn handshake_prepared(&mut self, done: Prepared) {
        match &mut self.pending {
            Pending::Create { hs, .. } | Pending::Extend { hs, .. } => hs.accept(done),
            Pending::Idle => {}
        }
    }

    /// Counted cells `hop` may still be sent now.
    pub fn send_window(&self, hop: HopNum) -> Option<u32> {
        self.hops
            .get(hop.index())
            .map(|h| h.send_window.available())
    }

    /// Cells to send, in order; the caller queues them on the channel.
    pub fn take_outbox(&mut self) -> Vec<ChanMsg> {
        std::mem::take(&mut self.outbox)
    }

    fn check_open(&self) -> Result<(), NetError> {
        match &self.closed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Closes the circuit with `error` (the first reason wins), asking the relays to tear it
    /// down if `destroy`. Returns the error the circuit is closed with.
    ///
    /// Whatever the cause, the client's DESTROY says only "requested" (reason 3,
    /// `docs/spec.md` §6.5): the relays learn no more from it than that the client is done.
    fn fail(&mut self, error: NetError, destroy: bool) -> NetError {
        if self.closed.is_none() {
            self.pending = Pending::Idle;
            self.closed = Some(error);
            if destroy {
                self.outbox.push(ChanMsg::Destroy(DestroyReason::Requested));
            }
        }
        self.closed.clone().unwrap_or(NetError::Closed)
    }

    /// Starts the circuit: a CREATE for `first`, answered by `now + limit`.
    pub fn start_create<R: RngCore + CryptoRng>(
        &mut self,
        first: &HopSpec,
        now: Instant,
        limit: Duration,
        rng: &mut R,
    ) -> Result<(), NetError> {
        self.check_open()?;
        if self.is_building() || !self.hops.is_empty() {
            return Err(NetError::Busy);
        }
        let (hs, handshake) =
            ClientHandshake::start(rng, first.id, &PublicKey::from(first.ntor_key));
        self.outbox.push(ChanMsg::Create(Create {
            depth: 1,
            handshake,
        }));
        tracing::trace!(target: "shallot_trace", "builder: CREATE queued");
        self.pending = Pending::Create {
            hs,
            spec: first.clone(),
            deadline: now + limit,
        };
        Ok(())
    }

    /// Asks the last hop to extend the circuit to `next`, answered by `now + limit`. The
    /// EXTEND counts against the last hop's window: [`Sent::Blocked`] if it has no room.
    pub fn start_extend<R: RngCore + CryptoRng>(
        &mut self,
        next: &HopSpec,
        now: Instant,
        limit: Duration,
        rng: &mut R,
    ) -> Result<Sent, NetError> {
        self.check_open()?;
        if self.is_building() {
            return Err(NetError::Busy);
        }
        let last = self.last_hop().ok_or(NetError::NoSuchHop(0))?;
        if last.next().is_none() {
            return Err(NetError::NoSuchHop(last.get() + 1));
        }
        let (hs, handshake) = ClientHandshake::start(rng, next.id, &PublicKey::from(next.ntor_key));
        let msg = Outgoing::new(
            last,
            &RelayMsg::Extend(Extend {
                target: next.id,
                handshake,
            }),
        )?;
        let sent = self.send(&msg)?;
        if sent == Sent::Queued {
            tracing::trace!(target: "shallot_trace", depth = last.get() + 1, "builder: EXTEND queued");
            self.pending = Pending::Extend {
                hs,
                spec: next.clone(),
                deadline: now + limit,
            };
        }
        Ok(sent)
    }

    /// Wraps and queues a message, if its hop's window has room for it.
    pub fn send(&mut self, msg: &Outgoing) -> Result<Sent, NetError> {
        self.check_open()?;
        let hop = self
            .hops
            .get_mut(msg.hop.index())
            .ok_or(NetError::NoSuchHop(msg.hop.get()))?;
        if msg.counted {
            let n = u32::try_from(msg.bodies.len()).unwrap_or(u32::MAX);
            if !hop.send_window.take(n) {
                return Ok(Sent::Blocked);
            }
        }
        for body in &msg.bodies {
            match self.layers.wrap(msg.hop.get(), body) {
                Ok(payload) => self.outbox.push(ChanMsg::Relay(Box::new(payload))),
                Err(e) => return Err(self.fail(Violation::Layer(e).into(), true)),
            }
        }
        Ok(Sent::Queued)
    }

    /// The reader consumed `cells` counted cells from `hop`: acknowledge them, sending a
    /// SENDME for each window increment. Nothing happens on a closed circuit.
    pub fn consumed(&mut self, hop: HopNum, cells: u32) -> Result<(), NetError> {
        if self.closed.is_some() {
            return Ok(());
        }
        let Some(h) = self.hops.get_mut(hop.index()) else {
            return Err(NetError::NoSuchHop(hop.get()));
        };
        h.unread = h.unread.saturating_sub(cells);
        let sendmes = match h.recv_window.received(cells) {
            Ok(n) => n,
            Err(_) => return Err(self.fail(Violation::WindowOverrun(hop).into(), true)),
        };
        let sendme = Outgoing::new(hop, &RelayMsg::Sendme)?;
        for _ in 0..sendmes {
            self.send(&sendme)?;
        }
        Ok(())
    }

    /// A cell arrived for this circuit at `now`.
    pub fn handle_cell(&mut self, msg: ChanMsg, now: Instant) -> Result<Event, NetError> {
        self.check_open()?;
        let result = match msg {
            ChanMsg::Destroy(reason) => return Err(self.fail(NetError::Destroyed(reason), false)),
            ChanMsg::Created(reply) => self.on_created(&reply, now),
            ChanMsg::Relay(mut payload) => self.on_relay(&mut payload, now),
            ChanMsg::Create(_) => Err(Violation::UnexpectedCell("CREATE").into()),
        };
        result.map_err(|e| self.fail(e, true))
    }

    /// The timer fired at `now`: a handshake whose deadline has passed fails the circuit.
    pub fn poll_timeout(&mut self, now: Instant) -> Result<(), NetError> {
        self.check_open()?;
        match self.pending.deadline() {
            Some((deadline, step)) if now >= deadline => {
                Err(self.fail(NetError::Timeout(step), true))
            }
            _ => Ok(()),
        }
    }

    /// The link under the circuit closed.
    pub fn link_closed(&mut self) -> NetError {
        self.fail(NetError::from(LinkError::Closed), false)
    }

    /// The user closes the circuit: the relays are asked to tear it down.
    pub fn close(&mut self) {
        self.fail(NetError::Closed, true);
    }

    fn on_created(&mut self, reply: &ServerMessage, now: Instant) -> Result<Event, NetError> {
        match std::mem::replace(&mut self.pending, Pending::Idle) {
            Pending::Create { hs, spec, deadline } => {
                if now >= deadline {
                    return Err(NetError::Timeout(BuildStep::Creating));
                }
                self.add_hop(hs, reply, spec)
            }
            other => {
                self.pending = other;
                Err(Violation::UnexpectedCreated.into())
            }
        }
    }

    fn add_hop(
        &mut self,
        hs: ClientHandshake,
        reply: &ServerMessage,
        spec: HopSpec,
    ) -> Result<Event, NetError> {
        let handshake = |source| NetError::Handshake {
            hop: spec.nickname.clone(),
            source,
        };
        tracing::trace!(target: "shallot_trace", "builder: answer in, finishing the handshake");
        let seed = hs.finish(reply).map_err(handshake)?;
        let keys = HopKeys::from_key_seed(&seed).map_err(handshake)?;
        self.layers.push_hop(&keys).map_err(Violation::Layer)?;
        tracing::trace!(target: "shallot_trace", "builder: hop added");
        self.hops.push(Hop::new(spec));
        self.last_hop()
            .map(Event::Built)
            .ok_or(NetError::NoSuchHop(0))
    }

    fn on_relay(&mut self, payload: &mut Payload, now: Instant) -> Result<Event, NetError> {
        if self.hops.is_empty() {
            return Err(Violation::RelayBeforeCreated.into());
        }
        let from = self.layers.unwrap(payload).map_err(Violation::Layer)?;
        let hop = HopNum::new(from).ok_or(NetError::NoSuchHop(from))?;
        let h = self
            .hops
            .get_mut(hop.index())
            .ok_or(NetError::NoSuchHop(from))?;
        h.assembling_cells = h.assembling_cells.saturating_add(1);
        let pushed = h
            .assembling
            .push(&payload[..body_len(hop.depth())])
            .map_err(|source| Violation::Reassembly { hop, source })?;
        let Some(bytes) = pushed else {
            // A message in several cells is never a SENDME: its cells count already.
            if !h.window_fits(h.assembling_cells) {
                return Err(Violation::WindowOverrun(hop).into());
            }
            return Ok(Event::Nothing);
        };
        let cells = std::mem::take(&mut h.assembling_cells);
        let msg =
            RelayMsg::decode(&bytes).map_err(|source| Violation::Malformed { hop, source })?;
        match msg {
            RelayMsg::Sendme => {
                h.send_window
                    .sendme()
                    .map_err(|_| Violation::UnexpectedSendme(hop))?;
                Ok(Event::WindowOpened(hop))
            }
            RelayMsg::Extended(reply) => self.on_extended(hop, cells, &reply, now),
            RelayMsg::Extend(_) => Err(Violation::ExtendFromRelay(hop).into()),
            msg => {
                if !h.window_fits(cells) {
                    return Err(Violation::WindowOverrun(hop).into());
                }
                h.unread += cells;
                Ok(Event::Deliver(Delivery { hop, msg, cells }))
            }
        }
    }

    fn on_extended(
        &mut self,
        hop: HopNum,
        cells: u32,
        reply: &ServerMessage,
        now: Instant,
    ) -> Result<Event, NetError> {
        if Some(hop) != self.last_hop() {
            return Err(Violation::UnexpectedExtended.into());
        }
        match std::mem::replace(&mut self.pending, Pending::Idle) {
            Pending::Extend { hs, spec, deadline } => {
                if now >= deadline {
                    return Err(NetError::Timeout(BuildStep::Extending));
                }
                // EXTENDED counts like any message, and is consumed at once.
                let h = self
                    .hops
                    .get_mut(hop.index())
                    .ok_or(NetError::NoSuchHop(hop.get()))?;
                if !h.window_fits(cells) {
                    return Err(Violation::WindowOverrun(hop).into());
                }
                h.unread += cells;
                self.consumed(hop, cells)?;
                self.add_hop(hs, reply, spec)
            }
            other => {
                self.pending = other;
                Err(Violation::UnexpectedExtended.into())
            }
        }
    }
}

#[cfg(test)]
mod tests;
