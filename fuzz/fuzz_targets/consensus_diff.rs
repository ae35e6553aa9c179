//! Consensus diffs (`docs/spec.md` §5.12) applied to a fixed base (the directory seed
//! consensus): never panic; whatever applies yields a body with the digest the diff names.
//! Seeds: `fuzz/seeds/consensus_diff` (a diff to the same consensus, and one editing a
//! weight and dropping an entry; binary, written by `directory/examples/fuzz_seeds.rs`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::dir::diff::{apply_diff, text_body_digest};

const BASE: &str = include_str!("../seeds/directory/consensus.txt");

/// Where a diff names the digest of the body it rebuilds: after its first line
/// (`shallot-consensus-diff 5`) and the base's digest.
const TO: std::ops::Range<usize> = 25 + 32..25 + 64;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = apply_diff(BASE, data) {
        assert_eq!(data.get(TO), Some(&text_body_digest(&out)[..]));
    }
});
