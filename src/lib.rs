//! The `shallot` program as a library: the command line ([`cmd`]) and the local test network
//! launcher ([`testnet`]), so that end-to-end tests and benchmarks drive the same code the
//! binary runs.

#![forbid(unsafe_code)]

pub mod cmd;
pub mod testnet;
