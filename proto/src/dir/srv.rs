//! The shared random value's hash functions (`docs/spec.md` §5.10), after Tor's proposal 250:
//! commitments, the value of one round, the value of a round that failed, and the fixed value
//! of an epoch the consensus does not carry.
//!
//! Each authority draws a secret 32-byte *reveal* `R` every voting round and puts its
//! commitment `C = H("shallot-srv-commit-v1" ‖ authority ‖ round ‖ R)` in that round's vote;
//! it reveals `R` in the next round's vote. The round's shared value chains every valid
//! reveal, sorted by authority key, with the previous value. Pure functions, no state: which
//! reveals count and what goes in the consensus is `shallot_directory::compute`'s business.

use sha2::{Digest, Sha256};
use shallot_crypto::keys::VerifyingKey;

/// Epochs ahead of the current one whose shared value the consensus carries: a value is fixed
/// this many epochs before it is used, so that prekey bundles can be placed ahead (`docs/spec.md`
/// §9.2, §10.7: the current epoch and 6 after it).
pub const LEAD_EPOCHS: u64 = 7;

/// Epochs before the current one whose shared value the consensus still carries, so that
/// mailboxes of earlier epochs can be found and drained (`docs/spec.md` §10.7: 7 back).
pub const KEEP_EPOCHS: u64 = 8;

/// The commitment an authority publishes in the vote for round `round` (its valid-after) to
/// the `reveal` it will publish in the next round's vote.
pub fn commitment(authority: &VerifyingKey, round: u64, reveal: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-srv-commit-v1");
    h.update(authority.as_bytes());
    h.update(round.to_be_bytes());
    h.update(reveal);
    h.finalize().into()
}

/// The shared value of round `round` from the valid `reveals` (at most one per authority, in
/// any order: they are sorted by key here) and the previous round's value, if any.
pub fn shared_value(
    round: u64,
    previous: Option<&[u8; 32]>,
    reveals: &[(VerifyingKey, [u8; 32])],
) -> [u8; 32] {
    let mut sorted: Vec<&(VerifyingKey, [u8; 32])> = reveals.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256::new();
    h.update(b"shallot-srv-v1");
    h.update(round.to_be_bytes());
    h.update(previous.unwrap_or(&[0u8; 32]));
    h.update((sorted.len() as u64).to_be_bytes());
    for (key, reveal) in sorted {
        h.update(key.as_bytes());
        h.update(reveal);
    }
    h.finalize().into()
}

/// The value of a round without enough valid reveals (Tor's "disaster" value): predictable
/// from the previous value, but the same for every authority.
pub fn disaster_value(round: u64, previous: Option<&[u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-srv-disaster-v1");
    h.update(round.to_be_bytes());
    h.update(previous.unwrap_or(&[0u8; 32]));
    h.finalize().into()
}

/// The fixed value of an epoch for which no consensus carries a shared value (before the
/// network has run long enough, or outside the window a consensus carries). Anyone can compute
/// it in advance: it places mailboxes, but it does not stop a relay from choosing its position.
pub fn fallback_value(epoch: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-srv-fallback-v1");
    h.update(epoch.to_be_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    fn key(seed: u8) -> VerifyingKey {
        IdentityKeypair::from_secret_bytes(&[seed; 32]).public()
    }

    #[test]
    fn the_value_does_not_depend_on_the_order_of_reveals() {
        let reveals = vec![(key(1), [1; 32]), (key(2), [2; 32]), (key(3), [3; 32])];
        let mut reversed = reveals.clone();
        reversed.reverse();
        assert_eq!(
            shared_value(7, Some(&[9; 32]), &reveals),
            shared_value(7, Some(&[9; 32]), &reversed)
        );
    }

    #[test]
    fn every_input_changes_the_value() {
        let reveals = vec![(key(1), [1; 32]), (key(2), [2; 32])];
        let base = shared_value(7, Some(&[9; 32]), &reveals);
        assert_ne!(base, shared_value(8, Some(&[9; 32]), &reveals));
        assert_ne!(base, shared_value(7, Some(&[8; 32]), &reveals));
        assert_ne!(base, shared_value(7, None, &reveals));
        assert_ne!(base, shared_value(7, Some(&[9; 32]), &reveals[..1]));
        let mut other = reveals.clone();
        other[1].1 = [3; 32];
        assert_ne!(base, shared_value(7, Some(&[9; 32]), &other));
        assert_ne!(base, disaster_value(7, Some(&[9; 32])));
        assert_ne!(disaster_value(7, None), disaster_value(8, None));
        assert_ne!(fallback_value(1), fallback_value(2));
    }

    #[test]
    fn commitments_bind_the_authority_and_the_round() {
        let r = [5; 32];
        let c = commitment(&key(1), 10, &r);
        assert_eq!(c, commitment(&key(1), 10, &r));
        assert_ne!(c, commitment(&key(2), 10, &r));
        assert_ne!(c, commitment(&key(1), 11, &r));
        assert_ne!(c, commitment(&key(1), 10, &[6; 32]));
    }
}
