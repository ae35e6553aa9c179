//! Guard retention with a fake clock: a guard missing from a consensus is kept and used again,
//! dropped only after the retention period; one consensus never replaces the set.

use super::*;
use rand::SeedableRng;
use shallot_crypto::keys::IdentityKeypair;
use shallot_proto::dir::{Consensus, ConsensusParams, RelayEntry};

const DAY: u64 = 86_400;

fn consensus(n: u8) -> VerifiedConsensus {
    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(n));
    let mut relays: Vec<RelayEntry> = (0..n)
        .map(|i| {
            let identity = IdentityKeypair::generate(&mut rng).public();
            RelayEntry {
                id: RelayId::of(&identity),
                nickname: format!("g{i}"),
                address: format!("10.{i}.0.1:1").parse().unwrap(),
                bandwidth: 1000,
                ntor_key: [0; 32],
                link_key: [0; 32],
                flags: Flags::RUNNING | Flags::GUARD,
                family: Vec::new(),
            }
        })
        .collect();
    relays.sort_by_key(|r| r.id);
    VerifiedConsensus::assume_verified(Consensus {
        valid_after: 0,
        fresh_until: 1,
        valid_until: 2,
        params: ConsensusParams {
            epoch_secs: 1,
            max_share_ppm: 1_000_000,
        },
        shared_rand: Default::default(),
        relays,
        signatures: Vec::new(),
    })
}

fn scratch() -> PathBuf {
    let dir = shallot_rt::scratch::path("guards");
    keyfile::ensure_private_dir(&dir).unwrap();
    dir
}

fn without(c: &VerifiedConsensus, gone: &[RelayId]) -> VerifiedConsensus {
    let mut c = c.clone().into_inner();
    c.relays.retain(|r| !gone.contains(&r.id));
    VerifiedConsensus::assume_verified(c)
}

#[test]
fn guards_persist_and_survive_a_short_absence() {
    let dir = scratch();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let c = consensus(10);
    let mut g = GuardSet::load(&dir);
    let t = 1_000_000;
    g.update_at(&c, t, &mut rng);
    assert_eq!(g.guards().len(), GUARDS);
    let first = g.guards();
    assert_eq!(GuardSet::load(&dir).guards(), first, "saved and reloaded");
    // The same consensus keeps the same guards.
    g.update_at(&c, t + 60, &mut rng);
    assert_eq!(g.guards(), first);
    // One is missing from a consensus: it is kept (not used), and not replaced.
    let missing = without(&c, &[first[1]]);
    g.update_at(&missing, t + 3600, &mut rng);
    assert_eq!(g.guards(), vec![first[0], first[2]]);
    assert_eq!(g.sampled().len(), GUARDS);
    assert_eq!(g.sampled()[1].unlisted_since, Some(t + 3600));
    // The file remembers since when, across a restart.
    assert_eq!(GuardSet::load(&dir).sampled(), g.sampled());
    // It comes back a few days later: used again, in its place.
    g.update_at(&c, t + 5 * DAY, &mut rng);
    assert_eq!(g.guards(), first);
    assert_eq!(g.sampled()[1].unlisted_since, None);
}

#[test]
fn a_guard_unlisted_past_the_retention_period_is_replaced() {
    let dir = scratch();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let c = consensus(10);
    let mut g = GuardSet::load(&dir).with_retention(Duration::from_secs(7 * DAY));
    let t = 1_000_000;
    g.update_at(&c, t, &mut rng);
    let first = g.guards();
    let missing = without(&c, &[first[1]]);
    g.update_at(&missing, t, &mut rng);
    g.update_at(&missing, t + 7 * DAY, &mut rng);
    assert_eq!(
        g.sampled().len(),
        GUARDS,
        "kept for exactly the retention period"
    );
    g.update_at(&missing, t + 7 * DAY + 1, &mut rng);
    let now = g.guards();
    assert_eq!(now.len(), GUARDS);
    assert!(!now.contains(&first[1]));
    assert_eq!(
        (now[0], now[1]),
        (first[0], first[2]),
        "the others keep their order"
    );
}

/// Review finding 3: one consensus listing none of the guards does not replace the set.
#[test]
fn one_consensus_without_the_guards_does_not_replace_the_set() {
    let dir = scratch();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let c = consensus(12);
    let mut g = GuardSet::load(&dir);
    let t = 2_000_000;
    g.update_at(&c, t, &mut rng);
    let first = g.guards();
    let none = without(&c, &first);
    g.update_at(&none, t + 3600, &mut rng);
    // One temporary guard so that circuits can still be built; the three are kept.
    assert_eq!(g.sampled().len(), GUARDS + 1);
    assert_eq!(g.guards().len(), 1);
    assert!(!first.contains(&g.guards()[0]));
    let ids: Vec<RelayId> = g.sampled().iter().map(|x| x.id).collect();
    assert_eq!(ids[..GUARDS], first[..]);
    // The same again: no further guard is drawn.
    g.update_at(&none, t + 7200, &mut rng);
    assert_eq!(g.sampled().len(), GUARDS + 1);
    // The next consensus lists them again: the original set, the temporary one dropped.
    g.update_at(&c, t + 10_800, &mut rng);
    assert_eq!(g.guards(), first);
    assert_eq!(g.sampled().len(), GUARDS);
}

#[test]
fn old_and_corrupt_files_are_read_safely() {
    let dir = scratch();
    let a = RelayId([1; 20]);
    let b = RelayId([2; 20]);
    let text = format!("{a}\nnot a guard\n{b} 12345\n{b} 1 2\n");
    keyfile::write_private_file(&dir.join("guards"), text.as_bytes()).unwrap();
    let g = GuardSet::load(&dir);
    assert_eq!(
        g.sampled(),
        &[
            Guard {
                id: a,
                unlisted_since: None,
                sampled_at: None,
            },
            Guard {
                id: b,
                unlisted_since: Some(12345),
                sampled_at: None,
            }
        ]
    );
}

/// The panel says since when each guard is used: the time it was added survives a restart,
/// beside the time it went unlisted, and a malformed time spoils only its own line.
#[test]
fn when_each_guard_was_sampled_is_kept_across_restarts() {
    let dir = scratch();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let c = consensus(10);
    let mut g = GuardSet::load(&dir);
    let t = 2_000_000;
    g.update_at(&c, t, &mut rng);
    assert!(g.sampled().iter().all(|x| x.sampled_at == Some(t)));
    let first = g.guards();
    g.update_at(&without(&c, &[first[0]]), t + 50, &mut rng);
    let reloaded = GuardSet::load(&dir);
    assert_eq!(reloaded.sampled(), g.sampled());
    assert_eq!(reloaded.sampled()[0].unlisted_since, Some(t + 50));
    assert_eq!(reloaded.sampled()[0].sampled_at, Some(t));

    let (a, b) = (RelayId([1; 20]), RelayId([2; 20]));
    let text =
        format!("{a} sampled 9\n{b} 5 sampled 7\n{a} sampled\n{b} sampled x\n{a} 1 sampled 2 3\n");
    keyfile::write_private_file(&dir.join("guards"), text.as_bytes()).unwrap();
    let read: Vec<_> = GuardSet::load(&dir)
        .sampled()
        .iter()
        .map(|g| (g.id, g.unlisted_since, g.sampled_at))
        .collect();
    assert_eq!(read, vec![(a, None, Some(9)), (b, Some(5), Some(7))]);
}

/// A consensus listing `c`'s relays except every guard `g` holds.
fn hostile(c: &VerifiedConsensus, g: &GuardSet) -> VerifiedConsensus {
    let gone: Vec<RelayId> = g.sampled().iter().map(|x| x.id).collect();
    without(c, &gone)
}

/// Issue 10, hole E: consensuses that each leave out every guard the client holds make it add
/// one temporary guard each, up to the growth bound; then it has no usable guard (no first
/// hop at all, never one from outside the set), and its own guards are back once listed.
#[test]
fn hostile_consensuses_cannot_empty_the_set_into_random_first_hops() {
    let dir = scratch();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let c = consensus(30);
    let mut g = GuardSet::load(&dir);
    let t = 3_000_000;
    g.update_at(&c, t, &mut rng);
    let first = g.guards();
    assert_eq!(g.budget_at(t), MAX_NEW_GUARDS - GUARDS);
    for round in 1..=3 {
        let h = hostile(&c, &g);
        g.update_at(&h, t + round * 3600, &mut rng);
        // The one usable guard is the temporary one just drawn, from the set.
        assert_eq!(g.sampled().len(), GUARDS + round as usize);
        assert_eq!(g.guards().len(), 1);
        assert_eq!(g.guards()[0], g.sampled().last().unwrap().id);
    }
    assert_eq!(g.budget_at(t + 3 * 3600), 0);
    // A fourth: the budget is spent; no guard is usable, and a circuit has no first hop.
    let h = hostile(&c, &g);
    g.update_at(&h, t + 4 * 3600, &mut rng);
    assert_eq!(g.sampled().len(), MAX_NEW_GUARDS);
    assert!(g.guards().is_empty());
    let picked = crate::circmgr::pick_guard(&g.guards(), &h, None, &Default::default(), 3);
    assert_eq!(picked, Err(crate::path::PathError::NoUsableGuard));
    assert_eq!(
        picked.unwrap_err().to_string(),
        "no usable guard; waiting for a consensus that lists one"
    );
    // A restart does not reset the budget.
    let mut g = GuardSet::load(&dir);
    g.update_at(&hostile(&c, &g), t + 5 * 3600, &mut rng);
    assert!(g.guards().is_empty());
    assert_eq!(g.sampled().len(), MAX_NEW_GUARDS);
    // The honest consensus again: the original guards, the temporary ones dropped.
    g.update_at(&c, t + 6 * 3600, &mut rng);
    assert_eq!(g.guards(), first);
    assert_eq!(g.sampled().len(), GUARDS);
}

/// A directory that hides the client's guards for a month, once an hour, never makes it add
/// more than [`MAX_NEW_GUARDS`] in any [`NEW_GUARD_PERIOD`], nor hold more than
/// [`MAX_SAMPLED`].
#[test]
fn a_hostile_sequence_cannot_make_the_set_grow_past_the_bound() {
    let dir = scratch();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let c = consensus(200);
    let mut g = GuardSet::load(&dir).with_retention(Duration::from_secs(10 * DAY));
    let t0 = 4_000_000;
    let mut additions: Vec<u64> = Vec::new();
    let mut known: Vec<RelayId> = Vec::new();
    for hour in 0..30 * 24 {
        let now = t0 + hour * 3600;
        let h = if hour == 0 {
            c.clone()
        } else {
            hostile(&c, &g)
        };
        g.update_at(&h, now, &mut rng);
        for x in g.sampled() {
            if !known.contains(&x.id) {
                known.push(x.id);
                additions.push(now);
            }
        }
        assert!(g.sampled().len() <= MAX_SAMPLED);
        // Every usable guard is in the set: no first hop from outside it.
        assert!(g
            .guards()
            .iter()
            .all(|id| g.sampled().iter().any(|x| x.id == *id)));
    }
    let period = NEW_GUARD_PERIOD.as_secs();
    for (i, start) in additions.iter().enumerate() {
        let within = additions[i..]
            .iter()
            .take_while(|a| **a < start + period)
            .count();
        assert!(within <= MAX_NEW_GUARDS, "{within} added in one period");
    }
    // Over 30 days the bound allows a few more, and the month did use them.
    assert!(additions.len() > MAX_NEW_GUARDS);
    assert!(additions.len() <= 5 * MAX_NEW_GUARDS);
}
