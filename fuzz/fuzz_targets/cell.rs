//! Cell decoding: never panics; whatever decodes re-encodes to the same bytes (a padding cell
//! decodes to `None` and is all zeros).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::cell::{Cell, PADDING_CELL};

fuzz_target!(|data: &[u8]| {
    match Cell::decode(data) {
        Ok(Some(cell)) => assert_eq!(&cell.encode()[..], data),
        Ok(None) => assert_eq!(&PADDING_CELL[..], data),
        Err(_) => {}
    }
});
