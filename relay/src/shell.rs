//! The I/O shell around circuits (`docs/spec.md` §6.3–6.5): it feeds each circuit's
//! [`CircuitMachine`] its inputs under the circuit's lock and carries out the actions that come
//! back (queueing cells on links, handing requests to the extend and mailbox services through
//! channels, forgetting a destroyed circuit), with no task spawned and nothing awaited while
//! the lock is held.
//!
//! Cells of one circuit are sealed and queued under its lock, so they leave in exactly the
//! order their nonces were used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_proto::cell::{ChanMsg, CircId};
use shallot_proto::dir_cache::{AnswerForm, DirMsg};
use shallot_proto::mailbox::{MailboxMsg, Status};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::lock;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::channel::Channel;
use crate::circtable::CircTable;
use crate::circuit::{
    Action, CircuitError, CircuitMachine, Count, Input, Placement, Side, Teardown,
};
use crate::mailbox::admission::{CircuitLimits, CircuitQuota};
use crate::queue::QueueBudget;
use crate::stats::Stats;

/// What circuits act on: the relay-wide queue budget and counters, the queue limits, and the
/// doors to the services that run outside any circuit's lock.
#[derive(Debug)]
pub(crate) struct Env {
    /// This relay.
    pub(crate) me: RelayId,
    /// Time the next hop has to answer an extend's CREATE.
    pub(crate) extend_timeout: Duration,
    /// Cells held relay-wide (link queues and replies waiting for a window).
    pub(crate) budget: Arc<QueueBudget>,
    /// The relay's counters.
    pub(crate) stats: Stats,
    /// Relay cells one circuit may have queued on one link.
    pub(crate) circuit_queue_cells: usize,
    /// Cells held relay-wide beyond which the out-of-memory handler runs.
    pub(crate) queue_cap_cells: usize,
    /// Wakes the out-of-memory task.
    pub(crate) oom: Notify,
    /// Extend requests, to the extend service.
    pub(crate) extends: mpsc::UnboundedSender<ExtendRequest>,
    /// The mailbox service, on relays that offer one.
    pub(crate) mailbox: Option<MailboxDoor>,
    /// Directory requests, to the directory cache (`docs/spec.md` §5.13).
    pub(crate) dir_requests: mpsc::UnboundedSender<DirRequest>,
    /// How this relay misbehaves, in tests only.
    #[cfg(feature = "misbehave")]
    pub(crate) misbehaviour: crate::misbehave::Switch,
}

/// The way into the mailbox service: a request takes one of its `pending` places first.
#[derive(Debug)]
pub(crate) struct MailboxDoor {
    /// Where requests go.
    pub(crate) requests: mpsc::UnboundedSender<MailboxRequest>,
    /// Places for requests being handled at once.
    pub(crate) pending: Arc<Semaphore>,
    /// Circuits with subscriptions, once destroyed (the service forgets their subscriptions;
    /// the `Weak` keeps the circuit's address from being reused until it has).
    pub(crate) gone: mpsc::UnboundedSender<Weak<Circuit>>,
    /// Limits on each circuit's requests in flight and their rate (`docs/spec.md` §9.7).
    pub(crate) circuit_limits: CircuitLimits,
}

/// A mailbox request delivered on a circuit.
#[derive(Debug)]
pub(crate) struct MailboxRequest {
    /// The circuit it came on (answers go back on it).
    pub(crate) circ: Arc<Circuit>,
    /// The request.
    pub(crate) msg: MailboxMsg,
    /// Its place among the requests being handled.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Its place among its circuit's requests being handled.
    pub(crate) slot: InFlight,
}

/// One of a circuit's places for mailbox requests in flight, given back when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Circuit>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(q) = lock(&self.0.mailbox_quota).as_mut() {
            q.done();
        }
    }
}

/// A `DIR_GET` delivered on a circuit ending here.
#[derive(Debug)]
pub(crate) struct DirRequest {
    /// The circuit it came on (the answer goes back on it).
    pub(crate) circ: Arc<Circuit>,
    /// The body digest of the consensus the client holds, if any.
    pub(crate) base: Option<[u8; 32]>,
}

/// A circuit asking to be extended.
#[derive(Debug)]
pub(crate) struct ExtendRequest {
    /// The circuit.
    pub(crate) circ: Arc<Circuit>,
    /// The relay to extend to.
    pub(crate) target: RelayId,
}

impl Env {
    /// Wakes the out-of-memory task if `total` cells held are over the cap.
    pub(crate) fn queued(&self, total: usize) {
        if total > self.queue_cap_cells {
            self.oom.notify_one();
        }
    }
}

/// A circuit as one link's table holds it.
#[derive(Debug, Clone)]
pub(crate) struct CircRef {
    /// The circuit.
    pub(crate) circ: Arc<Circuit>,
    /// Which of its neighbours this link leads to.
    pub(crate) side: Side,
}

/// An open link: its channel, and the circuits on it.
#[derive(Debug)]
pub(crate) struct Link {
    /// The channel.
    pub(crate) chan: Channel,
    circuits: Mutex<Circuits>,
}

/// A link's circuit table, and when it last changed (for the link idle timeout).
#[derive(Debug)]
struct Circuits {
    table: CircTable<CircRef>,
    changed: Instant,
}

impl Link {
    /// A link with no circuits yet, opened now.
    pub(crate) fn new(chan: Channel) -> Self {
        Link {
            chan,
            circuits: Mutex::new(Circuits {
                table: CircTable::default(),
                changed: Instant::now(),
            }),
        }
    }

    /// The circuit this link knows as `id`.
    pub(crate) fn circuit(&self, id: CircId) -> Option<CircRef> {
        lock(&self.circuits).table.get(id).cloned()
    }

    /// How many circuits use this link.
    pub(crate) fn circuit_count(&self) -> usize {
        lock(&self.circuits).table.len()
    }

    /// Whether the link has carried no circuit for `timeout` before `now` (`docs/spec.md`
    /// §6.6, link idle timeout).
    pub(crate) fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        let c = lock(&self.circuits);
        c.table.len() == 0 && now.saturating_duration_since(c.changed) >= timeout
    }

    /// How many circuits reach this link from the given side (`Prev`: circuits created here).
    pub(crate) fn count_side(&self, side: Side) -> usize {
        lock(&self.circuits)
            .table
            .iter()
            .filter(|(_, r)| r.side == side)
            .count()
    }

    /// Every circuit on this link, with its id here.
    pub(crate) fn circuits(&self) -> Vec<(CircId, CircRef)> {
        lock(&self.circuits)
            .table
            .iter()
            .map(|(id, r)| (id, r.clone()))
            .collect()
    }

    /// Records a circuit the peer opened.
    pub(crate) fn insert(&self, id: CircId, r: CircRef) {
        let mut c = lock(&self.circuits);
        c.table.insert(id, r);
        c.changed = Instant::now();
    }

    /// Records a circuit this relay extends over the link under a fresh id; `None` if the
    /// link is closed or full.
    pub(crate) fn add_outbound(&self, r: CircRef, cap: usize) -> Option<CircId> {
        if self.chan.is_closed() {
            return None;
        }
        let we_opened = self.chan.peer.we_initiated;
        let mut c = lock(&self.circuits);
        c.changed = Instant::now();
        c.table.add_outbound(we_opened, cap, rand::random, r)
    }

    /// Forgets circuit `id` and drops the cells queued for it.
    pub(crate) fn forget(&self, id: CircId) {
        {
            let mut c = lock(&self.circuits);
            c.table.remove(id);
            c.changed = Instant::now();
        }
        self.chan.drop_circuit_cells(id);
    }

    /// Forgets every circuit, returning them.
    pub(crate) fn take_all(&self) -> Vec<(CircId, CircRef)> {
        let mut c = lock(&self.circuits);
        c.changed = Instant::now();
        c.table.drain()
    }
}

/// The locked part of a circuit.
#[derive(Debug)]
struct Hop {
    machine: CircuitMachine,
    /// The next hop's link and the circuit's id there, once attached.
    next: Option<(Arc<Link>, CircId)>,
    /// Reused for each input's actions.
    actions: Vec<Action>,
}

/// A circuit through this relay: its machine behind a lock, and its neighbours' links.
#[derive(Debug)]
pub(crate) struct Circuit {
    prev: Arc<Link>,
    prev_id: CircId,
    hop: Mutex<Hop>,
    /// Signalled when a SENDME opens the send window (or the circuit is destroyed).
    window_open: Notify,
    /// Whether the mailbox service holds a subscription for it.
    subscribed: AtomicBool,
    /// Its mailbox requests in flight and their rate, from its first one on.
    mailbox_quota: Mutex<Option<CircuitQuota>>,
}

impl Drop for Circuit {
    fn drop(&mut self) {
        self.prev.chan.budget().circuit_freed();
    }
}

impl Circuit {
    /// A circuit created by a CREATE on `prev` under `prev_id`.
    /// Counted in the relay-wide budget's circuits until it is dropped.
    pub(crate) fn new(machine: CircuitMachine, prev: Arc<Link>, prev_id: CircId) -> Self {
        prev.chan.budget().circuit_made();
        Circuit {
            prev,
            prev_id,
            hop: Mutex::new(Hop {
                machine,
                next: None,
                actions: Vec::new(),
            }),
            window_open: Notify::new(),
            subscribed: AtomicBool::new(false),
            mailbox_quota: Mutex::new(None),
        }
    }

    /// Takes a place for one more mailbox request if the circuit's limits allow it.
    fn start_mailbox_request(self: &Arc<Self>, limits: &CircuitLimits) -> Option<InFlight> {
        let now = Instant::now();
        let mut quota = lock(&self.mailbox_quota);
        let q = quota.get_or_insert_with(|| CircuitQuota::new(limits, now));
        q.start(limits, now).then(|| InFlight(self.clone()))
    }

    /// Notes that the mailbox service holds a subscription for this circuit, so that its
    /// teardown tells the service.
    pub(crate) fn mark_subscribed(&self) {
        self.subscribed.store(true, Ordering::SeqCst);
    }

    /// Feeds one input and carries out what follows.
    pub(crate) fn input(self: &Arc<Self>, env: &Env, input: Input) {
        let mut hop = lock(&self.hop);
        self.step(env, &mut hop, input);
    }

    /// Records the next hop's link once an extend has one; sends CREATE there. False (and
    /// the link forgets the id) if the circuit is no longer waiting for a link.
    pub(crate) fn attach_next(self: &Arc<Self>, env: &Env, link: Arc<Link>, id: CircId) -> bool {
        let mut hop = lock(&self.hop);
        if !hop.machine.is_connecting() {
            drop(hop);
            link.forget(id);
            return false;
        }
        hop.next = Some((link, id));
        self.step(env, &mut hop, Input::NextAttached);
        true
    }

    /// When CREATED is due, while the circuit waits for it.
    pub(crate) fn created_deadline(&self) -> Option<Instant> {
        lock(&self.hop).machine.created_deadline()
    }

    /// Whether the circuit has been destroyed.
    pub(crate) fn is_destroyed(&self) -> bool {
        lock(&self.hop).machine.is_destroyed()
    }

    /// When the oldest cell it holds in memory arrived (a reply waiting for the client's
    /// window, or the first cell of an unfinished message), if it holds any.
    pub(crate) fn oldest_held(&self) -> Option<Instant> {
        lock(&self.hop).machine.oldest_held()
    }

    /// Cells it holds in memory (counted in the relay's budget).
    #[cfg(test)]
    pub(crate) fn held_cells(&self) -> usize {
        lock(&self.hop).machine.held_cells()
    }

    /// Whether no cell has passed for `timeout` before `now`.
    pub(crate) fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        lock(&self.hop).machine.is_idle(now, timeout)
    }

    /// Sends a message to the client once the send window has room for all of it and no
    /// reply waits, waiting at most `limit` (the lock is never held across the wait). False
    /// if the circuit is gone or stayed full.
    pub(crate) async fn send_when_open(
        self: &Arc<Self>,
        env: &Env,
        mut msg: RelayMsg,
        limit: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let opened = self.window_open.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            match self.try_send(env, msg) {
                Ok(alive) => return alive,
                Err(back) => msg = back,
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return false;
            }
        }
    }

    /// Sends `msg` toward the client if the circuit's window has room for it now, without
    /// waiting; `false` if it has not, or the circuit is gone.
    pub(crate) fn send_if_open(self: &Arc<Self>, env: &Env, msg: RelayMsg) -> bool {
        self.try_send(env, msg).unwrap_or(false)
    }

    /// Sends `msg` if the window has room now: whether the circuit is still alive after it
    /// (`Ok(false)` too when it was gone already), or `msg` back when it does not fit.
    // The message goes back unmoved, on the stack: boxing it would allocate for every send.
    #[allow(clippy::result_large_err)]
    fn try_send(self: &Arc<Self>, env: &Env, msg: RelayMsg) -> Result<bool, RelayMsg> {
        let mut hop = lock(&self.hop);
        if hop.machine.is_destroyed() {
            return Ok(false);
        }
        if !hop.machine.fits_now(&msg) {
            return Err(msg);
        }
        self.step(env, &mut hop, Input::Reply(msg));
        Ok(!hop.machine.is_destroyed())
    }

    /// The network of the client at the other end of the link this circuit came on (its IPv4
    /// address, or its IPv6 /64, as the connection limits count it); `None` when the link
    /// is not a client's: the circuit came through another relay.
    pub(crate) fn client_network(&self) -> Option<std::net::IpAddr> {
        let peer = &self.prev.chan.peer;
        (peer.kind == shallot_link::LinkKind::Client).then(|| crate::limits::limit_key(peer.ip))
    }

    /// Runs the machine on `input`, then carries out its actions (and the inputs they feed
    /// back) until none are left.
    fn step(self: &Arc<Self>, env: &Env, hop: &mut Hop, input: Input) {
        let at = Placement {
            me: env.me,
            prev_relay: self.prev.chan.peer.relay,
            extend_timeout: env.extend_timeout,
            #[cfg(feature = "misbehave")]
            misbehaviour: env.misbehaviour.get(),
        };
        let held_before = hop.machine.held_cells();
        hop.machine
            .handle(input, Instant::now(), &at, &mut hop.actions);
        let mut batch = Vec::new();
        while !hop.actions.is_empty() {
            std::mem::swap(&mut batch, &mut hop.actions);
            for action in batch.drain(..) {
                if let Some(feedback) = self.perform(env, hop, action) {
                    hop.machine
                        .handle(feedback, Instant::now(), &at, &mut hop.actions);
                }
            }
        }
        if hop.actions.capacity() < batch.capacity() {
            hop.actions = batch;
        }
        let held = hop.machine.held_cells();
        if held > held_before {
            env.queued(env.budget.add(held - held_before));
        } else {
            env.budget.sub(held_before - held);
        }
    }

    /// Carries out one action; returns the input it feeds back, if any.
    fn perform(self: &Arc<Self>, env: &Env, hop: &mut Hop, action: Action) -> Option<Input> {
        match action {
            Action::Relay(side, payload) => {
                if hop.machine.is_destroyed() {
                    return None;
                }
                let (link, id) = match side {
                    Side::Prev => (&self.prev, self.prev_id),
                    Side::Next => match &hop.next {
                        Some((link, id)) => (link, *id),
                        None => return None,
                    },
                };
                match link.chan.send_relay(id, &payload, env.circuit_queue_cells) {
                    Ok(total) => {
                        Stats::bump(&env.stats.cells_forwarded);
                        env.queued(total);
                        None
                    }
                    Err(_) => Some(Input::QueueFull(side)),
                }
            }
            Action::Create(create) => {
                if let Some((link, id)) = &hop.next {
                    env.queued(link.chan.send_control(*id, ChanMsg::Create(create)));
                }
                None
            }
            Action::Extend(target) => {
                let request = ExtendRequest {
                    circ: self.clone(),
                    target,
                };
                // Only a relay that is stopping has no extend service.
                env.extends
                    .send(request)
                    .err()
                    .map(|_| Input::Kill(CircuitError::ShuttingDown))
            }
            Action::Mailbox(msg) => self.hand_to_mailbox(env, msg),
            Action::Dir(base) => {
                let request = DirRequest {
                    circ: self.clone(),
                    base,
                };
                // Only a relay that is stopping has no directory cache.
                env.dir_requests.send(request).err().map(|_| {
                    Input::Reply(RelayMsg::Dir(DirMsg::Answer {
                        form: AnswerForm::Unavailable,
                        len: 0,
                    }))
                })
            }
            Action::WindowOpened => {
                self.window_open.notify_waiters();
                None
            }
            Action::Count(Count::CellDelivered) => {
                Stats::bump(&env.stats.cells_delivered);
                None
            }
            Action::Count(Count::Extended) => {
                Stats::bump(&env.stats.circuits_extended);
                None
            }
            Action::Destroyed(teardown) => {
                self.tear_down(env, hop, teardown);
                None
            }
        }
    }

    /// Hands a mailbox request to the service; the two refusals (no service, too busy) come
    /// back at once as a reply (`docs/spec.md` §9.3).
    fn hand_to_mailbox(self: &Arc<Self>, env: &Env, msg: MailboxMsg) -> Option<Input> {
        let req = msg.request_id();
        let refuse = |status| {
            Some(Input::Reply(RelayMsg::Mailbox(MailboxMsg::Result {
                req,
                status,
                count: 0,
            })))
        };
        let Some(door) = &env.mailbox else {
            return refuse(Status::Unavailable);
        };
        // The circuit's own limits first: one circuit cannot take the relay-wide places.
        let Some(slot) = self.start_mailbox_request(&door.circuit_limits) else {
            Stats::bump(&env.stats.mailbox_refused_busy);
            return refuse(Status::Busy);
        };
        let Ok(permit) = door.pending.clone().try_acquire_owned() else {
            Stats::bump(&env.stats.mailbox_refused_busy);
            return refuse(Status::Busy);
        };
        let request = MailboxRequest {
            circ: self.clone(),
            msg,
            permit,
            slot,
        };
        match door.requests.send(request) {
            Ok(()) => None,
            Err(_) => refuse(Status::Internal),
        }
    }

    /// Forgets the circuit on both links and tells the neighbours the teardown names.
    fn tear_down(self: &Arc<Self>, env: &Env, hop: &mut Hop, t: Teardown) {
        let stats = &env.stats;
        Stats::bump(&stats.circuits_destroyed);
        match &t.cause {
            CircuitError::Tampered(_) => Stats::bump(&stats.circuits_destroyed_for_tamper),
            CircuitError::QueueFull(_) => Stats::bump(&stats.circuits_destroyed_for_queue),
            CircuitError::MemoryPressure => Stats::bump(&stats.circuits_destroyed_for_memory),
            CircuitError::Idle => Stats::bump(&stats.circuits_destroyed_idle),
            CircuitError::Extend(crate::circuit::ExtendRefusal::NoFreeId) => {}
            CircuitError::Extend(_) => Stats::bump(&stats.extends_refused),
            _ => {}
        }
        debug!(
            reason = %t.reason,
            peer_fault = t.cause.is_peer_fault(),
            "circuit destroyed: {}",
            ErrorChain(&t.cause)
        );
        self.prev.forget(self.prev_id);
        if t.tell_prev {
            env.queued(
                self.prev
                    .chan
                    .send_control(self.prev_id, ChanMsg::Destroy(t.reason)),
            );
        }
        if let Some((link, id)) = hop.next.take() {
            link.forget(id);
            if t.tell_next {
                env.queued(link.chan.send_control(id, ChanMsg::Destroy(t.reason)));
            }
        }
        self.window_open.notify_waiters();
        if self.subscribed.load(Ordering::SeqCst) {
            if let Some(door) = &env.mailbox {
                let _ = door.gone.send(Arc::downgrade(self));
            }
        }
    }
}

/// Displays an error with its sources, `a: b: c`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
