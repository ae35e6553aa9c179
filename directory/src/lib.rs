//! Shallot's directory: the authorities that list relays, and the client side that checks
//! what they publish (`docs/spec.md` §5).
//!
//! * [`network`]: `network.toml`, the authorities a node trusts and the network parameters;
//! * [`compute`]: the consensus computed from votes and the descriptors they name, pure and
//!   deterministic; [`shared_random`]: its shared random values; [`equivocation`]: catching an
//!   authority that shows different votes to different peers; [`routable`]: address rules;
//! * [`probe`]: the reachability probe, the authority's side and the relay's answer;
//! * [`verify`]: client-side consensus verification and the on-disk cache;
//! * [`fetch`]: HTTP client helpers: descriptor upload (relays), consensus fetch (clients),
//!   compressed or as a diff from the consensus held; [`compress`]: zstd with a capped
//!   decompressed size; [`day_bases`]: the last day's consensuses, which authorities and
//!   relay caches keep as bases for the diff to a client back after its consensus expired.
//!
//! The documents themselves live in [`shallot_proto::dir`].
//!
//! Where it sits: above `shallot-proto` and `shallot-link` (the probe is a link handshake),
//! below `shallot-net`, `shallot-relay` and the authority daemon (`shallot-authority`, which
//! runs these rules behind its HTTP server). It has no HTTP server and no HTTP library beyond
//! the `http` crate's request and status types, so relays and clients that depend on it do
//! not compile one. Parsing yields an [`UnverifiedConsensus`]; only
//! [`UnverifiedConsensus::verify`] yields the [`VerifiedConsensus`] the layers above accept.

#![forbid(unsafe_code)]

pub mod compress;
pub mod compute;
pub mod day_bases;
pub mod diff_queue;
pub mod equivocation;
pub mod fetch;
pub mod http_date;
pub mod network;
pub mod probe;
pub mod routable;
pub mod schedule;
pub mod shared_random;
pub mod verify;

#[cfg(test)]
mod test_consensus;

pub use fetch::{fetch_consensus, upload_descriptor, FetchError, HttpError, UploadError};
pub use network::{AuthorityInfo, NetworkError, NetworkFile, NetworkParams};
pub use verify::{
    verify_consensus, ConsensusCache, UnverifiedConsensus, VerifiedConsensus, VerifyError,
};
