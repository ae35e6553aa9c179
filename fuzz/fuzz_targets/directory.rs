//! Directory documents (descriptors, votes, vote lists, consensuses, detached signatures) and
//! the reachability probe's messages: never panic; whatever parses re-encodes to the same
//! bytes. Seeds: `fuzz/seeds/directory` (written by
//! `cargo run -p shallot-directory --example fuzz_seeds`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_directory::equivocation::VoteList;
use shallot_proto::dir::consensus::DetachedSignature;
use shallot_proto::dir::descriptor::RelayDescriptor;
use shallot_proto::dir::probe::{Answer, Challenge};
use shallot_proto::dir::vote::Vote;
use shallot_proto::dir::Consensus;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Challenge::decode(data) {
        assert_eq!(&c.encode()[..], data);
    }
    if let Ok(a) = Answer::decode(data) {
        assert_eq!(&a.encode()[..], data);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = RelayDescriptor::parse_and_verify(text) {
        assert!(text.starts_with(&d.encode_body().expect("parsed descriptor encodes")));
    }
    if let Ok(v) = Vote::parse_and_verify(text) {
        assert!(text.starts_with(&v.encode_body().expect("parsed vote encodes")));
    }
    if let Ok(c) = Consensus::parse(text) {
        assert_eq!(c.encode().expect("parsed consensus encodes"), text);
    }
    if let Ok(l) = VoteList::parse(text) {
        assert_eq!(l.encode(), text);
    }
    let _ = DetachedSignature::parse(text);
});
