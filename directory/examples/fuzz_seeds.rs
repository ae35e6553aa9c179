//! Writes the seed corpus of the `directory` fuzz target: valid descriptors, votes, vote
//! lists, consensuses, detached signatures and probe messages, from fixed keys, so that the
//! files are the same on every run.
//!
//! Also writes the seeds of the `consensus_diff` target (a diff from that consensus to itself,
//! and one to the next hour's) beside them, in `../consensus_diff`.
//!
//! ```text
//! cargo run -p shallot-directory --example fuzz_seeds -- fuzz/seeds/directory
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_crypto::ntor::{ClientMessage, ServerMessage};
use shallot_directory::equivocation::VoteList;
use shallot_proto::dir::descriptor::descriptor_digest;
use shallot_proto::dir::diff::consensus_diff;
use shallot_proto::dir::probe::{Answer, Challenge};
use shallot_proto::dir::{
    Consensus, ConsensusParams, DetachedSignature, Flags, RelayDescriptor, RelayEntry,
    SharedRandom, Vote, VoteEntry,
};

fn key(seed: u8) -> IdentityKeypair {
    IdentityKeypair::from_secret_bytes(&[seed; 32])
}

fn descriptor(
    seed: u8,
    address: &str,
    family: Vec<RelayId>,
    mailbox: bool,
) -> (RelayDescriptor, String) {
    let k = key(seed);
    let d = RelayDescriptor {
        nickname: format!("seed{seed}"),
        address: address.parse::<SocketAddr>().unwrap(),
        identity: k.public(),
        ntor_key: [seed; 32],
        link_key: [seed.wrapping_add(1); 32],
        bandwidth: 1_048_576 * u64::from(seed),
        family,
        mailbox,
        published: 1_700_000_000 + u64::from(seed),
    };
    let text = d.sign(&k).unwrap();
    (d, text)
}

/// The `consensus_diff` seeds: from `consensus` to itself, and to the next hour's, with one
/// relay reweighed and the last one gone.
fn write_diff_seeds(out: &std::path::Path, consensus: &Consensus, authorities: &[IdentityKeypair]) {
    let dir = out.parent().unwrap().join("consensus_diff");
    std::fs::create_dir_all(&dir).unwrap();
    let same = consensus_diff(consensus, consensus).unwrap();
    std::fs::write(dir.join("same.bin"), same).unwrap();
    let mut next = consensus.clone();
    next.valid_after += 3600;
    next.fresh_until += 3600;
    next.valid_until += 3600;
    next.relays[0].bandwidth = 5_000_002;
    next.relays.pop();
    next.signatures.clear();
    for k in authorities {
        let sig = next.sign_body(k).unwrap();
        next.add_signature(k.public(), sig);
    }
    std::fs::write(
        dir.join("edit.bin"),
        consensus_diff(consensus, &next).unwrap(),
    )
    .unwrap();
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds/directory".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();

    let descriptors = [
        descriptor(1, "203.0.113.5:9001", vec![], true),
        descriptor(
            2,
            "[2001:db8::7]:443",
            vec![key(1).relay_id(), key(3).relay_id()],
            false,
        ),
        descriptor(3, "198.51.100.9:9001", vec![key(2).relay_id()], true),
    ];
    let mut families: Vec<Vec<RelayId>> = Vec::new();
    for (i, (d, text)) in descriptors.iter().enumerate() {
        write(&format!("descriptor-{i}.txt"), text.as_bytes());
        families.push(d.family.clone());
    }
    for f in &mut families {
        f.sort();
    }

    let authorities = [key(100), key(101), key(102)];
    let t = 1_700_003_600;
    let mut votes = Vec::new();
    for (a, auth) in authorities.iter().enumerate() {
        let mut relays: Vec<VoteEntry> = descriptors
            .iter()
            .enumerate()
            .map(|(i, (d, text))| VoteEntry {
                id: d.fingerprint(),
                descriptor: descriptor_digest(text),
                known_since: 1_699_000_000 + i as u64,
                measured: (i != a).then_some(5_000_000 + i as u64),
                flags: Flags::from_bits((0x3f >> i) as u8),
            })
            .collect();
        relays.sort_by_key(|e| e.id);
        let vote = Vote {
            authority: auth.public(),
            valid_after: t,
            fresh_until: t + 3600,
            valid_until: t + 3 * 3600,
            commit: [a as u8 + 1; 32],
            reveal: (a != 0).then_some([a as u8 + 7; 32]),
            relays,
        };
        let text = vote.sign(auth).unwrap();
        write(&format!("vote-{a}.txt"), text.as_bytes());
        votes.push((vote, text));
    }
    let mut held: BTreeMap<[u8; 32], BTreeSet<[u8; 32]>> = BTreeMap::new();
    for (v, text) in &votes {
        held.entry(*v.authority.as_bytes())
            .or_default()
            .insert(shallot_proto::dir::consensus::digest(text));
    }
    held.entry(*authorities[2].public().as_bytes())
        .or_default()
        .insert([9; 32]);
    let list = VoteList {
        valid_after: t,
        votes: held,
    };
    write("vote-list.txt", list.encode().as_bytes());

    let mut relays: Vec<RelayEntry> = descriptors
        .iter()
        .map(|(d, _)| RelayEntry {
            id: d.fingerprint(),
            nickname: d.nickname.clone(),
            address: d.address,
            bandwidth: 5_000_001,
            ntor_key: d.ntor_key,
            link_key: d.link_key,
            flags: Flags::RUNNING | Flags::VALID | Flags::FAST,
            family: {
                let mut f = d.family.clone();
                f.sort();
                f
            },
        })
        .collect();
    relays.sort_by_key(|e| e.id);
    let mut commits: Vec<_> = authorities.iter().map(|k| (k.public(), [4; 32])).collect();
    commits.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut consensus = Consensus {
        valid_after: t,
        fresh_until: t + 3600,
        valid_until: t + 3 * 3600,
        params: ConsensusParams {
            epoch_secs: 86400,
            max_share_ppm: 50_000,
        },
        shared_rand: SharedRandom {
            previous: Some([5; 32]),
            current: [6; 32],
            epochs: (19_675..19_691)
                .map(|e| (e, [(e % 251) as u8; 32]))
                .collect(),
            commits,
        },
        relays,
        signatures: Vec::new(),
    };
    for k in &authorities {
        let sig = consensus.sign_body(k).unwrap();
        consensus.add_signature(k.public(), sig);
    }
    write("consensus.txt", consensus.encode().unwrap().as_bytes());
    write_diff_seeds(&out, &consensus, &authorities);
    let mut first = consensus.clone();
    first.shared_rand.previous = None;
    first.shared_rand.commits.clear();
    first.relays.truncate(1);
    first.signatures.clear();
    let sig = first.sign_body(&authorities[0]).unwrap();
    first.add_signature(authorities[0].public(), sig);
    write(
        "consensus-first-round.txt",
        first.encode().unwrap().as_bytes(),
    );
    let detached = DetachedSignature {
        digest: consensus.body_digest(),
        authority: consensus.signatures[0].0,
        signature: consensus.signatures[0].1,
    };
    write("detached-signature.txt", detached.encode().as_bytes());

    let challenge = Challenge {
        nonce: [1; 32],
        ntor: ClientMessage {
            relay_id: key(1).relay_id(),
            onion_key: [1; 32],
            client_key: [2; 32],
        },
        transfer: 256,
    };
    write("probe-challenge.bin", &challenge.encode());
    let answer = Answer {
        ntor: ServerMessage {
            server_key: [3; 32],
            auth: [4; 32],
        },
        signature: [5; 64],
    };
    write("probe-answer.bin", &answer.encode());
    eprintln!("seed corpus written to {}", out.display());
}
