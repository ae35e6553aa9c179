//! Anti-entropy and circuit isolation, checked at the mailbox relays (issue 12,
//! `docs/spec.md` §9.6 and §10.7), on one loopback network whose relays run in this process
//! so that the tests can read their counters:
//!
//! * a replica that missed a deposit gets it from the other holders' anti-entropy rounds,
//!   with no change of ring to set off the consensus-driven pushes;
//! * a mailbox of more envelopes than a relay's per-mailbox burst reaches the other replicas
//!   at once, its pushes solving the puzzles the receivers ask for, rather than a burst per
//!   round;
//! * two users chatting never make a relay see a circuit that breaks isolation, while a
//!   circuit the test mixes on purpose is counted, so the check can fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::fetch::fetch_consensus;
use shallot_net::{build, Circuit, ClientChannel, HopNum, HopSpec};
use shallot_proto::dir::{Consensus, Flags, RelayEntry};
use shallot_proto::mailbox::{
    auth_message, envelope_id, kind, MailboxAuth, MailboxId, MailboxMsg, Status,
};
use shallot_proto::placement::Ring;
use shallot_proto::relay_msg::RelayMsg;
use shallot_relay::stats::StatsSnapshot;
use shallot_rt::unix_now;

const T: Duration = Duration::from_secs(10);

fn net() -> &'static tokio::sync::Mutex<Testnet> {
    static NET: OnceLock<tokio::sync::Mutex<Testnet>> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("mailbox-sync"));
            options.relays = 5;
            options.first_octet = 220;
            // Rounds every 1 to 3 s, so that a test sees several.
            options.sync_interval = Some(Duration::from_secs(2));
            let net = Testnet::start(options).await.unwrap();
            net.wait_ready(Duration::from_secs(90)).await.unwrap();
            tokio::sync::Mutex::new(net)
        })
    })
}

async fn consensus(net: &Testnet) -> Consensus {
    fetch_consensus(&net.network, None, unix_now(), T)
        .await
        .unwrap()
        .0
        .into_inner()
}

fn entry<'a>(c: &'a Consensus, id: &RelayId) -> &'a RelayEntry {
    c.relays.iter().find(|r| r.id == *id).unwrap()
}

/// The counters of every relay, in the order started.
fn stats(net: &Testnet) -> Vec<(RelayId, StatsSnapshot)> {
    (0..net.relay_count())
        .filter_map(|i| net.relay(i))
        .map(|h| (h.id(), h.stats()))
        .collect()
}

/// A one-hop circuit to `to`, as a relay's repair or a test's direct request uses.
async fn one_hop(to: &RelayEntry) -> Circuit {
    let chan = ClientChannel::connect(to.address, &to.link_key, T)
        .await
        .unwrap();
    build(chan, &[HopSpec::from(to)], T).await.unwrap()
}

/// Sends `msg` on `circ` and returns the answer to its request.
async fn ask(circ: &Circuit, msg: MailboxMsg) -> MailboxMsg {
    let req = msg.request_id();
    circ.send(HopNum::FIRST, &RelayMsg::Mailbox(msg))
        .await
        .unwrap();
    loop {
        let (_, answer) = tokio::time::timeout(T, circ.recv()).await.unwrap().unwrap();
        if let RelayMsg::Mailbox(m) = answer {
            if m.request_id() == req {
                return m;
            }
        }
    }
}

fn deposit(req: u32, mailbox: MailboxId, envelope: &[u8]) -> MailboxMsg {
    MailboxMsg::Deposit {
        req,
        mailbox,
        envelope: envelope.to_vec(),
        pow: None,
    }
}

#[test]
fn a_replica_that_missed_a_deposit_gets_it_by_anti_entropy() {
    let n = net();
    rt().block_on(async {
        let net = n.lock().await;
        let c = consensus(&net).await;
        // A mailbox whose key the test holds, so that it can fetch as its owner.
        let owner = IdentityKeypair::generate(&mut rand::rngs::OsRng);
        let mailbox = MailboxId(owner.public().to_bytes());
        let epoch = unix_now() / c.params.epoch_secs;
        let ring = Ring::new(
            &c.srv_for_epoch(epoch),
            epoch,
            c.relays
                .iter()
                .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
                .map(|r| r.id),
        );
        let replicas = ring.replicas(&mailbox, 3);
        assert_eq!(replicas.len(), 3);
        let envelope: Vec<u8> = (0..300).map(|_| rand::random::<u8>()).collect();
        let id = envelope_id(&envelope);
        let pushed_before: u64 = stats(&net).iter().map(|(_, s)| s.mailbox_sync_pushed).sum();
        // The deposit reaches two replicas; the third misses it (as if down at the time).
        for r in &replicas[..2] {
            let circ = one_hop(entry(&c, r)).await;
            let answer = ask(&circ, deposit(1, mailbox, &envelope)).await;
            assert!(
                matches!(
                    answer,
                    MailboxMsg::Result {
                        status: Status::Ok,
                        count: 1,
                        ..
                    }
                ),
                "{answer:?}"
            );
            circ.close();
        }
        // The owner finds it at the third replica once a round has run.
        let third = entry(&c, &replicas[2]).clone();
        let fetch_from_third = || async {
            let circ = one_hop(&third).await;
            let nonce: [u8; 16] = rand::random();
            let timestamp = unix_now();
            let signed = auth_message(&third.id, kind::FETCH, &mailbox, timestamp, &nonce, b"");
            let auth = MailboxAuth {
                mailbox,
                timestamp,
                nonce,
                signature: owner.sign(&signed).to_bytes(),
            };
            circ.send(
                HopNum::FIRST,
                &RelayMsg::Mailbox(MailboxMsg::Fetch { req: 1, auth }),
            )
            .await
            .ok()?;
            let mut held = Vec::new();
            loop {
                match tokio::time::timeout(T, circ.recv()).await.ok()?.ok()? {
                    (_, RelayMsg::Mailbox(MailboxMsg::Envelope { id, .. })) => held.push(id),
                    (_, RelayMsg::Mailbox(MailboxMsg::Result { status, .. })) => {
                        assert_eq!(status, Status::Ok);
                        break;
                    }
                    _ => {}
                }
            }
            circ.close();
            held.contains(&id).then_some(())
        };
        eventually(
            "the third replica to hold the envelope",
            Duration::from_secs(60),
            fetch_from_third,
        )
        .await;
        // Anti-entropy put it there: its pushes counted, and the ring never changed. The
        // pusher counts a push when the receiver's answer comes back, which may be after
        // the envelope shows at the receiver.
        eventually(
            "an anti-entropy push to be counted",
            Duration::from_secs(30),
            || {
                let pushed: u64 = stats(&net).iter().map(|(_, s)| s.mailbox_sync_pushed).sum();
                async move { (pushed > pushed_before).then_some(()) }
            },
        )
        .await;
        let now = consensus(&net).await;
        assert_eq!(
            Ring::new(
                &now.srv_for_epoch(epoch),
                epoch,
                now.relays
                    .iter()
                    .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
                    .map(|r| r.id),
            ),
            ring,
            "the ring changed, so consensus-driven repair may have done it"
        );
    });
}

/// Envelopes in one mailbox: more than the per-mailbox burst a relay admits without a puzzle.
const LARGE: usize = 150;

#[test]
fn a_mailbox_larger_than_the_deposit_burst_is_repaired_without_waiting_for_refills() {
    use shallot_client::mailbox::MailboxLink;
    use shallot_crypto::blind::BlindedKeypair;
    use shallot_relay::mailbox::admission::AdmissionLimits;
    let n = net();
    rt().block_on(async {
        let net = n.lock().await;
        let c = consensus(&net).await;
        let identity = IdentityKeypair::generate(&mut rand::rngs::OsRng);
        let owner = BlindedKeypair::derive(&identity, 1, 86_400).unwrap();
        let mailbox = MailboxId(owner.public().to_bytes());
        let epoch = unix_now() / c.params.epoch_secs;
        let ring = Ring::new(
            &c.srv_for_epoch(epoch),
            epoch,
            c.relays
                .iter()
                .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
                .map(|r| r.id),
        );
        let replicas = ring.replicas(&mailbox, 3);
        assert_eq!(replicas.len(), 3);
        let link = |id: RelayId| {
            let to = entry(&c, &id).clone();
            async move { MailboxLink::new(std::sync::Arc::new(one_hop(&to).await), to.id) }
        };
        let solved = |net: &Testnet| -> u64 {
            stats(net)
                .iter()
                .map(|(_, s)| s.mailbox_push_puzzles_solved)
                .sum()
        };
        let solved_before = solved(&net);
        let started = tokio::time::Instant::now();
        let limit = Duration::from_secs(150);
        // Every envelope deposited at the first replica only (a client solving its puzzles
        // past the burst), fifty to a circuit, under the circuit's own limits.
        let mut ids = std::collections::HashSet::new();
        for batch in 0..LARGE / 50 {
            let depositor = link(replicas[0]).await;
            for i in 0..50 {
                let mut envelope: Vec<u8> = (0..300).map(|_| rand::random::<u8>()).collect();
                envelope[..2].copy_from_slice(&((batch * 50 + i) as u16).to_be_bytes());
                ids.insert(envelope_id(&envelope));
                depositor.deposit(mailbox, envelope, T).await.unwrap();
            }
        }
        assert_eq!(ids.len(), LARGE);
        for r in &replicas[1..] {
            eventually(
                "another replica to hold the whole mailbox",
                limit.saturating_sub(started.elapsed()),
                || async {
                    let held = link(*r).await.fetch(&owner, T).await.ok()?;
                    let got: std::collections::HashSet<_> =
                        held.iter().map(|(id, _)| *id).collect();
                    if got == ids {
                        return Some(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    None
                },
            )
            .await;
        }
        // Without puzzles, each receiver would have taken its burst and then a token per
        // refill since the first deposit: fewer than LARGE envelopes in this time.
        let (rate, burst) = AdmissionLimits::default().mailbox_deposits;
        let refills = burst + rate * started.elapsed().as_secs_f64();
        assert!(refills < LARGE as f64, "{refills} deposits admitted free");
        // Counted by the pusher once the answer is back (see above): wait for it.
        eventually(
            "a push that solved a puzzle (else the burst was never passed)",
            Duration::from_secs(30),
            || {
                let solved = solved(&net);
                async move { (solved > solved_before).then_some(()) }
            },
        )
        .await;
    });
}

fn violations(net: &Testnet) -> u64 {
    stats(net)
        .iter()
        .map(|(_, s)| s.mailbox_isolation_violations)
        .sum()
}

#[test]
fn chat_traffic_never_breaks_isolation_at_a_relay_and_a_mixed_circuit_is_caught() {
    let n = net();
    rt().block_on(async {
        let network = n.lock().await.network.clone();
        let requests_before: u64 = stats(&*n.lock().await)
            .iter()
            .map(|(_, s)| s.mailbox_requests)
            .sum();
        {
            let alice = TestUser::new("iso-alice", &network).await;
            let bob = TestUser::new("iso-bob", &network).await;
            alice.add_contact("bob", &bob);
            bob.add_contact("alice", &alice);
            for i in 0..3 {
                let text = format!("to bob {i}");
                alice
                    .messenger
                    .send("bob", &text, OnFailure::Fail)
                    .await
                    .unwrap();
                bob.receive(&text).await;
                let text = format!("to alice {i}");
                bob.messenger
                    .send("alice", &text, OnFailure::Fail)
                    .await
                    .unwrap();
                alice.receive(&text).await;
            }
        }
        let net = n.lock().await;
        let requests: u64 = stats(&net).iter().map(|(_, s)| s.mailbox_requests).sum();
        assert!(
            requests > requests_before + 12,
            "the chat made only {} mailbox requests",
            requests - requests_before
        );
        assert_eq!(violations(&net), 0, "a relay saw a circuit break isolation");

        // Now circuits that break it on purpose: each is counted, once.
        let c = consensus(&net).await;
        let relay = c
            .relays
            .iter()
            .find(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
            .unwrap();
        let two_ids = one_hop(relay).await;
        ask(&two_ids, deposit(1, MailboxId([1; 32]), b"one")).await;
        ask(&two_ids, deposit(2, MailboxId([2; 32]), b"two")).await;
        ask(&two_ids, deposit(3, MailboxId([3; 32]), b"three")).await;
        two_ids.close();
        eventually("the two-id circuit to be counted", T, || async {
            (violations(&net) == 1).then_some(())
        })
        .await;
        let bundle_and_deposit = one_hop(relay).await;
        let m = MailboxId([4; 32]);
        ask(
            &bundle_and_deposit,
            MailboxMsg::GetBundle { req: 1, mailbox: m },
        )
        .await;
        ask(&bundle_and_deposit, deposit(2, m, b"four")).await;
        bundle_and_deposit.close();
        eventually("the mixed circuit to be counted", T, || async {
            (violations(&net) == 2).then_some(())
        })
        .await;
    });
}
