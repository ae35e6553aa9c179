//! Client-side consensus verification and the on-disk cache of the last good consensus
//! (`docs/spec.md` §5.9).
//!
//! A consensus is accepted only if it parses strictly, carries valid signatures from more
//! than half of the configured authorities (signatures by other keys are ignored), the
//! current time is inside `[valid-after − 60 s, valid-until]`, and it is not older than the
//! consensus the client already holds.
//!
//! The types keep that order: parsing yields an [`UnverifiedConsensus`], and only its
//! [`verify`](UnverifiedConsensus::verify) yields the [`VerifiedConsensus`] that path selection
//! accepts.

use std::path::{Path, PathBuf};

use shallot_crypto::keyfile::{replace_private_file, KeyFileError};
use shallot_proto::dir::{Consensus, DocError};
use thiserror::Error;

use crate::network::NetworkFile;

/// Clock skew tolerated before `valid-after`, seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a consensus was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// It does not parse.
    #[error("the consensus is malformed: {0}")]
    Malformed(#[from] DocError),
    /// Too few configured authorities signed it validly.
    #[error(
        "only {valid} of the {configured} configured authorities validly signed the consensus; \
         {needed} are needed"
    )]
    NotEnoughSignatures {
        /// Valid signatures by configured authorities.
        valid: usize,
        /// How many are needed.
        needed: usize,
        /// Authorities configured.
        configured: usize,
    },
    /// Its period has not started (beyond the tolerated skew): check the clock.
    #[error(
        "the consensus is not valid before {valid_after} and it is now {now}; is the clock right?"
    )]
    NotYetValid {
        /// Its valid-after.
        valid_after: u64,
        /// The time now.
        now: u64,
    },
    /// It has expired.
    #[error("the consensus expired at {valid_until} and it is now {now}")]
    Expired {
        /// Its valid-until.
        valid_until: u64,
        /// The time now.
        now: u64,
    },
    /// It is older than the one already held (a rollback).
    #[error("the consensus (valid-after {valid_after}) is older than the one already held (valid-after {cached})")]
    OlderThanCached {
        /// Its valid-after.
        valid_after: u64,
        /// The held one's valid-after.
        cached: u64,
    },
}

/// A consensus as parsed: well formed, but its signatures, times and freshness not yet
/// checked. Nothing that picks relays accepts it; [`UnverifiedConsensus::verify`] is the only
/// way from here to a [`VerifiedConsensus`].
///
/// Handing it to anything that wants a verified consensus does not compile:
///
/// ```compile_fail
/// # use shallot_directory::{UnverifiedConsensus, VerifiedConsensus};
/// fn select_path(_: &VerifiedConsensus) {}
/// fn skip_verification(parsed: UnverifiedConsensus) {
///     select_path(&parsed);
/// }
/// ```
///
/// nor does reading its relays before verification:
///
/// ```compile_fail
/// # use shallot_directory::UnverifiedConsensus;
/// fn peek(parsed: &UnverifiedConsensus) -> usize {
///     parsed.relays.len()
/// }
/// ```
///
/// nor does wrapping a parsed document by hand:
///
/// ```compile_fail
/// # use shallot_directory::VerifiedConsensus;
/// fn forge(doc: shallot_proto::dir::Consensus) -> VerifiedConsensus {
///     VerifiedConsensus(doc)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct UnverifiedConsensus(Consensus);

impl UnverifiedConsensus {
    /// Parses a consensus text strictly.
    pub fn parse(text: &str) -> Result<Self, VerifyError> {
        Ok(UnverifiedConsensus(Consensus::parse(text)?))
    }

    /// Verifies the consensus for a client configured with `network`, at time `now` (unix
    /// seconds), holding a consensus with valid-after `cached_valid_after` if any: more than
    /// half of the configured authorities signed it validly, `now` is inside its lifetime
    /// (with [`CLOCK_SKEW_SECS`] of skew), and it is not older than the one held.
    pub fn verify(
        self,
        network: &NetworkFile,
        now: u64,
        cached_valid_after: Option<u64>,
    ) -> Result<VerifiedConsensus, VerifyError> {
        let consensus = self.0;
        let signers = consensus.valid_signers(&network.keys())?;
        let needed = network.majority();
        if signers.len() < needed {
            return Err(VerifyError::NotEnoughSignatures {
                valid: signers.len(),
                needed,
                configured: network.authorities.len(),
            });
        }
        if now.saturating_add(CLOCK_SKEW_SECS) < consensus.valid_after {
            return Err(VerifyError::NotYetValid {
                valid_after: consensus.valid_after,
                now,
            });
        }
        if now > consensus.valid_until {
            return Err(VerifyError::Expired {
                valid_until: consensus.valid_until,
                now,
            });
        }
        if let Some(cached) = cached_valid_after {
            if consensus.valid_after < cached {
                return Err(VerifyError::OlderThanCached {
                    valid_after: consensus.valid_after,
                    cached,
                });
            }
        }
        Ok(VerifiedConsensus(consensus))
    }
}

/// A consensus that [`UnverifiedConsensus::verify`] accepted: the only form path selection,
/// guard selection and the circuit manager take. It reads as the document it wraps
/// (`Deref<Target = Consensus>`), but cannot be built from one outside this module (except by
/// tests, behind the test-only `testing` feature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedConsensus(Consensus);

impl VerifiedConsensus {
    /// Trusts `consensus` without checking it: for unit tests that build synthetic networks.
    /// Only with the test-only `testing` feature, never in a production build.
    #[cfg(any(test, feature = "testing"))]
    pub fn assume_verified(consensus: Consensus) -> Self {
        VerifiedConsensus(consensus)
    }

    /// The document itself, giving up the proof that it was verified.
    pub fn into_inner(self) -> Consensus {
        self.0
    }
}

impl std::ops::Deref for VerifiedConsensus {
    type Target = Consensus;

    fn deref(&self) -> &Consensus {
        &self.0
    }
}

/// Parses and verifies a consensus text: [`UnverifiedConsensus::parse`] then
/// [`UnverifiedConsensus::verify`].
pub fn verify_consensus(
    text: &str,
    network: &NetworkFile,
    now: u64,
    cached_valid_after: Option<u64>,
) -> Result<VerifiedConsensus, VerifyError> {
    UnverifiedConsensus::parse(text)?.verify(network, now, cached_valid_after)
}

/// Why the consensus cache could not be used.
#[derive(Debug, Error)]
pub enum CacheError {
    /// Reading or writing the file failed.
    #[error("consensus cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Writing the file failed.
    #[error("consensus cache: {0}")]
    Write(#[from] KeyFileError),
    /// The cached consensus no longer verifies (expired, or the network file changed).
    #[error("cached consensus {path} is not usable: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: VerifyError,
    },
}

/// The last good consensus, kept in one file.
#[derive(Debug, Clone)]
pub struct ConsensusCache {
    /// Where the consensus text is kept.
    pub path: PathBuf,
}

impl ConsensusCache {
    /// A cache kept at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConsensusCache { path: path.into() }
    }

    /// Loads the cached consensus, verifying it again as if fetched now; `None` if there is
    /// none.
    pub fn load(
        &self,
        network: &NetworkFile,
        now: u64,
    ) -> Result<Option<VerifiedConsensus>, CacheError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CacheError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        verify_consensus(&text, network, now, None)
            .map(Some)
            .map_err(|source| CacheError::Invalid {
                path: self.path.clone(),
                source,
            })
    }

    /// Loads the cached consensus once it has expired, as the base for a diff
    /// (`docs/spec.md` §5.12): its signatures are verified as they were when it was current
    /// (at its valid-after), it must have started by `now`, and it must still be kept as a
    /// base by the directories ([`crate::day_bases::WINDOW_SECS`] after its valid-after;
    /// naming an older one would only tell them when this client was last online). `None`
    /// if there is none, or it does not verify so. It is not for use: the caller fetches a
    /// valid one.
    pub fn load_expired(&self, network: &NetworkFile, now: u64) -> Option<VerifiedConsensus> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let unverified = UnverifiedConsensus::parse(&text).ok()?;
        let valid_after = unverified.0.valid_after;
        if valid_after > now || now > valid_after.saturating_add(crate::day_bases::WINDOW_SECS) {
            return None;
        }
        unverified.verify(network, valid_after, None).ok()
    }

    /// Replaces the cached consensus atomically, without waiting for the disk: after a crash
    /// the file may be the previous consensus, or one that does not verify, which
    /// [`ConsensusCache::load`] refuses and the caller fetches again.
    pub fn store(&self, text: &str) -> Result<(), CacheError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        replace_private_file(Path::new(&self.path), text.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    fn network(keys: &[IdentityKeypair]) -> NetworkFile {
        NetworkFile::of_test_authorities(&keys.iter().map(|k| k.public()).collect::<Vec<_>>())
    }

    fn keys(n: usize) -> Vec<IdentityKeypair> {
        (0..n)
            .map(|_| IdentityKeypair::generate(&mut rand::thread_rng()))
            .collect()
    }

    fn consensus_text(valid_after: u64, signers: &[&IdentityKeypair]) -> String {
        crate::test_consensus::signed(valid_after, vec![], signers)
            .encode()
            .unwrap()
    }

    const T: u64 = 1_700_000_000;

    #[test]
    fn verify_refuses_too_few_signatures_and_unknown_keys() {
        let ks = keys(3);
        let strangers = keys(3);
        let net = network(&ks);
        // One of three configured authorities is not a majority.
        let one = UnverifiedConsensus::parse(&consensus_text(T, &[&ks[0]])).unwrap();
        assert!(matches!(
            one.verify(&net, T, None),
            Err(VerifyError::NotEnoughSignatures {
                valid: 1,
                needed: 2,
                configured: 3
            })
        ));
        // Three valid signatures by keys the client does not trust count for nothing.
        let text = consensus_text(T, &[&strangers[0], &strangers[1], &strangers[2]]);
        let foreign = UnverifiedConsensus::parse(&text).unwrap();
        assert!(matches!(
            foreign.verify(&net, T, None),
            Err(VerifyError::NotEnoughSignatures { valid: 0, .. })
        ));
        // The same document passes for a client that trusts those keys, and not after expiry.
        let good = UnverifiedConsensus::parse(&text).unwrap();
        let verified = good.clone().verify(&network(&strangers), T, None).unwrap();
        assert_eq!(verified.valid_after, T);
        assert!(matches!(
            good.verify(&network(&strangers), T + 3 * 3600 + 1, None),
            Err(VerifyError::Expired { .. })
        ));
    }

    #[test]
    fn accepts_a_majority_signed_current_consensus() {
        let ks = keys(3);
        let net = network(&ks);
        let text = consensus_text(T, &[&ks[0], &ks[2]]);
        let c = verify_consensus(&text, &net, T + 10, Some(T)).unwrap();
        assert_eq!(c.valid_after, T);
        // Within the clock skew before valid-after, and up to valid-until.
        verify_consensus(&text, &net, T - CLOCK_SKEW_SECS, None).unwrap();
        verify_consensus(&text, &net, T + 3 * 3600, None).unwrap();
    }

    #[test]
    fn refuses_one_of_three_signatures() {
        let ks = keys(3);
        let err =
            verify_consensus(&consensus_text(T, &[&ks[1]]), &network(&ks), T, None).unwrap_err();
        assert_eq!(
            err,
            VerifyError::NotEnoughSignatures {
                valid: 1,
                needed: 2,
                configured: 3
            }
        );
        assert!(err.to_string().contains("only 1 of the 3"), "{err}");
    }

    #[test]
    fn ignores_signatures_by_unknown_keys() {
        let ks = keys(3);
        let strangers = keys(3);
        let text = consensus_text(T, &[&ks[0], &strangers[0], &strangers[1], &strangers[2]]);
        let err = verify_consensus(&text, &network(&ks), T, None).unwrap_err();
        assert!(matches!(
            err,
            VerifyError::NotEnoughSignatures { valid: 1, .. }
        ));
    }

    #[test]
    fn refuses_a_tampered_consensus() {
        let ks = keys(3);
        let text = consensus_text(T, &[&ks[0], &ks[1], &ks[2]]);
        let tampered = text.replace("epoch-secs=86400", "epoch-secs=86401");
        let err = verify_consensus(&tampered, &network(&ks), T, None).unwrap_err();
        assert!(matches!(
            err,
            VerifyError::NotEnoughSignatures { valid: 0, .. }
        ));
        let garbled = text.replacen("valid-after", "valid-afterr", 1);
        assert!(matches!(
            verify_consensus(&garbled, &network(&ks), T, None),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_expired_early_and_rolled_back() {
        let ks = keys(3);
        let net = network(&ks);
        let text = consensus_text(T, &[&ks[0], &ks[1]]);
        let err = verify_consensus(&text, &net, T + 3 * 3600 + 1, None).unwrap_err();
        assert!(matches!(err, VerifyError::Expired { .. }));
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(matches!(
            verify_consensus(&text, &net, T - CLOCK_SKEW_SECS - 1, None),
            Err(VerifyError::NotYetValid { .. })
        ));
        let err = verify_consensus(&text, &net, T, Some(T + 3600)).unwrap_err();
        assert!(matches!(err, VerifyError::OlderThanCached { .. }));
    }

    #[test]
    fn cache_stores_and_reverifies() {
        let ks = keys(1);
        let net = network(&ks);
        let dir = shallot_rt::scratch::path("cache");
        let cache = ConsensusCache::new(dir.join("sub").join("consensus.txt"));
        assert!(cache.load(&net, T).unwrap().is_none());
        let text = consensus_text(T, &[&ks[0]]);
        cache.store(&text).unwrap();
        assert_eq!(cache.load(&net, T).unwrap().unwrap().valid_after, T);
        assert!(matches!(
            cache.load(&net, T + 4 * 3600),
            Err(CacheError::Invalid { .. })
        ));
        assert!(matches!(
            cache.load(&network(&keys(1)), T),
            Err(CacheError::Invalid { .. })
        ));
        // What a crash can leave, the store not waiting for the disk: a cut or empty file is
        // refused, never taken for a consensus.
        for cut in [text.len() / 2, 0] {
            std::fs::write(dir.join("sub").join("consensus.txt"), &text[..cut]).unwrap();
            assert!(matches!(
                cache.load(&net, T),
                Err(CacheError::Invalid { .. })
            ));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An expired consensus is loaded as a diff base only if the authorities signed it, and
    /// only once it has started: a consensus file written by someone else, or dated ahead
    /// (which would make every real consensus look older than the one held), is not a base.
    #[test]
    fn an_expired_consensus_is_a_base_only_if_signed_and_started() {
        let ks = keys(3);
        let net = network(&ks);
        let dir = shallot_rt::scratch::path("base");
        let cache = ConsensusCache::new(dir.join("consensus.txt"));
        assert!(cache.load_expired(&net, T).is_none(), "no file");
        let later = T + 24 * 3600;
        cache.store(&consensus_text(T, &[&ks[0], &ks[1]])).unwrap();
        assert!(cache.load(&net, later).is_err(), "expired");
        assert_eq!(cache.load_expired(&net, later).unwrap().valid_after, T);
        let window = crate::day_bases::WINDOW_SECS;
        assert!(cache.load_expired(&net, T + window).is_some());
        assert!(
            cache.load_expired(&net, T + window + 1).is_none(),
            "no base kept"
        );

        let strangers = keys(2);
        cache
            .store(&consensus_text(T, &[&strangers[0], &strangers[1]]))
            .unwrap();
        assert!(
            cache.load_expired(&net, later).is_none(),
            "not the authorities'"
        );
        cache.store(&consensus_text(T, &[&ks[0]])).unwrap();
        assert!(cache.load_expired(&net, later).is_none(), "one of three");

        cache
            .store(&consensus_text(later + 3600, &[&ks[0], &ks[1]]))
            .unwrap();
        assert!(cache.load_expired(&net, later).is_none(), "dated ahead");

        std::fs::write(&cache.path, "shallot-consensus version 3\n").unwrap();
        assert!(cache.load_expired(&net, later).is_none(), "not a consensus");
        let _ = std::fs::remove_dir_all(dir);
    }
}
