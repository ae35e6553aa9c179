//! The circuit manager's decisions that need no network (`docs/spec.md` §11.3): which relays
//! to leave out after failures, which guard starts a path, which circuits built ahead may be
//! kept, and which of them may be extended to a requested last hop. Time is an argument.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::{Flags, RelayEntry};

use crate::path::{related, PathError};

/// Relays that failed lately, and when.
#[derive(Debug, Default)]
pub struct Failures(HashMap<RelayId, Instant>);

impl Failures {
    /// `relay` failed at `now`.
    pub fn note(&mut self, relay: RelayId, now: Instant) {
        self.0.insert(relay, now);
    }

    /// The relays that failed less than `memory` before `now`; older failures are forgotten.
    pub fn recent(&mut self, now: Instant, memory: Duration) -> HashSet<RelayId> {
        self.0
            .retain(|_, at| now.saturating_duration_since(*at) < memory);
        self.0.keys().copied().collect()
    }
}

/// The guard to start a `hops`-hop path with: the first of `guards` that has not failed
/// recently and is unrelated to `exit`; failing that, the first unrelated one even if it
/// failed. A path never starts outside the guard set: with no usable guard there is no first
/// hop ([`PathError::NoUsableGuard`]).
pub fn pick_guard(
    guards: &[RelayId],
    consensus: &VerifiedConsensus,
    exit: Option<&RelayEntry>,
    avoid: &HashSet<RelayId>,
    hops: usize,
) -> Result<RelayId, PathError> {
    if guards.is_empty() {
        return Err(PathError::NoUsableGuard);
    }
    let unrelated: Vec<RelayId> = guards
        .iter()
        .copied()
        .filter(|id| match (consensus.relay(id), exit) {
            (Some(g), Some(e)) => !related(g, e),
            (Some(_), None) => true,
            _ => false,
        })
        .collect();
    match unrelated
        .iter()
        .find(|id| !avoid.contains(id))
        .or(unrelated.first())
    {
        Some(id) => Ok(*id),
        None => Err(PathError::NotEnoughRelays {
            hops,
            reason: "every guard is related to the requested last hop",
        }),
    }
}

fn running(consensus: &VerifiedConsensus, id: &RelayId) -> bool {
    consensus
        .relay(id)
        .is_some_and(|r| r.flags.contains(Flags::RUNNING))
}

/// Whether a circuit built ahead along `prefix` may still be kept for new work: each of its
/// relays is still listed Running in `consensus` (the one held now) and has not failed lately.
/// One that may not is closed and replaced, as Tor stops using circuits through relays the
/// consensus no longer lists.
pub fn prefix_usable(
    prefix: &[RelayEntry],
    consensus: &VerifiedConsensus,
    avoid: &HashSet<RelayId>,
) -> bool {
    prefix
        .iter()
        .all(|r| running(consensus, &r.id) && !avoid.contains(&r.id))
}

/// Whether a circuit built ahead along `prefix` may be extended to `exit`: the prefix is
/// still usable ([`prefix_usable`]), `exit` is running, and every relay of the prefix is
/// unrelated to it.
pub fn prefix_fits(
    prefix: &[RelayEntry],
    exit: &RelayEntry,
    consensus: &VerifiedConsensus,
    avoid: &HashSet<RelayId>,
) -> bool {
    running(consensus, &exit.id)
        && prefix_usable(prefix, consensus, avoid)
        && prefix.iter().all(|r| !related(r, exit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn failures_are_forgotten_after_the_memory() {
        let t0 = Instant::now();
        let memory = Duration::from_secs(60);
        let mut f = Failures::default();
        let (a, b) = (RelayId([1; 20]), RelayId([2; 20]));
        f.note(a, t0);
        f.note(b, t0 + Duration::from_secs(30));
        assert_eq!(f.recent(t0 + Duration::from_secs(59), memory).len(), 2);
        let later = f.recent(t0 + Duration::from_secs(60), memory);
        assert_eq!(later, HashSet::from([b]));
        assert!(f.recent(t0 + Duration::from_secs(90), memory).is_empty());
    }

    #[test]
    fn the_first_guard_that_has_not_failed_starts_the_path() {
        let relays = testing::relays(6);
        let c = VerifiedConsensus::assume_verified(testing::consensus(relays.clone(), 0, 1, 2));
        let guards: Vec<_> = relays[..3].iter().map(|r| r.id).collect();
        let none = HashSet::new();
        assert_eq!(pick_guard(&guards, &c, None, &none, 3), Ok(guards[0]));
        let avoid = HashSet::from([guards[0]]);
        assert_eq!(pick_guard(&guards, &c, None, &avoid, 3), Ok(guards[1]));
        // Every guard failed: still a guard, never a relay outside the set.
        let all: HashSet<_> = guards.iter().copied().collect();
        assert_eq!(pick_guard(&guards, &c, None, &all, 3), Ok(guards[0]));
        assert_eq!(
            pick_guard(&[], &c, None, &none, 3),
            Err(PathError::NoUsableGuard),
            "no usable guard: no first hop, never a relay outside the set"
        );
    }

    #[test]
    fn a_guard_related_to_the_exit_is_passed_over() {
        let mut relays = testing::relays(6);
        // The first guard declares the exit as family.
        let exit = relays[5].clone();
        relays[0].family.push(exit.id);
        let c = VerifiedConsensus::assume_verified(testing::consensus(relays.clone(), 0, 1, 2));
        let guards = [relays[0].id, relays[1].id];
        let none = HashSet::new();
        assert_eq!(
            pick_guard(&guards, &c, Some(&exit), &none, 3),
            Ok(relays[1].id)
        );
        let only_related = [relays[0].id];
        assert!(pick_guard(&only_related, &c, Some(&exit), &none, 3).is_err());
    }

    #[test]
    fn a_prefix_fits_only_if_every_relay_runs_has_not_failed_and_is_unrelated() {
        let mut relays = testing::relays(5);
        let prefix = vec![relays[0].clone(), relays[1].clone()];
        let exit = relays[4].clone();
        let c = VerifiedConsensus::assume_verified(testing::consensus(relays.clone(), 0, 1, 2));
        let none = HashSet::new();
        assert!(prefix_fits(&prefix, &exit, &c, &none));
        assert!(
            !prefix_fits(&prefix, &relays[1], &c, &none),
            "the exit is on it"
        );
        assert!(!prefix_fits(
            &prefix,
            &exit,
            &c,
            &HashSet::from([relays[0].id])
        ));
        // The second relay stops running.
        relays[1].flags.set(Flags::RUNNING, false);
        let c = VerifiedConsensus::assume_verified(testing::consensus(relays, 0, 1, 2));
        assert!(!prefix_fits(&prefix, &exit, &c, &none));
    }
}
