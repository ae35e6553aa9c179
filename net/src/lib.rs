//! Shallot's onion transport for clients (`docs/spec.md` §6, §11): the consensus the client
//! uses, the paths it chooses, its guards, the links to its first hops, circuits built hop by
//! hop with ntor, and the manager that keeps circuits ready.
//!
//! Where it sits: above `shallot-link` (links), `shallot-directory` (consensus verification and
//! fetching), `shallot-proto` (cells, relay messages) and `shallot-crypto` (ntor, onion layers);
//! below `shallot-client` (the messenger), which asks it for circuits to mailbox relays. It
//! knows nothing of messages, mailboxes or terminals.
//!
//! * [`netdir`]: the consensus, fetched, cached and refreshed;
//! * [`dir_cache`]: fetching the consensus from the guards, acting as directory caches;
//! * [`path`]: path selection under the path rules (pure);
//! * [`guards`]: the persistent guard set;
//! * [`channel`]: a link to a first hop, shared by the circuits that start there;
//! * [`circuit`]: a circuit: [`circuit::state`], the protocol as a state machine without I/O,
//!   and the thin shell [`Circuit`] that drives it over a channel;
//! * [`circmgr`]: building circuits with time limits and retries, and keeping some ready,
//!   over a [`circmgr::CircuitBuilder`] seam;
//! * [`err`]: [`NetError`], the error of this layer.

#![forbid(unsafe_code)]
#![warn(clippy::await_holding_lock, unreachable_pub)]

pub mod channel;
pub mod circmgr;
pub mod circuit;
pub mod dir_cache;
pub mod err;
pub mod guards;
pub mod netdir;
pub mod path;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use channel::ClientChannel;
pub use circuit::{build, Circuit, HopNum, HopSpec};
pub use err::{BuildStep, NetError, Violation};
