//! The circuit manager (`docs/spec.md` §11.3): builds circuits hop by hop with a time limit per
//! hop, retries with other relays after a failure (remembering recent failures), keeps a few
//! circuits built ahead of need (all but their last hop, which is added when a purpose names
//! it), finishes a few ahead to a last hop a purpose is about to name (a message being typed
//! to a contact whose mailbox relays are known), and stops handing circuits out after their
//! lifetime or when they close.
//!
//! The manager decides; a [`CircuitBuilder`] does the building. [`OnionBuilder`] builds real
//! circuits over links; tests give the manager a fake one and pause tokio's clock, which is
//! the manager's clock, so that retries, timeouts and relay avoidance run in milliseconds.
//! The submodule [`pool`] holds the decisions that need no builder at all.

pub mod pool;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::{Consensus, RelayEntry};
use shallot_rt::{lock, AbortOnDrop};
use tracing::debug;

use crate::channel::ClientChannel;
use crate::circuit::{Circuit, HopSpec};
use crate::dir_cache::{fetch_from_guard, GuardDirectory, GuardFetch};
use crate::err::{BuildStep, NetError};
use crate::guards::GuardSet;
use crate::netdir::NetDir;
use crate::path::choose_path;

pub use pool::{pick_guard, prefix_fits, prefix_usable, Failures};

/// How circuits are built and kept; the defaults are production values.
#[derive(Debug, Clone)]
pub struct CircuitConfig {
    /// Hops per circuit.
    pub hops: usize,
    /// Time limit for adding each hop (for the first, opening the link to it included).
    pub per_hop_timeout: Duration,
    /// Paths tried before giving up on one request.
    pub attempts: usize,
    /// A circuit is not handed out for new work after this long.
    pub lifetime: Duration,
    /// Circuits kept built ahead of need, each missing only its last hop.
    pub preemptive: usize,
    /// How long a relay that failed is left out of new paths.
    pub failure_memory: Duration,
    /// Full circuits kept finished ahead to a named last hop ([`CircuitManager::prepare`]);
    /// the oldest is closed to make room.
    pub prepared: usize,
    /// A circuit finished ahead and not asked for within this long is closed.
    pub prepared_lifetime: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            hops: 3,
            per_hop_timeout: Duration::from_secs(10),
            attempts: 4,
            lifetime: Duration::from_secs(600),
            preemptive: 6,
            failure_memory: Duration::from_secs(60),
            prepared: 8,
            prepared_lifetime: Duration::from_secs(120),
        }
    }
}

/// How often the maintenance task looks at the pool when nothing wakes it.
const LOOK: Duration = Duration::from_millis(500);

/// The manager's clock: tokio's, so that tests can pause and advance it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A circuit as the manager sees it.
pub trait ManagedCircuit: Send + Sync + 'static {
    /// Whether it has closed.
    fn is_closed(&self) -> bool;
    /// Closes it.
    fn close(&self);
}

impl ManagedCircuit for Circuit {
    fn is_closed(&self) -> bool {
        Circuit::is_closed(self)
    }
    fn close(&self) {
        Circuit::close(self)
    }
}

/// Builds circuits one hop at a time for the manager, which sets the time limits.
pub trait CircuitBuilder: Send + Sync + 'static {
    /// The circuits it builds.
    type Circuit: ManagedCircuit;

    /// Opens a circuit to `first`.
    fn create(
        &self,
        first: &RelayEntry,
    ) -> impl Future<Output = Result<Self::Circuit, NetError>> + Send;

    /// Extends `circ` by `next`.
    fn extend(
        &self,
        circ: &Self::Circuit,
        next: &RelayEntry,
    ) -> impl Future<Output = Result<(), NetError>> + Send;
}

/// Builds real circuits, over one link per first hop shared by its circuits.
pub struct OnionBuilder {
    per_hop: Duration,
    channels: Mutex<HashMap<RelayId, Arc<ClientChannel>>>,
}

impl OnionBuilder {
    /// A builder whose links and handshakes each get `per_hop`.
    pub fn new(per_hop: Duration) -> Self {
        OnionBuilder {
            per_hop,
            channels: Mutex::new(HashMap::new()),
        }
    }

    async fn channel_to(&self, relay: &RelayEntry) -> Result<Arc<ClientChannel>, NetError> {
        let open = lock(&self.channels)
            .get(&relay.id)
            .filter(|c| !c.is_closed())
            .cloned();
        if let Some(c) = open {
            return Ok(c);
        }
        let chan = ClientChannel::connect(relay.address, &relay.link_key, self.per_hop).await?;
        lock(&self.channels).insert(relay.id, chan.clone());
        Ok(chan)
    }
}

impl CircuitBuilder for OnionBuilder {
    type Circuit = Circuit;

    async fn create(&self, first: &RelayEntry) -> Result<Circuit, NetError> {
        let chan = self.channel_to(first).await?;
        Circuit::create(chan, &HopSpec::from(first), self.per_hop).await
    }

    async fn extend(&self, circ: &Circuit, next: &RelayEntry) -> Result<(), NetError> {
        circ.extend(&HopSpec::from(next), self.per_hop).await
    }
}

/// A circuit the manager built.
pub struct BuiltCircuit<C = Circuit> {
    /// The circuit.
    pub circuit: Arc<C>,
    /// Its relays, first to last.
    pub path: Vec<RelayEntry>,
    /// How long building it took.
    pub build_time: Duration,
    /// When it was built.
    pub built_at: Instant,
}

impl<C: ManagedCircuit> BuiltCircuit<C> {
    /// Whether it can still be handed out for new work.
    pub fn usable(&self, lifetime: Duration) -> bool {
        self.usable_at(lifetime, now())
    }

    /// Whether it can still be handed out for new work at `now`.
    pub fn usable_at(&self, lifetime: Duration, now: Instant) -> bool {
        !self.circuit.is_closed() && now.saturating_duration_since(self.built_at) < lifetime
    }

    /// The nicknames along its path, joined by arrows.
    pub fn describe(&self) -> String {
        self.path
            .iter()
            .map(|r| r.nickname.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

/// One circuit as the user's network panel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitSummary {
    /// The nicknames of its relays, first (the guard) to last.
    pub relays: Vec<String>,
    /// How long ago it was built.
    pub age: Duration,
    /// How long building it took.
    pub build_time: Duration,
}

/// A circuit finished ahead to a named last hop, and when it was finished.
type Prepared<C> = (Arc<BuiltCircuit<C>>, Instant);

/// Builds and keeps circuits for one client.
pub struct CircuitManager<B: CircuitBuilder = OnionBuilder> {
    dir: Arc<NetDir>,
    config: CircuitConfig,
    builder: B,
    guards: Mutex<GuardSet>,
    failures: Mutex<Failures>,
    pool: Mutex<Vec<Arc<BuiltCircuit<B::Circuit>>>>,
    /// Full circuits finished ahead to a named last hop, with when each was finished, oldest
    /// first; each is handed out once.
    prepared: Mutex<Vec<Prepared<B::Circuit>>>,
    /// Last hops a circuit is being finished ahead to now.
    preparing: Mutex<HashSet<RelayId>>,
    /// Woken when a prepare ends, however it ends.
    prepare_ended: tokio::sync::Notify,
    /// Woken when the last of the circuits being asked for is ready (or failed), so that the
    /// maintenance task refills the pool at once rather than at its next look, without
    /// competing with those requests' own extensions.
    wanted: tokio::sync::Notify,
    /// Requests for circuits ([`CircuitManager::get`]) in progress.
    asking: std::sync::atomic::AtomicUsize,
}

impl CircuitManager {
    /// A manager building real circuits, using `dir`'s consensus and the guard set saved in
    /// `data_dir`.
    pub fn new(dir: Arc<NetDir>, data_dir: PathBuf, config: CircuitConfig) -> Arc<Self> {
        let builder = OnionBuilder::new(config.per_hop_timeout);
        let mgr = Self::with_builder(dir, data_dir, config, builder);
        // The consensus is fetched from the guards from now on (`docs/spec.md` §5.13).
        let source: Weak<dyn GuardDirectory> = Arc::downgrade(&mgr) as Weak<CircuitManager>;
        mgr.dir.set_guard_directory(source);
        mgr
    }
}

impl GuardDirectory for CircuitManager {
    fn dir_guards(&self, consensus: &VerifiedConsensus) -> Vec<RelayEntry> {
        // A guard that failed lately (its link could not be opened, for one) is not asked:
        // it would cost the whole wait before the next source.
        let avoid = self.recent_failures();
        let mut guards = lock(&self.guards);
        // An expired consensus (a client back after a while) only names the guards already
        // chosen, to ask for a new one: guards are neither dropped nor drawn by it.
        let now = self.dir.unix_now();
        if now <= consensus.valid_until {
            guards.update_at(consensus, now, &mut rand::thread_rng());
        }
        guards
            .guards()
            .iter()
            .filter(|id| !avoid.contains(id))
            .filter_map(|id| consensus.relay(id).cloned())
            .collect()
    }

    fn fetch_from<'a>(
        &'a self,
        guard: &'a RelayEntry,
        held: &'a Consensus,
        now: u64,
        limit: Duration,
    ) -> GuardFetch<'a> {
        Box::pin(async move {
            // Opening the link counts against the same limit; a guard that cannot be reached
            // is left out of new paths and directory requests for the failure memory.
            let opened = tokio::time::timeout(limit, self.builder.channel_to(guard))
                .await
                .unwrap_or(Err(NetError::Timeout(BuildStep::Creating)));
            let chan = match opened {
                Ok(chan) => chan,
                Err(e) => {
                    lock(&self.failures).note(guard.id, self::now());
                    return Err(e.into());
                }
            };
            let hop = HopSpec::from(guard);
            let stats = self.dir.cache_stats();
            fetch_from_guard(
                chan,
                &hop,
                Some(held),
                self.dir.network(),
                now,
                limit,
                stats,
            )
            .await
        })
    }
}

impl<B: CircuitBuilder> CircuitManager<B> {
    /// A manager that builds with `builder`.
    pub fn with_builder(
        dir: Arc<NetDir>,
        data_dir: PathBuf,
        config: CircuitConfig,
        builder: B,
    ) -> Arc<Self> {
        Arc::new(CircuitManager {
            dir,
            config,
            builder,
            guards: Mutex::new(GuardSet::load(&data_dir)),
            failures: Mutex::new(Failures::default()),
            pool: Mutex::new(Vec::new()),
            prepared: Mutex::new(Vec::new()),
            preparing: Mutex::new(HashSet::new()),
            prepare_ended: tokio::sync::Notify::new(),
            wanted: tokio::sync::Notify::new(),
            asking: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The consensus source.
    pub fn netdir(&self) -> &Arc<NetDir> {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitConfig {
        &self.config
    }

    /// Relays that failed recently and are left out of new paths.
    pub fn recent_failures(&self) -> HashSet<RelayId> {
        lock(&self.failures).recent(now(), self.config.failure_memory)
    }

    /// The current guard set.
    pub fn guards(&self) -> Vec<RelayId> {
        lock(&self.guards).guards().to_vec()
    }

    /// Every guard in the sampled set, usable now or not, in order of preference.
    pub fn sampled_guards(&self) -> Vec<RelayId> {
        lock(&self.guards).sampled().iter().map(|g| g.id).collect()
    }

    /// Every guard in the sampled set with its history (since when it is in the set, since
    /// when it is unlisted), in order of preference: for display.
    pub fn guard_history(&self) -> Vec<crate::guards::Guard> {
        lock(&self.guards).sampled().to_vec()
    }

    /// Builds one circuit now: `hops` relays ending at `exit` if given (or, with `hops` one
    /// less than a full circuit and no exit, a prefix to extend later), trying other paths
    /// after a failure.
    async fn build_hops(
        &self,
        hops: usize,
        exit: Option<RelayId>,
    ) -> Result<BuiltCircuit<B::Circuit>, NetError> {
        let mut last = None;
        for _ in 0..self.config.attempts {
            let consensus = self.dir.consensus()?;
            let avoid = self.recent_failures();
            let exit_entry = exit.as_ref().and_then(|e| consensus.relay(e));
            let guard = {
                let mut guards = lock(&self.guards);
                guards.update_at(&consensus, self.dir.unix_now(), &mut rand::thread_rng());
                pick_guard(&guards.guards(), &consensus, exit_entry, &avoid, hops)?
            };
            let path: Vec<RelayEntry> = choose_path(
                &consensus,
                hops,
                Some(&guard),
                exit.as_ref(),
                &avoid,
                &mut rand::thread_rng(),
            )?
            .into_iter()
            .cloned()
            .collect();
            let started = now();
            match self.build_path(&path).await {
                Ok(circuit) => {
                    return Ok(BuiltCircuit {
                        circuit: Arc::new(circuit),
                        path,
                        build_time: now().saturating_duration_since(started),
                        built_at: now(),
                    })
                }
                Err((hop, e)) => {
                    debug!("circuit build failed: {e} at {}", path[hop].nickname);
                    // Blame the relay being added (its predecessor may be at fault, but a
                    // relay that fails repeatedly is avoided either way), unless it is the
                    // exit we were asked for.
                    if Some(path[hop].id) != exit || hop == 0 {
                        debug!(relay = %path[hop].id, "leaving a failed relay out of new paths");
                        lock(&self.failures).note(path[hop].id, now());
                    }
                    let retryable = e.is_retryable();
                    last = Some((path[hop].nickname.clone(), e));
                    if !retryable {
                        break;
                    }
                }
            }
        }
        let (relay, last) = last.unwrap_or_else(|| (String::new(), NetError::EmptyPath));
        Err(NetError::Build {
            attempts: self.config.attempts,
            relay,
            last: Box::new(last),
        })
    }

    /// Builds one full circuit now, ending at `exit` if given, trying other paths after a
    /// failure.
    pub async fn build(&self, exit: Option<RelayId>) -> Result<BuiltCircuit<B::Circuit>, NetError> {
        self.build_hops(self.config.hops, exit).await
    }

    /// Builds along `path`, each hop within the time limit; on failure, says at which hop.
    async fn build_path(&self, path: &[RelayEntry]) -> Result<B::Circuit, (usize, NetError)> {
        let limit = self.config.per_hop_timeout;
        let first = path.first().ok_or((0, NetError::EmptyPath))?;
        let circ = tokio::time::timeout(limit, self.builder.create(first))
            .await
            .map_err(|_| (0, NetError::Timeout(BuildStep::Creating)))?
            .map_err(|e| (0, e))?;
        for (i, hop) in path.iter().enumerate().skip(1) {
            let extended = tokio::time::timeout(limit, self.builder.extend(&circ, hop)).await;
            let failure = match extended {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => NetError::Timeout(BuildStep::Extending),
            };
            circ.close();
            return Err((i, failure));
        }
        Ok(circ)
    }

    /// Holds the pool's refills back until the returned guard is dropped, as a request for a
    /// circuit does, then refills at once: for work the refills would slow down, such as a
    /// message being committed and deposited. Before each build the maintenance task waits
    /// for it at most half a second (its look), so a long hold slows refills to about two a
    /// second rather than stopping them; a build under way carries on.
    pub fn hold_refills(&self) -> RefillHold<'_> {
        RefillHold {
            _held: Asking::new(&self.asking, &self.wanted),
        }
    }

    /// A circuit for new work ending at `exit`, never handed out before: a prefix from the
    /// pool (built ahead, the last hop missing) extended to `exit` when one fits the path
    /// rules, else a fresh circuit. Never one finished ahead ([`Self::get_readied`]).
    pub async fn get(&self, exit: RelayId) -> Result<Arc<BuiltCircuit<B::Circuit>>, NetError> {
        let _asking = Asking::new(&self.asking, &self.wanted);
        let (consensus, avoid) = self.prune()?;
        self.extend_or_build(exit, &consensus, &avoid).await
    }

    /// As [`Self::get`], for the one purpose circuits are finished ahead for
    /// ([`Self::prepare`]): one finished ahead to `exit` if one is ready, or, if one is being
    /// finished, once it is (within `per_hop_timeout`), handed out as it is; else as `get`.
    pub async fn get_readied(
        &self,
        exit: RelayId,
    ) -> Result<Arc<BuiltCircuit<B::Circuit>>, NetError> {
        let deadline = tokio::time::Instant::now() + self.config.per_hop_timeout;
        loop {
            // Listening before looking, so that a prepare ending in between is not missed.
            let ended = self.prepare_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let (consensus, avoid) = self.prune()?;
            // The mark read first: a prepare that ends after it has left its circuit for the
            // look below.
            let marked = lock(&self.preparing).contains(&exit);
            if let Some(c) = self.take_prepared(&exit) {
                return Ok(c);
            }
            if !marked {
                let _asking = Asking::new(&self.asking, &self.wanted);
                return self.extend_or_build(exit, &consensus, &avoid).await;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        self.get(exit).await
    }

    /// Takes the circuit finished ahead to `exit` out of the list, if there is one.
    fn take_prepared(&self, exit: &RelayId) -> Option<Arc<BuiltCircuit<B::Circuit>>> {
        let mut prepared = lock(&self.prepared);
        let i = prepared.iter().position(|(c, _)| ends_at(c, exit))?;
        Some(prepared.remove(i).0)
    }

    /// Finishes a circuit to `exit` ahead of need, for [`Self::get_readied`] to hand out
    /// within [`CircuitConfig::prepared_lifetime`]; nothing if one is ready or being finished
    /// already. At most [`CircuitConfig::prepared`] are kept: the oldest makes room.
    ///
    /// Each is used once, like any other, so a last hop sees nothing it would not see
    /// anyway but the timing: a circuit arriving, then (or never) one request on it.
    pub async fn prepare(&self, exit: RelayId) -> Result<(), NetError> {
        let (consensus, avoid) = self.prune()?;
        let Some(_preparing) = Preparing::new(&self.preparing, &self.prepare_ended, exit) else {
            return Ok(());
        };
        // Looked at once marked: a prepare that ended just before would not be seen otherwise.
        if lock(&self.prepared).iter().any(|(c, _)| ends_at(c, &exit)) {
            return Ok(());
        }
        let built = {
            let _asking = Asking::new(&self.asking, &self.wanted);
            self.extend_or_build(exit, &consensus, &avoid).await?
        };
        let evicted = {
            let mut prepared = lock(&self.prepared);
            prepared.push((built, now()));
            let over = prepared.len().saturating_sub(self.config.prepared);
            prepared.drain(..over).collect::<Vec<_>>()
        };
        for (c, _) in evicted {
            c.circuit.close();
        }
        Ok(())
    }

    /// The last hops of the circuits finished ahead and ready now (dropping those that may
    /// no longer be handed out).
    pub fn prepared(&self) -> Vec<RelayId> {
        let _ = self.prune();
        lock(&self.prepared)
            .iter()
            .filter_map(|(c, _)| c.path.last().map(|r| r.id))
            .collect()
    }

    /// A prefix from the pool extended to `exit` when one fits, else a fresh circuit.
    async fn extend_or_build(
        &self,
        exit: RelayId,
        consensus: &VerifiedConsensus,
        avoid: &HashSet<RelayId>,
    ) -> Result<Arc<BuiltCircuit<B::Circuit>>, NetError> {
        let prefix = consensus.relay(&exit).and_then(|e| {
            let mut pool = lock(&self.pool);
            let i = pool
                .iter()
                .position(|c| prefix_fits(&c.path, e, consensus, avoid))?;
            Some((pool.swap_remove(i), e.clone()))
        });
        if let Some((prefix, exit_entry)) = prefix {
            let started = now();
            let extended = tokio::time::timeout(
                self.config.per_hop_timeout,
                self.builder.extend(&prefix.circuit, &exit_entry),
            )
            .await
            .unwrap_or(Err(NetError::Timeout(BuildStep::Extending)));
            match extended {
                Ok(()) => {
                    let mut path = prefix.path.clone();
                    path.push(exit_entry);
                    return Ok(Arc::new(BuiltCircuit {
                        circuit: prefix.circuit.clone(),
                        path,
                        build_time: now().saturating_duration_since(started),
                        built_at: prefix.built_at,
                    }));
                }
                Err(e) => {
                    debug!("extending a ready circuit failed: {e}");
                    prefix.circuit.close();
                }
            }
        }
        Ok(Arc::new(self.build(Some(exit)).await?))
    }

    /// The circuits built ahead of need (prefixes, and circuits finished ahead) and usable
    /// now, for display: read-only, and nothing in it is secret from the user whose circuits
    /// they are.
    pub fn snapshot(&self) -> Vec<CircuitSummary> {
        let at = now();
        let summary = |c: &BuiltCircuit<B::Circuit>| CircuitSummary {
            relays: c.path.iter().map(|r| r.nickname.clone()).collect(),
            age: at.saturating_duration_since(c.built_at),
            build_time: c.build_time,
        };
        let mut all: Vec<CircuitSummary> = lock(&self.pool)
            .iter()
            .filter(|c| c.usable_at(self.config.lifetime, at))
            .map(|c| summary(c))
            .collect();
        all.extend(
            lock(&self.prepared)
                .iter()
                .filter(|(c, _)| c.usable_at(self.config.lifetime, at))
                .map(|(c, _)| summary(c)),
        );
        all
    }

    /// Closes and drops the circuits built ahead that may no longer be handed out: closed,
    /// `lifetime` old (or, finished ahead, unused for `prepared_lifetime`), through a relay
    /// the held consensus no longer lists Running or that failed lately, or all of them when
    /// no valid consensus is held. Returns that consensus and the relays that failed lately.
    fn prune(&self) -> Result<(Arc<VerifiedConsensus>, HashSet<RelayId>), NetError> {
        let consensus = self.dir.consensus();
        let avoid = self.recent_failures();
        let at = now();
        // What any circuit built ahead must still be to be kept.
        let usable = |c: &BuiltCircuit<B::Circuit>| {
            c.usable_at(self.config.lifetime, at)
                && consensus
                    .as_ref()
                    .is_ok_and(|cons| prefix_usable(&c.path, cons, &avoid))
        };
        let dropped: Vec<_> = {
            let mut pool = lock(&self.pool);
            let (keep, drop): (Vec<_>, Vec<_>) = pool.drain(..).partition(|c| usable(c));
            *pool = keep;
            drop
        };
        let stale: Vec<_> = {
            let mut prepared = lock(&self.prepared);
            let (keep, drop): (Vec<_>, Vec<_>) = prepared.drain(..).partition(|(c, done)| {
                usable(c) && at.saturating_duration_since(*done) < self.config.prepared_lifetime
            });
            *prepared = keep;
            drop.into_iter().map(|(c, _)| c).collect()
        };
        for c in dropped.into_iter().chain(stale) {
            debug!("dropping a circuit built ahead: {}", c.describe());
            c.circuit.close();
        }
        Ok((consensus?, avoid))
    }

    /// Circuits built ahead of need and ready now (dropping those that may no longer be
    /// handed out).
    pub fn ready(&self) -> usize {
        let _ = self.prune();
        lock(&self.pool).len()
    }

    /// Builds one circuit ahead of need if fewer than [`CircuitConfig::preemptive`] are
    /// ready: every hop but the last, which [`CircuitManager::get`] adds. Returns whether the
    /// pool was full already (nothing added). The pool never holds more than
    /// [`CircuitConfig::preemptive`]: a prefix finished after others filled it is closed.
    pub async fn top_up(&self) -> Result<bool, NetError> {
        if self.ready() >= self.config.preemptive {
            return Ok(true);
        }
        let prefix_hops = self.config.hops.saturating_sub(1).max(1);
        let built = self.build_hops(prefix_hops, None).await?;
        let mut pool = lock(&self.pool);
        if pool.len() >= self.config.preemptive {
            drop(pool);
            built.circuit.close();
            return Ok(true);
        }
        pool.push(Arc::new(built));
        Ok(false)
    }

    /// Keeps [`CircuitConfig::preemptive`] circuits built ahead of need, replacing those that
    /// closed or aged out, until the returned handle is dropped.
    pub fn spawn_maintenance(self: &Arc<Self>) -> AbortOnDrop<()> {
        let mgr = self.clone();
        AbortOnDrop::new(tokio::spawn(async move {
            loop {
                // Requests extending their circuits come first: a refill would slow them (it
                // waits for them at most one look).
                if mgr.asking.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                    let _ = tokio::time::timeout(LOOK, mgr.wanted.notified()).await;
                }
                match mgr.top_up().await {
                    Ok(false) => continue,
                    Ok(true) => {
                        // Look again after a while (circuits age out and close), or as soon
                        // as requests for circuits end.
                        let _ = tokio::time::timeout(LOOK, mgr.wanted.notified()).await;
                    }
                    Err(e) => {
                        debug!("preemptive circuit: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }))
    }
}

/// Whether `c` ends at `exit`.
fn ends_at<C>(c: &BuiltCircuit<C>, exit: &RelayId) -> bool {
    c.path.last().is_some_and(|r| r.id == *exit)
}

/// A last hop a circuit is being finished ahead to; unmarked however the work ends, and
/// whoever waits for it woken.
struct Preparing<'a> {
    set: &'a Mutex<HashSet<RelayId>>,
    ended: &'a tokio::sync::Notify,
    exit: RelayId,
}

impl<'a> Preparing<'a> {
    /// Marks `exit`, or `None` if it is marked already.
    fn new(
        set: &'a Mutex<HashSet<RelayId>>,
        ended: &'a tokio::sync::Notify,
        exit: RelayId,
    ) -> Option<Self> {
        // Made only when marked here: one dropped would unmark another's work.
        let fresh = lock(set).insert(exit);
        fresh.then(|| Preparing { set, ended, exit })
    }
}

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.exit);
        self.ended.notify_waiters();
    }
}

/// Holds refills back while it lives ([`CircuitManager::hold_refills`]).
pub struct RefillHold<'a> {
    _held: Asking<'a>,
}

/// One request for a circuit in progress: when the last one ends, however it ends, the pool is
/// refilled at once (the next request is likely close behind), but not while requests still
/// extend their circuits, which the refill would slow down.
struct Asking<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    wanted: &'a tokio::sync::Notify,
}

impl<'a> Asking<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize, wanted: &'a tokio::sync::Notify) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Asking { count, wanted }
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.wanted.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
