//! Repair under churn, the relay's side (`docs/spec.md` §9.6): the I/O around the pure
//! decisions of [`shallot_proto::repair`].
//!
//! * On each new consensus, the relay runs [`repair::plan`] for every mailbox it holds,
//!   comparing the ring of the mailbox's epoch in the previous consensus with the new one,
//!   and pushes the envelopes it is told to the relays that became holders.
//! * On graceful shutdown, [`Repairer::hand_over`] pushes every mailbox to the holders of the
//!   ring without this relay ([`repair::leaving`]), within a time limit.
//!
//! * After those pushes, and every `sync_interval` (with jitter) besides, it runs an
//!   anti-entropy round ([`Repairer::sync_round`], `super::sync`) with the other holders of
//!   the mailboxes it holds, within the round's bounds on mailboxes and bytes.
//!
//! A push is an ordinary DEPOSIT, sent as a client would: over a one-hop circuit to the
//! target, one circuit per mailbox (so no circuit carries two mailbox ids), the circuits to
//! one target sharing one link. The target stores it like any deposit and answers RESULT; a
//! duplicate is not stored again, though, like any deposit the target admits, it is pushed to
//! the mailbox's subscribers there (who keep one copy of an envelope id). Pushes that fail are
//! retried at the next consensus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_net::{Circuit, ClientChannel, HopSpec};
use shallot_proto::dir::{Consensus, Flags, RelayEntry};
use shallot_proto::mailbox::{EnvelopeId, MailboxId, MAX_SYNC_IDS};
use shallot_proto::placement::Ring;
use shallot_proto::repair::{self, Duty, Held, Senders, Transfer};
use shallot_rt::{lock, unix_now};
use tokio::sync::watch;
use tracing::{debug, info};

use super::push;
use super::store::{Holding, Store};
use super::sync::{self, Budget};
use crate::config::RepairSettings;
use crate::shell::Env;
use crate::stats::Stats;

/// How long one push (link, circuit, deposits and their answers) may take.
const PUSH_LIMIT: Duration = Duration::from_secs(15);

/// How long a relay shutting down spends handing its mailboxes over.
pub(crate) const HANDOFF_LIMIT: Duration = Duration::from_secs(20);

/// A relay's repair: what it acted on last, and pushes still owed.
pub(crate) struct Repairer {
    me: RelayId,
    store: Store,
    env: Arc<Env>,
    settings: RepairSettings,
    latest: Mutex<Option<Arc<Consensus>>>,
    owed: Mutex<Vec<Transfer>>,
    /// The last mailbox the previous anti-entropy round covered: the next goes on after it.
    cursor: Mutex<Option<MailboxId>>,
    /// Anti-entropy rounds run, which moves the window of a large mailbox's ids.
    rounds: AtomicUsize,
    /// Serialises rounds (a periodic one and one after a consensus change).
    round_lock: tokio::sync::Mutex<()>,
}

/// What one anti-entropy round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoundReport {
    /// Mailboxes covered.
    pub(crate) mailboxes: usize,
    /// Summaries sent (one per mailbox and peer).
    pub(crate) summaries: usize,
    /// Envelopes the peers lacked and took.
    pub(crate) pushed: usize,
}

/// The relays on `consensus`'s rings: its Running relays with the Mailbox flag.
fn mailbox_relays(consensus: &Consensus) -> std::collections::BTreeSet<RelayId> {
    consensus
        .relays
        .iter()
        .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
        .map(|r| r.id)
        .collect()
}

/// The epoch a held mailbox belongs to: that of its oldest envelope here. Deposits go to the
/// current epoch's mailbox, so this is right for deposits; a mailbox received by repair after
/// its epoch ended is placed by a later epoch's ring (`docs/spec.md` §9.6 says what that
/// costs).
fn epoch_of(h: &Holding, epoch_secs: u64) -> u64 {
    h.oldest / epoch_secs.max(1)
}

/// Groups `holdings` by epoch, as the pure planner takes them.
fn by_epoch(holdings: Vec<Holding>, epoch_secs: u64) -> BTreeMap<u64, Vec<Held>> {
    let mut out: BTreeMap<u64, Vec<Held>> = BTreeMap::new();
    for h in holdings {
        out.entry(epoch_of(&h, epoch_secs)).or_default().push(Held {
            mailbox: h.mailbox,
            ids: h.ids,
        });
    }
    out
}

impl Repairer {
    /// Repair for relay `me`, whose mailboxes are in `store`, counting in `env`'s stats.
    pub(crate) fn new(me: RelayId, store: Store, env: Arc<Env>, settings: RepairSettings) -> Self {
        Repairer {
            me,
            store,
            env,
            settings,
            latest: Mutex::new(None),
            owed: Mutex::new(Vec::new()),
            cursor: Mutex::new(None),
            rounds: AtomicUsize::new(0),
            round_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs an anti-entropy round every `sync_interval`, each wait drawn uniformly from half
    /// to one and a half times it (so that relays do not all sync at once), until the relay
    /// stops.
    pub(crate) async fn sync_loop(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        loop {
            let mean = self.settings.sync_interval.as_secs_f64();
            let wait = Duration::from_secs_f64(mean * (0.5 + rand::random::<f64>()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => return,
            }
            let Some(consensus) = lock(&self.latest).clone() else {
                continue;
            };
            self.sync_round(&consensus).await;
        }
    }

    /// One anti-entropy round (`docs/spec.md` §9.6): for up to `sync_mailboxes` of the
    /// mailboxes held here, going on from where the last round stopped, a SYNC to each other
    /// holder of `consensus`'s ring and the deposits its WANT asks for, all peers at once,
    /// within `sync_bytes` in all.
    pub(crate) async fn sync_round(&self, consensus: &Consensus) -> RoundReport {
        let _one_at_a_time = self.round_lock.lock().await;
        let holdings = match self.store.holdings(unix_now()).await {
            Ok(h) => h,
            Err(e) => {
                debug!("anti-entropy: cannot list mailboxes: {e}");
                return RoundReport::default();
            }
        };
        let cursor = *lock(&self.cursor);
        let start = holdings.partition_point(|h| Some(h.mailbox) <= cursor);
        let chosen: Vec<&Holding> = holdings[start..]
            .iter()
            .chain(holdings[..start].iter())
            .take(self.settings.sync_mailboxes)
            .collect();
        *lock(&self.cursor) = chosen.last().map(|h| h.mailbox);
        let offset = self.rounds.fetch_add(1, Ordering::Relaxed) * MAX_SYNC_IDS;
        let mut rings: BTreeMap<u64, Ring> = BTreeMap::new();
        let mut by_peer: BTreeMap<RelayId, Vec<(MailboxId, Vec<EnvelopeId>)>> = BTreeMap::new();
        let mut report = RoundReport {
            mailboxes: chosen.len(),
            ..RoundReport::default()
        };
        for h in &chosen {
            let epoch = epoch_of(h, consensus.params.epoch_secs);
            let ring = rings
                .entry(epoch)
                .or_insert_with(|| Ring::of_consensus(consensus, epoch));
            let peers = match repair::duty(&self.me, ring, &h.mailbox, |_| false) {
                Duty::Keep { peers } => peers,
                Duty::HandOver { to } => to,
            };
            let ids = sync::window(&h.ids, offset);
            for p in peers.into_iter().filter(|p| *p != self.me) {
                by_peer.entry(p).or_default().push((h.mailbox, ids.clone()));
                report.summaries += 1;
            }
        }
        let budget = Arc::new(Budget::new(self.settings.sync_bytes));
        let limit = sync::SYNC_LIMIT.max(self.settings.sync_interval / 2);
        let mut tasks = Vec::new();
        for (peer, list) in by_peer {
            let Some(entry) = consensus.relays.iter().find(|r| r.id == peer).cloned() else {
                continue;
            };
            let (store, env, budget) = (self.store.clone(), self.env.clone(), budget.clone());
            tasks.push(tokio::spawn(async move {
                let work = sync::sync_with(&store, &env.stats, &entry, &list, &budget);
                match tokio::time::timeout(limit, work).await {
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => {
                        debug!(to = %entry.id, "anti-entropy failed: {e}");
                        0
                    }
                    Err(_) => {
                        debug!(to = %entry.id, "anti-entropy timed out");
                        0
                    }
                }
            }));
        }
        for t in tasks {
            report.pushed += t.await.unwrap_or(0);
        }
        if report.pushed > 0 {
            info!(
                ?report,
                "anti-entropy round pushed envelopes other holders lacked"
            );
        } else {
            debug!(?report, "anti-entropy round");
        }
        report
    }

    /// Acts on every new consensus until the relay stops.
    pub(crate) async fn follow(
        self: Arc<Self>,
        mut consensus: watch::Receiver<Option<Arc<Consensus>>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                changed = consensus.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stopped.changed() => return,
            }
            let Some(new) = consensus.borrow_and_update().clone() else {
                continue;
            };
            let old = lock(&self.latest).replace(new.clone());
            self.on_change(old.as_deref(), &new).await;
        }
    }

    /// The pushes a change from `old` to `new` calls for, made now.
    async fn on_change(&self, old: Option<&Consensus>, new: &Consensus) {
        let holdings = match self.store.holdings(unix_now()).await {
            Ok(h) => h,
            Err(e) => {
                debug!("repair: cannot list mailboxes: {e}");
                return;
            }
        };
        let mut transfers: Vec<Transfer> = std::mem::take(&mut *lock(&self.owed));
        for (epoch, held) in by_epoch(holdings, new.params.epoch_secs) {
            let before = old
                .map(|c| Ring::of_consensus(c, epoch))
                .unwrap_or_default();
            let after = Ring::of_consensus(new, epoch);
            // Every holder sends to newcomers at once, not waiting for the anti-entropy
            // round that follows (which a budget may cut short), §9.6.
            let plan = repair::plan(&self.me, &before, &after, &held, Senders::Every, |_| false);
            transfers.extend(plan.pushes);
        }
        if !transfers.is_empty() {
            let failed = self.push_all(new, transfers).await;
            lock(&self.owed).extend(failed);
        }
        // When the ring changed, holders that missed a deposit or a push catch up now rather
        // than at the next periodic round.
        if old.is_none_or(|old| mailbox_relays(old) != mailbox_relays(new)) {
            self.sync_round(new).await;
        }
    }

    /// Hands every mailbox over to the holders of the ring without this relay, spending at
    /// most `limit`. Returns how many envelopes the holders took.
    pub(crate) async fn hand_over(&self, limit: Duration) -> usize {
        let Some(consensus) = lock(&self.latest).clone() else {
            return 0;
        };
        let work = async {
            let holdings = self.store.holdings(unix_now()).await.unwrap_or_default();
            let mut transfers = Vec::new();
            for (epoch, held) in by_epoch(holdings, consensus.params.epoch_secs) {
                let ring = Ring::of_consensus(&consensus, epoch);
                for h in held {
                    for to in repair::leaving(&self.me, &ring, &h.mailbox, |_| false) {
                        transfers.push(Transfer {
                            to,
                            mailbox: h.mailbox,
                            ids: h.ids.clone(),
                        });
                    }
                }
            }
            let total: usize = transfers.iter().map(|t| t.ids.len()).sum();
            let failed: usize = self
                .push_all(&consensus, transfers)
                .await
                .iter()
                .map(|t| t.ids.len())
                .sum();
            total - failed
        };
        match tokio::time::timeout(limit, work).await {
            Ok(n) => {
                info!("handed {n} envelopes over before stopping");
                n
            }
            Err(_) => {
                info!("mailbox hand-over cut short after {limit:?}");
                0
            }
        }
    }

    /// Makes `transfers`, each target at once; returns those that failed.
    async fn push_all(&self, consensus: &Consensus, transfers: Vec<Transfer>) -> Vec<Transfer> {
        let mut by_target: BTreeMap<RelayId, Vec<Transfer>> = BTreeMap::new();
        for t in transfers.into_iter().filter(|t| t.to != self.me) {
            by_target.entry(t.to).or_default().push(t);
        }
        let mut tasks = Vec::new();
        for (to, list) in by_target {
            let Some(entry) = consensus.relays.iter().find(|r| r.id == to).cloned() else {
                continue;
            };
            let (store, env) = (self.store.clone(), self.env.clone());
            tasks.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                let push = push_to(&store, &env.stats, &entry, &list);
                match tokio::time::timeout(PUSH_LIMIT, push).await {
                    Ok(Ok(done)) => {
                        debug!(to = %entry.id, mailboxes = list.len(), "repair pushed");
                        for (t, ok) in list.into_iter().zip(done) {
                            if !ok {
                                failed.push(t);
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        debug!(to = %entry.id, "repair push failed: {e}");
                        failed = list;
                    }
                    Err(_) => {
                        debug!(to = %entry.id, "repair push timed out");
                        failed = list;
                    }
                }
                failed
            }));
        }
        let mut failed = Vec::new();
        for t in tasks {
            if let Ok(f) = t.await {
                failed.extend(f);
            }
        }
        failed
    }
}

/// Deposits each transfer's envelopes at `entry`, one circuit per mailbox over one link.
/// Returns, per transfer, whether every envelope was taken.
async fn push_to(
    store: &Store,
    stats: &Stats,
    entry: &RelayEntry,
    list: &[Transfer],
) -> Result<Vec<bool>, shallot_net::NetError> {
    let chan = ClientChannel::connect(entry.address, &entry.link_key, PUSH_LIMIT)
        .await
        .map_err(shallot_net::NetError::from)?;
    let hop = HopSpec::from(entry);
    let mut done = Vec::with_capacity(list.len());
    for t in list {
        done.push(push_mailbox(store, stats, &chan, &hop, t.mailbox, &t.ids).await);
    }
    chan.close();
    Ok(done)
}

/// Deposits the envelopes `ids` of `mailbox` over a circuit of their own, solving the
/// puzzles the target asks for ([`super::push`]); true if the target took every one (stored
/// or already held).
async fn push_mailbox(
    store: &Store,
    stats: &Stats,
    chan: &Arc<ClientChannel>,
    hop: &HopSpec,
    mailbox: MailboxId,
    ids: &[EnvelopeId],
) -> bool {
    let Ok(waiting) = store.bodies(mailbox, ids.to_vec(), unix_now()).await else {
        return false;
    };
    let envelopes: Vec<Vec<u8>> = waiting.into_iter().map(|(_, body)| body).collect();
    if envelopes.is_empty() {
        // Acknowledged or expired meanwhile: nothing owed.
        return true;
    }
    let Ok(circ) = Circuit::create(chan.clone(), hop, PUSH_LIMIT).await else {
        return false;
    };
    let sent = envelopes.len();
    let pushed = push::deposit_all(&circ, hop.id, mailbox, envelopes, 1).await;
    circ.close();
    match pushed {
        Ok(p) => {
            for _ in 0..p.solved {
                Stats::bump(&stats.mailbox_push_puzzles_solved);
            }
            p.taken == sent
        }
        Err(_) => false,
    }
}
