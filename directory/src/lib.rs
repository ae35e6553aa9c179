//! Shallot's directory: the authorities that list relays, and the client side that checks
//! what they publish (`docs/spec.md` §5).
//!
//! * [`network`]: `network.toml`, the authorities a node trusts and the network parameters;
//! * [`compute`]: the consensus computed from votes, pure and deterministic;
//! * [`authority`]: the authority server (descriptors, reachability, voting, serving);
//! * [`verify`]: client-side consensus verification and the on-disk cache;
//! * [`fetch`]: HTTP client helpers: descriptor upload (relays), consensus fetch (clients).
//!
//! The documents themselves live in [`shallot_proto::dir`].

#![forbid(unsafe_code)]

pub mod authority;
pub mod compute;
pub mod fetch;
pub mod network;
pub mod verify;

pub use authority::{Authority, AuthorityConfig, AuthorityError, AuthorityHandle};
pub use fetch::{fetch_consensus, upload_descriptor, FetchError, HttpError, UploadError};
pub use network::{AuthorityInfo, NetworkError, NetworkFile, NetworkParams};
pub use verify::{verify_consensus, ConsensusCache, VerifyError};
