//! The `shallot` program as a library: the command line ([`cmd`]), the local test network
//! launcher ([`testnet`]) and the benchmarks ([`bench`]), so that end-to-end tests and benchmarks drive the same code the
//! binary runs.
//!
//! Where it sits: at the top, above every other crate; it is the only one that links the
//! authority (`shallot-authority`), the relay, the client and the UI (`shallot-tui`) together.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cmd;
pub mod testnet;
