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

pub mod e2e;
pub mod mailbox;
pub mod messenger;
pub mod ring;
pub mod store;
