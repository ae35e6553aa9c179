//! The circuit manager (`docs/spec.md` §11.3): builds circuits hop by hop with a time limit per
//! hop, retries with other relays after a failure (remembering recent failures), keeps a few
//! circuits built ahead of need (all but their last hop, which is added when a purpose names
//! it), and stops handing circuits out after their lifetime or when they close.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_proto::dir::RelayEntry;
use thiserror::Error;
use tracing::debug;

use crate::channel::{lock, ClientChannel};
use crate::circuit::{Circuit, CircuitError, HopSpec};
use crate::guards::GuardSet;
use crate::netdir::{DirError, NetDir};
use crate::path::{choose_path, related, PathError};

/// How circuits are built and kept; the defaults are production values.
#[derive(Debug, Clone)]
pub struct CircuitConfig {
    /// Hops per circuit.
    pub hops: usize,
    /// Time limit for each hop (and for the link to the first).
    pub per_hop_timeout: Duration,
    /// Paths tried before giving up on one request.
    pub attempts: usize,
    /// A circuit is not handed out for new work after this long.
    pub lifetime: Duration,
    /// Circuits kept built ahead of need, each missing only its last hop.
    pub preemptive: usize,
    /// How long a relay that failed is left out of new paths.
    pub failure_memory: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig {
            hops: 3,
            per_hop_timeout: Duration::from_secs(10),
            attempts: 4,
            lifetime: Duration::from_secs(600),
            preemptive: 2,
            failure_memory: Duration::from_secs(60),
        }
    }
}

/// Why no circuit could be had.
#[derive(Debug, Clone, Error)]
pub enum CircError {
    /// No usable consensus.
    #[error("{0}")]
    Dir(#[from] DirError),
    /// No path satisfies the rules.
    #[error("{0}")]
    Path(#[from] PathError),
    /// Every attempt failed.
    #[error("could not build a circuit in {attempts} attempts; last: {last}")]
    Build {
        /// Attempts made.
        attempts: usize,
        /// The last failure.
        last: String,
    },
}

/// A circuit the manager built.
pub struct BuiltCircuit {
    /// The circuit.
    pub circuit: Arc<Circuit>,
    /// Its relays, first to last.
    pub path: Vec<RelayEntry>,
    /// How long building it took.
    pub build_time: Duration,
    /// When it was built.
    pub built_at: Instant,
}

impl BuiltCircuit {
    /// Whether it can still be handed out for new work.
    pub fn usable(&self, lifetime: Duration) -> bool {
        !self.circuit.is_closed() && self.built_at.elapsed() < lifetime
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

/// Builds and keeps circuits for one client.
pub struct CircuitManager {
    dir: Arc<NetDir>,
    config: CircuitConfig,
    guards: Mutex<GuardSet>,
    channels: Mutex<HashMap<RelayId, Arc<ClientChannel>>>,
    failures: Mutex<HashMap<RelayId, Instant>>,
    pool: Mutex<Vec<Arc<BuiltCircuit>>>,
}

impl CircuitManager {
    /// A manager using `dir`'s consensus and the guard set saved in `data_dir`.
    pub fn new(dir: Arc<NetDir>, data_dir: PathBuf, config: CircuitConfig) -> Arc<Self> {
        Arc::new(CircuitManager {
            dir,
            config,
            guards: Mutex::new(GuardSet::load(&data_dir)),
            channels: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            pool: Mutex::new(Vec::new()),
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
        let mut f = lock(&self.failures);
        f.retain(|_, at| at.elapsed() < self.config.failure_memory);
        f.keys().copied().collect()
    }

    fn failed(&self, id: RelayId) {
        debug!(relay = %id, "relay failed; leaving it out of new paths for a while");
        lock(&self.failures).insert(id, Instant::now());
    }

    /// The current guard set.
    pub fn guards(&self) -> Vec<RelayId> {
        lock(&self.guards).guards().to_vec()
    }

    async fn channel_to(&self, relay: &RelayEntry) -> Result<Arc<ClientChannel>, CircuitError> {
        if let Some(c) = lock(&self.channels).get(&relay.id) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let chan =
            ClientChannel::connect(relay.address, &relay.link_key, self.config.per_hop_timeout)
                .await?;
        lock(&self.channels).insert(relay.id, chan.clone());
        Ok(chan)
    }

    /// The guard to start a path with: the first of the guard set that has not failed
    /// recently and is unrelated to `exit`; failing that, the first unrelated one even if it
    /// failed (a path never starts outside the guard set while the set has a usable guard).
    fn pick_guard(
        &self,
        consensus: &shallot_proto::dir::Consensus,
        exit: Option<&RelayEntry>,
        avoid: &HashSet<RelayId>,
    ) -> Result<Option<RelayId>, CircError> {
        let mut g = lock(&self.guards);
        g.update(consensus, &mut rand::thread_rng());
        if g.guards().is_empty() {
            return Ok(None);
        }
        let unrelated: Vec<RelayId> = g
            .guards()
            .iter()
            .copied()
            .filter(|id| match (consensus.relay(id), exit) {
                (Some(g), Some(e)) => !related(g, e),
                (Some(_), None) => true,
                _ => false,
            })
            .collect();
        match unrelated
            .iter()
            .find(|id| !avoid.contains(id))
            .or(unrelated.first())
        {
            Some(id) => Ok(Some(*id)),
            None => Err(CircError::Path(PathError::NotEnoughRelays {
                hops: self.config.hops,
                reason: "every guard is related to the requested last hop",
            })),
        }
    }

    /// Builds one circuit now: `hops` relays ending at `exit` if given (or, with `hops` one
    /// less than a full circuit and no exit, a prefix to extend later), trying other paths
    /// after a failure.
    async fn build_hops(
        &self,
        hops: usize,
        exit: Option<RelayId>,
    ) -> Result<BuiltCircuit, CircError> {
        let mut last = String::from("no attempt made");
        for _ in 0..self.config.attempts {
            let consensus = self.dir.consensus()?;
            let avoid = self.recent_failures();
            let exit_entry = exit.as_ref().and_then(|e| consensus.relay(e));
            let guard = self.pick_guard(&consensus, exit_entry, &avoid)?;
            let path: Vec<RelayEntry> = {
                let mut rng = rand::thread_rng();
                choose_path(
                    &consensus,
                    hops,
                    guard.as_ref(),
                    exit.as_ref(),
                    &avoid,
                    &mut rng,
                )?
                .into_iter()
                .cloned()
                .collect()
            };
            let started = Instant::now();
            match self.build_path(&path).await {
                Ok(circuit) => {
                    return Ok(BuiltCircuit {
                        circuit: Arc::new(circuit),
                        path,
                        build_time: started.elapsed(),
                        built_at: Instant::now(),
                    })
                }
                Err((hop, e)) => {
                    last = format!("{} at {}", e, path[hop].nickname);
                    debug!("circuit build failed: {last}");
                    // Blame the relay being added (its predecessor may be at fault, but a
                    // relay that fails repeatedly is avoided either way), unless it is the
                    // exit we were asked for.
                    if Some(path[hop].id) != exit || hop == 0 {
                        self.failed(path[hop].id);
                    }
                }
            }
        }
        Err(CircError::Build {
            attempts: self.config.attempts,
            last,
        })
    }

    /// Builds one full circuit now, ending at `exit` if given, trying other paths after a
    /// failure.
    pub async fn build(&self, exit: Option<RelayId>) -> Result<BuiltCircuit, CircError> {
        self.build_hops(self.config.hops, exit).await
    }

    /// Builds along `path`; on failure, says at which hop.
    async fn build_path(&self, path: &[RelayEntry]) -> Result<Circuit, (usize, CircuitError)> {
        let first = &path[0];
        let chan = self.channel_to(first).await.map_err(|e| (0, e))?;
        let circ = Circuit::create(chan, &HopSpec::from(first), self.config.per_hop_timeout)
            .await
            .map_err(|e| (0, e))?;
        for (i, hop) in path.iter().enumerate().skip(1) {
            circ.extend(&HopSpec::from(hop), self.config.per_hop_timeout)
                .await
                .map_err(|e| (i, e))?;
        }
        Ok(circ)
    }

    /// A circuit for new work ending at `exit`: a prefix from the pool (built ahead, the last
    /// hop missing) extended to `exit` when one fits the path rules, else a fresh circuit.
    pub async fn get(&self, exit: RelayId) -> Result<Arc<BuiltCircuit>, CircError> {
        let consensus = self.dir.consensus()?;
        let avoid = self.recent_failures();
        let running = |id: &RelayId| {
            consensus
                .relay(id)
                .filter(|r| r.flags.contains(shallot_proto::dir::Flags::RUNNING))
        };
        let prefix = running(&exit).and_then(|e| {
            let mut pool = lock(&self.pool);
            pool.retain(|c| c.usable(self.config.lifetime));
            // A prefix fits if each of its relays is still running, has not failed lately,
            // and is unrelated to the exit.
            let i = pool.iter().position(|c| {
                c.path
                    .iter()
                    .all(|r| running(&r.id).is_some() && !avoid.contains(&r.id) && !related(r, e))
            })?;
            Some((pool.swap_remove(i), e.clone()))
        });
        if let Some((prefix, exit_entry)) = prefix {
            let started = Instant::now();
            let extended = prefix
                .circuit
                .extend(&HopSpec::from(&exit_entry), self.config.per_hop_timeout)
                .await;
            match extended {
                Ok(()) => {
                    let mut path = prefix.path.clone();
                    path.push(exit_entry);
                    return Ok(Arc::new(BuiltCircuit {
                        circuit: prefix.circuit.clone(),
                        path,
                        build_time: started.elapsed(),
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

    /// Circuits built ahead of need and ready now.
    pub fn ready(&self) -> usize {
        let mut pool = lock(&self.pool);
        pool.retain(|c| c.usable(self.config.lifetime));
        pool.len()
    }

    /// Keeps [`CircuitConfig::preemptive`] circuits built ahead of need (every hop but the
    /// last, which [`CircuitManager::get`] adds), replacing those that closed or aged out,
    /// until the task is aborted.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mgr = self.clone();
        tokio::spawn(async move {
            loop {
                if mgr.ready() < mgr.config.preemptive {
                    let prefix_hops = mgr.config.hops.saturating_sub(1).max(1);
                    match mgr.build_hops(prefix_hops, None).await {
                        Ok(c) => lock(&mgr.pool).push(Arc::new(c)),
                        Err(e) => {
                            debug!("preemptive circuit: {e}");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }
}
