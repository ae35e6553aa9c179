//! A directory authority: an HTTP server that accepts relay descriptors, tests relays'
//! reachability, votes with its peers on a fixed schedule, and serves the signed consensus
//! (`docs/spec.md` §5.2–5.8).
//!
//! * [`schedule`]: the voting timetable, pure;
//! * [`state`]: what the authority holds in memory; [`admit`]: which descriptors it accepts;
//!   [`vote_builder`]: what it votes; [`bandwidth`]: where measurements come from (all pure);
//! * [`store`]: its files, so that descriptors, relay history and the last consensus
//!   survive a restart;
//! * [`server`] and [`api`]: the HTTP side, with its time, size, rate and slot limits;
//! * [`reachability`]: probing relays, in rounds that end inside the voting interval;
//! * [`scanner`]: measuring relays' capacity through two-hop circuits, for the vote;
//! * [`voting`] and [`exchange`]: the loop that votes, exchanges and compares votes,
//!   computes, signs and collects signatures.
//!
//! [`Authority::start`] runs all of it inside the caller's tokio runtime, so tests and the
//! local test network can run several authorities in one process.
//!
//! Where it sits: above `shallot-directory` (whose pure rules it runs: computing the
//! consensus, shared random values, equivocation, address rules, probes) and `shallot-net`
//! (whose circuits the scanner builds, as a client does), and beside the
//! relay and client crates, which never depend on it. It is the only crate with an HTTP server
//! (axum, hyper); relays and clients reach it through `shallot_directory::fetch`'s small client.
//! Only the `shallot` binary (`shallot directory run`, the test network) depends on it.

#![forbid(unsafe_code)]

pub mod admit;
pub mod api;
pub mod bandwidth;
mod each_peer;
pub mod exchange;
#[cfg(feature = "misbehave")]
pub mod misbehave;
pub mod reachability;
pub mod scanner;
mod served;
pub use shallot_directory::schedule;
pub mod server;
pub mod state;
pub mod store;
pub mod vote_builder;
pub mod voting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use shallot_crypto::keyfile::{ensure_private_dir, KeyFileError};
use shallot_crypto::keys::{IdentityKeypair, RelayId, VerifyingKey};
use shallot_proto::dir::{Consensus, RelayDescriptor};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use schedule::now_secs;
use shallot_directory::network::{NetworkFile, NetworkParams};
use state::{ConsensusRecord, State};

#[cfg(feature = "misbehave")]
use misbehave::Misbehaviour;
/// Without the `misbehave` feature there is no misbehaviour to ask for.
#[cfg(not(feature = "misbehave"))]
type Misbehaviour = std::convert::Infallible;
use store::{Store, KEY_FILE};

/// How to run an authority.
#[derive(Debug, Clone)]
pub struct AuthorityConfig {
    /// Its data directory, holding `authority.key` and `state/`.
    pub data_dir: PathBuf,
    /// The address to serve HTTP on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The network it belongs to; it must list this authority's key.
    pub network: NetworkFile,
}

/// Why an authority could not start.
#[derive(Debug, Error)]
pub enum AuthorityError {
    /// The key file or the data directory could not be used.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// This authority is not in the network file.
    #[error("this authority's key {0} is not listed in the network file")]
    NotInNetwork(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// What every task of one authority shares.
pub(crate) struct Shared {
    pub key: IdentityKeypair,
    pub me: VerifyingKey,
    pub network: NetworkFile,
    pub store: Store,
    pub state: Mutex<State>,
    /// Serialises descriptor changes with their writes to disk.
    pub descriptor_lock: tokio::sync::Mutex<()>,
    /// Serialises saves of the consensus ([`Shared::save_consensus`]).
    pub consensus_saves: tokio::sync::Mutex<()>,
    pub probe_tx: mpsc::Sender<RelayId>,
    /// The voting schedule, fixed at start: with an initial phase if the authority started
    /// holding no valid consensus (`docs/spec.md` §5.6).
    pub schedule: schedule::Schedule,
    /// Bounds the vote bodies (up to 32 MiB each) read at once, whoever sends them.
    pub vote_uploads: tokio::sync::Semaphore,
    pub limits: Arc<server::Limits>,
    /// HTTP requests answered since start, for the operator's metrics.
    pub requests_served: AtomicU64,
    /// The compressed consensus and the diffs to it, computed once per consensus version.
    pub served: served::ServeCache,
    /// How a test makes this authority misbehave (never in a production build).
    #[cfg(feature = "misbehave")]
    pub misbehaviour: Option<misbehave::Misbehaviour>,
}

impl Shared {
    /// The state, even if a panicking task poisoned the lock (the state stays consistent
    /// because every change is made in one step under the lock).
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The peers: every configured authority but this one.
    pub(crate) fn peers(&self) -> impl Iterator<Item = &shallot_directory::network::AuthorityInfo> {
        self.network.authorities.iter().filter(|a| a.key != self.me)
    }

    /// Saves the consensus for period `t` as held now, one save at a time: saves made side by
    /// side (a signature from each peer at once) would share one temporary file, and an older
    /// text could land over a newer one.
    pub(crate) async fn save_consensus(self: &Arc<Self>, t: u64) {
        let _one = self.consensus_saves.lock().await;
        let (text, kept) = {
            let state = self.state();
            let text = state.consensuses.get(&t).map(|r| r.text.clone());
            (text, state.consensuses.keys().copied().collect::<Vec<_>>())
        };
        if let Some(text) = text {
            self.persist("consensus", move |store| {
                store.save_consensus(t, &text, &kept)
            })
            .await;
        }
    }

    /// Runs a blocking write to the store off the async threads, logging failure.
    pub(crate) async fn persist<F>(self: &Arc<Self>, what: &'static str, write: F)
    where
        F: FnOnce(&Store) -> Result<(), KeyFileError> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || write(&store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot save {what}: {e}"),
            Err(e) => tracing::error!("cannot save {what}: {e}"),
        }
    }
}

/// A directory authority.
pub struct Authority;

impl Authority {
    /// Loads the authority's key and state from its data directory, binds its listener and
    /// starts serving, probing and voting in the current tokio runtime.
    pub async fn start(config: AuthorityConfig) -> Result<AuthorityHandle, AuthorityError> {
        Self::start_with(config, None).await
    }

    /// Starts an authority that misbehaves as `misbehaviour` says: for tests of what honest
    /// authorities do about it. Only in builds with the `misbehave` feature.
    #[cfg(feature = "misbehave")]
    pub async fn start_misbehaving(
        config: AuthorityConfig,
        misbehaviour: misbehave::Misbehaviour,
    ) -> Result<AuthorityHandle, AuthorityError> {
        Self::start_with(config, Some(misbehaviour)).await
    }

    async fn start_with(
        config: AuthorityConfig,
        #[cfg_attr(not(feature = "misbehave"), allow(unused_variables))] misbehaviour: Option<
            Misbehaviour,
        >,
    ) -> Result<AuthorityHandle, AuthorityError> {
        ensure_private_dir(&config.data_dir)?;
        let key = IdentityKeypair::load(&config.data_dir.join(KEY_FILE))?;
        let me = key.public();
        if config.network.authority(&me).is_none() {
            return Err(AuthorityError::NotInNetwork(shallot_crypto::hex::encode(
                me.as_bytes(),
            )));
        }
        let store = Store::open(&config.data_dir)?;
        let state = load_state(&store, &config.network, now_secs());
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| AuthorityError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| AuthorityError::Bind {
                addr: config.listen,
                source,
            })?;
        let (probe_tx, probe_rx) = mpsc::channel(reachability::QUEUE_LEN);
        let schedule = start_schedule(&config.network.params, &state);
        let shared = Arc::new(Shared {
            key,
            me,
            limits: Arc::new(server::Limits::new(&config.network, &me)),
            #[cfg(feature = "misbehave")]
            misbehaviour,
            network: config.network,
            store,
            state: Mutex::new(state),
            descriptor_lock: tokio::sync::Mutex::new(()),
            consensus_saves: tokio::sync::Mutex::new(()),
            probe_tx,
            schedule,
            vote_uploads: tokio::sync::Semaphore::new(api::MAX_VOTE_UPLOADS),
            requests_served: AtomicU64::new(0),
            served: served::ServeCache::default(),
        });
        tracing::info!(
            "authority {} listening on {local_addr}",
            shallot_crypto::hex::encode(me.as_bytes())
        );
        let mut tasks = JoinSet::new();
        tasks.spawn(server::serve(shared.clone(), listener));
        tasks.spawn(reachability::run(shared.clone(), probe_rx));
        tasks.spawn(voting::run(shared.clone()));
        tasks.spawn(scanner::run(shared.clone()));
        Ok(AuthorityHandle {
            local_addr,
            shared,
            tasks,
        })
    }
}

/// Counts of what an authority has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthorityCounters {
    /// Votes taken in: its own and its peers', each once.
    pub votes_taken: u64,
    /// Consensuses it computed and signed.
    pub consensuses_made: u64,
    /// HTTP requests it answered (descriptor uploads, consensus and vote fetches, ...).
    pub requests_served: u64,
    /// Times it compressed the served consensus and computed the diffs to it: once per
    /// version of the served text, however many fetch it.
    pub consensus_answers_built: u64,
    /// Diffs it computed on request from a consensus older than those it keeps whole, one of
    /// the last day's: each base once per version of the served text.
    pub older_diffs_built: u64,
    /// Relays its bandwidth scanner measured (each measurement once).
    pub relays_measured: u64,
}

/// A running authority.
pub struct AuthorityHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl AuthorityHandle {
    /// The address it serves HTTP on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its public key.
    pub fn key(&self) -> VerifyingKey {
        self.shared.me
    }

    /// The consensus it serves now, with the signatures collected so far.
    pub fn current_consensus(&self) -> Option<Consensus> {
        self.shared
            .state()
            .serving(now_secs(), self.shared.network.majority())
            .map(|r| r.consensus.clone())
    }

    /// The relays it holds descriptors for.
    pub fn known_relays(&self) -> Vec<RelayId> {
        self.shared.state().descriptors.keys().copied().collect()
    }

    /// The equivocations it caught, oldest first: (period, authority). Each is also logged at
    /// WARN when caught.
    pub fn equivocations(&self) -> Vec<(u64, VerifyingKey)> {
        self.shared.state().equivocations.iter().copied().collect()
    }

    /// Relays whose last probe succeeded.
    pub fn reachable_relays(&self) -> Vec<RelayId> {
        let state = self.shared.state();
        state
            .descriptors
            .keys()
            .filter(|id| state.proven(id))
            .copied()
            .collect()
    }

    /// Relays its bandwidth scanner holds a measurement of, fresh or not.
    pub fn measured_relays(&self) -> usize {
        self.shared.state().measurements.len()
    }

    /// What it has done since it started, for the operator's metrics.
    pub fn counters(&self) -> AuthorityCounters {
        let state = self.shared.state();
        AuthorityCounters {
            votes_taken: state.votes_taken,
            consensuses_made: state.consensuses_made,
            requests_served: self.shared.requests_served.load(Ordering::Relaxed),
            consensus_answers_built: self.shared.served.builds(),
            older_diffs_built: self.shared.served.older_diffs(),
            relays_measured: state.measurements.recorded(),
        }
    }

    /// Stops serving, probing and voting. Everything it accepted is already on disk.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// The schedule of an authority starting now with `state`: with the initial phase, if the
/// network has a shorter initial interval and no consensus held is still valid (a new
/// network, or one whose authorities were all down for longer than a consensus lives).
fn start_schedule(params: &NetworkParams, state: &State) -> schedule::Schedule {
    let now = schedule::now_ms();
    let valid = state
        .consensuses
        .values()
        .any(|r| r.consensus.valid_until.saturating_mul(1000) > now);
    if valid {
        return schedule::Schedule::new(params.voting_interval_secs);
    }
    schedule::Schedule::starting(
        params.voting_interval_secs,
        params.initial_interval_secs(),
        now,
    )
}

/// Rebuilds the state from the store, verifying everything again and dropping what no
/// longer holds (bad or expired descriptors, a consensus that no longer verifies).
fn load_state(store: &Store, network: &NetworkFile, now: u64) -> State {
    let mut state = State::new(&network.params);
    let max_age = network.params.descriptor_max_age_secs;
    let history = store.load_relays();
    for (id, text) in store.load_descriptors() {
        match RelayDescriptor::parse_and_verify(&text) {
            Ok(desc) if desc.fingerprint() != id => {
                tracing::warn!("dropping saved descriptor {id}: it is for another relay");
                store.remove_descriptor(&id);
            }
            Ok(desc) if desc.published.saturating_add(max_age) < now => {
                store.remove_descriptor(&id);
            }
            Ok(desc) => {
                let history = history.get(&id).copied().unwrap_or_default();
                state.insert_loaded(state::Accepted::new(desc, text), history, now);
            }
            Err(e) => {
                tracing::warn!("dropping saved descriptor {id}: {e}");
                store.remove_descriptor(&id);
            }
        }
    }
    // Reveals committed to before a restart are revealed after it.
    state.reveals = store.load_reveals();
    // Every consensus held before the restart, so that `State::serving` chooses as it did.
    for text in store.load_consensuses() {
        match reload_consensus(&text, network, now) {
            Ok(record) => {
                state
                    .consensuses
                    .insert(record.consensus.valid_after, record);
            }
            Err(e) => tracing::warn!("not serving a saved consensus: {e}"),
        }
    }
    // Saved again, one file per period: this moves one saved by a version that kept only the
    // newest (`consensus.txt`) to its own file before the next save would remove it, and
    // drops the files of those no longer held.
    let kept: Vec<u64> = state.consensuses.keys().copied().collect();
    for (t, record) in &state.consensuses {
        if let Err(e) = store.save_consensus(*t, &record.text, &kept) {
            tracing::error!("cannot save consensus: {e}");
        }
    }
    tracing::info!(
        "loaded {} descriptors and {} saved consensuses",
        state.descriptors.len(),
        state.consensuses.len()
    );
    state
}

/// Checks a saved consensus: unexpired, and keeps only the signatures that verify by
/// configured authorities (there must be at least one).
fn reload_consensus(
    text: &str,
    network: &NetworkFile,
    now: u64,
) -> Result<ConsensusRecord, String> {
    let mut c = Consensus::parse(text).map_err(|e| e.to_string())?;
    let valid = c
        .valid_signers(&network.keys())
        .map_err(|e| e.to_string())?;
    c.signatures.retain(|(k, _)| valid.contains(k));
    if c.signatures.is_empty() {
        return Err("no signature by a configured authority verifies".into());
    }
    if now > c.valid_until {
        return Err(format!("it expired at {}", c.valid_until));
    }
    ConsensusRecord::new(c).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    /// Review finding 3 of the silent-peer fix: an authority restarted while too few had
    /// signed its newest consensus served that one, which clients refuse, because only the
    /// newest was saved. Every consensus held is saved now, so after a restart it serves the
    /// previous one, majority-signed, as it did before.
    #[test]
    fn a_restart_while_the_newest_is_under_signed_serves_the_previous() {
        let keys: Vec<IdentityKeypair> = (1..=3u8)
            .map(|i| IdentityKeypair::from_secret_bytes(&[i; 32]))
            .collect();
        let network =
            NetworkFile::of_test_authorities(&keys.iter().map(|k| k.public()).collect::<Vec<_>>());
        let dir = shallot_rt::scratch::path("restart");
        let store = Store::open(&dir).unwrap();
        let previous = state::test_record(1000, &[&keys[0], &keys[1]]);
        let newest = state::test_record(1010, &[&keys[0]]);
        store.save_consensus(1000, &previous.text, &[1000]).unwrap();
        store
            .save_consensus(1010, &newest.text, &[1000, 1010])
            .unwrap();

        // The previous one was saved by a version that kept only the newest.
        std::fs::rename(
            dir.join("state/consensus-1000.txt"),
            dir.join("state/consensus.txt"),
        )
        .unwrap();
        let state = load_state(&Store::open(&dir).unwrap(), &network, 1015);
        let served = state.serving(1015, network.majority()).unwrap();
        assert_eq!(
            served.consensus.valid_after, 1000,
            "the majority-signed one"
        );
        assert_eq!(
            state.consensuses.len(),
            2,
            "the newest is held too, to collect signatures"
        );
        // And saved again under its period, so that the next save does not lose it.
        let again = load_state(&Store::open(&dir).unwrap(), &network, 1015);
        assert_eq!(
            again
                .serving(1015, network.majority())
                .unwrap()
                .consensus
                .valid_after,
            1000
        );
        assert!(dir.join("state/consensus-1000.txt").exists());
        assert!(!dir.join("state/consensus.txt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
