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
    /// Order of subscription, for evicting a circuit's oldest.
    since: u64,
}

/// The running mailbox service.
pub(crate) struct MailboxService {
    me: RelayId,
    store: Store,
    limits: MailboxLimits,
    pending: Arc<Semaphore>,
    subscribers: Mutex<HashMap<MailboxId, Vec<Subscriber>>>,
    next_subscription: std::sync::atomic::AtomicU64,
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
            subscribers: Mutex::new(HashMap::new()),
            next_subscription: std::sync::atomic::AtomicU64::new(0),
            replay: Mutex::new(ReplayCache::new(limits.replay_cache)),
            limits,
        })
    }

    /// Handles requests until the relay stops, each in a task of its own holding its place.
    pub(crate) async fn serve(
        self: Arc<Self>,
        env: Arc<Env>,
        mut requests: mpsc::UnboundedReceiver<MailboxRequest>,
    ) {
        while let Some(MailboxRequest { circ, msg, permit }) = requests.recv().await {
            let (service, env) = (self.clone(), env.clone());
            tokio::spawn(async move {
                service.handle(&env, &circ, msg).await;
                drop(permit);
            });
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
            auth::check(&me, op, auth, body, t, &mut lock(&service.replay))
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
    /// anew each epoch on the same circuit). False if the relay-wide limit refuses it.
    fn subscribe(&self, circ: &Arc<Circuit>, mailbox: MailboxId, req: u32) -> bool {
        let service = self;
        let mut subs = lock(&service.subscribers);
        let ptr = Arc::as_ptr(circ);
        // Forget circuits that are gone.
        subs.retain(|_, list| {
            list.retain(|s| s.circ.upgrade().is_some_and(|c| !c.is_destroyed()));
            !list.is_empty()
        });
        let mut mine: Vec<(u64, MailboxId)> = subs
            .iter()
            .flat_map(|(m, list)| {
                list.iter()
                    .filter(|s| s.circ.as_ptr() == ptr)
                    .map(move |s| (s.since, *m))
            })
            .collect();
        mine.sort();
        // This circuit's own subscription to this mailbox is replaced; beyond its limit, its
        // oldest others go. Decide first, so that a refusal changes nothing.
        let replacing = mine.iter().any(|(_, m)| *m == mailbox);
        let others: Vec<MailboxId> = mine
            .iter()
            .map(|(_, m)| *m)
            .filter(|m| *m != mailbox)
            .collect();
        let evict = (others.len() + 1).saturating_sub(service.limits.subscriptions_per_circuit);
        let total: usize = subs.values().map(Vec::len).sum();
        let freed = usize::from(replacing) + evict;
        if total - freed >= service.limits.subscriptions {
            return false;
        }
        let mut gone: Vec<MailboxId> = others.into_iter().take(evict).collect();
        gone.push(mailbox);
        for m in gone {
            if let Some(list) = subs.get_mut(&m) {
                list.retain(|s| s.circ.as_ptr() != ptr);
            }
        }
        let since = service
            .next_subscription
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        subs.entry(mailbox).or_default().push(Subscriber {
            circ: Arc::downgrade(circ),
            req,
            since,
        });
        true
    }

    /// Pushes a newly stored envelope to the mailbox's live subscribers, forgetting dead ones.
    /// Each push is its own task, bounded like any request; when the relay is too busy the push
    /// is skipped (the envelope stays stored for the next fetch).
    fn push(&self, env: &Arc<Env>, mailbox: MailboxId, id: EnvelopeId, envelope: Vec<u8>) {
        let service = self;
        let targets: Vec<(Arc<Circuit>, u32)> = {
            let mut subs = lock(&service.subscribers);
            let Some(list) = subs.get_mut(&mailbox) else {
                return;
            };
            list.retain(|s| s.circ.upgrade().is_some_and(|c| !c.is_destroyed()));
            let live = list
                .iter()
                .filter_map(|s| s.circ.upgrade().map(|c| (c, s.req)))
                .collect();
            if list.is_empty() {
                subs.remove(&mailbox);
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
