//! The shared random values of one round's consensus, computed from the round's confirmed
//! votes and the consensus the chain continues from (`docs/spec.md` §5.10). Pure.
//!
//! * **Current**: the reveals of this round's votes that match the commitments the previous
//!   round's consensus lists are valid; with valid reveals from more than half of all
//!   authorities the value is [`shared_value`] of them chained with the previous value,
//!   otherwise [`disaster_value`] of the newest agreed value (the base's, even when the base is
//!   older than the last round, so that a failed round does not make the value predictable).
//! * **Epochs**: the consensus carries the value of each mailbox epoch from `KEEP_EPOCHS`
//!   before the current epoch to `LEAD_EPOCHS` after it. A value carried by the base consensus
//!   is copied; the newest epoch, entering the window, takes this round's current value; any
//!   other epoch missing from the base (at the network's start, or after an outage) takes its
//!   fixed [`fallback_value`].
//! * **Commits**: every vote's commitment, for the next round.

use shallot_crypto::keys::VerifyingKey;
use shallot_proto::dir::srv::{
    commitment, disaster_value, fallback_value, shared_value, KEEP_EPOCHS, LEAD_EPOCHS,
};
use shallot_proto::dir::{SharedRandom, Vote};

/// The consensus the chain continues from: the newest one before this round that a majority
/// of authorities signed.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    /// Its valid-after.
    pub valid_after: u64,
    /// Its shared random values.
    pub shared_rand: &'a SharedRandom,
}

/// The shared random values of the consensus for round `round` (its valid-after), from the
/// round's votes, out of `n_authorities`, with voting interval `interval` and mailbox epochs
/// of `epoch_secs`.
pub fn compute(
    round: u64,
    interval: u64,
    epoch_secs: u64,
    n_authorities: usize,
    votes: &[Vote],
    base: Option<Base<'_>>,
) -> SharedRandom {
    let last_round = base.filter(|b| b.valid_after.saturating_add(interval) == round);
    let previous = last_round.map(|b| b.shared_rand.current);
    let reveals: Vec<(VerifyingKey, [u8; 32])> = match last_round {
        Some(b) => votes
            .iter()
            .filter_map(|v| {
                let reveal = v.reveal?;
                let committed = b.shared_rand.commit(&v.authority)?;
                (commitment(&v.authority, b.valid_after, &reveal) == *committed)
                    .then_some((v.authority, reveal))
            })
            .collect(),
        None => Vec::new(),
    };
    // The value chains from the newest agreed one, whatever round it is from: after a
    // round without a consensus the disaster value still depends on a value nobody knew
    // before that consensus, and is not computable years ahead. (Valid reveals imply a
    // base for the last round, so then this is `previous`.)
    let chain = base.map(|b| b.shared_rand.current);
    let current = if reveals.len() * 2 > n_authorities {
        shared_value(round, chain.as_ref(), &reveals)
    } else {
        disaster_value(round, chain.as_ref())
    };

    let epoch = round / epoch_secs.max(1);
    let first = epoch.saturating_sub(KEEP_EPOCHS);
    let last = epoch.saturating_add(LEAD_EPOCHS);
    let epochs = (first..=last)
        .map(|x| {
            let carried = base.and_then(|b| {
                b.shared_rand
                    .epochs
                    .binary_search_by(|(e, _)| e.cmp(&x))
                    .ok()
                    .map(|i| b.shared_rand.epochs[i].1)
            });
            let value = match carried {
                Some(v) => v,
                None if base.is_some() && x == last => current,
                None => fallback_value(x),
            };
            (x, value)
        })
        .collect();

    let mut commits: Vec<(VerifyingKey, [u8; 32])> =
        votes.iter().map(|v| (v.authority, v.commit)).collect();
    commits.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    commits.dedup_by(|a, b| a.0 == b.0);
    SharedRandom {
        previous,
        current,
        epochs,
        commits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    const I: u64 = 10;
    const E: u64 = 40;

    fn key(a: u8) -> VerifyingKey {
        IdentityKeypair::from_secret_bytes(&[a; 32]).public()
    }

    fn reveal(a: u8, round: u64) -> [u8; 32] {
        let mut r = [a; 32];
        r[..8].copy_from_slice(&round.to_be_bytes());
        r
    }

    /// Authority `a`'s vote in `round`: committing to this round's reveal, revealing last
    /// round's (unless `withhold`).
    fn vote(a: u8, round: u64, withhold: bool) -> Vote {
        Vote {
            authority: key(a),
            valid_after: round,
            fresh_until: round + I,
            valid_until: round + 3 * I,
            commit: commitment(&key(a), round, &reveal(a, round)),
            reveal: (!withhold).then(|| reveal(a, round - I)),
            relays: vec![],
        }
    }

    fn run(round: u64, votes: &[Vote], base: Option<(u64, &SharedRandom)>) -> SharedRandom {
        compute(
            round,
            I,
            E,
            3,
            votes,
            base.map(|(valid_after, shared_rand)| Base {
                valid_after,
                shared_rand,
            }),
        )
    }

    #[test]
    fn a_chain_of_rounds_reveals_and_chains() {
        let r0 = 1000;
        // The first round has nothing to check reveals against: the disaster value, and the
        // fixed fallback for every epoch.
        let s0 = run(r0, &[vote(1, r0, false), vote(2, r0, false)], None);
        assert_eq!(s0.current, disaster_value(r0, None));
        assert_eq!(s0.previous, None);
        assert_eq!(s0.commits.len(), 2);
        assert_eq!(s0.epochs.len() as u64, KEEP_EPOCHS + LEAD_EPOCHS + 1);
        assert!(s0.epochs.iter().all(|(x, v)| *v == fallback_value(*x)));
        // The next round: two valid reveals of three authorities.
        let r1 = r0 + I;
        let votes = [vote(1, r1, false), vote(2, r1, false), vote(3, r1, false)];
        let s1 = run(r1, &votes, Some((r0, &s0)));
        let expected = shared_value(
            r1,
            Some(&s0.current),
            &[(key(1), reveal(1, r0)), (key(2), reveal(2, r0))],
        );
        assert_eq!(s1.current, expected, "authority 3 committed nothing in r0");
        assert_eq!(s1.previous, Some(s0.current));
        // The order of the votes does not matter.
        let mut reversed = votes.clone();
        reversed.reverse();
        assert_eq!(run(r1, &reversed, Some((r0, &s0))), s1);
    }

    #[test]
    fn bad_or_missing_reveals_give_the_disaster_value() {
        let r0 = 1000;
        let s0 = run(
            r0,
            &[vote(1, r0, false), vote(2, r0, false), vote(3, r0, false)],
            None,
        );
        let r1 = r0 + I;
        // One withholds and one reveals something it did not commit to: one valid of three.
        let mut liar = vote(2, r1, false);
        liar.reveal = Some([9; 32]);
        let s1 = run(
            r1,
            &[vote(1, r1, false), liar, vote(3, r1, true)],
            Some((r0, &s0)),
        );
        assert_eq!(s1.current, disaster_value(r1, Some(&s0.current)));
        // A base from an older round checks no reveals, and is not the previous value.
        let s2 = run(
            r1 + I,
            &[vote(1, r1 + I, false), vote(2, r1 + I, false)],
            Some((r0, &s0)),
        );
        assert_eq!(s2.previous, None);
        // Finding J: after a round without a consensus, the disaster value still chains from
        // the newest agreed value, so it cannot be computed before that value was known.
        assert_ne!(s2.current, disaster_value(r1 + I, None));
        assert_eq!(s2.current, disaster_value(r1 + I, Some(&s0.current)));
    }

    #[test]
    fn epoch_values_are_fixed_on_entry_and_then_carried() {
        // A round inside epoch 25 (E = 40): the window is 17..=32.
        let r0 = 25 * E + 10;
        let s0 = run(r0, &[vote(1, r0, false), vote(2, r0, false)], None);
        assert_eq!(s0.epochs.first().unwrap().0, 25 - KEEP_EPOCHS);
        assert_eq!(s0.epochs.last().unwrap().0, 25 + LEAD_EPOCHS);
        // Next round, same epoch: every value is carried.
        let r1 = r0 + I;
        let s1 = run(
            r1,
            &[vote(1, r1, false), vote(2, r1, false)],
            Some((r0, &s0)),
        );
        assert_eq!(s1.epochs, s0.epochs);
        // The first round of epoch 26: epoch 26 + LEAD enters with this round's value; the
        // others are carried; epoch 25 − KEEP leaves.
        let r2 = 26 * E;
        let s2 = run(
            r2,
            &[vote(1, r2, false), vote(2, r2, false)],
            Some((r1, &s1)),
        );
        assert_eq!(s2.epochs.last().unwrap(), &(26 + LEAD_EPOCHS, s2.current));
        assert_eq!(s2.epochs.first().unwrap().0, 26 - KEEP_EPOCHS);
        assert_eq!(&s2.epochs[..s2.epochs.len() - 1], &s1.epochs[1..]);
        // Later rounds keep that value for the epoch even as the current value changes.
        let r3 = r2 + I;
        let s3 = run(
            r3,
            &[vote(1, r3, false), vote(2, r3, false)],
            Some((r2, &s2)),
        );
        assert_ne!(s3.current, s2.current);
        assert_eq!(s3.epochs, s2.epochs);
    }
}
