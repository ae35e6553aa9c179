//! Cell decoding: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::cell::Cell;

fuzz_target!(|data: &[u8]| {
    if let Ok(cell) = Cell::decode(data) {
        assert_eq!(&cell.encode()[..], data);
    }
});
