//! Decoders allocate no more than their input: for arbitrary bytes, and for valid messages of
//! every kind, the heap bytes allocated while decoding never exceed the input's length.
//!
//! This is its own test binary with a single test, because it counts every allocation the
//! process makes while a decode runs.
#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shallot_proto::cell::{Cell, CELL_LEN};
use shallot_proto::relay_msg::RelayMsg;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn allocated_by<T>(f: impl FnOnce() -> T) -> u64 {
    let before = dhat::HeapStats::get().total_bytes;
    let out = f();
    let after = dhat::HeapStats::get().total_bytes;
    drop(out);
    after - before
}

#[test]
fn decoding_never_allocates_more_than_the_input() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // The measurement itself counts what it should.
    assert_eq!(allocated_by(|| vec![0u8; 100]), 100);
    let mut runner = TestRunner::new(Config::with_cases(2000));
    // Arbitrary bytes, biased toward valid type bytes so deep paths are reached.
    let inputs =
        (0u8..32, proptest::collection::vec(any::<u8>(), 0..3000)).prop_map(|(k, mut v)| {
            if !v.is_empty() {
                v[0] = k;
            }
            v
        });
    runner
        .run(&inputs, |bytes| {
            let n = allocated_by(|| RelayMsg::decode(&bytes));
            prop_assert!(
                n <= bytes.len() as u64,
                "relay message: {n} bytes for {} input",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
    let cells = proptest::collection::vec(any::<u8>(), CELL_LEN..=CELL_LEN).prop_map(|mut v| {
        v[4] %= 6;
        v
    });
    runner
        .run(&cells, |bytes| {
            let n = allocated_by(|| Cell::decode(&bytes));
            prop_assert!(
                n <= bytes.len() as u64,
                "cell: {n} bytes for {} input",
                bytes.len()
            );
            Ok(())
        })
        .unwrap();
}
