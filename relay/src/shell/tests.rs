//! The shell without sockets: channels whose queues are read back as cells, and services that
//! are plain channel receivers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use shallot_crypto::keys::{OnionKeypair, RelayId};
use shallot_crypto::ntor::{server_handshake, ClientHandshake, ClientMessage};
use shallot_crypto::onion::{body_len, ClientLayers, HopKeys, RelayLayer};
use shallot_link::{CellQueue, LinkKind};
use shallot_proto::cell::{Cell, DestroyReason, CELL_LEN};
use shallot_proto::flow::WINDOW_START;
use shallot_proto::mailbox::MailboxId;
use shallot_proto::relay_msg::{fragment, Extend};

use super::*;
use crate::channel::{ChannelId, Peer};

const ME: RelayId = RelayId([1; 20]);

struct Rig {
    env: Env,
    extends: mpsc::UnboundedReceiver<ExtendRequest>,
    mailbox: Option<mpsc::UnboundedReceiver<MailboxRequest>>,
    prev: Arc<Link>,
    circ: Arc<Circuit>,
    client: ClientLayers,
}

fn link(n: u64, budget: &Arc<QueueBudget>) -> Arc<Link> {
    let peer = Peer {
        kind: LinkKind::Client,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        relay: None,
        we_initiated: n != 1,
        counted: false,
    };
    Arc::new(Link::new(Channel::new(ChannelId(n), peer, budget.clone())))
}

impl Rig {
    /// A circuit at depth 1 on link 1, with the given per-circuit queue cap and mailbox
    /// places (`None`: no mailbox service).
    fn new(queue_cells: usize, mailbox_places: Option<usize>) -> Rig {
        let budget = Arc::new(QueueBudget::default());
        let (extends_tx, extends) = mpsc::unbounded_channel();
        let (door, mailbox) = match mailbox_places {
            Some(n) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let door = MailboxDoor {
                    requests: tx,
                    pending: Arc::new(Semaphore::new(n)),
                    gone: mpsc::unbounded_channel().0,
                    circuit_limits: Default::default(),
                };
                (Some(door), Some(rx))
            }
            None => (None, None),
        };
        let env = Env {
            me: ME,
            extend_timeout: Duration::from_secs(10),
            budget: budget.clone(),
            stats: Stats::default(),
            circuit_queue_cells: queue_cells,
            queue_cap_cells: 1_000_000,
            oom: Notify::new(),
            extends: extends_tx,
            mailbox: door,
            dir_requests: mpsc::unbounded_channel().0,
            #[cfg(feature = "misbehave")]
            misbehaviour: Default::default(),
        };
        let mut rng = rand::thread_rng();
        let onion = OnionKeypair::generate(&mut rng);
        let (client_hs, msg) = ClientHandshake::start(&mut rng, ME, &onion.public());
        let (reply, seed) = server_handshake(&mut rng, &ME, &[&onion], &msg).unwrap();
        let mut client = ClientLayers::new();
        client
            .push_hop(&HopKeys::from_key_seed(&client_hs.finish(&reply).unwrap()).unwrap())
            .unwrap();
        let layer = RelayLayer::new(1, &HopKeys::from_key_seed(&seed).unwrap()).unwrap();
        let prev = link(1, &budget);
        let id = CircId::new(0x8000_0001).unwrap();
        let circ = Arc::new(Circuit::new(
            CircuitMachine::new(layer, Instant::now()),
            prev.clone(),
            id,
        ));
        prev.insert(
            id,
            CircRef {
                circ: circ.clone(),
                side: Side::Prev,
            },
        );
        Rig {
            env,
            extends,
            mailbox,
            prev,
            circ,
            client,
        }
    }

    fn send(&mut self, msg: &RelayMsg) {
        for body in fragment(&msg.encode().unwrap(), body_len(1)).unwrap() {
            let p = Box::new(self.client.wrap(1, &body).unwrap());
            self.circ.input(&self.env, Input::Relay(Side::Prev, p));
        }
    }
}

/// The cells queued on a link, decoded, in the order the writer would send them.
fn drain(link: &Link) -> Vec<Cell> {
    let mut buf = Vec::new();
    while link.chan.drain_into(127, &mut buf) > 0 {}
    buf.chunks(CELL_LEN)
        .map(|c| Cell::decode(c).unwrap().unwrap())
        .collect()
}

fn destroys(cells: &[Cell]) -> Vec<DestroyReason> {
    cells
        .iter()
        .filter_map(|c| match c.msg {
            ChanMsg::Destroy(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn an_echo_is_queued_on_the_previous_link_and_counted() {
    let mut rig = Rig::new(100, None);
    rig.send(&RelayMsg::Data(b"hi".to_vec()));
    let cells = drain(&rig.prev);
    assert_eq!(cells.len(), 1);
    assert!(matches!(cells[0].msg, ChanMsg::Relay(_)));
    let stats = rig.env.stats.snapshot();
    assert_eq!((stats.cells_delivered, stats.cells_forwarded), (1, 1));
    assert_eq!(rig.env.budget.queued(), 0, "drained");
}

#[test]
fn a_full_circuit_queue_destroys_the_circuit_and_tells_the_client() {
    let mut rig = Rig::new(2, None);
    // A three-cell echo: the third cell finds the circuit's queue full.
    rig.send(&RelayMsg::Data(vec![1; 2 * body_len(1)]));
    assert!(rig.circ.is_destroyed());
    let cells = drain(&rig.prev);
    assert_eq!(destroys(&cells), vec![DestroyReason::ResourceLimit]);
    // Forgetting the circuit dropped its queued relay cells: only the DESTROY went out.
    assert_eq!(cells.len(), 1);
    assert!(rig
        .prev
        .circuit(CircId::new(0x8000_0001).unwrap())
        .is_none());
    let stats = rig.env.stats.snapshot();
    assert_eq!(stats.circuits_destroyed_for_queue, 1);
    assert_eq!(stats.circuits_destroyed, 1);
    assert_eq!(rig.env.budget.queued(), 0);
}

#[test]
fn mailbox_requests_are_refused_at_once_without_a_service_or_a_free_place() {
    let request = RelayMsg::Mailbox(MailboxMsg::GetBundle {
        req: 9,
        mailbox: MailboxId([3; 32]),
    });
    let answer_status = |rig: &mut Rig| {
        let cells = drain(&rig.prev);
        let mut p = match &cells.last().unwrap().msg {
            ChanMsg::Relay(p) => p.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(rig.client.unwrap(&mut p).unwrap(), 1);
        let mut r = shallot_proto::relay_msg::Reassembler::new(1000);
        match RelayMsg::decode(&r.push(&p[..body_len(1)]).unwrap().unwrap()).unwrap() {
            RelayMsg::Mailbox(MailboxMsg::Result { req: 9, status, .. }) => status,
            other => panic!("{other:?}"),
        }
    };
    let mut rig = Rig::new(100, None);
    rig.send(&request);
    assert_eq!(answer_status(&mut rig), Status::Unavailable);

    let mut rig = Rig::new(100, Some(1));
    rig.send(&request);
    // Handed over, holding the one place.
    let handed = rig.mailbox.as_mut().unwrap().try_recv().unwrap();
    assert_eq!(handed.msg.request_id(), 9);
    assert!(Arc::ptr_eq(&handed.circ, &rig.circ));
    assert!(drain(&rig.prev).is_empty(), "no answer from the shell");
    // The next waits for no place: it is refused as busy (a client asks again later).
    rig.send(&request);
    assert_eq!(answer_status(&mut rig), Status::Busy);
    drop(handed);
    rig.send(&request);
    assert!(rig.mailbox.as_mut().unwrap().try_recv().is_ok());
}

#[test]
fn replies_waiting_for_the_window_count_toward_the_budget_until_destroyed() {
    let mut rig = Rig::new(WINDOW_START as usize + 100, None);
    for i in 0..WINDOW_START + 3 {
        rig.send(&RelayMsg::Data(i.to_be_bytes().to_vec()));
    }
    // 500 echoes on the link's queue (plus 10 SENDMEs), 3 waiting for the client's window.
    assert_eq!(rig.env.budget.queued(), WINDOW_START as usize + 10 + 3);
    assert!(rig.circ.oldest_held().is_some());
    rig.circ
        .input(&rig.env, Input::Kill(CircuitError::MemoryPressure));
    // Everything the circuit held is gone; only its DESTROY waits on the link.
    assert_eq!(rig.env.budget.queued(), 1);
    assert_eq!(
        destroys(&drain(&rig.prev)),
        vec![DestroyReason::ResourceLimit]
    );
    assert_eq!(rig.env.stats.snapshot().circuits_destroyed_for_memory, 1);
}

#[test]
fn an_extend_goes_to_the_extend_service_and_create_to_the_attached_link() {
    let mut rig = Rig::new(100, None);
    let target = RelayId([5; 20]);
    rig.send(&RelayMsg::Extend(Extend {
        target,
        handshake: ClientMessage::from_bytes(&[7; 84]),
    }));
    let request = rig.extends.try_recv().unwrap();
    assert_eq!(request.target, target);
    let next = link(2, &rig.env.budget);
    let id = next
        .add_outbound(
            CircRef {
                circ: rig.circ.clone(),
                side: Side::Next,
            },
            10,
        )
        .unwrap();
    assert!(id.chosen_by_initiator(), "this relay opened link 2");
    assert!(rig.circ.attach_next(&rig.env, next.clone(), id));
    let cells = drain(&next);
    match &cells[..] {
        [Cell {
            circ_id,
            msg: ChanMsg::Create(c),
        }] => {
            assert_eq!(*circ_id, id);
            assert_eq!(c.depth, 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(rig.circ.created_deadline().is_some());
    // The client's DESTROY goes on to the next hop, and the circuit leaves both tables.
    rig.circ.input(
        &rig.env,
        Input::Destroy(Side::Prev, DestroyReason::Requested),
    );
    assert_eq!(destroys(&drain(&next)), vec![DestroyReason::Requested]);
    assert!(destroys(&drain(&rig.prev)).is_empty());
    assert_eq!(next.circuit_count(), 0);
    assert_eq!(rig.prev.circuit_count(), 0);
}

#[test]
fn a_link_found_after_the_circuit_died_is_not_used() {
    let mut rig = Rig::new(100, None);
    rig.send(&RelayMsg::Extend(Extend {
        target: RelayId([5; 20]),
        handshake: ClientMessage::from_bytes(&[7; 84]),
    }));
    rig.circ.input(&rig.env, Input::LinkClosed(Side::Prev));
    let next = link(2, &rig.env.budget);
    let r = CircRef {
        circ: rig.circ.clone(),
        side: Side::Next,
    };
    let id = next.add_outbound(r, 10).unwrap();
    assert!(!rig.circ.attach_next(&rig.env, next.clone(), id));
    assert_eq!(next.circuit_count(), 0);
    assert!(drain(&next).is_empty());
}

#[test]
fn an_unfinished_message_counts_toward_the_budget_until_destroyed() {
    let mut rig = Rig::new(100, None);
    let body = testing::unfinished_fragment();
    for _ in 0..3 {
        testing::send_body(&rig.env, &rig.circ, &mut rig.client, &body);
    }
    // Three cells of a message not yet whole are held here (in one piece of the reassembly
    // buffer, counted by its size), and nothing was answered.
    let units = (shallot_proto::relay_msg::REASSEMBLY_PIECE + 4 * std::mem::size_of::<Vec<u8>>())
        .div_ceil(crate::queue::HELD_CELL_BYTES);
    assert_eq!(rig.circ.held_cells(), units);
    assert_eq!(rig.env.budget.queued(), units);
    assert!(rig.circ.oldest_held().is_some());
    assert!(drain(&rig.prev).is_empty());
    rig.circ
        .input(&rig.env, Input::Kill(CircuitError::MemoryPressure));
    assert_eq!(rig.circ.held_cells(), 0);
    assert_eq!(rig.env.budget.queued(), 1, "only the DESTROY is left");
    assert_eq!(
        destroys(&drain(&rig.prev)),
        vec![DestroyReason::ResourceLimit]
    );
    assert_eq!(rig.env.budget.queued(), 0);
}

#[test]
fn a_finished_message_frees_its_cells() {
    let mut rig = Rig::new(100, None);
    let big = RelayMsg::Data(vec![7; 3000]);
    let bodies = fragment(&big.encode().unwrap(), body_len(1)).unwrap();
    let n = bodies.len();
    for body in &bodies[..n - 1] {
        testing::send_body(&rig.env, &rig.circ, &mut rig.client, body);
    }
    assert!(rig.circ.held_cells() > 0);
    assert_eq!(rig.env.budget.queued(), rig.circ.held_cells());
    testing::send_body(&rig.env, &rig.circ, &mut rig.client, &bodies[n - 1]);
    assert_eq!(rig.circ.held_cells(), 0);
    assert_eq!(rig.circ.oldest_held(), None);
    // What is left is the echo queued on the link.
    assert_eq!(rig.env.budget.queued(), drain(&rig.prev).len());
}

#[test]
fn a_destroy_with_an_unknown_reason_is_passed_on_as_no_reason() {
    let mut rig = Rig::new(100, None);
    rig.send(&RelayMsg::Extend(Extend {
        target: RelayId([5; 20]),
        handshake: ClientMessage::from_bytes(&[7; 84]),
    }));
    let next = link(2, &rig.env.budget);
    let r = CircRef {
        circ: rig.circ.clone(),
        side: Side::Next,
    };
    let id = next.add_outbound(r, 10).unwrap();
    assert!(rig.circ.attach_next(&rig.env, next.clone(), id));
    drain(&next);
    // The next hop's DESTROY, as it comes off the wire with reason byte 0xA7.
    let mut raw = [0u8; CELL_LEN];
    raw[..4].copy_from_slice(&id.get().to_be_bytes());
    raw[4] = shallot_proto::cell::ChanCmd::Destroy as u8;
    raw[5] = 0xA7;
    let cell = Cell::decode(&raw).unwrap().unwrap();
    let ChanMsg::Destroy(reason) = cell.msg else {
        panic!("{cell:?}");
    };
    assert_eq!(reason, DestroyReason::Other(0xA7));
    rig.circ.input(&rig.env, Input::Destroy(Side::Next, reason));
    assert_eq!(destroys(&drain(&rig.prev)), vec![DestroyReason::None]);
    // Every defined reason is passed on as it came.
    for byte in 0..=10u8 {
        let defined = DestroyReason::from_byte(byte);
        assert_eq!(crate::circuit::error::forwarded_reason(defined), defined);
    }
    for byte in 11..=255u8 {
        assert_eq!(
            crate::circuit::error::forwarded_reason(DestroyReason::from_byte(byte)),
            DestroyReason::None
        );
    }
}
