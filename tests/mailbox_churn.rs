//! Mailboxes survive churn (issue 12, `docs/spec.md` §9.6): on one loopback network of relay
//! processes, the whole mailbox-relay population is replaced one relay at a time, half by
//! SIGTERM (the relay hands its mailboxes over) and half by SIGKILL (the others repair), while
//! sender and recipient are both offline; the recipient then gets every message exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_crypto::keys::RelayId;
use shallot_directory::fetch::fetch_consensus;
use shallot_proto::dir::Flags;
use shallot_rt::unix_now;

struct Net {
    net: tokio::sync::Mutex<Testnet>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("mailbox-churn"));
            options.relays = 6;
            options.processes = true;
            options.add_mailbox_relays = true;
            options.first_octet = 140;
            options.binary = Some(env!("CARGO_BIN_EXE_shallot").into());
            let net = Testnet::start(options).await.unwrap();
            net.wait_ready(Duration::from_secs(90)).await.unwrap();
            Net {
                net: tokio::sync::Mutex::new(net),
            }
        })
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

#[test]
fn replacing_every_mailbox_relay_while_both_are_offline_loses_nothing() {
    let n = net();
    rt().block_on(async {
        let network = n.net.lock().await.network.clone();
        let texts: Vec<String> = (0..6).map(|i| format!("churn message {i}")).collect();
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
            for t in &texts {
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
        // Bob comes back: every message, once.
        let bob = TestUser::reopen(&bob_dir, &network).await;
        let mut got = Vec::new();
        let last = texts.last().unwrap().clone();
        got.extend(bob.receive(&last).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while texts.iter().any(|t| !got.iter().any(|m| &m.text == t))
            && tokio::time::Instant::now() < deadline
        {
            let _ = bob.messenger.sync().await;
            got.extend(bob.messenger.store().take_unreported().unwrap());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for t in &texts {
            let copies = got.iter().filter(|m| &m.text == t).count();
            assert_eq!(copies, 1, "{t:?} arrived {copies} times");
        }
    });
}
