//! The mailbox service of a relay started with `--mailbox` (`docs/spec.md` §9.3–9.4).
//!
//! A mailbox request delivered to this relay is handled in its own task, away from the
//! circuit's lock: the store is asked (and a deposit acknowledged only after it is on disk),
//! new deposits are pushed to the mailbox's subscribers, and answers go back on the circuit
//! that asked. Pushes are best effort: a subscriber that stops reading misses pushes, but the
//! envelopes stay stored until acknowledged, so it finds them at its next fetch.

pub mod auth;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shallot_proto::mailbox::{envelope_id, kind, MailboxId, MailboxMsg, Status};
use shallot_proto::relay_msg::RelayMsg;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::channel::lock;
use crate::circuit::{CircState, Circuit};
use crate::core::Core;
use auth::ReplayCache;
use shallot_proto::cell::DestroyReason;
use store::{Store, StoreError, StoreLimits};

/// Mailbox service limits, each with a production default (`docs/spec.md` §9.4).
#[derive(Debug, Clone)]
pub struct MailboxLimits {
    /// The store's limits.
    pub store: StoreLimits,
    /// Mailbox requests being handled at once, relay-wide; more are refused as busy.
    pub pending_requests: usize,
    /// Subscriptions one circuit may hold.
    pub subscriptions_per_circuit: usize,
    /// Subscriptions the relay holds in all.
    pub subscriptions: usize,
    /// Request nonces remembered for replay protection.
    pub replay_cache: usize,
    /// How often expired envelopes are deleted.
    pub expiry_interval: Duration,
}

impl Default for MailboxLimits {
    fn default() -> Self {
        MailboxLimits {
            store: StoreLimits::default(),
            pending_requests: 4096,
            subscriptions_per_circuit: 8,
            subscriptions: 100_000,
            replay_cache: 200_000,
            expiry_interval: Duration::from_secs(60),
        }
    }
}

struct Subscriber {
    circ: Weak<Circuit>,
    req: u32,
    /// Order of subscription, for evicting a circuit's oldest.
    since: u64,
}

/// The running mailbox service.
pub(crate) struct MailboxService {
    store: Store,
    limits: MailboxLimits,
    pending: Arc<Semaphore>,
    subscribers: Mutex<HashMap<MailboxId, Vec<Subscriber>>>,
    next_subscription: std::sync::atomic::AtomicU64,
    replay: Mutex<ReplayCache>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl MailboxService {
    /// Opens the store at `path`.
    pub fn open(path: &std::path::Path, limits: MailboxLimits) -> Result<Self, StoreError> {
        Ok(MailboxService {
            store: Store::open(path, limits.store.clone())?,
            pending: Arc::new(Semaphore::new(limits.pending_requests)),
            subscribers: Mutex::new(HashMap::new()),
            next_subscription: std::sync::atomic::AtomicU64::new(0),
            replay: Mutex::new(ReplayCache::new(limits.replay_cache)),
            limits,
        })
    }

    /// Deletes expired envelopes now and then, until the relay stops.
    pub async fn expiry_loop(core: Arc<Core>) {
        let Some(service) = core.mailbox.as_ref() else {
            return;
        };
        loop {
            tokio::time::sleep(service.limits.expiry_interval).await;
            match service.store.expire(now()).await {
                Ok(0) => {}
                Ok(n) => debug!("expired {n} envelopes"),
                Err(e) => tracing::warn!("mailbox expiry failed: {e}"),
            }
        }
    }
}

/// Handles a mailbox message delivered to this relay on `circ`, whose lock the caller holds
/// (as `st`): refusals are answered at once, real work moves to a task. An error destroys the
/// circuit.
pub(crate) fn dispatch(
    core: &Arc<Core>,
    circ: &Arc<Circuit>,
    st: &mut CircState,
    msg: MailboxMsg,
) -> Result<(), DestroyReason> {
    // Answers travel from relays to clients, never the other way.
    if matches!(
        msg,
        MailboxMsg::Result { .. } | MailboxMsg::Envelope { .. } | MailboxMsg::Bundle { .. }
    ) {
        return Err(DestroyReason::Protocol);
    }
    let req = request_id(&msg);
    let Some(service) = core.mailbox.as_ref() else {
        return circ.send_msg(core, st, &result(req, Status::Unavailable, 0));
    };
    let Ok(permit) = service.pending.clone().try_acquire_owned() else {
        return circ.send_msg(core, st, &result(req, Status::Internal, 0));
    };
    let (core, circ) = (core.clone(), circ.clone());
    tokio::spawn(async move {
        handle(&core, &circ, msg).await;
        drop(permit);
    });
    Ok(())
}

fn request_id(msg: &MailboxMsg) -> u32 {
    match msg {
        MailboxMsg::Deposit { req, .. }
        | MailboxMsg::Fetch { req, .. }
        | MailboxMsg::Subscribe { req, .. }
        | MailboxMsg::Ack { req, .. }
        | MailboxMsg::PutBundle { req, .. }
        | MailboxMsg::GetBundle { req, .. }
        | MailboxMsg::Result { req, .. }
        | MailboxMsg::Envelope { req, .. }
        | MailboxMsg::Bundle { req, .. } => *req,
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

async fn handle(core: &Arc<Core>, circ: &Arc<Circuit>, msg: MailboxMsg) {
    let Some(service) = core.mailbox.as_ref() else {
        return;
    };
    let me = core.keys.id;
    let t = now();
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
                    push(core, service, mailbox, id, envelope);
                    result(req, Status::Ok, 1)
                }
                Ok(store::Deposited::Duplicate) => result(req, Status::Ok, 0),
                Err(e) => result(req, store_status(&e), 0),
            }
        }
        MailboxMsg::Fetch { req, auth } => match check(kind::FETCH, &auth, b"") {
            Err(status) => result(req, status, 0),
            Ok(()) => send_waiting(core, circ, service, req, auth.mailbox, t).await,
        },
        MailboxMsg::Subscribe { req, auth } => match check(kind::SUBSCRIBE, &auth, b"") {
            Err(status) => result(req, status, 0),
            Ok(()) => {
                if !subscribe(service, circ, auth.mailbox, req) {
                    result(req, Status::Full, 0)
                } else {
                    send_waiting(core, circ, service, req, auth.mailbox, t).await
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
        // Refused in `dispatch`.
        MailboxMsg::Result { .. } | MailboxMsg::Envelope { .. } | MailboxMsg::Bundle { .. } => {
            return;
        }
    };
    circ.send_when_open(core, &answer, SEND_LIMIT).await;
}

/// Sends every waiting envelope, then the result carrying their count.
async fn send_waiting(
    core: &Arc<Core>,
    circ: &Arc<Circuit>,
    service: &MailboxService,
    req: u32,
    mailbox: MailboxId,
    t: u64,
) -> RelayMsg {
    match service.store.fetch(mailbox, t).await {
        Ok(waiting) => {
            let mut sent = 0u32;
            for (id, envelope) in waiting {
                let msg = RelayMsg::Mailbox(MailboxMsg::Envelope { req, id, envelope });
                if !circ.send_when_open(core, &msg, SEND_LIMIT).await {
                    break;
                }
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
fn subscribe(service: &MailboxService, circ: &Arc<Circuit>, mailbox: MailboxId, req: u32) -> bool {
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
fn push(
    core: &Arc<Core>,
    service: &MailboxService,
    mailbox: MailboxId,
    id: [u8; 16],
    envelope: Vec<u8>,
) {
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
        let core = core.clone();
        tokio::spawn(async move {
            circ.send_when_open(&core, &msg, SEND_LIMIT).await;
            drop(permit);
        });
    }
}
