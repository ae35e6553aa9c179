//! Consensus diffs (`docs/spec.md` §5.12) applied to a fixed base (the directory seed
//! consensus): never panic; whatever applies yields a body with the digest the diff names.
//! Seeds: `fuzz/seeds/consensus_diff` (a diff to the same consensus, and one editing a
//! weight and dropping an entry).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::dir::diff::{apply_diff, text_body_digest};

const BASE: &str = include_str!("../seeds/directory/consensus.txt");

fuzz_target!(|data: &[u8]| {
    let Ok(diff) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(out) = apply_diff(BASE, diff) {
        let to = diff.lines().nth(2).and_then(|l| l.strip_prefix("to "));
        let digest = shallot_crypto::hex::encode(&text_body_digest(&out));
        assert_eq!(to, Some(digest.as_str()));
    }
});
