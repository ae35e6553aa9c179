//! The directory fuzz target's seed corpus (`fuzz/seeds/directory`, written by
//! `cargo run -p shallot-directory --example fuzz_seeds -- fuzz/seeds/directory`) holds valid
//! documents of every kind, so that fuzzing starts deep inside the parsers. When a format
//! changes, this fails until the seeds are written again.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use shallot_directory::equivocation::VoteList;
use shallot_proto::dir::probe::{Answer, Challenge};
use shallot_proto::dir::{Consensus, DetachedSignature, RelayDescriptor, Vote};

#[test]
fn every_seed_is_a_valid_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/directory");
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let kind = if name.starts_with("descriptor-") {
            RelayDescriptor::parse_and_verify(&text).unwrap();
            "descriptor"
        } else if name.starts_with("vote-list") {
            VoteList::parse(&text).unwrap();
            "vote list"
        } else if name.starts_with("vote-") {
            Vote::parse_and_verify(&text).unwrap();
            "vote"
        } else if name.starts_with("consensus") {
            let c = Consensus::parse(&text).unwrap();
            assert_eq!(c.encode().unwrap(), text);
            assert!(!c
                .valid_signers(&c.signatures.iter().map(|s| s.0).collect::<Vec<_>>())
                .unwrap()
                .is_empty());
            "consensus"
        } else if name.starts_with("detached") {
            DetachedSignature::parse(&text).unwrap();
            "detached signature"
        } else if name == "probe-challenge.bin" {
            Challenge::decode(&bytes).unwrap();
            "probe challenge"
        } else if name == "probe-answer.bin" {
            Answer::decode(&bytes).unwrap();
            "probe answer"
        } else {
            panic!("unexpected seed {name}");
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.len(), 7, "{kinds:?}");
}
