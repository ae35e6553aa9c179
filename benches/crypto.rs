//! Crypto-core benchmarks (`cargo bench --bench crypto`): ntor server handshakes and the
//! client's two halves of one (its ephemeral key; the answer's checks), client wrap
//! of a 3-layer cell, relay peel of one layer, and, as the raw limit measured in the same
//! run, ChaCha20-Poly1305 seals of the payload size a first-hop peel opens; then the
//! recipient's share of a message: one X25519 Diffie-Hellman, and opening a sealed envelope
//! of a short text message's size (415 bytes).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shallot_crypto::keys::{IdentityKeypair, OnionKeypair};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_crypto::onion::{
    body_len, layer_len, ClientLayers, HopKeys, RelayLayer, CELL_PAYLOAD_LEN, TAG_LEN,
};

/// A 3-hop circuit: the client's layers and the relays' layers, keyed by real handshakes.
fn circuit() -> (ClientLayers, Vec<RelayLayer>) {
    let mut rng = rand::thread_rng();
    let mut client = ClientLayers::new();
    let mut relays = Vec::new();
    for depth in 1..=3u8 {
        let id = IdentityKeypair::generate(&mut rng).relay_id();
        let onion = OnionKeypair::generate(&mut rng);
        let (hs, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
        let (reply, seed) = server_handshake(&mut rng, &id, &[&onion], &msg).unwrap();
        relays.push(RelayLayer::new(depth, &HopKeys::from_key_seed(&seed).unwrap()).unwrap());
        client
            .push_hop(&HopKeys::from_key_seed(&hs.finish(&reply).unwrap()).unwrap())
            .unwrap();
    }
    (client, relays)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));

    let mut rng = rand::thread_rng();
    let onion = OnionKeypair::generate(&mut rng);
    let id = IdentityKeypair::generate(&mut rng).relay_id();
    let (_, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
    g.bench_function("ntor_server_handshake", |b| {
        b.iter(|| server_handshake(&mut rng, &id, &[&onion], black_box(&msg)).unwrap())
    });
    // The client's two halves: `start` (its ephemeral key) before CREATE or EXTEND leaves,
    // `finish` (two Diffie-Hellman and the key derivation) once the answer is in.
    g.bench_function("ntor_client_start", |b| {
        b.iter(|| ClientHandshake::start(&mut rng, id, black_box(&onion.public())))
    });
    let (_, reply_to) = ClientHandshake::start(&mut rng, id, &onion.public());
    let (reply, _) = server_handshake(&mut rng, &id, &[&onion], &reply_to).unwrap();
    g.bench_function("ntor_client_finish", |b| {
        b.iter_batched(
            || ClientHandshake::start(&mut rand::thread_rng(), id, &onion.public()).0,
            // Each start's reply differs; the wrong one costs the same work before it fails.
            |hs| hs.finish(black_box(&reply)),
            criterion::BatchSize::SmallInput,
        )
    });

    let (mut client, _) = circuit();
    let body = vec![0x5au8; body_len(3)];
    g.bench_function("client_wrap_3_layers", |b| {
        b.iter(|| client.wrap(3, black_box(&body)).unwrap())
    });

    // Peeling needs cells sealed in counter order, so they are made in untimed batches.
    g.bench_function("relay_peel_1_layer", |b| {
        b.iter_custom(|iters| {
            let (mut client, mut relays) = circuit();
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(4096);
                let mut cells: Vec<_> = (0..n).map(|_| client.wrap(3, &body).unwrap()).collect();
                let start = Instant::now();
                for cell in &mut cells {
                    black_box(relays[0].peel(cell).unwrap());
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });

    // The raw limit: one AEAD seal of the bytes a first-hop peel authenticates
    // (509 − 16 = 493 bytes of plaintext).
    let aead = ChaCha20Poly1305::new(Key::from_slice(&[7u8; 32]));
    let mut buf = [0u8; CELL_PAYLOAD_LEN];
    let mut counter = 0u64;
    g.bench_function("raw_chacha20poly1305_seal_493", |b| {
        b.iter(|| {
            counter += 1;
            let mut nonce = Nonce::default();
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            let plain_len = layer_len(1) - TAG_LEN;
            black_box(
                aead.encrypt_in_place_detached(&nonce, &[], &mut buf[..plain_len])
                    .unwrap(),
            )
        })
    });

    // The recipient's crypto floor for a message: the envelope's Diffie-Hellman (a ratchet
    // step adds one or two more), then the key derivation and the AEAD.
    let peer =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(&mut rng));
    let secret = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
    g.bench_function("x25519_diffie_hellman", |b| {
        b.iter(|| secret.diffie_hellman(black_box(&peer)))
    });
    let bob = IdentityKeypair::generate(&mut rng);
    let envelope = shallot_crypto::sealed::seal(
        &mut rng,
        &bob.public(),
        &[0x42; 415 - shallot_crypto::sealed::ENVELOPE_OVERHEAD],
    )
    .unwrap();
    g.bench_function("sealed_envelope_open_415", |b| {
        b.iter(|| shallot_crypto::sealed::open(&bob, black_box(&envelope)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
