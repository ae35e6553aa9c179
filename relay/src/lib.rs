//! The Shallot relay daemon (`docs/spec.md` §6): accepts links from clients and relays, runs
//! the ntor handshake for each circuit, peels or adds one onion layer per cell, forwards cells
//! between links, extends circuits on request, and enforces resource limits so that nothing a
//! peer sends can crash it or grow its memory without bound.
//!
//! * [`config`]: limits and timers, with production defaults;
//! * [`keys`]: identity, link and rotating onion keys on disk;
//! * [`daemon`]: starting, observing and stopping a relay;
//! * [`netview`]: the relays this one may extend to, from the consensus it follows;
//! * [`queue`], [`limits`]: the pure bookkeeping behind the resource limits;
//! * [`mailbox`]: the mailbox service and its store, on relays that offer one;
//! * [`stats`]: counters of what it did.

#![forbid(unsafe_code)]

mod channel;
mod circuit;
pub mod config;
mod core;
pub mod daemon;
mod endpoint;
mod extend;
mod handler;
pub mod keys;
pub mod limits;
pub mod mailbox;
pub mod netview;
mod publish;
pub mod queue;
pub mod stats;

pub use config::{Limits, RelayConfig, Timing};
pub use daemon::{start, RelayError, RelayHandle};
pub use netview::{NetView, PeerInfo};
