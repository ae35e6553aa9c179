//! The client's consensus (`docs/spec.md` §5.9, §11.1): bootstrap from the cache or the
//! authorities, fetch the next one as soon as the authorities publish it (at the current one's
//! fresh-until), and keep using a cached consensus while it is still valid when no authority
//! answers. When a new consensus changes the mailbox ring, the one it replaced is kept beside
//! it for a while ([`NetDir::previous`]), so that owners read, and senders deposit at, the
//! replicas it named while the ring settles (`docs/spec.md` §9.2). Each fetch also compares
//! this device's clock with the answering authority's `Date` header ([`ClockSkew`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shallot_directory::fetch::{fetch_consensus_dated, FetchError, FetchStats, ServerDate};
use shallot_directory::network::NetworkFile;
use shallot_directory::schedule::{brings_nothing_new, failure_backoff};
use shallot_directory::verify::ConsensusCache;
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::{Consensus, Flags};
use shallot_rt::{lock, AbortOnDrop, SystemClock, WallClock};
use tracing::{debug, info};

use crate::dir_cache::{
    guards_asked_holding, sources, CacheError, CacheStats, GuardDirectory, Source,
};

pub use crate::err::DirError;

/// How far this device's clock was from an authority's at the last fetch that had an answer
/// (`docs/spec.md` §11.1, clock skew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockSkew {
    /// Seconds this clock is ahead of the authority's (negative: behind). Both are whole
    /// seconds, so a clock in step reads -1 to 1, plus the time the answer took.
    pub secs: i64,
    /// The authority compared with (its name in the network file).
    pub authority: String,
    /// When, by this clock (Unix seconds).
    pub measured_at: u64,
}

impl ClockSkew {
    /// The skew of a clock that reads `local` when the authority's `Date` says `server`.
    pub fn measure(local: u64, server: &ServerDate) -> ClockSkew {
        let secs = i128::from(local) - i128::from(server.date);
        ClockSkew {
            secs: i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
            authority: server.authority.clone(),
            measured_at: local,
        }
    }
}

/// The consensus this client uses, and how to get the next one.
pub struct NetDir {
    network: NetworkFile,
    cache: ConsensusCache,
    current: Mutex<Option<Arc<VerifiedConsensus>>>,
    /// The last consensus whose mailbox ring differs from the current one's, and when it was
    /// replaced (Unix seconds).
    previous: Mutex<Option<(Arc<VerifiedConsensus>, u64)>>,
    last_error: Mutex<Option<Arc<FetchError>>>,
    skew: Mutex<Option<ClockSkew>>,
    failures: std::sync::atomic::AtomicU32,
    fetch_timeout: Duration,
    clock: Arc<dyn WallClock>,
    /// The background refresh, once started; it stops when this is dropped.
    refresher: Mutex<Option<AbortOnDrop<()>>>,
    /// What this client's consensus fetches cost: diffs used, whole fetches, bytes.
    stats: FetchStats,
    /// The guards to ask before the authorities, once set (`docs/spec.md` §5.13).
    guard_dir: Mutex<Option<Weak<dyn GuardDirectory>>>,
    /// What asking guards gave.
    cache_stats: CacheStats,
    /// Why the last guard answer was refused, if one was.
    last_guard_failure: Mutex<Option<String>>,
}

/// Milliseconds past fresh-until before which no relay fetches the next consensus: the
/// authorities publish it at fresh-until (`docs/spec.md` §5.6).
pub const CACHE_DELAY_MS: u64 = 200;

/// The span, ms, of a relay's random delay beyond [`CACHE_DELAY_MS`] before it fetches the
/// consensus after one fresh for `span` seconds: a sixteenth of the period, at most 15 s, so
/// that a network's relays do not all ask the authorities in the same moment
/// (`docs/spec.md` §6.7).
pub fn cache_spread_ms(span: u64) -> u64 {
    (span.saturating_mul(1000) / 16).min(15_000)
}

/// A relay's delay, ms past fresh-until, before it fetches the next consensus, for a
/// consensus fresh for `span` seconds and a random `r`: from [`CACHE_DELAY_MS`] to that plus
/// [`cache_spread_ms`].
pub fn cache_fetch_delay_ms(span: u64, r: u64) -> u64 {
    CACHE_DELAY_MS + r % (cache_spread_ms(span) + 1)
}

/// Milliseconds the clients leave the last relay, for a consensus fresh for `span` seconds,
/// to fetch the next consensus, check it and make what it serves (`docs/spec.md` §5.13): an
/// eighth of the period, at most 3 s (a 10,000-relay network's diffs take a good part of a
/// second each, §5.12).
pub fn guard_margin_ms(span: u64) -> u64 {
    (span.saturating_mul(1000) / 8).min(3000)
}

/// Seconds a client waits past fresh-until before asking for the next consensus, beyond its
/// random delay, for a consensus fresh for `span` seconds: the last relay fetches it
/// [`CACHE_DELAY_MS`] plus [`cache_spread_ms`] after fresh-until, and is left
/// [`guard_margin_ms`] more; a client that asked its guard before that would go to the
/// authorities instead (`docs/spec.md` §5.13). At least 1. (A client's clock reads whole
/// seconds, rounded down, so it asks no earlier than this after fresh-until.)
pub fn guard_lead_secs(span: u64) -> u64 {
    (CACHE_DELAY_MS + cache_spread_ms(span) + guard_margin_ms(span))
        .div_ceil(1000)
        .max(1)
}

/// The span of a client's random delay before each fetch, seconds, for consensuses fresh for
/// `span` seconds: an eighth of it, from 1 s to 30 s ([`NetDir::next_refresh`]).
pub fn refresh_spread_secs(span: u64) -> u64 {
    (span / 8).clamp(1, 30)
}

impl NetDir {
    /// A client of the authorities in `network`, caching in `data_dir/consensus.txt`.
    pub fn new(network: NetworkFile, data_dir: &Path) -> Self {
        Self::with_clock(network, data_dir, Arc::new(SystemClock))
    }

    /// [`NetDir::new`] reading the time from `clock`.
    pub fn with_clock(network: NetworkFile, data_dir: &Path, clock: Arc<dyn WallClock>) -> Self {
        let fetch_timeout = Duration::from_secs(network.params.request_timeout_secs);
        NetDir {
            cache: ConsensusCache::new(data_dir.join("consensus.txt")),
            network,
            current: Mutex::new(None),
            previous: Mutex::new(None),
            last_error: Mutex::new(None),
            skew: Mutex::new(None),
            failures: std::sync::atomic::AtomicU32::new(0),
            fetch_timeout,
            clock,
            refresher: Mutex::new(None),
            stats: FetchStats::default(),
            guard_dir: Mutex::new(None),
            cache_stats: CacheStats::default(),
            last_guard_failure: Mutex::new(None),
        }
    }

    /// Asks the guards `source` names for each next consensus before the authorities
    /// (`docs/spec.md` §5.13). Held weakly: the circuit manager that sets itself here holds
    /// this `NetDir`.
    pub fn set_guard_directory(&self, source: Weak<dyn GuardDirectory>) {
        *lock(&self.guard_dir) = Some(source);
    }

    /// What asking guards for the consensus gave so far.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.cache_stats
    }

    /// Why the last guard answer was refused (`<guard nickname>: <reason>`), if one was.
    pub fn last_guard_failure(&self) -> Option<String> {
        lock(&self.last_guard_failure).clone()
    }

    /// A `NetDir` that already holds `consensus`, unverified (trusted as if verified), and
    /// knows no authority: for testing the layers above without a network.
    #[cfg(any(test, feature = "testing"))]
    pub fn preloaded(consensus: Consensus, clock: Arc<dyn WallClock>) -> Self {
        let network = NetworkFile {
            authorities: Vec::new(),
            params: shallot_directory::network::NetworkParams::default(),
        };
        let dir = Self::with_clock(network, Path::new(""), clock);
        dir.set(Arc::new(VerifiedConsensus::assume_verified(consensus)));
        dir
    }

    /// The time by this directory's clock, unix seconds.
    pub fn unix_now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// The network file.
    pub fn network(&self) -> &NetworkFile {
        &self.network
    }

    fn held(&self) -> Option<Arc<VerifiedConsensus>> {
        lock(&self.current).clone()
    }

    /// Holds `c`. The one it replaces is kept as the previous consensus if its mailbox ring
    /// differs and it has not expired: an expired consensus (held since before a restart or a
    /// sleep) names replicas nobody deposits at or reads any more, so reading and depositing
    /// there too would only cost work and show more relays this client's mailboxes.
    fn set(&self, c: Arc<VerifiedConsensus>) {
        let replaced = lock(&self.current).replace(c.clone());
        if let Some(old) = replaced {
            let now = self.clock.unix_now();
            if now <= old.valid_until && !same_ring(&old, &c) {
                *lock(&self.previous) = Some((old, now));
            }
        }
    }

    /// Replaces the consensus held with `consensus`, unverified, as a refresh would: for
    /// testing the layers above without a network.
    #[cfg(any(test, feature = "testing"))]
    pub fn install(&self, consensus: Consensus) {
        self.set(Arc::new(VerifiedConsensus::assume_verified(consensus)));
    }

    /// The last consensus whose mailbox ring differs from the current one's, if it was
    /// replaced less than `settle` seconds ago: the ring is settling, and mail may still sit
    /// on the replicas it named.
    pub fn previous(&self, settle: u64) -> Option<Arc<VerifiedConsensus>> {
        let now = self.clock.unix_now();
        lock(&self.previous)
            .as_ref()
            .filter(|(_, at)| now < at.saturating_add(settle))
            .map(|(c, _)| c.clone())
    }

    /// Loads the cached consensus, then tries the authorities. Succeeds if either gives a
    /// valid consensus. A cached consensus that has expired is held all the same, as one
    /// held past its lifetime by a running client is: it is not used, but the authorities
    /// are asked for the diff from it (`docs/spec.md` §5.12).
    pub async fn bootstrap(&self) -> Result<Arc<VerifiedConsensus>, DirError> {
        if self.held().is_none() {
            let now = self.clock.unix_now();
            match self.cache.load(&self.network, now) {
                Ok(Some(c)) => {
                    debug!("using the cached consensus");
                    self.set(Arc::new(c));
                }
                Ok(None) => {}
                Err(e) => match self.cache.load_expired(&self.network, now) {
                    Some(c) => {
                        debug!("cached consensus not usable ({e}): held as the base for a diff");
                        self.set(Arc::new(c));
                    }
                    None => debug!("cached consensus not usable: {e}"),
                },
            }
        }
        let _ = self.refresh().await;
        self.consensus()
    }

    /// What this client's consensus fetches have cost so far: how many came as a diff from
    /// the consensus held, how many whole, and the bytes received (`docs/spec.md` §5.12).
    pub fn fetch_stats(&self) -> &FetchStats {
        &self.stats
    }

    /// Fetches a newer consensus; keeps the held one if none comes. With a consensus held
    /// that is valid, or expired but at most a day old ([`guards_asked_holding`]), the guards
    /// are asked first, over the links to them (`docs/spec.md` §5.13), and the authorities
    /// only when no guard gives a newer one; otherwise the authorities are asked, for a diff
    /// from the held one when one is held.
    pub async fn refresh(&self) -> Result<Arc<VerifiedConsensus>, DirError> {
        let held = self.held();
        if let Some(held) = &held {
            if let Some((c, text)) = self.refresh_from_guards(held).await {
                return Ok(self.adopt(c, &text));
            }
        }
        let now = self.clock.unix_now();
        // A consensus older than the directories keep as bases is not named: it would get no
        // diff, and would tell the authority when this client was last online. Any consensus
        // valid now is newer than it, so nothing is lost to rollback.
        let base = held
            .as_deref()
            .filter(|c| guards_asked_holding(c, now))
            .map(|c| &**c);
        let fetched =
            fetch_consensus_dated(&self.network, base, now, self.fetch_timeout, &self.stats).await;
        if let Some(date) = &fetched.date {
            *lock(&self.skew) = Some(ClockSkew::measure(self.clock.unix_now(), date));
        }
        match fetched.result {
            Ok((c, text)) => Ok(self.adopt(c, &text)),
            Err(e) => {
                let e = Arc::new(e);
                *lock(&self.last_error) = Some(e.clone());
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(DirError::Unavailable(e))
            }
        }
    }

    /// Asks the guards in turn for a consensus newer than `held`; `None` when none gave one.
    async fn refresh_from_guards(
        &self,
        held: &VerifiedConsensus,
    ) -> Option<(VerifiedConsensus, String)> {
        let now = self.clock.unix_now();
        // Older than the caches keep as bases: the authorities alone, and the guard set is
        // not touched by a consensus that old.
        let recent = guards_asked_holding(held, now);
        if !recent {
            return None;
        }
        let source = lock(&self.guard_dir).as_ref().and_then(Weak::upgrade)?;
        let guards = source.dir_guards(held);
        let ids: Vec<_> = guards.iter().map(|g| g.id).collect();
        // The guards together get one request's time: past it, the authorities are asked.
        // With an expired consensus the client can do nothing until it has a new one, and a
        // guard chosen a day ago may be gone: a third of that.
        let budget = if now <= held.valid_until {
            self.fetch_timeout
        } else {
            self.fetch_timeout / 3
        };
        let deadline = tokio::time::Instant::now() + budget;
        for next in sources(recent, &ids) {
            let Source::Guard(id) = next else { break };
            let Some(guard) = guards.iter().find(|g| g.id == id) else {
                continue;
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            match source.fetch_from(guard, held, now, left).await {
                Ok(got) => {
                    self.cache_stats.from_guards.fetch_add(1, Ordering::Relaxed);
                    debug!(guard = %guard.nickname, "consensus from the guard");
                    return Some(got);
                }
                Err(e) => {
                    self.cache_stats.refused.fetch_add(1, Ordering::Relaxed);
                    // A guard that is merely behind, or has nothing yet, is routine; anything
                    // else is worth the operator's eye.
                    if matches!(e, CacheError::NotNewer { .. } | CacheError::Unavailable) {
                        debug!(guard = %guard.nickname, "consensus from the guard not used: {e}");
                    } else {
                        info!(guard = %guard.nickname, "consensus from the guard not used: {e}");
                    }
                    *lock(&self.last_guard_failure) = Some(format!("{}: {e}", guard.nickname));
                }
            }
        }
        None
    }

    /// Caches and installs a fetched consensus.
    fn adopt(&self, c: VerifiedConsensus, text: &str) -> Arc<VerifiedConsensus> {
        if let Err(e) = self.cache.store(text) {
            info!("cannot cache the consensus: {e}");
        }
        self.hold_fetched(c)
    }

    /// Installs a fetched consensus. One no newer than the held one, when that is no longer
    /// fresh, counts as a failure for the wait before the next fetch: an authority serves the
    /// previous consensus while too few have signed the next (`docs/spec.md` §5.6), and that
    /// can last until the previous one expires; every client asking each second meanwhile
    /// would flood the authorities.
    fn hold_fetched(&self, c: VerifiedConsensus) -> Arc<VerifiedConsensus> {
        let held = self.held().map(|h| h.valid_after);
        let stale = brings_nothing_new(&c, held, self.clock.unix_now());
        let c = Arc::new(c);
        self.set(c.clone());
        *lock(&self.last_error) = None;
        match stale {
            true => self.failures.fetch_add(1, Ordering::Relaxed),
            false => self.failures.swap(0, Ordering::Relaxed),
        };
        c
    }

    /// How far this device's clock was from an authority's at the last fetch that got an
    /// answer with a `Date`; `None` before any.
    pub fn clock_skew(&self) -> Option<ClockSkew> {
        lock(&self.skew).clone()
    }

    /// The consensus to use now: the one held, if still valid.
    pub fn consensus(&self) -> Result<Arc<VerifiedConsensus>, DirError> {
        let now = self.clock.unix_now();
        let last_failure = lock(&self.last_error).clone();
        match self.held() {
            Some(c) if now <= c.valid_until => Ok(c),
            Some(c) => Err(DirError::Expired {
                ago: now - c.valid_until,
                last_failure,
                refreshing: lock(&self.refresher).is_some(),
            }),
            None => Err(last_failure.map_or(DirError::NotYetFetched, DirError::Unavailable)),
        }
    }

    /// When to fetch next. Authorities publish each consensus at the previous one's
    /// fresh-until, so while the one held is fresh the next fetch is at its fresh-until plus
    /// [`guard_lead_secs`] (by then the guards, which fetch soon after fresh-until, hold it to
    /// serve) plus a random delay (up to an eighth of the period, at most 30 s, so that
    /// clients do not all ask at once), but never more than two of the network file's voting
    /// intervals away, less up to a quarter interval at random: a consensus fresh for longer
    /// than the network votes (a fault of the authorities, or a clock far behind) cannot stop
    /// the client asking. Otherwise, after failures, the wait doubles from 1 s up to 64 s.
    pub fn next_refresh(&self) -> Duration {
        let now = self.clock.unix_now();
        match self.held() {
            Some(c) if now < c.fresh_until => {
                let span = c.fresh_until.saturating_sub(c.valid_after).max(1);
                let jitter = rand::random::<u64>() % refresh_spread_secs(span);
                let lead = guard_lead_secs(span).saturating_add(jitter);
                // The cap less up to a quarter interval: clients capped together spread too.
                let interval = self.network.params.voting_interval_secs.max(1);
                let cap = interval.saturating_mul(2) - rand::random::<u64>() % interval.div_ceil(4);
                Duration::from_secs((c.fresh_until - now).saturating_add(lead).min(cap))
            }
            _ => failure_backoff(self.failures.load(Ordering::Relaxed), 6),
        }
    }

    /// Keeps the consensus fresh from now until this `NetDir` is dropped: every user of the
    /// network calls this once it has bootstrapped (a one-shot command as much as the chat,
    /// since a consensus on a test network lives for seconds). Calling it again does nothing.
    pub fn start_refresher(self: &Arc<Self>) {
        let mut slot = lock(&self.refresher);
        if slot.is_some() {
            return;
        }
        // The task holds only a weak reference, so that dropping the last `Arc` ends it.
        let weak = Arc::downgrade(self);
        *slot = Some(AbortOnDrop::new(tokio::spawn(async move {
            loop {
                let Some(wait) = weak.upgrade().map(|dir| dir.next_refresh()) else {
                    return;
                };
                tokio::time::sleep(wait).await;
                let Some(dir) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = dir.refresh().await {
                    debug!("consensus refresh: {e}");
                }
            }
        })));
    }
}

/// Whether two consensuses lay out the same mailbox rings: the same Running mailbox relays
/// and the same shared random values for the epochs.
fn same_ring(a: &Consensus, b: &Consensus) -> bool {
    let members = |c: &Consensus| -> Vec<_> {
        c.relays
            .iter()
            .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
            .map(|r| r.id)
            .collect()
    };
    a.shared_rand.epochs == b.shared_rand.epochs && members(a) == members(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing;
    use shallot_rt::FakeClock;

    /// Guards whose directory answers never come.
    struct Stalling {
        guards: Vec<shallot_proto::dir::RelayEntry>,
        asked: Mutex<usize>,
    }

    impl GuardDirectory for Stalling {
        fn dir_guards(&self, _: &VerifiedConsensus) -> Vec<shallot_proto::dir::RelayEntry> {
            self.guards.clone()
        }

        fn fetch_from<'a>(
            &'a self,
            _: &'a shallot_proto::dir::RelayEntry,
            _: &'a Consensus,
            _: u64,
            limit: Duration,
        ) -> crate::dir_cache::GuardFetch<'a> {
            *lock(&self.asked) += 1;
            Box::pin(async move {
                tokio::time::sleep(limit).await;
                Err(CacheError::Timeout {
                    limit,
                    got: 0,
                    of: None,
                })
            })
        }
    }

    /// A directory holding [`held`]'s consensus whose two guards stall, the consensus, the
    /// guards (which count the requests), and the source to keep alive.
    fn stalling_guards(
        clock: &Arc<FakeClock>,
    ) -> (
        NetDir,
        Arc<VerifiedConsensus>,
        Arc<Stalling>,
        Arc<dyn GuardDirectory>,
    ) {
        let dir = held(clock);
        let consensus = dir.held().unwrap();
        let stalling = Arc::new(Stalling {
            guards: consensus.relays[..2].to_vec(),
            asked: Mutex::new(0),
        });
        let source: Arc<dyn GuardDirectory> = stalling.clone();
        dir.set_guard_directory(Arc::downgrade(&source));
        (dir, consensus, stalling, source)
    }

    #[tokio::test(start_paused = true)]
    async fn stalling_guards_together_cost_one_request_time() {
        // An unreachable guard and then a silent one must not hold the refresh for one time
        // limit each before the authorities are asked.
        let clock = Arc::new(FakeClock::new(1000));
        let (dir, consensus, stalling, _source) = stalling_guards(&clock);
        let started = tokio::time::Instant::now();
        assert!(dir.refresh_from_guards(&consensus).await.is_none());
        assert_eq!(started.elapsed(), dir.fetch_timeout);
        assert_eq!(*lock(&stalling.asked), 1, "the first took all the time");
    }

    #[tokio::test(start_paused = true)]
    async fn with_an_expired_consensus_stalling_guards_cost_a_third_of_that() {
        // A client back after a while, whose guards are gone or stall: it can do nothing
        // until it has a new consensus, so the authorities are asked sooner.
        let clock = Arc::new(FakeClock::new(1000));
        let (dir, consensus, stalling, _source) = stalling_guards(&clock);
        clock.set(consensus.valid_until + 3600);
        let started = tokio::time::Instant::now();
        assert!(dir.refresh_from_guards(&consensus).await.is_none());
        let third = dir.fetch_timeout / 3;
        let took = started.elapsed();
        assert!(
            took >= third && took <= third + Duration::from_millis(1),
            "{took:?}"
        );
        // Older than the caches keep: not asked at all.
        clock.set(consensus.valid_after + shallot_directory::day_bases::WINDOW_SECS + 1);
        let started = tokio::time::Instant::now();
        assert!(dir.refresh_from_guards(&consensus).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(*lock(&stalling.asked), 1);
    }

    /// A consensus valid from 1000, fresh until 1800, valid until 4600.
    fn held(clock: &Arc<FakeClock>) -> NetDir {
        let c = testing::consensus(testing::relays(3), 1000, 1800, 4600);
        NetDir::preloaded(c, clock.clone())
    }

    #[test]
    fn a_consensus_is_used_until_it_expires_and_refused_after() {
        let clock = Arc::new(FakeClock::new(1000));
        let dir = held(&clock);
        clock.set(4600);
        assert_eq!(dir.consensus().unwrap().valid_until, 4600);
        clock.set(4610);
        let err = dir.consensus().unwrap_err();
        assert!(
            matches!(
                err,
                DirError::Expired {
                    ago: 10,
                    last_failure: None,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_consensus_that_changes_the_ring_is_kept_as_previous_while_it_settles() {
        let clock = Arc::new(FakeClock::new(1000));
        let dir = held(&clock);
        assert!(dir.previous(600).is_none());
        // The same ring again: nothing to remember.
        dir.install(testing::consensus(testing::relays(3), 1800, 2600, 5400));
        assert!(dir.previous(600).is_none());
        // Two more mailbox relays: the old ring is kept for the settling time.
        dir.install(testing::consensus(testing::relays(5), 2600, 3400, 6200));
        assert_eq!(dir.previous(600).unwrap().relays.len(), 3);
        assert_eq!(dir.consensus().unwrap().relays.len(), 5);
        clock.set(1599);
        assert!(dir.previous(600).is_some());
        clock.set(1600);
        assert!(dir.previous(600).is_none(), "settled");
    }

    #[test]
    fn an_expired_consensus_is_not_kept_as_previous() {
        // A client back after a day holds its expired consensus only as a diff base: nobody
        // deposits or reads by its ring any more (a sender refuses an expired consensus, and
        // the relays have handed the mail on since), so its replicas would only cost every
        // send three more deposits, and tell three more relays of each read, for a day.
        let clock = Arc::new(FakeClock::new(1000));
        let dir = held(&clock);
        clock.set(4601);
        dir.install(testing::consensus(testing::relays(5), 4200, 5000, 7800));
        assert_eq!(dir.consensus().unwrap().relays.len(), 5);
        assert!(dir.previous(u64::MAX).is_none());
        // One still valid when it is replaced is kept, as before.
        clock.set(4700);
        dir.install(testing::consensus(testing::relays(7), 4700, 5500, 8300));
        assert_eq!(dir.previous(u64::MAX).unwrap().relays.len(), 5);
    }

    #[test]
    fn without_a_consensus_the_error_says_none_was_fetched() {
        let clock: Arc<FakeClock> = Arc::new(FakeClock::new(1000));
        let network = NetworkFile {
            authorities: Vec::new(),
            params: shallot_directory::network::NetworkParams::default(),
        };
        let dir = NetDir::with_clock(network, Path::new(""), clock);
        assert!(matches!(dir.consensus(), Err(DirError::NotYetFetched)));
    }

    #[test]
    fn the_next_fetch_is_at_fresh_until_plus_a_bounded_delay() {
        let clock = Arc::new(FakeClock::new(1000));
        let dir = held(&clock);
        // The consensus held is fresh for 800 s: the relays fetch the next from 0.2 s to
        // 0.2 + min(800 / 16, 15) = 15.2 s after its fresh-until, so the clients wait 19 s
        // (leaving them 3 s more), then up to min(800 / 8, 30) s of jitter.
        assert_eq!(guard_lead_secs(800), 19);
        for _ in 0..50 {
            let wait = dir.next_refresh().as_secs();
            assert!((819..849).contains(&wait), "{wait}");
        }
        clock.set(1700);
        assert!((119..149).contains(&dir.next_refresh().as_secs()));
    }

    /// A consensus that names a fresh-until far beyond the network's voting interval (here a
    /// week, and the last second there is) is asked again within two intervals all the same.
    #[test]
    fn a_consensus_fresh_for_too_long_is_asked_again_within_two_intervals() {
        let interval = shallot_directory::network::NetworkParams::default().voting_interval_secs;
        for fresh_until in [1000 + 7 * 86_400, u64::MAX - 1] {
            let clock = Arc::new(FakeClock::new(1000));
            let c = testing::consensus(testing::relays(3), 1000, fresh_until, u64::MAX);
            let dir = NetDir::preloaded(c, clock.clone());
            for _ in 0..20 {
                let wait = dir.next_refresh().as_secs();
                assert!(
                    wait <= 2 * interval && wait > 2 * interval - interval / 4,
                    "{wait}"
                );
            }
        }
    }

    #[test]
    fn clients_ask_their_guards_only_once_every_relay_has_fetched() {
        for span in (1..=120).chain([600, 3600, 86_400, 7 * 86_400]) {
            let last_relay = cache_fetch_delay_ms(span, cache_spread_ms(span));
            assert_eq!(last_relay, CACHE_DELAY_MS + cache_spread_ms(span), "{span}");
            assert_eq!(
                cache_fetch_delay_ms(span, cache_spread_ms(span) + 1),
                CACHE_DELAY_MS
            );
            // The last relay is left its margin (an eighth of the period, at most 3 s) to
            // fetch the consensus, check it and make its diffs.
            let margin = guard_margin_ms(span);
            assert!(
                guard_lead_secs(span) * 1000 >= last_relay + margin,
                "{span}"
            );
            assert!(cache_spread_ms(span) <= 15_000);
            // And the whole lead stays within the period.
            assert!(
                guard_lead_secs(span) * 1000 < (span * 1000).max(1000) + 1,
                "{span}"
            );
        }
        // Test networks voting every 1-4 s keep the clients' lead of a second; the
        // production interval spreads the relays over 15 s.
        for span in 1..=4 {
            assert_eq!(guard_lead_secs(span), 1, "{span}");
        }
        assert_eq!(cache_spread_ms(2), 125);
        assert_eq!(cache_spread_ms(60), 3750);
        assert_eq!(guard_lead_secs(60), 7);
        assert_eq!(cache_spread_ms(3600), 15_000);
        assert_eq!(guard_lead_secs(3600), 19);
    }

    /// An authority that answers "Tue, 01 Dec 2026 03:30:00 GMT" (1796095800), refusing.
    async fn refusing_authority() -> (NetworkFile, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            let answer = "HTTP/1.1 503 Service Unavailable\r\nDate: Tue, 01 Dec 2026 03:30:00 \
                          GMT\r\nContent-Length: 4\r\n\r\nbusy";
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        (one_authority(address), server)
    }

    /// A network file naming one authority, `auth1` at `address`, with a key of its own.
    fn one_authority(address: std::net::SocketAddr) -> NetworkFile {
        let key = shallot_crypto::keys::IdentityKeypair::generate(&mut rand::thread_rng()).public();
        NetworkFile {
            authorities: vec![shallot_directory::network::AuthorityInfo {
                name: "auth1".into(),
                address,
                key,
            }],
            params: shallot_directory::network::NetworkParams::default(),
        }
    }

    /// An authority that refuses every request (503), keeping each request's first line.
    async fn recording_authority() -> (NetworkFile, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]);
                lock(&kept).push(text.lines().next().unwrap_or("").to_string());
                let answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        (one_authority(address), seen)
    }

    /// A client holding a consensus expired but kept as a base asks an authority for the
    /// diff from it; one holding a consensus older than any directory keeps asks for the
    /// whole one without naming it (naming it would only say when it was last online).
    #[tokio::test]
    async fn a_consensus_older_than_a_day_is_not_named_to_an_authority() {
        let (network, seen) = recording_authority().await;
        let mut c = testing::consensus(testing::relays(3), 1000, 1800, 4600);
        let signer = shallot_crypto::keys::IdentityKeypair::generate(&mut rand::thread_rng());
        let sig = c.sign_body(&signer).unwrap();
        c.add_signature(signer.public(), sig);
        let clock = Arc::new(FakeClock::new(4601));
        let dir = NetDir::with_clock(network, Path::new("/nonexistent"), clock.clone());
        dir.install(c.clone());
        assert!(dir.refresh().await.is_err());
        let asked = std::mem::take(&mut *lock(&seen));
        assert!(asked[0].starts_with("GET /consensus/diff/"), "{asked:?}");
        clock.set(1000 + shallot_directory::day_bases::WINDOW_SECS + 1);
        assert!(dir.refresh().await.is_err());
        let asked = lock(&seen).clone();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(asked[0].starts_with("GET /consensus.z "), "{asked:?}");
    }

    /// A clock two hours fast: no consensus verifies, and the skew says why.
    #[tokio::test]
    async fn the_clock_is_compared_with_the_authoritys_date_even_when_it_refuses() {
        let (network, server) = refusing_authority().await;
        let clock = Arc::new(FakeClock::new(1_796_095_800 + 7200));
        let dir = NetDir::with_clock(network, Path::new("/nonexistent"), clock.clone());
        assert_eq!(dir.clock_skew(), None, "nothing measured yet");
        assert!(dir.refresh().await.is_err());
        server.await.unwrap();
        assert_eq!(
            dir.clock_skew(),
            Some(ClockSkew {
                secs: 7200,
                authority: "auth1".into(),
                measured_at: 1_796_095_800 + 7200,
            })
        );
        // Behind reads negative; the header's whole seconds leave a clock in step at 0.
        let date = ServerDate {
            authority: "a".into(),
            date: 1000,
        };
        assert_eq!(ClockSkew::measure(940, &date).secs, -60);
        assert_eq!(ClockSkew::measure(1000, &date).secs, 0);
        assert_eq!(
            ClockSkew::measure(
                0,
                &ServerDate {
                    authority: "a".into(),
                    date: u64::MAX
                }
            )
            .secs,
            i64::MIN
        );
    }

    #[test]
    fn the_same_consensus_again_once_it_is_not_fresh_doubles_the_wait() {
        let clock = Arc::new(FakeClock::new(1900));
        let dir = held(&clock);
        let same = || {
            let c = testing::consensus(testing::relays(3), 1000, 1800, 4600);
            VerifiedConsensus::assume_verified(c)
        };
        let mut waits = Vec::new();
        for _ in 0..3 {
            dir.hold_fetched(same());
            waits.push(dir.next_refresh().as_secs());
        }
        assert_eq!(
            waits,
            [2, 4, 8],
            "not every second while no newer one is served"
        );
        // A newer one resets the count: it is fresh, so the next fetch is at its fresh-until.
        let newer = testing::consensus(testing::relays(3), 1800, 2600, 5400);
        dir.hold_fetched(VerifiedConsensus::assume_verified(newer));
        assert!(dir.next_refresh().as_secs() > 700);
        clock.set(2600);
        assert_eq!(dir.next_refresh().as_secs(), 1, "the count was reset");
    }

    #[tokio::test]
    async fn failed_fetches_double_the_wait_up_to_a_minute() {
        let clock = Arc::new(FakeClock::new(1900));
        let dir = held(&clock);
        let mut waits = Vec::new();
        for _ in 0..8 {
            // No authority is configured: every fetch fails at once, without a socket.
            let err = dir.refresh().await.unwrap_err();
            assert!(matches!(err, DirError::Unavailable(_)));
            waits.push(dir.next_refresh().as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64]);
        // The consensus held is still used, with the failure kept as the reason once expired.
        assert!(dir.consensus().is_ok());
        clock.set(5000);
        assert!(matches!(
            dir.consensus(),
            Err(DirError::Expired {
                last_failure: Some(_),
                ..
            })
        ));
    }
}
