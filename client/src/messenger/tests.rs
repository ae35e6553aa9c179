//! The messenger's delivery rules with mailboxes in memory and a fake clock: storing on a
//! majority of replicas, retransmission with doubling waits, acknowledgement, expiry, and
//! which failures are retried. No socket, no circuit; real sessions, store and sealing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;

use shallot_crypto::blind::BlindedKeypair;
use shallot_net::{BuildStep, NetError};
use shallot_proto::dir::RelayEntry;
use shallot_rt::FakeClock;

use super::incoming::Handled;
use super::outgoing::{backoff, OnFailure};
use super::*;
use crate::ids::EnvelopeId;
use crate::mailbox::{Delivered, Isolation, MailboxError, MailboxOps};

/// One mailbox relay, in memory.
#[derive(Default)]
struct FakeRelay {
    mailboxes: HashMap<MailboxId, Vec<Delivered>>,
    bundles: HashMap<MailboxId, Vec<u8>>,
    subscribers: HashMap<MailboxId, Vec<mpsc::UnboundedSender<Delivered>>>,
    deposits: usize,
    down: bool,
    /// Takes requests and never answers (nor opens its window).
    hung: bool,
    /// Answers every request with this refusal.
    refuses: Option<shallot_proto::mailbox::Status>,
}

/// Every mailbox relay of the test network.
#[derive(Default)]
struct FakeNet {
    relays: Mutex<HashMap<RelayId, FakeRelay>>,
    /// Every request made: on which handle (numbered), asked for which isolation, what, and
    /// for which mailbox.
    log: Mutex<Vec<(usize, Isolation, &'static str, MailboxId)>>,
    handles: std::sync::atomic::AtomicUsize,
    /// Every relay a deposit handle was asked for ahead of need, in order.
    prepared: Mutex<Vec<RelayId>>,
}

impl FakeNet {
    fn with<T>(&self, relay: RelayId, f: impl FnOnce(&mut FakeRelay) -> T) -> T {
        f(lock(&self.relays).entry(relay).or_default())
    }

    fn deposits(&self) -> usize {
        lock(&self.relays).values().map(|r| r.deposits).sum()
    }

    fn set_down(&self, relays: &[RelayId], down: bool) {
        for r in relays {
            self.with(*r, |r| r.down = down);
        }
    }
}

struct FakeMailboxes(Arc<FakeNet>);

struct FakeLink {
    net: Arc<FakeNet>,
    relay: RelayId,
    handle: usize,
    isolation: Isolation,
}

fn unreachable() -> MailboxError {
    MailboxError::Circuit(NetError::Timeout(BuildStep::Creating))
}

impl FakeLink {
    async fn up<T>(
        &self,
        op: &'static str,
        mailbox: MailboxId,
        f: impl FnOnce(&mut FakeRelay) -> T,
    ) -> Result<T, MailboxError> {
        lock(&self.net.log).push((self.handle, self.isolation, op, mailbox));
        if self.net.with(self.relay, |r| r.hung) {
            std::future::pending::<()>().await;
        }
        self.net.with(self.relay, |r| {
            if r.down {
                Err(MailboxError::Timeout)
            } else if let Some(status) = r.refuses {
                Err(MailboxError::Refused(status))
            } else {
                Ok(f(r))
            }
        })
    }
}

impl MailboxAccess for FakeMailboxes {
    type Link = FakeLink;

    async fn link(
        &self,
        relay: RelayId,
        isolation: Isolation,
    ) -> Result<Arc<FakeLink>, MailboxError> {
        if self.0.with(relay, |r| r.down) {
            return Err(unreachable());
        }
        let handle = self
            .0
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Arc::new(FakeLink {
            net: self.0.clone(),
            relay,
            handle,
            isolation,
        }))
    }

    async fn open_links(&self) -> usize {
        0
    }

    fn prepare(&self, relay: RelayId) {
        lock(&self.0.prepared).push(relay);
    }
}

impl MailboxOps for FakeLink {
    fn is_open(&self) -> bool {
        true
    }

    async fn deposit(
        &self,
        mailbox: MailboxId,
        envelope: Vec<u8>,
        _: Duration,
    ) -> Result<(), MailboxError> {
        self.up("deposit", mailbox, |r| {
            r.deposits += 1;
            let d = (EnvelopeId::of(&envelope), envelope);
            if let Some(subs) = r.subscribers.get(&mailbox) {
                for s in subs {
                    let _ = s.send(d.clone());
                }
            }
            r.mailboxes.entry(mailbox).or_default().push(d);
        })
        .await
    }

    async fn get_bundle(
        &self,
        mailbox: MailboxId,
        _: Duration,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        self.up("get-bundle", mailbox, |r| r.bundles.get(&mailbox).cloned())
            .await
    }

    async fn put_bundle(
        &self,
        key: &BlindedKeypair,
        _: u64,
        bundle: Vec<u8>,
        _: Duration,
    ) -> Result<(), MailboxError> {
        let mailbox = MailboxId(key.public().to_bytes());
        self.up("put-bundle", mailbox, |r| {
            r.bundles.insert(mailbox, bundle);
        })
        .await
    }

    async fn subscribe(
        &self,
        key: &BlindedKeypair,
        _: Duration,
    ) -> Result<(mpsc::UnboundedReceiver<Delivered>, u32), MailboxError> {
        let mailbox = MailboxId(key.public().to_bytes());
        self.up("subscribe", mailbox, |r| {
            let (tx, rx) = mpsc::unbounded_channel();
            let waiting = r.mailboxes.get(&mailbox).cloned().unwrap_or_default();
            for d in &waiting {
                let _ = tx.send(d.clone());
            }
            r.subscribers.entry(mailbox).or_default().push(tx);
            (rx, waiting.len() as u32)
        })
        .await
    }

    async fn fetch(
        &self,
        key: &BlindedKeypair,
        _: Duration,
    ) -> Result<Vec<Delivered>, MailboxError> {
        let mailbox = MailboxId(key.public().to_bytes());
        self.up("fetch", mailbox, |r| {
            r.mailboxes.get(&mailbox).cloned().unwrap_or_default()
        })
        .await
    }

    async fn ack(
        &self,
        key: &BlindedKeypair,
        ids: Vec<EnvelopeId>,
        _: Duration,
    ) -> Result<u32, MailboxError> {
        let mailbox = MailboxId(key.public().to_bytes());
        self.up("ack", mailbox, |r| {
            let held = r.mailboxes.entry(mailbox).or_default();
            let before = held.len();
            held.retain(|(id, _)| !ids.contains(id));
            (before - held.len()) as u32
        })
        .await
    }
}

/// 2023-11-15 00:00 UTC, the start of a one-day epoch, plus a little.
const T0: u64 = 1_700_006_400 + 100;

/// A network of six mailbox relays in memory, one clock, and the users on it.
struct World {
    net: Arc<FakeNet>,
    clock: Arc<FakeClock>,
    relays: Vec<RelayEntry>,
    config: MessengerConfig,
    dirs: Vec<PathBuf>,
}

impl Drop for World {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

type User = Arc<Messenger<FakeMailboxes>>;

impl World {
    fn new() -> World {
        World {
            net: Arc::new(FakeNet::default()),
            clock: Arc::new(FakeClock::new(T0)),
            relays: shallot_net::testing::relays(6),
            config: MessengerConfig {
                retransmit_after: Duration::from_secs(300),
                retransmit_max: Duration::from_secs(1200),
                message_lifetime: Duration::from_secs(6 * 3600),
                ..MessengerConfig::default()
            },
            dirs: Vec::new(),
        }
    }

    fn user(&mut self, name: &str) -> User {
        let relays = self.relays.clone();
        self.user_seeing(name, relays, None)
    }

    /// A user whose consensus lists `relays`, and which replaced one listing `previous`.
    fn user_seeing(
        &mut self,
        name: &str,
        relays: Vec<RelayEntry>,
        previous: Option<Vec<RelayEntry>>,
    ) -> User {
        let store = self.store(name);
        self.user_of(store, relays, previous)
    }

    /// A store holding a new identity.
    fn store(&mut self, name: &str) -> Store {
        let dir = shallot_rt::scratch::path(name);
        self.dirs.push(dir.clone());
        let store = Store::open(&dir).unwrap();
        store.create_identity(Some(name), T0).unwrap();
        store
    }

    /// The user of `store`, whose consensus lists `relays`, and which replaced one listing
    /// `previous`.
    fn user_of(
        &mut self,
        store: Store,
        relays: Vec<RelayEntry>,
        previous: Option<Vec<RelayEntry>>,
    ) -> User {
        let consensus =
            |relays| shallot_net::testing::consensus(relays, T0 - 100, T0 + 3600, T0 + 30 * 86_400);
        let netdir = match previous {
            Some(old) => {
                let dir = NetDir::preloaded(consensus(old), self.clock.clone());
                dir.install(consensus(relays));
                dir
            }
            None => NetDir::preloaded(consensus(relays), self.clock.clone()),
        };
        let netdir = Arc::new(netdir);
        Messenger::with_parts(
            store,
            netdir,
            FakeMailboxes(self.net.clone()),
            self.clock.clone(),
            self.config.clone(),
        )
        .unwrap()
    }

    /// Alice and Bob, contacts of each other, Bob's bundle published.
    async fn pair(&mut self) -> (User, User) {
        let alice = self.user("alice");
        let bob = self.user("bob");
        alice
            .store()
            .add_contact("bob", &bob.address(), T0)
            .unwrap();
        bob.store()
            .add_contact("alice", &alice.address(), T0)
            .unwrap();
        bob.ensure_bundle_published().await.unwrap();
        alice.ensure_bundle_published().await.unwrap();
        (alice, bob)
    }

    /// The relays that keep `user`'s mailbox now.
    fn replicas_of(&self, user: &User) -> Vec<RelayId> {
        let consensus = user.netdir().consensus().unwrap();
        let (_, epoch) = user.epoch_now(&consensus);
        user.placement(&consensus, &user.me.public(), epoch)
            .unwrap()
            .1
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(secs);
    }
}

fn state(user: &User, id: &MessageId) -> OutState {
    user.store().message(id).unwrap().unwrap().state.unwrap()
}

// Storing.

#[tokio::test]
async fn a_message_stored_on_every_replica_is_sent_and_scheduled_for_retransmission() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    let before = w.net.deposits();
    let report = alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    assert_eq!((report.stored, report.wanted), (3, 3));
    assert_eq!(w.net.deposits() - before, 3);
    assert_eq!(state(&alice, &report.id), OutState::Stored(3));
    // Bob's replicas hold it, once each.
    for r in w.replicas_of(&bob) {
        assert_eq!(w.net.with(r, |r| r.mailboxes.values().flatten().count()), 1);
    }
}

#[tokio::test]
async fn typing_to_a_contact_readies_a_circuit_to_each_replica_the_message_will_use() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    alice.composing("bob").unwrap();
    let mut asked = lock(&w.net.prepared).clone();
    let mut replicas = w.replicas_of(&bob);
    asked.sort();
    replicas.sort();
    assert_eq!(asked, replicas);
    assert!(matches!(
        alice.composing("nobody"),
        Err(MessengerError::Store(
            crate::store::StoreError::NoSuchContact(_)
        ))
    ));
    assert_eq!(
        lock(&w.net.prepared).len(),
        3,
        "nothing asked for a name that is no contact"
    );
}

/// Waits (a few seconds at most) until a key taken while typing to `name` is ready.
async fn key_ready(user: &User, name: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if user.key_ready_for(name).unwrap() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

#[tokio::test]
async fn a_message_typed_first_leaves_with_the_key_taken_while_typing() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    // Before any session there is no key to take: typing readies circuits only.
    alice.composing("bob").unwrap();
    alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    assert!(!alice.key_ready_for("bob").unwrap());
    alice.composing("bob").unwrap();
    assert!(key_ready(&alice, "bob").await);
    let report = alice.send("bob", "typed", OnFailure::Fail).await.unwrap();
    assert_eq!((report.stored, report.wanted), (3, 3));
    assert_eq!(state(&alice, &report.id), OutState::Stored(3));
    assert!(
        !alice.key_ready_for("bob").unwrap(),
        "the key was used by that message, and only once"
    );
    assert_eq!(bob.sync().await.unwrap(), 2);
    let texts: Vec<String> = bob
        .store()
        .history()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["hello", "typed"]);
}

/// The envelopes waiting for `user` on its first replica (which may keep others' mailboxes
/// too).
fn waiting_for(w: &World, user: &User) -> Vec<Vec<u8>> {
    let replica = w.replicas_of(user)[0];
    w.net.with(replica, |r| {
        r.mailboxes
            .values()
            .flatten()
            .filter(|(_, envelope)| shallot_crypto::sealed::open(&user.me, envelope).is_ok())
            .map(|(_, envelope)| envelope.clone())
            .collect()
    })
}

/// The ratchet headers of the envelopes waiting for `user` on its first replica.
fn waiting_headers(w: &World, user: &User) -> Vec<shallot_crypto::ratchet::Header> {
    waiting_for(w, user)
        .iter()
        .map(|envelope| {
            let inner = shallot_crypto::sealed::open(&user.me, envelope).unwrap();
            crate::e2e::wire::Inner::decode(&inner).unwrap().header
        })
        .collect()
}

/// Alice and Bob after Alice's "hello" was read by Bob and Alice began typing her next
/// message, its key ready; the header "hello" carried.
async fn hello_then_typing(w: &mut World) -> (User, User, shallot_crypto::ratchet::Header) {
    let (alice, bob) = w.pair().await;
    alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    let first = waiting_headers(w, &bob);
    assert_eq!(bob.sync().await.unwrap(), 1);
    alice.composing("bob").unwrap();
    assert!(key_ready(&alice, "bob").await);
    (alice, bob, first[0])
}

/// The header of the message key `user` holds ready for `peer`.
fn ready_header(user: &User, peer: &User) -> shallot_crypto::ratchet::Header {
    user.ready_keys
        .peek(peer.me.public().as_bytes(), |k| k.header())
        .expect("a key is ready")
}

#[tokio::test]
async fn a_key_taken_before_the_peer_answered_is_not_used_but_taken_again() {
    let mut w = World::new();
    let (alice, bob, first) = hello_then_typing(&mut w).await;
    let stale = ready_header(&alice, &bob);
    // Bob answers while Alice types: his message takes a ratchet step, which the key taken
    // before it predates. She is still writing to him, so a new key is taken, with the step
    // his message calls for, as soon as his message is recorded.
    bob.send("alice", "hi", OnFailure::Fail).await.unwrap();
    assert_eq!(alice.fetch_waiting().await.unwrap(), 1);
    assert!(key_ready(&alice, "bob").await, "a key is taken again");
    let again = ready_header(&alice, &bob);
    assert_ne!(again.dh, first.dh, "on a new ratchet key");
    assert_ne!(again.dh, stale.dh);
    // Her acknowledgement of his message is sealed after that take, on the same chain: the
    // key stays good.
    alice.send_acks().await.unwrap();
    assert!(
        waiting_headers(&w, &bob)
            .iter()
            .any(|h| h.dh == again.dh && h.n == again.n + 1),
        "the acknowledgement took the next key of that chain"
    );
    assert!(alice.key_ready_for("bob").unwrap());
    alice.send("bob", "after", OnFailure::Fail).await.unwrap();
    let sent = waiting_headers(&w, &bob);
    assert!(
        sent.contains(&again),
        "the message used the key taken again: {sent:?} against {again:?}"
    );
    assert!(!sent.contains(&stale), "never the stale one");
    assert_eq!(bob.sync().await.unwrap(), 1);
}

#[tokio::test]
async fn a_message_without_a_ratchet_step_leaves_the_key_in_place() {
    let mut w = World::new();
    let (alice, bob, _) = hello_then_typing(&mut w).await;
    bob.send("alice", "hi", OnFailure::Fail).await.unwrap();
    assert_eq!(alice.sync().await.unwrap(), 1);
    assert!(key_ready(&alice, "bob").await);
    let ready = ready_header(&alice, &bob);
    // Bob writes again before Alice answers: the same ratchet key, no step.
    bob.send("alice", "are you there?", OnFailure::Fail)
        .await
        .unwrap();
    assert_eq!(alice.sync().await.unwrap(), 1);
    assert_eq!(ready_header(&alice, &bob), ready, "the key was not dropped");
    alice.send("bob", "yes", OnFailure::Fail).await.unwrap();
    assert!(
        waiting_headers(&w, &bob).contains(&ready),
        "and it was used"
    );
    assert_eq!(bob.sync().await.unwrap(), 1);
}

#[tokio::test]
async fn a_user_still_typing_gets_a_key_again_past_the_first_minute() {
    let mut w = World::new();
    let (alice, bob, _) = hello_then_typing(&mut w).await;
    // She is still at it: the chat reports typing again 45 s later (the key is ready, so
    // nothing is taken, but the report counts), and Bob's step comes 25 s after that.
    w.advance(45);
    alice.composing("bob").unwrap();
    w.advance(25);
    bob.send("alice", "hi", OnFailure::Fail).await.unwrap();
    assert_eq!(alice.sync().await.unwrap(), 1);
    assert!(key_ready(&alice, "bob").await, "a key is taken again");
}

#[tokio::test]
async fn a_key_is_not_used_once_the_session_was_put_back_from_before_it() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    assert_eq!(bob.sync().await.unwrap(), 1);
    let bob_key = bob.me.public().to_bytes();
    let before = alice.store().sessions(&bob_key).unwrap().remove(0);
    alice.composing("bob").unwrap();
    assert!(key_ready(&alice, "bob").await);
    let ready = ready_header(&alice, &bob);
    // The store is put back to before the take (a restored backup): the session gives the
    // key's number again, so the key must not be used as well.
    alice.store().save_session(&bob_key, &before, T0).unwrap();
    alice.send("bob", "after", OnFailure::Fail).await.unwrap();
    alice.send("bob", "again", OnFailure::Fail).await.unwrap();
    let sent = waiting_headers(&w, &bob);
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter().any(|h| (h.dh, h.n) == (ready.dh, ready.n)),
        "the session put back gave the key's number again"
    );
    let mut numbers: Vec<_> = sent.iter().map(|h| (h.dh, h.n)).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), sent.len(), "no message key given twice");
    assert_eq!(bob.sync().await.unwrap(), 2);
}

#[tokio::test]
async fn a_key_is_not_used_once_another_session_is_first_in_line() {
    let mut w = World::new();
    let (alice, bob, _) = hello_then_typing(&mut w).await;
    let ready = ready_header(&alice, &bob);
    // Another session with Bob becomes the one to send with (here a copy of the state under
    // another id, used later): its chain is the same, but the key came from another session.
    let bob_key = bob.me.public().to_bytes();
    let mut other = alice.store().sessions(&bob_key).unwrap().remove(0);
    other.sid = [0xee; 32];
    alice
        .store()
        .save_session(&bob_key, &other, T0 + 10)
        .unwrap();
    alice.send("bob", "after", OnFailure::Fail).await.unwrap();
    assert!(
        !waiting_headers(&w, &bob).contains(&ready),
        "the key of the session no longer first was not used"
    );
}

#[tokio::test]
async fn no_key_is_taken_again_long_after_the_user_last_typed() {
    let mut w = World::new();
    let (alice, bob, _) = hello_then_typing(&mut w).await;
    // The draft was left a minute ago; Bob's message drops the key and none is taken.
    w.advance(super::incoming::RETAKE_WITHIN);
    bob.send("alice", "hi", OnFailure::Fail).await.unwrap();
    assert_eq!(alice.sync().await.unwrap(), 1);
    assert!(!alice.key_ready_for("bob").unwrap());
    // A take would have claimed the slot before `sync` returned.
    assert!(
        alice
            .ready_keys
            .begin(bob.me.public().as_bytes(), T0)
            .is_some(),
        "no key was being taken"
    );
}

#[tokio::test]
async fn a_key_is_not_used_once_another_process_opened_the_peers_answer() {
    let mut w = World::new();
    let (alice, bob, first) = hello_then_typing(&mut w).await;
    // Bob answers, and Alice's command line (another handle on her store) opens it: her chat
    // never sees it, and still holds the key it took before.
    bob.send("alice", "hi", OnFailure::Fail).await.unwrap();
    let answer = waiting_for(&w, &alice).pop().unwrap();
    let other = Store::open(alice.store().dir()).unwrap();
    crate::e2e::session::open(&other, &alice.me, &answer, T0).unwrap();
    assert!(alice.key_ready_for("bob").unwrap());
    alice.send("bob", "after", OnFailure::Fail).await.unwrap();
    let after = waiting_headers(&w, &bob);
    assert_ne!(
        after[0].dh, first.dh,
        "the answer was sent on a new ratchet key"
    );
    assert_eq!(bob.sync().await.unwrap(), 1);
}

#[tokio::test]
async fn one_replica_down_still_counts_as_sent() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    let replicas = w.replicas_of(&bob);
    w.net.set_down(&replicas[..1], true);
    let report = alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    assert_eq!((report.stored, report.wanted), (2, 3));
    assert_eq!(state(&alice, &report.id), OutState::Stored(2));
}

#[tokio::test]
async fn one_replica_alone_is_not_enough_and_the_error_names_why() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    // A first message so that Alice has a session: no bundle is needed after.
    alice.send("bob", "first", OnFailure::Fail).await.unwrap();
    let replicas = w.replicas_of(&bob);
    w.net.set_down(&replicas[..2], true);
    let err = alice
        .send("bob", "second", OnFailure::Fail)
        .await
        .unwrap_err();
    let MessengerError::NotStored(outcome) = &err else {
        panic!("{err}")
    };
    assert_eq!((outcome.stored, outcome.wanted), (1, 3));
    let failed: Vec<RelayId> = outcome.failures.iter().map(|(r, _)| *r).collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|r| replicas[..2].contains(r)));
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .starts_with("message stored on only 1 of 3 mailboxes"),
        "{err}"
    );
}

#[tokio::test]
async fn empty_and_overlong_messages_are_refused_before_anything_is_stored() {
    let mut w = World::new();
    let (alice, _bob) = w.pair().await;
    let before = w.net.deposits();
    let empty = alice.send("bob", "  ", OnFailure::Retry).await.unwrap_err();
    assert!(matches!(empty, MessengerError::EmptyText));
    let long = "x".repeat(crate::e2e::wire::MAX_TEXT_LEN + 1);
    let err = alice
        .send("bob", &long, OnFailure::Retry)
        .await
        .unwrap_err();
    assert!(matches!(err, MessengerError::TextTooLong { .. }));
    assert!(!err.is_retryable());
    assert_eq!(w.net.deposits(), before);
    assert!(alice.store().history().unwrap().is_empty());
}

// Retransmission and backoff.

#[tokio::test]
async fn an_unacknowledged_message_is_sent_again_after_doubling_waits_up_to_the_maximum() {
    let mut w = World::new();
    let (alice, _bob) = w.pair().await;
    alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    let mut deposits = w.net.deposits();
    // 300 s, then 600 s, then the 1200 s maximum, twice.
    for wait in [300, 600, 1200, 1200] {
        w.advance(wait - 1);
        assert_eq!(
            alice.retransmit_due().await.unwrap(),
            0,
            "not yet, at {wait} - 1"
        );
        assert_eq!(w.net.deposits(), deposits);
        w.advance(1);
        assert_eq!(alice.retransmit_due().await.unwrap(), 1, "due after {wait}");
        assert_eq!(w.net.deposits(), deposits + 3, "every replica again");
        deposits = w.net.deposits();
    }
}

#[tokio::test]
async fn a_retransmission_reaches_the_recipient_once() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    w.advance(300);
    alice.retransmit_due().await.unwrap();
    // Six copies wait on Bob's replicas: two transmissions, three replicas each.
    assert_eq!(bob.sync().await.unwrap(), 1);
    let history = bob.store().history().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].text, "hello");
}

#[tokio::test]
async fn envelopes_handled_as_one_batch_are_each_judged_and_recorded_together() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    bob.set_events(tx);
    alice.send("bob", "one", OnFailure::Fail).await.unwrap();
    alice.send("bob", "two", OnFailure::Fail).await.unwrap();
    // Every copy on every replica of Bob's mailbox, in the order deposited per replica.
    let copies: Vec<Delivered> = w
        .replicas_of(&bob)
        .into_iter()
        .flat_map(|r| {
            w.net.with(r, |r| {
                r.mailboxes.values().flatten().cloned().collect::<Vec<_>>()
            })
        })
        .collect();
    assert_eq!(copies.len(), 6, "two messages, three replicas");
    let forged = (EnvelopeId([9; 16]), b"not an envelope".to_vec());
    let mut batch = copies.clone();
    batch.push(forged);
    let handled = bob.handle_arrived(batch).await.unwrap();
    let new = handled
        .iter()
        .filter(|h| **h == Handled::NewMessage)
        .count();
    let dup = handled.iter().filter(|h| **h == Handled::Duplicate).count();
    assert_eq!((new, dup), (2, 4), "{handled:?}");
    assert_eq!(handled.last(), Some(&Handled::Rejected));
    let mut texts: Vec<String> = bob
        .store()
        .history()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    texts.sort();
    assert_eq!(texts, ["one", "two"]);
    let mut shown = 0;
    while let Ok(e) = events.try_recv() {
        shown += usize::from(matches!(e, MessengerEvent::Message(m) if !m.outgoing));
    }
    assert_eq!(shown, 2, "each new message shown once");
    // A second batch of the same copies records nothing new.
    let again = bob.handle_arrived(copies).await.unwrap();
    assert!(again.iter().all(|h| *h == Handled::Duplicate), "{again:?}");
}

#[tokio::test]
async fn an_acknowledged_message_is_delivered_and_not_sent_again() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    alice.set_events(tx);
    let report = alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    // Bob receives it and acknowledges; Alice reads the acknowledgement.
    assert_eq!(bob.sync().await.unwrap(), 1);
    alice.sync().await.unwrap();
    assert_eq!(state(&alice, &report.id), OutState::Delivered);
    let mut delivered = false;
    while let Ok(e) = events.try_recv() {
        if let MessengerEvent::Delivery { id, state } = e {
            delivered |= id == report.id && state == OutState::Delivered;
        }
    }
    assert!(delivered, "the listener was told");
    let deposits = w.net.deposits();
    w.advance(3600);
    assert_eq!(alice.retransmit_due().await.unwrap(), 0);
    assert_eq!(w.net.deposits(), deposits);
}

#[tokio::test]
async fn a_message_unacknowledged_at_the_end_of_its_lifetime_is_reported_failed() {
    let mut w = World::new();
    let (alice, _bob) = w.pair().await;
    let report = alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    // Retransmissions until the lifetime (six hours) runs out.
    let mut now = 0;
    while now < 6 * 3600 - 1200 {
        w.advance(1200);
        now += 1200;
        alice.retransmit_due().await.unwrap();
        assert!(matches!(state(&alice, &report.id), OutState::Stored(_)));
    }
    w.advance(6 * 3600 - now);
    assert_eq!(alice.retransmit_due().await.unwrap(), 1);
    assert_eq!(
        state(&alice, &report.id),
        OutState::Failed("not acknowledged before it expired".into())
    );
    let deposits = w.net.deposits();
    w.advance(86_400);
    assert_eq!(alice.retransmit_due().await.unwrap(), 0, "no more attempts");
    assert_eq!(w.net.deposits(), deposits);
}

#[tokio::test]
async fn a_stored_message_stays_stored_when_a_retransmission_fails() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    let report = alice.send("bob", "hello", OnFailure::Retry).await.unwrap();
    w.net.set_down(&w.replicas_of(&bob), true);
    w.advance(300);
    assert_eq!(alice.retransmit_due().await.unwrap(), 1);
    assert_eq!(state(&alice, &report.id), OutState::Stored(3));
    // And it is tried again on the backoff schedule, not given up.
    w.advance(599);
    assert_eq!(alice.retransmit_due().await.unwrap(), 0);
    w.advance(1);
    assert_eq!(alice.retransmit_due().await.unwrap(), 1);
}

// Which failures are retried.

#[tokio::test]
async fn a_message_no_replica_stored_is_retried_soon_then_reported_failed() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    alice.send("bob", "first", OnFailure::Retry).await.unwrap();
    w.net.set_down(&w.replicas_of(&bob), true);
    let err = alice
        .send("bob", "second", OnFailure::Retry)
        .await
        .unwrap_err();
    assert!(matches!(err, MessengerError::NotStored(_)), "{err}");
    let id = alice
        .store()
        .history()
        .unwrap()
        .into_iter()
        .find(|m| m.text == "second")
        .unwrap()
        .id;
    assert_eq!(state(&alice, &id), OutState::Sending);
    // Tried again 30 s later, twice, then given up.
    w.advance(29);
    assert_eq!(alice.retransmit_due().await.unwrap(), 0);
    w.advance(1);
    assert_eq!(alice.retransmit_due().await.unwrap(), 1);
    assert_eq!(state(&alice, &id), OutState::Sending);
    w.advance(30);
    assert_eq!(alice.retransmit_due().await.unwrap(), 1);
    assert!(matches!(state(&alice, &id), OutState::Failed(_)));
}

#[tokio::test]
async fn from_the_command_line_a_message_not_stored_fails_at_once() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    alice.send("bob", "first", OnFailure::Fail).await.unwrap();
    w.net.set_down(&w.replicas_of(&bob), true);
    assert!(alice.send("bob", "second", OnFailure::Fail).await.is_err());
    let second = alice
        .store()
        .history()
        .unwrap()
        .into_iter()
        .find(|m| m.text == "second")
        .unwrap();
    assert!(matches!(second.state, Some(OutState::Failed(_))));
}

#[tokio::test]
async fn a_bundle_that_does_not_open_fails_the_message_at_once_even_in_the_chat() {
    let mut w = World::new();
    let alice = w.user("alice");
    let bob = w.user("bob");
    alice
        .store()
        .add_contact("bob", &bob.address(), T0)
        .unwrap();
    // Every replica of Bob's mailbox holds garbage where his bundle should be.
    let consensus = bob.netdir().consensus().unwrap();
    let (_, epoch) = bob.epoch_now(&consensus);
    let (mailbox, replicas) = bob.placement(&consensus, &bob.me.public(), epoch).unwrap();
    for r in replicas {
        w.net
            .with(r, |r| r.bundles.insert(mailbox, b"not a bundle".to_vec()));
    }
    let err = alice.send("bob", "hi", OnFailure::Retry).await.unwrap_err();
    assert!(
        matches!(
            err,
            MessengerError::NoBundle {
                reason: BundleError::Unreadable(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());
    let msg = &alice.store().history().unwrap()[0];
    assert!(
        matches!(msg.state, Some(OutState::Failed(_))),
        "not retried"
    );
}

#[tokio::test]
async fn a_contact_without_a_bundle_yet_is_tried_again() {
    let mut w = World::new();
    let alice = w.user("alice");
    let bob = w.user("bob");
    alice
        .store()
        .add_contact("bob", &bob.address(), T0)
        .unwrap();
    let err = alice.send("bob", "hi", OnFailure::Retry).await.unwrap_err();
    assert!(
        matches!(
            err,
            MessengerError::NoBundle {
                reason: BundleError::Missing,
                ..
            }
        ),
        "{err}"
    );
    let id = alice.store().history().unwrap()[0].id;
    assert_eq!(state(&alice, &id), OutState::Sending);
    // Bob comes online and publishes; the retry delivers.
    bob.ensure_bundle_published().await.unwrap();
    w.advance(30);
    assert_eq!(alice.retransmit_due().await.unwrap(), 1);
    assert_eq!(state(&alice, &id), OutState::Stored(3));
}

#[test]
fn the_wait_doubles_from_its_base_to_its_maximum() {
    let (base, max) = (Duration::from_secs(300), Duration::from_secs(6 * 3600));
    let waits: Vec<u64> = (0..8).map(|a| backoff(base, max, a).as_secs()).collect();
    assert_eq!(waits, [300, 600, 1200, 2400, 4800, 9600, 19200, 21600]);
    assert_eq!(backoff(base, max, u32::MAX), max, "no overflow");
}

// Strangers.

#[tokio::test]
async fn a_stranger_flood_stays_within_the_limits_and_leaves_contacts_alone() {
    let mut w = World::new();
    w.config.strangers = crate::store::strangers::StrangerLimits {
        max_strangers: 3,
        max_messages: 5,
        max_bytes: 10_000,
    };
    let (alice, bob) = w.pair().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    bob.set_events(tx);
    for n in 0..3 {
        alice
            .send("bob", &format!("friend {n}"), OnFailure::Fail)
            .await
            .unwrap();
    }
    let mut strangers = Vec::new();
    for i in 0..8 {
        let s = w.user(&format!("stranger{i}"));
        s.store().add_contact("bob", &bob.address(), T0).unwrap();
        for n in 0..2 {
            s.send("bob", &format!("buy {i}.{n}"), OnFailure::Fail)
                .await
                .unwrap();
        }
        strangers.push(s);
    }
    bob.sync().await.unwrap();
    let store = bob.store();
    let history = store.history().unwrap();
    let alice_key = *alice.address().key().as_bytes();
    let from_alice: Vec<_> = history.iter().filter(|m| m.peer == alice_key).collect();
    assert_eq!(from_alice.len(), 3, "a contact's message was dropped");
    let from_strangers = history.len() - from_alice.len();
    assert!(
        (1..=5).contains(&from_strangers),
        "{from_strangers} messages from strangers kept"
    );
    assert_eq!(store.requests().unwrap().len(), 3);
    let with_sessions = strangers
        .iter()
        .filter(|s| {
            !store
                .sessions(s.address().key().as_bytes())
                .unwrap()
                .is_empty()
        })
        .count();
    assert_eq!(with_sessions, 3, "only the strangers kept keep a session");
    assert!(!store.sessions(&alice_key).unwrap().is_empty());
    drop(store);
    let mut told = false;
    while let Ok(e) = events.try_recv() {
        if let MessengerEvent::Notice(text) = e {
            told |= text.contains("not your contacts");
        }
    }
    assert!(told, "the user was not told");
    assert!(bob.store().take_dropped_from_strangers().unwrap() > 0);
}

// Circuit isolation (`docs/spec.md` §9.3).

#[tokio::test]
async fn no_handle_carries_two_mailboxes_or_an_owner_request_beside_a_deposit() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    alice.send("bob", "one", OnFailure::Fail).await.unwrap();
    alice.send("bob", "two", OnFailure::Fail).await.unwrap();
    bob.sync().await.unwrap();
    alice.sync().await.unwrap();
    w.advance(86_400);
    bob.ensure_bundle_published().await.unwrap();
    bob.sync().await.unwrap();
    let log = lock(&w.net.log).clone();
    let owner_ops = ["subscribe", "fetch", "ack"];
    let mut by_handle: HashMap<usize, Vec<(Isolation, &str, MailboxId)>> = HashMap::new();
    for (h, iso, op, mailbox) in &log {
        by_handle.entry(*h).or_default().push((*iso, op, *mailbox));
    }
    let (mut owner, mut oneshot, mut deposits) = (0, 0, 0);
    for (h, reqs) in &by_handle {
        let mailboxes: std::collections::HashSet<_> = reqs.iter().map(|r| r.2).collect();
        assert_eq!(
            mailboxes.len(),
            1,
            "handle {h} carried two mailboxes: {reqs:?}"
        );
        match reqs[0].0 {
            Isolation::Owner(m) => {
                owner += 1;
                assert!(
                    reqs.iter()
                        .all(|(_, op, mb)| owner_ops.contains(op) && *mb == m),
                    "owner handle {h} carried {reqs:?}"
                );
            }
            Isolation::OneShot => {
                oneshot += 1;
                assert_eq!(reqs.len(), 1, "a one-shot handle reused: {reqs:?}");
                assert!(!owner_ops.contains(&reqs[0].1), "{reqs:?}");
                assert_ne!(reqs[0].1, "deposit", "a deposit must ask for its own class");
            }
            Isolation::Deposit => {
                deposits += 1;
                assert_eq!(reqs.len(), 1, "a deposit handle reused: {reqs:?}");
                assert_eq!(reqs[0].1, "deposit", "{reqs:?}");
            }
        }
    }
    // Both kinds were exercised: deposits, bundles, fetches and acks.
    assert!(
        owner > 0 && oneshot > 0 && deposits > 0,
        "{owner} {oneshot} {deposits}"
    );
    let ops: std::collections::HashSet<&str> = log.iter().map(|l| l.2).collect();
    for op in ["deposit", "get-bundle", "put-bundle", "fetch", "ack"] {
        assert!(ops.contains(op), "{op} never made");
    }
}

// One bad relay costs only its own answer.

/// The first replica of `user`'s mailbox stops answering: it takes requests and is silent.
fn hang_first_replica(w: &World, user: &User) -> RelayId {
    let hung = w.replicas_of(user)[0];
    w.net.with(hung, |r| r.hung = true);
    hung
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_never_answers_costs_only_its_own_answer() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    let hung = hang_first_replica(&w, &bob);
    let report = alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    assert_eq!(
        (report.stored, report.wanted),
        (2, 3),
        "stored on the others"
    );
    assert_eq!(
        state(&alice, &report.id),
        OutState::Stored(2),
        "the user sees 2"
    );
    // Bob reads the other replicas within the deadline, and gets it.
    assert_eq!(bob.fetch_waiting().await.unwrap(), 1);
    // Again with the session in place: still the truth, 2 of 3, and nothing on the silent
    // relay (its requests were given up at the deadline, not taken as stored).
    let again = alice.send("bob", "again", OnFailure::Fail).await.unwrap();
    assert_eq!((again.stored, again.wanted), (2, 3));
    assert!(w.net.with(hung, |r| r.mailboxes.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn with_a_silent_replica_each_periodic_task_carries_on() {
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    hang_first_replica(&w, &bob);
    // And one of Alice's that does not keep Bob's mailbox, if any.
    let bobs = w.replicas_of(&bob);
    if let Some(r) = w
        .replicas_of(&alice)
        .into_iter()
        .find(|r| !bobs.contains(r))
    {
        w.net.with(r, |r| r.hung = true);
    }
    let report = alice.send("bob", "hello", OnFailure::Retry).await.unwrap();
    assert_eq!(report.stored, 2);
    let every = Duration::from_secs(10);
    let _bob_tasks = bob.spawn_periodic(every, |_, _| {});
    let _alice_tasks = alice.spawn_periodic(every, |_, _| {});
    // Bob's fetch task reads it, his ack task acknowledges, Alice's fetch task sees the
    // acknowledgement: each through the silent relays' deadlines, none waiting on another.
    let mut waited = Duration::ZERO;
    while state(&alice, &report.id) != OutState::Delivered {
        assert!(waited < Duration::from_secs(3600), "not delivered");
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += Duration::from_secs(1);
    }
    assert_eq!(bob.store().history().unwrap().len(), 1);
    // Fetching runs every 60 s and each round waits the replica deadline (60 s) on a silent
    // relay at most once: Bob's first rounds, his acknowledgement and Alice's next rounds fit
    // in a few of them, not an unbounded wait.
    assert!(waited < 10 * w.config.replica_timeout, "{waited:?}");
}

/// The network panel's "whether each answers" is what the messenger last heard from each of
/// its replicas: one answers, one refuses, one is silent, and each is reported as such.
#[tokio::test(start_paused = true)]
async fn each_replica_is_reported_as_it_last_answered() {
    let mut w = World::new();
    let bob = w.user("bob");
    let replicas = w.replicas_of(&bob);
    for r in &replicas {
        assert_eq!(bob.last_answer(r), None, "never asked yet");
    }
    let (good, refusing, silent) = (replicas[0], replicas[1], replicas[2]);
    w.net.with(refusing, |r| {
        r.refuses = Some(shallot_proto::mailbox::Status::Unavailable)
    });
    w.net.with(silent, |r| r.hung = true);
    w.advance(5);
    bob.fetch_waiting().await.unwrap();
    let at = T0 + 5;
    assert_eq!(
        bob.last_answer(&good),
        Some(answers::LastAnswer {
            answer: answers::ReplicaAnswer::Answered,
            at
        })
    );
    let refused = bob.last_answer(&refusing).unwrap();
    assert!(
        matches!(&refused.answer, answers::ReplicaAnswer::Refused(why) if !why.is_empty()),
        "{refused:?}"
    );
    let silence = bob.last_answer(&silent).unwrap();
    assert!(
        matches!(silence.answer, answers::ReplicaAnswer::NoAnswer(_)),
        "{silence:?}"
    );
    // The refusing relay recovers: the next pass says so.
    w.net.with(refusing, |r| r.refuses = None);
    w.advance(60);
    bob.fetch_waiting().await.unwrap();
    let now = bob.last_answer(&refusing).unwrap();
    assert_eq!(
        (now.answer, now.at),
        (answers::ReplicaAnswer::Answered, T0 + 65)
    );
}

// Placement when sender and owner hold different consensuses (`docs/spec.md` §9.2).

/// A world of twelve mailbox relays; `bob`'s ring for today, nearest first.
fn ring_world() -> (World, Vec<RelayEntry>) {
    let mut w = World::new();
    w.relays = shallot_net::testing::relays(12);
    let all = w.relays.clone();
    (w, all)
}

fn without(relays: &[RelayEntry], gone: &[RelayId]) -> Vec<RelayEntry> {
    relays
        .iter()
        .filter(|r| !gone.contains(&r.id))
        .cloned()
        .collect()
}

/// The ring order (nearest first) of the mailbox for today of the identity in `store`, by a
/// consensus of `relays`.
fn ring_order(store: &Store, relays: &[RelayEntry]) -> Vec<RelayId> {
    let c = shallot_net::testing::consensus(relays.to_vec(), 0, 1, 2);
    let epoch = ring::epoch_of(T0, c.params.epoch_secs);
    let key = store.identity().unwrap().public();
    let mailbox = ring::mailbox_id(&key, epoch, c.params.epoch_secs).unwrap();
    ring::Ring::of_consensus(&c, epoch).replicas(&mailbox, relays.len())
}

async fn meet(alice: &User, bob: &User) {
    alice
        .store()
        .add_contact("bob", &bob.address(), T0)
        .unwrap();
    bob.store()
        .add_contact("alice", &alice.address(), T0)
        .unwrap();
    bob.ensure_bundle_published().await.unwrap();
    let report = alice.send("bob", "hello", OnFailure::Fail).await.unwrap();
    assert!(report.stored >= 2);
    assert_eq!(bob.fetch_waiting().await.unwrap(), 1, "bob got it");
    assert_eq!(bob.store().history().unwrap()[0].text, "hello");
}

#[tokio::test]
async fn an_owner_whose_consensus_has_three_new_relays_still_meets_a_sender_without_them() {
    let (mut w, all) = ring_world();
    let bob = w.store("bob");
    // The three relays nearest Bob's mailbox are new: Alice's consensus predates them, so
    // she deposits where none of Bob's current replicas are; reading the ring Bob's
    // consensus replaced is what meets her.
    let order = ring_order(&bob, &all);
    let old = without(&all, &order[..3]);
    let alice_targets = ring_order(&bob, &old)[..3].to_vec();
    assert!(order[..3].iter().all(|r| !alice_targets.contains(r)));
    let bob = w.user_of(bob, all.clone(), Some(old.clone()));
    let alice = w.user_seeing("alice", old, None);
    meet(&alice, &bob).await;
}

#[tokio::test]
async fn a_sender_whose_consensus_has_three_new_relays_still_meets_an_owner_without_them() {
    let (mut w, all) = ring_world();
    let bob = w.store("bob");
    // Bob (the owner) has not seen the three new relays nearest his mailbox; Alice has, so
    // her current replicas for Bob are all unknown to him: she meets him by also
    // depositing on the replicas her previous consensus named.
    let order = ring_order(&bob, &all);
    let old = without(&all, &order[..3]);
    let bob = w.user_of(bob, old.clone(), None);
    assert!(order[..3].iter().all(|r| !w.replicas_of(&bob).contains(r)));
    let alice = w.user_seeing("alice", all, Some(old));
    meet(&alice, &bob).await;
}

#[tokio::test]
async fn without_a_previous_ring_an_owner_reads_past_relays_the_sender_lacks() {
    let (mut w, all) = ring_world();
    let bob = w.store("bob");
    let order = ring_order(&bob, &all);
    // Alice's consensus lacks Bob's two nearest relays and one elsewhere, and Bob never held
    // hers: his read slack covers them.
    let alice_view = without(&all, &[order[0], order[1], order[7]]);
    let alice_targets = ring_order(&bob, &alice_view)[..3].to_vec();
    assert!(!alice_targets.iter().all(|r| order[..3].contains(r)));
    let bob = w.user_of(bob, all, None);
    assert!(bob.previous_consensus().is_none());
    let alice = w.user_seeing("alice", alice_view, None);
    meet(&alice, &bob).await;
}

#[tokio::test]
async fn a_sender_lacking_the_three_relays_nearest_the_mailbox_finds_the_bundle_and_meets() {
    let (mut w, all) = ring_world();
    let bob = w.store("bob");
    let order = ring_order(&bob, &all);
    // Alice's consensus lacks all three of Bob's replicas, and neither of them ever held
    // another: she reads his bundle, and deposits, past them, where his slack reaches.
    let alice_view = without(&all, &order[..3]);
    let bob = w.user_of(bob, all, None);
    assert!(bob.previous_consensus().is_none());
    let alice = w.user_seeing("alice", alice_view, None);
    assert!(alice.previous_consensus().is_none());
    meet(&alice, &bob).await;
}

#[tokio::test]
async fn a_running_messenger_places_mailboxes_by_each_new_consensus() {
    // The placement cache keeps rings per consensus: a consensus installed while the
    // messenger runs (a refresh) must move the replicas at once, and the one it replaced
    // must still give its own ring while the ring settles.
    let (mut w, all) = ring_world();
    let bob = w.store("bob");
    let order = ring_order(&bob, &all);
    let bob = w.user_of(bob, all.clone(), None);
    assert_eq!(w.replicas_of(&bob), order[..3].to_vec(), "cache warmed");
    let fewer = without(&all, &order[..2]);
    bob.netdir().install(shallot_net::testing::consensus(
        fewer.clone(),
        T0 - 50,
        T0 + 3600,
        T0 + 30 * 86_400,
    ));
    let now = ring_order(&bob.store(), &fewer)[..3].to_vec();
    assert_eq!(w.replicas_of(&bob), now, "the new consensus's replicas");
    assert!(!now.contains(&order[0]) && !now.contains(&order[1]));
    let previous = bob
        .previous_consensus()
        .expect("the ring changed, so it settles");
    let epoch = ring::epoch_of(T0, previous.params.epoch_secs);
    let mailbox = ring::mailbox_id(&bob.me.public(), epoch, previous.params.epoch_secs).unwrap();
    assert_eq!(
        bob.ring_of(&previous, &mailbox, epoch, 3),
        order[..3].to_vec(),
        "the replaced consensus keeps its ring"
    );
    // Past an epoch boundary, with a consensus each hour: each hour's replicas are those of
    // its own consensus and the new epoch's mailbox, never a ring kept from before.
    for hour in 1..=30u64 {
        w.advance(3600);
        // A relay leaves and one comes back each hour, so that the ring keeps changing.
        let relays = if hour % 2 == 1 {
            without(&all, &[order[(hour as usize) % all.len()]])
        } else {
            all.clone()
        };
        let now = T0 + hour * 3600;
        let c = shallot_net::testing::consensus(
            relays.clone(),
            now - 50,
            now + 3600,
            now + 30 * 86_400,
        );
        bob.netdir().install(c);
        let held = bob.netdir().consensus().unwrap();
        let epoch = ring::epoch_of(now, held.params.epoch_secs);
        let mailbox = ring::mailbox_id(&bob.me.public(), epoch, held.params.epoch_secs).unwrap();
        assert_eq!(
            w.replicas_of(&bob),
            ring::Ring::of_consensus(&held, epoch).replicas(&mailbox, 3),
            "hour {hour}, epoch {epoch}"
        );
    }
    assert!(ring::epoch_of(T0 + 30 * 3600, 86_400) > ring::epoch_of(T0, 86_400));
}

/// Counts the commits of `user`'s store: those made on the calling thread (the test's
/// runtime, which runs on that one thread), and those made elsewhere (the store's runner).
fn commits_by_thread(
    user: &User,
) -> (
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let runtime = std::thread::current().id();
    let here = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let elsewhere = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, e) = (here.clone(), elsewhere.clone());
    user.store().on_commit(move || {
        let count = if std::thread::current().id() == runtime {
            &h
        } else {
            &e
        };
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        false
    });
    (here, elsewhere)
}

#[tokio::test]
async fn syncing_and_publishing_commit_nothing_on_the_async_runtime() {
    // Each commit waits for the disk (a flush, milliseconds on a slow one): on the runtime's
    // thread it would hold up every circuit and link of the client meanwhile. Bob comes back
    // to a burst of messages: draining them, acknowledging them, Alice taking the
    // acknowledgements, a message of hers expiring and Bob's next prekey must all commit on
    // the store's own thread.
    assert_eq!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::CurrentThread,
        "the count below tells the runtime's thread by the test's"
    );
    let mut w = World::new();
    let (alice, bob) = w.pair().await;
    for i in 0..5 {
        alice
            .send("bob", &format!("while you were away {i}"), OnFailure::Fail)
            .await
            .unwrap();
    }
    let (bob_here, bob_elsewhere) = commits_by_thread(&bob);
    let (alice_here, alice_elsewhere) = commits_by_thread(&alice);
    let ordering = std::sync::atomic::Ordering::SeqCst;
    assert_eq!(bob.sync().await.unwrap(), 5);
    assert!(
        bob.store().pending_acks().unwrap().is_empty(),
        "all acknowledged"
    );
    alice.sync().await.unwrap();
    let delivered = alice
        .store()
        .history()
        .unwrap()
        .into_iter()
        .filter(|m| m.outgoing && m.state == Some(OutState::Delivered))
        .count();
    assert_eq!(delivered, 5, "Alice took the acknowledgements");
    // One more that Bob never takes: a week on it has expired, and Bob's prekey is due for
    // rotation; the new one, and the mark that the bundle went out with it, are committed
    // off the runtime too.
    let last = alice
        .send("bob", "never taken", OnFailure::Fail)
        .await
        .unwrap()
        .id;
    let week = 7 * 24 * 3600;
    w.advance(week + 1);
    alice.sync().await.unwrap();
    assert!(
        matches!(state(&alice, &last), OutState::Failed(_)),
        "expired"
    );
    bob.ensure_bundle_published().await.unwrap();
    let prekeys = bob.store().prekeys().unwrap();
    assert!(
        prekeys.iter().any(|p| p.created() > T0 + week),
        "a new prekey"
    );
    assert!(
        bob_elsewhere.load(ordering) > 0 && alice_elsewhere.load(ordering) > 0,
        "the hook saw the runner's commits"
    );
    assert_eq!(bob_here.load(ordering), 0, "Bob committed on the runtime");
    assert_eq!(
        alice_here.load(ordering),
        0,
        "Alice committed on the runtime"
    );
}
