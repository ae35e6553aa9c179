//! Mailbox placement benchmarks (`cargo bench --bench placement`): what finding a mailbox's
//! replicas costs at 10,000 relays (`docs/spec.md` §9.2), by parts: blinding the owner's key
//! for the epoch (the mailbox id), laying out the ring (one hash per mailbox relay and a
//! sort), and the replicas from a ring already laid out. The client keeps the first two once
//! computed (`shallot_client::ring::PlacementCache`), so a message pays only the third.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shallot_crypto::blind::blind_public_key;
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_proto::mailbox::MailboxId;
use shallot_proto::placement::Ring;

const RELAYS: u32 = 10_000;
const SRV: [u8; 32] = [5; 32];
const EPOCH: u64 = 20_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("placement");
    let relays: Vec<RelayId> = (0..RELAYS)
        .map(|i| {
            let mut id = [0u8; 20];
            id[..4].copy_from_slice(&i.to_be_bytes());
            RelayId(id)
        })
        .collect();
    let owner = IdentityKeypair::generate(&mut rand::thread_rng()).public();
    let mailbox = MailboxId(blind_public_key(&owner, EPOCH, 86_400).unwrap().to_bytes());

    g.bench_function("mailbox id (blind the owner's key)", |b| {
        b.iter(|| blind_public_key(black_box(&owner), EPOCH, 86_400).unwrap())
    });
    g.bench_function("lay out the ring, 10,000 relays", |b| {
        b.iter(|| Ring::new(&SRV, EPOCH, black_box(&relays).iter().copied()))
    });
    let ring = Ring::new(&SRV, EPOCH, relays.iter().copied());
    g.bench_function("replicas from a laid-out ring, 10,000 relays", |b| {
        b.iter(|| ring.replicas(black_box(&mailbox), 3))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
