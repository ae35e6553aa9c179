//! What `GET /consensus.z` and `GET /consensus/diff/…` serve, computed once per consensus
//! text and kept (`docs/spec.md` §5.8, §5.12).
//!
//! Compressing a 10,000-relay consensus and diffing it against the kept ones takes hundreds of
//! milliseconds; done per request it let every fetch cost the authority that much. Here it is
//! done once for each version of the served text (a [`ConsensusRecord`]'s `serial`: a new
//! consensus, or a signature added to the served one) and every request until the next
//! version is answered from memory. One build runs at a time, off the async threads; requests
//! arriving meanwhile wait for it instead of starting their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use shallot_directory::compress::{compress, compress_diff};
use shallot_proto::dir::diff::consensus_diff;

use super::state::ConsensusRecord;

/// One diff, plain and zstd-compressed.
#[derive(Debug, Clone)]
pub(crate) struct ServedDiff {
    /// The diff text.
    pub plain: Bytes,
    /// The same, zstd-compressed.
    pub compressed: Bytes,
}

/// The answers for one version of the served consensus.
#[derive(Debug)]
pub(crate) struct Served {
    /// The [`ConsensusRecord::serial`] these answers were computed from.
    pub serial: u64,
    /// The consensus text, zstd-compressed.
    pub compressed: Bytes,
    /// The diffs to it from each kept consensus, by the base's body digest.
    diffs: Vec<([u8; 32], ServedDiff)>,
}

impl Served {
    /// Compresses `target`'s text and computes the diff to it from each of `bases`. A base
    /// whose diff cannot be computed (it would not encode) is left out: a client asking for
    /// it gets the whole consensus instead.
    pub(crate) fn build(target: &ConsensusRecord, bases: &[ConsensusRecord]) -> Served {
        let diffs = bases
            .iter()
            .filter_map(|b| {
                let diff = consensus_diff(&b.consensus, &target.consensus).ok()?;
                Some((
                    b.digest,
                    ServedDiff {
                        compressed: Bytes::from(compress_diff(&diff)),
                        plain: Bytes::from(diff),
                    },
                ))
            })
            .collect();
        Served {
            serial: target.serial,
            compressed: Bytes::from(compress(&target.text)),
            diffs,
        }
    }

    /// The diff from the consensus whose body digest is `base`, if it was kept.
    pub(crate) fn diff(&self, base: &[u8; 32]) -> Option<&ServedDiff> {
        self.diffs.iter().find(|(d, _)| d == base).map(|(_, s)| s)
    }
}

/// The answers for the newest version of the served consensus seen so far.
#[derive(Debug, Default)]
pub(crate) struct ServeCache {
    current: Mutex<Option<Arc<Served>>>,
    building: tokio::sync::Mutex<()>,
    /// How many times answers were computed (each version once).
    pub builds: AtomicU64,
}

impl ServeCache {
    /// The cached answers, if they are for `serial`.
    fn cached(&self, serial: u64) -> Option<Arc<Served>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|s| s.serial == serial).cloned()
    }

    /// The answers for the consensus version `serial`: from the cache, or else built from
    /// what `load` returns then (the record served and the kept bases; `None` when nothing is
    /// served), which may be a newer version than `serial`.
    pub(crate) async fn get(
        &self,
        serial: u64,
        load: impl FnOnce() -> Option<(ConsensusRecord, Vec<ConsensusRecord>)>,
    ) -> Option<Arc<Served>> {
        if let Some(s) = self.cached(serial) {
            return Some(s);
        }
        let _one_build = self.building.lock().await;
        if let Some(s) = self.cached(serial) {
            return Some(s);
        }
        let (target, bases) = load()?;
        if let Some(s) = self.cached(target.serial) {
            return Some(s);
        }
        let served = tokio::task::spawn_blocking(move || Served::build(&target, &bases))
            .await
            .ok()?;
        let served = Arc::new(served);
        self.builds.fetch_add(1, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&served));
        Some(served)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;
    use shallot_directory::compress::decompress_capped;
    use shallot_proto::dir::diff::apply_diff;
    use shallot_proto::dir::{Consensus, ConsensusParams, MAX_CONSENSUS_LEN};

    fn record(valid_after: u64, key: &IdentityKeypair) -> ConsensusRecord {
        let mut c = Consensus {
            valid_after,
            fresh_until: valid_after + 10,
            valid_until: valid_after + 30,
            params: ConsensusParams {
                epoch_secs: 86400,
                max_share_ppm: 50_000,
            },
            shared_rand: Default::default(),
            relays: vec![],
            signatures: vec![],
        };
        let sig = c.sign_body(key).unwrap();
        c.add_signature(key.public(), sig);
        ConsensusRecord::new(c).unwrap()
    }

    fn unz(b: &Bytes) -> Vec<u8> {
        decompress_capped(b, MAX_CONSENSUS_LEN).unwrap()
    }

    #[tokio::test]
    async fn requests_share_one_build_until_the_consensus_changes() {
        let key = IdentityKeypair::from_secret_bytes(&[1; 32]);
        let old = record(1000, &key);
        let new = record(1010, &key);
        let cache = ServeCache::default();
        let loads = AtomicU64::new(0);
        let load = |target: &ConsensusRecord| {
            loads.fetch_add(1, Ordering::Relaxed);
            Some((target.clone(), vec![old.clone(), target.clone()]))
        };

        let first = cache.get(new.serial, || load(&new)).await.unwrap();
        assert_eq!(
            unz(&first.compressed),
            new.consensus.encode().unwrap().as_bytes()
        );
        let diff = first.diff(&old.digest).unwrap();
        let applied = apply_diff(&old.consensus.encode().unwrap(), &unz(&diff.compressed));
        assert_eq!(applied.unwrap(), new.consensus.encode().unwrap());
        assert_eq!(diff.plain[..], unz(&diff.compressed));
        assert!(first.diff(&[0; 32]).is_none());

        // A second and third request for the same version compute nothing.
        for _ in 0..2 {
            let again = cache.get(new.serial, || load(&new)).await.unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(cache.builds.load(Ordering::Relaxed), 1);
        assert_eq!(loads.load(Ordering::Relaxed), 1);

        // A signature added (a new serial for the same period) or a new consensus replaces it.
        let mut signed_more = new.clone();
        let other = IdentityKeypair::from_secret_bytes(&[2; 32]);
        let sig = signed_more.consensus.sign_body(&other).unwrap();
        signed_more.consensus.add_signature(other.public(), sig);
        signed_more.refresh_text().unwrap();
        assert_ne!(signed_more.serial, new.serial);
        let second = cache
            .get(signed_more.serial, || load(&signed_more))
            .await
            .unwrap();
        assert_eq!(second.serial, signed_more.serial);
        assert_eq!(
            unz(&second.compressed),
            signed_more.consensus.encode().unwrap().as_bytes()
        );
        assert_eq!(cache.builds.load(Ordering::Relaxed), 2);
        let again = cache
            .get(signed_more.serial, || load(&signed_more))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&second, &again));
        assert_eq!(cache.builds.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn nothing_served_builds_nothing() {
        let cache = ServeCache::default();
        assert!(cache.get(7, || None).await.is_none());
        assert_eq!(cache.builds.load(Ordering::Relaxed), 0);
    }
}
