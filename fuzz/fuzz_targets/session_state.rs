//! Stored ratchet state and signed prekeys (read back from the local store): never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_crypto::ratchet::Ratchet;
use shallot_crypto::x3dh::SignedPrekey;

fuzz_target!(|data: &[u8]| {
    let _ = Ratchet::from_bytes(data);
    let _ = SignedPrekey::from_bytes(data);
});
