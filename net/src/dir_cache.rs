//! The client's side of directory caches (`docs/spec.md` §5.13): once it holds a consensus, a
//! client asks its guard for the next one over the link it already has, on a one-hop circuit,
//! and goes to the authorities only when it holds none or every guard asked failed.
//!
//! The decisions are pure: [`sources`] says which sources to try, in order;
//! [`accept_answer`] turns a guard's whole answer into a consensus checked exactly as an
//! authority's is (a majority of the configured authorities' signatures, inside its validity)
//! and refuses one that is not newer than the one held. [`fetch_from_guard`] is the thin shell
//! that asks over a circuit, under a time limit and the size cap of [`MAX_CONSENSUS_LEN`].
//! A guard can forge nothing; at worst it withholds, stalls or serves an old consensus, each
//! of which ends in a [`CacheError`] and the next source.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_directory::compress::{decompress_capped, DecompressError};
use shallot_directory::network::NetworkFile;
use shallot_directory::verify::{verify_consensus, VerifyError};
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::diff::{apply_diff, text_body_digest};
use shallot_proto::dir::{Consensus, DocError, RelayEntry, MAX_CONSENSUS_LEN};
use shallot_proto::dir_cache::{AnswerForm, DirDownload, DirMsg, Download, DownloadError};
use shallot_proto::relay_msg::RelayMsg;
use thiserror::Error;

use crate::channel::ClientChannel;
use crate::circuit::{Circuit, HopNum, HopSpec};
use crate::err::NetError;

/// Guards asked, in order of preference, before the authorities.
pub const GUARDS_ASKED: usize = 2;

/// Why a guard's answer was not used.
#[derive(Debug, Error)]
pub enum CacheError {
    /// The circuit to the guard failed or closed.
    #[error("the directory circuit failed: {0}")]
    Circuit(#[from] NetError),
    /// The whole answer did not come in time.
    #[error("no whole answer within {limit:?} ({got} of {} bytes)", .of.map_or("?".to_string(), |n| n.to_string()))]
    Timeout {
        /// The time limit.
        limit: Duration,
        /// Bytes received.
        got: usize,
        /// Bytes announced, if the answer's head came.
        of: Option<usize>,
    },
    /// The answer broke the directory protocol (over the cap, bytes past its length, ...).
    #[error("bad answer: {0}")]
    Download(#[from] DownloadError),
    /// The guard has no consensus to give.
    #[error("the guard has no consensus to give")]
    Unavailable,
    /// The guard answered with something other than a directory message.
    #[error("the guard answered with a non-directory message")]
    Unexpected,
    /// The compressed answer did not decompress (or is a decompression bomb).
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    /// The answer is not UTF-8 text.
    #[error("the consensus is not UTF-8 text")]
    NotText,
    /// The diff does not apply to the consensus held.
    #[error("the diff does not apply: {0}")]
    Diff(#[source] DocError),
    /// A diff came though the client holds no consensus to apply it to.
    #[error("a diff came for a client that holds no consensus")]
    DiffWithoutBase,
    /// What the answer gives does not verify (forged, too few signatures, expired, older
    /// than the one held).
    #[error("the consensus does not verify: {0}")]
    Verify(#[source] Arc<VerifyError>),
    /// The consensus is valid but no newer than the one held: the guard is behind.
    #[error("the guard's consensus (valid-after {valid_after}) is not newer than the one held")]
    NotNewer {
        /// Its valid-after.
        valid_after: u64,
    },
}

/// A source of the consensus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This guard, as a directory cache.
    Guard(RelayId),
    /// The authorities in the network file.
    Authorities,
}

/// Whether a client holding `held` at `now` asks its guards first: while it is valid, and
/// after it expired while the caches still keep it as a base (for
/// [`shallot_directory::day_bases::WINDOW_SECS`] after its valid-after), so that a client
/// back after a day is sent a diff by its guard and the authorities do not see it return.
pub fn guards_asked_holding(held: &Consensus, now: u64) -> bool {
    now <= held.valid_until
        || now
            <= held
                .valid_after
                .saturating_add(shallot_directory::day_bases::WINDOW_SECS)
}

/// The sources to try, in order: with a consensus recent enough ([`guards_asked_holding`]),
/// up to [`GUARDS_ASKED`] of `guards` (in the order given: preference) then the authorities;
/// without one (first bootstrap, or the one held is older than a day), the authorities alone.
pub fn sources(holds_recent: bool, guards: &[RelayId]) -> Vec<Source> {
    let mut out = Vec::new();
    if holds_recent {
        out.extend(guards.iter().take(GUARDS_ASKED).copied().map(Source::Guard));
    }
    out.push(Source::Authorities);
    out
}

/// Turns a guard's whole answer into a verified consensus and its text, for a client holding
/// `held` (checked against `network` at `now`): the diff is applied to the consensus held, and
/// the result is verified as an authority's answer would be; one not newer than the one held
/// is refused.
pub fn accept_answer(
    answer: Download,
    held: Option<&Consensus>,
    network: &NetworkFile,
    now: u64,
) -> Result<(VerifiedConsensus, String), CacheError> {
    let raw = match answer.form {
        AnswerForm::Unavailable => return Err(CacheError::Unavailable),
        AnswerForm::Full | AnswerForm::Diff => decompress_capped(&answer.bytes, MAX_CONSENSUS_LEN)?,
    };
    let text = match answer.form {
        AnswerForm::Diff => {
            let base = held
                .and_then(|c| c.encode().ok())
                .ok_or(CacheError::DiffWithoutBase)?;
            apply_diff(&base, &raw).map_err(CacheError::Diff)?
        }
        _ => String::from_utf8(raw).map_err(|_| CacheError::NotText)?,
    };
    let held_after = held.map(|c| c.valid_after);
    let consensus = verify_consensus(&text, network, now, held_after)
        .map_err(|e| CacheError::Verify(Arc::new(e)))?;
    if let Some(after) = held_after {
        if consensus.valid_after <= after {
            return Err(CacheError::NotNewer {
                valid_after: consensus.valid_after,
            });
        }
    }
    Ok((consensus, text))
}

/// The `DIR_GET` of a client holding `held`.
pub fn request(held: Option<&Consensus>) -> DirMsg {
    DirMsg::Get {
        base: held
            .and_then(|c| c.encode().ok())
            .map(|t| text_body_digest(&t)),
    }
}

/// Asks the relay at the other end of `chan` (described by `guard`) for the consensus on a
/// new one-hop circuit, within `limit` in all, and checks the answer with [`accept_answer`].
/// The bytes received, whole answer or not, are added to `stats`. The circuit is closed when
/// this returns.
pub async fn fetch_from_guard(
    chan: Arc<ClientChannel>,
    guard: &HopSpec,
    held: Option<&Consensus>,
    network: &NetworkFile,
    now: u64,
    limit: Duration,
    stats: &CacheStats,
) -> Result<(VerifiedConsensus, String), CacheError> {
    let mut download = DirDownload::new(MAX_CONSENSUS_LEN);
    let exchange = async {
        let circ = Circuit::create(chan, guard, limit).await?;
        circ.send(HopNum::FIRST, &RelayMsg::Dir(request(held)))
            .await?;
        loop {
            match circ.recv().await? {
                (_, RelayMsg::Dir(msg)) => {
                    if let Some(done) = download.push(msg)? {
                        return Ok(done);
                    }
                }
                _ => return Err(CacheError::Unexpected),
            }
        }
    };
    let outcome = tokio::time::timeout(limit, exchange).await;
    // A whole answer has taken its bytes out of the download.
    let (got, of) = match &outcome {
        Ok(Ok(answer)) => (answer.bytes.len(), Some(answer.bytes.len())),
        _ => download.progress(),
    };
    stats.bytes.fetch_add(got as u64, Ordering::Relaxed);
    let answer = match outcome {
        Ok(answer) => answer?,
        Err(_) => return Err(CacheError::Timeout { limit, got, of }),
    };
    if answer.form == AnswerForm::Diff {
        stats.diffs.fetch_add(1, Ordering::Relaxed);
    }
    accept_answer(answer, held, network, now)
}

/// What asking guards for the consensus gave, counted across refreshes.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Consensuses taken from a guard.
    pub from_guards: AtomicU64,
    /// Guard answers refused (each followed by the next source).
    pub refused: AtomicU64,
    /// Answer bytes received from guards, as sent (compressed), whether used or not.
    pub bytes: AtomicU64,
    /// Whole answers that came as a diff from the consensus held, used or not.
    pub diffs: AtomicU64,
}

/// A fetch from a guard under way: the consensus and its text, or why not.
pub type GuardFetch<'a> =
    Pin<Box<dyn Future<Output = Result<(VerifiedConsensus, String), CacheError>> + Send + 'a>>;

/// Where [`crate::netdir::NetDir`] gets the consensus from guards: the circuit manager, which
/// knows the guards and holds the links to them.
pub trait GuardDirectory: Send + Sync {
    /// The guards to ask, in order of preference, for a client holding `consensus`.
    fn dir_guards(&self, consensus: &VerifiedConsensus) -> Vec<RelayEntry>;

    /// Asks `guard` for a consensus newer than `held`, within `limit`.
    fn fetch_from<'a>(
        &'a self,
        guard: &'a RelayEntry,
        held: &'a Consensus,
        now: u64,
        limit: Duration,
    ) -> GuardFetch<'a>;
}

#[cfg(test)]
mod tests;
