//! The Shallot client (`docs/spec.md` §4, §6, §11): links to relays, circuits built hop by
//! hop with ntor, and relay messages with end-to-end flow control.
//!
//! * [`channel`]: a link to a first hop, shared by the circuits that start there;
//! * [`chat`]: the chat backend, between the messenger and the terminal UI;
//! * [`circuit`]: building a circuit, sending to any hop and receiving from any hop;
//! * [`netdir`]: the consensus the client uses, fetched, cached and refreshed;
//! * [`guards`]: the persistent guard set;
//! * [`circmgr`]: building circuits with retries and keeping some ready;
//! * [`mailbox`]: the mailbox protocol over a circuit;
//! * [`path`]: path selection under the path rules;
//! * [`ring`]: where mailboxes live;
//! * [`store`]: the local SQLite store;
//! * [`messaging`]: envelopes and end-to-end sessions;
//! * [`messenger`]: sending and receiving messages over the network;
//! * [`ui`]: the terminal chat UI, which talks to the rest through channels of events and
//!   actions.

#![forbid(unsafe_code)]

pub mod channel;
pub mod chat;
pub mod circmgr;
pub mod circuit;
pub mod guards;
pub mod mailbox;
pub mod messaging;
pub mod messenger;
pub mod netdir;
pub mod path;
pub mod ring;
pub mod store;
pub mod ui;

pub use channel::ClientChannel;
pub use circuit::{build, Circuit, CircuitError, HopSpec};
