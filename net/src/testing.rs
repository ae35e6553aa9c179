//! Test support for this crate and the layers above: synthetic relays and consensuses, built
//! without authorities or signatures. Compiled only for tests and under the `testing` feature.

use rand::rngs::StdRng;
use rand::SeedableRng;
use shallot_crypto::keys::{IdentityKeypair, OnionKeypair, RelayId};
use shallot_proto::dir::{Consensus, ConsensusParams, Flags, RelayEntry, SharedRandom};

/// `n` relays, each Running, Valid, Fast, Guard and Mailbox, each in its own /16 (10.i.0.1),
/// with bandwidth 1000, sorted by fingerprint as a consensus lists them. The same `n` gives
/// the same relays.
pub fn relays(n: u8) -> Vec<RelayEntry> {
    let mut rng = StdRng::seed_from_u64(u64::from(n));
    let mut relays: Vec<RelayEntry> = (0..n)
        .map(|i| {
            let identity = IdentityKeypair::generate(&mut rng).public();
            let onion = OnionKeypair::generate(&mut rng);
            RelayEntry {
                id: RelayId::of(&identity),
                nickname: format!("relay{i}"),
                address: std::net::SocketAddr::from(([10, i, 0, 1], 9000)),
                bandwidth: 1000,
                ntor_key: onion.public().to_bytes(),
                link_key: [0; 32],
                flags: Flags::RUNNING | Flags::VALID | Flags::FAST | Flags::GUARD | Flags::MAILBOX,
                family: Vec::new(),
            }
        })
        .collect();
    relays.sort_by_key(|r| r.id);
    relays
}

/// An unsigned consensus listing `relays`, with one-day mailbox epochs.
pub fn consensus(
    relays: Vec<RelayEntry>,
    valid_after: u64,
    fresh_until: u64,
    valid_until: u64,
) -> Consensus {
    Consensus {
        valid_after,
        fresh_until,
        valid_until,
        params: ConsensusParams {
            epoch_secs: 86_400,
            max_share_ppm: 1_000_000,
        },
        shared_rand: SharedRandom::default(),
        relays,
        signatures: Vec::new(),
    }
}
