//! One circuit at a relay as a pure state machine (`docs/spec.md` §4.3–4.6, §6.3–6.5): its
//! onion layer, where its next hop stands, its flow-control windows and the replies waiting
//! for them. [`CircuitMachine::handle`] takes an [`Input`] and the time and appends the
//! [`Action`]s that follow; it owns no socket, lock, task or clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_crypto::ntor::{ClientMessage, ServerMessage};
use shallot_crypto::onion::{Payload, Peeled, RelayLayer, CELL_PAYLOAD_LEN};
use shallot_proto::cell::Create;
use shallot_proto::dir_cache::DirMsg;
use shallot_proto::flow::{RecvWindow, SendWindow};
use shallot_proto::mailbox::MailboxMsg;
use shallot_proto::relay_msg::{
    fragment, Extend, Reassembler, RelayMsg, FRAGMENT_HEADER_LEN, MAX_RELAY_MSG_LEN,
};

use super::error::{CircuitError, ExtendRefusal, Violation};
use super::side::Side;
use super::step::{Action, Count, Input, Teardown};
#[cfg(feature = "misbehave")]
use crate::misbehave::{Forger, Misbehaviour};
use crate::queue::HELD_CELL_BYTES;

/// The deepest hop a circuit may have at this relay: clients build three-hop circuits, so an EXTEND at the third hop and a CREATE deeper than it are
/// refused; a longer circuit would only multiply the bandwidth one client can take from the
/// network (`docs/spec.md` §6.4).
pub(crate) const MAX_CIRCUIT_DEPTH: u8 = 3;

/// Where a circuit's next hop stands.
#[derive(Debug)]
enum Next {
    /// The circuit ends here.
    None,
    /// EXTEND accepted; the shell is finding a link to the target.
    Connecting(Box<ClientMessage>),
    /// CREATE sent; CREATED is due by the deadline.
    AwaitingCreated(Instant),
    /// Cells flow to and from the next hop.
    Open,
}

/// A reply waiting for the client's window, and the delivered cells it answers: those are
/// acknowledged only once the reply leaves, so a client that stops reading replies soon runs
/// out of window and stops sending (`docs/spec.md` §4.6).
struct Waiting {
    bodies: Vec<Vec<u8>>,
    acks: u32,
    since: Instant,
}

/// Where a circuit sits, the same for every input: given to [`CircuitMachine::handle`] by the
/// shell rather than kept in each circuit, which keeps an idle circuit small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    /// This relay.
    pub(crate) me: RelayId,
    /// The relay on the previous link, when that link is a listed relay's.
    pub(crate) prev_relay: Option<RelayId>,
    /// How long the next hop has to answer CREATE.
    pub(crate) extend_timeout: Duration,
    /// How this relay misbehaves, in tests only.
    #[cfg(feature = "misbehave")]
    pub(crate) misbehaviour: Option<Misbehaviour>,
}

/// One step of a message's path for `shallot bench --trace` (`README.md`, "Performance"):
/// an event with the target `shallot_trace`, which costs a disabled callsite's check unless
/// a subscriber asks for that target.
fn trace_cell(at: &Placement, depth: u8, what: &'static str) {
    tracing::trace!(target: "shallot_trace", relay = %at.me, depth, "{what}");
}

/// A circuit passing through (or ending at) this relay.
pub(crate) struct CircuitMachine {
    layer: RelayLayer,
    next: Next,
    destroyed: bool,
    reassembler: Reassembler,
    /// Cells of the message being reassembled (each holds at most one cell's body of it).
    fragments: u32,
    /// When the first of those cells arrived.
    partial_since: Option<Instant>,
    /// When a cell of this circuit last arrived from either side (or it was created).
    last_cell: Instant,
    recv: RecvWindow,
    send: SendWindow,
    /// Whole messages (as cell bodies) waiting for the send window to open.
    waiting: VecDeque<Waiting>,
    waiting_cells: usize,
    /// Cells delivered here whose SENDME waits until the replies they caused are sent.
    unacked: u32,
    /// What a misbehaving hop remembers: how it misbehaves now and, when it forges, what it
    /// has seen and forged (tests only).
    #[cfg(feature = "misbehave")]
    forger: Forger,
}

impl CircuitMachine {
    /// A circuit created at `now` with `layer` (which knows its depth).
    pub(crate) fn new(layer: RelayLayer, now: Instant) -> Self {
        CircuitMachine {
            layer,
            next: Next::None,
            destroyed: false,
            reassembler: Reassembler::new(MAX_RELAY_MSG_LEN),
            fragments: 0,
            partial_since: None,
            last_cell: now,
            recv: RecvWindow::default(),
            send: SendWindow::default(),
            waiting: VecDeque::new(),
            waiting_cells: 0,
            unacked: 0,
            #[cfg(feature = "misbehave")]
            forger: Forger::default(),
        }
    }

    /// This relay's depth on the circuit.
    pub(crate) fn depth(&self) -> u8 {
        self.layer.depth()
    }

    /// Whether the circuit is over.
    pub(crate) fn is_destroyed(&self) -> bool {
        self.destroyed
    }

    /// Whether an extend is waiting for its link (the shell may attach the next hop).
    pub(crate) fn is_connecting(&self) -> bool {
        !self.destroyed && matches!(self.next, Next::Connecting(_))
    }

    /// When CREATED is due, while it is awaited.
    pub(crate) fn created_deadline(&self) -> Option<Instant> {
        match self.next {
            Next::AwaitingCreated(deadline) if !self.destroyed => Some(deadline),
            _ => None,
        }
    }

    /// Cells this circuit holds in memory, counted toward the relay's memory budget in
    /// [`HELD_CELL_BYTES`] units: replies waiting for the client's window, one unit each, and
    /// the bytes allocated for an unfinished message being reassembled (up to
    /// [`MAX_RELAY_MSG_LEN`] bytes, `docs/spec.md` §6.6), by their allocation's size.
    pub(crate) fn held_cells(&self) -> usize {
        self.waiting_cells + self.reassembler.held_bytes().div_ceil(HELD_CELL_BYTES)
    }

    /// When the oldest cell it holds arrived (or its oldest reply started waiting).
    pub(crate) fn oldest_held(&self) -> Option<Instant> {
        let waiting = self.waiting.front().map(|w| w.since);
        match (waiting, self.partial_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether no cell has arrived from either side for `timeout` before `now`
    /// (`docs/spec.md` §6.6, circuit idle timeout).
    pub(crate) fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        !self.destroyed && now.saturating_duration_since(self.last_cell) >= timeout
    }

    /// Whether `msg` would be sent at once, whole (no reply waits and the window takes all
    /// its cells). A message that cannot be encoded "fits": sending it fails the circuit.
    pub(crate) fn fits_now(&self, msg: &RelayMsg) -> bool {
        let chunk = self.layer.body_len() - FRAGMENT_HEADER_LEN;
        let cells = match msg.encode() {
            Ok(bytes) => bytes.len().div_ceil(chunk).max(1),
            Err(_) => return true,
        };
        self.waiting.is_empty() && self.send.available() as usize >= cells
    }

    /// Handles one input at `now`, for a circuit placed `at`, appending what must be done to
    /// `out`.
    pub(crate) fn handle(
        &mut self,
        input: Input,
        now: Instant,
        at: &Placement,
        out: &mut Vec<Action>,
    ) {
        if self.destroyed {
            return;
        }
        if matches!(input, Input::Relay(..) | Input::Created(..)) {
            self.last_cell = now;
        }
        #[cfg(feature = "misbehave")]
        {
            self.forger.how = at.misbehaviour;
        }
        let result = match input {
            Input::Relay(Side::Prev, payload) => self.cell_from_prev(payload, now, at, out),
            Input::Relay(Side::Next, payload) => self.cell_from_next(payload, at, out),
            Input::Created(Side::Next, reply) => self.on_created(reply, now, out),
            Input::Created(Side::Prev, _) => Err(Violation::CreatedFromPrev.into()),
            Input::Destroy(side, reason) => Err(CircuitError::Destroyed { side, reason }),
            Input::LinkClosed(side) => Err(CircuitError::LinkClosed(side)),
            Input::NextAttached => {
                self.on_attached(now, at, out);
                Ok(())
            }
            Input::ExtendFailed(refusal) if self.is_connecting() => Err(refusal.into()),
            Input::ExtendFailed(_) => Ok(()),
            Input::Timer => match self.next {
                Next::AwaitingCreated(deadline) if now >= deadline => {
                    Err(CircuitError::ExtendTimedOut)
                }
                _ => Ok(()),
            },
            Input::QueueFull(side) => Err(CircuitError::QueueFull(side)),
            Input::Reply(msg) => self.send_msg(&msg, now, out),
            Input::Kill(cause) => Err(cause),
        };
        if let Err(cause) = result {
            self.teardown(cause, out);
        }
    }

    fn teardown(&mut self, cause: CircuitError, out: &mut Vec<Action>) {
        self.destroyed = true;
        self.waiting.clear();
        self.waiting_cells = 0;
        self.reassembler = Reassembler::new(MAX_RELAY_MSG_LEN);
        self.fragments = 0;
        self.partial_since = None;
        let from = cause.ended_by();
        let has_next = matches!(self.next, Next::AwaitingCreated(_) | Next::Open);
        out.push(Action::Destroyed(Teardown {
            reason: cause.destroy_reason(),
            tell_prev: from != Some(Side::Prev),
            tell_next: has_next && from != Some(Side::Next),
            cause,
        }));
    }

    /// A RELAY cell from the client's side: peel, then forward or deliver.
    fn cell_from_prev(
        &mut self,
        mut payload: Box<Payload>,
        now: Instant,
        at: &Placement,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        match self
            .layer
            .peel(&mut payload)
            .map_err(CircuitError::Tampered)?
        {
            Peeled::Forward => match self.next {
                #[cfg(feature = "misbehave")]
                Next::Open
                    if at.misbehaviour == Some(Misbehaviour::ForgeResults)
                        && self.forger.circuit_complete(
                            MAX_CIRCUIT_DEPTH
                                .saturating_sub(self.depth())
                                .saturating_sub(1),
                        ) =>
                {
                    let forged = MailboxMsg::Result {
                        req: self.forger.next_req(),
                        status: shallot_proto::mailbox::Status::Ok,
                        count: 1,
                    };
                    self.send_msg(&RelayMsg::Mailbox(forged), now, out)
                }
                Next::Open => {
                    trace_cell(at, self.depth(), "cell peeled, forwarded outward");
                    out.push(Action::Relay(Side::Next, payload));
                    Ok(())
                }
                Next::None => Err(Violation::ForwardWithoutNextHop.into()),
                Next::Connecting(_) | Next::AwaitingCreated(_) => {
                    Err(Violation::ForwardWhileExtending.into())
                }
            },
            Peeled::Deliver => {
                trace_cell(at, self.depth(), "cell peeled, delivered here");
                out.push(Action::Count(Count::CellDelivered));
                let body_len = self.layer.body_len();
                self.deliver(&payload[..body_len], now, at, out)
            }
        }
    }

    /// A RELAY cell from the next hop: add this relay's layer and send it toward the client.
    fn cell_from_next(
        &mut self,
        mut payload: Box<Payload>,
        at: &Placement,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        if !matches!(self.next, Next::Open) {
            return Err(Violation::RelayBeforeCreated.into());
        }
        #[cfg(feature = "misbehave")]
        self.forger.saw_cell_from_next();
        self.layer
            .add_layer(&mut payload)
            .map_err(CircuitError::Seal)?;
        trace_cell(at, self.depth(), "cell layered, forwarded back");
        out.push(Action::Relay(Side::Prev, payload));
        Ok(())
    }

    /// A message body delivered to this hop: reassemble, account for flow control, act.
    fn deliver(
        &mut self,
        body: &[u8],
        now: Instant,
        at: &Placement,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        self.fragments += 1;
        self.partial_since.get_or_insert(now);
        let bytes = match self
            .reassembler
            .push(body)
            .map_err(Violation::BadFragment)?
        {
            Some(bytes) => bytes,
            None => return Ok(()),
        };
        let cells = std::mem::take(&mut self.fragments);
        self.partial_since = None;
        let msg = RelayMsg::decode(&bytes).map_err(Violation::BadMessage)?;
        let counted = msg.counts_for_flow_control();
        if counted {
            // Cells not yet acknowledged count against the window already.
            self.unacked += cells;
            if self.unacked > self.recv.remaining() {
                return Err(Violation::WindowOverrun.into());
            }
        }
        self.act(msg, now, at, out)?;
        if counted {
            match self.waiting.back_mut() {
                // A reply is waiting: acknowledge when it leaves.
                Some(w) => w.acks += cells,
                None => self.acknowledge(cells, now, out)?,
            }
        }
        Ok(())
    }

    /// Acts on one whole message delivered to this hop (`docs/spec.md` §4.5).
    fn act(
        &mut self,
        msg: RelayMsg,
        now: Instant,
        at: &Placement,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        match msg {
            RelayMsg::Sendme => self.on_sendme(now, out),
            RelayMsg::Data(bytes) => self.send_msg(&RelayMsg::Data(bytes), now, out),
            RelayMsg::Extend(ext) => self.on_extend(ext, at, out),
            RelayMsg::Mailbox(
                MailboxMsg::Result { .. }
                | MailboxMsg::Envelope { .. }
                | MailboxMsg::Bundle { .. }
                | MailboxMsg::Want { .. },
            ) => Err(Violation::MailboxAnswerFromClient.into()),
            #[cfg(feature = "misbehave")]
            RelayMsg::Mailbox(_) if at.misbehaviour == Some(Misbehaviour::NeverAnswer) => Ok(()),
            RelayMsg::Mailbox(request) => {
                out.push(Action::Mailbox(request));
                Ok(())
            }
            RelayMsg::Dir(DirMsg::Get { base }) => {
                out.push(Action::Dir(base));
                Ok(())
            }
            RelayMsg::Dir(_) => Err(Violation::DirAnswerFromClient.into()),
            RelayMsg::Extended(_) => Err(Violation::ExtendedFromClient.into()),
        }
    }

    /// EXTEND: checks what needs no network, then asks the shell for a link.
    fn on_extend(
        &mut self,
        ext: Extend,
        at: &Placement,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        if !matches!(self.next, Next::None) {
            return Err(Violation::SecondExtend.into());
        }
        if self.depth() >= MAX_CIRCUIT_DEPTH {
            return Err(ExtendRefusal::TooDeep(self.depth()).into());
        }
        if ext.target == at.me {
            return Err(ExtendRefusal::ToSelf.into());
        }
        if at.prev_relay == Some(ext.target) {
            return Err(ExtendRefusal::BackAlongCircuit.into());
        }
        self.next = Next::Connecting(Box::new(ext.handshake));
        out.push(Action::Extend(ext.target));
        Ok(())
    }

    fn on_attached(&mut self, now: Instant, at: &Placement, out: &mut Vec<Action>) {
        if !self.is_connecting() {
            return;
        }
        let deadline = now + at.extend_timeout;
        if let Next::Connecting(handshake) =
            std::mem::replace(&mut self.next, Next::AwaitingCreated(deadline))
        {
            out.push(Action::Create(Create {
                depth: self.depth() + 1,
                handshake: *handshake,
            }));
        }
    }

    fn on_created(
        &mut self,
        reply: ServerMessage,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        if !matches!(self.next, Next::AwaitingCreated(_)) {
            return Err(Violation::UnexpectedCreated.into());
        }
        self.next = Next::Open;
        out.push(Action::Count(Count::Extended));
        self.send_msg(&RelayMsg::Extended(reply), now, out)
    }

    /// Sends a message from this hop to the client, subject to the send window. A message is
    /// sent whole or waits whole, so fragments of two messages never interleave.
    fn send_msg(
        &mut self,
        msg: &RelayMsg,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        let bytes = msg.encode().map_err(CircuitError::Encode)?;
        let bodies = fragment(&bytes, self.layer.body_len()).map_err(CircuitError::Encode)?;
        if !msg.counts_for_flow_control() {
            return self.seal_and_queue(&bodies, out);
        }
        if self.waiting.is_empty() && self.send.take(bodies.len() as u32) {
            self.seal_and_queue(&bodies, out)
        } else {
            self.waiting_cells += bodies.len();
            self.waiting.push_back(Waiting {
                bodies,
                acks: 0,
                since: now,
            });
            Ok(())
        }
    }

    fn seal_and_queue(
        &mut self,
        bodies: &[Vec<u8>],
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        tracing::trace!(
            target: "shallot_trace",
            depth = self.depth(),
            cells = bodies.len(),
            "reply sealed toward the client"
        );
        for body in bodies {
            let mut payload = Box::new([0u8; CELL_PAYLOAD_LEN]);
            payload[..body.len()].copy_from_slice(body);
            self.layer
                .originate(&mut payload)
                .map_err(CircuitError::Seal)?;
            out.push(Action::Relay(Side::Prev, payload));
        }
        Ok(())
    }

    /// Counts `cells` as consumed, sending the SENDMEs that fall due.
    fn acknowledge(
        &mut self,
        cells: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), CircuitError> {
        self.unacked = self.unacked.saturating_sub(cells);
        let sendmes = self.recv.received(cells).map_err(Violation::Flow)?;
        // A withholding relay counts the SENDMEs as sent (so it never blames the client for
        // cells it could send) but sends none.
        #[cfg(feature = "misbehave")]
        if self.forger.how == Some(Misbehaviour::WithholdSendme) {
            return Ok(());
        }
        for _ in 0..sendmes {
            self.send_msg(&RelayMsg::Sendme, now, out)?;
        }
        Ok(())
    }

    /// The client acknowledged cells: send what was waiting for the window.
    fn on_sendme(&mut self, now: Instant, out: &mut Vec<Action>) -> Result<(), CircuitError> {
        self.send.sendme().map_err(Violation::Flow)?;
        out.push(Action::WindowOpened);
        while let Some(w) = self.waiting.front() {
            if !self.send.take(w.bodies.len() as u32) {
                break;
            }
            if let Some(w) = self.waiting.pop_front() {
                self.waiting_cells -= w.bodies.len();
                self.seal_and_queue(&w.bodies, out)?;
                if w.acks > 0 {
                    self.acknowledge(w.acks, now, out)?;
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for CircuitMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitMachine")
            .field("depth", &self.depth())
            .field("next", &self.next)
            .field("destroyed", &self.destroyed)
            .field("waiting_cells", &self.waiting_cells)
            .finish_non_exhaustive()
    }
}
