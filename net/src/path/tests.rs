//! Path selection over a synthetic consensus of 1,000 relays: the rules always hold, and
//! selection frequency tracks bandwidth.

use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use shallot_crypto::keys::IdentityKeypair;
use shallot_proto::dir::{Consensus, ConsensusParams};

/// 1,000 relays in 250 /16s (four per /16), families of five, bandwidths spread over three
/// orders of magnitude, every third one a guard.
fn synthetic(seed: u64) -> VerifiedConsensus {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut relays: Vec<RelayEntry> = (0..1000u32)
        .map(|i| {
            let identity = IdentityKeypair::generate(&mut rng).public();
            let mut flags = Flags::RUNNING | Flags::VALID | Flags::FAST;
            if i % 3 == 0 {
                flags.set(Flags::GUARD, true);
            }
            RelayEntry {
                id: RelayId::of(&identity),
                nickname: format!("r{i}"),
                address: format!("10.{}.{}.1:9000", i / 4, i % 4).parse().unwrap(),
                bandwidth: 1000 * (1 + u64::from(i % 100)) * if i % 7 == 0 { 10 } else { 1 },
                ntor_key: [0; 32],
                link_key: [0; 32],
                flags,
                family: Vec::new(),
            }
        })
        .collect();
    // Families of five consecutive relays (each lists the others).
    let ids: Vec<RelayId> = relays.iter().map(|r| r.id).collect();
    for (i, r) in relays.iter_mut().enumerate() {
        let base = i / 5 * 5;
        let mut fam: Vec<RelayId> = (base..base + 5)
            .filter(|&j| j != i)
            .map(|j| ids[j])
            .collect();
        fam.sort();
        r.family = fam;
    }
    relays.sort_by_key(|r| r.id);
    VerifiedConsensus::assume_verified(Consensus {
        valid_after: 0,
        fresh_until: 1,
        valid_until: 2,
        params: ConsensusParams {
            epoch_secs: 86400,
            max_share_ppm: 50_000,
        },
        shared_rand: Default::default(),
        relays,
        signatures: Vec::new(),
    })
}

fn check_rules(path: &[&RelayEntry]) {
    for (i, a) in path.iter().enumerate() {
        assert!(a.flags.contains(Flags::RUNNING));
        for b in &path[i + 1..] {
            assert!(
                !related(a, b),
                "{} and {} share a /16, family or identity",
                a.nickname,
                b.nickname
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn the_rules_always_hold(seed in any::<u64>(), want_exit in any::<bool>(), want_guard in any::<bool>()) {
        static C: std::sync::OnceLock<VerifiedConsensus> = std::sync::OnceLock::new();
        let c = C.get_or_init(|| synthetic(7));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let exit = want_exit.then(|| c.relays[(seed % 1000) as usize].id);
        let guard = want_guard
            .then(|| c.relays.iter().filter(|r| r.flags.contains(Flags::GUARD)).nth((seed % 300) as usize).map(|r| r.id))
            .flatten()
            .filter(|g| exit.is_none_or(|e| !related(c.relay(g).unwrap(), c.relay(&e).unwrap())));
        let path = choose_path(c, 3, guard.as_ref(), exit.as_ref(), &HashSet::new(), &mut rng).unwrap();
        prop_assert_eq!(path.len(), 3);
        check_rules(&path);
        if let Some(e) = exit {
            prop_assert_eq!(path[2].id, e);
        }
        if let Some(g) = guard {
            prop_assert_eq!(path[0].id, g);
        } else {
            prop_assert!(path[0].flags.contains(Flags::GUARD));
        }
    }
}

/// Middle hops: over 200,000 draws, each bandwidth class is chosen in proportion to its
/// share of total bandwidth, within 2% (relative) for every class (fixed seed).
#[test]
fn selection_frequency_tracks_bandwidth() {
    let c = synthetic(11);
    let mut rng = rand::rngs::StdRng::seed_from_u64(12345);
    let all: Vec<&RelayEntry> = c.relays.iter().collect();
    let draws = 200_000u32;
    let mut hits = std::collections::HashMap::<u64, u32>::new();
    for _ in 0..draws {
        let r = weighted_pick(&all, 50_000, &mut rng).unwrap();
        *hits.entry(r.bandwidth).or_default() += 1;
    }
    let total: u64 = c.relays.iter().map(|r| r.bandwidth).sum();
    let mut by_class = std::collections::HashMap::<u64, u64>::new();
    for r in &c.relays {
        *by_class.entry(r.bandwidth).or_default() += r.bandwidth;
    }
    // Group classes into ten buckets of similar expected share so each has many draws.
    let mut classes: Vec<(u64, u64)> = by_class.into_iter().collect();
    classes.sort();
    for chunk in classes.chunks(classes.len().div_ceil(10)) {
        let expected: f64 = chunk
            .iter()
            .map(|(_, w)| *w as f64 / total as f64)
            .sum::<f64>()
            * f64::from(draws);
        let observed: f64 = chunk
            .iter()
            .map(|(bw, _)| f64::from(*hits.get(bw).unwrap_or(&0)))
            .sum();
        let err = (observed - expected).abs() / expected;
        assert!(
            err < 0.02,
            "bandwidth bucket {:?}: expected {expected:.0}, observed {observed}",
            chunk.first()
        );
    }
    // And the heaviest relay is chosen about 100x as often as the lightest.
    let lightest = c.relays.iter().map(|r| r.bandwidth).min().unwrap();
    let heaviest = c.relays.iter().map(|r| r.bandwidth).max().unwrap();
    assert_eq!(heaviest / lightest, 1000);
}

#[test]
fn full_paths_use_bandwidth_too() {
    // Across whole paths, a relay's chance of being picked grows with its bandwidth.
    let c = synthetic(3);
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut count = std::collections::HashMap::<RelayId, u32>::new();
    for _ in 0..20_000 {
        for r in choose_path(&c, 3, None, None, &HashSet::new(), &mut rng).unwrap() {
            *count.entry(r.id).or_default() += 1;
        }
    }
    let heavy: Vec<_> = c.relays.iter().filter(|r| r.bandwidth >= 500_000).collect();
    let light: Vec<_> = c.relays.iter().filter(|r| r.bandwidth <= 10_000).collect();
    let avg = |rs: &[&RelayEntry]| {
        rs.iter()
            .map(|r| f64::from(*count.get(&r.id).unwrap_or(&0)))
            .sum::<f64>()
            / rs.len() as f64
    };
    assert!(
        avg(&heavy) > 20.0 * avg(&light),
        "heavy {} light {}",
        avg(&heavy),
        avg(&light)
    );
}

#[test]
fn impossible_requests_are_clear_errors() {
    let c = synthetic(5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ghost = RelayId([0xee; 20]);
    assert_eq!(
        choose_path(&c, 3, None, Some(&ghost), &HashSet::new(), &mut rng).err(),
        Some(PathError::ExitUnavailable(ghost))
    );
    let everyone: HashSet<RelayId> = c.relays.iter().map(|r| r.id).collect();
    assert!(matches!(
        choose_path(&c, 3, None, None, &everyone, &mut rng),
        Err(PathError::NotEnoughRelays { .. })
    ));
}

#[test]
fn capped_weights_hold_every_relay_to_the_share() {
    // Nothing above the share: unchanged (0 counts as 1).
    assert_eq!(capped_weights(&[10, 20, 0], 700_000), vec![10, 20, 1]);
    // 20 of 31 is more than half: capped at 11, which is half of 10 + 11 + 1.
    assert_eq!(capped_weights(&[10, 20, 0], 500_000), vec![10, 11, 1]);
    // One huge relay among 99 of weight 1,000, at 5%: its weight is capped so that it holds
    // exactly 5% of the total.
    let mut w = vec![1_000u64; 99];
    w.push(u64::MAX);
    let c = capped_weights(&w, 50_000);
    let total: u128 = c.iter().sum();
    assert_eq!(c[..99], vec![1_000u128; 99][..]);
    assert!(c[99] * 1_000_000 <= 50_000 * total, "{} of {total}", c[99]);
    assert!((c[99] + 1) * 1_000_000 > 50_000 * total);
    // Several heavy relays: each ends at the same cap, and none above the share.
    let mut w = vec![10u64; 50];
    w.extend([1_000_000, 2_000_000, 3_000_000]);
    let c = capped_weights(&w, 100_000);
    let total: u128 = c.iter().sum();
    assert!(c.iter().all(|x| x * 1_000_000 <= 100_000 * total));
    assert_eq!(c[50], c[52]);
    // Too few relays for the share: all equal.
    assert_eq!(capped_weights(&[5, 1_000_000, 7], 100_000), vec![1, 1, 1]);
}

/// Review finding 4: a relay whose weight is absurd (a declared `u64::MAX` that reached the
/// consensus, or a huge measurement) is drawn no more often than the share cap allows.
#[test]
fn an_absurd_weight_is_drawn_no_more_than_its_capped_share() {
    let mut c = synthetic(21).into_inner();
    let liar = c.relays[17].id;
    c.relays[17].bandwidth = u64::MAX;
    let all: Vec<&RelayEntry> = c.relays.iter().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let draws = 100_000u32;
    let hits = (0..draws)
        .filter(|_| {
            weighted_pick(&all, c.params.max_share_ppm, &mut rng)
                .unwrap()
                .id
                == liar
        })
        .count();
    let share = hits as f64 / f64::from(draws);
    assert!(share <= 0.05 + 0.003, "drawn {share:.4} of the time");
    assert!(
        share >= 0.05 - 0.005,
        "capped at the share, not below: {share:.4}"
    );
    // Whole paths: it is in at most its share of each position.
    let c = VerifiedConsensus::assume_verified(c);
    let mut in_paths = 0;
    for _ in 0..20_000 {
        let path = choose_path(&c, 3, None, None, &HashSet::new(), &mut rng).unwrap();
        in_paths += path.iter().filter(|r| r.id == liar).count();
    }
    assert!(
        f64::from(in_paths as u32) / 60_000.0 <= 0.05 + 0.005,
        "{in_paths}"
    );
}
