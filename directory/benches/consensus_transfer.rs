//! What a consensus costs on the wire (`cargo bench -p shallot-directory --bench
//! consensus_transfer`, `docs/spec.md` §5.12): a realistic 10,000-relay consensus (random keys,
//! addresses and nicknames; weights spread over four orders of magnitude; the flag mix of a
//! live network; one relay in ten with a family), its size raw and zstd-compressed, and the
//! diff to the next hour's consensus under the churn modelled in [`next_hour`], at three rates
//! of weight change, and what a client back after a day is sent ([`back_after_a_day`]).
//! Printed sizes beside the floor measured in the same run: the random key
//! bytes the consensus must carry (three 32-byte keys per relay), which no compression removes.
//! Timed: compress, decompress, computing a diff, applying it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::compress::{compress, compress_diff, decompress_capped, DIFF_LEVEL, LEVEL};
use shallot_directory::compute::{rounded_measurement, steady_weight};
use shallot_proto::dir::diff::{apply_diff, consensus_diff};
use shallot_proto::dir::{
    Consensus, ConsensusParams, Flags, RelayEntry, SharedRandom, MAX_CONSENSUS_LEN,
};

const T: u64 = 1_700_000_000;
const RELAYS: usize = 10_000;

fn relay(rng: &mut StdRng, relays: &[RelayId]) -> RelayEntry {
    let key = IdentityKeypair::from_secret_bytes(&rng.gen());
    let len = rng.gen_range(4..=16);
    let nickname: String = (0..len)
        .map(|_| {
            *b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                .choose(rng)
                .unwrap() as char
        })
        .collect();
    let port = match rng.gen_range(0..100) {
        0..=59 => 9001,
        60..=84 => 443,
        _ => rng.gen_range(1024..65535),
    };
    let ip: [u8; 4] = [
        rng.gen_range(1..224),
        rng.gen(),
        rng.gen(),
        rng.gen_range(1..255),
    ];
    let mut flags = Flags::RUNNING | Flags::VALID;
    flags.set(Flags::FAST, rng.gen_bool(0.9));
    flags.set(Flags::STABLE, rng.gen_bool(0.7));
    flags.set(Flags::GUARD, rng.gen_bool(0.3));
    flags.set(Flags::MAILBOX, rng.gen_bool(0.4));
    let mut family: Vec<RelayId> = if rng.gen_bool(0.1) && !relays.is_empty() {
        (0..rng.gen_range(2..=4))
            .map(|_| *relays.choose(rng).unwrap())
            .collect()
    } else {
        vec![]
    };
    family.sort();
    family.dedup();
    RelayEntry {
        id: key.relay_id(),
        nickname,
        address: SocketAddr::from((ip, port)),
        // Log-uniform from 10 kB/s to 100 MB/s, as votes give it (two significant figures).
        bandwidth: rounded_measurement(10f64.powf(rng.gen_range(4.0..8.0)) as u64),
        ntor_key: rng.gen(),
        link_key: rng.gen(),
        flags,
        family,
    }
}

fn consensus(valid_after: u64, mut relays: Vec<RelayEntry>, keys: &[IdentityKeypair]) -> Consensus {
    relays.sort_by_key(|e| e.id);
    relays.dedup_by_key(|e| e.id);
    let mut commits: Vec<_> = keys.iter().map(|k| (k.public(), [7u8; 32])).collect();
    commits.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut c = Consensus {
        valid_after,
        fresh_until: valid_after + 3600,
        valid_until: valid_after + 3 * 3600,
        params: ConsensusParams {
            epoch_secs: 86400,
            max_share_ppm: 50_000,
        },
        shared_rand: SharedRandom {
            previous: Some([(valid_after % 251) as u8; 32]),
            current: [(valid_after % 253) as u8; 32],
            epochs: vec![(valid_after / 86400, [1; 32])],
            commits,
        },
        relays,
        signatures: vec![],
    };
    for k in keys {
        let sig = c.sign_body(k).unwrap();
        c.add_signature(k.public(), sig);
    }
    c
}

/// The next hour's relays. Modelled: 2 % churn (1 % of relays leave, as many new ones join);
/// every relay republishes its descriptor (relays publish hourly), which changes nothing in
/// its entry, since entries carry no published time (`docs/spec.md` §5.4); a share `reweighed`
/// of relays gets a new measured weight (±20 %, to two significant figures as votes give it);
/// 2 % have one of Fast, Stable or Guard flip;
/// 0.6 % rotate their onion key (a weekly rotation). With `steady`, a new measurement within
/// 20 % of the published weight leaves it in place, as the authorities compute it
/// ([`steady_weight`], `docs/spec.md` §5.7); without, every new measurement is published.
fn next_hour(
    rng: &mut StdRng,
    relays: &[RelayEntry],
    reweighed: f64,
    steady: bool,
) -> Vec<RelayEntry> {
    let ids: Vec<RelayId> = relays.iter().map(|r| r.id).collect();
    let mut out: Vec<RelayEntry> = Vec::with_capacity(relays.len());
    for r in relays {
        if rng.gen_bool(0.01) {
            continue;
        }
        let mut r = r.clone();
        if rng.gen_bool(reweighed) {
            let measured =
                rounded_measurement((r.bandwidth as f64 * rng.gen_range(0.8..1.2)) as u64);
            r.bandwidth = match steady {
                true => steady_weight(Some(r.bandwidth), measured, u64::MAX),
                false => measured,
            };
        }
        if rng.gen_bool(0.02) {
            let f = *[Flags::FAST, Flags::STABLE, Flags::GUARD]
                .choose(rng)
                .unwrap();
            let on = r.flags.contains(f);
            r.flags.set(f, !on);
        }
        if rng.gen_bool(0.006) {
            r.ntor_key = rng.gen();
        }
        out.push(r);
    }
    for _ in 0..relays.len() / 100 {
        out.push(relay(rng, &ids));
    }
    out
}

/// What changed from one hour's relays to the next's, by the kind of operation a diff spends
/// on it (`docs/spec.md` §5.12).
#[derive(Default)]
struct Edits {
    weight: usize,
    flags: usize,
    both: usize,
    key: usize,
    gone: usize,
    new: usize,
}

impl Edits {
    fn between(old: &[RelayEntry], new: &[RelayEntry]) -> Edits {
        let mut e = Edits::default();
        let by_id: std::collections::HashMap<_, _> = old.iter().map(|a| (a.id, a)).collect();
        let kept: std::collections::HashSet<_> = new.iter().map(|b| b.id).collect();
        for b in new {
            match by_id.get(&b.id) {
                None => e.new += 1,
                Some(a) if a.ntor_key != b.ntor_key => e.key += 1,
                Some(a) => match (a.bandwidth != b.bandwidth, a.flags != b.flags) {
                    (true, true) => e.both += 1,
                    (true, false) => e.weight += 1,
                    (false, true) => e.flags += 1,
                    (false, false) => {}
                },
            }
        }
        e.gone = old.iter().filter(|a| !kept.contains(&a.id)).count();
        e
    }
}

/// One relay's line in the consensus of the split form (not built): a 16-byte fingerprint
/// prefix, the address, the weight and the flags.
fn split_entry_line(r: &RelayEntry) -> String {
    format!(
        "r {} {} {} {}\n",
        shallot_crypto::hex::encode(&r.id.0[..16]),
        r.address,
        r.bandwidth,
        r.flags
    )
}

/// One relay's line in the keys document of the split form (not built): its ntor and link
/// keys.
fn split_keys_line(r: &RelayEntry) -> String {
    format!(
        "k {} {}\n",
        shallot_crypto::hex::encode(&r.ntor_key),
        shallot_crypto::hex::encode(&r.link_key)
    )
}

/// What a client back after a day fetches: its consensus has expired (it is valid for 3
/// hours), and it asks its guard (`docs/spec.md` §5.13) for the diff from it, which the guard
/// (or an authority) computes from the day's bases it keeps (§5.12); beside it, the whole
/// consensus it fetched from the authorities before the day's bases were kept, and, not built, the split form: the keys in a document of their
/// own, the new consensus entries whole plus the keys of the relays whose keys it does not
/// hold. Timed once, as an authority does it for each such base: the base's compressed text
/// decompressed and parsed, the diff computed and compressed. Twenty-four hours of
/// [`next_hour`], every relay remeasured each hour, with steady weights.
fn back_after_a_day(base: &Consensus, text: &str, keys: &[IdentityKeypair]) {
    let mut rng = StdRng::seed_from_u64(24);
    let mut relays = base.relays.clone();
    for _ in 0..24 {
        relays = next_hour(&mut rng, &relays, 1.0, true);
        relays.sort_by_key(|e| e.id);
        relays.dedup_by_key(|e| e.id);
    }
    let later = consensus(T + 24 * 3600, relays, keys);
    let later_text = later.encode().unwrap();
    let kept = compress(text.as_bytes());
    let started = std::time::Instant::now();
    let plain = decompress_capped(&kept, MAX_CONSENSUS_LEN).unwrap();
    let parsed = Consensus::parse(std::str::from_utf8(&plain).unwrap()).unwrap();
    let parse_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = std::time::Instant::now();
    let diff = consensus_diff(&parsed, &later).unwrap();
    let diff_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = std::time::Instant::now();
    let dz = compress_diff(&diff);
    let compress_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(apply_diff(text, &diff).unwrap(), later_text);
    let held: std::collections::HashSet<(RelayId, [u8; 32], [u8; 32])> = base
        .relays
        .iter()
        .map(|r| (r.id, r.ntor_key, r.link_key))
        .collect();
    let entries: String = later.relays.iter().map(split_entry_line).collect();
    let lacking: Vec<&RelayEntry> = later
        .relays
        .iter()
        .filter(|r| !held.contains(&(r.id, r.ntor_key, r.link_key)))
        .collect();
    let new_keys: String = lacking.iter().copied().map(split_keys_line).collect();
    let e = Edits::between(&base.relays, &later.relays);
    eprintln!(
        "a client back after a day ({} relays gone, {} new, {} new onion keys): the diff from \
         its day-old consensus {} bytes zstd level {DIFF_LEVEL}, {} bytes raw, both of which an \
         authority keeps (a directory's work for that \
         base: {parse_ms:.0} ms to decompress and parse it, {diff_ms:.0} ms to diff, \
         {compress_ms:.0} ms to compress; kept compressed: {} bytes); the whole consensus, \
         what it fetched before the authorities kept a day's bases, {} bytes zstd; not built: \
         keys in a document of their own, the entries whole {} bytes zstd and the keys of the \
         {} relays whose keys it lacks {} bytes zstd",
        e.gone,
        e.new,
        e.key,
        dz.len(),
        diff.len(),
        kept.len(),
        compress(later_text.as_bytes()).len(),
        compress(entries.as_bytes()).len(),
        lacking.len(),
        compress(new_keys.as_bytes()).len(),
    );
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(16);
    let keys: Vec<IdentityKeypair> = (0..3)
        .map(|_| IdentityKeypair::from_secret_bytes(&rng.gen()))
        .collect();
    let mut relays: Vec<RelayEntry> = Vec::with_capacity(RELAYS);
    let mut ids = Vec::new();
    for _ in 0..RELAYS {
        let r = relay(&mut rng, &ids);
        ids.push(r.id);
        relays.push(r);
    }
    let base = consensus(T, relays.clone(), &keys);
    let text = base.encode().unwrap();
    let z = compress(text.as_bytes());
    // Each entry's fingerprint (20 bytes) and two keys (32 each) are random.
    let floor = RELAYS * (20 + 2 * 32);
    eprintln!(
        "consensus, {RELAYS} relays, 3 signatures: {} bytes raw, {} bytes zstd (level {}), \
         {:.1} bytes per relay; floor (random fingerprint and key bytes alone): {floor} bytes",
        text.len(),
        z.len(),
        shallot_directory::compress::LEVEL,
        z.len() as f64 / RELAYS as f64,
    );
    // Not built, measured only: the same text with each `r` line's nickname dropped (path
    // selection, circuits and the ring do not use it; logs and the chat's circuit view do).
    let slim: String = text
        .lines()
        .map(|l| match l.strip_prefix("r ") {
            Some(rest) => format!("r {}\n", rest.split_once(' ').unwrap().1),
            None => format!("{l}\n"),
        })
        .collect();
    eprintln!(
        "not built: without nicknames: {} bytes raw, {} bytes zstd",
        slim.len(),
        compress(slim.as_bytes()).len()
    );
    // Not built, measured only: the keys moved out to a document of their own, as Tor's
    // microdescriptors hold its onion keys. The consensus keeps per relay a 16-byte prefix of
    // the fingerprint (to name the relay in the keys document and on the ring), the address,
    // the weight and the flags, and one digest of the keys document; the keys document lists
    // per relay the identity, ntor and link keys, in consensus order. A client needs both to
    // build circuits through any relay, so this moves bytes between documents: the point is
    // that keys change rarely (a relay's onion key once a week or so), so that a client
    // holding last hour's keys fetches only the new ones.
    let compact: String = base.relays.iter().map(split_entry_line).collect();
    let keys_doc: String = base.relays.iter().map(split_keys_line).collect();
    // And with no name at all: entry i of the consensus is entry i of the keys document
    // (both in fingerprint order), bound by the keys document's digest in the consensus.
    let nameless: String = base
        .relays
        .iter()
        .map(|r| format!("r {} {} {}\n", r.address, r.bandwidth, r.flags))
        .collect();
    eprintln!(
        "not built: keys in a document of their own: consensus entries {} bytes zstd \
         ({:.1} per relay; header and signatures not counted), {} bytes with no fingerprint \
         prefix (entries matched to the keys document by position); keys document {} bytes zstd",
        compress(compact.as_bytes()).len(),
        compress(compact.as_bytes()).len() as f64 / RELAYS as f64,
        compress(nameless.as_bytes()).len(),
        compress(keys_doc.as_bytes()).len(),
    );
    let mut diff_mid = Vec::new();
    for (reweighed, steady) in [
        (0.1, false),
        (0.3, false),
        (1.0, false),
        (0.1, true),
        (0.3, true),
        (1.0, true),
    ] {
        let mut rng = StdRng::seed_from_u64(17);
        let next = consensus(
            T + 3600,
            next_hour(&mut rng, &base.relays, reweighed, steady),
            &keys,
        );
        let diff = consensus_diff(&base, &next).unwrap();
        assert_eq!(apply_diff(&text, &diff).unwrap(), next.encode().unwrap());
        let started = std::time::Instant::now();
        let dz = compress_diff(&diff);
        let took = started.elapsed();
        let e = Edits::between(&base.relays, &next.relays);
        eprintln!(
            "hourly diff, 2 % churn, {:.0} % remeasured ±20 %{}: {} bytes raw, {} bytes zstd \
             level {DIFF_LEVEL} in {:.1} ms ({} at the consensus's level {LEVEL}) \
             ({} new weights, {} new flags, {} both, {} new onion keys, {} relays gone, {} new); \
             whole next consensus zstd: {} bytes",
            reweighed * 100.0,
            if steady { ", steady weights" } else { "" },
            diff.len(),
            dz.len(),
            took.as_secs_f64() * 1e3,
            compress(&diff).len(),
            e.weight,
            e.flags,
            e.both,
            e.key,
            e.gone,
            e.new,
            compress(next.encode().unwrap().as_bytes()).len(),
        );
        if reweighed == 0.3 && !steady {
            diff_mid = diff;
        }
    }

    back_after_a_day(&base, &text, &keys);

    let mut g = c.benchmark_group("consensus_transfer");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("zstd_compress_10000_relays", |b| {
        b.iter(|| compress(black_box(text.as_bytes())))
    });
    g.bench_function("zstd_decompress_10000_relays", |b| {
        b.iter(|| decompress_capped(black_box(&z), MAX_CONSENSUS_LEN).unwrap())
    });
    let mut rng = StdRng::seed_from_u64(17);
    let next = consensus(
        T + 3600,
        next_hour(&mut rng, &base.relays, 0.3, false),
        &keys,
    );
    g.bench_function("diff_compute_10000_relays", |b| {
        b.iter(|| consensus_diff(black_box(&base), &next).unwrap())
    });
    g.bench_function("diff_apply_10000_relays", |b| {
        b.iter(|| apply_diff(black_box(&text), &diff_mid).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
