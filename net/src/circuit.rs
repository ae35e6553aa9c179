//! A client circuit (`docs/spec.md` §4, §6.3–6.4): built hop by hop with ntor, carrying relay
//! messages to any hop and back, with end-to-end flow control per hop.
//!
//! A small task per circuit (the reactor) unwraps arriving cells, reassembles messages, and
//! applies SENDMEs; messages for the user wait in an inbox until [`Circuit::recv`] takes them,
//! and only then are they acknowledged, so a reader that stops reading stops the sender too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_crypto::ntor::{ClientHandshake, NtorError, ServerMessage};
use shallot_crypto::onion::{body_len, ClientLayers, HopKeys, OnionError, CELL_PAYLOAD_LEN};
use shallot_link::LinkError;
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, DestroyReason};
use shallot_proto::flow::{RecvWindow, SendWindow};
use shallot_proto::relay_msg::{fragment, Extend, Reassembler, RelayMsg, MAX_RELAY_MSG_LEN};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, Notify};
use x25519_dalek::PublicKey;

use crate::channel::{lock, CircEvent, ClientChannel};

/// A relay as a circuit hop: who it is and its onion key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSpec {
    /// Its fingerprint.
    pub id: RelayId,
    /// Its ntor onion key.
    pub ntor_key: [u8; 32],
    /// Its nickname, for display.
    pub nickname: String,
}

impl From<&shallot_proto::dir::RelayEntry> for HopSpec {
    fn from(r: &shallot_proto::dir::RelayEntry) -> Self {
        HopSpec {
            id: r.id,
            ntor_key: r.ntor_key,
            nickname: r.nickname.clone(),
        }
    }
}

/// Why a circuit failed.
#[derive(Debug, Clone, Error)]
pub enum CircuitError {
    /// The link to the first hop failed.
    #[error("link to the first relay failed: {0}")]
    Link(String),
    /// A relay destroyed the circuit.
    #[error("circuit destroyed by a relay: {0}")]
    Destroyed(DestroyReason),
    /// The circuit is closed.
    #[error("circuit closed")]
    Closed,
    /// A build step took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// A hop's handshake failed.
    #[error("handshake with {hop} failed: {source}")]
    Handshake {
        /// The hop's nickname.
        hop: String,
        /// Why.
        source: NtorError,
    },
    /// A relay broke the protocol, or a layer failed to authenticate.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A message could not be sent.
    #[error("cannot send: {0}")]
    Send(String),
}

impl From<LinkError> for CircuitError {
    fn from(e: LinkError) -> Self {
        CircuitError::Link(e.to_string())
    }
}

impl From<OnionError> for CircuitError {
    fn from(e: OnionError) -> Self {
        CircuitError::Protocol(e.to_string())
    }
}

struct Delivered {
    hop: usize,
    msg: RelayMsg,
    cells: u32,
}

struct Shared {
    chan: Arc<ClientChannel>,
    id: CircId,
    layers: Mutex<ClientLayers>,
    send_windows: Mutex<Vec<SendWindow>>,
    recv_windows: Mutex<Vec<RecvWindow>>,
    /// Counted cells per hop delivered to the inbox and not yet read.
    unread: Mutex<Vec<u32>>,
    window_open: Notify,
    closed: AtomicBool,
    close_reason: Mutex<Option<CircuitError>>,
    hops: Mutex<Vec<HopSpec>>,
    pending_created: Mutex<Option<oneshot::Sender<ServerMessage>>>,
    pending_extended: Mutex<Option<oneshot::Sender<ServerMessage>>>,
}

impl Shared {
    fn fail(&self, e: CircuitError) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            *lock(&self.close_reason) = Some(e);
        }
        self.window_open.notify_waiters();
        lock(&self.pending_created).take();
        lock(&self.pending_extended).take();
    }

    fn error(&self) -> CircuitError {
        lock(&self.close_reason)
            .clone()
            .unwrap_or(CircuitError::Closed)
    }

    /// Wraps and queues the fragments of one message for `hop`, in nonce order.
    fn transmit(&self, hop: usize, bodies: &[Vec<u8>]) -> Result<(), CircuitError> {
        let mut layers = lock(&self.layers);
        for body in bodies {
            let payload = layers.wrap(hop, body)?;
            self.chan
                .send(&Cell::new(self.id, ChanMsg::Relay(Box::new(payload))));
        }
        Ok(())
    }

    fn encode(&self, hop: usize, msg: &RelayMsg) -> Result<Vec<Vec<u8>>, CircuitError> {
        let depth = u8::try_from(hop).map_err(|_| CircuitError::Send("no such hop".into()))?;
        let bytes = msg
            .encode()
            .map_err(|e| CircuitError::Send(e.to_string()))?;
        fragment(&bytes, body_len(depth)).map_err(|e| CircuitError::Send(e.to_string()))
    }

    /// Checks, as cells arrive, that `hop` stays within its window: the cells it sent and we
    /// have not yet read, plus `cells`, must fit. Records them as unread.
    fn arrived(&self, hop: usize, cells: u32) -> Result<(), CircuitError> {
        let remaining = lock(&self.recv_windows)
            .get(hop - 1)
            .map(RecvWindow::remaining)
            .ok_or_else(|| CircuitError::Protocol("message from an unknown hop".into()))?;
        let mut unread = lock(&self.unread);
        let slot = unread
            .get_mut(hop - 1)
            .ok_or_else(|| CircuitError::Protocol("message from an unknown hop".into()))?;
        if *slot + cells > remaining {
            return Err(CircuitError::Protocol(format!(
                "hop {hop} overran its flow-control window"
            )));
        }
        *slot += cells;
        Ok(())
    }

    /// Acknowledges `cells` consumed from `hop`, sending SENDMEs as they fall due.
    fn consumed(&self, hop: usize, cells: u32) -> Result<(), CircuitError> {
        if let Some(slot) = lock(&self.unread).get_mut(hop - 1) {
            *slot = slot.saturating_sub(cells);
        }
        let sendmes = {
            let mut w = lock(&self.recv_windows);
            let w = w
                .get_mut(hop - 1)
                .ok_or_else(|| CircuitError::Protocol("message from an unknown hop".into()))?;
            w.received(cells)
                .map_err(|e| CircuitError::Protocol(e.to_string()))?
        };
        for _ in 0..sendmes {
            let bodies = self.encode(hop, &RelayMsg::Sendme)?;
            self.transmit(hop, &bodies)?;
        }
        Ok(())
    }
}

/// A circuit from this client.
pub struct Circuit {
    shared: Arc<Shared>,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<Result<Delivered, CircuitError>>>,
}

impl Circuit {
    /// Opens a one-hop circuit to the relay at the other end of `chan`.
    pub async fn create(
        chan: Arc<ClientChannel>,
        first: &HopSpec,
        limit: Duration,
    ) -> Result<Circuit, CircuitError> {
        let (id, events) = chan.add_circuit()?;
        let (created_tx, created_rx) = oneshot::channel();
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            chan: chan.clone(),
            id,
            layers: Mutex::new(ClientLayers::new()),
            send_windows: Mutex::new(Vec::new()),
            recv_windows: Mutex::new(Vec::new()),
            unread: Mutex::new(Vec::new()),
            window_open: Notify::new(),
            closed: AtomicBool::new(false),
            close_reason: Mutex::new(None),
            hops: Mutex::new(Vec::new()),
            pending_created: Mutex::new(Some(created_tx)),
            pending_extended: Mutex::new(None),
        });
        tokio::spawn(reactor(shared.clone(), events, inbox_tx));
        let circuit = Circuit {
            shared,
            inbox: tokio::sync::Mutex::new(inbox_rx),
        };
        let (hs, msg) = ClientHandshake::start(
            &mut rand::thread_rng(),
            first.id,
            &PublicKey::from(first.ntor_key),
        );
        chan.send(&Cell::new(
            id,
            ChanMsg::Create(Create {
                depth: 1,
                handshake: msg,
            }),
        ));
        let reply = circuit
            .await_reply(created_rx, limit, "creating the first hop")
            .await?;
        circuit.add_hop(hs, &reply, first)?;
        Ok(circuit)
    }

    /// Extends the circuit by one hop, through its current last hop.
    pub async fn extend(&self, hop: &HopSpec, limit: Duration) -> Result<(), CircuitError> {
        let last = self.len();
        let (tx, rx) = oneshot::channel();
        *lock(&self.shared.pending_extended) = Some(tx);
        let (hs, msg) = ClientHandshake::start(
            &mut rand::thread_rng(),
            hop.id,
            &PublicKey::from(hop.ntor_key),
        );
        self.send(
            last,
            &RelayMsg::Extend(Extend {
                target: hop.id,
                handshake: msg,
            }),
        )
        .await?;
        let reply = self.await_reply(rx, limit, "extending").await?;
        self.add_hop(hs, &reply, hop)
    }

    async fn await_reply(
        &self,
        rx: oneshot::Receiver<ServerMessage>,
        limit: Duration,
        step: &'static str,
    ) -> Result<ServerMessage, CircuitError> {
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(self.shared.error()),
            Err(_) => {
                self.close();
                Err(CircuitError::Timeout(step))
            }
        }
    }

    fn add_hop(
        &self,
        hs: ClientHandshake,
        reply: &ServerMessage,
        hop: &HopSpec,
    ) -> Result<(), CircuitError> {
        let seed = hs.finish(reply).map_err(|source| {
            self.close();
            CircuitError::Handshake {
                hop: hop.nickname.clone(),
                source,
            }
        })?;
        let keys = HopKeys::from_key_seed(&seed).map_err(|source| CircuitError::Handshake {
            hop: hop.nickname.clone(),
            source,
        })?;
        lock(&self.shared.layers).push_hop(&keys)?;
        lock(&self.shared.send_windows).push(SendWindow::default());
        lock(&self.shared.recv_windows).push(RecvWindow::default());
        lock(&self.shared.unread).push(0);
        lock(&self.shared.hops).push(hop.clone());
        Ok(())
    }

    /// Hops built so far.
    pub fn len(&self) -> usize {
        lock(&self.shared.hops).len()
    }

    /// Whether no hop is built.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hops, first to last.
    pub fn path(&self) -> Vec<HopSpec> {
        lock(&self.shared.hops).clone()
    }

    /// Whether the circuit has closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Why it closed, if it has.
    pub fn close_reason(&self) -> Option<CircuitError> {
        self.is_closed().then(|| self.shared.error())
    }

    /// The most message bytes one cell carries to `hop`.
    pub fn cell_capacity(hop: u8) -> usize {
        body_len(hop)
    }

    /// Sends a message to hop `hop` (1-based), waiting for its flow-control window.
    pub async fn send(&self, hop: usize, msg: &RelayMsg) -> Result<(), CircuitError> {
        if hop == 0 || hop > self.len() {
            return Err(CircuitError::Send(format!("no hop {hop} on this circuit")));
        }
        let bodies = self.shared.encode(hop, msg)?;
        if msg.counts_for_flow_control() {
            let n = bodies.len() as u32;
            loop {
                let opened = self.shared.window_open.notified();
                tokio::pin!(opened);
                opened.as_mut().enable();
                if self.is_closed() {
                    return Err(self.shared.error());
                }
                if lock(&self.shared.send_windows)[hop - 1].take(n) {
                    break;
                }
                opened.await;
            }
        }
        if self.is_closed() {
            return Err(self.shared.error());
        }
        self.shared.transmit(hop, &bodies)
    }

    /// Waits for the next message from any hop: (hop, message).
    pub async fn recv(&self) -> Result<(usize, RelayMsg), CircuitError> {
        let next = self.inbox.lock().await.recv().await;
        match next {
            Some(Ok(d)) => {
                if let Err(e) = self.shared.consumed(d.hop, d.cells) {
                    self.close();
                    return Err(e);
                }
                Ok((d.hop, d.msg))
            }
            Some(Err(e)) => Err(e),
            None => Err(self.shared.error()),
        }
    }

    /// Closes the circuit, asking the relays to tear it down.
    pub fn close(&self) {
        if !self.shared.closed.load(Ordering::Acquire) {
            self.shared.fail(CircuitError::Closed);
            self.shared.chan.destroy(self.shared.id);
        }
    }

    /// The largest message `send` accepts.
    pub const MAX_MESSAGE: usize = MAX_RELAY_MSG_LEN;
}

impl Drop for Circuit {
    fn drop(&mut self) {
        self.close();
    }
}

async fn reactor(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<CircEvent>,
    inbox: mpsc::UnboundedSender<Result<Delivered, CircuitError>>,
) {
    let mut assembling: Vec<(Reassembler, u32)> = Vec::new();
    let result: Result<(), CircuitError> = loop {
        let Some(event) = events.recv().await else {
            break Err(shared.error());
        };
        let msg = match event {
            CircEvent::LinkClosed => break Err(CircuitError::Link("link closed".into())),
            CircEvent::Cell(msg) => msg,
        };
        match msg {
            ChanMsg::Created(reply) => match lock(&shared.pending_created).take() {
                Some(tx) => {
                    let _ = tx.send(reply);
                }
                None => {
                    shared.chan.destroy(shared.id);
                    break Err(CircuitError::Protocol("unexpected CREATED".into()));
                }
            },
            ChanMsg::Destroy(reason) => break Err(CircuitError::Destroyed(reason)),
            ChanMsg::Relay(mut payload) => {
                if let Err(e) = on_relay(&shared, &mut assembling, &mut payload, &inbox) {
                    shared.chan.destroy(shared.id);
                    break Err(e);
                }
            }
            ChanMsg::Create(_) | ChanMsg::Padding => {
                shared.chan.destroy(shared.id);
                break Err(CircuitError::Protocol("unexpected cell".into()));
            }
        }
    };
    if let Err(e) = result {
        shared.chan.remove_circuit(shared.id);
        shared.fail(e.clone());
        let _ = inbox.send(Err(e));
    }
}

fn on_relay(
    shared: &Shared,
    assembling: &mut Vec<(Reassembler, u32)>,
    payload: &mut [u8; CELL_PAYLOAD_LEN],
    inbox: &mpsc::UnboundedSender<Result<Delivered, CircuitError>>,
) -> Result<(), CircuitError> {
    let hop = lock(&shared.layers).unwrap(payload)?;
    while assembling.len() < hop {
        assembling.push((Reassembler::new(MAX_RELAY_MSG_LEN), 0));
    }
    let depth = u8::try_from(hop).map_err(|_| CircuitError::Protocol("bad hop".into()))?;
    let (asm, cells) = &mut assembling[hop - 1];
    *cells += 1;
    let Some(bytes) = asm
        .push(&payload[..body_len(depth)])
        .map_err(|e| CircuitError::Protocol(e.to_string()))?
    else {
        return Ok(());
    };
    let cells = std::mem::take(cells);
    let msg = RelayMsg::decode(&bytes).map_err(|e| CircuitError::Protocol(e.to_string()))?;
    match msg {
        RelayMsg::Sendme => {
            lock(&shared.send_windows)
                .get_mut(hop - 1)
                .ok_or_else(|| CircuitError::Protocol("SENDME from an unknown hop".into()))?
                .sendme()
                .map_err(|e| CircuitError::Protocol(e.to_string()))?;
            shared.window_open.notify_waiters();
        }
        RelayMsg::Extended(reply) => {
            let waiting = lock(&shared.pending_extended).take();
            match waiting {
                Some(tx) if hop == lock(&shared.hops).len() => {
                    shared.arrived(hop, cells)?;
                    shared.consumed(hop, cells)?;
                    let _ = tx.send(reply);
                }
                _ => return Err(CircuitError::Protocol("unexpected EXTENDED".into())),
            }
        }
        RelayMsg::Extend(_) => return Err(CircuitError::Protocol("relay sent EXTEND".into())),
        msg => {
            shared.arrived(hop, cells)?;
            let _ = inbox.send(Ok(Delivered { hop, msg, cells }));
        }
    }
    Ok(())
}

/// Builds a circuit along `path` over `chan` (which must lead to `path[0]`), with a time
/// limit per hop.
pub async fn build(
    chan: Arc<ClientChannel>,
    path: &[HopSpec],
    per_hop: Duration,
) -> Result<Circuit, CircuitError> {
    let (first, rest) = path
        .split_first()
        .ok_or_else(|| CircuitError::Send("empty path".into()))?;
    let circ = Circuit::create(chan, first, per_hop).await?;
    for hop in rest {
        circ.extend(hop, per_hop).await?;
    }
    Ok(circ)
}
