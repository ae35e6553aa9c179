//! Address parsing: never panics; whatever parses prints back the same (lower-cased).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_crypto::Address;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(a) = text.parse::<Address>() {
            assert_eq!(a.to_string(), text.trim().to_ascii_lowercase());
        }
    }
});
