//! A client circuit (`docs/spec.md` §4.6, §6.3–6.4): built hop by hop with ntor, carrying
//! relay messages to any hop and back, with end-to-end flow control per hop.
//!
//! The protocol lives in [`state`], a state machine without I/O; [`hop`] holds what is kept
//! per hop. This module is the thin shell around them: [`Circuit`] keeps the state behind one
//! lock, queues on the channel the cells each transition leaves in its outbox (under that lock,
//! so cells leave in the order their onion nonces were used), and runs a small task (the
//! reactor) that feeds arriving cells to the state. Messages for the user wait in an inbox
//! until [`Circuit::recv`] takes them, and only then are they acknowledged, so a reader that
//! stops reading stops the sender too.

pub mod hop;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shallot_crypto::onion::body_len;
use shallot_proto::cell::{Cell, CircId};
use shallot_proto::relay_msg::{RelayMsg, MAX_RELAY_MSG_LEN};
use shallot_rt::{lock, AbortOnDrop};
use tokio::sync::{mpsc, Notify};

pub use hop::{HopNum, HopSpec};
pub use state::{CircuitState, Delivery, Event, Outgoing, Sent};

use crate::channel::{CircEvent, ClientChannel};
use crate::err::NetError;

/// The state and where its cells go; shared by the circuit and its reactor.
struct Shared {
    chan: Arc<ClientChannel>,
    id: CircId,
    state: Mutex<CircuitState>,
    /// Woken when a hop is built, a window opens, or the circuit closes.
    changed: Notify,
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
            (result, state.closed().is_some())
        };
        if closed {
            self.chan.remove_circuit(self.id);
            self.changed.notify_waiters();
        }
        result
    }

    fn error(&self) -> NetError {
        lock(&self.state)
            .closed()
            .cloned()
            .unwrap_or(NetError::Closed)
    }
}

/// A circuit from this client.
pub struct Circuit {
    shared: Arc<Shared>,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<Delivery, NetError>>>,
    _reactor: AbortOnDrop<()>,
}

impl Circuit {
    /// Opens a one-hop circuit to the relay at the other end of `chan`.
    pub async fn create(
        chan: Arc<ClientChannel>,
        first: &HopSpec,
        limit: Duration,
    ) -> Result<Circuit, NetError> {
        let (id, events) = chan.add_circuit()?;
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            chan,
            id,
            state: Mutex::new(CircuitState::new()),
            changed: Notify::new(),
        });
        let reactor = AbortOnDrop::new(tokio::spawn(reactor(shared.clone(), events, inbox_tx)));
        let circuit = Circuit {
            shared,
            inbox: tokio::sync::Mutex::new(inbox_rx),
            _reactor: reactor,
        };
        circuit
            .shared
            .apply(|s| s.start_create(first, Instant::now(), limit, &mut rand::thread_rng()))?;
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
        self.await_built().await
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

/// Feeds the channel's events for this circuit to its state until it closes, passing
/// messages to the inbox.
async fn reactor(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<CircEvent>,
    inbox: mpsc::UnboundedSender<Result<Delivery, NetError>>,
) {
    let error = loop {
        let result = match events.recv().await {
            None => Err(shared.error()),
            Some(CircEvent::LinkClosed) => shared.apply(|s| Err(s.link_closed())),
            Some(CircEvent::Cell(msg)) => shared.apply(|s| s.handle_cell(msg, Instant::now())),
        };
        match result {
            Ok(Event::Deliver(d)) => {
                let _ = inbox.send(Ok(d));
            }
            Ok(Event::Built(_) | Event::WindowOpened(_)) => shared.changed.notify_waiters(),
            Ok(Event::Nothing) => {}
            Err(e) => break e,
        }
    };
    let _ = inbox.send(Err(error));
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
