//! A consensus diff carries no authority of its own (`docs/spec.md` §5.12): whatever a rogue
//! authority (a minority of one in three) writes into a diff, a client applying it and then
//! verifying the result as any consensus (§5.9) ends with the honest consensus or with an
//! error, never with an entry the majority did not sign. Pure: no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::network::{AuthorityInfo, NetworkFile, NetworkParams};
use shallot_directory::verify::{verify_consensus, VerifyError};
use shallot_proto::dir::diff::{apply_diff, consensus_diff};
use shallot_proto::dir::{Consensus, ConsensusParams, DocError, Flags, RelayEntry};

const T: u64 = 1_700_000_000;

fn keys() -> Vec<IdentityKeypair> {
    (1..=3u8)
        .map(|i| IdentityKeypair::from_secret_bytes(&[i; 32]))
        .collect()
}

fn network(keys: &[IdentityKeypair]) -> NetworkFile {
    NetworkFile {
        authorities: keys
            .iter()
            .enumerate()
            .map(|(i, k)| AuthorityInfo {
                name: format!("auth{i}"),
                address: ([127, 0, 0, 1], 7000 + i as u16).into(),
                key: k.public(),
            })
            .collect(),
        params: NetworkParams::default(),
    }
}

fn relays() -> Vec<RelayEntry> {
    let mut v: Vec<RelayEntry> = (10..14u8)
        .map(|i| {
            let id = IdentityKeypair::from_secret_bytes(&[i; 32]).public();
            RelayEntry {
                id: RelayId::of(&id),
                nickname: format!("relay{i}"),
                address: ([198, 51, i, 1], 9001).into(),
                bandwidth: 1_000_000,
                ntor_key: [i; 32],
                link_key: [i + 100; 32],
                flags: Flags::RUNNING | Flags::VALID | Flags::FAST,
                family: vec![],
            }
        })
        .collect();
    v.sort_by_key(|e| e.id);
    v
}

fn signed(valid_after: u64, relays: Vec<RelayEntry>, signers: &[&IdentityKeypair]) -> Consensus {
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

/// The base every client holds and the honest next consensus, both signed by all three.
fn honest() -> (Vec<IdentityKeypair>, Consensus, Consensus) {
    let k = keys();
    let all: Vec<&IdentityKeypair> = k.iter().collect();
    let base = signed(T, relays(), &all);
    let mut next = relays();
    next[1].bandwidth = 2_000_000;
    next.remove(3);
    let next = signed(T + 3600, next, &all);
    (k, base, next)
}

/// What a client does with a diff: apply it to its text, then verify the result.
fn client_takes(base: &Consensus, diff: &[u8], net: &NetworkFile) -> Result<Consensus, String> {
    let text = apply_diff(&base.encode().unwrap(), diff).map_err(|e| format!("apply: {e}"))?;
    verify_consensus(&text, net, T + 3600, Some(base.valid_after))
        .map(|c| c.into_inner())
        .map_err(|e| format!("verify: {e}"))
}

#[test]
fn the_honest_diff_gives_the_honest_consensus() {
    let (k, base, next) = honest();
    let diff = consensus_diff(&base, &next).unwrap();
    assert_eq!(client_takes(&base, &diff, &network(&k)).unwrap(), next);
}

#[test]
fn an_edited_operation_under_the_honest_digest_does_not_apply() {
    let (_, base, next) = honest();
    let diff = consensus_diff(&base, &next).unwrap();
    // A new weight: 2 × 10⁶ as the diff writes it (§5.12).
    let op = [b'w', 6, 2];
    let at = diff
        .windows(op.len())
        .position(|w| w == op)
        .expect("the new weight");
    // The rogue raises the weight of the relay it wants picked, keeping `to` and signatures.
    let forged = [&diff[..at], &[b'w', 8, 9], &diff[at + op.len()..]].concat();
    assert!(matches!(
        apply_diff(&base.encode().unwrap(), &forged),
        Err(DocError::DiffMismatch(_))
    ));
}

#[test]
fn a_rebuilt_body_with_the_honest_signatures_is_refused() {
    let (k, base, next) = honest();
    // The rogue computes the diff to the body it wants (another link key for one relay, and a
    // higher weight for another), so that `to` matches, and carries the honest signatures.
    let mut wanted = next.clone();
    wanted.relays[0].link_key = [0x66; 32];
    wanted.relays[1].bandwidth = 900_000_000;
    wanted.signatures = next.signatures.clone();
    let diff = consensus_diff(&base, &wanted).unwrap();
    let err = client_takes(&base, &diff, &network(&k)).unwrap_err();
    assert!(err.starts_with("verify: "), "{err}");
}

#[test]
fn a_body_signed_by_a_minority_is_refused() {
    let (k, base, next) = honest();
    let mut relays = next.relays.clone();
    relays[2].flags.set(Flags::GUARD, true);
    relays[2].ntor_key = [0x55; 32];
    let rogue_only = signed(next.valid_after, relays, &[&k[0]]);
    let diff = consensus_diff(&base, &rogue_only).unwrap();
    // The diff is well formed and rebuilds exactly the body it names ...
    let text = apply_diff(&base.encode().unwrap(), &diff).unwrap();
    assert_eq!(text, rogue_only.encode().unwrap());
    // ... which one signature does not make a consensus.
    assert!(matches!(
        verify_consensus(&text, &network(&k), T + 3600, Some(T)),
        Err(VerifyError::NotEnoughSignatures {
            valid: 1,
            needed: 2,
            ..
        })
    ));
}
