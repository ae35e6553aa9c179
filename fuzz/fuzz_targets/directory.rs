//! Directory documents (descriptors, votes, consensuses, detached signatures): never panic;
//! whatever parses re-encodes to the same text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::dir::consensus::DetachedSignature;
use shallot_proto::dir::descriptor::RelayDescriptor;
use shallot_proto::dir::vote::Vote;
use shallot_proto::dir::Consensus;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = RelayDescriptor::parse_and_verify(text);
    let _ = Vote::parse_and_verify(text);
    if let Ok(c) = Consensus::parse(text) {
        assert_eq!(c.encode().expect("parsed consensus encodes"), text);
    }
    let _ = DetachedSignature::parse(text);
});
