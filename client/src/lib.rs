//! The Shallot client (`docs/spec.md` §9, §10): end-to-end sessions, the mailbox client, where
//! mailboxes live, the local store, and the messenger that puts them to work over
//! `shallot-net`'s circuits.
//!
//! * [`mailbox`]: the mailbox protocol over a circuit;
//! * [`ring`]: where mailboxes live;
//! * [`store`]: the local SQLite store;
//! * [`e2e`]: envelopes and end-to-end sessions;
//! * [`messenger`]: sending and receiving messages over the network.

#![forbid(unsafe_code)]
#![warn(clippy::await_holding_lock, unreachable_pub)]

pub mod e2e;
pub mod err;
pub mod ids;
pub mod mailbox;
pub mod messenger;
pub mod ring;
pub mod store;

pub use err::MessengerError;
pub use ids::{EnvelopeId, MessageId};
pub use messenger::Messenger;
