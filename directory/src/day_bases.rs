//! The consensuses of the last day, kept compressed as bases for diffs to a client back after
//! its consensus expired (`docs/spec.md` §5.12, §5.13): by the authorities and by relays as
//! directory caches.
//!
//! Both keep their last few consensuses whole and compute the diffs from them ahead. A client
//! whose consensus has expired (each is valid for three periods) holds one older than that:
//! without these bases it fetched the whole consensus again, 1.42 MB at 10,000 relays after a
//! day against a 331 KB diff. Each consensus is kept here once, by its body digest,
//! zstd-compressed (about 1.4 MB at 10,000 relays), for [`WINDOW_SECS`] after its valid-after
//! and at most [`MAX_KEPT`] of them: 27 hourly consensuses, about 38 MB at that size. The diff
//! from one is computed when a client first names it. Pure: no I/O, no clock.

use std::collections::VecDeque;
use std::sync::Arc;

use shallot_proto::dir::diff::consensus_diff;
use shallot_proto::dir::{Consensus, MAX_CONSENSUS_LEN};

use crate::compress::{compress, compress_diff, decompress_capped};

/// How long after its valid-after a consensus stays a base: a day, and two hourly periods
/// more, so that a client back at the same time the next day, holding a consensus up to a
/// period older than that, still gets a diff.
pub const WINDOW_SECS: u64 = 26 * 3600;

/// At most this many bases: a day of hourly consensuses with room to spare, and the bound on
/// memory (and on the diffs one version of the served consensus can be asked to compute) when
/// the periods are short, as on a test network.
pub const MAX_KEPT: usize = 32;

/// How long a request naming one of the day's older consensuses waits while the diffs
/// other clients named are computed (one at a time); past it, the client is sent the whole
/// consensus instead (or, by an authority, a 404, after which it fetches the whole one), well
/// inside a client's time for one request.
pub const OLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// One consensus kept as a base.
#[derive(Debug, Clone)]
pub struct DayBase {
    /// SHA-256 of its body: what a client names it by.
    pub digest: [u8; 32],
    /// Its valid-after.
    pub valid_after: u64,
    /// Its text, zstd-compressed.
    pub compressed: Arc<Vec<u8>>,
}

impl DayBase {
    /// Compresses `text`, the consensus with body digest `digest`.
    pub fn new(digest: [u8; 32], valid_after: u64, text: &[u8]) -> DayBase {
        DayBase {
            digest,
            valid_after,
            compressed: Arc::new(compress(text)),
        }
    }

    /// A base from text already compressed (as a cache keeps the consensus it serves).
    pub fn from_compressed(digest: [u8; 32], valid_after: u64, compressed: Arc<Vec<u8>>) -> Self {
        DayBase {
            digest,
            valid_after,
            compressed,
        }
    }

    /// The consensus again, parsed; `None` if it does not decompress or parse (it was
    /// this process's own text, so that is a bug, and the client gets the whole one).
    pub fn consensus(&self) -> Option<Consensus> {
        let text = decompress_capped(&self.compressed, MAX_CONSENSUS_LEN).ok()?;
        Consensus::parse(std::str::from_utf8(&text).ok()?).ok()
    }

    /// The diff from this base to `target`, worth sending instead of the whole consensus
    /// whose compressed length is `whole_len`: `None` if this base is not older than
    /// `target`, the diff cannot be computed, or compressed it is no smaller than the whole.
    pub fn diff_to(&self, target: &Consensus, whole_len: usize) -> Option<DayDiff> {
        if self.valid_after >= target.valid_after {
            return None;
        }
        let plain = consensus_diff(&self.consensus()?, target).ok()?;
        let compressed = compress_diff(&plain);
        (compressed.len() < whole_len).then_some(DayDiff { plain, compressed })
    }
}

/// A diff from one of the day's bases to the newest consensus.
#[derive(Debug, Clone)]
pub struct DayDiff {
    /// The diff text.
    pub plain: Vec<u8>,
    /// The same, zstd-compressed.
    pub compressed: Vec<u8>,
}

/// The bases kept, oldest first.
#[derive(Debug, Default, Clone)]
pub struct DayBases {
    kept: VecDeque<DayBase>,
}

impl DayBases {
    /// Whether the consensus with body digest `digest` is kept.
    pub fn holds(&self, digest: &[u8; 32]) -> bool {
        self.kept.iter().any(|b| b.digest == *digest)
    }

    /// Keeps `base` (once per digest), then forgets those older than [`WINDOW_SECS`] before
    /// the newest kept, and the oldest beyond [`MAX_KEPT`].
    pub fn keep(&mut self, base: DayBase) {
        if self.holds(&base.digest) {
            return;
        }
        let at = self
            .kept
            .iter()
            .position(|b| b.valid_after > base.valid_after)
            .unwrap_or(self.kept.len());
        self.kept.insert(at, base);
        let newest = self.kept.back().map_or(0, |b| b.valid_after);
        while self.kept.len() > MAX_KEPT
            || self
                .kept
                .front()
                .is_some_and(|b| b.valid_after.saturating_add(WINDOW_SECS) < newest)
        {
            self.kept.pop_front();
        }
    }

    /// The base with body digest `digest`, if kept.
    pub fn get(&self, digest: &[u8; 32]) -> Option<DayBase> {
        self.kept.iter().find(|b| b.digest == *digest).cloned()
    }

    /// How many are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(valid_after: u64) -> DayBase {
        let mut digest = [0; 32];
        digest[..8].copy_from_slice(&valid_after.to_be_bytes());
        DayBase::new(
            digest,
            valid_after,
            format!("text {valid_after}").as_bytes(),
        )
    }

    #[test]
    fn each_consensus_is_kept_once_for_a_day_and_two_periods() {
        let mut day = DayBases::default();
        let hour = 3600;
        for h in 0..30 {
            day.keep(base(h * hour));
            day.keep(base(h * hour));
        }
        // Hours 3..=29 are within 26 hours of hour 29.
        assert_eq!(day.len(), 27);
        assert!(!day.holds(&base(2 * hour).digest));
        assert!(day.holds(&base(3 * hour).digest));
        let got = day.get(&base(3 * hour).digest).unwrap();
        assert_eq!(got.valid_after, 3 * hour);
        assert_eq!(
            decompress_capped(&got.compressed, 1 << 10).unwrap(),
            b"text 10800"
        );
        // One arriving late (out of order) goes in its place and is forgotten in turn.
        day.keep(base(2 * hour + 1));
        assert!(!day.holds(&base(2 * hour + 1).digest));
        day.keep(base(20 * hour + 1));
        assert!(day.holds(&base(20 * hour + 1).digest));
        assert_eq!(day.kept.back().unwrap().valid_after, 29 * hour);
    }

    fn consensus(valid_after: u64, relays: u8) -> Consensus {
        let key = shallot_crypto::keys::IdentityKeypair::from_secret_bytes(&[99; 32]);
        crate::test_consensus::signed(valid_after, crate::test_consensus::relays(relays), &[&key])
    }

    #[test]
    fn a_diff_is_offered_only_from_an_older_base_and_only_when_smaller() {
        let old = consensus(7200, 40);
        let new = consensus(10_800, 41);
        let old_text = old.encode().unwrap();
        let base = DayBase::new([7; 32], old.valid_after, old_text.as_bytes());
        let diff = base.diff_to(&new, usize::MAX).unwrap();
        let applied = shallot_proto::dir::diff::apply_diff(&old_text, &diff.plain).unwrap();
        assert_eq!(applied, new.encode().unwrap());
        assert_eq!(
            decompress_capped(&diff.compressed, MAX_CONSENSUS_LEN).unwrap(),
            diff.plain
        );
        // Not smaller than the whole: the client is sent the whole consensus instead.
        assert!(base.diff_to(&new, diff.compressed.len()).is_none());
        // A base no older than the target is never a base for it.
        let same_time = DayBase::new([8; 32], new.valid_after, old_text.as_bytes());
        assert!(same_time.diff_to(&new, usize::MAX).is_none());
        // Text that is not a consensus gives no diff rather than a wrong one.
        let junk = DayBase::new([9; 32], 0, b"not a consensus");
        assert!(junk.diff_to(&new, usize::MAX).is_none());
    }

    #[test]
    fn short_periods_are_bounded_by_count() {
        let mut day = DayBases::default();
        for t in 0..100 {
            day.keep(base(1000 + 3 * t));
        }
        assert_eq!(day.len(), MAX_KEPT);
        assert!(day.holds(&base(1000 + 3 * 99).digest));
        assert!(!day.holds(&base(1000 + 3 * (99 - MAX_KEPT as u64)).digest));
    }
}
