//! The client circuit state machine against relays simulated in memory with the real
//! handshake and layer crypto: no sockets, and time is an argument.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use shallot_crypto::keys::{IdentityKeypair, OnionKeypair, RelayId};
use shallot_crypto::ntor::{server_handshake, ServerMessage};
use shallot_crypto::onion::{body_len, HopKeys, OnionError, Peeled, RelayLayer, CELL_PAYLOAD_LEN};
use shallot_proto::cell::{ChanMsg, DestroyReason};
use shallot_proto::flow::{WINDOW_INCREMENT, WINDOW_START};
use shallot_proto::relay_msg::{fragment, Reassembler, RelayMsg, MAX_RELAY_MSG_LEN};

use super::*;

const LIMIT: Duration = Duration::from_secs(10);

/// A relay played by the test: its keys, and its layer once a circuit reaches it.
struct FakeRelay {
    spec: HopSpec,
    id: RelayId,
    onion: OnionKeypair,
    layer: Option<RelayLayer>,
}

/// Three relays and the client state of one circuit through them.
struct Net {
    relays: Vec<FakeRelay>,
    state: CircuitState,
    rng: StdRng,
    t0: Instant,
}

fn data(n: usize) -> RelayMsg {
    RelayMsg::Data(vec![7; n])
}

impl Net {
    fn new() -> Net {
        let mut rng = StdRng::seed_from_u64(11);
        let relays = (0..3)
            .map(|i| {
                let identity = IdentityKeypair::generate(&mut rng);
                let onion = OnionKeypair::generate(&mut rng);
                let id = RelayId::of(&identity.public());
                FakeRelay {
                    spec: HopSpec {
                        id,
                        ntor_key: onion.public().to_bytes(),
                        nickname: format!("relay{}", i + 1),
                    },
                    id,
                    onion,
                    layer: None,
                }
            })
            .collect();
        Net {
            relays,
            state: CircuitState::new(),
            rng,
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// The relay at `depth` answers a handshake and keeps its layer.
    fn answer(&mut self, depth: usize, hs: &shallot_crypto::ntor::ClientMessage) -> ServerMessage {
        let r = &mut self.relays[depth - 1];
        let (reply, seed) = server_handshake(&mut self.rng, &r.id, &[&r.onion], hs).unwrap();
        let keys = HopKeys::from_key_seed(&seed).unwrap();
        r.layer = Some(RelayLayer::new(depth as u8, &keys).unwrap());
        reply
    }

    /// Starts the circuit and answers CREATE.
    fn create(&mut self) -> ChanMsg {
        let first = self.relays[0].spec.clone();
        self.state
            .start_create(&first, self.t0, LIMIT, &mut self.rng.clone())
            .unwrap();
        let out = self.state.take_outbox();
        assert_eq!(out.len(), 1);
        let ChanMsg::Create(create) = &out[0] else {
            panic!("expected CREATE, got {:?}", out[0]);
        };
        assert_eq!(create.depth, 1);
        ChanMsg::Created(self.answer(1, &create.handshake))
    }

    /// Starts an extension to the next relay and has the last hop answer it.
    fn extend(&mut self) -> Vec<ChanMsg> {
        let depth = self.state.len() + 1;
        let next = self.relays[depth - 1].spec.clone();
        let sent = self
            .state
            .start_extend(&next, self.t0, LIMIT, &mut self.rng.clone())
            .unwrap();
        assert_eq!(sent, Sent::Queued);
        let (at, msg) = self.deliver_outbox().pop().unwrap();
        assert_eq!(at, depth - 1);
        let RelayMsg::Extend(extend) = msg else {
            panic!("expected EXTEND, got {msg:?}");
        };
        assert_eq!(extend.target, self.relays[depth - 1].id);
        let reply = self.answer(depth, &extend.handshake);
        self.sent_by(depth - 1, &RelayMsg::Extended(reply))
    }

    /// A three-hop circuit, built.
    fn built() -> Net {
        let mut net = Net::new();
        let created = net.create();
        assert_eq!(
            net.state.handle_cell(created, net.t0).unwrap(),
            Event::Built(HopNum::FIRST)
        );
        for expected in [HopNum::SECOND, HopNum::THIRD] {
            let cells = net.extend();
            let mut last = Event::Nothing;
            for c in cells {
                last = net.state.handle_cell(c, net.t0).unwrap();
            }
            assert_eq!(last, Event::Built(expected));
        }
        assert!(net.state.take_outbox().is_empty());
        net
    }

    /// Takes the client's outbox and has the relays peel each cell: the hop each relay
    /// message was delivered to, and the messages, reassembled.
    fn deliver_outbox(&mut self) -> Vec<(usize, RelayMsg)> {
        let mut assembling: Vec<Reassembler> = (0..3)
            .map(|_| Reassembler::new(MAX_RELAY_MSG_LEN))
            .collect();
        let mut out = Vec::new();
        for cell in self.state.take_outbox() {
            let ChanMsg::Relay(mut payload) = cell else {
                panic!("expected a relay cell, got {cell:?}");
            };
            for (i, r) in self.relays.iter_mut().enumerate() {
                let layer = r.layer.as_mut().unwrap();
                if layer.peel(&mut payload).unwrap() == Peeled::Deliver {
                    let body = &payload[..body_len(i as u8 + 1)];
                    if let Some(bytes) = assembling[i].push(body).unwrap() {
                        out.push((i + 1, RelayMsg::decode(&bytes).unwrap()));
                    }
                    break;
                }
            }
        }
        out
    }

    /// The cells hop `hop` sends to carry `msg` back to the client.
    fn sent_by(&mut self, hop: usize, msg: &RelayMsg) -> Vec<ChanMsg> {
        let bytes = msg.encode().unwrap();
        let bodies = fragment(&bytes, body_len(hop as u8)).unwrap();
        bodies.iter().map(|b| self.raw_sent_by(hop, b)).collect()
    }

    /// One cell from hop `hop` carrying the cell body `body` as it is.
    fn raw_sent_by(&mut self, hop: usize, body: &[u8]) -> ChanMsg {
        let mut payload = [0u8; CELL_PAYLOAD_LEN];
        payload[..body.len()].copy_from_slice(body);
        self.relays[hop - 1]
            .layer
            .as_mut()
            .unwrap()
            .originate(&mut payload)
            .unwrap();
        for d in (1..hop).rev() {
            self.relays[d - 1]
                .layer
                .as_mut()
                .unwrap()
                .add_layer(&mut payload)
                .unwrap();
        }
        ChanMsg::Relay(Box::new(payload))
    }

    /// Feeds cells to the client, returning the last event.
    fn feed(&mut self, cells: Vec<ChanMsg>) -> Result<Event, NetError> {
        let mut last = Ok(Event::Nothing);
        for c in cells {
            last = self.state.handle_cell(c, self.t0);
            if last.is_err() {
                break;
            }
        }
        last
    }

    /// Each hop of a built circuit hears what is sent to it.
    fn assert_every_hop_hears(&mut self) {
        for hop in [HopNum::FIRST, HopNum::SECOND, HopNum::THIRD] {
            assert_eq!(self.send(hop, &data(10)), Sent::Queued);
            assert_eq!(self.deliver_outbox(), vec![(hop.get(), data(10))]);
        }
    }

    fn send(&mut self, hop: HopNum, msg: &RelayMsg) -> Sent {
        self.state.send(&Outgoing::new(hop, msg).unwrap()).unwrap()
    }

    /// What the client sent after closing: the DESTROY reason, if any.
    fn destroy_sent(&mut self) -> Option<DestroyReason> {
        let out = self.state.take_outbox();
        assert!(out.len() <= 1, "{out:?}");
        out.into_iter().find_map(|c| match c {
            ChanMsg::Destroy(r) => Some(r),
            _ => None,
        })
    }
}

fn violation(e: &NetError) -> Violation {
    e.violation()
        .cloned()
        .unwrap_or_else(|| panic!("not a violation: {e}"))
}

// Create, extend, extended.

#[test]
fn created_builds_the_first_hop_and_extended_each_next_one() {
    let mut net = Net::built();
    assert_eq!(net.state.len(), 3);
    assert_eq!(net.state.last_hop(), Some(HopNum::THIRD));
    let names: Vec<_> = net.state.path().into_iter().map(|h| h.nickname).collect();
    assert_eq!(names, ["relay1", "relay2", "relay3"]);
    net.assert_every_hop_hears();
}

/// The shell prepares each handshake while its answer is on the way: the circuit is built
/// just the same and the hops hear what is sent to them.
#[test]
fn a_circuit_whose_handshakes_were_prepared_ahead_works_the_same() {
    let mut net = Net::new();
    assert!(net.state.handshake_preparation().is_none());
    let created = net.create();
    let work = net.state.handshake_preparation().unwrap();
    net.state.handshake_prepared(work.run());
    assert!(net.state.handshake_preparation().is_none(), "done once");
    assert_eq!(
        net.state.handle_cell(created, net.t0).unwrap(),
        Event::Built(HopNum::FIRST)
    );
    for expected in [HopNum::SECOND, HopNum::THIRD] {
        let work = net.state.handshake_preparation();
        assert!(work.is_none(), "nothing waits between hops");
        let cells = net.extend();
        let work = net.state.handshake_preparation().unwrap();
        net.state.handshake_prepared(work.run());
        assert_eq!(net.feed(cells).unwrap(), Event::Built(expected));
    }
    net.assert_every_hop_hears();
}

/// Work taken for a handshake whose answer came first is no longer wanted, and its result,
/// given late, changes nothing: the next hop is built all the same.
#[test]
fn preparation_that_loses_the_race_is_skipped_or_ignored() {
    let mut net = Net::new();
    let created = net.create();
    let work = net.state.handshake_preparation().unwrap();
    assert!(net.state.wants(&work));
    assert_eq!(
        net.state.handle_cell(created, net.t0).unwrap(),
        Event::Built(HopNum::FIRST)
    );
    assert!(!net.state.wants(&work), "answered: nothing to prepare");
    let cells = net.extend();
    assert!(!net.state.wants(&work), "another handshake's work");
    net.state.handshake_prepared(work.run());
    assert_eq!(net.feed(cells).unwrap(), Event::Built(HopNum::SECOND));
}

#[test]
fn a_deadline_is_set_while_a_handshake_waits_and_cleared_after() {
    let mut net = Net::new();
    assert_eq!(net.state.deadline(), None);
    let created = net.create();
    assert_eq!(net.state.deadline(), Some(net.at(10)));
    assert!(net.state.is_building());
    net.state.handle_cell(created, net.at(1)).unwrap();
    assert_eq!(net.state.deadline(), None);
    assert!(!net.state.is_building());
}

#[test]
fn a_second_create_or_an_extend_during_a_handshake_is_refused() {
    let mut net = Net::new();
    let _ = net.create();
    let first = net.relays[0].spec.clone();
    let err = net
        .state
        .start_create(&first, net.t0, LIMIT, &mut net.rng.clone())
        .unwrap_err();
    assert!(matches!(err, NetError::Busy));
    let second = net.relays[1].spec.clone();
    let err = net
        .state
        .start_extend(&second, net.t0, LIMIT, &mut net.rng.clone())
        .unwrap_err();
    assert!(matches!(err, NetError::Busy));
    assert!(
        net.state.closed().is_none(),
        "a caller's mistake does not close it"
    );
}

#[test]
fn created_that_answers_no_create_is_a_violation() {
    let mut net = Net::built();
    let reply = ServerMessage::from_bytes(&[1; 64]);
    let err = net
        .state
        .handle_cell(ChanMsg::Created(reply), net.t0)
        .unwrap_err();
    assert_eq!(violation(&err), Violation::UnexpectedCreated);
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

#[test]
fn extended_that_answers_no_extend_is_a_violation() {
    let mut net = Net::built();
    let reply = ServerMessage::from_bytes(&[1; 64]);
    let cells = net.sent_by(3, &RelayMsg::Extended(reply));
    let err = net.feed(cells).unwrap_err();
    assert_eq!(violation(&err), Violation::UnexpectedExtended);
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

#[test]
fn extended_from_a_hop_other_than_the_last_is_a_violation() {
    let mut net = Net::new();
    let created = net.create();
    net.state.handle_cell(created, net.t0).unwrap();
    let cells = net.extend();
    net.feed(cells).unwrap();
    // Extending to the third relay: the first hop answers instead of the second.
    let third = net.relays[2].spec.clone();
    net.state
        .start_extend(&third, net.t0, LIMIT, &mut net.rng.clone())
        .unwrap();
    net.deliver_outbox();
    let reply = ServerMessage::from_bytes(&[2; 64]);
    let cells = net.sent_by(1, &RelayMsg::Extended(reply));
    let err = net.feed(cells).unwrap_err();
    assert_eq!(violation(&err), Violation::UnexpectedExtended);
}

/// A forged answer fails the handshake, whether the shell prepared it ahead or not.
#[test]
fn a_reply_that_does_not_prove_the_onion_key_fails_the_handshake() {
    for prepared in [false, true] {
        let mut net = Net::new();
        let _ = net.create();
        if prepared {
            let work = net.state.handshake_preparation().unwrap();
            net.state.handshake_prepared(work.run());
        }
        let forged = ServerMessage::from_bytes(&[3; 64]);
        let err = net
            .state
            .handle_cell(ChanMsg::Created(forged), net.t0)
            .unwrap_err();
        assert!(
            matches!(err, NetError::Handshake { ref hop, .. } if hop == "relay1"),
            "{err}"
        );
        assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
        assert_eq!(net.state.len(), 0);
    }
}

#[test]
fn a_relay_sending_extend_toward_the_client_is_a_violation() {
    let mut net = Net::built();
    let (_, handshake) = shallot_crypto::ntor::ClientHandshake::start(
        &mut net.rng.clone(),
        net.relays[0].id,
        &x25519_dalek::PublicKey::from(net.relays[0].spec.ntor_key),
    );
    let msg = RelayMsg::Extend(shallot_proto::relay_msg::Extend {
        target: net.relays[0].id,
        handshake,
    });
    let cells = net.sent_by(2, &msg);
    let err = net.feed(cells).unwrap_err();
    assert_eq!(violation(&err), Violation::ExtendFromRelay(HopNum::SECOND));
}

// Timeouts.

#[test]
fn create_times_out_at_its_deadline_and_not_before() {
    let mut net = Net::new();
    let _ = net.create();
    net.state.poll_timeout(net.at(9)).unwrap();
    assert!(net.state.take_outbox().is_empty());
    let err = net.state.poll_timeout(net.at(10)).unwrap_err();
    assert!(
        matches!(err, NetError::Timeout(BuildStep::Creating)),
        "{err}"
    );
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
    assert_eq!(net.state.deadline(), None);
}

#[test]
fn extend_times_out_at_its_deadline() {
    let mut net = Net::new();
    let created = net.create();
    net.state.handle_cell(created, net.t0).unwrap();
    let second = net.relays[1].spec.clone();
    net.state
        .start_extend(&second, net.at(5), LIMIT, &mut net.rng.clone())
        .unwrap();
    net.state.take_outbox();
    net.state.poll_timeout(net.at(14)).unwrap();
    let err = net.state.poll_timeout(net.at(15)).unwrap_err();
    assert!(
        matches!(err, NetError::Timeout(BuildStep::Extending)),
        "{err}"
    );
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

#[test]
fn an_answer_after_the_deadline_counts_as_a_timeout() {
    let mut net = Net::new();
    let created = net.create();
    let err = net.state.handle_cell(created, net.at(11)).unwrap_err();
    assert!(
        matches!(err, NetError::Timeout(BuildStep::Creating)),
        "{err}"
    );
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
    assert_eq!(net.state.len(), 0);
}

#[test]
fn the_timer_does_nothing_when_no_handshake_waits() {
    let mut net = Net::built();
    net.state.poll_timeout(net.at(3600)).unwrap();
    assert!(net.state.closed().is_none());
}

// Destroy, each direction.

#[test]
fn a_relay_destroy_closes_with_its_reason_and_sends_nothing_back() {
    for reason in [
        DestroyReason::None,
        DestroyReason::Protocol,
        DestroyReason::Internal,
        DestroyReason::Requested,
        DestroyReason::ResourceLimit,
        DestroyReason::ConnectFailed,
        DestroyReason::Timeout,
        DestroyReason::LinkClosed,
        DestroyReason::Finished,
        DestroyReason::OnionKey,
        DestroyReason::ShuttingDown,
        DestroyReason::Other(200),
    ] {
        let mut net = Net::built();
        let err = net
            .state
            .handle_cell(ChanMsg::Destroy(reason), net.t0)
            .unwrap_err();
        assert!(
            matches!(err, NetError::Destroyed(r) if r == reason),
            "{err}"
        );
        assert_eq!(net.destroy_sent(), None, "{reason:?}");
        assert!(matches!(net.state.closed(), Some(NetError::Destroyed(r)) if *r == reason));
    }
}

#[test]
fn a_destroy_during_creation_fails_the_build() {
    let mut net = Net::new();
    let _ = net.create();
    let err = net
        .state
        .handle_cell(ChanMsg::Destroy(DestroyReason::OnionKey), net.t0)
        .unwrap_err();
    assert!(matches!(err, NetError::Destroyed(DestroyReason::OnionKey)));
    assert!(!net.state.is_building());
}

#[test]
fn closing_sends_one_destroy() {
    let mut net = Net::built();
    net.state.close();
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
    net.state.close();
    assert_eq!(net.destroy_sent(), None, "only once");
    assert!(matches!(net.state.closed(), Some(NetError::Closed)));
}

#[test]
fn a_closed_link_closes_the_circuit_without_a_destroy() {
    let mut net = Net::built();
    let err = net.state.link_closed();
    assert!(matches!(err, NetError::Link(_)), "{err}");
    assert_eq!(net.destroy_sent(), None);
}

#[test]
fn the_first_reason_to_close_is_kept() {
    let mut net = Net::built();
    net.state
        .handle_cell(ChanMsg::Destroy(DestroyReason::ShuttingDown), net.t0)
        .unwrap_err();
    net.state.close();
    net.state.link_closed();
    assert_eq!(net.destroy_sent(), None);
    assert!(matches!(
        net.state.closed(),
        Some(NetError::Destroyed(DestroyReason::ShuttingDown))
    ));
    // Everything after fails with that reason.
    let err = net
        .state
        .send(&Outgoing::new(HopNum::FIRST, &data(1)).unwrap())
        .unwrap_err();
    assert!(matches!(
        err,
        NetError::Destroyed(DestroyReason::ShuttingDown)
    ));
    let err = net
        .state
        .handle_cell(ChanMsg::Destroy(DestroyReason::Finished), net.t0)
        .unwrap_err();
    assert!(matches!(
        err,
        NetError::Destroyed(DestroyReason::ShuttingDown)
    ));
}

// Cells a relay never sends.

#[test]
fn a_create_cell_on_a_circuit_is_a_violation() {
    let cell = ChanMsg::Create(shallot_proto::cell::Create {
        depth: 1,
        handshake: shallot_crypto::ntor::ClientHandshake::start(
            &mut StdRng::seed_from_u64(1),
            RelayId([1; 20]),
            &x25519_dalek::PublicKey::from([9; 32]),
        )
        .1,
    });
    let mut net = Net::built();
    let err = net.state.handle_cell(cell, net.t0).unwrap_err();
    assert_eq!(violation(&err), Violation::UnexpectedCell("CREATE"));
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

#[test]
fn a_relay_cell_before_created_is_a_violation() {
    let mut net = Net::new();
    let _ = net.create();
    let err = net
        .state
        .handle_cell(ChanMsg::Relay(Box::new([0; CELL_PAYLOAD_LEN])), net.t0)
        .unwrap_err();
    assert_eq!(violation(&err), Violation::RelayBeforeCreated);
}

#[test]
fn a_changed_cell_fails_authentication_and_destroys_the_circuit() {
    let mut net = Net::built();
    let mut cells = net.sent_by(3, &data(20));
    let ChanMsg::Relay(payload) = &mut cells[0] else {
        panic!()
    };
    payload[40] ^= 1;
    let err = net.feed(cells).unwrap_err();
    assert_eq!(
        violation(&err),
        Violation::Layer(OnionError::BadTag { hop: 1 })
    );
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

// Sending.

#[test]
fn sending_to_a_hop_the_circuit_lacks_is_refused_and_harmless() {
    let mut net = Net::new();
    let created = net.create();
    net.state.handle_cell(created, net.t0).unwrap();
    let err = net
        .state
        .send(&Outgoing::new(HopNum::SECOND, &data(1)).unwrap())
        .unwrap_err();
    assert!(matches!(err, NetError::NoSuchHop(2)));
    assert!(net.state.closed().is_none());
    assert!(net.state.take_outbox().is_empty());
}

#[test]
fn a_message_too_long_for_any_circuit_is_refused_before_it_is_sent() {
    let err = Outgoing::new(HopNum::THIRD, &data(MAX_RELAY_MSG_LEN)).unwrap_err();
    assert!(matches!(err, NetError::Unsendable(_)), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn a_long_message_is_fragmented_and_reassembled_by_the_hop() {
    let mut net = Net::built();
    let msg = data(3000);
    let out = Outgoing::new(HopNum::THIRD, &msg).unwrap();
    let cells = out.cells() as u32;
    assert!(cells > 1);
    assert_eq!(net.state.send(&out).unwrap(), Sent::Queued);
    assert_eq!(net.deliver_outbox(), vec![(3, msg)]);
    assert_eq!(
        net.state.send_window(HopNum::THIRD),
        Some(WINDOW_START - cells)
    );
}

// Flow control, client to relay.

#[test]
fn the_send_window_closes_after_its_cells_and_a_sendme_reopens_it() {
    let mut net = Net::built();
    for _ in 0..WINDOW_START {
        assert_eq!(net.send(HopNum::THIRD, &data(1)), Sent::Queued);
    }
    assert_eq!(net.deliver_outbox().len(), WINDOW_START as usize);
    assert_eq!(net.send(HopNum::THIRD, &data(1)), Sent::Blocked);
    assert!(net.state.take_outbox().is_empty(), "blocked sends nothing");
    // Other hops have windows of their own.
    assert_eq!(net.send(HopNum::SECOND, &data(1)), Sent::Queued);
    net.deliver_outbox();
    let sendme = net.sent_by(3, &RelayMsg::Sendme);
    assert_eq!(
        net.feed(sendme).unwrap(),
        Event::WindowOpened(HopNum::THIRD)
    );
    for _ in 0..WINDOW_INCREMENT {
        assert_eq!(net.send(HopNum::THIRD, &data(1)), Sent::Queued);
    }
    assert_eq!(net.send(HopNum::THIRD, &data(1)), Sent::Blocked);
}

#[test]
fn a_sendme_for_cells_never_sent_is_a_violation() {
    let mut net = Net::built();
    let sendme = net.sent_by(2, &RelayMsg::Sendme);
    let err = net.feed(sendme).unwrap_err();
    assert_eq!(violation(&err), Violation::UnexpectedSendme(HopNum::SECOND));
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

#[test]
fn sendmes_go_out_even_when_the_send_window_is_shut() {
    let mut net = Net::built();
    for _ in 0..WINDOW_START {
        net.send(HopNum::THIRD, &data(1));
    }
    assert_eq!(net.deliver_outbox().len(), WINDOW_START as usize);
    assert_eq!(net.send(HopNum::THIRD, &data(1)), Sent::Blocked);
    let cells: Vec<_> = (0..WINDOW_INCREMENT)
        .flat_map(|_| net.sent_by(3, &data(1)))
        .collect();
    net.feed(cells).unwrap();
    net.state.consumed(HopNum::THIRD, WINDOW_INCREMENT).unwrap();
    assert_eq!(net.deliver_outbox(), vec![(3, RelayMsg::Sendme)]);
}

// Flow control, relay to client.

#[test]
fn reading_a_window_increment_sends_one_sendme_to_that_hop() {
    let mut net = Net::built();
    let cells: Vec<_> = (0..WINDOW_INCREMENT - 1)
        .flat_map(|_| net.sent_by(3, &data(1)))
        .collect();
    net.feed(cells).unwrap();
    for _ in 0..WINDOW_INCREMENT - 1 {
        net.state.consumed(HopNum::THIRD, 1).unwrap();
    }
    assert!(net.state.take_outbox().is_empty(), "not yet due");
    let cell = net.sent_by(3, &data(1));
    let event = net.feed(cell).unwrap();
    let Event::Deliver(d) = event else {
        panic!("{event:?}")
    };
    assert_eq!((d.hop, d.cells), (HopNum::THIRD, 1));
    net.state.consumed(d.hop, d.cells).unwrap();
    assert_eq!(net.deliver_outbox(), vec![(3, RelayMsg::Sendme)]);
}

#[test]
fn a_hop_that_sends_past_its_window_is_cut_off() {
    let mut net = Net::built();
    let cells: Vec<_> = (0..WINDOW_START)
        .flat_map(|_| net.sent_by(3, &data(1)))
        .collect();
    net.feed(cells).unwrap();
    let one_more = net.sent_by(3, &data(1));
    let err = net.feed(one_more).unwrap_err();
    assert_eq!(violation(&err), Violation::WindowOverrun(HopNum::THIRD));
    assert_eq!(net.destroy_sent(), Some(DestroyReason::Requested));
}

#[test]
fn cells_not_yet_read_hold_the_window_and_reading_them_frees_it() {
    let mut net = Net::built();
    let cells: Vec<_> = (0..WINDOW_START)
        .flat_map(|_| net.sent_by(3, &data(1)))
        .collect();
    net.feed(cells).unwrap();
    // The reader takes them all: ten SENDMEs go back, and the hop may send a window more.
    net.state.consumed(HopNum::THIRD, WINDOW_START).unwrap();
    let sendmes = net.deliver_outbox();
    assert_eq!(sendmes.len(), (WINDOW_START / WINDOW_INCREMENT) as usize);
    assert!(sendmes.iter().all(|m| *m == (3, RelayMsg::Sendme)));
    let cells: Vec<_> = (0..WINDOW_START)
        .flat_map(|_| net.sent_by(3, &data(1)))
        .collect();
    assert!(net.feed(cells).is_ok());
}

#[test]
fn extended_counts_against_the_window_of_the_hop_that_sent_it() {
    // Hop 1 answered the extension to hop 2: that cell was counted and acknowledged, so
    // hop 1 has one cell less of window until its next SENDME falls due.
    let mut net = Net::built();
    let cells: Vec<_> = (0..WINDOW_START - 1)
        .flat_map(|_| net.sent_by(1, &data(1)))
        .collect();
    net.feed(cells).unwrap();
    let one_more = net.sent_by(1, &data(1));
    let err = net.feed(one_more).unwrap_err();
    assert_eq!(violation(&err), Violation::WindowOverrun(HopNum::FIRST));
}

#[test]
fn a_multi_cell_message_counts_every_cell() {
    let mut net = Net::built();
    let big = data(2000);
    let cells = net.sent_by(3, &big);
    let n = cells.len() as u32;
    assert!(n > 1);
    let events: Vec<_> = cells
        .into_iter()
        .map(|c| net.state.handle_cell(c, net.t0).unwrap())
        .collect();
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| *e == Event::Nothing));
    assert_eq!(
        events.last(),
        Some(&Event::Deliver(Delivery {
            hop: HopNum::THIRD,
            msg: big,
            cells: n
        }))
    );
}

#[test]
fn endless_empty_fragments_overrun_the_window() {
    // A hop that never finishes a message must not send without limit.
    let mut net = Net::built();
    let empty_partial = [0u8; 3];
    let mut result = Ok(Event::Nothing);
    let mut sent = 0;
    while result.is_ok() && sent <= WINDOW_START {
        let cell = net.raw_sent_by(3, &empty_partial);
        result = net.state.handle_cell(cell, net.t0);
        sent += 1;
    }
    let err = result.unwrap_err();
    assert_eq!(violation(&err), Violation::WindowOverrun(HopNum::THIRD));
    assert_eq!(sent, WINDOW_START + 1);
}

// Reassembly.

#[test]
fn a_message_over_the_size_limit_is_refused_while_it_arrives() {
    let mut net = Net::built();
    // Fragments of the largest size, never final, until past the limit.
    let chunk = body_len(3) - 3;
    let mut body = vec![0u8; body_len(3)];
    body[1..3].copy_from_slice(&(chunk as u16).to_be_bytes());
    let mut result = Ok(Event::Nothing);
    let mut sent = 0;
    while result.is_ok() {
        let cell = net.raw_sent_by(3, &body);
        result = net.state.handle_cell(cell, net.t0);
        sent += 1;
    }
    let err = result.unwrap_err();
    assert!(
        matches!(violation(&err), Violation::Reassembly { hop, .. } if hop == HopNum::THIRD),
        "{err}"
    );
    assert_eq!(sent, MAX_RELAY_MSG_LEN / chunk + 1);
}

#[test]
fn a_fragment_with_unknown_flags_is_refused() {
    let mut net = Net::built();
    let cell = net.raw_sent_by(1, &[0x80, 0, 0]);
    let err = net.feed(vec![cell]).unwrap_err();
    assert!(
        matches!(violation(&err), Violation::Reassembly { .. }),
        "{err}"
    );
}

#[test]
fn a_message_of_unknown_type_is_malformed() {
    let mut net = Net::built();
    let cell = net.raw_sent_by(3, &[1, 0, 1, 0xEE]);
    let err = net.feed(vec![cell]).unwrap_err();
    assert!(
        matches!(violation(&err), Violation::Malformed { hop, .. } if hop == HopNum::THIRD),
        "{err}"
    );
}

#[test]
fn consuming_on_a_closed_circuit_does_nothing() {
    let mut net = Net::built();
    let cells = net.sent_by(3, &data(1));
    net.feed(cells).unwrap();
    net.state.close();
    net.state.take_outbox();
    net.state.consumed(HopNum::THIRD, 1).unwrap();
    assert!(net.state.take_outbox().is_empty());
}
