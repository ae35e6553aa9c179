//! The mailbox service of a relay started with `--mailbox` (`docs/spec.md` §9.3–9.4).
//!
//! A circuit hands each mailbox request delivered to this relay to the service through a
//! channel (`crate::shell::MailboxDoor`), after taking one of its `pending_requests` places.
//! The service handles each in its own task, away from any circuit's lock: the store is asked
//! (and a deposit acknowledged only after it is on disk), new deposits are pushed to the
//! mailbox's subscribers, and answers go back on the circuit that asked. Pushes are best
//! effort: a subscriber that stops reading misses pushes, but the envelopes stay stored until
//! acknowledged, so it finds them at its next fetch.

pub mod auth;
pub(crate) mod repair;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_proto::mailbox::{envelope_id, kind, EnvelopeId, MailboxId, MailboxMsg, Status};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::{lock, unix_now};
use tokio::sync::{mpsc, Semaphore};
use tracing::debug;

use crate::config::MailboxLimits;
use crate::shell::{Circuit, Env, MailboxRequest};
use auth::ReplayCache;
use store::{Store, StoreError};

struct Subscriber {
    circ: Weak<Circuit>,
    req: u32,
}

/// A circuit's key in the subscription index: its address, unique while the index holds a
/// `Weak` to it (the allocation outlives the circuit until every `Weak` is gone).
type CircKey = usize;

fn circ_key(circ: &Arc<Circuit>) -> CircKey {
    Arc::as_ptr(circ) as CircKey
}

/// Live subscriptions, indexed both by mailbox (for pushes) and by circuit (for SUBSCRIBE's
/// per-circuit limit and for teardown), so that neither scans every subscription.
#[derive(Default)]
struct Subscriptions {
    by_mailbox: HashMap<MailboxId, Vec<Subscriber>>,
    /// Each circuit's mailboxes, oldest subscription first.
    by_circuit: HashMap<CircKey, Vec<MailboxId>>,
    total: usize,
}

impl Subscriptions {
    /// Drops circuit `key`'s subscription to `mailbox`, if it has one.
    fn remove(&mut self, key: CircKey, mailbox: MailboxId) {
        if let Some(list) = self.by_mailbox.get_mut(&mailbox) {
            let before = list.len();
            list.retain(|s| s.circ.as_ptr() as CircKey != key);
            self.total -= before - list.len();
            if list.is_empty() {
                self.by_mailbox.remove(&mailbox);
            }
        }
        if let Some(mine) = self.by_circuit.get_mut(&key) {
            mine.retain(|m| *m != mailbox);
            if mine.is_empty() {
                self.by_circuit.remove(&key);
            }
        }
    }

    /// Drops every subscription of circuit `key`.
    fn forget_circuit(&mut self, key: CircKey) {
        for mailbox in self.by_circuit.remove(&key).unwrap_or_default() {
            self.remove(key, mailbox);
        }
    }

    fn add(&mut self, circ: &Arc<Circuit>, mailbox: MailboxId, req: u32) {
        self.by_mailbox
            .entry(mailbox)
            .or_default()
            .push(Subscriber {
                circ: Arc::downgrade(circ),
                req,
            });
        self.by_circuit
            .entry(circ_key(circ))
            .or_default()
            .push(mailbox);
        self.total += 1;
    }
}

/// The running mailbox service.
pub(crate) struct MailboxService {
    me: RelayId,
    store: Store,
    limits: MailboxLimits,
    pending: Arc<Semaphore>,
    subscribers: Mutex<Subscriptions>,
    replay: Mutex<ReplayCache>,
}

impl MailboxService {
    /// Opens the store at `path` for relay `me`; requests take places from `pending`.
    pub(crate) fn open(
        path: &std::path::Path,
        limits: MailboxLimits,
        me: RelayId,
        pending: Arc<Semaphore>,
    ) -> Result<Self, StoreError> {
        Ok(MailboxService {
            me,
            store: Store::open(path, limits.store.clone())?,
            pending,
            subscribers: Mutex::new(Subscriptions::default()),
            replay: Mutex::new(ReplayCache::new(limits.replay_cache)),
            limits,
        })
    }

    /// A handle on its store.
    pub(crate) fn store(&self) -> Store {
        self.store.clone()
    }

    /// Handles requests until the relay stops, each in a task of its own holding its place,
    /// and forgets the subscriptions of each subscribed circuit `gone` names once it is
    /// destroyed.
    pub(crate) async fn serve(
        self: Arc<Self>,
        env: Arc<Env>,
        mut requests: mpsc::UnboundedReceiver<MailboxRequest>,
        mut gone: mpsc::UnboundedReceiver<Weak<Circuit>>,
    ) {
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(MailboxRequest { circ, msg, permit }) = request else {
                        return;
                    };
                    let (service, env) = (self.clone(), env.clone());
                    tokio::spawn(async move {
                        service.handle(&env, &circ, msg).await;
                        drop(permit);
                    });
                }
                Some(circ) = gone.recv() => {
                    lock(&self.subscribers).forget_circuit(circ.as_ptr() as CircKey);
                }
            }
        }
    }

    /// Deletes expired envelopes now and then, until the relay stops.
    pub(crate) async fn expiry_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.limits.expiry_interval).await;
            match self.store.expire(unix_now()).await {
                Ok(0) => {}
                Ok(n) => debug!("expired {n} envelopes"),
                Err(e) => tracing::warn!("mailbox expiry failed: {e}"),
            }
        }
    }
}

fn result(req: u32, status: Status, count: u32) -> RelayMsg {
    RelayMsg::Mailbox(MailboxMsg::Result { req, status, count })
}

/// How long an answer waits for the circuit's window before it is dropped.
const SEND_LIMIT: Duration = Duration::from_secs(30);

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::Full => Status::Full,
        _ => Status::Internal,
    }
}

impl MailboxService {
    async fn handle(&self, env: &Arc<Env>, circ: &Arc<Circuit>, msg: MailboxMsg) {
        let service = self;
        let me = self.me;
        let t = unix_now();
        crate::stats::Stats::bump(&env.stats.mailbox_requests);
        let check = |op: u8, auth: &shallot_proto::mailbox::MailboxAuth, body: &[u8]| {
            auth::check(&me, op, auth, body, t, &service.replay)
        };
        let answer = match msg {
            MailboxMsg::Deposit {
                req,
                mailbox,
                envelope,
            } => {
                let id = envelope_id(&envelope);
                match service
                    .store
                    .deposit(mailbox, id, envelope.clone(), t)
                    .await
                {
                    Ok(store::Deposited::Stored) => {
                        crate::stats::Stats::bump(&env.stats.mailbox_envelopes_stored);
                        service.push(env, mailbox, id, envelope);
                        result(req, Status::Ok, 1)
                    }
                    Ok(store::Deposited::Duplicate) => result(req, Status::Ok, 0),
                    Err(e) => result(req, store_status(&e), 0),
                }
            }
            MailboxMsg::Fetch { req, auth } => match check(kind::FETCH, &auth, b"") {
                Err(status) => result(req, status, 0),
                Ok(()) => service.send_waiting(env, circ, req, auth.mailbox, t).await,
            },
            MailboxMsg::Subscribe { req, auth } => match check(kind::SUBSCRIBE, &auth, b"") {
                Err(status) => result(req, status, 0),
                Ok(()) => {
                    if !service.subscribe(circ, auth.mailbox, req) {
                        result(req, Status::Full, 0)
                    } else {
                        service.send_waiting(env, circ, req, auth.mailbox, t).await
                    }
                }
            },
            MailboxMsg::Ack { req, auth, ids } => {
                match check(kind::ACK, &auth, &MailboxMsg::ack_body(&ids)) {
                    Err(status) => result(req, status, 0),
                    Ok(()) => match service.store.ack(auth.mailbox, ids).await {
                        Ok(n) => result(req, Status::Ok, n),
                        Err(e) => result(req, store_status(&e), 0),
                    },
                }
            }
            MailboxMsg::PutBundle {
                req,
                auth,
                expires,
                bundle,
            } => match check(
                kind::PUT_BUNDLE,
                &auth,
                &MailboxMsg::bundle_body(expires, &bundle),
            ) {
                Err(status) => result(req, status, 0),
                Ok(()) => {
                    // A bundle is kept no longer than envelopes are.
                    let expires = expires.min(t + service.limits.store.expiry_secs);
                    match service
                        .store
                        .put_bundle(auth.mailbox, bundle, expires)
                        .await
                    {
                        Ok(()) => result(req, Status::Ok, 1),
                        Err(e) => result(req, store_status(&e), 0),
                    }
                }
            },
            MailboxMsg::GetBundle { req, mailbox } => {
                match service.store.get_bundle(mailbox, t).await {
                    Ok(Some(bundle)) => RelayMsg::Mailbox(MailboxMsg::Bundle { req, bundle }),
                    Ok(None) => result(req, Status::NotFound, 0),
                    Err(e) => result(req, store_status(&e), 0),
                }
            }
            // Answers travel toward clients: a circuit's machine refuses them before they get here.
            MailboxMsg::Result { .. } | MailboxMsg::Envelope { .. } | MailboxMsg::Bundle { .. } => {
                return;
            }
        };
        circ.send_when_open(env, answer, SEND_LIMIT).await;
    }

    /// Sends every waiting envelope, then the result carrying their count.
    async fn send_waiting(
        &self,
        env: &Env,
        circ: &Arc<Circuit>,
        req: u32,
        mailbox: MailboxId,
        t: u64,
    ) -> RelayMsg {
        match self.store.fetch(mailbox, t).await {
            Ok(waiting) => {
                let mut sent = 0u32;
                for (id, envelope) in waiting {
                    let msg = RelayMsg::Mailbox(MailboxMsg::Envelope { req, id, envelope });
                    if !circ.send_when_open(env, msg, SEND_LIMIT).await {
                        break;
                    }
                    crate::stats::Stats::bump(&env.stats.mailbox_envelopes_sent);
                    sent += 1;
                }
                result(req, Status::Ok, sent)
            }
            Err(e) => result(req, store_status(&e), 0),
        }
    }

    /// Registers `circ` as a subscriber of `mailbox`, replacing its earlier subscription to the
    /// same mailbox; a circuit over its limit loses its oldest subscription (clients subscribe
    /// anew each epoch on the same circuit). False if the relay-wide limit refuses it. Touches
    /// only this circuit's subscriptions; those of destroyed circuits are dropped when they
    /// are destroyed (`crate::shell::Circuit::tear_down`).
    fn subscribe(&self, circ: &Arc<Circuit>, mailbox: MailboxId, req: u32) -> bool {
        let key = circ_key(circ);
        let mut subs = lock(&self.subscribers);
        let mine = subs.by_circuit.get(&key).cloned().unwrap_or_default();
        // This circuit's own subscription to this mailbox is replaced; beyond its limit, its
        // oldest others go. Decide first, so that a refusal changes nothing.
        let replacing = mine.contains(&mailbox);
        let others: Vec<MailboxId> = mine.into_iter().filter(|m| *m != mailbox).collect();
        let evict = (others.len() + 1).saturating_sub(self.limits.subscriptions_per_circuit);
        let freed = usize::from(replacing) + evict;
        if subs.total - freed >= self.limits.subscriptions {
            return false;
        }
        for m in others.into_iter().take(evict).chain([mailbox]) {
            subs.remove(key, m);
        }
        subs.add(circ, mailbox, req);
        // Marked before looking whether it is destroyed: a teardown either comes before the
        // look (and the subscription goes now) or sees the mark (and sends it to `gone`).
        circ.mark_subscribed();
        if circ.is_destroyed() {
            subs.forget_circuit(key);
        }
        true
    }

    /// Pushes a newly stored envelope to the mailbox's live subscribers, forgetting dead ones.
    /// Each push is its own task, bounded like any request; when the relay is too busy the push
    /// is skipped (the envelope stays stored for the next fetch).
    fn push(&self, env: &Arc<Env>, mailbox: MailboxId, id: EnvelopeId, envelope: Vec<u8>) {
        let service = self;
        let targets: Vec<(Arc<Circuit>, u32)> = {
            let mut subs = lock(&service.subscribers);
            let Some(list) = subs.by_mailbox.get(&mailbox) else {
                return;
            };
            let mut live = Vec::new();
            let mut dead = Vec::new();
            for s in list {
                match s.circ.upgrade() {
                    Some(c) if !c.is_destroyed() => live.push((c, s.req)),
                    _ => dead.push(s.circ.as_ptr() as CircKey),
                }
            }
            for key in dead {
                subs.forget_circuit(key);
            }
            live
        };
        for (circ, req) in targets {
            let Ok(permit) = service.pending.clone().try_acquire_owned() else {
                return;
            };
            let msg = RelayMsg::Mailbox(MailboxMsg::Envelope {
                req,
                id,
                envelope: envelope.clone(),
            });
            let env = env.clone();
            tokio::spawn(async move {
                circ.send_when_open(&env, msg, SEND_LIMIT).await;
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Instant;

    use super::*;
    use crate::circuit::{CircuitError, Input};
    use crate::shell::testing::{self, CircuitMaker};

    fn service(limits: MailboxLimits) -> MailboxService {
        let dir = std::env::temp_dir().join(format!("shallot-subs-{}", rand::random::<u64>()));
        shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
        let pending = Arc::new(Semaphore::new(16));
        MailboxService::open(&dir.join("mailbox.db"), limits, testing::ME, pending).unwrap()
    }

    fn mailboxes_of(s: &MailboxService, circ: &Arc<Circuit>) -> Vec<MailboxId> {
        let subs = lock(&s.subscribers);
        subs.by_circuit
            .get(&circ_key(circ))
            .cloned()
            .unwrap_or_default()
    }

    /// The index keeps the behaviour of the scan it replaced: a circuit's subscription to a
    /// mailbox is replaced, its oldest goes beyond the per-circuit limit, the relay-wide limit
    /// refuses without changing anything, and a destroyed circuit's subscriptions leave both
    /// indexes (through the teardown's notice) so that they stop counting.
    #[test]
    fn subscriptions_are_indexed_per_circuit_and_forgotten_at_teardown() {
        let limits = MailboxLimits {
            subscriptions_per_circuit: 2,
            subscriptions: 3,
            ..MailboxLimits::default()
        };
        let s = service(limits);
        let (gone_tx, mut gone) = mpsc::unbounded_channel();
        let door = crate::shell::MailboxDoor {
            requests: mpsc::unbounded_channel().0,
            pending: Arc::new(Semaphore::new(1)),
            gone: gone_tx,
        };
        let (env, _extends) = testing::env(1_000_000, Some(door));
        let link = testing::link(&env, 1);
        let maker = CircuitMaker::new();
        let now = Instant::now();
        let (a, _) = maker.circuit(&link, 0x8000_0001, now);
        let (b, _) = maker.circuit(&link, 0x8000_0002, now);
        let m = |i: u8| MailboxId([i; 32]);
        assert!(s.subscribe(&a, m(1), 10));
        assert!(s.subscribe(&a, m(1), 11), "replaces its own");
        assert_eq!(lock(&s.subscribers).total, 1);
        assert_eq!(lock(&s.subscribers).by_mailbox[&m(1)][0].req, 11);
        assert!(s.subscribe(&a, m(2), 12));
        assert!(s.subscribe(&a, m(3), 13), "its oldest (1) goes");
        assert_eq!(mailboxes_of(&s, &a), vec![m(2), m(3)]);
        assert!(!lock(&s.subscribers).by_mailbox.contains_key(&m(1)));
        assert!(s.subscribe(&b, m(1), 20));
        assert_eq!(lock(&s.subscribers).total, 3);
        assert!(!s.subscribe(&b, m(4), 21), "relay-wide limit");
        assert_eq!(
            mailboxes_of(&s, &b),
            vec![m(1)],
            "a refusal changes nothing"
        );
        // A's teardown tells the service, which forgets both of its subscriptions.
        a.input(&env, Input::Kill(CircuitError::ShuttingDown));
        let notice = gone.try_recv().unwrap();
        lock(&s.subscribers).forget_circuit(notice.as_ptr() as CircKey);
        assert!(mailboxes_of(&s, &a).is_empty());
        assert_eq!(lock(&s.subscribers).total, 1);
        assert!(s.subscribe(&b, m(4), 21), "room again");
        // A circuit destroyed before its SUBSCRIBE is handled keeps no subscription.
        let (c, _) = maker.circuit(&link, 0x8000_0003, now);
        c.input(&env, Input::Kill(CircuitError::ShuttingDown));
        assert!(gone.try_recv().is_err(), "it had no subscription then");
        assert!(s.subscribe(&c, m(5), 30));
        assert!(mailboxes_of(&s, &c).is_empty());
        assert_eq!(lock(&s.subscribers).total, 2);
    }
}
