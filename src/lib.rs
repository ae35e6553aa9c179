//! The `shallot` program as a library: the command line ([`cmd`]), the local test network
//! launcher ([`testnet`]) and the benchmarks ([`bench`]), so that end-to-end tests and benchmarks drive the same code the
//! binary runs.

#![forbid(unsafe_code)]

pub mod bench;
pub mod cmd;
pub mod testnet;
