//! The client's consensus (`docs/spec.md` §5.9, §11.1): bootstrap from the cache or the
//! authorities, fetch the next one as soon as the authorities publish it (at the current one's
//! fresh-until), and keep using a cached consensus while it is still valid when no authority
//! answers.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shallot_directory::fetch::fetch_consensus;
use shallot_directory::network::NetworkFile;
use shallot_directory::verify::ConsensusCache;
use shallot_proto::dir::Consensus;
use thiserror::Error;
use tracing::{debug, info};

/// Why no consensus is available.
#[derive(Debug, Clone, Error)]
pub enum DirError {
    /// No authority answered and nothing usable was cached.
    #[error("cannot get a consensus: {0}")]
    Unavailable(String),
    /// The consensus held has expired and no authority gave a newer one.
    #[error("the consensus expired {ago} s ago and no authority answered: {reason}")]
    Expired {
        /// Seconds since it expired.
        ago: u64,
        /// Why fetching failed.
        reason: String,
    },
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The consensus this client uses, and how to get the next one.
pub struct NetDir {
    network: NetworkFile,
    cache: ConsensusCache,
    current: RwLock<Option<Arc<Consensus>>>,
    last_error: RwLock<Option<String>>,
    failures: std::sync::atomic::AtomicU32,
    fetch_timeout: Duration,
}

impl NetDir {
    /// A client of the authorities in `network`, caching in `data_dir/consensus.txt`.
    pub fn new(network: NetworkFile, data_dir: &Path) -> Self {
        let fetch_timeout = Duration::from_secs(network.params.request_timeout_secs);
        NetDir {
            cache: ConsensusCache::new(data_dir.join("consensus.txt")),
            network,
            current: RwLock::new(None),
            last_error: RwLock::new(None),
            failures: std::sync::atomic::AtomicU32::new(0),
            fetch_timeout,
        }
    }

    /// The network file.
    pub fn network(&self) -> &NetworkFile {
        &self.network
    }

    fn held(&self) -> Option<Arc<Consensus>> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, c: Arc<Consensus>) {
        match self.current.write() {
            Ok(mut cur) => *cur = Some(c),
            Err(p) => *p.into_inner() = Some(c),
        }
    }

    /// Loads the cached consensus (if still valid), then tries the authorities. Succeeds if
    /// either gives a valid consensus.
    pub async fn bootstrap(&self) -> Result<Arc<Consensus>, DirError> {
        if self.held().is_none() {
            match self.cache.load(&self.network, unix_now()) {
                Ok(Some(c)) => {
                    debug!("using the cached consensus");
                    self.set(Arc::new(c));
                }
                Ok(None) => {}
                Err(e) => debug!("cached consensus not usable: {e}"),
            }
        }
        let _ = self.refresh().await;
        self.consensus()
    }

    /// Fetches a newer consensus; keeps the held one if none comes.
    pub async fn refresh(&self) -> Result<Arc<Consensus>, DirError> {
        let held = self.held();
        match fetch_consensus(
            &self.network,
            held.as_deref(),
            unix_now(),
            self.fetch_timeout,
        )
        .await
        {
            Ok((c, text)) => {
                if let Err(e) = self.cache.store(&text) {
                    info!("cannot cache the consensus: {e}");
                }
                let c = Arc::new(c);
                self.set(c.clone());
                if let Ok(mut e) = self.last_error.write() {
                    *e = None;
                }
                self.failures.store(0, std::sync::atomic::Ordering::Relaxed);
                Ok(c)
            }
            Err(e) => {
                let reason = e.to_string();
                if let Ok(mut last) = self.last_error.write() {
                    *last = Some(reason.clone());
                }
                self.failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(DirError::Unavailable(reason))
            }
        }
    }

    /// The consensus to use now: the one held, if still valid.
    pub fn consensus(&self) -> Result<Arc<Consensus>, DirError> {
        let now = unix_now();
        let reason = match self.last_error.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        }
        .unwrap_or_else(|| "no consensus fetched yet".into());
        match self.held() {
            Some(c) if now <= c.valid_until => Ok(c),
            Some(c) => Err(DirError::Expired {
                ago: now - c.valid_until,
                reason,
            }),
            None => Err(DirError::Unavailable(reason)),
        }
    }

    /// When to fetch next. Authorities publish each consensus at the previous one's
    /// fresh-until, so while the one held is fresh the next fetch is at its fresh-until plus a
    /// random delay (up to an eighth of the period, at most 30 s, so that clients do not all
    /// ask at once). Otherwise, after failures, the wait doubles from 1 s up to 64 s.
    pub fn next_refresh(&self) -> Duration {
        let now = unix_now();
        match self.held() {
            Some(c) if now < c.fresh_until => {
                let span = c.fresh_until.saturating_sub(c.valid_after).max(1);
                let jitter = rand::random::<u64>() % (span / 8).clamp(1, 30);
                Duration::from_secs(c.fresh_until - now + jitter)
            }
            _ => {
                let failures = self
                    .failures
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .min(6);
                Duration::from_secs(1 << failures)
            }
        }
    }

    /// Keeps the consensus fresh until the returned task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let dir = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(dir.next_refresh()).await;
                if let Err(e) = dir.refresh().await {
                    debug!("consensus refresh: {e}");
                }
            }
        })
    }
}
