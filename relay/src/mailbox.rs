//! The mailbox service of a relay started with `--mailbox` (`docs/spec.md` §9.3–9.4).
//!
//! A circuit hands each mailbox request delivered to this relay to the service through a
//! channel (`crate::shell::MailboxDoor`), after taking one of its `pending_requests` places.
//! The service handles each in its own task, away from any circuit's lock: the store is asked
//! (and a deposit acknowledged only after it is on disk), admitted deposits are pushed to the
//! mailbox's subscribers at once, before the store has them, and answers go back on the
//! circuit that asked. Pushes are best effort: a subscriber
//! that stops reading misses pushes, but the envelopes, once committed, stay stored until
//! acknowledged, so it finds them at its next fetch.
//!
//! What abuse costs (§9.7) is decided in [`admission`]: each circuit's requests in flight and
//! their rate are limited where the circuit hands them over (`crate::shell`); deposits, new
//! mailbox ids and bundle puts are rate-limited here, and beyond those limits a request must
//! carry a solution to the relay's puzzle. A fetch streams the mailbox a page at a time, and
//! what a request's task holds is counted in the relay's memory budget.

pub mod admission;
pub mod auth;
pub(crate) mod isolation;
pub(crate) mod push;
pub(crate) mod repair;
pub mod store;
pub(crate) mod sync;
pub(crate) mod tombstones;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_proto::cell::CELL_LEN;
use shallot_proto::mailbox::{
    envelope_id, kind, EnvelopeId, MailboxId, MailboxMsg, Status, MAX_ENVELOPE_LEN,
};
use shallot_proto::pow::{self, Pow};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::{lock, unix_now};
use tokio::sync::{mpsc, Semaphore};
use tracing::debug;

use crate::config::MailboxLimits;
use crate::queue::QueueBudget;
use crate::shell::{Circuit, Env, MailboxRequest};
use crate::stats::Stats;
use admission::{Admission, Op, Refusal};
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
    isolation: isolation::IsolationWatch,
    tombstones: Arc<Mutex<tombstones::Tombstones>>,
    admission: Mutex<Admission>,
}

/// Memory a request's task holds (an envelope, a page of a mailbox), counted in the relay's
/// memory budget (`docs/spec.md` §6.6) for as long as it lives, in cells' worth.
struct Held {
    budget: Arc<QueueBudget>,
    cells: usize,
}

impl Held {
    fn new(env: &Env, bytes: usize) -> Held {
        let cells = bytes.div_ceil(CELL_LEN);
        env.queued(env.budget.add(cells));
        Held {
            budget: env.budget.clone(),
            cells,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.sub(self.cells);
    }
}

/// A fetch loads the mailbox this many bytes at a time (plus at most one envelope).
pub const PAGE_BYTES: usize = 64 * 1024;

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
            isolation: isolation::IsolationWatch::default(),
            tombstones: Arc::new(Mutex::new(tombstones::Tombstones::default())),
            admission: Mutex::new(Admission::new(
                limits.admission.clone(),
                std::time::Instant::now(),
            )),
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
                    let Some(MailboxRequest { circ, msg, permit, slot }) = request else {
                        return;
                    };
                    let (service, env) = (self.clone(), env.clone());
                    tokio::spawn(async move {
                        service.handle(&env, &circ, msg).await;
                        drop(permit);
                        drop(slot);
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

fn refusal(req: u32, r: Refusal) -> RelayMsg {
    match r {
        Refusal::Puzzle(bits) | Refusal::TooEasy(bits) => {
            result(req, Status::PuzzleRequired, u32::from(bits))
        }
        Refusal::Stale | Refusal::Replayed => result(req, Status::Stale, 0),
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::Full => Status::Full,
        StoreError::Overloaded => Status::Busy,
        _ => Status::Internal,
    }
}

impl MailboxService {
    async fn handle(&self, env: &Arc<Env>, circ: &Arc<Circuit>, msg: MailboxMsg) {
        let service = self;
        let me = self.me;
        let t = unix_now();
        crate::stats::Stats::bump(&env.stats.mailbox_requests);
        if service.isolation.record(circ, &msg).is_some() {
            crate::stats::Stats::bump(&env.stats.mailbox_isolation_violations);
        }
        let check = |op: u8, auth: &shallot_proto::mailbox::MailboxAuth, body: &[u8]| {
            auth::check(&me, op, auth, body, t, &service.replay)
        };
        // The request's bytes, in memory until it is answered.
        let _held = Held::new(env, request_bytes(&msg));
        let answer = match msg {
            MailboxMsg::Deposit {
                req,
                mailbox,
                envelope,
                pow,
            } => {
                service
                    .deposit(env, req, mailbox, envelope, pow.as_ref(), t)
                    .await
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
                    Ok(()) => {
                        // Remembered before the store deletes them, whatever becomes of
                        // that: the owner has them, so neither a deposit nor a repair
                        // brings them back here (§9.3, §9.6), not even should this request
                        // be given up while the store still runs it. Those the store held
                        // move, once their deletion is committed (given up or not), to the
                        // pool a flood of ACKs for ids never deposited cannot push them out
                        // of.
                        let keep = service.limits.store.expiry_secs;
                        lock(&service.tombstones).acked(auth.mailbox, &ids, t, keep);
                        let tombstones = service.tombstones.clone();
                        let mailbox = auth.mailbox;
                        let on_deleted = move |deleted: &[EnvelopeId]| {
                            lock(&tombstones).deleted(mailbox, deleted, unix_now(), keep);
                        };
                        match service.store.ack(mailbox, ids, on_deleted).await {
                            Ok(deleted) => {
                                let n = u32::try_from(deleted.len()).unwrap_or(u32::MAX);
                                result(req, Status::Ok, n)
                            }
                            Err(e) => result(req, store_status(&e), 0),
                        }
                    }
                }
            }
            MailboxMsg::PutBundle {
                req,
                auth,
                expires,
                bundle,
                pow,
            } => {
                let body = MailboxMsg::bundle_body(expires, &bundle);
                match check(kind::PUT_BUNDLE, &auth, &body) {
                    Err(status) => result(req, status, 0),
                    Ok(()) => match service.admit(
                        env,
                        Op::PutBundle,
                        auth.mailbox,
                        &body,
                        pow.as_ref(),
                        t,
                    ) {
                        Err(r) => refusal(req, r),
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
                }
            }
            MailboxMsg::GetBundle { req, mailbox } => {
                match service.store.get_bundle(mailbox, t).await {
                    Ok(Some(bundle)) => RelayMsg::Mailbox(MailboxMsg::Bundle { req, bundle }),
                    Ok(None) => result(req, Status::NotFound, 0),
                    Err(e) => result(req, store_status(&e), 0),
                }
            }
            MailboxMsg::Sync { req, mailbox, ids } => {
                // Acknowledged ones are not wanted back (§9.6).
                let ids: Vec<EnvelopeId> = {
                    let tombs = lock(&service.tombstones);
                    ids.into_iter()
                        .filter(|id| !tombs.contains(&mailbox, id, t))
                        .collect()
                };
                match service.store.lacks(mailbox, ids).await {
                    Ok(ids) => RelayMsg::Mailbox(MailboxMsg::Want { req, ids }),
                    Err(e) => result(req, store_status(&e), 0),
                }
            }
            // Answers travel toward clients: a circuit's machine refuses them before they get here.
            MailboxMsg::Result { .. }
            | MailboxMsg::Envelope { .. }
            | MailboxMsg::Bundle { .. }
            | MailboxMsg::Want { .. } => {
                return;
            }
        };
        circ.send_when_open(env, answer, SEND_LIMIT).await;
    }

    /// Stores an envelope if it is admitted, and pushes it to the mailbox's subscribers
    /// (`docs/spec.md` §9.3): at once, before the store has it, so that a subscriber's copy
    /// waits for neither the store thread nor the disk. The depositor's answer waits for the
    /// commit.
    async fn deposit(
        &self,
        env: &Arc<Env>,
        req: u32,
        mailbox: MailboxId,
        envelope: Vec<u8>,
        solution: Option<&Pow>,
        t: u64,
    ) -> RelayMsg {
        if let Err(r) = self.admit(env, Op::Deposit, mailbox, &envelope, solution, t) {
            return refusal(req, r);
        }
        let id = envelope_id(&envelope);
        if lock(&self.tombstones).contains(&mailbox, &id, t) {
            // Its owner has it, and said so here: answered as a repeat (which it is), neither
            // stored again nor pushed (`docs/spec.md` §9.3).
            return result(req, Status::Ok, 0);
        }
        tracing::trace!(target: "shallot_trace", relay = %self.me, "deposit admitted");
        // In the store's queue first (or refused at once, its queue full, and not pushed), so
        // that the subscriber's acknowledgement comes after it. Then pushed, whatever the
        // store makes of it: should it refuse the envelope (a duplicate, a full mailbox, a
        // failed commit), the depositor is told so, and the subscriber takes a copy it has
        // seen for a repeat (`docs/spec.md` §9.3).
        let handed = match self.store.begin_deposit(mailbox, id, envelope.clone(), t) {
            Ok(handed) => handed,
            Err(e) => return result(req, store_status(&e), 0),
        };
        self.push(env, mailbox, id, envelope);
        match handed.answer().await {
            Ok(store::Deposited::Stored) => {
                tracing::trace!(target: "shallot_trace", relay = %self.me, "deposit on disk");
                Stats::bump(&env.stats.mailbox_envelopes_stored);
                result(req, Status::Ok, 1)
            }
            Ok(store::Deposited::Duplicate) => result(req, Status::Ok, 0),
            Err(e) => result(req, store_status(&e), 0),
        }
    }

    /// Admits a deposit or bundle put on `mailbox` (`docs/spec.md` §9.7): by its solution
    /// to the puzzle (over `body`) if it carries one, else by the rate limits.
    fn admit(
        &self,
        env: &Env,
        op: Op,
        mailbox: MailboxId,
        body: &[u8],
        solution: Option<&Pow>,
        t: u64,
    ) -> Result<(), Refusal> {
        let now = std::time::Instant::now();
        let outcome = match solution {
            Some(p) => {
                let kind = match op {
                    Op::Deposit => kind::DEPOSIT,
                    Op::PutBundle => kind::PUT_BUNDLE,
                };
                // Hashed before the lock is taken.
                let effort = pow::effort(&pow::digest(&self.me, kind, &mailbox.0, body, p));
                let outcome = lock(&self.admission).admit_solved(mailbox, p, effort, t, now);
                if outcome.is_ok() {
                    Stats::bump(&env.stats.mailbox_puzzles_solved);
                }
                outcome
            }
            None => lock(&self.admission).admit(op, mailbox, now),
        };
        if let Err(r) = &outcome {
            debug!("mailbox request refused: {r}");
            if matches!(r, Refusal::Puzzle(_) | Refusal::TooEasy(_)) {
                Stats::bump(&env.stats.mailbox_puzzles_asked);
            }
        }
        outcome
    }

    /// Sends every waiting envelope, a page at a time, then the result carrying their count.
    /// A page is loaded only when the relay's memory budget has room for it, and is counted
    /// in the budget while held; without room, the fetch ends with RESULT(Busy, sent).
    async fn send_waiting(
        &self,
        env: &Env,
        circ: &Arc<Circuit>,
        req: u32,
        mailbox: MailboxId,
        t: u64,
    ) -> RelayMsg {
        let mut sent = 0u32;
        let mut after = None;
        let page_cells = (PAGE_BYTES + MAX_ENVELOPE_LEN).div_ceil(CELL_LEN);
        loop {
            if env.budget.queued() + page_cells > env.queue_cap_cells {
                Stats::bump(&env.stats.mailbox_fetches_cut);
                return result(req, Status::Busy, sent);
            }
            // Counted before it is loaded, so the budget never holds less than is in memory.
            let _page_held = Held::new(env, PAGE_BYTES + MAX_ENVELOPE_LEN);
            let page = match self.store.fetch_page(mailbox, t, after, PAGE_BYTES).await {
                Ok(page) => page,
                Err(e) => return result(req, store_status(&e), sent),
            };
            if page.is_empty() {
                return result(req, Status::Ok, sent);
            }
            let bytes: usize = page.iter().map(|(_, e)| e.len()).sum();
            Stats::bump(&env.stats.mailbox_fetch_pages);
            env.stats
                .mailbox_fetch_page_peak
                .fetch_max(bytes as u64, std::sync::atomic::Ordering::Relaxed);
            for (cursor, envelope) in page {
                after = Some(cursor);
                let msg = RelayMsg::Mailbox(MailboxMsg::Envelope {
                    req,
                    id: cursor.1,
                    envelope,
                });
                if !circ.send_when_open(env, msg, SEND_LIMIT).await {
                    return result(req, Status::Ok, sent);
                }
                Stats::bump(&env.stats.mailbox_envelopes_sent);
                sent += 1;
            }
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
        // oldest others go; beyond the mailbox's limit, the mailbox's oldest subscribers go
        // (so that one deposit's pushes cannot take every place, `push`). Decide first, so
        // that a refusal changes nothing.
        let replacing = mine.contains(&mailbox);
        let others: Vec<MailboxId> = mine.into_iter().filter(|m| *m != mailbox).collect();
        let evict = (others.len() + 1).saturating_sub(self.limits.subscriptions_per_circuit);
        let crowd: Vec<CircKey> = subs
            .by_mailbox
            .get(&mailbox)
            .map(|list| {
                list.iter()
                    .map(|s| s.circ.as_ptr() as CircKey)
                    .filter(|k| *k != key)
                    .collect()
            })
            .unwrap_or_default();
        let crowded = (crowd.len() + 1).saturating_sub(self.limits.subscribers_per_mailbox);
        let freed = usize::from(replacing) + evict + crowded;
        if subs.total - freed >= self.limits.subscriptions {
            return false;
        }
        for m in others.into_iter().take(evict).chain([mailbox]) {
            subs.remove(key, m);
        }
        for k in crowd.into_iter().take(crowded) {
            subs.remove(k, mailbox);
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

    /// Pushes an admitted envelope to the mailbox's live subscribers, forgetting dead ones.
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
            tracing::trace!(target: "shallot_trace", relay = %self.me, "push to a subscriber");
            let msg = RelayMsg::Mailbox(MailboxMsg::Envelope {
                req,
                id,
                envelope: envelope.clone(),
            });
            let env = env.clone();
            let held = Held::new(&env, envelope.len());
            tokio::spawn(async move {
                circ.send_when_open(&env, msg, SEND_LIMIT).await;
                drop(held);
                drop(permit);
            });
        }
    }
}

/// The bytes a request brings with it (its envelope or bundle; the rest is small).
fn request_bytes(msg: &MailboxMsg) -> usize {
    match msg {
        MailboxMsg::Deposit { envelope, .. } => envelope.len(),
        MailboxMsg::PutBundle { bundle, .. } => bundle.len(),
        _ => 0,
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
        service_in(limits).0
    }

    /// A service and the path of its database.
    fn service_in(limits: MailboxLimits) -> (MailboxService, std::path::PathBuf) {
        let dir = shallot_rt::scratch::path("subs");
        shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
        let pending = Arc::new(Semaphore::new(16));
        let path = dir.join("mailbox.db");
        let service = MailboxService::open(&path, limits, testing::ME, pending).unwrap();
        (service, path)
    }

    fn mailboxes_of(s: &MailboxService, circ: &Arc<Circuit>) -> Vec<MailboxId> {
        let subs = lock(&s.subscribers);
        subs.by_circuit
            .get(&circ_key(circ))
            .cloned()
            .unwrap_or_default()
    }

    /// A relay's environment with a mailbox door (8 places), and one client link to it.
    fn client_link() -> (Arc<Env>, Arc<crate::shell::Link>) {
        let door = crate::shell::MailboxDoor {
            requests: mpsc::unbounded_channel().0,
            pending: Arc::new(Semaphore::new(8)),
            gone: mpsc::unbounded_channel().0,
            circuit_limits: Default::default(),
        };
        let (env, _extends) = testing::env(1_000_000, Some(door));
        let env = Arc::new(env);
        let link = testing::link(&env, 1);
        (env, link)
    }

    /// The id of the circuit [`subscribed`] makes.
    const SUBSCRIBER: u32 = 0x8000_0001;

    /// A relay's environment with a mailbox door, one client link, and on it a circuit
    /// ([`SUBSCRIBER`]) subscribed to `m` on `s`; the circuit lives as long as the caller
    /// keeps it.
    fn subscribed(
        s: &MailboxService,
        m: MailboxId,
    ) -> (Arc<Env>, Arc<crate::shell::Link>, Arc<Circuit>) {
        let (env, link) = client_link();
        let (subscriber, _) = CircuitMaker::new().circuit(&link, SUBSCRIBER, Instant::now());
        assert!(s.subscribe(&subscriber, m, 10));
        (env, link, subscriber)
    }

    /// An admitted envelope reaches the mailbox's subscriber before the store has even begun
    /// the transaction that will hold it: here another connection holds the database's write
    /// lock, as a stalled disk would hold the store thread. The depositor is answered only
    /// once the store has committed it (`docs/spec.md` §9.3).
    #[tokio::test]
    async fn a_deposit_is_pushed_before_the_store_has_it_and_answered_after() {
        let (s, path) = service_in(MailboxLimits::default());
        let m = MailboxId([7; 32]);
        let (env, link, _subscriber) = subscribed(&s, m);

        // SQLite's busy timeout (5 s) bounds how long the store thread waits for the lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let deposit = s.deposit(&env, 20, m, vec![0x5a; 300], None, 1_000);
        tokio::pin!(deposit);
        let deadline = Instant::now() + Duration::from_secs(4);
        while link.chan.oldest_cells().is_empty() {
            assert!(
                Instant::now() < deadline,
                "nothing pushed while the store was stalled"
            );
            tokio::select! {
                answer = &mut deposit => panic!("answered before the store had it: {answer:?}"),
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        let queued = link.chan.oldest_cells();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(
            queued[0].1,
            shallot_proto::cell::CircId::new(SUBSCRIBER).unwrap(),
            "pushed on the subscriber's circuit"
        );
        other.execute_batch("ROLLBACK").unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), deposit)
            .await
            .expect("answered once the store is let go");
        assert!(
            matches!(
                answer,
                RelayMsg::Mailbox(MailboxMsg::Result {
                    req: 20,
                    status: Status::Ok,
                    count: 1
                })
            ),
            "{answer:?}"
        );
    }

    /// Every deposit the store takes in is pushed, whatever it makes of it: a repeat of a
    /// stored envelope is pushed again (the subscriber keeps one copy, §10.7). A deposit the
    /// store refuses at once, its queue full, is not pushed, so that a store already behind
    /// is not also handed acknowledgements of envelopes it never had (`docs/spec.md` §9.3).
    #[tokio::test]
    async fn repeats_are_pushed_again_but_deposits_the_store_cannot_take_are_not() {
        let mut limits = MailboxLimits::default();
        limits.store.queued_jobs = 1;
        let s = Arc::new(service(limits));
        let m = MailboxId([7; 32]);
        let (env, link, _subscriber) = subscribed(&s, m);
        // The cells pushed so far (one per envelope, each small), taken off the link.
        let mut pushed = 0;
        let take = |pushed: &mut usize| {
            let mut out = Vec::new();
            *pushed += shallot_link::CellQueue::drain_into(&link.chan, 64, &mut out);
        };
        async fn until(n: usize, pushed: &mut usize, take: impl Fn(&mut usize)) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while *pushed < n {
                assert!(Instant::now() < deadline, "{pushed} pushed, not {n}");
                take(pushed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let ok = |answer: RelayMsg, req: u32, count: u32| {
            assert!(
                matches!(answer, RelayMsg::Mailbox(MailboxMsg::Result { req: r, status: Status::Ok, count: c }) if r == req && c == count),
                "{answer:?}"
            );
        };
        let deposit = |req: u32, body: u8| {
            let (s, env) = (s.clone(), env.clone());
            tokio::spawn(async move { s.deposit(&env, req, m, vec![body; 100], None, 1_000).await })
        };

        ok(deposit(20, 1).await.unwrap(), 20, 1);
        until(1, &mut pushed, take).await;
        ok(deposit(21, 1).await.unwrap(), 21, 0);
        until(2, &mut pushed, take).await;

        // The store held at the commit of one deposit, with another in its queue (its limit):
        // the next is refused at once, and not pushed.
        s.store.hold_commits(true);
        let held = deposit(22, 2);
        s.store.until_a_commit_waits().await;
        let queued = deposit(23, 3);
        // Pushed only once in the store's queue.
        until(4, &mut pushed, take).await;
        let refused = tokio::time::timeout(Duration::from_secs(1), deposit(24, 4))
            .await
            .expect("refused at once")
            .unwrap();
        assert!(
            matches!(
                refused,
                RelayMsg::Mailbox(MailboxMsg::Result {
                    req: 24,
                    status: Status::Busy,
                    count: 0
                })
            ),
            "{refused:?}"
        );
        s.store.hold_commits(false);
        ok(held.await.unwrap(), 22, 1);
        ok(queued.await.unwrap(), 23, 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        take(&mut pushed);
        assert_eq!(pushed, 4, "the refused deposit was pushed");
    }

    /// An envelope its owner has acknowledged here does not come back: deposited again (a
    /// sender's retry, or a repair from a holder that never saw the ACK), it is answered as a
    /// repeat, and neither stored again nor pushed again; this holds from the moment the ACK
    /// is checked, before the store has deleted anything, and only for the owner's ACK
    /// (`docs/spec.md` §9.3, §9.6).
    #[tokio::test]
    async fn an_acknowledged_envelope_deposited_again_is_neither_stored_nor_pushed() {
        use ed25519_dalek::Signer;
        let s = Arc::new(service(MailboxLimits::default()));
        let owner = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let m = MailboxId(owner.verifying_key().to_bytes());
        let (env, link, subscriber) = subscribed(&s, m);
        // Waits (within a deadline) until `n` more cells are queued on the subscriber's link
        // (pushes and answers), lets every task already spawned run, and says how many came.
        let cells = |n: usize| {
            let link = link.clone();
            async move {
                let drain = || {
                    let mut out = Vec::new();
                    shallot_link::CellQueue::drain_into(&link.chan, 64, &mut out)
                };
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut got = drain();
                while got < n {
                    assert!(Instant::now() < deadline, "{got} cells, not {n}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    got += drain();
                }
                for _ in 0..16 {
                    tokio::task::yield_now().await;
                }
                got + drain()
            }
        };
        let answered = |answer: RelayMsg, req: u32, count: u32| {
            assert!(
                matches!(answer, RelayMsg::Mailbox(MailboxMsg::Result { req: r, status: Status::Ok, count: c }) if r == req && c == count),
                "{answer:?}"
            );
        };
        let t = unix_now();
        // An acknowledgement of `id` signed by `key` (the owner's, or not), on the subscribing
        // circuit.
        let ack = |key: &ed25519_dalek::SigningKey, req: u32, id: EnvelopeId| {
            let ids = vec![id];
            let nonce = [req as u8; 16];
            let body = MailboxMsg::ack_body(&ids);
            let signed =
                shallot_proto::mailbox::auth_message(&testing::ME, kind::ACK, &m, t, &nonce, &body);
            let auth = shallot_proto::mailbox::MailboxAuth {
                mailbox: m,
                timestamp: t,
                nonce,
                signature: key.sign(&signed).to_bytes(),
            };
            let (s, env, circ) = (s.clone(), env.clone(), subscriber.clone());
            tokio::spawn(async move {
                s.handle(&env, &circ, MailboxMsg::Ack { req, auth, ids })
                    .await
            })
        };
        let stored = |s: Arc<MailboxService>| async move { s.store.fetch(m, t).await.unwrap() };
        let envelope = vec![0x5a; 100];
        let id = envelope_id(&envelope);
        answered(
            s.deposit(&env, 20, m, envelope.clone(), None, t).await,
            20,
            1,
        );
        assert_eq!(cells(1).await, 1, "pushed once");

        // An ACK another key signed for this mailbox is refused, and leaves nothing remembered:
        // the envelope stays, and a repeat of it is pushed as any repeat is.
        let forger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        ack(&forger, 30, id).await.unwrap();
        assert_eq!(cells(1).await, 1, "the forged ACK's answer");
        answered(
            s.deposit(&env, 31, m, envelope.clone(), None, t).await,
            31,
            0,
        );
        assert_eq!(cells(1).await, 1, "a repeat not acknowledged is pushed");
        assert_eq!(stored(s.clone()).await.len(), 1, "not deleted");
        assert_eq!(lock(&s.tombstones).pool(&m, &id), None);

        ack(&owner, 21, id).await.unwrap();
        assert_eq!(cells(1).await, 1, "the ACK's answer");
        assert!(stored(s.clone()).await.is_empty(), "deleted");
        // It was held here: its tombstone is in the pool ACKs for ids never deposited (below)
        // cannot push it out of.
        assert_eq!(
            lock(&s.tombstones).pool(&m, &id),
            Some(tombstones::Pool::Held)
        );
        let never = EnvelopeId([0x77; 16]);
        ack(&owner, 27, never).await.unwrap();
        assert_eq!(cells(1).await, 1, "the second ACK's answer");
        assert_eq!(
            lock(&s.tombstones).pool(&m, &never),
            Some(tombstones::Pool::Unheld)
        );
        answered(
            s.deposit(&env, 22, m, envelope.clone(), None, t).await,
            22,
            0,
        );
        assert!(
            stored(s.clone()).await.is_empty(),
            "stored again after its owner acknowledged it"
        );
        // A new envelope's push, after which an earlier one would have been queued too.
        answered(s.deposit(&env, 40, m, vec![1; 100], None, t).await, 40, 1);
        assert_eq!(
            cells(1).await,
            1,
            "pushed again after its owner acknowledged it"
        );

        // An ACK the store has not carried out yet (held at its commit) already counts.
        let second = vec![0x6b; 100];
        answered(s.deposit(&env, 23, m, second.clone(), None, t).await, 23, 1);
        assert_eq!(cells(1).await, 1);
        s.store.hold_commits(true);
        let acking = ack(&owner, 24, envelope_id(&second));
        s.store.until_a_commit_waits().await;
        let again = tokio::time::timeout(
            Duration::from_secs(5),
            s.deposit(&env, 25, m, second, None, t),
        )
        .await
        .expect("answered without the store");
        answered(again, 25, 0);
        s.store.hold_commits(false);
        acking.await.unwrap();
        answered(s.deposit(&env, 41, m, vec![2; 100], None, t).await, 41, 1);
        assert_eq!(
            cells(2).await,
            2,
            "the ACK's answer and the new envelope's push only"
        );

        // Another mailbox's copy of the same bytes is not that owner's to acknowledge.
        let other = MailboxId([4; 32]);
        answered(s.deposit(&env, 26, other, envelope, None, t).await, 26, 1);
        assert_eq!(s.store.fetch(other, t).await.unwrap().len(), 1);
    }

    /// A mailbox keeps at most `subscribers_per_mailbox` subscribers, a new one replacing the
    /// oldest, so that one deposit's pushes can take only that many of the relay's places
    /// (each held until its push is sent, up to 30 s on a circuit that reads nothing).
    #[test]
    fn a_mailbox_keeps_its_newest_subscribers_within_its_limit() {
        let s = service(MailboxLimits {
            subscribers_per_mailbox: 2,
            ..MailboxLimits::default()
        });
        let (_env, link) = client_link();
        let maker = CircuitMaker::new();
        let now = Instant::now();
        let circuits: Vec<Arc<Circuit>> = (1..=3)
            .map(|i| maker.circuit(&link, 0x8000_0000 + i, now).0)
            .collect();
        let (m, other) = (MailboxId([1; 32]), MailboxId([2; 32]));
        let reqs = || -> Vec<u32> {
            lock(&s.subscribers).by_mailbox[&m]
                .iter()
                .map(|sub| sub.req)
                .collect()
        };
        assert!(s.subscribe(&circuits[0], other, 9));
        for (i, c) in circuits.iter().enumerate() {
            assert!(s.subscribe(c, m, 10 + i as u32));
        }
        assert_eq!(reqs(), vec![11, 12], "the oldest went");
        assert_eq!(
            mailboxes_of(&s, &circuits[0]),
            vec![other],
            "its other one stays"
        );
        assert!(s.subscribe(&circuits[2], m, 13), "replacing its own");
        assert_eq!(reqs(), vec![11, 13]);
        assert!(s.subscribe(&circuits[0], m, 14));
        assert_eq!(reqs(), vec![13, 14]);
        assert_eq!(lock(&s.subscribers).total, 3);
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
            circuit_limits: Default::default(),
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
