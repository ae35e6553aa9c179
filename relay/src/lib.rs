//! The Shallot relay daemon (`docs/spec.md` §6): accepts links from clients and relays, runs
//! the ntor handshake for each circuit, peels or adds one onion layer per cell, forwards cells
//! between links, extends circuits on request, serves mailboxes, and enforces resource limits
//! so that nothing a peer sends can crash it or grow its memory without bound.
//!
//! In the layering it sits on `crypto` and `proto` (wire formats), `link` (Noise links and
//! the loops that move their cells) and `directory` (the consensus it follows and publishes
//! to); only the root binary and the end-to-end tests sit above it.
//!
//! # The life of a cell
//!
//! 1. **Read.** Each link runs the link crate's [`shallot_link::read_loop`], started by
//!    `Core::start_channel` (`core.rs`): it opens a record, decodes each cell
//!    ([`shallot_proto::cell::Cell::decode`]), drops padding, and ends the link on a cell that
//!    does not decode.
//! 2. **Dispatch.** `dispatch::handle_cell` (`dispatch.rs`) takes each cell. A CREATE is
//!    admitted or refused there (`handle_create`, with `create::answer` for the ntor
//!    handshake), making a `shell::Circuit` around a fresh `circuit::CircuitMachine`. CREATED,
//!    RELAY and DESTROY are looked up in the link's circuit table (`shell::Link::circuit`) and
//!    become an `Input` from that side (`Prev` toward the client, `Next` away from it).
//! 3. **Decide.** `shell::Circuit::input` locks the circuit and calls
//!    `CircuitMachine::handle(input, now, placement, actions)` (`circuit/machine.rs`), which
//!    owns no socket, task or clock: a RELAY cell from the previous hop is peeled
//!    (`cell_from_prev`) and either forwarded (`Action::Relay(Next, ..)`) or delivered here
//!    (`deliver`: reassembled, checked against the flow-control window, then `act`ed on: a
//!    SENDME opens the window and releases waiting replies, DATA is echoed, EXTEND becomes
//!    `Action::Extend`, a mailbox request `Action::Mailbox`); a cell from the next hop gets this
//!    relay's layer (`cell_from_next`, `Action::Relay(Prev, ..)`); anything that ends the
//!    circuit becomes one `Action::Destroyed` naming the reason and which neighbours to tell.
//! 4. **Act.** Still under the circuit's lock, `Circuit::step` carries the actions out, in
//!    order (so cells leave in the order their nonces were used): cells are queued on the
//!    neighbour's `channel::Channel` (a full queue feeds `Input::QueueFull` back), CREATE is
//!    queued on the next link, extend and mailbox requests are sent to their services over
//!    channels (never spawned, never awaited here), and a teardown forgets the circuit on both
//!    links and queues DESTROY.
//! 5. **Write.** The link crate's [`shallot_link::write_loop`] drains the channel's
//!    [`queue::OutQueue`] (link-level cells first, then one cell per circuit in turn), up to
//!    127 cells to a record. After each cell read, `Core::relieve_memory_pressure` runs if the
//!    relay holds more cells than its cap (`oom.rs` chooses the victims).
//!
//! Extends finish outside the circuit's lock: `extend::serve` looks the target up, gets a link
//! (`extend::link_to`), records the circuit there (`Circuit::attach_next`, which feeds
//! `Input::NextAttached` and so sends CREATE); the relay's one `created_wait` task wakes the
//! circuit with `Input::Timer` when CREATED is due. Mailbox requests are answered by
//! `mailbox::MailboxService::serve`'s tasks through `Circuit::send_when_open`.
//!
//! # Modules
//!
//! * [`config`]: limits and timers, the mailbox's included, with production defaults;
//! * [`keys`]: identity, link and rotating onion keys on disk;
//! * [`daemon`]: starting, observing and stopping a relay;
//! * [`netview`]: the relays this one may extend to, from the consensus it follows;
//! * [`queue`], [`limits`]: the pure bookkeeping behind the resource limits;
//! * [`mailbox`]: the mailbox service and its store, on relays that offer one;
//! * [`stats`]: counters of what it did;
//! * private: `circuit` (the pure circuit state machine), `shell` (its I/O shell and the
//!   link's circuit table), `channel`, `circtable`, `dispatch`, `create`, `oom`, `core`,
//!   `extend`, `created_wait`, `publish`, `dir_cache` (the relay as a directory cache, §5.13).
//!
//! No two files import each other in a circle; `tests/import_cycles.rs` checks it.

#![forbid(unsafe_code)]
#![warn(clippy::await_holding_lock, unreachable_pub)]

mod channel;
mod circtable;
mod circuit;
pub mod config;
mod core;
mod create;
mod created_wait;
pub mod daemon;
mod dir_cache;
mod dispatch;
mod extend;
pub mod keys;
pub mod limits;
pub mod mailbox;
#[cfg(feature = "misbehave")]
pub mod misbehave;
pub mod netview;
mod oom;
mod publish;
pub mod queue;
mod shell;
pub mod stats;

pub use config::{Limits, MailboxLimits, RelayConfig, RepairSettings, StoreLimits, Timing};
pub use daemon::{start, RelayError, RelayHandle};
pub use extend::OPENING_A_LINK;
pub use netview::{NetView, PeerInfo};
