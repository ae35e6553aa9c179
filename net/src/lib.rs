//! Shallot's onion transport for clients (`docs/spec.md` §6, §11): links to relays, circuits
//! built hop by hop with ntor, and relay messages with end-to-end flow control.
//!
//! * [`channel`]: a link to a first hop, shared by the circuits that start there;
//! * [`circuit`]: building a circuit, sending to any hop and receiving from any hop;
//! * [`netdir`]: the consensus the client uses, fetched, cached and refreshed;
//! * [`guards`]: the persistent guard set;
//! * [`circmgr`]: building circuits with retries and keeping some ready;
//! * [`path`]: path selection under the path rules.

#![forbid(unsafe_code)]

pub mod channel;
pub mod circmgr;
pub mod circuit;
pub mod guards;
pub mod netdir;
pub mod path;

pub use channel::ClientChannel;
pub use circuit::{build, Circuit, CircuitError, HopSpec};
