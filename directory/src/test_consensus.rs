//! Consensuses for this crate's unit tests: a few relays with fixed keys, signed by the keys
//! given. Test code only.

use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_proto::dir::{Consensus, ConsensusParams, Flags, RelayEntry};

/// `n` relays with keys derived from their index, sorted by fingerprint.
pub(crate) fn relays(n: u8) -> Vec<RelayEntry> {
    let mut relays: Vec<RelayEntry> = (0..n)
        .map(|i| {
            let identity = IdentityKeypair::from_secret_bytes(&[i + 1; 32]).public();
            RelayEntry {
                id: RelayId::of(&identity),
                nickname: format!("r{i}"),
                address: ([10, 0, 0, i], 9000).into(),
                bandwidth: 1000,
                ntor_key: [i; 32],
                link_key: [i; 32],
                flags: Flags::RUNNING | Flags::VALID,
                family: vec![],
            }
        })
        .collect();
    relays.sort_by_key(|e| e.id);
    relays
}

/// A consensus of `relays` valid from `valid_after` for three hourly periods, signed by each
/// of `signers`.
pub(crate) fn signed(
    valid_after: u64,
    relays: Vec<RelayEntry>,
    signers: &[&IdentityKeypair],
) -> Consensus {
    let mut c = Consensus {
        valid_after,
        fresh_until: valid_after + 3600,
        valid_until: valid_after + 3 * 3600,
        params: ConsensusParams {
            epoch_secs: 86400,
            max_share_ppm: 50_000,
        },
        shared_rand: Default::default(),
        relays,
        signatures: vec![],
    };
    for k in signers {
        let sig = c.sign_body(k).unwrap();
        c.add_signature(k.public(), sig);
    }
    c
}
