//! Circuits and links without sockets for the tests of the modules above the shell (the
//! out-of-memory handler, idle timeouts, the mailbox service): an [`Env`] whose services are
//! plain channel receivers, links whose queues are read back directly, and circuits at depth 1
//! with the client's side of their layer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::keys::{OnionKeypair, RelayId};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_crypto::onion::{body_len, ClientLayers, HopKeys, RelayLayer};
use shallot_link::LinkKind;
use shallot_proto::cell::CircId;
use tokio::sync::{mpsc, Notify};

use super::{CircRef, Circuit, Env, ExtendRequest, Link, MailboxDoor};
use crate::channel::{Channel, ChannelId, Peer};
use crate::circuit::{CircuitMachine, Input, Side};
use crate::queue::QueueBudget;
use crate::stats::Stats;

/// The relay every rig runs as.
pub(crate) const ME: RelayId = RelayId([1; 20]);

/// An environment whose memory cap is `queue_cap_cells`, with the extend requests' receiver.
pub(crate) fn env(
    queue_cap_cells: usize,
    mailbox: Option<MailboxDoor>,
) -> (Env, mpsc::UnboundedReceiver<ExtendRequest>) {
    let (extends, requests) = mpsc::unbounded_channel();
    let env = Env {
        me: ME,
        extend_timeout: Duration::from_secs(10),
        budget: Arc::new(QueueBudget::default()),
        stats: Stats::default(),
        circuit_queue_cells: 600,
        queue_cap_cells,
        oom: Notify::new(),
        extends,
        mailbox,
        dir_requests: mpsc::unbounded_channel().0,
        #[cfg(feature = "misbehave")]
        misbehaviour: Default::default(),
    };
    (env, requests)
}

/// A client's link number `n`, counting toward `env`'s budget.
pub(crate) fn link(env: &Env, n: u64) -> Arc<Link> {
    let peer = Peer {
        kind: LinkKind::Client,
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        relay: None,
        we_initiated: false,
        counted: false,
    };
    Arc::new(Link::new(Channel::new(
        ChannelId(n),
        peer,
        env.budget.clone(),
    )))
}

/// Makes circuits cheaply: one real ntor handshake, whose keys every circuit shares (each
/// with its own layer state).
pub(crate) struct CircuitMaker {
    client: HopKeys,
    relay: HopKeys,
}

impl CircuitMaker {
    /// Runs the one handshake.
    pub(crate) fn new() -> Self {
        let mut rng = rand::thread_rng();
        let onion = OnionKeypair::generate(&mut rng);
        let (hs, msg) = ClientHandshake::start(&mut rng, ME, &onion.public());
        let (reply, seed) = server_handshake(&mut rng, &ME, &[&onion], &msg).unwrap();
        CircuitMaker {
            client: HopKeys::from_key_seed(&hs.finish(&reply).unwrap()).unwrap(),
            relay: HopKeys::from_key_seed(&seed).unwrap(),
        }
    }

    /// A circuit created at `now` on `link` under `id` (depth 1), and its client's layers.
    pub(crate) fn circuit(
        &self,
        link: &Arc<Link>,
        id: u32,
        now: Instant,
    ) -> (Arc<Circuit>, ClientLayers) {
        let mut client = ClientLayers::new();
        client.push_hop(&self.client).unwrap();
        let layer = RelayLayer::new(1, &self.relay).unwrap();
        let id = CircId::new(id).unwrap();
        let circ = Arc::new(Circuit::new(
            CircuitMachine::new(layer, now),
            link.clone(),
            id,
        ));
        link.insert(
            id,
            CircRef {
                circ: circ.clone(),
                side: Side::Prev,
            },
        );
        (circ, client)
    }
}

/// Sends one cell body (a fragment) from the client to its circuit.
pub(crate) fn send_body(env: &Env, circ: &Arc<Circuit>, client: &mut ClientLayers, body: &[u8]) {
    let p = Box::new(client.wrap(1, body).unwrap());
    circ.input(env, Input::Relay(Side::Prev, p));
}

/// A fragment that does not end its message, filling a depth-1 cell body.
pub(crate) fn unfinished_fragment() -> Vec<u8> {
    let len = body_len(1) - 3;
    let mut body = vec![0u8; body_len(1)];
    body[1..3].copy_from_slice(&(len as u16).to_be_bytes());
    body[3..].fill(0x5a);
    body
}
