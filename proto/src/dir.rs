//! Directory documents: relay descriptors, authority votes and the signed consensus
//! (`docs/spec.md` §5.1–5.4). Pure text formats, no I/O.
//!
//! Every document is strict line-oriented text ([`lines`]): a fixed order of `keyword args…`
//! lines, canonical values, and one text per value, so that a parsed document re-encodes to
//! exactly its input. A document is signed with ed25519 over [`signed_bytes`] of its *body*,
//! every byte before its first signature line.
//!
//! * [`descriptor`]: what a relay uploads about itself, signed by its identity key;
//! * [`entry`]: the consensus's relay entry and the [`Flags`] votes and the consensus share;
//! * [`vote`]: one authority's signed opinion of the relays for one period, naming each
//!   relay's descriptor by digest;
//! * [`consensus`]: the document clients use, with one signature per authority;
//! * [`diff`]: the change from one consensus to the next, and applying it to the text held;
//! * [`srv`]: the hash functions of the shared random value;
//! * [`probe`]: the reachability probe's challenge and answer (binary, not text).

pub mod consensus;
pub mod descriptor;
pub mod diff;
pub mod entry;
pub mod lines;
pub mod probe;
pub mod srv;
pub mod vote;

pub use consensus::{
    Consensus, ConsensusParams, DetachedSignature, SharedRandom, MAX_CONSENSUS_LEN,
};
pub use descriptor::{RelayDescriptor, MAX_DESCRIPTOR_LEN};
pub use entry::{Flags, RelayEntry};
pub use vote::{Vote, VoteEntry, MAX_VOTE_LEN};

use thiserror::Error;

/// The prefix of every signed document's signed bytes; it keeps a directory signature from
/// ever being valid for anything that is not a Shallot directory document.
pub const SIGNED_PREFIX: &str = "shallot-signed-document-v1\n";

/// The bytes a document's signature covers: [`SIGNED_PREFIX`] ‖ body.
pub fn signed_bytes(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNED_PREFIX.len() + body.len());
    out.extend_from_slice(SIGNED_PREFIX.as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// Why a directory document could not be parsed, verified or encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DocError {
    /// The document is longer than its kind allows.
    #[error("document of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A line is missing, out of place or holds a bad value.
    #[error("malformed document, line {line}: {reason}")]
    Malformed {
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A consensus diff (binary, `docs/spec.md` §5.12) is cut short or holds a bad value.
    #[error("malformed consensus diff, byte {offset}: {reason}")]
    MalformedDiff {
        /// How many bytes of the diff were read when the fault was found.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The signature does not verify with the key the document names.
    #[error("the signature does not verify")]
    BadSignature,
    /// A consensus diff is not from the consensus it is applied to, or does not rebuild the
    /// consensus it names.
    #[error("the consensus diff does not fit: {0}")]
    DiffMismatch(&'static str),
    /// A value cannot be put in a document (when encoding).
    #[error("cannot encode {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl DocError {
    pub(crate) fn malformed(line: usize, reason: impl Into<String>) -> Self {
        DocError::Malformed {
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DocError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Refuses a document longer than `max` before any parsing.
pub(crate) fn check_len(text: &str, max: usize) -> Result<(), DocError> {
    if text.len() > max {
        return Err(DocError::TooLarge {
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// The nickname rule shared by descriptors and entries: 1 to 19 ASCII letters and digits.
pub fn check_nickname(nick: &str) -> Result<(), &'static str> {
    if nick.is_empty() || nick.len() > 19 {
        return Err("must be 1 to 19 characters");
    }
    if !nick.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("must be ASCII letters and digits only");
    }
    Ok(())
}

/// Family lists are sorted, without duplicates, and at most this long.
pub const MAX_FAMILY: usize = 16;

/// Checks a family list: sorted, unique, at most [`MAX_FAMILY`].
pub(crate) fn check_family(family: &[shallot_crypto::keys::RelayId]) -> Result<(), &'static str> {
    if family.len() > MAX_FAMILY {
        return Err("more than 16 family members");
    }
    if family.windows(2).any(|w| w[0] >= w[1]) {
        return Err("family members must be sorted and unique");
    }
    Ok(())
}
