//! Hostile relays against the mailbox path, end to end (issue 12; `docs/spec.md` §9.3, §10.7):
//! a guard that drops deposits and forges RESULT(Ok) for them, a mailbox replica that never
//! answers, and one that never sends SENDME. One loopback network of real authorities and
//! relays (in this process, over real TCP) serves every test; the relays misbehave through the
//! test-only `misbehave` feature of `shallot-relay`, switched on and off while they run. The
//! tests share those relays, so they run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::err::MessengerError;
use shallot_client::mailbox::{Isolation, MailboxAccess, MailboxError};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::ring;
use shallot_client::store::{OutState, StoredMessage};
use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::keys::RelayId;
use shallot_proto::dir::Consensus;
use shallot_proto::relay_msg::RelayMsg;
use shallot_relay::misbehave::Misbehaviour;
use shallot_rt::unix_now;

struct Net {
    net: Testnet,
    consensus: Consensus,
    serial: tokio::sync::Mutex<()>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("mailbox-hostile"));
            options.first_octet = 230;
            let net = Testnet::start(options).await.unwrap();
            let consensus = net.wait_ready(Duration::from_secs(90)).await.unwrap();
            Net {
                net,
                consensus,
                serial: tokio::sync::Mutex::new(()),
            }
        })
    })
}

/// Relays made to misbehave for as long as this lives (even if the test fails).
struct Misbehaving<'a> {
    net: &'a Net,
    relays: Vec<RelayId>,
}

impl<'a> Misbehaving<'a> {
    fn start(net: &'a Net, relays: &[RelayId], how: Misbehaviour) -> Self {
        for id in relays {
            net.handle(id).set_misbehaviour(Some(how));
        }
        Misbehaving {
            net,
            relays: relays.to_vec(),
        }
    }
}

impl Drop for Misbehaving<'_> {
    fn drop(&mut self) {
        for id in &self.relays {
            self.net.handle(id).set_misbehaviour(None);
        }
    }
}

impl Net {
    /// The in-process handle of the relay with identity `id`.
    fn handle(&self, id: &RelayId) -> &shallot_relay::RelayHandle {
        let entry = self.consensus.relay(id).expect("a listed relay");
        let index: usize = entry
            .nickname
            .trim_start_matches("relay")
            .parse::<usize>()
            .unwrap()
            - 1;
        self.net.relay(index).expect("an in-process relay")
    }
}

/// A new user on the network, with deadlines roomy enough for a machine under load: a
/// replica that answers late would count as a failed one and change what the tests expect.
async fn user(name: &str, n: &Net) -> TestUser {
    // Roomier deadlines than other tests' users: a late honest replica must not change the
    // count of replicas that answered.
    let config = shallot_client::messenger::MessengerConfig {
        request_timeout: Duration::from_secs(10),
        circuits: shallot_net::circmgr::CircuitConfig {
            per_hop_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..TestUser::config()
    };
    TestUser::with_config(name, &n.net.network, config).await
}

/// Two users who know each other, with a session started (Alice's first message stored and
/// read by Bob), so that no later send needs a prekey bundle.
async fn pair(name: &str, n: &Net) -> (TestUser, TestUser) {
    let alice = user(&format!("{name}-alice"), n).await;
    let bob = user(&format!("{name}-bob"), n).await;
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    bob.messenger.ensure_bundle_published().await.unwrap();
    alice
        .messenger
        .send("bob", "hello", OnFailure::Fail)
        .await
        .unwrap();
    bob.receive("hello").await;
    (alice, bob)
}

/// Alice's outgoing message with `text`, as her store (and so the chat) shows it.
fn outgoing(user: &TestUser, text: &str) -> StoredMessage {
    let history = user.messenger.store().history().unwrap();
    let mut found: Vec<_> = history
        .into_iter()
        .filter(|m| m.outgoing && m.text == text)
        .collect();
    assert_eq!(found.len(), 1, "one outgoing message {text:?}");
    found.remove(0)
}

/// How many of `user`'s incoming messages carry `text`.
fn received(user: &TestUser, text: &str) -> usize {
    let history = user.messenger.store().history().unwrap();
    history
        .iter()
        .filter(|m| !m.outgoing && m.text == text)
        .count()
}

/// Issue 12: "a guard that forges RESULT(Ok) does not make a message count as stored". Every
/// guard Alice may start a circuit at drops what she sends past it once her circuit is built
/// and answers with a forged RESULT(Ok) under its own layer. Her client listens only to the
/// last hop, so the send fails with 0 of 3 stored and the chat shows it failed; Bob's mailbox
/// indeed never got it; once the guards behave, sending again stores and delivers it once.
#[test]
fn a_guard_forging_deposit_results_does_not_make_a_message_stored() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair("forge", n).await;
        // The guard set is what every circuit of Alice's starts at (no path choice can avoid
        // them), so each of her deposits passes a forging guard.
        let guards = alice.messenger.circuits().sampled_guards();
        assert!(!guards.is_empty());
        let forging = Misbehaving::start(n, &guards, Misbehaviour::ForgeResults);
        let sent = tokio::time::timeout(
            Duration::from_secs(120),
            alice.messenger.send("bob", "forged", OnFailure::Fail),
        )
        .await
        .expect("the send ends within its deadlines");
        match sent {
            Err(MessengerError::NotStored(outcome)) => {
                assert_eq!(outcome.stored, 0, "{outcome}");
                assert_eq!(outcome.wanted, 3, "{outcome}");
                assert_eq!(outcome.failures.len(), 3, "{outcome}");
            }
            other => panic!("a forged RESULT(Ok) was believed: {other:?}"),
        }
        let msg = outgoing(&alice, "forged");
        assert!(
            matches!(msg.state, Some(OutState::Failed(_))),
            "the chat must show the truth: {:?}",
            msg.state
        );
        drop(forging);

        // The truth, seen from the other side: no mailbox relay got it.
        bob.messenger.fetch_waiting().await.unwrap();
        assert_eq!(received(&bob, "forged"), 0);

        // With honest guards, sending again stores it and Bob reads it exactly once.
        let report = alice.messenger.retry(&msg.id).await.unwrap();
        assert!(report.stored >= 2, "{report:?}");
        assert_eq!(
            outgoing(&alice, "forged").state,
            Some(OutState::Stored(report.stored))
        );
        bob.receive("forged").await;
        assert_eq!(received(&bob, "forged"), 1);
    });
}

/// Issue 12: "a relay that never answers: every other replica and every other task carries
/// on; the message is stored on the others and the user sees the truth". One of Bob's three
/// replicas drops every mailbox request. Two messages sent at once each complete within the
/// deadlines, stored on 2 of 3, as the chat shows; the periodic tasks of both users (fetch,
/// acknowledgements, retransmission, bundles) keep running, so Bob reads both and Alice sees
/// both delivered.
#[test]
fn a_replica_that_never_answers_costs_only_its_own_answer() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair("silent", n).await;
        let replicas = bob.messenger.my_replicas().unwrap();
        assert_eq!(replicas.len(), 3);
        let _silent = Misbehaving::start(n, &replicas[..1], Misbehaviour::NeverAnswer);
        let _tasks: Vec<_> = [&alice, &bob]
            .iter()
            .flat_map(|u| {
                u.messenger
                    .spawn_periodic(Duration::from_secs(1), |_, _| {})
            })
            .collect();

        let (one, two) = tokio::time::timeout(Duration::from_secs(120), async {
            tokio::join!(
                alice.messenger.send("bob", "one", OnFailure::Fail),
                alice.messenger.send("bob", "two", OnFailure::Fail),
            )
        })
        .await
        .expect("both sends end within their deadlines");
        for (text, report) in [("one", one), ("two", two)] {
            let report = report.unwrap();
            assert_eq!((report.stored, report.wanted), (2, 3), "{text}");
            let state = outgoing(&alice, text).state;
            assert!(
                matches!(state, Some(OutState::Stored(2)) | Some(OutState::Delivered)),
                "{text}: {state:?}"
            );
        }

        // Bob's fetch task reads the two other replicas; his acknowledgements reach Alice's
        // mailbox and her fetch task marks both delivered.
        eventually(
            "Bob reads both messages",
            Duration::from_secs(120),
            || async { (received(&bob, "one") == 1 && received(&bob, "two") == 1).then_some(()) },
        )
        .await;
        eventually(
            "Alice sees both delivered",
            Duration::from_secs(120),
            || async {
                let delivered = ["one", "two"]
                    .iter()
                    .all(|t| outgoing(&alice, t).state == Some(OutState::Delivered));
                delivered.then_some(())
            },
        )
        .await;
        assert_eq!(received(&bob, "one"), 1);
        assert_eq!(received(&bob, "two"), 1);
    });
}

/// Issue 12: "a relay that never sends SENDME: every other replica and every other task
/// carries on". One of Bob's replicas withholds SENDME. Bob's own circuit to it (the one his
/// fetches and acknowledgements use) is filled to the end of its window; a request on it then
/// fails at its deadline rather than waiting for good, and Bob's sync still reads a new
/// message from the other replicas, acknowledges it, and Alice sees it delivered.
#[test]
fn a_replica_that_withholds_sendme_costs_only_its_own_answer() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair("stingy", n).await;
        let replicas = bob.messenger.my_replicas().unwrap();
        assert_eq!(replicas.len(), 3);
        let stingy = replicas[0];
        let _withholding = Misbehaving::start(n, &[stingy], Misbehaviour::WithholdSendme);

        // Bob's owner circuit to the stingy replica, the one his messenger uses.
        let secs = n.consensus.params.epoch_secs;
        let epoch = ring::epoch_of(unix_now(), secs);
        let mailbox = ring::mailbox_id(bob.address.key(), epoch, secs).unwrap();
        let link = bob
            .messenger
            .mailboxes()
            .link(stingy, Isolation::Owner(mailbox))
            .await
            .unwrap();
        let circ = link.circuit().clone();
        let last = circ.last_hop().unwrap();
        // Fill its window: one-cell DATA messages the relay echoes but never acknowledges.
        let mut sent = 0;
        loop {
            let data = RelayMsg::Data(vec![0x5a; 256]);
            match tokio::time::timeout(Duration::from_secs(3), circ.send(last, &data)).await {
                Ok(r) => r.unwrap(),
                Err(_) => break,
            }
            sent += 1;
            assert!(
                sent <= shallot_proto::flow::WINDOW_START,
                "the window never ran out"
            );
        }
        assert!(sent > 0);
        assert!(!circ.is_closed());

        // A request on that circuit fails at its deadline.
        let id = bob.messenger.store().identity().unwrap();
        let key = BlindedKeypair::derive(&id, epoch, secs).unwrap();
        let stuck = tokio::time::timeout(
            Duration::from_secs(60),
            link.fetch(&key, Duration::from_secs(3)),
        )
        .await
        .expect("the request has a deadline");
        assert!(matches!(stuck, Err(MailboxError::Timeout)), "{stuck:?}");

        // Deposits use fresh circuits: the stingy relay answers those, so the truth is
        // "stored on every replica that answered in time".
        let report = alice
            .messenger
            .send("bob", "three", OnFailure::Fail)
            .await
            .unwrap();
        assert!(report.stored >= 2, "{report:?}");
        assert_eq!(
            outgoing(&alice, "three").state,
            Some(OutState::Stored(report.stored))
        );
        // Bob's sync reads the other replicas despite the stuck circuit, within deadlines.
        let synced = tokio::time::timeout(Duration::from_secs(120), bob.messenger.sync())
            .await
            .expect("sync ends within its deadlines");
        synced.unwrap();
        assert_eq!(received(&bob, "three"), 1);
        eventually(
            "Alice sees it delivered",
            Duration::from_secs(120),
            || async {
                let _ = alice.messenger.sync().await;
                (outgoing(&alice, "three").state == Some(OutState::Delivered)).then_some(())
            },
        )
        .await;
    });
}
