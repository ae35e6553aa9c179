//! Where a mailbox lives (`docs/spec.md` §9.2): epochs, mailbox ids, and the hash ring of
//! mailbox relays.
//!
//! A user's mailbox for epoch `e` is its identity key blinded for `e` (§9.1). Each relay with
//! the Mailbox flag sits on the ring of epoch `e` at
//! `SHA-256("shallot-ring-v2" ‖ srv(e) ‖ fingerprint ‖ e)`, where `srv(e)` is the shared random
//! value the consensus carries for `e` (§5.10): fixed by the authorities after the relay's key,
//! so no key can be ground for a position. A mailbox sits at
//! `SHA-256("shallot-mailbox-v1" ‖ mailbox id)` and is kept by the [`REPLICAS`] relays that
//! follow it clockwise. The ring is computed in `shallot_proto::placement`, which relays
//! also run to repair mailboxes as the ring changes.
//!
//! Both are worth keeping once computed ([`PlacementCache`]): blinding a key costs a
//! scalar multiplication (58 µs here), and laying out a ring one hash per mailbox relay and a
//! sort (about 2 ms at 10,000 relays), while every message sent needs both, twice (once when
//! the user starts typing, once on Enter), and they change only with the epoch or the
//! consensus.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use ed25519_dalek::VerifyingKey;
use shallot_crypto::blind::{blind_public_key, BlindError};
use shallot_proto::mailbox::MailboxId;
use shallot_rt::lock;

#[cfg(test)]
use shallot_crypto::keys::RelayId;
#[cfg(test)]
use shallot_proto::placement::mailbox_position;
/// The placement itself lives in `shallot_proto::placement`, shared with the relays' repair.
pub use shallot_proto::placement::{relay_position, replicas, Ring, REPLICAS};

/// Relays past the [`REPLICAS`] that an owner also reads: a sender whose consensus lacks up to
/// this many mailbox relays that precede a replica on the owner's ring deposited there.
pub const READ_SLACK: usize = 2;

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

/// Mailbox ids kept by a [`PlacementCache`]; past this many the cache starts again empty.
const MAX_MAILBOX_IDS: usize = 256;

/// Rings kept by a [`PlacementCache`], the most recently used first: enough for the current
/// and the previous consensus (read while the ring settles), each for two epochs (the current
/// and the next or last one). The rare passes over many epochs (publishing the bundle a week
/// ahead, draining a week of mailboxes) push these out, and the next send lays its ring out
/// again, once.
const MAX_RINGS: usize = 4;

/// The mailbox ids and rings computed so far, so that each is computed once per epoch and
/// consensus. A ring is kept for one consensus by identity, not by content: `C` is the
/// consensus type, and a ring is found again only for the very `Arc` it was laid out from (a
/// `Weak` to it is held, so the allocation cannot be reused by another while the entry lives).
/// So each new consensus lays out its rings again, even when they did not change: once an
/// hour. Bounded: at most [`MAX_MAILBOX_IDS`] ids and [`MAX_RINGS`] rings.
pub struct PlacementCache<C> {
    mailboxes: Mutex<HashMap<MailboxKey, MailboxId>>,
    rings: Mutex<VecDeque<RingEntry<C>>>,
}

/// What a mailbox id is computed from: the identity key, the epoch and the epoch length.
type MailboxKey = ([u8; 32], u64, u64);

/// A ring laid out, with the consensus it came from and its epoch.
type RingEntry<C> = (Weak<C>, u64, Arc<Ring>);

impl<C> Default for PlacementCache<C> {
    fn default() -> Self {
        PlacementCache {
            mailboxes: Mutex::default(),
            rings: Mutex::default(),
        }
    }
}

impl<C> PlacementCache<C> {
    /// [`mailbox_id`], computed once per identity, epoch and epoch length.
    pub fn mailbox_id(
        &self,
        identity: &VerifyingKey,
        epoch: u64,
        epoch_secs: u64,
    ) -> Result<MailboxId, BlindError> {
        let key = (identity.to_bytes(), epoch, epoch_secs);
        if let Some(id) = lock(&self.mailboxes).get(&key) {
            return Ok(*id);
        }
        let id = mailbox_id(identity, epoch, epoch_secs)?;
        let mut ids = lock(&self.mailboxes);
        if ids.len() >= MAX_MAILBOX_IDS {
            ids.clear();
        }
        ids.insert(key, id);
        Ok(id)
    }

    /// The ring of `epoch` laid out from `consensus`: the one `layout` made for this very
    /// consensus and epoch before, or a new one from `layout` (run without the cache's lock).
    pub fn ring(&self, consensus: &Arc<C>, epoch: u64, layout: impl FnOnce() -> Ring) -> Arc<Ring> {
        // Comparing addresses is sound: the entry's `Weak` keeps its consensus's allocation,
        // so no other consensus can be at that address while the entry lives.
        let same =
            |c: &Weak<C>, e: u64| e == epoch && std::ptr::eq(c.as_ptr(), Arc::as_ptr(consensus));
        {
            let mut rings = lock(&self.rings);
            let hit = rings.iter().position(|(c, e, _)| same(c, *e));
            // The most recently used goes first, so the last used is the first pushed out.
            if let Some(entry) = hit.and_then(|i| rings.remove(i)) {
                let ring = entry.2.clone();
                rings.push_front(entry);
                return ring;
            }
        }
        let ring = Arc::new(layout());
        let mut rings = lock(&self.rings);
        // Rings of consensuses nobody holds any more are never asked for again; and another
        // thread may have laid out this one meanwhile.
        rings.retain(|(c, e, _)| c.strong_count() > 0 && !same(c, *e));
        rings.push_front((Arc::downgrade(consensus), epoch, ring.clone()));
        rings.truncate(MAX_RINGS);
        ring
    }
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
    fn replicas_are_distinct_stable_and_follow_the_mailbox() {
        let all = relays(10);
        let m = MailboxId([7u8; 32]);
        let a = replicas(&m, &SRV, E, all.clone(), 3);
        assert_eq!(a.len(), 3);
        let mut uniq = a.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 3);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(
            replicas(&m, &SRV, E, reversed, 3),
            a,
            "order of the consensus does not matter"
        );
        // The first replica is the first relay clockwise of the mailbox.
        let target = mailbox_position(&m);
        let mut positions: Vec<_> = all
            .iter()
            .map(|r| (relay_position(&SRV, r, E), *r))
            .collect();
        positions.sort();
        let first = positions
            .iter()
            .find(|(p, _)| *p > target)
            .unwrap_or(&positions[0])
            .1;
        assert_eq!(a[0], first);
    }

    #[test]
    fn the_cache_gives_what_it_would_compute() {
        let cache: PlacementCache<u8> = PlacementCache::default();
        let mut rng = rand::thread_rng();
        let id = shallot_crypto::keys::IdentityKeypair::generate(&mut rng).public();
        let other = shallot_crypto::keys::IdentityKeypair::generate(&mut rng).public();
        for epoch in [1, 2, 1] {
            assert_eq!(
                cache.mailbox_id(&id, epoch, 86400).unwrap(),
                mailbox_id(&id, epoch, 86400).unwrap()
            );
        }
        // Each identity has its own: one in the cache is not given for another.
        let theirs = cache.mailbox_id(&other, 1, 86400).unwrap();
        assert_eq!(theirs, mailbox_id(&other, 1, 86400).unwrap());
        assert_ne!(theirs, cache.mailbox_id(&id, 1, 86400).unwrap());
        // The epoch length is part of the key.
        assert_eq!(
            cache.mailbox_id(&id, 1, 3600).unwrap(),
            mailbox_id(&id, 1, 3600).unwrap()
        );
        assert_eq!(lock(&cache.mailboxes).len(), 4);
        // Bounded: past the limit it starts again.
        for epoch in 10..10 + MAX_MAILBOX_IDS as u64 {
            cache.mailbox_id(&id, epoch, 86400).unwrap();
        }
        assert!(lock(&cache.mailboxes).len() <= MAX_MAILBOX_IDS);
    }

    #[test]
    fn a_ring_is_laid_out_once_per_consensus_and_epoch() {
        let cache: PlacementCache<Vec<RelayId>> = PlacementCache::default();
        let laid = std::cell::Cell::new(0);
        let m = MailboxId([7; 32]);
        // Each ring the cache gives must be the one laid out afresh from the same relays.
        let ring = |c: &Arc<Vec<RelayId>>, epoch: u64| {
            let got = cache.ring(c, epoch, || {
                laid.set(laid.get() + 1);
                Ring::new(&SRV, epoch, c.iter().copied())
            });
            assert_eq!(
                got.replicas(&m, 3),
                replicas(&m, &SRV, epoch, c.to_vec(), 3),
                "the ring of epoch {epoch} for {} relays",
                c.len()
            );
        };
        let a = Arc::new(relays(10));
        ring(&a, E);
        ring(&a, E);
        assert_eq!(laid.get(), 1, "the same consensus and epoch: laid out once");
        ring(&a, E + 1);
        assert_eq!(laid.get(), 2, "another epoch: its own ring");
        // Another consensus, even with the same relays, is laid out anew: the cache goes by
        // the consensus held, not by what it lists.
        let b = Arc::new(relays(5));
        ring(&b, E);
        let same_content = Arc::new(relays(10));
        ring(&same_content, E);
        assert_eq!(laid.get(), 4);
        // A consensus nobody holds any more leaves the cache at the next layout, and one made
        // after it (perhaps at its address) gets a ring of its own.
        drop(b);
        let c = Arc::new(relays(3));
        ring(&c, E);
        assert_eq!(laid.get(), 5);
        assert!(lock(&cache.rings)
            .iter()
            .all(|(held, _, _)| held.strong_count() > 0));
        // The most recently used stays: `a`'s ring of E, used again, outlives three others.
        ring(&a, E);
        let before = laid.get();
        for epoch in [E + 10, E + 11, E + 12] {
            ring(&c, epoch);
        }
        ring(&a, E);
        assert_eq!(laid.get(), before + 3, "a's ring of E was kept");
        // Bounded.
        for epoch in 0..10 {
            ring(&a, epoch);
        }
        assert_eq!(lock(&cache.rings).len(), MAX_RINGS);
    }

    #[test]
    fn few_relays_give_few_replicas() {
        assert_eq!(
            replicas(&MailboxId([1; 32]), &SRV, E, relays(2), 3).len(),
            2
        );
        assert!(replicas(&MailboxId([1; 32]), &SRV, E, Vec::new(), 3).is_empty());
    }

    #[test]
    fn removing_one_replica_keeps_the_other_two() {
        let all = relays(12);
        let m = MailboxId([9u8; 32]);
        let a = replicas(&m, &SRV, E, all.clone(), 3);
        let without: Vec<_> = all.into_iter().filter(|r| *r != a[1]).collect();
        let b = replicas(&m, &SRV, E, without, 3);
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

    /// Review finding 6: a relay cannot choose its ring position. The same key lands at
    /// unrelated positions in two epochs (each with its shared random value), so a key ground
    /// to sit just after a mailbox in one epoch is nowhere near it in the next; and it cannot
    /// be ground against a value it does not know yet.
    #[test]
    fn a_relay_cannot_choose_its_ring_position() {
        use shallot_proto::dir::srv::fallback_value;
        let key = RelayId([42; 20]);
        let (srv1, srv2) = ([1u8; 32], [2u8; 32]);
        let p1 = relay_position(&srv1, &key, 100);
        let p2 = relay_position(&srv2, &key, 101);
        assert_ne!(p1, p2);
        // "Unrelated": the two positions agree in about half their bits, as two random values
        // do, not in a long common prefix.
        let same_bits: u32 = p1
            .iter()
            .zip(p2.iter())
            .map(|(a, b)| (!(a ^ b)).count_ones())
            .sum();
        assert!(
            (64..=192).contains(&same_bits),
            "{same_bits} of 256 bits agree"
        );
        assert_ne!(p1[..4], p2[..4]);
        // Both the value and the epoch move it: the same value in another epoch, or another
        // value in the same epoch, gives another position.
        assert_ne!(relay_position(&srv1, &key, 101), p1);
        assert_ne!(relay_position(&srv2, &key, 100), p1);
        // The fixed fallback (no shared value known) still places mailboxes, differently each
        // epoch.
        let f = |e| relay_position(&fallback_value(e), &key, e);
        assert_ne!(f(100), f(101));
        // A relay that ground its key to be the first replica of a mailbox in one epoch keeps
        // that place in another epoch only by chance (about 3 in 50 relays here).
        let m = MailboxId([7u8; 32]);
        let mut kept = 0;
        for trial in 0..200u32 {
            let mut others: Vec<RelayId> = (0..49u8).map(|i| RelayId([i; 20])).collect();
            let mut ground = None;
            for g in 0..u32::MAX {
                let mut id = [0xee; 20];
                id[..4].copy_from_slice(&g.to_be_bytes());
                id[4..8].copy_from_slice(&trial.to_be_bytes());
                let cand = RelayId(id);
                let mut all = others.clone();
                all.push(cand);
                if replicas(&m, &srv1, 100, all, 1) == vec![cand] {
                    ground = Some(cand);
                    break;
                }
            }
            let ground = ground.unwrap();
            others.push(ground);
            if replicas(&m, &srv2, 101, others, 3).contains(&ground) {
                kept += 1;
            }
        }
        assert!(kept < 30, "kept its place in {kept} of 200 trials");
    }
}
