//! Consensus diffs: round trips and refusals, by property and by hand (`docs/spec.md` §5.12).

use super::*;
use crate::dir::entry::tests::arb_entries;
use crate::dir::{ConsensusParams, Flags, SharedRandom};
use proptest::prelude::*;
use shallot_crypto::keys::IdentityKeypair;

fn signed(valid_after: u64, relays: Vec<RelayEntry>, key: &IdentityKeypair) -> Consensus {
    let mut c = Consensus {
        valid_after,
        fresh_until: valid_after + 3600,
        valid_until: valid_after + 10800,
        params: ConsensusParams {
            epoch_secs: 86400,
            max_share_ppm: 50_000,
        },
        shared_rand: SharedRandom {
            previous: None,
            current: [valid_after as u8; 32],
            epochs: vec![],
            commits: vec![(key.public(), [9; 32])],
        },
        relays,
        signatures: vec![],
    };
    let sig = c.sign_body(key).unwrap();
    c.add_signature(key.public(), sig);
    c
}

fn key() -> IdentityKeypair {
    IdentityKeypair::from_secret_bytes(&[7; 32])
}

/// `target`'s relays: `base`'s with some dropped, some edited, and `added` merged in.
fn evolve(base: &[RelayEntry], added: Vec<RelayEntry>, choices: &[u8]) -> Vec<RelayEntry> {
    let mut out: Vec<RelayEntry> = Vec::new();
    for (i, e) in base.iter().enumerate() {
        let mut e = e.clone();
        match choices.get(i).copied().unwrap_or(0) % 7 {
            0 => continue,
            1 => e.bandwidth = e.bandwidth.wrapping_add(1),
            2 => e.flags = Flags::from_bits(e.flags.bits() ^ 1),
            3 => e.ntor_key[0] ^= 1,
            4 => {
                e.bandwidth = e.bandwidth.wrapping_add(1);
                e.flags = Flags::from_bits(e.flags.bits() ^ 1);
            }
            _ => {}
        }
        out.push(e);
    }
    out.extend(added);
    out.sort_by_key(|e| e.id);
    out.dedup_by_key(|e| e.id);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn apply_of_diff_gives_the_target(
        a in arb_entries(12),
        b in arb_entries(6),
        choices in proptest::collection::vec(any::<u8>(), 12),
    ) {
        let base = signed(3600, a.clone(), &key());
        let target = signed(7200, evolve(&a, b, &choices), &key());
        let diff = consensus_diff(&base, &target).unwrap();
        let out = apply_diff(&base.encode().unwrap(), &diff).unwrap();
        prop_assert_eq!(&out, &target.encode().unwrap());
        prop_assert_eq!(Consensus::parse(&out).unwrap(), target);
    }

    /// Arbitrary bytes, alone or after a true start (the name and the base's digest, and
    /// then a true header, so that the operations are read against the base's entries).
    #[test]
    fn arbitrary_diffs_never_panic(
        a in arb_entries(8),
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let base = signed(3600, a, &key());
        let text = base.encode().unwrap();
        let _ = apply_diff(&text, &bytes);
        let mut named = DIFF_MAGIC.to_vec();
        named.extend_from_slice(&base.body_digest());
        named.extend_from_slice(&bytes);
        let _ = apply_diff(&text, &named);
        let mut headed = consensus_diff(&base, &base).unwrap();
        headed.truncate(ops_start(&headed));
        headed.extend_from_slice(&bytes);
        let _ = apply_diff(&text, &headed);
    }

    /// A diff changed anywhere, or cut short, is refused, or rebuilds the very body it
    /// names (a change in the signature lines is for the signature check to catch).
    #[test]
    fn a_changed_diff_is_refused_or_rebuilds_its_target(
        a in arb_entries(8),
        b in arb_entries(4),
        choices in proptest::collection::vec(any::<u8>(), 8),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        cut in any::<bool>(),
    ) {
        let base = signed(3600, a.clone(), &key());
        let target = signed(7200, evolve(&a, b, &choices), &key());
        let mut diff = consensus_diff(&base, &target).unwrap();
        let i = at.index(diff.len());
        if cut {
            diff.truncate(i);
        } else {
            diff[i] ^= xor;
        }
        if let Ok(out) = apply_diff(&base.encode().unwrap(), &diff) {
            prop_assert_eq!(text_body_digest(&out), target.body_digest());
        }
    }

    #[test]
    fn weights_round_trip_in_one_form(digits in 1u64..1000, power in 0u32..20) {
        let v = digits.saturating_mul(10u64.saturating_pow(power));
        let mut out = Vec::new();
        put_weight(&mut out, v);
        let mut r = Reader::new(&out);
        prop_assert_eq!(weight(&mut r), Ok(v));
        prop_assert!(r.finish().is_ok());
        // With one zero more in the digits and one power of ten less, it is refused.
        if out[0] > 0 {
            let mut longer = vec![out[0] - 1];
            put_varint(&mut longer, (v / 10u64.pow(u32::from(out[0]))) * 10);
            prop_assert!(weight(&mut Reader::new(&longer)).is_err());
        }
    }

    #[test]
    fn varints_round_trip_in_one_form(v in any::<u64>()) {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        let mut r = Reader::new(&out);
        prop_assert_eq!(varint(&mut r), Ok(v));
        prop_assert!(r.finish().is_ok());
        // The same value with a needless zero byte is refused.
        let last = out.len() - 1;
        out[last] |= 0x80;
        out.push(0);
        prop_assert!(varint(&mut Reader::new(&out)).is_err());
    }
}

#[test]
fn numbers_over_64_bits_are_refused() {
    let mut over = vec![0xff; 9];
    over.push(0x02);
    assert_eq!(
        varint(&mut Reader::new(&over)),
        Err("a number over 64 bits")
    );
    let mut max = vec![0xff; 9];
    max.push(0x01);
    assert_eq!(varint(&mut Reader::new(&max)), Ok(u64::MAX));
    assert!(varint(&mut Reader::new(&[0x80; 11])).is_err());
}

fn pair() -> (Consensus, Consensus) {
    let k = key();
    let relays: Vec<RelayEntry> = (0..4u8)
        .map(|i| {
            let id = IdentityKeypair::from_secret_bytes(&[i + 1; 32]).public();
            RelayEntry {
                id: shallot_crypto::keys::RelayId::of(&id),
                nickname: format!("r{i}"),
                address: ([10, 0, 0, i + 1], 9000).into(),
                bandwidth: 1000,
                ntor_key: [i; 32],
                link_key: [i; 32],
                flags: Flags::RUNNING | Flags::VALID,
                family: vec![],
            }
        })
        .collect();
    let mut relays: Vec<RelayEntry> = relays;
    relays.sort_by_key(|e| e.id);
    let base = signed(3600, relays.clone(), &k);
    relays[1].bandwidth = 2000;
    relays.remove(3);
    (base, signed(7200, relays, &k))
}

/// `target` signed again after its relays were changed.
fn resigned(mut target: Consensus) -> Consensus {
    target.signatures.clear();
    let sig = target.sign_body(&key()).unwrap();
    target.add_signature(key().public(), sig);
    target
}

/// Where the operations of `diff` start (after the magic, the digests and the header).
fn ops_start(diff: &[u8]) -> usize {
    let at = DIFF_MAGIC.len() + 64;
    let len = u32::from_be_bytes(diff[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + len
}

/// The offset of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// Keep 1, new weight 2000 (2 × 10³); keep 1, drop 1; keep 0, end.
const PAIR_OPS: [u8; 9] = [1, b'w', 3, 2, 1, b'd', 1, 0, b'e'];

#[test]
fn small_changes_give_small_operations() {
    let (base, target) = pair();
    let diff = consensus_diff(&base, &target).unwrap();
    assert!(diff.starts_with(b"shallot-consensus-diff 5\n"));
    let at = ops_start(&diff);
    assert_eq!(diff[at..at + PAIR_OPS.len()], PAIR_OPS);
    assert_eq!(
        apply_diff(&base.encode().unwrap(), &diff).unwrap(),
        target.encode().unwrap()
    );
}

#[test]
fn a_rotated_onion_key_costs_its_bytes_and_no_new_entry() {
    let (base, mut target) = pair();
    target.relays[0].ntor_key = [0xab; 32];
    let target = resigned(target);
    let diff = consensus_diff(&base, &target).unwrap();
    let mut op = vec![0, b'k'];
    op.extend_from_slice(&[0xab; 32]);
    op.extend_from_slice(&[3, 1, (Flags::RUNNING | Flags::VALID).bits()]);
    let at = ops_start(&diff);
    assert_eq!(diff[at..at + op.len()], op[..]);
    assert!(find(&diff[at..], &[0, b'a']).is_none());
    let base_text = base.encode().unwrap();
    assert_eq!(
        apply_diff(&base_text, &diff).unwrap(),
        target.encode().unwrap()
    );
    // Cut inside the key, the diff is refused.
    assert!(matches!(
        apply_diff(&base_text, &diff[..at + 20]),
        Err(DocError::MalformedDiff {
            reason: "the diff ends inside a key",
            ..
        })
    ));
}

#[test]
fn new_flags_alone_cost_only_the_flags() {
    let (base, mut target) = pair();
    target.relays[0].flags = Flags::RUNNING | Flags::VALID | Flags::GUARD;
    let target = resigned(target);
    let diff = consensus_diff(&base, &target).unwrap();
    let at = ops_start(&diff);
    let bits = target.relays[0].flags.bits();
    assert_eq!(diff[at..at + 3], [0, b's', bits]);
    let base_text = base.encode().unwrap();
    assert_eq!(
        apply_diff(&base_text, &diff).unwrap(),
        target.encode().unwrap()
    );
    // An unknown flag bit is refused, and so is a text diff of an earlier version.
    let mut unknown = diff.clone();
    unknown[at + 2] |= 0x40;
    assert!(matches!(
        apply_diff(&base_text, &unknown),
        Err(DocError::MalformedDiff {
            reason: "unknown flag bits",
            ..
        })
    ));
    let v3 = format!(
        "shallot-consensus-diff 3\nfrom {}\n",
        hex::encode(&base.body_digest())
    );
    assert!(matches!(
        apply_diff(&base_text, v3.as_bytes()),
        Err(DocError::MalformedDiff { offset: 0, .. })
    ));
}

#[test]
fn a_new_relay_is_added_whole_and_checked() {
    let (base, mut target) = pair();
    let id = IdentityKeypair::from_secret_bytes(&[9; 32]).public();
    target.relays.push(RelayEntry {
        id: shallot_crypto::keys::RelayId::of(&id),
        nickname: "newcomer".into(),
        address: "[2001:db8::1]:443".parse().unwrap(),
        bandwidth: 5_500_000,
        ntor_key: [0x11; 32],
        link_key: [0x22; 32],
        flags: Flags::RUNNING | Flags::VALID | Flags::FAST,
        family: vec![target.relays[0].id],
    });
    target.relays.sort_by_key(|e| e.id);
    let target = resigned(target);
    let diff = consensus_diff(&base, &target).unwrap();
    let base_text = base.encode().unwrap();
    assert_eq!(
        apply_diff(&base_text, &diff).unwrap(),
        target.encode().unwrap()
    );
    // Its nickname turned into one no consensus holds: refused before any digest.
    let nick = find(&diff, b"newcomer").unwrap();
    let mut bad = diff.clone();
    bad[nick] = b' ';
    assert!(matches!(
        apply_diff(&base_text, &bad),
        Err(DocError::MalformedDiff {
            reason: "a new entry that no consensus could hold",
            ..
        })
    ));
    // An address family other than 4 or 6.
    let mut bad = diff.clone();
    bad[nick + 8 + 20] = 5;
    assert!(matches!(
        apply_diff(&base_text, &bad),
        Err(DocError::MalformedDiff {
            reason: "an address family other than 4 or 6",
            ..
        })
    ));
}

#[test]
fn refuses_another_base_a_wrong_target_and_bad_counts() {
    let (base, target) = pair();
    let base_text = base.encode().unwrap();
    let diff = consensus_diff(&base, &target).unwrap();
    let at = ops_start(&diff);
    let with_ops = |ops: &[u8]| {
        let mut d = diff[..at].to_vec();
        d.extend_from_slice(ops);
        d.extend_from_slice(&diff[at + PAIR_OPS.len()..]);
        d
    };
    assert_eq!(with_ops(&PAIR_OPS), diff);
    // A diff from another consensus.
    let other = signed(1800, vec![], &key()).encode().unwrap();
    assert!(matches!(
        apply_diff(&other, &diff),
        Err(DocError::DiffMismatch("it is not from the consensus held"))
    ));
    // A diff whose operations do not rebuild the body it names.
    assert!(matches!(
        apply_diff(
            &base_text,
            &with_ops(&[1, b'w', 0, 0xd1, 0x0f, 1, b'd', 1, 0, b'e'])
        ),
        Err(DocError::DiffMismatch(_))
    ));
    let refused = |ops: &[u8], why: &str| match apply_diff(&base_text, &with_ops(ops)) {
        Err(DocError::MalformedDiff { reason, .. }) => assert_eq!(reason, why),
        other => panic!("{ops:?}: {other:?}"),
    };
    // Using more entries than the base has, or fewer; a drop of none; a number in two
    // bytes where one does.
    refused(
        &[1, b'w', 3, 2, 1, b'd', 2, 0, b'e'],
        "a drop of none, or of entries the base lacks",
    );
    refused(
        &[1, b'w', 3, 2, 1, b'd', 0, 0, b'e'],
        "a drop of none, or of entries the base lacks",
    );
    refused(
        &[1, b'w', 3, 2, 3, b'e'],
        "the diff uses more entries than the base has",
    );
    refused(
        &[1, b'w', 3, 2, 1, b'e'],
        "the diff leaves base entries unused",
    );
    refused(
        &[0x81, 0, b'w', 3, 2, 1, b'd', 1, 0, b'e'],
        "a number not in its shortest form",
    );
    refused(&[1, b'x'], "unknown diff operation");
    // 2000 as 200 × 10 or 2000 × 1, and a weight past 64 bits.
    refused(
        &[1, b'w', 1, 0xc8, 0x01, 1, b'd', 1, 0, b'e'],
        "a weight not in its shortest form",
    );
    refused(
        &[1, b'w', 0, 0xd0, 0x0f, 1, b'd', 1, 0, b'e'],
        "a weight not in its shortest form",
    );
    refused(&[1, b'w', 20, 1], "a weight over 64 bits");
    refused(
        &[4, b'w', 3, 2, 0, b'e'],
        "the diff edits an entry the base lacks",
    );
    // Bytes after the signatures, and signature text that is not signature lines.
    let mut extra = diff.clone();
    extra.push(0);
    assert!(matches!(
        apply_diff(&base_text, &extra),
        Err(DocError::MalformedDiff {
            reason: "bytes after the signatures",
            ..
        })
    ));
    let sigs = find(&diff, b"directory-signature ").unwrap();
    let mut forged = diff.clone();
    forged[sigs] = b'r';
    assert!(matches!(
        apply_diff(&base_text, &forged),
        Err(DocError::MalformedDiff { .. })
    ));
    assert!(apply_diff(&base_text, &diff).is_ok());
}

#[test]
fn a_header_or_signatures_out_of_their_place_are_refused() {
    let (base, target) = pair();
    let base_text = base.encode().unwrap();
    let diff = consensus_diff(&base, &target).unwrap();
    let at = DIFF_MAGIC.len() + 64;
    let header_len = u32::from_be_bytes(diff[at..at + 4].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&diff[at + 4..at + 4 + header_len]).unwrap();
    let sigs = find(&diff, b"directory-signature ").unwrap();
    let signature_lines = std::str::from_utf8(&diff[sigs..]).unwrap();
    let with = |header: &str, signatures: &str| {
        let mut d = diff[..at].to_vec();
        d.extend_from_slice(&(header.len() as u32).to_be_bytes());
        d.extend_from_slice(header.as_bytes());
        d.extend_from_slice(&diff[at + 4 + header_len..sigs - 4]);
        d.extend_from_slice(&(signatures.len() as u32).to_be_bytes());
        d.extend_from_slice(signatures.as_bytes());
        d
    };
    assert_eq!(with(header, signature_lines), diff);
    let refused = |d: Vec<u8>, why: &str| match apply_diff(&base_text, &d) {
        Err(DocError::MalformedDiff { reason, .. }) => assert_eq!(reason, why),
        other => panic!("{other:?}"),
    };
    let head = "a header that is not lines of a consensus's head";
    // A signature line in the header would end the body there, before the entries.
    refused(
        with(&format!("{header}{signature_lines}"), signature_lines),
        head,
    );
    refused(with(&format!("{header}r x\n"), signature_lines), head);
    refused(with(header.trim_end_matches('\n'), signature_lines), head);
    let sigs_why = "signatures that are not `directory-signature` lines";
    refused(with(header, ""), sigs_why);
    refused(
        with(header, &format!("{signature_lines}valid-after 1\n")),
        sigs_why,
    );
    refused(
        with(header, signature_lines.trim_end_matches('\n')),
        sigs_why,
    );
}

#[test]
fn a_result_over_the_consensus_limit_is_refused() {
    let (base, target) = pair();
    let base_text = base.encode().unwrap();
    let diff = consensus_diff(&base, &target).unwrap();
    let at = DIFF_MAGIC.len() + 64;
    let header_len = u32::from_be_bytes(diff[at..at + 4].try_into().unwrap()) as usize;
    // The true header padded with lines until the diff is as long as a diff may be: the
    // entries it keeps then take the result past the limit of a consensus.
    let mut header = String::from_utf8(diff[at + 4..at + 4 + header_len].to_vec()).unwrap();
    let room = MAX_DIFF_LEN - diff.len();
    let pad = format!("params {}\n", "x".repeat(1000));
    while header.len() + pad.len() <= header_len + room - 100 {
        header.push_str(&pad);
    }
    let last = header_len + room - header.len() - "params \n".len();
    header.push_str(&format!("params {}\n", "x".repeat(last)));
    let mut d = diff[..at].to_vec();
    d.extend_from_slice(&(header.len() as u32).to_be_bytes());
    d.extend_from_slice(header.as_bytes());
    d.extend_from_slice(&diff[at + 4 + header_len..]);
    assert_eq!(d.len(), MAX_DIFF_LEN);
    let got = apply_diff(&base_text, &d);
    assert!(
        matches!(
            got,
            Err(DocError::TooLarge {
                max: MAX_CONSENSUS_LEN,
                ..
            })
        ),
        "{got:?}"
    );
}

#[test]
fn the_fuzz_seeds_apply_to_their_base() {
    let base = include_str!("../../../../fuzz/seeds/directory/consensus.txt");
    let same = include_bytes!("../../../../fuzz/seeds/consensus_diff/same.bin");
    assert_eq!(apply_diff(base, same).unwrap(), base);
    let edit = include_bytes!("../../../../fuzz/seeds/consensus_diff/edit.bin");
    let out = Consensus::parse(&apply_diff(base, edit).unwrap()).unwrap();
    assert_eq!(
        out.relays.len(),
        Consensus::parse(base).unwrap().relays.len() - 1
    );
}
