//! Mailboxes survive churn (issue 12, `docs/spec.md` §9.6): on one loopback network of relay
//! processes, the whole mailbox-relay population is replaced one relay at a time, half by
//! SIGTERM (the relay hands its mailboxes over) and half by SIGKILL (the others repair), while
//! sender and recipient are both offline; the recipient then gets every message exactly once.
//! The same scenario on a second network whose relays run with `--no-repair` loses messages:
//! what the first test passes on is the relays' repair, not luck.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::store::StoredMessage;
use shallot_crypto::keys::RelayId;
use shallot_directory::fetch::fetch_consensus;
use shallot_proto::dir::Flags;
use shallot_rt::unix_now;

struct Net {
    net: tokio::sync::Mutex<Testnet>,
}

/// A network of relay processes, repairing or not. Each test has its own (they replace its
/// relays), built the same way.
fn start_net(name: &str, first_octet: u8, repair: bool) -> Net {
    rt().block_on(async {
        let mut options = TestnetOptions::new(scratch(name));
        options.relays = 6;
        options.processes = true;
        options.add_mailbox_relays = true;
        options.first_octet = first_octet;
        options.repair = repair;
        options.binary = Some(env!("CARGO_BIN_EXE_shallot").into());
        let net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(90)).await.unwrap();
        Net {
            net: tokio::sync::Mutex::new(net),
        }
    })
}

fn relay_id(dir: &Path) -> RelayId {
    shallot_relay::keys::load(dir).unwrap().id
}

/// Waits until the consensus's Running mailbox relays are exactly `want`, then a little more
/// for the relay processes (which fetch it every second) to act on it.
async fn wait_mailbox_set(net: &Testnet, want: &BTreeSet<RelayId>) {
    eventually(
        "the consensus to list the new mailbox relays",
        Duration::from_secs(120),
        || async {
            let (c, _) = fetch_consensus(&net.network, None, unix_now(), Duration::from_secs(2))
                .await
                .ok()?;
            let have: BTreeSet<RelayId> = c
                .relays
                .iter()
                .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
                .map(|r| r.id)
                .collect();
            (have == *want).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// The scenario: Alice sends `texts` to Bob, both go offline, every mailbox relay is replaced
/// one at a time (SIGTERM and SIGKILL in turn), then Bob comes back and syncs until he has
/// them all or `wait` has passed. Returns what Bob received.
async fn churn(n: &Net, texts: &[String], wait: Duration) -> Vec<StoredMessage> {
    let network = n.net.lock().await.network.clone();
    let bob_dir;
    {
        let alice = TestUser::new("churn-alice", &network).await;
        let bob = TestUser::new("churn-bob", &network).await;
        alice.add_contact("bob", &bob);
        bob.add_contact("alice", &alice);
        alice
            .messenger
            .send("bob", "hello", OnFailure::Fail)
            .await
            .unwrap();
        bob.receive("hello").await;
        for t in texts {
            let report = alice
                .messenger
                .send("bob", t, OnFailure::Fail)
                .await
                .unwrap();
            assert!(report.stored >= 1, "{t} stored nowhere");
        }
        bob_dir = bob.dir.clone();
        // Both go offline.
    }
    let mut net = n.net.lock().await;
    let originals: Vec<usize> = (0..net.options().mailbox_relays()).collect();
    let mut current: BTreeSet<RelayId> = originals
        .iter()
        .map(|i| relay_id(&net.relay_dir(*i)))
        .collect();
    for (k, old) in originals.iter().enumerate() {
        let new = net.add_relay().await.unwrap();
        current.insert(relay_id(&net.relay_dir(new)));
        wait_mailbox_set(&net, &current).await;
        if k % 2 == 0 {
            net.stop_relay(*old).await;
        } else {
            net.kill_relay(*old).await;
        }
        current.remove(&relay_id(&net.relay_dir(*old)));
        wait_mailbox_set(&net, &current).await;
    }
    drop(net);
    // Bob comes back.
    let bob = TestUser::reopen(&bob_dir, &network).await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while texts
        .iter()
        .any(|t| !got.iter().any(|m: &StoredMessage| &m.text == t))
        && tokio::time::Instant::now() < deadline
    {
        let _ = bob.messenger.sync().await;
        got.extend(bob.messenger.store().take_unreported().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got
}

fn texts() -> Vec<String> {
    (0..6).map(|i| format!("churn message {i}")).collect()
}

#[test]
fn replacing_every_mailbox_relay_while_both_are_offline_loses_nothing() {
    static NET: OnceLock<Net> = OnceLock::new();
    let n = NET.get_or_init(|| start_net("mailbox-churn", 140, true));
    rt().block_on(async {
        let texts = texts();
        let got = churn(n, &texts, Duration::from_secs(80)).await;
        for t in &texts {
            let copies = got.iter().filter(|m| &m.text == t).count();
            assert_eq!(copies, 1, "{t:?} arrived {copies} times");
        }
    });
}

/// The check above can fail: without repair, the same churn loses messages.
#[test]
fn without_repair_the_same_churn_loses_messages() {
    static NET: OnceLock<Net> = OnceLock::new();
    let n = NET.get_or_init(|| start_net("mailbox-churn-norepair", 200, false));
    rt().block_on(async {
        let texts = texts();
        let got = churn(n, &texts, Duration::from_secs(30)).await;
        let arrived = texts
            .iter()
            .filter(|t| got.iter().any(|m| &m.text == *t))
            .count();
        eprintln!("without repair, {arrived} of {} arrived", texts.len());
        assert!(
            arrived < texts.len(),
            "every message arrived although no relay repaired"
        );
    });
}
