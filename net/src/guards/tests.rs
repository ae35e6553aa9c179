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
                identity,
                address: format!("10.{i}.0.1:1").parse().unwrap(),
                bandwidth: 1000,
                ntor_key: [0; 32],
                link_key: [0; 32],
                published: 0,
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
    let dir = std::env::temp_dir().join(format!("shallot-guards-{}", rand::random::<u64>()));
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
                unlisted_since: None
            },
            Guard {
                id: b,
                unlisted_since: Some(12345)
            }
        ]
    );
}
