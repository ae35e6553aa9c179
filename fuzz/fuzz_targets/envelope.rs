//! The end-to-end framing inside envelopes, and prekey bundles: never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_client::messaging::wire::{Content, Inner};
use shallot_crypto::x3dh::PrekeyBundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(inner) = Inner::decode(data) {
        assert_eq!(inner.encode(), data);
    }
    let _ = Content::decode_padded(data);
    if let Ok(b) = PrekeyBundle::decode(data) {
        assert_eq!(b.encode(), data);
    }
});
