//! Where a mailbox lives (`docs/spec.md` §9.2): epochs, mailbox ids, and the hash ring of
//! mailbox relays.
//!
//! A user's mailbox for epoch `e` is its identity key blinded for `e` (§9.1). Each relay with
//! the Mailbox flag sits on a ring at `SHA-256("shallot-ring-v1" ‖ fingerprint)`; a mailbox sits
//! at `SHA-256("shallot-mailbox-v1" ‖ mailbox id)` and is kept by the [`REPLICAS`] relays that
//! follow it clockwise.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use shallot_crypto::blind::{blind_public_key, BlindError};
use shallot_crypto::keys::RelayId;
use shallot_proto::mailbox::MailboxId;

/// Relays that keep each mailbox.
pub const REPLICAS: usize = 3;

/// The epoch `now` falls in.
pub fn epoch_of(now: u64, epoch_secs: u64) -> u64 {
    now / epoch_secs.max(1)
}

/// The mailbox of `identity` for `epoch`.
pub fn mailbox_id(
    identity: &VerifyingKey,
    epoch: u64,
    epoch_secs: u64,
) -> Result<MailboxId, BlindError> {
    Ok(MailboxId(
        blind_public_key(identity, epoch, epoch_secs)?.to_bytes(),
    ))
}

fn relay_position(id: &RelayId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-ring-v1");
    h.update(id.0);
    h.finalize().into()
}

fn mailbox_position(mailbox: &MailboxId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-mailbox-v1");
    h.update(mailbox.0);
    h.finalize().into()
}

/// The relays (from `mailbox_relays`, the consensus's Running relays with the Mailbox flag)
/// that keep `mailbox`, nearest first: up to `n` of them.
pub fn replicas(
    mailbox: &MailboxId,
    mailbox_relays: impl IntoIterator<Item = RelayId>,
    n: usize,
) -> Vec<RelayId> {
    let mut ring: Vec<([u8; 32], RelayId)> = mailbox_relays
        .into_iter()
        .map(|id| (relay_position(&id), id))
        .collect();
    ring.sort();
    ring.dedup_by(|a, b| a.1 == b.1);
    let target = mailbox_position(mailbox);
    let start = ring.partition_point(|(pos, _)| *pos <= target);
    ring.iter()
        .cycle()
        .skip(start)
        .take(n.min(ring.len()))
        .map(|(_, id)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relays(n: u8) -> Vec<RelayId> {
        (0..n).map(|i| RelayId([i; 20])).collect()
    }

    #[test]
    fn replicas_are_distinct_stable_and_follow_the_mailbox() {
        let all = relays(10);
        let m = MailboxId([7u8; 32]);
        let a = replicas(&m, all.clone(), 3);
        assert_eq!(a.len(), 3);
        let mut uniq = a.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 3);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            replicas(&m, reversed, 3),
            a,
            "order of the consensus does not matter"
        );
        // The first replica is the first relay clockwise of the mailbox.
        let target = mailbox_position(&m);
        let mut positions: Vec<_> = all.iter().map(|r| (relay_position(r), *r)).collect();
        positions.sort();
        let first = positions
            .iter()
            .find(|(p, _)| *p > target)
            .unwrap_or(&positions[0])
            .1;
        assert_eq!(a[0], first);
    }

    #[test]
    fn few_relays_give_few_replicas() {
        assert_eq!(replicas(&MailboxId([1; 32]), relays(2), 3).len(), 2);
        assert!(replicas(&MailboxId([1; 32]), Vec::new(), 3).is_empty());
    }

    #[test]
    fn removing_one_replica_keeps_the_other_two() {
        let all = relays(12);
        let m = MailboxId([9u8; 32]);
        let a = replicas(&m, all.clone(), 3);
        let without: Vec<_> = all.into_iter().filter(|r| *r != a[1]).collect();
        let b = replicas(&m, without, 3);
        assert_eq!(b[0], a[0]);
        assert_eq!(b[1], a[2]);
    }

    #[test]
    fn mailboxes_change_every_epoch() {
        let id = shallot_crypto::keys::IdentityKeypair::generate(&mut rand::thread_rng()).public();
        assert_ne!(
            mailbox_id(&id, 1, 86400).unwrap(),
            mailbox_id(&id, 2, 86400).unwrap()
        );
        assert_eq!(epoch_of(86400 * 5 + 3, 86400), 5);
    }
}
