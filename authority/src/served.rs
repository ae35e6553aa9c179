//! What `GET /consensus.z` and `GET /consensus/diff/…` serve, computed once per consensus
//! text and kept (`docs/spec.md` §5.8, §5.12).
//!
//! Compressing a 10,000-relay consensus and diffing it against the kept ones takes hundreds of
//! milliseconds; done per request it let every fetch cost the authority that much. Here it is
//! done once for each version of the served text (a [`ConsensusRecord`]'s `serial`: a new
//! consensus, or a signature added to the served one) and every request until the next
//! version is answered from memory. One build runs at a time, off the async threads; requests
//! arriving meanwhile wait for it instead of starting their own.
//!
//! A client whose consensus has expired names one older than those kept: the diff from it is
//! computed on the first request naming one of the last day's consensuses ([`DayBases`]) and
//! kept with the answers of that version, one computation at a time. A digest not kept
//! computes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Bytes;
use shallot_directory::compress::{compress, compress_diff};
use shallot_directory::day_bases::{DayBase, DayBases};
use shallot_directory::diff_queue::DiffQueue;
use shallot_proto::dir::diff::consensus_diff;
use shallot_proto::dir::Consensus;
use shallot_rt::lock;

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
    /// The consensus served, for diffs from older bases.
    target: Arc<Consensus>,
    /// The diffs to it computed on request from older bases ([`DayBases`]), by the base's
    /// body digest; `None` where none could be made or it was no smaller than the whole.
    older: Mutex<Vec<([u8; 32], Option<ServedDiff>)>>,
}

/// The diff from `base` to `target`, compressed; `None` if it cannot be computed.
fn served_diff(base: &Consensus, target: &Consensus) -> Option<ServedDiff> {
    let diff = consensus_diff(base, target).ok()?;
    Some(ServedDiff {
        compressed: Bytes::from(compress_diff(&diff)),
        plain: Bytes::from(diff),
    })
}

impl Served {
    /// Compresses `target`'s text and computes the diff to it from each of `bases`. A base
    /// whose diff cannot be computed (it would not encode) is left out: a client asking for
    /// it gets the whole consensus instead.
    pub(crate) fn build(target: ConsensusRecord, bases: &[ConsensusRecord]) -> Served {
        let diffs = bases
            .iter()
            .filter_map(|b| Some((b.digest, served_diff(&b.consensus, &target.consensus)?)))
            .collect();
        Served {
            serial: target.serial,
            compressed: Bytes::from(compress(&target.text)),
            diffs,
            target: Arc::new(target.consensus),
            older: Mutex::default(),
        }
    }

    /// The diff from the consensus whose body digest is `base`, if it is one of those kept
    /// whole or its diff from the day's bases was computed already.
    fn ready(&self, base: &[u8; 32]) -> Option<Option<ServedDiff>> {
        if let Some((_, s)) = self.diffs.iter().find(|(d, _)| d == base) {
            return Some(Some(s.clone()));
        }
        lock(&self.older)
            .iter()
            .find(|(d, _)| d == base)
            .map(|(_, s)| s.clone())
    }

    /// Computes the diff from the day's base `base` and keeps it, or keeps that there is
    /// none worth sending.
    fn add_older(&self, base: &DayBase) -> Option<ServedDiff> {
        let diff = base
            .diff_to(&self.target, self.compressed.len())
            .map(|d| ServedDiff {
                plain: Bytes::from(d.plain),
                compressed: Bytes::from(d.compressed),
            });
        lock(&self.older).push((base.digest, diff.clone()));
        diff
    }
}

/// What the blocking jobs keep up to date themselves, so that a request dropped while its job
/// runs (its client hung up) loses nothing: the job still stores what it made, and the next
/// request finds it instead of starting the work again.
#[derive(Debug, Default)]
struct Kept {
    /// The answers for the newest version of the served consensus built so far.
    current: Mutex<Option<Arc<Served>>>,
    /// The last day's consensuses, each added when it is first a base.
    day: Mutex<DayBases>,
    /// How many times answers were computed (each version once), counted as each starts.
    builds: AtomicU64,
    /// How many diffs from the day's bases were started (each base once per version).
    older_diffs: AtomicU64,
}

impl Kept {
    /// The cached answers, if they are for `serial`.
    fn cached(&self, serial: u64) -> Option<Arc<Served>> {
        lock(&self.current)
            .as_ref()
            .filter(|s| s.serial == serial)
            .cloned()
    }
}

/// The answers for the newest version of the served consensus seen so far, and the day's
/// bases. One build, and one diff from the day's bases, runs at a time; the permit to run
/// moves into the job and is given back when the job ends, not when the request that started
/// it goes away.
#[derive(Debug, Default)]
pub(crate) struct ServeCache {
    kept: Arc<Kept>,
    building: Arc<tokio::sync::Mutex<()>>,
    older: DiffQueue,
}

impl ServeCache {
    /// How many times answers were computed (each version once).
    pub(crate) fn builds(&self) -> u64 {
        self.kept.builds.load(Ordering::Relaxed)
    }

    /// How many diffs from the day's bases were started (each base once per version).
    pub(crate) fn older_diffs(&self) -> u64 {
        self.kept.older_diffs.load(Ordering::Relaxed)
    }

    /// The answers for the consensus version `serial`: from the cache, or else built from
    /// what `load` returns then (the record served and the kept bases; `None` when nothing is
    /// served), which may be a newer version than `serial`.
    pub(crate) async fn get(
        &self,
        serial: u64,
        load: impl FnOnce() -> Option<(ConsensusRecord, Vec<ConsensusRecord>)>,
    ) -> Option<Arc<Served>> {
        if let Some(s) = self.kept.cached(serial) {
            return Some(s);
        }
        let one_build = Arc::clone(&self.building).lock_owned().await;
        if let Some(s) = self.kept.cached(serial) {
            return Some(s);
        }
        let (target, bases) = load()?;
        if let Some(s) = self.kept.cached(target.serial) {
            return Some(s);
        }
        let kept = Arc::clone(&self.kept);
        kept.builds.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _one_build = one_build;
            // Every consensus kept whole is a base; keep each in the day's bases too, once.
            let held = lock(&kept.day);
            let new: Vec<&ConsensusRecord> =
                bases.iter().filter(|b| !held.holds(&b.digest)).collect();
            drop(held);
            // Compressed without the lock: a large consensus takes a while.
            let new: Vec<DayBase> = new
                .into_iter()
                .map(|b| DayBase::new(b.digest, b.consensus.valid_after, &b.text))
                .collect();
            let mut held = lock(&kept.day);
            for b in new {
                held.keep(b);
            }
            drop(held);
            let served = Arc::new(Served::build(target, &bases));
            *lock(&kept.current) = Some(Arc::clone(&served));
            served
        })
        .await
        .ok()
    }

    /// The diff from the consensus whose body digest is `base` to the one `served` answers
    /// for: one computed ahead, else one computed now (and kept) if `base` is among the
    /// day's bases; `None` when it is not kept, no diff is worth sending, or the diffs being
    /// computed for others took longer than [`OLDER_WAIT`](shallot_directory::day_bases::OLDER_WAIT).
    pub(crate) async fn diff(&self, served: &Arc<Served>, base: &[u8; 32]) -> Option<ServedDiff> {
        if let Some(ready) = served.ready(base) {
            return ready;
        }
        let old = lock(&self.kept.day).get(base)?;
        let s = Arc::clone(served);
        let ready = || served.ready(base);
        let job = move || s.add_older(&old);
        self.older.run(&self.kept.older_diffs, ready, job).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;
    use shallot_directory::compress::decompress_capped;
    use shallot_proto::dir::diff::apply_diff;
    use shallot_proto::dir::MAX_CONSENSUS_LEN;
    use std::future::Future;

    fn record(valid_after: u64, key: &IdentityKeypair) -> ConsensusRecord {
        crate::state::test_record(valid_after, &[key])
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
        let diff = cache.diff(&first, &old.digest).await.unwrap();
        let applied = apply_diff(&old.consensus.encode().unwrap(), &unz(&diff.compressed));
        assert_eq!(applied.unwrap(), new.consensus.encode().unwrap());
        assert_eq!(diff.plain[..], unz(&diff.compressed));
        assert!(cache.diff(&first, &[0; 32]).await.is_none());
        assert_eq!(cache.older_diffs(), 0);

        // A second and third request for the same version compute nothing.
        for _ in 0..2 {
            let again = cache.get(new.serial, || load(&new)).await.unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(cache.builds(), 1);
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
        assert_eq!(cache.builds(), 2);
        let again = cache
            .get(signed_more.serial, || load(&signed_more))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&second, &again));
        assert_eq!(cache.builds(), 2);
    }

    /// A consensus of 20 relays whose weights depend on `valid_after`, signed by `key`.
    fn busy_record(valid_after: u64, key: &IdentityKeypair) -> ConsensusRecord {
        let mut relays = shallot_net::testing::relays(20);
        for (i, r) in relays.iter_mut().enumerate() {
            r.bandwidth = 1000 + (valid_after / 10 % 7) * (i as u64 % 3) * 1000;
        }
        let mut c = shallot_net::testing::consensus(
            relays,
            valid_after,
            valid_after + 10,
            valid_after + 30,
        );
        let sig = c.sign_body(key).unwrap();
        c.add_signature(key.public(), sig);
        ConsensusRecord::new(c).unwrap()
    }

    /// Six consensuses served in turn, each with the last three kept whole as bases: the
    /// cache, the records, and the answers for the newest.
    async fn six_served() -> (ServeCache, Vec<ConsensusRecord>, Arc<Served>) {
        let key = IdentityKeypair::from_secret_bytes(&[3; 32]);
        let records: Vec<ConsensusRecord> =
            (0..6).map(|i| busy_record(1000 + 10 * i, &key)).collect();
        let cache = ServeCache::default();
        let mut served = None;
        for (i, target) in records.iter().enumerate() {
            let kept = records[i.saturating_sub(2)..=i].to_vec();
            served = cache
                .get(target.serial, || Some((target.clone(), kept)))
                .await;
        }
        (cache, records, served.unwrap())
    }

    /// A client back with a consensus older than the three kept whole gets a diff from it,
    /// computed on its request and then kept for that version; a digest that names no
    /// consensus of the day computes nothing.
    #[tokio::test]
    async fn a_consensus_of_the_day_is_a_base_on_request() {
        let (cache, records, served) = six_served().await;
        let newest = records[5].consensus.encode().unwrap();
        assert_eq!(cache.older_diffs(), 0);

        let oldest = &records[0];
        assert!(served.ready(&oldest.digest).is_none(), "not kept whole");
        let diff = cache.diff(&served, &oldest.digest).await.unwrap();
        let text = oldest.consensus.encode().unwrap();
        assert_eq!(apply_diff(&text, &unz(&diff.compressed)).unwrap(), newest);
        assert!(diff.compressed.len() < served.compressed.len());
        assert_eq!(cache.older_diffs(), 1);

        // Asked again: kept, not computed again.
        let again = cache.diff(&served, &oldest.digest).await.unwrap();
        assert_eq!(again.plain, diff.plain);
        assert_eq!(cache.older_diffs(), 1);

        // Digests of no consensus of the day, however many: nothing computed.
        for i in 0..100u8 {
            assert!(cache.diff(&served, &[i; 32]).await.is_none());
        }
        assert_eq!(cache.older_diffs(), 1);

        // One kept whole is still answered from the diffs computed ahead.
        assert!(cache.diff(&served, &records[4].digest).await.is_some());
        assert_eq!(cache.older_diffs(), 1);
    }

    /// Clients that ask for a diff from an older base and hang up at once (the request is
    /// dropped as soon as it started the work) make it computed once, not once each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_dropped_mid_work_compute_a_diff_once() {
        let (cache, records, served) = six_served().await;
        let oldest = records[0].digest;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..200 {
            // Polled once, as far as it goes without waiting, then dropped.
            let mut asked = std::pin::pin!(cache.diff(&served, &oldest));
            let _ = asked.as_mut().poll(&mut cx);
        }
        assert_eq!(cache.older_diffs(), 1, "one computation started");
        // The next request waits for it and takes what it made.
        assert!(cache.diff(&served, &oldest).await.is_some());
        assert_eq!(cache.older_diffs(), 1);
        assert_eq!(lock(&served.older).len(), 1);
    }

    /// Requests for a new version that hang up at once (each dropped as soon as it started
    /// the build) make the answers built once, not once each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_dropped_mid_build_build_once() {
        let key = IdentityKeypair::from_secret_bytes(&[5; 32]);
        let target = busy_record(2000, &key);
        let cache = ServeCache::default();
        let load = || Some((target.clone(), vec![target.clone()]));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..200 {
            let mut asked = std::pin::pin!(cache.get(target.serial, load));
            let _ = asked.as_mut().poll(&mut cx);
        }
        assert_eq!(cache.builds(), 1, "one build started");
        let served = cache.get(target.serial, load).await.unwrap();
        assert_eq!(served.serial, target.serial);
        assert_eq!(cache.builds(), 1);
    }

    #[tokio::test]
    async fn nothing_served_builds_nothing() {
        let cache = ServeCache::default();
        assert!(cache.get(7, || None).await.is_none());
        assert_eq!(cache.builds(), 0);
    }
}
