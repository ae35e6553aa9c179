//! Where a mailbox lives (`docs/spec.md` §9.2): the hash ring of mailbox relays.
//!
//! Each relay with the Mailbox flag sits on the ring of epoch `e` at
//! `SHA-256("shallot-ring-v2" ‖ srv(e) ‖ fingerprint ‖ e)`, where `srv(e)` is the shared random
//! value the consensus carries for `e` (§5.10): fixed by the authorities after the relay's key,
//! so no key can be ground for a position. A mailbox sits at
//! `SHA-256("shallot-mailbox-v1" ‖ mailbox id)` and is kept by the [`REPLICAS`] relays that
//! follow it clockwise.
//!
//! This is the one placement both sides run: clients to deposit and fetch, relays to repair
//! (`crate::repair`), and the churn simulation (`shallot bench churn`). It is pure: no clock,
//! no I/O.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use shallot_crypto::keys::RelayId;

use crate::dir::{Consensus, Flags};
use crate::mailbox::MailboxId;

/// Relays that keep each mailbox and answer its deposits and fetches.
pub const REPLICAS: usize = 3;

/// A relay's position on the ring of `epoch`, whose shared random value is `srv`.
pub fn relay_position(srv: &[u8; 32], id: &RelayId, epoch: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-ring-v2");
    h.update(srv);
    h.update(id.0);
    h.update(epoch.to_be_bytes());
    h.finalize().into()
}

/// A mailbox's position on every ring.
pub fn mailbox_position(mailbox: &MailboxId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-mailbox-v1");
    h.update(mailbox.0);
    h.finalize().into()
}

/// The ring of one epoch as one consensus lists it: its mailbox relays in ring order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    points: Vec<([u8; 32], RelayId)>,
    members: HashSet<RelayId>,
}

impl Ring {
    /// The ring of `epoch` (shared random value `srv`) made of `mailbox_relays`, the
    /// consensus's Running relays with the Mailbox flag. Order and repeats do not matter.
    pub fn new(
        srv: &[u8; 32],
        epoch: u64,
        mailbox_relays: impl IntoIterator<Item = RelayId>,
    ) -> Self {
        let members: HashSet<RelayId> = mailbox_relays.into_iter().collect();
        let mut points: Vec<([u8; 32], RelayId)> = members
            .iter()
            .map(|id| (relay_position(srv, id, epoch), *id))
            .collect();
        points.sort();
        Ring { points, members }
    }

    /// The ring of `epoch` that `consensus` lays out: its Running relays with the Mailbox
    /// flag, placed by its shared random value for `epoch`.
    pub fn of_consensus(consensus: &Consensus, epoch: u64) -> Self {
        let relays = consensus
            .relays
            .iter()
            .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
            .map(|r| r.id);
        Ring::new(&consensus.srv_for_epoch(epoch), epoch, relays)
    }

    /// How many relays sit on the ring.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Whether `relay` sits on the ring.
    pub fn contains(&self, relay: &RelayId) -> bool {
        self.members.contains(relay)
    }

    /// Every relay of the ring once, clockwise from `mailbox`'s position, nearest first.
    pub fn successors(&self, mailbox: &MailboxId) -> impl Iterator<Item = RelayId> + '_ {
        let target = mailbox_position(mailbox);
        let start = self.points.partition_point(|(pos, _)| *pos <= target);
        self.points[start..]
            .iter()
            .chain(self.points[..start].iter())
            .map(|(_, id)| *id)
    }

    /// The relays that keep `mailbox`, nearest first: up to `n` of them.
    pub fn replicas(&self, mailbox: &MailboxId, n: usize) -> Vec<RelayId> {
        self.successors(mailbox).take(n).collect()
    }
}

/// The relays (from `mailbox_relays`, the consensus's Running relays with the Mailbox flag)
/// that keep `mailbox` in `epoch`, whose shared random value is `srv`, nearest first: up to
/// `n` of them.
pub fn replicas(
    mailbox: &MailboxId,
    srv: &[u8; 32],
    epoch: u64,
    mailbox_relays: impl IntoIterator<Item = RelayId>,
    n: usize,
) -> Vec<RelayId> {
    Ring::new(srv, epoch, mailbox_relays).replicas(mailbox, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRV: [u8; 32] = [5; 32];
    const E: u64 = 20_000;

    fn relays(n: u8) -> Vec<RelayId> {
        (0..n).map(|i| RelayId([i; 20])).collect()
    }

    #[test]
    fn successors_visit_every_relay_once_starting_after_the_mailbox() {
        let ring = Ring::new(&SRV, E, relays(20));
        let m = MailboxId([3; 32]);
        let all: Vec<RelayId> = ring.successors(&m).collect();
        assert_eq!(all.len(), 20);
        let mut uniq = all.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 20);
        assert_eq!(ring.replicas(&m, 3), all[..3].to_vec());
        let target = mailbox_position(&m);
        let first = relay_position(&SRV, &all[0], E);
        let last = relay_position(&SRV, &all[19], E);
        // Either the first relay follows the mailbox, or the mailbox sits after every relay
        // and the ring wraps round.
        assert!(first > target || last <= target);
    }

    #[test]
    fn repeats_in_the_relay_list_do_not_count() {
        let mut twice = relays(4);
        twice.extend(relays(4));
        let ring = Ring::new(&SRV, E, twice);
        assert_eq!(ring.len(), 4);
        assert_eq!(ring.replicas(&MailboxId([1; 32]), 10).len(), 4);
        assert!(ring.contains(&RelayId([3; 20])));
        assert!(!ring.contains(&RelayId([4; 20])));
        assert!(Ring::new(&SRV, E, Vec::new()).is_empty());
    }
}
