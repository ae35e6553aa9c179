//! The envelope ids owners acknowledged to this relay (`docs/spec.md` §9.3, §9.6): a DEPOSIT of
//! one is answered as a repeat and neither stored nor pushed, and anti-entropy does not want it
//! back. Each is kept, in memory, until the envelope it names would have expired.
//!
//! Anyone can acknowledge, with a throw-away mailbox key, ids that were never deposited, and so
//! make tombstones for nothing. Tombstones therefore live in two pools, each bounded and each
//! forgetting its oldest first: those of envelopes the store held and deleted for the ACK
//! ([`Pool::Held`]), and the rest ([`Pool::Unheld`]: ids not held here, or not yet, or whose
//! deletion the relay gave up waiting for). A flood of ACKs for ids never deposited fills only
//! the second; pushing a tombstone out of the first takes envelopes really deposited (each
//! admitted by the deposit limits, §9.7) and then acknowledged.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use shallot_proto::mailbox::{EnvelopeId, MailboxId};

/// Tombstones of envelopes the store held, at most.
pub(crate) const MAX_HELD: usize = 200_000;

/// Tombstones of ids the store did not hold when acknowledged, at most.
pub(crate) const MAX_UNHELD: usize = 100_000;

/// Which of the two bounded pools a tombstone is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// The store held the envelope and deleted it for the ACK.
    Held,
    /// Acknowledged, but not (yet) known to have been held here.
    Unheld,
}

/// A tombstone: until when it stands, and its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tomb {
    until: u64,
    pool: Pool,
}

/// The order one pool forgets in: `(until, mailbox, id)`, oldest first. A place is live while
/// the map holds a tombstone of that pool with that `until` for its key; a tombstone moved to
/// the held pool leaves a dead place behind in the unheld order, skipped when reached.
type Order = VecDeque<(u64, MailboxId, EnvelopeId)>;

/// Envelope ids owners acknowledged here, each kept until its envelope would have expired.
pub(crate) struct Tombstones {
    tombs: HashMap<(MailboxId, EnvelopeId), Tomb>,
    held: Order,
    unheld: Order,
    held_count: usize,
    unheld_count: usize,
    max_held: usize,
    max_unheld: usize,
}

impl Default for Tombstones {
    fn default() -> Self {
        Tombstones::with_limits(MAX_HELD, MAX_UNHELD)
    }
}

impl Tombstones {
    /// Tombstones keeping at most `max_held` and `max_unheld` in each pool.
    pub(crate) fn with_limits(max_held: usize, max_unheld: usize) -> Self {
        Tombstones {
            tombs: HashMap::new(),
            held: VecDeque::new(),
            unheld: VecDeque::new(),
            held_count: 0,
            unheld_count: 0,
            max_held,
            max_unheld,
        }
    }

    /// Remembers that the owner of `mailbox` acknowledged `ids` at `now`, for `keep` seconds
    /// (the envelope lifetime: an envelope expires before the tombstone of its first ACK), in
    /// the unheld pool until [`Tombstones::deleted`] says the store held them. Called before
    /// the store deletes them. An id acknowledged again keeps its first tombstone.
    pub(crate) fn acked(&mut self, mailbox: MailboxId, ids: &[EnvelopeId], now: u64, keep: u64) {
        self.forget_expired(now);
        let until = now.saturating_add(keep);
        for id in ids {
            if let Entry::Vacant(e) = self.tombs.entry((mailbox, *id)) {
                e.insert(Tomb {
                    until,
                    pool: Pool::Unheld,
                });
                self.unheld.push_back((until, mailbox, *id));
                self.unheld_count += 1;
            }
        }
        self.keep_within(Pool::Unheld);
    }

    /// Moves the tombstones of `ids`, which the store held in `mailbox` and whose deletion for
    /// an ACK it committed at `now`, to the held pool (making one for any the unheld pool
    /// forgot meanwhile). There each stands for `keep` seconds from `now`, so that the held
    /// order is the order of the deletions, oldest first, like the order of their expiry.
    pub(crate) fn deleted(&mut self, mailbox: MailboxId, ids: &[EnvelopeId], now: u64, keep: u64) {
        self.forget_expired(now);
        let until = now.saturating_add(keep);
        for id in ids {
            let tomb = self.tombs.entry((mailbox, *id)).or_insert_with(|| {
                // Counted as unheld for the moment, so the move below counts it once.
                self.unheld_count += 1;
                Tomb {
                    until,
                    pool: Pool::Unheld,
                }
            });
            if tomb.pool == Pool::Unheld {
                // Its place in the unheld order is dead from here on (another pool, and
                // another time).
                tomb.pool = Pool::Held;
                tomb.until = tomb.until.max(until);
                self.unheld_count -= 1;
                self.held_count += 1;
                self.held.push_back((tomb.until, mailbox, *id));
            }
        }
        self.keep_within(Pool::Held);
        // Places left dead in the unheld order are dropped once they outnumber the live ones.
        if self.unheld.len() > 2 * self.unheld_count + 1024 {
            let tombs = &self.tombs;
            self.unheld
                .retain(|place| live(tombs, Pool::Unheld, place).is_some());
        }
    }

    /// Whether the owner of `mailbox` acknowledged `id` here (and it has not expired).
    pub(crate) fn contains(&self, mailbox: &MailboxId, id: &EnvelopeId, now: u64) -> bool {
        self.tombs
            .get(&(*mailbox, *id))
            .is_some_and(|t| t.until > now)
    }

    /// The pool the tombstone of `id` in `mailbox` is in, if there is one.
    #[cfg(test)]
    pub(crate) fn pool(&self, mailbox: &MailboxId, id: &EnvelopeId) -> Option<Pool> {
        self.tombs.get(&(*mailbox, *id)).map(|t| t.pool)
    }

    /// Tombstones kept in each pool: `(held, unheld)`.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.held_count, self.unheld_count)
    }

    /// Forgets the oldest tombstones of `pool` beyond its bound.
    fn keep_within(&mut self, pool: Pool) {
        loop {
            let (count, max) = match pool {
                Pool::Held => (self.held_count, self.max_held),
                Pool::Unheld => (self.unheld_count, self.max_unheld),
            };
            if count <= max || !self.forget_first(pool) {
                return;
            }
        }
    }

    /// Forgets every tombstone that has expired at `now`.
    fn forget_expired(&mut self, now: u64) {
        for pool in [Pool::Held, Pool::Unheld] {
            while self
                .order(pool)
                .front()
                .is_some_and(|(until, _, _)| *until <= now)
            {
                self.forget_first(pool);
            }
        }
    }

    /// Takes the first place of `pool`'s order, forgetting its tombstone if the place is
    /// live; false if the order is empty.
    fn forget_first(&mut self, pool: Pool) -> bool {
        let Some(place) = self.order(pool).pop_front() else {
            return false;
        };
        if let Some(key) = live(&self.tombs, pool, &place) {
            self.tombs.remove(&key);
            match pool {
                Pool::Held => self.held_count -= 1,
                Pool::Unheld => self.unheld_count -= 1,
            }
        }
        true
    }

    fn order(&mut self, pool: Pool) -> &mut Order {
        match pool {
            Pool::Held => &mut self.held,
            Pool::Unheld => &mut self.unheld,
        }
    }
}

/// The key of the tombstone a place of `pool`'s order stands for, if that place is live.
fn live(
    tombs: &HashMap<(MailboxId, EnvelopeId), Tomb>,
    pool: Pool,
    &(until, mailbox, id): &(u64, MailboxId, EnvelopeId),
) -> Option<(MailboxId, EnvelopeId)> {
    let key = (mailbox, id);
    (tombs.get(&key) == Some(&Tomb { until, pool })).then_some(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn eid(i: u32) -> EnvelopeId {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&i.to_be_bytes());
        EnvelopeId(b)
    }

    /// Every place is live or dead, every tombstone has exactly one live place, and the
    /// counts are those of the map.
    fn check(t: &Tombstones) {
        let mut live_places = 0;
        for (pool, order) in [(Pool::Held, &t.held), (Pool::Unheld, &t.unheld)] {
            for place in order {
                live_places += usize::from(live(&t.tombs, pool, place).is_some());
            }
        }
        assert_eq!(live_places, t.tombs.len(), "one live place per tombstone");
        let held = t.tombs.values().filter(|x| x.pool == Pool::Held).count();
        assert_eq!((held, t.tombs.len() - held), t.counts());
        assert!(t.held_count <= t.max_held && t.unheld_count <= t.max_unheld);
    }

    #[test]
    fn tombstones_expire_and_stay_bounded() {
        let m = MailboxId([1; 32]);
        let mut t = Tombstones::with_limits(100, 50);
        t.acked(m, &[eid(1), eid(2)], 100, 50);
        assert!(t.contains(&m, &eid(1), 149));
        assert!(!t.contains(&m, &eid(1), 150), "expired");
        assert!(!t.contains(&MailboxId([2; 32]), &eid(1), 120));
        t.deleted(m, &[eid(2)], 100, 50);
        t.acked(m, &[eid(3)], 200, 50);
        assert_eq!(t.tombs.len(), 1, "the expired ones went, from both pools");
        assert_eq!(t.held.len() + t.unheld.len(), 1);
        let many: Vec<EnvelopeId> = (0..1000).map(eid).collect();
        for _ in 0..4 {
            let m = MailboxId(rand::random());
            t.acked(m, &many, 300, 50);
            t.deleted(m, &many[..300], 300, 50);
            check(&t);
        }
        assert_eq!(t.counts(), (100, 50));
    }

    /// An id acknowledged again (an owner retrying its ACK, or a flood of ACKs from throw-away
    /// keys) is forgotten when its first tombstone expires, not kept beyond the bound.
    #[test]
    fn an_id_acknowledged_again_is_still_forgotten() {
        let m = MailboxId([1; 32]);
        let mut t = Tombstones::default();
        t.acked(m, &[eid(1)], 100, 50);
        t.acked(m, &[eid(1)], 120, 50);
        assert_eq!(t.unheld.len(), 1, "one place in the unheld order");
        t.acked(m, &[eid(2)], 150, 50);
        assert!(
            !t.contains(&m, &eid(1), 150),
            "forgotten with its first tombstone"
        );
        // Held: deleted at 160, again (another ACK) at 170; it stands from the first.
        t.acked(m, &[eid(3)], 160, 50);
        t.deleted(m, &[eid(3)], 160, 50);
        t.acked(m, &[eid(3)], 170, 50);
        t.deleted(m, &[eid(3)], 170, 50);
        assert_eq!(t.held.len(), 1, "one place in the held order");
        check(&t);
        t.acked(m, &[eid(4)], 210, 50);
        assert!(
            !t.contains(&m, &eid(3), 210),
            "forgotten from its first deletion"
        );
        assert_eq!(t.tombs.len(), 1);
        assert!(
            t.held.is_empty() && t.unheld.len() == 1,
            "the dead places went too"
        );
        check(&t);
    }

    /// The attack this split is for: ACKs from throw-away keys naming ids never deposited,
    /// more than both pools hold together, push out no tombstone of an envelope that was held.
    #[test]
    fn a_flood_of_acks_for_ids_never_held_forgets_no_held_tombstone() {
        let owner = MailboxId([1; 32]);
        let mut t = Tombstones::with_limits(1000, 500);
        let held: Vec<EnvelopeId> = (0..10).map(eid).collect();
        t.acked(owner, &held, 100, 1000);
        t.deleted(owner, &held, 100, 1000);
        for round in 0..40u32 {
            let ids: Vec<EnvelopeId> = (0..256).map(|i| eid(1_000_000 + round * 256 + i)).collect();
            t.acked(
                MailboxId(rand::random()),
                &ids,
                101 + u64::from(round),
                1000,
            );
        }
        for id in &held {
            assert!(t.contains(&owner, id, 500));
            assert_eq!(t.pool(&owner, id), Some(Pool::Held));
        }
        assert_eq!(t.counts(), (10, 500));
        check(&t);
    }

    /// A tombstone the unheld pool forgot before the store answered comes back, held.
    #[test]
    fn a_deletion_after_its_tombstone_was_forgotten_makes_a_held_one() {
        let m = MailboxId([1; 32]);
        let mut t = Tombstones::with_limits(10, 2);
        t.acked(m, &[eid(1)], 100, 50);
        t.acked(MailboxId([2; 32]), &[eid(2), eid(3)], 100, 50);
        assert!(
            !t.contains(&m, &eid(1), 100),
            "pushed out of the unheld pool"
        );
        t.deleted(m, &[eid(1)], 101, 50);
        assert_eq!(t.pool(&m, &eid(1)), Some(Pool::Held));
        assert!(t.contains(&m, &eid(1), 150) && !t.contains(&m, &eid(1), 151));
        check(&t);
    }

    /// Moves leave dead places in the unheld order; they do not pile up, and dropping them
    /// keeps every live one.
    #[test]
    fn dead_places_do_not_pile_up() {
        let mut t = Tombstones::with_limits(100, 100);
        let mut kept = Vec::new();
        for round in 0..200u32 {
            let m = MailboxId(rand::random());
            let ids: Vec<EnvelopeId> = (0..50).map(|i| eid(round * 50 + i)).collect();
            t.acked(m, &ids, 100, 1000);
            // All but one held: the last stays unheld, live among the dead places.
            t.deleted(m, &ids[..49], 100, 1000);
            kept.push((m, ids[49]));
            check(&t);
            assert!(t.unheld.len() <= 2 * t.unheld_count + 1024);
            assert!(t.held.len() <= 100);
        }
        // Each ACK's 50 count as unheld until 49 move, so the pool ends each round with the
        // newest 51 left unheld, kept live through every compaction.
        assert_eq!(t.counts(), (100, 51));
        for (m, id) in &kept[kept.len() - 51..] {
            assert_eq!(t.pool(m, id), Some(Pool::Unheld));
        }
    }

    /// The held order follows the deletions: a tombstone deleted late (its ACK's first
    /// deletion given up, say) stands from its deletion and does not hold up the expiry of
    /// those deleted before it.
    #[test]
    fn held_tombstones_expire_in_the_order_they_were_deleted() {
        let m = MailboxId([1; 32]);
        let mut t = Tombstones::default();
        t.acked(m, &[eid(1)], 100, 50);
        t.acked(m, &[eid(2)], 110, 50);
        t.deleted(m, &[eid(2)], 110, 50);
        t.deleted(m, &[eid(1)], 130, 50);
        assert!(t.contains(&m, &eid(1), 179), "from its deletion");
        t.acked(m, &[eid(3)], 160, 50);
        assert!(!t.contains(&m, &eid(2), 160) && t.pool(&m, &eid(2)).is_none());
        assert_eq!(t.pool(&m, &eid(1)), Some(Pool::Held));
        check(&t);
    }
}
