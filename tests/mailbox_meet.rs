//! Sender and owner holding consensuses that differ by several relays still meet (issue 12,
//! `docs/spec.md` §9.2), on one loopback network of authorities and twelve relays (six of
//! them mailbox relays).
//!
//! A client "pinned" to another view of the network is a test hook: its consensus is the
//! network's current one with the three mailbox relays nearest the owner's mailbox taken out,
//! installed again every second (a consensus on this network lives nine seconds), as if it
//! had fetched its consensus before those three joined and never since. Everything else is
//! real: the relays, the circuits, the deposits and fetches.
//!
//! * A sender that lacks the three relays deposits on none of the owner's replicas; the owner,
//!   who never held a consensus without them, meets it on the relays past his replicas that
//!   he also reads (§9.2's read slack), and finds the sender's first message's prekey bundle
//!   there too.
//! * An owner that lacks the three relays reads none of the sender's replicas; the sender,
//!   whose consensus changed from one without them to one with them, meets him by also
//!   depositing on the replicas the previous consensus named.
//!
//! Each test checks first that the two views name disjoint replicas. With the agreement logic
//! off (no read slack, no previous ring) both fail at the first message, whose bundle is not
//! found; with only the sender's deposits on the previous ring off, the second fails because
//! the owner never receives the messages. (Turning off only the owner's read slack did not
//! make the first fail: the messages still arrived by another path, not yet identified.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::mailbox::CircuitMailboxes;
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerConfig};
use shallot_client::ring;
use shallot_client::store::Store;
use shallot_crypto::keys::RelayId;
use shallot_directory::fetch::fetch_consensus;
use shallot_directory::NetworkFile;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::dir::{Consensus, Flags};
use shallot_proto::placement::Ring;
use shallot_rt::{unix_now, SystemClock};

const T: Duration = Duration::from_secs(10);

fn net() -> &'static Testnet {
    static NET: OnceLock<Testnet> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("mailbox-meet"));
            options.relays = 12;
            options.first_octet = 30;
            let net = Testnet::start(options).await.unwrap();
            net.wait_ready(Duration::from_secs(120)).await.unwrap();
            net
        })
    })
}

async fn consensus(network: &NetworkFile) -> Consensus {
    let mut last = None;
    for _ in 0..5 {
        match fetch_consensus(network, None, unix_now(), T).await {
            Ok((c, _)) => return c.into_inner(),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no consensus: {last:?}");
}

fn without(c: &Consensus, gone: &HashSet<RelayId>) -> Consensus {
    let mut c = c.clone();
    c.relays.retain(|r| !gone.contains(&r.id));
    c
}

/// The mailbox ring of today in `c`.
fn ring_of(c: &Consensus) -> (Ring, u64) {
    let epoch = ring::epoch_of(unix_now(), c.params.epoch_secs);
    let ring = Ring::new(
        &c.srv_for_epoch(epoch),
        epoch,
        c.relays
            .iter()
            .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
            .map(|r| r.id),
    );
    (ring, epoch)
}

/// A user of the network whose consensus the test holds: `dir` is installed by hand, never
/// fetched by the messenger itself.
struct PinnedUser {
    messenger: Arc<Messenger>,
    dir: Arc<NetDir>,
    /// Reinstalls the network's consensus without `gone`, every second.
    pin: Option<tokio::task::JoinHandle<()>>,
}

impl PinnedUser {
    /// A new user named `name`, holding `first` (a view of the network), then after it the
    /// network's consensus without `gone`, kept current. The bundle is published by the view
    /// held then.
    async fn new(
        name: &str,
        network: &NetworkFile,
        first: Option<Consensus>,
        gone: HashSet<RelayId>,
    ) -> PinnedUser {
        let data = scratch(name);
        Store::open(&data)
            .unwrap()
            .create_identity(Some(name), 1)
            .unwrap();
        PinnedUser::open(&data, network, first, gone).await
    }

    /// [`PinnedUser::new`] for the identity already in `data`.
    async fn open(
        data: &Path,
        network: &NetworkFile,
        first: Option<Consensus>,
        gone: HashSet<RelayId>,
    ) -> PinnedUser {
        let store = Store::open(data).unwrap();
        let dir = Arc::new(NetDir::new(network.clone(), data));
        if let Some(c) = first {
            dir.install(c);
        }
        dir.install(without(&consensus(network).await, &gone));
        let messenger = messenger(store, data, dir.clone());
        let pin = {
            let (dir, network) = (dir.clone(), network.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok((c, _)) = fetch_consensus(&network, None, unix_now(), T).await {
                        dir.install(without(&c.into_inner(), &gone));
                    }
                }
            })
        };
        messenger.ensure_bundle_published().await.unwrap();
        PinnedUser {
            messenger,
            dir,
            pin: Some(pin),
        }
    }

    fn held(&self) -> Arc<shallot_directory::VerifiedConsensus> {
        self.dir.consensus().unwrap()
    }
}

impl Drop for PinnedUser {
    fn drop(&mut self) {
        if let Some(p) = self.pin.take() {
            p.abort();
        }
    }
}

fn messenger(store: Store, data: &Path, dir: Arc<NetDir>) -> Arc<Messenger> {
    let config = MessengerConfig {
        request_timeout: Duration::from_secs(5),
        circuits: CircuitConfig {
            per_hop_timeout: Duration::from_secs(3),
            ..Default::default()
        },
        ..Default::default()
    };
    let circuits = CircuitManager::new(dir.clone(), data.to_path_buf(), config.circuits.clone());
    Messenger::with_parts(
        store,
        dir,
        CircuitMailboxes::new(circuits),
        Arc::new(SystemClock),
        config,
    )
    .unwrap()
}

/// The three Running mailbox relays nearest `owner`'s mailbox of today, by the network's
/// current consensus; and that mailbox.
async fn nearest_three(
    network: &NetworkFile,
    owner: &ed25519_dalek::VerifyingKey,
) -> (HashSet<RelayId>, shallot_proto::mailbox::MailboxId) {
    let c = consensus(network).await;
    let (ring, epoch) = ring_of(&c);
    assert_eq!(ring.len(), 6, "six mailbox relays");
    let mailbox = ring::mailbox_id(owner, epoch, c.params.epoch_secs).unwrap();
    (ring.replicas(&mailbox, 3).into_iter().collect(), mailbox)
}

/// Alice sends `texts` to Bob; Bob syncs until he has them all, then once more: each must be
/// in his history exactly once.
async fn exchange(alice: &Messenger, bob: &Messenger, texts: &[String]) {
    for t in texts {
        let report = alice.send("bob", t, OnFailure::Fail).await.unwrap();
        assert!(report.stored >= 2, "{t}: stored on {}", report.stored);
    }
    let count = |t: &String| {
        bob.store()
            .history()
            .unwrap()
            .iter()
            .filter(|m| !m.outgoing && &m.text == t)
            .count()
    };
    eventually(
        "Bob to receive every message",
        Duration::from_secs(60),
        || async {
            let _ = bob.sync().await;
            texts.iter().all(|t| count(t) >= 1).then_some(())
        },
    )
    .await;
    // Read every replica once more: copies on several relays still make one message.
    bob.sync().await.unwrap();
    for t in texts {
        assert_eq!(count(t), 1, "{t:?} arrived {} times", count(t));
    }
}

fn texts(tag: &str) -> Vec<String> {
    (0..5).map(|i| format!("{tag} message {i}")).collect()
}

#[test]
fn a_sender_lacking_the_three_relays_nearest_the_mailbox_still_meets_the_owner() {
    let net = net();
    rt().block_on(async {
        let network = net.network.clone();
        // Bob holds the network's consensus, as a fresh client does: no ring change seen.
        let bob = TestUser::new("meet-a-bob", &network).await;
        let bob_key = *bob.address.key();
        let (gone, mailbox) = nearest_three(&network, &bob_key).await;
        let alice = PinnedUser::new("meet-a-alice", &network, None, gone.clone()).await;
        assert!(
            alice.dir.previous(u64::MAX).is_none(),
            "Alice saw no change"
        );
        assert!(bob.messenger.netdir().previous(u64::MAX).is_none());
        // The two views name disjoint replicas.
        let (alice_ring, _) = ring_of(&alice.held());
        let alice_replicas = alice_ring.replicas(&mailbox, 3);
        assert_eq!(alice_replicas.len(), 3);
        assert!(alice_replicas.iter().all(|r| !gone.contains(r)));

        let alice_address = alice.messenger.address();
        alice
            .messenger
            .store()
            .add_contact("bob", &bob.address, 1)
            .unwrap();
        bob.messenger
            .store()
            .add_contact("alice", &alice_address, 1)
            .unwrap();
        // The first message starts the session from Bob's bundle, which Alice reads on
        // relays past her replicas of his mailbox, where Bob published it too.
        exchange(&alice.messenger, &bob.messenger, &texts("stale sender")).await;
    });
}

#[test]
fn an_owner_lacking_the_three_relays_nearest_his_mailbox_still_meets_the_sender() {
    let net = net();
    rt().block_on(async {
        let network = net.network.clone();
        // Bob's identity first, to know which relays his view lacks.
        let data = scratch("meet-b-bob");
        let store = Store::open(&data).unwrap();
        store.create_identity(Some("bob"), 1).unwrap();
        let bob_key = store.identity().unwrap().public();
        let (gone, mailbox) = nearest_three(&network, &bob_key).await;
        drop(store);
        let bob = PinnedUser::open(&data, &network, None, gone.clone()).await;
        assert!(bob.dir.previous(u64::MAX).is_none(), "Bob saw no change");
        // Alice held a consensus without the three, then the network's: the ring changed
        // under her a moment ago.
        let old = without(&consensus(&network).await, &gone);
        let alice = PinnedUser::new("meet-b-alice", &network, Some(old), HashSet::new()).await;
        assert!(
            alice.dir.previous(u64::MAX).is_some(),
            "Alice saw the change"
        );
        // The two views name disjoint replicas.
        let (bob_ring, _) = ring_of(&bob.held());
        let (alice_ring, _) = ring_of(&alice.held());
        let alice_replicas = alice_ring.replicas(&mailbox, 3);
        assert!(alice_replicas.iter().all(|r| gone.contains(r)));
        assert!(bob_ring
            .replicas(&mailbox, 3)
            .iter()
            .all(|r| !gone.contains(r)));

        let bob_address = bob.messenger.address();
        alice
            .messenger
            .store()
            .add_contact("bob", &bob_address, 1)
            .unwrap();
        bob.messenger
            .store()
            .add_contact("alice", &alice.messenger.address(), 1)
            .unwrap();
        exchange(&alice.messenger, &bob.messenger, &texts("stale owner")).await;
    });
}
