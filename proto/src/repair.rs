//! Repair under churn (`docs/spec.md` §9.6): which envelopes go where when the ring changes.
//!
//! A mailbox's envelopes are held by its [`HOLDERS`] relays: the first relays clockwise of
//! it on the ring (`crate::placement`) that are not known to be down. The first
//! [`REPLICAS`] of them on the consensus's ring answer deposits and fetches; the others are
//! spares, which become replicas when a replica leaves the consensus, already holding the
//! mailbox. Three duties keep the envelopes where the ring says:
//!
//! * **Hand-over** ([`duty`]): a relay that is no longer among a mailbox's holders hands every
//!   envelope it holds to the holders, then forgets the mailbox.
//! * **Leaving** ([`leaving`]): a relay shutting down gracefully hands each mailbox to the
//!   holders of the ring without itself.
//! * **Anti-entropy** ([`reconcile`]): holders exchange, per mailbox, the ids they hold and
//!   the ids the owner acknowledged (tombstones), then push what the other lacks and delete
//!   what the other saw acknowledged. A [`digest`] of both lists is compared first, so
//!   mailboxes that agree cost one hash.
//!
//! [`plan`] turns a change of ring into the transfers to make. Everything here is pure: the
//! relay daemon and the churn simulation (`shallot bench churn`) call the same functions.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use shallot_crypto::keys::RelayId;

use crate::mailbox::{EnvelopeId, MailboxId};
use crate::placement::Ring;
pub use crate::placement::REPLICAS;

/// Relays that hold each mailbox: its [`REPLICAS`] and two spares.
pub const HOLDERS: usize = REPLICAS + 2;

/// The relays that hold `mailbox` on `ring`: the first `n` clockwise for which `down` is
/// false (relays this one failed to reach), nearest first.
pub fn holders(
    ring: &Ring,
    mailbox: &MailboxId,
    n: usize,
    down: impl Fn(&RelayId) -> bool,
) -> Vec<RelayId> {
    ring.successors(mailbox)
        .filter(|r| !down(r))
        .take(n)
        .collect()
}

/// What relay `me` owes a mailbox it holds envelopes of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duty {
    /// `me` is a holder: reconcile with the other holders, nearest first.
    Keep {
        /// The other holders.
        peers: Vec<RelayId>,
    },
    /// `me` is not a holder: hand every envelope to these, then forget the mailbox.
    HandOver {
        /// The holders.
        to: Vec<RelayId>,
    },
}

/// What `me` owes `mailbox` on `ring`, `down` naming the relays it failed to reach.
pub fn duty(
    me: &RelayId,
    ring: &Ring,
    mailbox: &MailboxId,
    down: impl Fn(&RelayId) -> bool,
) -> Duty {
    let all = holders(ring, mailbox, HOLDERS, |r| r != me && down(r));
    if all.contains(me) {
        Duty::Keep {
            peers: all.into_iter().filter(|r| r != me).collect(),
        }
    } else {
        Duty::HandOver { to: all }
    }
}

/// The relays that take `mailbox` from `me` when it leaves: the holders of `ring` without it.
pub fn leaving(
    me: &RelayId,
    ring: &Ring,
    mailbox: &MailboxId,
    down: impl Fn(&RelayId) -> bool,
) -> Vec<RelayId> {
    holders(ring, mailbox, HOLDERS, |r| r == me || down(r))
}

/// The envelopes one relay holds for one mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// The envelopes waiting in it.
    pub ids: Vec<EnvelopeId>,
}

/// Envelopes to copy to one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Where they go.
    pub to: RelayId,
    /// Their mailbox.
    pub mailbox: MailboxId,
    /// Which envelopes.
    pub ids: Vec<EnvelopeId>,
}

/// What `me` does when the ring changes from `old` to `new`: the envelopes to push at once
/// (before any anti-entropy round), and the mailboxes it no longer holds.
///
/// A relay that becomes a holder of a mailbox cannot hold it yet, so it is sent everything
/// without an exchange of ids, by one relay only: the nearest holder of `new` that was a
/// holder of `old` too, every relay computing the same one. If no such relay is left, every
/// old holder that still has the mailbox sends it (the hand-over of [`Duty::HandOver`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Envelopes to push.
    pub pushes: Vec<Transfer>,
    /// Mailboxes `me` no longer holds: forget each once its pushes are acknowledged and a
    /// [`reconcile`] round with every holder ([`Duty::HandOver`]) leaves nothing to send.
    pub forget: Vec<MailboxId>,
}

/// Who sends a mailbox to a relay that became one of its holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    /// Only the nearest continuing holder: right when holders reconcile ([`reconcile`]), so
    /// that every continuing holder has what the nearest one has.
    Nearest,
    /// Every holder that has the mailbox: right while holders do not reconcile, when a
    /// continuing holder (a spare, say) may lack what the others hold. Duplicates cost the
    /// target nothing but the transfer.
    Every,
}

/// The [`Plan`] of `me`, holding `held`, for the ring changing from `old` to `new`.
pub fn plan(
    me: &RelayId,
    old: &Ring,
    new: &Ring,
    held: &[Held],
    senders: Senders,
    down: impl Fn(&RelayId) -> bool,
) -> Plan {
    let mut out = Plan::default();
    for h in held.iter().filter(|h| !h.ids.is_empty()) {
        let before = holders(old, &h.mailbox, HOLDERS, |r| r != me && down(r));
        let targets: Vec<RelayId> = match duty(me, new, &h.mailbox, &down) {
            Duty::HandOver { to } => {
                out.forget.push(h.mailbox);
                if senders == Senders::Nearest && to.iter().any(|r| before.contains(r)) {
                    // A continuing holder sends to the newcomers; this relay's envelopes
                    // reach the holders by anti-entropy before it forgets them.
                    continue;
                }
                to
            }
            Duty::Keep { peers } => {
                let sender = holders(new, &h.mailbox, HOLDERS, |r| r != me && down(r))
                    .into_iter()
                    .find(|r| before.contains(r));
                if senders == Senders::Nearest && sender.is_some() && sender != Some(*me) {
                    continue;
                }
                peers.into_iter().filter(|r| !before.contains(r)).collect()
            }
        };
        for to in targets {
            out.pushes.push(Transfer {
                to,
                mailbox: h.mailbox,
                ids: h.ids.clone(),
            });
        }
    }
    out
}

/// What one holder says about one mailbox in an anti-entropy round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Envelopes waiting.
    pub live: BTreeSet<EnvelopeId>,
    /// Envelopes the owner acknowledged (deleted here), kept until they would have expired.
    pub gone: BTreeSet<EnvelopeId>,
}

/// A hash of a [`Summary`]: two holders whose digests agree have nothing to exchange.
pub fn digest(mailbox: &MailboxId, s: &Summary) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"shallot-repair-v1");
    h.update(mailbox.0);
    h.update((s.live.len() as u64).to_be_bytes());
    for id in &s.live {
        h.update(id.0);
    }
    h.update((s.gone.len() as u64).to_be_bytes());
    for id in &s.gone {
        h.update(id.0);
    }
    h.finalize().into()
}

/// What a holder does after comparing its [`Summary`] with a peer's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Envelopes to push to the peer: held here, neither held nor acknowledged there.
    pub send: Vec<EnvelopeId>,
    /// Envelopes to delete here: the owner acknowledged them at the peer.
    pub delete: Vec<EnvelopeId>,
}

/// Compares `mine` with a peer's `theirs`. Run by both sides, it leaves both holding the
/// union of what waits minus everything acknowledged on either: an acknowledged envelope
/// never comes back, and a waiting one is never lost to a peer that missed it.
pub fn reconcile(mine: &Summary, theirs: &Summary) -> Reconciled {
    Reconciled {
        send: mine
            .live
            .iter()
            .filter(|id| !theirs.live.contains(id) && !theirs.gone.contains(id))
            .copied()
            .collect(),
        delete: mine
            .live
            .iter()
            .filter(|id| theirs.gone.contains(id))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRV: [u8; 32] = [9; 32];
    const E: u64 = 7;

    fn relays(n: u8) -> Vec<RelayId> {
        (0..n).map(|i| RelayId([i; 20])).collect()
    }

    fn ring(rs: &[RelayId]) -> Ring {
        Ring::new(&SRV, E, rs.iter().copied())
    }

    fn eid(i: u8) -> EnvelopeId {
        EnvelopeId([i; 16])
    }

    const M: MailboxId = MailboxId([4; 32]);

    #[test]
    fn holders_start_with_the_replicas_and_skip_relays_that_are_down() {
        let all = relays(20);
        let r = ring(&all);
        let h = holders(&r, &M, HOLDERS, |_| false);
        assert_eq!(h.len(), HOLDERS);
        assert_eq!(h[..REPLICAS], r.replicas(&M, REPLICAS)[..]);
        let down = h[1];
        let h2 = holders(&r, &M, HOLDERS, |x| *x == down);
        assert!(!h2.contains(&down));
        assert_eq!(h2[0], h[0]);
        assert_eq!(h2[1..HOLDERS - 1], h[2..]);
        // The relay that replaces a dead one is the one the next consensus makes a holder.
        let without: Vec<RelayId> = all.into_iter().filter(|x| *x != down).collect();
        assert_eq!(holders(&ring(&without), &M, HOLDERS, |_| false), h2);
    }

    #[test]
    fn a_relay_that_is_not_a_holder_hands_over_to_the_holders() {
        let all = relays(20);
        let r = ring(&all);
        let h = holders(&r, &M, HOLDERS, |_| false);
        let outsider = *all.iter().find(|x| !h.contains(x)).unwrap_or(&all[0]);
        assert_eq!(
            duty(&outsider, &r, &M, |_| false),
            Duty::HandOver { to: h.clone() }
        );
        match duty(&h[2], &r, &M, |_| false) {
            Duty::Keep { peers } => {
                assert_eq!(peers.len(), HOLDERS - 1);
                assert!(!peers.contains(&h[2]));
            }
            other => panic!("{other:?}"),
        }
        // A relay never counts itself down.
        assert!(matches!(duty(&h[0], &r, &M, |_| true), Duty::Keep { .. }));
    }

    #[test]
    fn a_leaving_relay_hands_over_to_the_ring_without_it() {
        let all = relays(20);
        let r = ring(&all);
        let h = holders(&r, &M, HOLDERS, |_| false);
        let me = h[0];
        let to = leaving(&me, &r, &M, |_| false);
        assert!(!to.contains(&me));
        let rest: Vec<RelayId> = all.into_iter().filter(|x| *x != me).collect();
        assert_eq!(to, holders(&ring(&rest), &M, HOLDERS, |_| false));
    }

    #[test]
    fn a_new_holder_gets_everything_from_exactly_one_continuing_holder() {
        let all = relays(30);
        let old = ring(&all);
        let before = holders(&old, &M, HOLDERS, |_| false);
        // Two holders leave the ring.
        let gone = [before[0], before[3]];
        let rest: Vec<RelayId> = all.iter().copied().filter(|x| !gone.contains(x)).collect();
        let new = ring(&rest);
        let after = holders(&new, &M, HOLDERS, |_| false);
        let newcomers: Vec<RelayId> = after
            .iter()
            .copied()
            .filter(|x| !before.contains(x))
            .collect();
        assert_eq!(newcomers.len(), 2);
        let held = [Held {
            mailbox: M,
            ids: vec![eid(1), eid(2)],
        }];
        let mut received: Vec<RelayId> = Vec::new();
        for me in &before {
            if gone.contains(me) {
                continue;
            }
            let p = plan(me, &old, &new, &held, Senders::Nearest, |_| false);
            assert!(p.forget.is_empty());
            for t in p.pushes {
                assert_eq!(t.ids, held[0].ids);
                received.push(t.to);
            }
        }
        received.sort();
        let mut want = newcomers.clone();
        want.sort();
        assert_eq!(received, want, "each newcomer once, nobody else");
    }

    #[test]
    fn when_no_holder_continues_every_old_holder_hands_over() {
        let all = relays(30);
        let old = ring(&all);
        let before = holders(&old, &M, HOLDERS, |_| false);
        // Only relay before[4] is left of the old holders, and the ring gained none near it:
        // make it fall out by marking the others down and putting newcomers in front.
        let newcomers: Vec<RelayId> = (100..140u8).map(|i| RelayId([i; 20])).collect();
        let mut bigger = all.clone();
        bigger.extend(newcomers);
        let new = ring(&bigger);
        let after = holders(&new, &M, HOLDERS, |_| false);
        let held = [Held {
            mailbox: M,
            ids: vec![eid(1)],
        }];
        for me in &before {
            let p = plan(me, &old, &new, &held, Senders::Nearest, |_| false);
            if after.contains(me) {
                assert!(p.forget.is_empty());
            } else {
                assert_eq!(p.forget, vec![M]);
                let continuing = after.iter().any(|r| before.contains(r));
                let to: Vec<RelayId> = p.pushes.iter().map(|t| t.to).collect();
                if continuing {
                    assert!(to.is_empty(), "a continuing holder sends");
                } else {
                    assert_eq!(to, after);
                }
            }
        }
    }

    #[test]
    fn without_reconciliation_every_holder_sends_to_a_newcomer() {
        let all = relays(30);
        let old = ring(&all);
        let before = holders(&old, &M, HOLDERS, |_| false);
        let rest: Vec<RelayId> = all.iter().copied().filter(|x| *x != before[0]).collect();
        let new = ring(&rest);
        let after = holders(&new, &M, HOLDERS, |_| false);
        let newcomer = after[HOLDERS - 1];
        assert!(!before.contains(&newcomer));
        let held = [Held {
            mailbox: M,
            ids: vec![eid(1)],
        }];
        // Only the spare at the end holds the mailbox (the replicas missed it): with
        // `Nearest` it would wait for the nearest holder, which has nothing to send.
        let spare = before[HOLDERS - 1];
        let nearest = plan(&spare, &old, &new, &held, Senders::Nearest, |_| false);
        assert!(nearest.pushes.is_empty());
        let every = plan(&spare, &old, &new, &held, Senders::Every, |_| false);
        let to: Vec<RelayId> = every.pushes.iter().map(|t| t.to).collect();
        assert_eq!(to, vec![newcomer]);
    }

    #[test]
    fn empty_mailboxes_move_nothing() {
        let all = relays(10);
        let p = plan(
            &all[0],
            &ring(&all),
            &ring(&all[1..]),
            &[Held {
                mailbox: M,
                ids: Vec::new(),
            }],
            Senders::Every,
            |_| false,
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn reconcile_converges_and_acknowledged_envelopes_never_come_back() {
        let a = Summary {
            live: [eid(1), eid(2), eid(3)].into(),
            gone: [eid(9)].into(),
        };
        let b = Summary {
            live: [eid(3), eid(4), eid(9)].into(),
            gone: [eid(2)].into(),
        };
        let ab = reconcile(&a, &b);
        let ba = reconcile(&b, &a);
        assert_eq!(ab.send, vec![eid(1)]);
        assert_eq!(ab.delete, vec![eid(2)]);
        assert_eq!(ba.send, vec![eid(4)]);
        assert_eq!(ba.delete, vec![eid(9)]);
        assert_eq!(reconcile(&a, &a), Reconciled::default());
        assert_eq!(digest(&M, &a), digest(&M, &a.clone()));
        assert_ne!(digest(&M, &a), digest(&M, &b));
        assert_ne!(digest(&M, &a), digest(&MailboxId([5; 32]), &a));
        // Moving an id from live to gone changes the digest.
        let mut acked = a.clone();
        acked.live.remove(&eid(1));
        acked.gone.insert(eid(1));
        assert_ne!(digest(&M, &a), digest(&M, &acked));
    }
}
