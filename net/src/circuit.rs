//! A client circuit (`docs/spec.md` §4.6, §6.3–6.4): built hop by hop with ntor, carrying
//! relay messages to any hop and back, with end-to-end flow control per hop.
//!
//! The protocol lives in [`state`], a state machine without I/O; [`hop`] holds what is kept
//! per hop. This module is the thin shell around them: [`Circuit`] keeps the state behind one
//! lock, queues on the channel the cells each transition leaves in its outbox (under that lock,
//! so cells leave in the order their onion nonces were used), and is fed arriving cells by its
//! channel's read task directly (no task of its own). Messages for the user wait in an inbox
//! until [`Circuit::recv`] takes them, and only then are they acknowledged, so a reader that
//! stops reading stops the sender too.

pub mod hop;
pub mod state;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use shallot_crypto::onion::body_len;
use shallot_proto::cell::{Cell, ChanMsg, CircId};
use shallot_proto::relay_msg::{RelayMsg, MAX_RELAY_MSG_LEN};
use shallot_rt::lock;
use tokio::sync::{mpsc, Notify};

pub use hop::{HopNum, HopSpec};
pub use state::{CircuitState, Delivery, Event, Outgoing, Sent};

use crate::channel::{CircSink, ClientChannel};
use crate::err::NetError;

/// The state and where its cells go; shared by the circuit and its channel.
struct Shared {
    chan: Arc<ClientChannel>,
    id: CircId,
    state: Mutex<CircuitState>,
    /// Woken when a hop is built, a window opens, or the circuit closes.
    changed: Notify,
    /// Where messages for the user go, then why the circuit ended (once).
    inbox: mpsc::UnboundedSender<Result<Delivery, NetError>>,
    /// Whether the inbox has been told the circuit ended.
    ended: AtomicBool,
}

impl Shared {
    /// Runs one transition and performs what it asks: its outgoing cells are queued while
    /// the lock is held (nonce order), waiters are woken after it is released.
    fn apply<T>(
        &self,
        f: impl FnOnce(&mut CircuitState) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        let (result, closed) = {
            let mut state = lock(&self.state);
            let result = f(&mut state);
            for msg in state.take_outbox() {
                self.chan.send(&Cell::new(self.id, msg));
            }
            (result, state.closed().cloned())
        };
        if let Some(why) = closed {
            self.chan.remove_circuit(self.id);
            self.changed.notify_waiters();
            self.end(why);
        }
        result
    }

    /// Tells the inbox, once, why the circuit ended.
    fn end(&self, why: NetError) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            let _ = self.inbox.send(Err(why));
        }
    }

    /// Acts on what feeding the state an input gave.
    fn handle(&self, result: Result<Event, NetError>) {
        match result {
            Ok(Event::Deliver(d)) => {
                let _ = self.inbox.send(Ok(d));
            }
            Ok(Event::Built(_) | Event::WindowOpened(_)) => self.changed.notify_waiters(),
            Ok(Event::Nothing) => {}
            Err(e) => self.end(e),
        }
    }

    fn error(&self) -> NetError {
        lock(&self.state)
            .closed()
            .cloned()
            .unwrap_or(NetError::Closed)
    }
}

impl CircSink for Shared {
    fn cell(&self, msg: ChanMsg) {
        if self.ended.load(Ordering::Acquire) {
            return;
        }
        let result = self.apply(|s| s.handle_cell(msg, Instant::now()));
        self.handle(result);
    }

    fn link_closed(&self) {
        let result = self.apply(|s| Err(s.link_closed()));
        self.handle(result);
    }
}

/// Handshake preparations running now, in this process ([`Circuit::prepare_handshake`]).
static PREPARING: Slots = Slots::new();

/// A count of the places taken among a fixed number.
struct Slots {
    used: AtomicUsize,
}

/// A place among [`Slots`], given back when dropped.
struct Slot(&'static Slots);

impl Slots {
    const fn new() -> Slots {
        Slots {
            used: AtomicUsize::new(0),
        }
    }

    /// A place, if fewer than `cap` are taken.
    fn take(&'static self, cap: usize) -> Option<Slot> {
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            });
        taken.ok().map(|_| Slot(self))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place for one handshake preparation: there are as many as the machine has cores. A
/// preparation beyond that would wait for a core (or start a thread) and save nothing, so a
/// burst of builds (a relay repairing its ring, a client building ahead) starts no more
/// threads than that.
fn prepare_slot() -> Option<Slot> {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    PREPARING.take(cores)
}

/// A circuit from this client.
pub struct Circuit {
    shared: Arc<Shared>,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<Delivery, NetError>>>,
}

impl Circuit {
    /// Opens a one-hop circuit to the relay at the other end of `chan`.
    pub async fn create(
        chan: Arc<ClientChannel>,
        first: &HopSpec,
        limit: Duration,
    ) -> Result<Circuit, NetError> {
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let shared = chan.clone().add_circuit(|id| {
            Arc::new(Shared {
                chan,
                id,
                state: Mutex::new(CircuitState::new()),
                changed: Notify::new(),
                inbox: inbox_tx,
                ended: AtomicBool::new(false),
            })
        })?;
        let circuit = Circuit {
            shared,
            inbox: tokio::sync::Mutex::new(inbox_rx),
        };
        circuit
            .shared
            .apply(|s| s.start_create(first, Instant::now(), limit, &mut rand::thread_rng()))?;
        circuit.prepare_handshake();
        circuit.await_built().await?;
        Ok(circuit)
    }

    /// Extends the circuit by one hop, through its current last hop.
    pub async fn extend(&self, hop: &HopSpec, limit: Duration) -> Result<(), NetError> {
        loop {
            let opened = self.shared.changed.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            let sent = self
                .shared
                .apply(|s| s.start_extend(hop, Instant::now(), limit, &mut rand::thread_rng()))?;
            match sent {
                Sent::Queued => break,
                Sent::Blocked => opened.await,
            }
        }
        self.prepare_handshake();
        self.await_built().await
    }

    /// Does the client's half of the handshake that needs no answer while the relay works
    /// on its own: one Diffie-Hellman of the two off the path of every hop (`docs/spec.md`
    /// §3). It runs on a blocking thread, not on this task: here it would keep this worker
    /// from seeing the reply and the relays' cells meanwhile. If the answer wins the race,
    /// the handshake finishes without it: the work is skipped if it has not begun, and its
    /// result ignored if it has. With no runtime, or as many preparations running as the
    /// machine has cores, nothing is prepared and the answer does all the work, as before.
    fn prepare_handshake(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(slot) = prepare_slot() else {
            return;
        };
        let Some(work) = lock(&self.shared.state).handshake_preparation() else {
            return;
        };
        let shared = self.shared.clone();
        runtime.spawn_blocking(move || {
            let _slot = slot;
            if !lock(&shared.state).wants(&work) {
                return;
            }
            let done = work.run();
            lock(&shared.state).handshake_prepared(done);
        });
    }

    /// Waits until the handshake under way finishes, firing the state's timeout at its
    /// deadline.
    async fn await_built(&self) -> Result<(), NetError> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let state = lock(&self.shared.state);
                if let Some(e) = state.closed() {
                    return Err(e.clone());
                }
                match state.deadline() {
                    None => return Ok(()),
                    Some(d) => d,
                }
            };
            let woken =
                tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), changed).await;
            if woken.is_err() {
                self.shared.apply(|s| s.poll_timeout(Instant::now()))?;
            }
        }
    }

    /// Hops built so far.
    pub fn len(&self) -> usize {
        lock(&self.shared.state).len()
    }

    /// Whether no hop is built.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last hop built.
    pub fn last_hop(&self) -> Option<HopNum> {
        lock(&self.shared.state).last_hop()
    }

    /// The hops, first to last.
    pub fn path(&self) -> Vec<HopSpec> {
        lock(&self.shared.state).path()
    }

    /// Whether the circuit has closed.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed().is_some()
    }

    /// Why it closed, if it has.
    pub fn close_reason(&self) -> Option<NetError> {
        lock(&self.shared.state).closed().cloned()
    }

    /// The most message bytes one cell carries to `hop`.
    pub fn cell_capacity(hop: HopNum) -> usize {
        body_len(hop.depth())
    }

    /// Sends a message to `hop`, waiting for its flow-control window.
    pub async fn send(&self, hop: HopNum, msg: &RelayMsg) -> Result<(), NetError> {
        let out = Outgoing::new(hop, msg)?;
        loop {
            let opened = self.shared.changed.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            match self.shared.apply(|s| s.send(&out))? {
                Sent::Queued => return Ok(()),
                Sent::Blocked => opened.await,
            }
        }
    }

    /// Waits for the next message from any hop.
    pub async fn recv(&self) -> Result<(HopNum, RelayMsg), NetError> {
        let next = self.inbox.lock().await.recv().await;
        match next {
            Some(Ok(d)) => {
                self.shared.apply(|s| s.consumed(d.hop, d.cells))?;
                Ok((d.hop, d.msg))
            }
            Some(Err(e)) => Err(e),
            None => Err(self.shared.error()),
        }
    }

    /// Closes the circuit, asking the relays to tear it down.
    pub fn close(&self) {
        let _ = self.shared.apply(|s| {
            s.close();
            Ok(())
        });
    }

    /// The largest message `send` accepts.
    pub const MAX_MESSAGE: usize = MAX_RELAY_MSG_LEN;
}

impl Drop for Circuit {
    fn drop(&mut self) {
        self.close();
    }
}

/// Builds a circuit along `path` over `chan` (which must lead to `path[0]`), with a time
/// limit per hop.
pub async fn build(
    chan: Arc<ClientChannel>,
    path: &[HopSpec],
    per_hop: Duration,
) -> Result<Circuit, NetError> {
    let (first, rest) = path.split_first().ok_or(NetError::EmptyPath)?;
    let circ = Circuit::create(chan, first, per_hop).await?;
    for hop in rest {
        circ.extend(hop, per_hop).await?;
    }
    Ok(circ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_up_to_their_number_and_back_when_dropped() {
        static SLOTS: Slots = Slots::new();
        let a = SLOTS.take(2).expect("first");
        let b = SLOTS.take(2).expect("second");
        assert!(SLOTS.take(2).is_none(), "a third of two");
        drop(a);
        let c = SLOTS.take(2).expect("one given back");
        assert!(SLOTS.take(2).is_none());
        drop((b, c));
        assert_eq!(SLOTS.used.load(Ordering::Acquire), 0);
    }
}
