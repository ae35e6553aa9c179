//! The circuit machine without sockets or a clock: a simulated client and the hops before
//! this one wrap and peel real onion layers; time is an input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use shallot_crypto::keys::{OnionKeypair, RelayId};
use shallot_crypto::ntor::{server_handshake, ClientHandshake, ClientMessage, ServerMessage};
use shallot_crypto::onion::{body_len, ClientLayers, HopKeys, Payload, RelayLayer};
use shallot_link::LinkError;
use shallot_proto::cell::DestroyReason;
use shallot_proto::flow::{WINDOW_INCREMENT, WINDOW_START};
use shallot_proto::mailbox::{EnvelopeId, MailboxId, MailboxMsg, Status};
use shallot_proto::relay_msg::{
    fragment, Extend, Reassembler, RelayMsg, FRAGMENT_HEADER_LEN, MAX_RELAY_MSG_LEN,
    REASSEMBLY_PIECE,
};

use super::*;
use crate::queue::HELD_CELL_BYTES;

const ME: RelayId = RelayId([1; 20]);
const PREV_RELAY: RelayId = RelayId([2; 20]);
const OTHER: RelayId = RelayId([3; 20]);
const EXTEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys for one hop, agreed by a real ntor handshake: the client's and the relay's copies.
fn hop_keys() -> (HopKeys, HopKeys) {
    let mut rng = rand::thread_rng();
    let onion = OnionKeypair::generate(&mut rng);
    let (client, msg) = ClientHandshake::start(&mut rng, ME, &onion.public());
    let (reply, relay_seed) = server_handshake(&mut rng, &ME, &[&onion], &msg).unwrap();
    let client_seed = client.finish(&reply).unwrap();
    (
        HopKeys::from_key_seed(&client_seed).unwrap(),
        HopKeys::from_key_seed(&relay_seed).unwrap(),
    )
}

fn handshake() -> ClientMessage {
    ClientMessage::from_bytes(&[7; 84])
}

fn server_reply() -> ServerMessage {
    ServerMessage::from_bytes(&[9; 64])
}

/// A client, the hops before the circuit's machine, and the machine, at one depth.
struct Rig {
    client: ClientLayers,
    before: Vec<RelayLayer>,
    /// The hop after the machine, once the client has added it.
    after: Option<RelayLayer>,
    m: CircuitMachine,
    at: Placement,
    now: Instant,
    reassembler: Reassembler,
}

impl Rig {
    fn at_depth(depth: u8) -> Rig {
        Rig::with(depth, None)
    }

    fn with(depth: u8, prev_relay: Option<RelayId>) -> Rig {
        let mut client = ClientLayers::new();
        let mut before = Vec::new();
        let mut machine = None;
        for d in 1..=depth {
            let (c, r) = hop_keys();
            client.push_hop(&c).unwrap();
            let layer = RelayLayer::new(d, &r).unwrap();
            if d == depth {
                machine = Some(layer);
            } else {
                before.push(layer);
            }
        }
        let at = Placement {
            me: ME,
            prev_relay,
            extend_timeout: EXTEND_TIMEOUT,
            #[cfg(feature = "misbehave")]
            misbehaviour: None,
        };
        Rig {
            client,
            before,
            after: None,
            m: CircuitMachine::new(machine.unwrap(), Instant::now()),
            at,
            now: Instant::now(),
            reassembler: Reassembler::new(MAX_RELAY_MSG_LEN),
        }
    }

    fn depth(&self) -> u8 {
        self.m.depth()
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.m.handle(input, self.now, &self.at, &mut out);
        out
    }

    /// A payload the client wrapped for hop `hop`, as it reaches the machine.
    fn wrapped(&mut self, hop: usize, body: &[u8]) -> Box<Payload> {
        let mut p = Box::new(self.client.wrap(hop, body).unwrap());
        for layer in &mut self.before {
            layer.peel(&mut p).unwrap();
        }
        p
    }

    /// Sends a whole message from the client to the machine, cell by cell.
    fn send(&mut self, msg: &RelayMsg) -> Vec<Action> {
        let hop = usize::from(self.depth());
        let bodies = fragment(&msg.encode().unwrap(), body_len(self.depth())).unwrap();
        let mut out = Vec::new();
        for body in bodies {
            let p = self.wrapped(hop, &body);
            out.extend(self.feed(Input::Relay(Side::Prev, p)));
        }
        out
    }

    /// The messages the client reads from the cells the machine sent toward it.
    fn replies(&mut self, actions: Vec<Action>) -> Vec<(usize, RelayMsg)> {
        let mut got = Vec::new();
        for a in actions {
            if let Action::Relay(Side::Prev, mut p) = a {
                for layer in self.before.iter_mut().rev() {
                    layer.add_layer(&mut p).unwrap();
                }
                let hop = self.client.unwrap(&mut p).unwrap();
                let body = &p[..body_len(hop as u8)];
                if let Some(bytes) = self.reassembler.push(body).unwrap() {
                    got.push((hop, RelayMsg::decode(&bytes).unwrap()));
                }
            }
        }
        got
    }

    /// Sends a message and reads what comes back from this hop.
    fn exchange(&mut self, msg: &RelayMsg) -> Vec<RelayMsg> {
        let out = self.send(msg);
        self.replies_here(out)
    }

    fn replies_here(&mut self, actions: Vec<Action>) -> Vec<RelayMsg> {
        let depth = usize::from(self.depth());
        self.replies(actions)
            .into_iter()
            .map(|(hop, msg)| {
                assert_eq!(hop, depth);
                msg
            })
            .collect()
    }

    /// Takes the circuit through EXTEND, attaching and CREATED, so the next hop is open.
    fn extend(&mut self) {
        let out = self.send(&RelayMsg::Extend(Extend {
            target: OTHER,
            handshake: handshake(),
        }));
        assert!(matches!(out[..], [Action::Count(_), Action::Extend(OTHER)]));
        let out = self.feed(Input::NextAttached);
        assert!(matches!(out[..], [Action::Create(_)]));
        let out = self.feed(Input::Created(Side::Next, server_reply()));
        let replies = self.replies_here(out);
        assert_eq!(replies, vec![RelayMsg::Extended(server_reply())]);
        let (c, r) = hop_keys();
        self.client.push_hop(&c).unwrap();
        self.after = Some(RelayLayer::new(self.depth() + 1, &r).unwrap());
    }
}

/// The one teardown among `actions`.
fn teardown(actions: &[Action]) -> &Teardown {
    let all: Vec<&Teardown> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Destroyed(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 1, "{actions:?}");
    all[0]
}

fn sendmes(msgs: &[RelayMsg]) -> usize {
    msgs.iter().filter(|m| **m == RelayMsg::Sendme).count()
}

fn data(i: u32) -> RelayMsg {
    RelayMsg::Data(i.to_be_bytes().to_vec())
}

// Flow control, both directions.

#[test]
fn data_delivered_here_is_echoed_and_counted() {
    let mut rig = Rig::at_depth(1);
    let out = rig.send(&data(1));
    assert!(matches!(out[0], Action::Count(Count::CellDelivered)));
    assert_eq!(rig.replies_here(out), vec![data(1)]);
    assert!(!rig.m.is_destroyed());
}

#[test]
fn a_sendme_goes_to_the_client_after_every_fifty_counted_cells() {
    let mut rig = Rig::at_depth(2);
    let mut got = Vec::new();
    for i in 0..WINDOW_INCREMENT * 2 {
        let out = rig.send(&data(i));
        got.extend(rig.replies_here(out));
        let expected = (i + 1) / WINDOW_INCREMENT;
        assert_eq!(sendmes(&got), expected as usize, "after {} cells", i + 1);
    }
}

#[test]
fn replies_wait_whole_for_the_window_and_a_sendme_releases_them() {
    let mut rig = Rig::at_depth(1);
    // The client never acknowledges: the first 500 echoes take the whole window.
    let mut echoed = 0;
    for i in 0..WINDOW_START {
        let out = rig.send(&data(i));
        echoed += rig
            .replies_here(out)
            .iter()
            .filter(|m| **m != RelayMsg::Sendme)
            .count();
    }
    assert_eq!(echoed, WINDOW_START as usize);
    assert_eq!(rig.m.held_cells(), 0);
    // The next echoes wait, whole, counting toward the relay's memory, oldest first.
    rig.now += Duration::from_secs(1);
    let first_wait = rig.now;
    assert!(rig.exchange(&data(1000)).is_empty());
    rig.now += Duration::from_secs(1);
    assert!(rig.exchange(&data(1001)).is_empty());
    assert_eq!(rig.m.held_cells(), 2);
    assert_eq!(rig.m.oldest_held(), Some(first_wait));
    assert!(!rig.m.fits_now(&data(5)));
    // One SENDME from the client opens 50 cells: both waiting replies leave, in order.
    let out = rig.send(&RelayMsg::Sendme);
    assert!(out.iter().any(|a| matches!(a, Action::WindowOpened)));
    assert_eq!(rig.replies_here(out), vec![data(1000), data(1001)]);
    assert_eq!(rig.m.held_cells(), 0);
    assert_eq!(rig.m.oldest_held(), None);
    assert!(rig.m.fits_now(&data(5)));
}

#[test]
fn sendmes_for_delivered_cells_wait_while_their_reply_waits() {
    let mut rig = Rig::at_depth(1);
    for i in 0..WINDOW_START {
        rig.exchange(&data(i));
    }
    // 500 cells delivered and acknowledged: 10 SENDMEs went out with the echoes. Now every
    // echo waits, and so do the acknowledgements of the cells that asked for them.
    let mut got = Vec::new();
    for i in 0..WINDOW_INCREMENT {
        let out = rig.send(&data(i));
        got.extend(rig.replies_here(out));
    }
    assert_eq!(sendmes(&got), 0, "held back while the replies wait");
    // The client reads and acknowledges: the replies leave, then their SENDME.
    let out = rig.send(&RelayMsg::Sendme);
    let got = rig.replies_here(out);
    assert_eq!(got.len(), WINDOW_INCREMENT as usize + 1);
    assert_eq!(got.last(), Some(&RelayMsg::Sendme));
}

#[test]
fn a_client_that_ignores_its_window_is_cut_off() {
    let mut rig = Rig::at_depth(1);
    let mut destroyed = None;
    for i in 0..WINDOW_START * 3 {
        let out = rig.send(&data(i));
        if out.iter().any(|a| matches!(a, Action::Destroyed(_))) {
            let t = teardown(&out);
            assert_eq!(t.reason, DestroyReason::Protocol);
            assert!(matches!(
                t.cause,
                CircuitError::Violation(Violation::WindowOverrun)
            ));
            destroyed = Some(i);
            break;
        }
    }
    // 500 echoed, then at most a window's worth of unacknowledged cells more.
    let at = destroyed.expect("overrun detected");
    assert!((WINDOW_START..=WINDOW_START * 2).contains(&at), "{at}");
}

#[test]
fn an_unexpected_sendme_destroys_the_circuit() {
    let mut rig = Rig::at_depth(1);
    let out = rig.send(&RelayMsg::Sendme);
    let t = teardown(&out);
    assert_eq!(t.reason, DestroyReason::Protocol);
    assert!(matches!(
        t.cause,
        CircuitError::Violation(Violation::Flow(_))
    ));
    assert!(t.tell_prev && !t.tell_next);
}

#[test]
fn sendme_cells_do_not_count_toward_the_window() {
    let mut rig = Rig::at_depth(1);
    let mut got = Vec::new();
    for i in 0..WINDOW_INCREMENT - 1 {
        got.extend(rig.exchange(&data(i)));
    }
    // The relay's window lost 49 to the echoes; the client's SENDME would overfill it.
    let out = rig.send(&RelayMsg::Sendme);
    assert!(matches!(teardown(&out).cause, CircuitError::Violation(_)));
    // On a fresh circuit, 50 echoes then a SENDME is fine, and the SENDME is not counted:
    // the relay's own SENDME comes after the 50 data cells, not before.
    let mut rig = Rig::at_depth(1);
    let mut got = Vec::new();
    for i in 0..WINDOW_INCREMENT {
        got.extend(rig.exchange(&data(i)));
    }
    got.extend(rig.exchange(&RelayMsg::Sendme));
    assert_eq!(sendmes(&got), 1);
    assert!(!rig.m.is_destroyed());
}

#[test]
fn a_reply_input_is_sent_whole_and_counted_against_the_window() {
    let mut rig = Rig::at_depth(1);
    let big = RelayMsg::Data(vec![5; 3000]);
    assert!(rig.m.fits_now(&big));
    let out = rig.feed(Input::Reply(big.clone()));
    let cells = out
        .iter()
        .filter(|a| matches!(a, Action::Relay(Side::Prev, _)))
        .count();
    assert_eq!(cells, 3000usize.div_ceil(body_len(1) - 3));
    assert_eq!(rig.replies_here(out), vec![big]);
}

// Reassembly.

#[test]
fn a_message_over_several_cells_is_reassembled_and_counted_when_complete() {
    let mut rig = Rig::at_depth(3);
    let big = RelayMsg::Data((0..10_000).map(|i| i as u8).collect());
    let cells = fragment(&big.encode().unwrap(), body_len(3)).unwrap().len();
    let out = rig.send(&big);
    let delivered = out
        .iter()
        .filter(|a| matches!(a, Action::Count(Count::CellDelivered)))
        .count();
    assert_eq!(delivered, cells);
    assert_eq!(rig.replies_here(out), vec![big]);
}

#[test]
fn a_message_over_the_reassembly_limit_destroys_the_circuit() {
    let mut rig = Rig::at_depth(1);
    let chunk = body_len(1) - 3;
    let mut body = vec![0u8; body_len(1)];
    // Non-final fragments, full: the limit is passed after MAX_RELAY_MSG_LEN / chunk of them.
    body[1..3].copy_from_slice(&(chunk as u16).to_be_bytes());
    let mut destroyed = false;
    for _ in 0..=MAX_RELAY_MSG_LEN / chunk {
        let p = rig.wrapped(1, &body);
        let out = rig.feed(Input::Relay(Side::Prev, p));
        if let Some(Action::Destroyed(t)) = out.last() {
            assert_eq!(t.reason, DestroyReason::Protocol);
            assert!(matches!(
                t.cause,
                CircuitError::Violation(Violation::BadFragment(_))
            ));
            destroyed = true;
        }
    }
    assert!(destroyed);
}

#[test]
fn a_malformed_fragment_destroys_the_circuit() {
    let mut rig = Rig::at_depth(1);
    let mut body = vec![0u8; 10];
    body[0] = 0x80;
    let p = rig.wrapped(1, &body);
    let out = rig.feed(Input::Relay(Side::Prev, p));
    assert!(matches!(
        teardown(&out).cause,
        CircuitError::Violation(Violation::BadFragment(_))
    ));
}

#[test]
fn a_message_that_does_not_decode_destroys_the_circuit() {
    let mut rig = Rig::at_depth(1);
    let body = fragment(&[200, 1, 2], body_len(1)).unwrap().remove(0);
    let p = rig.wrapped(1, &body);
    let out = rig.feed(Input::Relay(Side::Prev, p));
    let t = teardown(&out);
    assert_eq!(t.reason, DestroyReason::Protocol);
    assert!(matches!(
        t.cause,
        CircuitError::Violation(Violation::BadMessage(_))
    ));
}

// Create, extend, extended.

#[test]
fn extend_asks_for_a_link_then_sends_create_one_deeper_with_the_clients_handshake() {
    let mut rig = Rig::at_depth(2);
    let out = rig.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    assert!(matches!(out.last(), Some(Action::Extend(OTHER))));
    assert!(rig.m.is_connecting());
    assert_eq!(rig.m.created_deadline(), None);
    let out = rig.feed(Input::NextAttached);
    match &out[..] {
        [Action::Create(c)] => {
            assert_eq!(c.depth, 3);
            assert_eq!(c.handshake, handshake());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.m.created_deadline(), Some(rig.now + EXTEND_TIMEOUT));
}

#[test]
fn created_answers_the_client_with_extended_and_opens_both_directions() {
    let mut rig = Rig::at_depth(1);
    rig.extend();
    // A cell for hop 2 is peeled and forwarded as is.
    let mut p = rig.wrapped(2, b"for hop two");
    let out = rig.feed(Input::Relay(Side::Prev, p.clone()));
    match &out[..] {
        [Action::Relay(Side::Next, fwd)] => {
            let after = rig.after.as_mut().unwrap();
            let mut fwd = fwd.clone();
            assert_eq!(
                after.peel(&mut fwd).unwrap(),
                shallot_crypto::onion::Peeled::Deliver
            );
            assert_eq!(&fwd[..11], b"for hop two");
        }
        other => panic!("{other:?}"),
    }
    p.fill(0);
    assert!(!rig.m.is_destroyed());
    // A reply from hop 2 gets this hop's layer and reaches the client as hop 2's.
    let mut back = Box::new([0u8; 509]);
    let body = fragment(&data(7).encode().unwrap(), body_len(2))
        .unwrap()
        .remove(0);
    back[..body.len()].copy_from_slice(&body);
    rig.after.as_mut().unwrap().originate(&mut back).unwrap();
    let out = rig.feed(Input::Relay(Side::Next, back));
    assert_eq!(rig.replies(out), vec![(2, data(7))]);
}

#[test]
fn created_is_counted_once() {
    let mut rig = Rig::at_depth(1);
    rig.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    rig.feed(Input::NextAttached);
    let out = rig.feed(Input::Created(Side::Next, server_reply()));
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Count(Count::Extended)))
            .count(),
        1
    );
    let out = rig.feed(Input::Created(Side::Next, server_reply()));
    assert!(matches!(
        teardown(&out).cause,
        CircuitError::Violation(Violation::UnexpectedCreated)
    ));
}

#[test]
fn extends_to_this_relay_back_along_the_circuit_or_past_the_deepest_hop_are_refused() {
    let extend_to = |rig: &mut Rig, target| {
        let out = rig.send(&RelayMsg::Extend(Extend {
            target,
            handshake: handshake(),
        }));
        let t = teardown(&out);
        assert_eq!(t.reason, DestroyReason::Protocol);
        assert!(t.cause.is_peer_fault());
        match &t.cause {
            CircuitError::Extend(r) => format!("{r:?}"),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(extend_to(&mut Rig::at_depth(1), ME), "ToSelf");
    assert_eq!(
        extend_to(&mut Rig::with(1, Some(PREV_RELAY)), PREV_RELAY),
        "BackAlongCircuit"
    );
    // Clients build three hops: the third may not extend (a fourth hop, or an eighth, would
    // only multiply what one client takes from the network).
    assert_eq!(
        extend_to(&mut Rig::at_depth(MAX_CIRCUIT_DEPTH), OTHER),
        "TooDeep(3)"
    );
    assert_eq!(MAX_CIRCUIT_DEPTH, 3);
    let mut second = Rig::at_depth(2);
    let out = second.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    assert!(matches!(out.last(), Some(Action::Extend(OTHER))));
    // A relay that is not the previous one is a fine target from a listed relay's link.
    let mut rig = Rig::with(1, Some(PREV_RELAY));
    let out = rig.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    assert!(matches!(out.last(), Some(Action::Extend(OTHER))));
}

#[test]
fn a_second_extend_is_a_violation_whether_extending_or_extended() {
    for extended in [false, true] {
        let mut rig = Rig::at_depth(1);
        if extended {
            rig.extend();
        } else {
            rig.send(&RelayMsg::Extend(Extend {
                target: OTHER,
                handshake: handshake(),
            }));
        }
        let out = rig.send(&RelayMsg::Extend(Extend {
            target: OTHER,
            handshake: handshake(),
        }));
        let t = teardown(&out);
        assert!(matches!(
            t.cause,
            CircuitError::Violation(Violation::SecondExtend)
        ));
        assert_eq!(t.tell_next, extended);
    }
}

#[test]
fn cells_to_forward_before_the_next_hop_is_open_destroy_the_circuit() {
    // With no next hop at all.
    let mut rig = Rig::at_depth(1);
    let (c, _) = hop_keys();
    rig.client.push_hop(&c).unwrap();
    let p = rig.wrapped(2, b"x");
    let out = rig.feed(Input::Relay(Side::Prev, p));
    assert!(matches!(
        teardown(&out).cause,
        CircuitError::Violation(Violation::ForwardWithoutNextHop)
    ));
    // While extending.
    let mut rig = Rig::at_depth(1);
    rig.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    rig.feed(Input::NextAttached);
    let (c, _) = hop_keys();
    rig.client.push_hop(&c).unwrap();
    let p = rig.wrapped(2, b"x");
    let out = rig.feed(Input::Relay(Side::Prev, p));
    let t = teardown(&out);
    assert!(matches!(
        t.cause,
        CircuitError::Violation(Violation::ForwardWhileExtending)
    ));
    assert!(t.tell_prev && t.tell_next, "the next hop has the circuit");
}

#[test]
fn relay_cells_from_the_next_hop_before_created_destroy_the_circuit() {
    let mut rig = Rig::at_depth(1);
    rig.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    rig.feed(Input::NextAttached);
    let out = rig.feed(Input::Relay(Side::Next, Box::new([0; 509])));
    let t = teardown(&out);
    assert_eq!(t.reason, DestroyReason::Protocol);
    assert!(matches!(
        t.cause,
        CircuitError::Violation(Violation::RelayBeforeCreated)
    ));
}

#[test]
fn created_from_the_client_side_or_unasked_for_is_a_violation() {
    let mut rig = Rig::at_depth(1);
    let out = rig.feed(Input::Created(Side::Prev, server_reply()));
    assert!(matches!(
        teardown(&out).cause,
        CircuitError::Violation(Violation::CreatedFromPrev)
    ));
    let mut rig = Rig::at_depth(1);
    let out = rig.feed(Input::Created(Side::Next, server_reply()));
    assert!(matches!(
        teardown(&out).cause,
        CircuitError::Violation(Violation::UnexpectedCreated)
    ));
}

#[test]
fn the_extend_times_out_at_its_deadline_and_not_before() {
    let mut rig = Rig::at_depth(1);
    rig.send(&RelayMsg::Extend(Extend {
        target: OTHER,
        handshake: handshake(),
    }));
    rig.feed(Input::NextAttached);
    rig.now += EXTEND_TIMEOUT - Duration::from_millis(1);
    assert!(rig.feed(Input::Timer).is_empty());
    rig.now += Duration::from_millis(1);
    let out = rig.feed(Input::Timer);
    let t = teardown(&out);
    assert_eq!(t.reason, DestroyReason::Timeout);
    assert!(t.tell_prev && t.tell_next);
    assert_eq!(rig.m.created_deadline(), None);
    // Once CREATED has come, the timer does nothing.
    let mut rig = Rig::at_depth(1);
    rig.extend();
    rig.now += EXTEND_TIMEOUT * 2;
    assert!(rig.feed(Input::Timer).is_empty());
}

#[test]
fn a_failed_extend_sends_the_reason_of_its_cause_to_the_client_only() {
    let cases = [
        (ExtendRefusal::NotListed, DestroyReason::ConnectFailed),
        (
            ExtendRefusal::Unreachable(LinkError::Timeout),
            DestroyReason::ConnectFailed,
        ),
        (ExtendRefusal::NoFreeId, DestroyReason::ResourceLimit),
    ];
    for (refusal, reason) in cases {
        let mut rig = Rig::at_depth(1);
        rig.send(&RelayMsg::Extend(Extend {
            target: OTHER,
            handshake: handshake(),
        }));
        let out = rig.feed(Input::ExtendFailed(refusal));
        let t = teardown(&out);
        assert_eq!(t.reason, reason);
        assert!(t.tell_prev && !t.tell_next);
        assert!(!t.cause.is_peer_fault());
    }
    // A failure reported for a circuit that is not extending changes nothing.
    let mut rig = Rig::at_depth(1);
    assert!(rig
        .feed(Input::ExtendFailed(ExtendRefusal::NotListed))
        .is_empty());
    assert!(!rig.m.is_destroyed());
}

// Destroy: each reason, each direction.

#[test]
fn a_destroy_from_one_side_goes_on_to_the_other_with_its_defined_reason() {
    for from in [Side::Prev, Side::Next] {
        for (reason, sent) in [
            (DestroyReason::Requested, DestroyReason::Requested),
            (DestroyReason::Timeout, DestroyReason::Timeout),
            // An unknown reason is not passed on as it came (a covert channel).
            (DestroyReason::Other(200), DestroyReason::None),
        ] {
            let mut rig = Rig::at_depth(1);
            rig.extend();
            let out = rig.feed(Input::Destroy(from, reason));
            let t = teardown(&out);
            assert_eq!(t.reason, sent);
            assert_eq!(t.tell_prev, from == Side::Next);
            assert_eq!(t.tell_next, from == Side::Prev);
        }
    }
}

#[test]
fn a_closed_link_destroys_toward_the_other_side_with_reason_link_closed() {
    for side in [Side::Prev, Side::Next] {
        let mut rig = Rig::at_depth(1);
        rig.extend();
        let out = rig.feed(Input::LinkClosed(side));
        let t = teardown(&out);
        assert_eq!(t.reason, DestroyReason::LinkClosed);
        assert_eq!(
            (t.tell_prev, t.tell_next),
            (side == Side::Next, side == Side::Prev)
        );
    }
}

#[test]
fn the_relays_own_decisions_tell_both_neighbours() {
    let cases = [
        (
            Input::Kill(CircuitError::MemoryPressure),
            DestroyReason::ResourceLimit,
        ),
        (
            Input::Kill(CircuitError::ShuttingDown),
            DestroyReason::ShuttingDown,
        ),
        (Input::QueueFull(Side::Next), DestroyReason::ResourceLimit),
        (Input::QueueFull(Side::Prev), DestroyReason::ResourceLimit),
    ];
    for (input, reason) in cases {
        let mut rig = Rig::at_depth(1);
        rig.extend();
        let out = rig.feed(input);
        let t = teardown(&out);
        assert_eq!(t.reason, reason);
        assert!(t.tell_prev && t.tell_next);
        assert!(!t.cause.is_peer_fault());
    }
}

#[test]
fn a_tampered_cell_destroys_the_circuit_both_ways() {
    let mut rig = Rig::at_depth(2);
    rig.extend();
    let mut p = rig.wrapped(2, b"hello");
    p[100] ^= 1;
    let out = rig.feed(Input::Relay(Side::Prev, p));
    let t = teardown(&out);
    assert_eq!(t.reason, DestroyReason::Protocol);
    assert!(matches!(t.cause, CircuitError::Tampered(_)));
    assert!(t.tell_prev && t.tell_next);
}

#[test]
fn a_destroyed_circuit_drops_its_waiting_replies_and_ignores_what_follows() {
    let mut rig = Rig::at_depth(1);
    for i in 0..WINDOW_START + 3 {
        rig.send(&data(i));
    }
    assert_eq!(rig.m.held_cells(), 3);
    rig.feed(Input::Kill(CircuitError::MemoryPressure));
    assert!(rig.m.is_destroyed());
    assert_eq!(rig.m.held_cells(), 0);
    assert_eq!(rig.m.oldest_held(), None);
    assert!(rig.send(&data(1)).is_empty());
    assert!(rig
        .feed(Input::Destroy(Side::Prev, DestroyReason::None))
        .is_empty());
    assert!(rig.feed(Input::Timer).is_empty());
}

#[test]
fn every_cause_names_its_reason_and_who_already_knows() {
    use CircuitError as E;
    let cases: Vec<(E, DestroyReason, Option<Side>, bool)> = vec![
        (
            E::Tampered(shallot_crypto::onion::OnionError::PastLastHop),
            DestroyReason::Protocol,
            None,
            true,
        ),
        (
            E::Violation(Violation::ExtendedFromClient),
            DestroyReason::Protocol,
            None,
            true,
        ),
        (E::ExtendTimedOut, DestroyReason::Timeout, None, false),
        (
            E::QueueFull(Side::Prev),
            DestroyReason::ResourceLimit,
            None,
            false,
        ),
        (E::MemoryPressure, DestroyReason::ResourceLimit, None, false),
        (E::ShuttingDown, DestroyReason::ShuttingDown, None, false),
        (
            E::Destroyed {
                side: Side::Next,
                reason: DestroyReason::Other(77),
            },
            DestroyReason::None,
            Some(Side::Next),
            false,
        ),
        (
            E::LinkClosed(Side::Prev),
            DestroyReason::LinkClosed,
            Some(Side::Prev),
            false,
        ),
        (
            E::Encode(shallot_proto::EncodeError::BodyTooShort(1)),
            DestroyReason::Internal,
            None,
            false,
        ),
        (
            E::Seal(shallot_crypto::onion::OnionError::NonceExhausted),
            DestroyReason::Internal,
            None,
            false,
        ),
    ];
    for (cause, reason, from, peer) in cases {
        assert_eq!(cause.destroy_reason(), reason, "{cause}");
        assert_eq!(cause.ended_by(), from, "{cause}");
        assert_eq!(cause.is_peer_fault(), peer, "{cause}");
        // Sources are kept: the chain names the underlying error.
        if let E::Tampered(_) = cause {
            assert!(std::error::Error::source(&cause).is_some());
        }
    }
}

// Mailbox requests, where dispatch is pure.

#[test]
fn mailbox_requests_are_handed_to_the_service_as_they_are() {
    let mut rig = Rig::at_depth(3);
    let request = MailboxMsg::GetBundle {
        req: 42,
        mailbox: MailboxId([4; 32]),
    };
    let out = rig.send(&RelayMsg::Mailbox(request.clone()));
    match out.iter().find(|a| matches!(a, Action::Mailbox(_))) {
        Some(Action::Mailbox(m)) => assert_eq!(*m, request),
        other => panic!("{other:?}"),
    }
    assert!(!rig.m.is_destroyed());
    // A refusal the shell feeds back reaches the client.
    let refusal = RelayMsg::Mailbox(MailboxMsg::Result {
        req: 42,
        status: Status::Unavailable,
        count: 0,
    });
    let out = rig.feed(Input::Reply(refusal.clone()));
    assert_eq!(rig.replies_here(out), vec![refusal]);
}

#[test]
fn answers_sent_toward_a_relay_are_violations() {
    let answers = [
        MailboxMsg::Result {
            req: 1,
            status: Status::Ok,
            count: 0,
        },
        MailboxMsg::Envelope {
            req: 1,
            id: EnvelopeId([0; 16]),
            envelope: vec![1],
        },
        MailboxMsg::Bundle {
            req: 1,
            bundle: vec![2],
        },
        MailboxMsg::Want {
            req: 1,
            ids: vec![EnvelopeId([3; 16])],
        },
    ];
    for answer in answers {
        let mut rig = Rig::at_depth(1);
        let out = rig.send(&RelayMsg::Mailbox(answer));
        assert!(matches!(
            teardown(&out).cause,
            CircuitError::Violation(Violation::MailboxAnswerFromClient)
        ));
    }
    let mut rig = Rig::at_depth(1);
    let out = rig.send(&RelayMsg::Extended(server_reply()));
    assert!(matches!(
        teardown(&out).cause,
        CircuitError::Violation(Violation::ExtendedFromClient)
    ));
}

/// A DIR_GET goes to the directory cache; a directory answer from the client is a violation
/// (`docs/spec.md` §5.13).
#[test]
fn directory_requests_go_to_the_cache_and_answers_from_the_client_are_violations() {
    use shallot_proto::dir_cache::{AnswerForm, DirMsg};
    let mut rig = Rig::at_depth(1);
    let out = rig.send(&RelayMsg::Dir(DirMsg::Get {
        base: Some([7; 32]),
    }));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Dir(Some(d)) if *d == [7; 32])),
        "{out:?}"
    );
    for answer in [
        DirMsg::Answer {
            form: AnswerForm::Full,
            len: 1,
        },
        DirMsg::Chunk(vec![1]),
    ] {
        let mut rig = Rig::at_depth(1);
        let out = rig.send(&RelayMsg::Dir(answer));
        assert!(matches!(
            teardown(&out).cause,
            CircuitError::Violation(Violation::DirAnswerFromClient)
        ));
    }
}

// Limits added against exhaustion and covert channels (issue 13).

/// Budget units an unfinished message of one piece takes: the piece and the list holding it.
fn one_piece_units() -> usize {
    (REASSEMBLY_PIECE + 4 * std::mem::size_of::<Vec<u8>>()).div_ceil(HELD_CELL_BYTES)
}

#[test]
fn an_unfinished_message_is_held_and_counted_until_it_completes_or_the_circuit_dies() {
    let mut rig = Rig::at_depth(1);
    let big = RelayMsg::Data(vec![1; 5000]);
    let bodies = fragment(&big.encode().unwrap(), body_len(1)).unwrap();
    let n = bodies.len();
    let first_at = rig.now;
    for body in &bodies[..n - 1] {
        let p = rig.wrapped(1, body);
        assert!(rig
            .feed(Input::Relay(Side::Prev, p))
            .iter()
            .all(|a| matches!(a, Action::Count(_))));
        rig.now += Duration::from_secs(1);
    }
    // Counted by what the unfinished message's pieces take, not by its payload.
    let received = (n - 1) * (body_len(1) - FRAGMENT_HEADER_LEN);
    let held = rig.m.held_cells() * HELD_CELL_BYTES;
    assert!(
        held >= received.div_ceil(REASSEMBLY_PIECE) * REASSEMBLY_PIECE,
        "{held}"
    );
    assert!(
        held < received + REASSEMBLY_PIECE + 2 * HELD_CELL_BYTES,
        "{held}"
    );
    assert_eq!(rig.m.oldest_held(), Some(first_at));
    let p = rig.wrapped(1, &bodies[n - 1]);
    let out = rig.feed(Input::Relay(Side::Prev, p));
    assert_eq!(rig.replies_here(out), vec![big]);
    assert_eq!(rig.m.held_cells(), 0);
    assert_eq!(rig.m.oldest_held(), None);
    // Another unfinished message is freed when the circuit is destroyed.
    let p = rig.wrapped(1, &bodies[0]);
    rig.feed(Input::Relay(Side::Prev, p));
    assert_eq!(rig.m.held_cells(), one_piece_units());
    rig.feed(Input::Kill(CircuitError::MemoryPressure));
    assert_eq!(rig.m.held_cells(), 0);
    assert_eq!(rig.m.oldest_held(), None);
}

#[test]
fn an_unknown_destroy_reason_is_passed_on_as_no_reason() {
    let mut rig = Rig::at_depth(1);
    rig.extend();
    let out = rig.feed(Input::Destroy(Side::Next, DestroyReason::Other(0xA7)));
    let t = teardown(&out);
    assert_eq!(t.reason, DestroyReason::None);
    assert!(t.tell_prev && !t.tell_next);
    // A defined reason goes on as it came.
    let mut rig = Rig::at_depth(1);
    rig.extend();
    let out = rig.feed(Input::Destroy(Side::Prev, DestroyReason::Requested));
    assert_eq!(teardown(&out).reason, DestroyReason::Requested);
}

#[test]
fn a_circuit_is_idle_once_no_cell_passes_for_the_timeout() {
    let mut rig = Rig::at_depth(1);
    let timeout = Duration::from_secs(600);
    let t0 = rig.now;
    assert!(!rig.m.is_idle(t0 + Duration::from_secs(599), timeout));
    rig.now = t0 + Duration::from_secs(500);
    rig.exchange(&data(1));
    assert!(!rig.m.is_idle(t0 + Duration::from_secs(1000), timeout));
    assert!(rig.m.is_idle(t0 + Duration::from_secs(1100), timeout));
    let out = rig.feed(Input::Kill(CircuitError::Idle));
    assert_eq!(teardown(&out).reason, DestroyReason::Timeout);
    assert!(
        !rig.m.is_idle(t0 + Duration::from_secs(5000), timeout),
        "already gone"
    );
}
