//! Messaging faults and bad input, on one loopback network whose relays the tests kill and
//! restart (so the tests here run one at a time): a killed mailbox replica, restarted mailbox
//! relays, replayed deposits and acknowledgements, a fetch signed by the wrong key, a tampered
//! envelope, and what a mailbox relay's database file holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use shallot_net::HopNum;
use shallot_rt::unix_now;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::e2e::session;
use shallot_client::e2e::wire::Content;
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::ring;
use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::keys::RelayId;
use shallot_proto::dir::{Consensus, Flags, RelayEntry};
use shallot_proto::mailbox::{envelope_id, kind, MailboxAuth, MailboxMsg, Status};
use shallot_proto::relay_msg::RelayMsg;

struct Net {
    net: tokio::sync::Mutex<Testnet>,
    consensus: Consensus,
    serial: tokio::sync::Mutex<()>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("messaging-faults"));
            options.first_octet = 120;
            let net = Testnet::start(options).await.unwrap();
            let consensus = net.wait_ready(Duration::from_secs(60)).await.unwrap();
            Net {
                net: tokio::sync::Mutex::new(net),
                consensus,
                serial: tokio::sync::Mutex::new(()),
            }
        })
    })
}

/// A user's mailbox for this epoch: its id, the relays that keep it, and their testnet indices.
fn mailbox_of(
    n: &Net,
    user: &TestUser,
) -> (shallot_proto::mailbox::MailboxId, Vec<(RelayEntry, usize)>) {
    let secs = n.consensus.params.epoch_secs;
    let epoch = ring::epoch_of(unix_now(), secs);
    let mailbox = ring::mailbox_id(user.address.key(), epoch, secs).unwrap();
    let relays = n
        .consensus
        .relays
        .iter()
        .filter(|r| r.flags.contains(Flags::MAILBOX))
        .map(|r| r.id);
    let srv = n.consensus.srv_for_epoch(epoch);
    let replicas = ring::replicas(&mailbox, &srv, epoch, relays, 3)
        .into_iter()
        .map(|id| {
            let r = n.consensus.relay(&id).unwrap().clone();
            let index = r
                .nickname
                .trim_start_matches("relay")
                .parse::<usize>()
                .unwrap()
                - 1;
            (r, index)
        })
        .collect();
    (mailbox, replicas)
}

/// The owner's blinded key for this epoch.
fn blinded(n: &Net, user: &TestUser) -> BlindedKeypair {
    let secs = n.consensus.params.epoch_secs;
    let id = user.messenger.store().identity().unwrap();
    BlindedKeypair::derive(&id, ring::epoch_of(unix_now(), secs), secs).unwrap()
}

/// A circuit ending at `relay`, for raw mailbox requests.
async fn raw_circuit(user: &TestUser, relay: RelayId) -> std::sync::Arc<shallot_net::Circuit> {
    user.messenger
        .circuits()
        .build(Some(relay))
        .await
        .unwrap()
        .circuit
        .clone()
}

async fn ask(circ: &shallot_net::Circuit, msg: MailboxMsg) -> Vec<MailboxMsg> {
    circ.send(HopNum::THIRD, &RelayMsg::Mailbox(msg))
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let (_, reply) = tokio::time::timeout(Duration::from_secs(5), circ.recv())
            .await
            .unwrap()
            .unwrap();
        let RelayMsg::Mailbox(m) = reply else {
            panic!("unexpected {reply:?}")
        };
        let done = matches!(m, MailboxMsg::Result { .. } | MailboxMsg::Bundle { .. });
        out.push(m);
        if done {
            return out;
        }
    }
}

/// Asserts that `r`, a request's answers, is one RESULT with `status` and `count`.
fn only_result(r: &[MailboxMsg], status: Status, count: u32) {
    assert!(
        matches!(r, [MailboxMsg::Result { status: s, count: c, .. }] if *s == status && *c == count),
        "{r:?}"
    );
}

fn auth(key: &BlindedKeypair, relay: &RelayId, op: u8, body: &[u8]) -> MailboxAuth {
    shallot_client::mailbox::authorize(key, relay, op, body)
}

/// Alice's next envelope for Bob, sealed but not sent.
fn seal(alice: &TestUser, bob: &TestUser, text: &str) -> Vec<u8> {
    let store = alice.messenger.store();
    let me = store.identity().unwrap();
    let content = Content::Text {
        id: shallot_client::MessageId(rand::random()),
        sent_at: unix_now(),
        text: text.into(),
    };
    session::seal_for(&store, &me, bob.address.key(), &content, None, unix_now()).unwrap()
}

async fn pair(n: &Net, tag: &str) -> (TestUser, TestUser) {
    let network = n.net.lock().await.network.clone();
    let alice = TestUser::new(&format!("{tag}-alice"), &network).await;
    let bob = TestUser::new(&format!("{tag}-bob"), &network).await;
    alice.add_contact("bob", &bob);
    bob.add_contact("alice", &alice);
    // One exchange so that Alice has a session with Bob.
    alice
        .messenger
        .send("bob", "first", OnFailure::Fail)
        .await
        .unwrap();
    bob.receive("first").await;
    (alice, bob)
}

#[test]
fn one_mailbox_replica_killed_still_delivers() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair(n, "kill").await;
        let (_, replicas) = mailbox_of(n, &bob);
        let victim = replicas[0].1;
        n.net.lock().await.kill_relay(victim).await;
        let report = alice
            .messenger
            .send("bob", "one replica down", OnFailure::Fail)
            .await
            .unwrap();
        assert_eq!((report.stored, report.wanted), (2, 3));
        bob.receive("one replica down").await;
        n.net.lock().await.restart_relay(victim).await.unwrap();
    });
}

#[test]
fn stored_envelopes_survive_a_mailbox_relay_crash() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair(n, "crash").await;
        alice
            .messenger
            .send("bob", "kept on disk", OnFailure::Fail)
            .await
            .unwrap();
        // Every replica crashes (no graceful shutdown) and comes back.
        let (_, replicas) = mailbox_of(n, &bob);
        let mut net = n.net.lock().await;
        for (_, i) in &replicas {
            net.kill_relay(*i).await;
        }
        for (_, i) in &replicas {
            net.restart_relay(*i).await.unwrap();
        }
        drop(net);
        bob.receive("kept on disk").await;
    });
}

#[test]
fn replayed_deposits_are_shown_once() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair(n, "replay-deposit").await;
        let (mailbox, replicas) = mailbox_of(n, &bob);
        let envelope = seal(&alice, &bob, "said once");
        for (relay, _) in &replicas {
            let circ = raw_circuit(&alice, relay.id).await;
            for req in 1..=3 {
                let r = ask(
                    &circ,
                    MailboxMsg::Deposit {
                        req,
                        mailbox,
                        envelope: envelope.clone(),
                        pow: None,
                    },
                )
                .await;
                assert!(
                    matches!(
                        r[..],
                        [MailboxMsg::Result {
                            status: Status::Ok,
                            ..
                        }]
                    ),
                    "{r:?}"
                );
            }
        }
        let got = bob.receive("said once").await;
        assert_eq!(got.iter().filter(|m| m.text == "said once").count(), 1);
        // Replayed again after Bob consumed (and deleted) it: still nothing new.
        let circ = raw_circuit(&alice, replicas[1].0.id).await;
        ask(
            &circ,
            MailboxMsg::Deposit {
                req: 9,
                mailbox,
                envelope,
                pow: None,
            },
        )
        .await;
        assert_eq!(bob.messenger.sync().await.unwrap(), 0);
        assert!(bob.messenger.store().take_unreported().unwrap().is_empty());
    });
}

#[test]
fn replayed_acknowledgements_and_wrong_keys_are_refused() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair(n, "replay-ack").await;
        let (mailbox, replicas) = mailbox_of(n, &bob);
        let relay = replicas[0].0.id;
        let envelope = seal(&alice, &bob, "acked once");
        let id = envelope_id(&envelope);
        let circ = raw_circuit(&alice, relay).await;
        ask(
            &circ,
            MailboxMsg::Deposit {
                req: 1,
                mailbox,
                envelope: envelope.clone(),
                pow: None,
            },
        )
        .await;

        // Bob's acknowledgement, captured on the way.
        let key = blinded(n, &bob);
        let captured = auth(&key, &relay, kind::ACK, &MailboxMsg::ack_body(&[id]));
        let bob_circ = raw_circuit(&bob, relay).await;
        let r = ask(
            &bob_circ,
            MailboxMsg::Ack {
                req: 2,
                auth: captured.clone(),
                ids: vec![id],
            },
        )
        .await;
        only_result(&r, Status::Ok, 1);

        // The envelope is deposited again: acknowledged here, it is taken for the repeat it
        // is and not stored again (`docs/spec.md` §9.3).
        let r = ask(
            &circ,
            MailboxMsg::Deposit {
                req: 3,
                mailbox,
                envelope,
                pow: None,
            },
        )
        .await;
        only_result(&r, Status::Ok, 0);
        // The captured acknowledgement, replayed, is refused.
        let r = ask(
            &circ,
            MailboxMsg::Ack {
                req: 4,
                auth: captured,
                ids: vec![id],
            },
        )
        .await;
        only_result(&r, Status::Stale, 0);
        // And the owner finds it gone, as its own acknowledgement left it.
        let fetch = auth(&key, &relay, kind::FETCH, b"");
        let r = ask(
            &bob_circ,
            MailboxMsg::Fetch {
                req: 5,
                auth: fetch,
            },
        )
        .await;
        only_result(&r, Status::Ok, 0);

        // A fetch of Bob's mailbox signed with Eve's key is refused.
        let network = n.net.lock().await.network.clone();
        let eve = TestUser::new("replay-ack-eve", &network).await;
        let mut forged = auth(&blinded(n, &eve), &relay, kind::FETCH, b"");
        forged.mailbox = mailbox;
        let r = ask(
            &circ,
            MailboxMsg::Fetch {
                req: 6,
                auth: forged,
            },
        )
        .await;
        only_result(&r, Status::BadSignature, 0);
        // And Bob's request aimed at another relay is refused by this one.
        let elsewhere = auth(&key, &replicas[1].0.id, kind::FETCH, b"");
        let r = ask(
            &circ,
            MailboxMsg::Fetch {
                req: 7,
                auth: elsewhere,
            },
        )
        .await;
        assert!(
            matches!(
                r[..],
                [MailboxMsg::Result {
                    status: Status::BadSignature,
                    ..
                }]
            ),
            "{r:?}"
        );
    });
}

#[test]
fn a_tampered_envelope_is_rejected_and_the_session_goes_on() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair(n, "tamper").await;
        let (mailbox, replicas) = mailbox_of(n, &bob);
        let mut envelope = seal(&alice, &bob, "tampered");
        let mid = envelope.len() / 2;
        envelope[mid] ^= 0x10;
        for (relay, _) in &replicas {
            let circ = raw_circuit(&alice, relay.id).await;
            ask(
                &circ,
                MailboxMsg::Deposit {
                    req: 1,
                    mailbox,
                    envelope: envelope.clone(),
                    pow: None,
                },
            )
            .await;
        }
        alice
            .messenger
            .send("bob", "after the tampering", OnFailure::Fail)
            .await
            .unwrap();
        let got = bob.receive("after the tampering").await;
        assert!(got.iter().all(|m| m.text != "tampered"));
    });
}

#[test]
fn a_mailbox_relays_database_holds_neither_plaintext_nor_addresses() {
    let n = net();
    rt().block_on(async {
        let _one_at_a_time = n.serial.lock().await;
        let (alice, bob) = pair(n, "scan").await;
        let secret = "the meeting is at the old mill at nine";
        alice
            .messenger
            .send("bob", secret, OnFailure::Fail)
            .await
            .unwrap();
        let (_, replicas) = mailbox_of(n, &bob);
        let net = n.net.lock().await;
        let mut scanned = 0;
        for (_, i) in &replicas {
            let dir = net.relay_dir(*i);
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if !path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("mailbox.db")
                {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                scanned += bytes.len();
                let forbidden: Vec<(String, Vec<u8>)> = vec![
                    ("plaintext".into(), secret.as_bytes().to_vec()),
                    (
                        "alice's address".into(),
                        alice.address.to_string().into_bytes(),
                    ),
                    ("bob's address".into(), bob.address.to_string().into_bytes()),
                    (
                        "alice's key".into(),
                        alice.address.key().as_bytes().to_vec(),
                    ),
                    ("bob's key".into(), bob.address.key().as_bytes().to_vec()),
                    (
                        "alice's key in hex".into(),
                        shallot_crypto::hex::encode(alice.address.key().as_bytes()).into_bytes(),
                    ),
                    (
                        "bob's key in hex".into(),
                        shallot_crypto::hex::encode(bob.address.key().as_bytes()).into_bytes(),
                    ),
                ];
                for (what, needle) in forbidden {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "{} contains {what}",
                        path.display()
                    );
                }
            }
        }
        // The scan read real data: the envelope is in there.
        assert!(scanned > 4096, "only {scanned} bytes scanned");
        drop(net);
        bob.receive(secret).await;
    });
}
