//! The consensus computation from digests: a minority of votes can set no field of an entry,
//! weights are measured or capped, the Sybil limit keeps the longest known relays, and the
//! result does not depend on the order of the votes.

use super::*;
use proptest::prelude::*;
use shallot_crypto::keys::IdentityKeypair;
use shallot_proto::dir::descriptor::descriptor_digest;

const PERIOD: Period = Period {
    valid_after: 100_000,
    fresh_until: 100_010,
    valid_until: 100_030,
};
const PARAMS: ComputeParams = ComputeParams {
    consensus: ConsensusParams {
        epoch_secs: 60,
        max_share_ppm: 50_000,
    },
    unmeasured_weight_cap: 500,
    descriptor_max_age_secs: 1000,
};
const RV: Flags = Flags::from_bits(Flags::RUNNING.bits() | Flags::VALID.bits());

fn identity(seed: u8) -> IdentityKeypair {
    IdentityKeypair::from_secret_bytes(&[seed; 32])
}

/// A descriptor of relay `seed`, signed by `signer` (normally the relay itself).
fn descriptor(
    seed: u8,
    signer: u8,
    ip: [u8; 4],
    bw: u64,
    published: u64,
) -> (RelayDescriptor, [u8; 32]) {
    let key = identity(signer);
    let d = RelayDescriptor {
        nickname: format!("r{seed}"),
        address: (ip, 9000 + u16::from(seed)).into(),
        identity: key.public(),
        ntor_key: [seed; 32],
        link_key: [seed; 32],
        bandwidth: bw,
        family: vec![],
        mailbox: false,
        published,
    };
    let text = d.sign(&key).unwrap();
    (
        RelayDescriptor::parse_and_verify(&text).unwrap(),
        descriptor_digest(&text),
    )
}

fn id(seed: u8) -> RelayId {
    identity(seed).relay_id()
}

fn ve(seed: u8, digest: [u8; 32], since: u64, measured: Option<u64>, flags: Flags) -> VoteEntry {
    VoteEntry {
        id: id(seed),
        descriptor: digest,
        known_since: since,
        measured,
        flags,
    }
}

fn vote(auth: u8, mut relays: Vec<VoteEntry>) -> Vote {
    relays.sort_by_key(|e| e.id);
    Vote {
        authority: identity(200 + auth).public(),
        valid_after: PERIOD.valid_after,
        fresh_until: PERIOD.fresh_until,
        valid_until: PERIOD.valid_until,
        commit: [auth; 32],
        reveal: None,
        relays,
    }
}

fn compute(votes: &[Vote], n: usize, ds: &Descriptors) -> Consensus {
    compute_consensus(votes, n, PERIOD, &PARAMS, ds, SharedRandom::default(), None).unwrap()
}

/// Whether a consensus entry carries exactly the descriptor's fields.
fn same_fields(e: &RelayEntry, d: &RelayDescriptor) -> bool {
    e.id == d.fingerprint()
        && e.nickname == d.nickname
        && e.address == d.address
        && e.ntor_key == d.ntor_key
        && e.link_key == d.link_key
        && e.family == d.family
}

fn held(list: &[(RelayDescriptor, [u8; 32])]) -> Descriptors {
    list.iter().map(|(d, h)| (*h, d.clone())).collect()
}

#[test]
fn lists_only_a_descriptor_named_by_a_majority_of_all_authorities() {
    let (a, da) = descriptor(1, 1, [10, 0, 0, 1], 100, 99_000);
    let (b, db) = descriptor(2, 2, [10, 0, 0, 2], 100, 99_000);
    let ds = held(&[(a.clone(), da), (b, db)]);
    let votes = [
        vote(0, vec![ve(1, da, 5, None, RV), ve(2, db, 5, None, RV)]),
        vote(1, vec![ve(1, da, 5, None, RV)]),
    ];
    let c = compute(&votes, 3, &ds);
    assert_eq!(c.relays.len(), 1);
    assert_eq!(c.relays[0].id, a.fingerprint());
    // With 4 configured authorities, 2 votes are not more than half.
    assert!(compute(&votes, 4, &ds).relays.is_empty());
    // Two votes naming two different descriptors of one relay: no majority, not listed.
    let (a2, da2) = descriptor(1, 1, [10, 0, 0, 1], 100, 99_001);
    let ds = held(&[(a, da), (a2, da2)]);
    let split = [
        vote(0, vec![ve(1, da, 5, None, RV)]),
        vote(1, vec![ve(1, da2, 5, None, RV)]),
    ];
    assert!(compute(&split, 3, &ds).relays.is_empty());
}

/// Review finding 1: one authority (or two of five) naming a forged descriptor, newer, with
/// another address and keys, changes no field.
#[test]
fn a_minority_cannot_change_any_field() {
    let (honest, dh) = descriptor(1, 1, [10, 0, 0, 1], 1000, 99_000);
    // The rogue's "descriptor" for relay 1: signed by the rogue's own key, so it is not relay
    // 1's (a rogue cannot sign as the relay); later published, other address and keys.
    let (forged, df) = descriptor(1, 66, [10, 9, 9, 9], u64::MAX, 99_999);
    let ds = held(&[(honest.clone(), dh), (forged, df)]);
    for (n, rogues) in [(3usize, 1usize), (5, 2)] {
        let mut votes = Vec::new();
        for a in 0..n {
            let e = if a < rogues {
                ve(1, df, 0, Some(u64::MAX), RV | Flags::GUARD)
            } else {
                ve(1, dh, 50, Some(700), RV)
            };
            votes.push(vote(a as u8, vec![e]));
        }
        let c = compute(&votes, n, &ds);
        assert_eq!(c.relays.len(), 1, "{n}");
        let e = &c.relays[0];
        assert_eq!(e.address, honest.address);
        assert_eq!(e.ntor_key, honest.ntor_key);
        assert_eq!(e.link_key, honest.link_key);
        assert_eq!(e.nickname, honest.nickname);
        assert_eq!(e.flags, RV);
        assert_eq!(e.bandwidth, 700);
        // Even when the rogues name a digest of nothing held (the forged text never
        // verifies), the honest majority carries the relay.
        let unknown: Vec<Vote> = votes
            .iter()
            .map(|v| {
                let mut v = v.clone();
                for e in &mut v.relays {
                    if e.descriptor == df {
                        e.descriptor = [0xee; 32];
                    }
                }
                v
            })
            .collect();
        assert_eq!(compute(&unknown, n, &ds).relays[0].address, honest.address);
    }
    // A majority naming a descriptor that is not the relay's own (wrong fingerprint) lists
    // nothing: the entry would not be the relay's.
    let votes: Vec<Vote> = (0..3)
        .map(|a| vote(a, vec![ve(1, df, 0, None, RV)]))
        .collect();
    assert!(compute(&votes, 3, &ds).relays.is_empty());
}

#[test]
fn published_must_be_within_the_age_limit_before_valid_after() {
    for (published, listed) in [
        (PERIOD.valid_after + 1, false),
        (PERIOD.valid_after, true),
        (PERIOD.valid_after - 1000, true),
        (PERIOD.valid_after - 1001, false),
    ] {
        let (d, h) = descriptor(1, 1, [10, 0, 0, 1], 10, published);
        let ds = held(&[(d, h)]);
        let votes: Vec<Vote> = (0..2)
            .map(|a| vote(a, vec![ve(1, h, 5, None, RV)]))
            .collect();
        assert_eq!(
            !compute(&votes, 3, &ds).relays.is_empty(),
            listed,
            "{published}"
        );
    }
}

#[test]
fn weight_is_the_measured_low_median_or_a_capped_declaration() {
    let (d, h) = descriptor(1, 1, [10, 0, 0, 1], 10_000, 99_000);
    let ds = held(&[(d, h)]);
    let weight = |measured: [Option<u64>; 3]| {
        let votes: Vec<Vote> = measured
            .iter()
            .enumerate()
            .map(|(a, m)| vote(a as u8, vec![ve(1, h, 5, *m, RV)]))
            .collect();
        compute(&votes, 3, &ds).relays[0].bandwidth
    };
    assert_eq!(weight([Some(300), Some(100), Some(200)]), 200);
    // Two measurements: the lower, so one authority cannot raise it.
    assert_eq!(weight([Some(300), Some(u64::MAX), None]), 300);
    // One measurement of three is not enough: the declared figure, capped.
    assert_eq!(weight([Some(9_000), None, None]), 500);
    assert_eq!(weight([None, None, None]), 500);
    // A measurement above the declared figure is capped by it.
    assert_eq!(weight([Some(50_000), Some(60_000), None]), 10_000);
    let (small, hs) = descriptor(2, 2, [10, 0, 0, 2], 40, 99_000);
    let ds = held(&[(small, hs)]);
    let votes: Vec<Vote> = (0..2)
        .map(|a| vote(a, vec![ve(2, hs, 5, None, RV)]))
        .collect();
    assert_eq!(compute(&votes, 3, &ds).relays[0].bandwidth, 40);
}

#[test]
fn steady_weight_keeps_the_base_within_its_band_only() {
    // Within 20 % of the computed weight, below the declared: the base's weight stays.
    assert_eq!(steady_weight(Some(1000), 900, 10_000), 1000);
    assert_eq!(steady_weight(Some(1000), 1200, 10_000), 1000);
    assert_eq!(steady_weight(Some(1200), 1000, 10_000), 1200);
    assert_eq!(steady_weight(Some(800), 1000, 10_000), 800);
    // Outside the band, above the declared figure, or no base: the computed weight.
    assert_eq!(steady_weight(Some(1201), 1000, 10_000), 1000);
    assert_eq!(steady_weight(Some(799), 1000, 10_000), 1000);
    assert_eq!(steady_weight(Some(1000), 900, 950), 900);
    assert_eq!(steady_weight(None, 900, 10_000), 900);
    assert_eq!(steady_weight(Some(u64::MAX), u64::MAX, u64::MAX), u64::MAX);
}

#[test]
fn a_vote_gives_a_measurement_two_significant_figures() {
    for (measured, voted) in [
        (0, 0),
        (7, 7),
        (99, 99),
        (100, 100),
        (104, 100),
        (105, 110),
        (149, 150),
        (994, 990),
        (995, 1000),
        (1_234_567, 1_200_000),
        (8_773_333, 8_800_000),
        (u64::MAX, 18_000_000_000_000_000_000),
    ] {
        assert_eq!(rounded_measurement(measured), voted, "{measured}");
    }
}

proptest! {
    #[test]
    fn a_rounded_measurement_is_within_5_percent_and_stays_put(
        v in any::<u64>(),
        shift in 0u32..64,
    ) {
        // Every magnitude alike, not mostly values past 10^17.
        let v = v >> shift;
        let r = rounded_measurement(v);
        prop_assert!(u128::from(r.abs_diff(v)) * 100 <= u128::from(v) * 5, "{} -> {}", v, r);
        prop_assert_eq!(rounded_measurement(r), r);
        prop_assert!(rounded_measurement(v.saturating_add(1)) >= r);
    }
}

/// The base consensus keeps a measured weight steady against noise, but cannot carry rogues
/// further than 20 % above the weight the measurements give, nor steady an unmeasured one.
#[test]
fn a_base_weight_is_kept_only_near_the_measured_one() {
    let (d, h) = descriptor(1, 1, [10, 0, 0, 1], 10_000, 99_000);
    let ds = held(&[(d, h)]);
    let with_base = |measured: [Option<u64>; 3], base_weight: u64| {
        let votes: Vec<Vote> = measured
            .iter()
            .enumerate()
            .map(|(a, m)| vote(a as u8, vec![ve(1, h, 5, *m, RV)]))
            .collect();
        let mut base = compute(&votes, 3, &ds);
        base.relays[0].bandwidth = base_weight;
        compute_consensus(
            &votes,
            3,
            PERIOD,
            &PARAMS,
            &ds,
            SharedRandom::default(),
            Some(&base),
        )
        .unwrap()
        .relays[0]
            .bandwidth
    };
    // Honest measurements 1,000 and 1,100, one rogue claiming the maximum: rule 4 gives
    // 1,100, and a base within [880, 1,320] stays.
    let votes = [Some(1000), Some(1100), Some(u64::MAX)];
    assert_eq!(with_base(votes, 1150), 1150);
    assert_eq!(with_base(votes, 900), 900);
    assert_eq!(with_base(votes, 1320), 1320);
    // Beyond the band (say, from when the relay was faster) the measurement wins, so the
    // rogue gains at most 20 % over what it cannot raise, never its maximum.
    assert_eq!(with_base(votes, 1321), 1100);
    assert_eq!(with_base(votes, 9000), 1100);
    assert_eq!(with_base(votes, 879), 1100);
    assert_eq!(with_base([Some(1000), None, Some(u64::MAX)], 9_000), 1000);
    // Unmeasured (the capped declaration): the base plays no part.
    assert_eq!(with_base([None, None, Some(u64::MAX)], 450), 500);
}

/// Review finding 3: the two-per-IP rule keeps the longest-known relays, whatever bandwidth
/// the newcomers declare or are measured at.
#[test]
fn the_sybil_limit_keeps_the_longest_known() {
    let ip = [10, 1, 1, 1];
    let (old, d1) = descriptor(1, 1, ip, 50, 99_000);
    let (mid, d2) = descriptor(2, 2, ip, 50, 99_000);
    let (new3, d3) = descriptor(3, 3, ip, u64::MAX, 99_000);
    let (new4, d4) = descriptor(4, 4, ip, u64::MAX, 99_000);
    let ds = held(&[(old.clone(), d1), (mid.clone(), d2), (new3, d3), (new4, d4)]);
    let entries = |rogue_since: u64| {
        vec![
            ve(1, d1, 1_000, Some(50), RV | Flags::GUARD),
            ve(2, d2, 2_000, Some(50), RV),
            ve(3, d3, rogue_since, Some(u64::MAX), RV | Flags::MAILBOX),
            ve(4, d4, rogue_since, Some(u64::MAX), RV),
        ]
    };
    // Two honest authorities saw the newcomers only lately; a rogue claims it knew them
    // forever.
    let votes = [
        vote(0, entries(90_000)),
        vote(1, entries(90_000)),
        vote(2, entries(0)),
    ];
    let c = compute(&votes, 3, &ds);
    let running: Vec<RelayId> = c
        .relays
        .iter()
        .filter(|e| e.flags.contains(Flags::RUNNING))
        .map(|e| e.id)
        .collect();
    assert_eq!(running.len(), 2);
    assert!(running.contains(&old.fingerprint()) && running.contains(&mid.fingerprint()));
    let loser = c.relays.iter().find(|e| e.id == id(3)).unwrap();
    assert_eq!(loser.flags, Flags::VALID);
}

#[test]
fn refuses_duplicate_and_wrong_period_votes() {
    let v = vote(0, vec![]);
    let ds = Descriptors::new();
    let run = |votes: &[Vote]| {
        compute_consensus(
            votes,
            3,
            PERIOD,
            &PARAMS,
            &ds,
            SharedRandom::default(),
            None,
        )
    };
    assert!(matches!(
        run(&[v.clone(), v.clone()]),
        Err(ComputeError::DuplicateVote(_))
    ));
    let mut late = v;
    late.valid_after += 10;
    assert!(matches!(
        run(&[late]),
        Err(ComputeError::WrongPeriod { .. })
    ));
}

#[test]
fn needed_descriptors_are_those_a_majority_names() {
    let votes = [
        vote(
            0,
            vec![ve(1, [1; 32], 0, None, RV), ve(2, [2; 32], 0, None, RV)],
        ),
        vote(
            1,
            vec![ve(1, [1; 32], 0, None, RV), ve(2, [3; 32], 0, None, RV)],
        ),
    ];
    assert_eq!(needed_descriptors(&votes, 3), vec![[1; 32]]);
    assert!(needed_descriptors(&votes, 4).is_empty());
}

fn arb_votes() -> impl Strategy<Value = (Vec<Vote>, Descriptors)> {
    let relay = (
        0u8..12,
        0u8..2,
        0u64..1000,
        proptest::option::of(0u64..1000),
        0u8..64,
    );
    proptest::collection::vec(proptest::collection::vec(relay, 0..12), 1..5).prop_map(|votes| {
        let mut ds = Descriptors::new();
        let votes = votes
            .into_iter()
            .enumerate()
            .map(|(auth, relays)| {
                let mut entries: Vec<VoteEntry> = relays
                    .into_iter()
                    .map(|(seed, version, since, measured, bits)| {
                        let (d, h) = descriptor(
                            seed,
                            seed,
                            [10, 0, 0, seed % 3],
                            1000,
                            99_000 + u64::from(version),
                        );
                        ds.insert(h, d);
                        ve(seed, h, since, measured, Flags::from_bits(bits))
                    })
                    .collect();
                entries.sort_by_key(|e| e.id);
                entries.dedup_by_key(|e| e.id);
                vote(auth as u8, entries)
            })
            .collect();
        (votes, ds)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn deterministic_and_independent_of_vote_order(
        (votes, ds) in arb_votes(),
        extra in 0usize..3,
        rotate in 0usize..5,
    ) {
        let n = votes.len() + extra;
        let c1 = compute(&votes, n, &ds);
        let mut shuffled = votes.clone();
        shuffled.reverse();
        let k = rotate % shuffled.len();
        shuffled.rotate_left(k);
        let c2 = compute(&shuffled, n, &ds);
        prop_assert_eq!(c1.encode_body().unwrap(), c2.encode_body().unwrap());
        // Every listed relay's descriptor is named by a majority of all configured authorities.
        for e in &c1.relays {
            let count = votes
                .iter()
                .filter(|v| v.relays.iter().any(|r| r.id == e.id && same_fields(e, &ds[&r.descriptor])))
                .count();
            prop_assert!(count * 2 > n);
        }
    }
}

/// Votes for relay `seed` (descriptor `digest`): the first `rogues` of `n` authorities claim
/// every flag, a measurement of `u64::MAX` and known-since 0; `honest` more authorities say
/// Running and Valid, measured at 700, known since 90,000; the rest do not name it.
fn split_votes(
    seed: u8,
    digest: [u8; 32],
    rogues: usize,
    honest: usize,
) -> Vec<(usize, VoteEntry)> {
    let mut out = Vec::new();
    for a in 0..rogues {
        out.push((
            a,
            ve(seed, digest, 0, Some(u64::MAX), Flags::from_bits(0x3f)),
        ));
    }
    for a in rogues..rogues + honest {
        out.push((a, ve(seed, digest, 90_000, Some(700), RV)));
    }
    out
}

/// Attacker-role review, finding A: rogues that are a minority of all authorities but a
/// majority of the votes naming a relay's descriptor (their own relay, which uploaded to them
/// and to one honest authority only) set no flag, no weight and no known-since of their
/// choosing, and cannot push long-known honest relays out of Running through the per-IP
/// rule. Two rogues of five with one honest voter, and one rogue of three with one.
#[test]
fn rogues_naming_a_descriptor_with_few_honest_voters_set_nothing() {
    let ip = [10, 7, 7, 7];
    let (h1, d1) = descriptor(1, 1, ip, 1000, 99_000);
    let (h2, d2) = descriptor(2, 2, ip, 1000, 99_000);
    let (sybil, ds3) = descriptor(3, 3, ip, u64::MAX, 99_000);
    let ds = held(&[(h1.clone(), d1), (h2.clone(), d2), (sybil.clone(), ds3)]);
    for (n, rogues) in [(5usize, 2usize), (3, 1)] {
        // Every authority knows the honest relays, long since.
        let mut by_auth: Vec<Vec<VoteEntry>> = (0..n)
            .map(|_| {
                vec![
                    ve(1, d1, 50_000, Some(900), RV | Flags::GUARD),
                    ve(2, d2, 60_000, Some(900), RV | Flags::GUARD),
                ]
            })
            .collect();
        // The sybil is named by the rogues and by just enough honest authorities to be
        // listed.
        let honest = n / 2 + 1 - rogues;
        for (a, e) in split_votes(3, ds3, rogues, honest) {
            by_auth[a].push(e);
        }
        let votes: Vec<Vote> = by_auth
            .into_iter()
            .enumerate()
            .map(|(a, r)| vote(a as u8, r))
            .collect();
        let c = compute(&votes, n, &ds);
        let s = c
            .relays
            .iter()
            .find(|e| e.id == sybil.fingerprint())
            .unwrap();
        assert_eq!(s.flags, Flags::VALID, "{rogues} of {n}: the sybil's flags");
        assert_eq!(s.bandwidth, 700, "{rogues} of {n}: the sybil's weight");
        for h in [&h1, &h2] {
            let e = c.relays.iter().find(|e| e.id == h.fingerprint()).unwrap();
            assert_eq!(
                e.flags,
                RV | Flags::GUARD,
                "{rogues} of {n}: an honest relay"
            );
            assert_eq!(e.bandwidth, 900);
        }
    }
}

/// Every threshold counts all `n` configured authorities: with two of five absent, a flag
/// set by two of the three present is not set; a measurement by two of them is not enough.
#[test]
fn thresholds_count_all_configured_authorities() {
    let (d, h) = descriptor(1, 1, [10, 0, 0, 1], 10_000, 99_000);
    let ds = held(&[(d, h)]);
    let votes = [
        vote(0, vec![ve(1, h, 5, Some(800), RV | Flags::STABLE)]),
        vote(1, vec![ve(1, h, 5, Some(900), RV | Flags::STABLE)]),
        vote(2, vec![ve(1, h, 5, None, RV)]),
    ];
    let e = &compute(&votes, 5, &ds).relays[0];
    assert_eq!(e.flags, RV);
    assert_eq!(
        e.bandwidth, 500,
        "two measurements of five: the capped declaration"
    );
    // With three measurements of five, the lowest: two liars cannot raise it.
    let mut votes = votes;
    votes[2].relays[0].measured = Some(u64::MAX);
    votes[1].relays[0].measured = Some(u64::MAX);
    assert_eq!(compute(&votes, 5, &ds).relays[0].bandwidth, 800);
}

/// With every authority voting, the rules give what the old medians over the `k` voters
/// gave, for any `n`: an honest, complete network sees no change.
#[test]
fn a_full_honest_vote_gives_the_medians() {
    let (d, h) = descriptor(1, 1, [10, 0, 0, 1], 1_000_000, 99_000);
    let ds = held(&[(d, h)]);
    for n in 1..=7usize {
        let votes: Vec<Vote> = (0..n)
            .map(|a| {
                let x = a as u64 + 1;
                vote(a as u8, vec![ve(1, h, 1000 * x, Some(100 * x), RV)])
            })
            .collect();
        let c = compute(&votes, n, &ds);
        let e = &c.relays[0];
        assert_eq!(e.flags, RV);
        // Low median of 100, 200, …, 100n.
        assert_eq!(e.bandwidth, 100 * ((n as u64 - 1) / 2 + 1), "n = {n}");
    }
}
