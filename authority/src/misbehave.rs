//! Test-only misbehaviour, so that end-to-end tests can run a rogue authority beside honest
//! ones (`docs/spec.md` §5.6–5.7). Compiled only with the `misbehave` feature, which no
//! production build enables (the workspace enables it for tests only, through the root
//! package's dev-dependencies); nothing in the command line can reach it.

use shallot_crypto::keys::RelayId;
use shallot_proto::dir::descriptor::descriptor_digest;
use shallot_proto::dir::{Flags, Vote, VoteEntry};

/// What a rogue authority does besides its honest work.
#[derive(Debug, Clone, Default)]
pub struct Misbehaviour {
    /// Vote this text's digest for the relay, claiming it was always known, measured at
    /// `u64::MAX` and deserving every flag; and serve the text by that digest. The text need
    /// not verify (a rogue cannot sign as the relay): it carries the rogue's address and keys
    /// and a later `published`.
    pub forge: Option<(RelayId, String)>,
    /// Push a different vote (another commitment) to each peer, and keep yet another as its
    /// own.
    pub equivocate: bool,
}

impl Misbehaviour {
    /// The forged text, when asked for by its digest.
    pub(crate) fn forged_text(&self, digest: &[u8; 32]) -> Option<String> {
        self.forge
            .as_ref()
            .filter(|(_, text)| descriptor_digest(text) == *digest)
            .map(|(_, text)| text.clone())
    }

    /// Applies the forgery to this authority's own vote.
    pub(crate) fn adjust_vote(&self, vote: &mut Vote) {
        let Some((relay, text)) = &self.forge else {
            return;
        };
        let forged = VoteEntry {
            id: *relay,
            descriptor: descriptor_digest(text),
            known_since: 0,
            measured: Some(u64::MAX),
            flags: Flags::from_bits(0x3f),
        };
        match vote.relays.binary_search_by(|e| e.id.cmp(relay)) {
            Ok(i) => vote.relays[i] = forged,
            Err(i) => vote.relays.insert(i, forged),
        }
    }

    /// The vote to push to the `i`-th peer instead of this authority's own, when equivocating.
    pub(crate) fn variant_for_peer(&self, vote: &Vote, i: usize) -> Option<Vote> {
        if !self.equivocate {
            return None;
        }
        let mut v = vote.clone();
        v.commit[0] ^= 1 + (i as u8);
        Some(v)
    }
}
