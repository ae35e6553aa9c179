//! Directory benchmarks (`cargo bench -p shallot-directory`): consensus computation (the shared
//! random values and the entries, from the descriptors three votes name by digest) for 1,000
//! and 10,000 relays, the consensus size in bytes (printed), and client verification of the
//! 10,000-relay consensus signed by three authorities, beside the raw limit measured in the
//! same run: one ed25519 signature check over the same body.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::compute::{compute_consensus, ComputeParams, Descriptors, Period};
use shallot_directory::shared_random;
use shallot_directory::{verify_consensus, AuthorityInfo, NetworkFile, NetworkParams};
use shallot_proto::dir::descriptor::descriptor_digest;
use shallot_proto::dir::{
    signed_bytes, Consensus, ConsensusParams, Flags, RelayDescriptor, Vote, VoteEntry,
};

const T: u64 = 1_700_000_000;
const PERIOD: Period = Period {
    valid_after: T,
    fresh_until: T + 3600,
    valid_until: T + 3 * 3600,
};
const PARAMS: ComputeParams = ComputeParams {
    consensus: ConsensusParams {
        epoch_secs: 86400,
        max_share_ppm: 50_000,
    },
    unmeasured_weight_cap: 20_480,
    descriptor_max_age_secs: 86400,
};

/// `n` relays' signed descriptors, and how three authorities would vote on them: the same
/// descriptors, with slightly different measurements and flags.
fn votes(n: usize, authorities: &[IdentityKeypair]) -> (Vec<Vote>, Descriptors) {
    let mut descriptors = Descriptors::new();
    let relays: Vec<(RelayId, [u8; 32])> = (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let key = IdentityKeypair::from_secret_bytes(&seed);
            let ip = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let d = RelayDescriptor {
                nickname: format!("relay{i}"),
                address: SocketAddr::from((ip, 9001)),
                identity: key.public(),
                ntor_key: [i as u8; 32],
                link_key: [(i >> 8) as u8; 32],
                bandwidth: 10_000_000,
                family: if i % 10 == 0 {
                    vec![RelayId([1; 20]), RelayId([2; 20])]
                } else {
                    vec![]
                },
                mailbox: i % 2 == 0,
                published: T - 600,
            };
            let text = d.sign(&key).unwrap();
            let digest = descriptor_digest(&text);
            descriptors.insert(digest, d);
            (key.relay_id(), digest)
        })
        .collect();
    let votes = authorities
        .iter()
        .enumerate()
        .map(|(a, key)| {
            let mut mine: Vec<VoteEntry> = relays
                .iter()
                .enumerate()
                .map(|(i, (id, digest))| {
                    let mut flags = Flags::FAST | Flags::RUNNING | Flags::VALID;
                    flags.set(Flags::STABLE, (i + a) % 3 != 0);
                    VoteEntry {
                        id: *id,
                        descriptor: *digest,
                        known_since: T - 86_400 - (i as u64),
                        measured: Some(1_000_000 + i as u64 + (a as u64) * 1000),
                        flags,
                    }
                })
                .collect();
            mine.sort_by_key(|e| e.id);
            Vote {
                authority: key.public(),
                valid_after: PERIOD.valid_after,
                fresh_until: PERIOD.fresh_until,
                valid_until: PERIOD.valid_until,
                commit: [a as u8; 32],
                reveal: Some([a as u8 + 10; 32]),
                relays: mine,
            }
        })
        .collect();
    (votes, descriptors)
}

/// What an authority does to compute the consensus once it holds the votes and descriptors.
fn compute(votes: &[Vote], descriptors: &Descriptors) -> Consensus {
    let shared_rand = shared_random::compute(T, 3600, 86400, 3, votes, None);
    compute_consensus(votes, 3, PERIOD, &PARAMS, descriptors, shared_rand, None).unwrap()
}

fn signed_text(mut c: Consensus, keys: &[IdentityKeypair]) -> String {
    for k in keys {
        let sig = c.sign_body(k).unwrap();
        c.add_signature(k.public(), sig);
    }
    c.encode().unwrap()
}

fn bench(c: &mut Criterion) {
    let keys: Vec<IdentityKeypair> = (0..3)
        .map(|_| IdentityKeypair::generate(&mut rand::thread_rng()))
        .collect();
    let network = NetworkFile {
        authorities: keys
            .iter()
            .enumerate()
            .map(|(i, k)| AuthorityInfo {
                name: format!("auth{i}"),
                address: SocketAddr::from(([127, 1 + i as u8, 0, 1], 7000)),
                key: k.public(),
            })
            .collect(),
        params: NetworkParams::default(),
    };
    let mut g = c.benchmark_group("directory");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let mut text_10k = String::new();
    for n in [1_000usize, 10_000] {
        let (votes, descriptors) = votes(n, &keys);
        let consensus = compute(&votes, &descriptors);
        assert_eq!(consensus.relays.len(), n);
        let text = signed_text(consensus, &keys);
        eprintln!(
            "consensus size, {n} relays, 3 signatures: {} bytes ({:.1} bytes per relay)",
            text.len(),
            text.len() as f64 / n as f64
        );
        g.bench_function(format!("compute_consensus_{n}_relays_3_votes"), |b| {
            b.iter(|| compute(black_box(&votes), &descriptors))
        });
        if n == 10_000 {
            text_10k = text;
        }
    }

    let now = T + 60;
    assert!(verify_consensus(&text_10k, &network, now, None).is_ok());
    g.bench_function("client_verify_10000_relays_3_signatures", |b| {
        b.iter(|| verify_consensus(black_box(&text_10k), &network, now, None).unwrap())
    });
    // The raw limit in the same run: one signature check over the same body.
    let parsed = Consensus::parse(&text_10k).unwrap();
    let msg = signed_bytes(&parsed.encode_body().unwrap());
    let (key, sig) = parsed.signatures[0];
    g.bench_function("raw_ed25519_verify_10000_relay_body", |b| {
        b.iter(|| key.verify_strict(black_box(&msg), &sig).unwrap())
    });
    g.bench_function("raw_parse_10000_relays", |b| {
        b.iter(|| Consensus::parse(black_box(&text_10k)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
