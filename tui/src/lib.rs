//! The terminal chat UI (`shallot chat`, `shallot demo`; `docs/spec.md` §12): a contacts
//! pane, the open conversation with the delivery state of each of my messages, a multi-line
//! input box and a status bar that says what the network is doing; keyboard-driven, with a
//! help overlay listing every key.
//!
//! Where it sits: at the top of the library crates, over `shallot-client`'s messenger and
//! under the `shallot` binary. It is the only crate that uses the terminal libraries
//! (ratatui, crossterm); it re-exports both, since its interface speaks their types (a
//! [`ratatui::Terminal`] to draw on, [`crossterm::event::Event`]s for input), so that its
//! users need not depend on them.
//!
//! The UI talks to the rest of the client only through [`model`]: the backend sends
//! [`AppEvent`]s and receives [`Action`]s over channels, so the network runs in background
//! tasks and the screen never waits for it. The pure parts (state, keys, layout) are
//! separate from the I/O (the event loop and the terminal):
//!
//! * [`model`]: the interface types;
//! * [`app`]: the UI state and how backend events change it; `keys`: what each key does;
//!   [`help`]: the table of every key; [`command`]: the `:` command line and its completion;
//! * [`roster`]: contacts, requests and conversations; [`transcript`]: a conversation laid
//!   out in lines, and scrolling through it; [`dialog`]: the add-contact and accept forms;
//!   [`editor`]: editable text; [`text`]: sanitizing, measuring and wrapping text;
//!   [`clock`]: times and ages; [`clipboard`]: copying through the terminal (OSC 52);
//! * [`config`]: the configuration file (`tui.toml`): [`theme`] (colours and the 16-colour
//!   fallback), [`keymap`] (key bindings), [`notify`] (bell and desktop notifications);
//! * [`external_editor`]: writing a long message in `$EDITOR`;
//! * [`render`]: drawing, and [`render_to_text`] for tests and captures;
//! * [`event_loop`]: [`run`], the loop over input and backend events;
//! * [`terminal`]: [`run_in_terminal`], the real terminal with a guaranteed restore, and
//!   [`spawn_terminal_input`];
//! * [`chat`]: the chat backend, between the messenger and the UI.

#![forbid(unsafe_code)]
#![warn(clippy::await_holding_lock, unreachable_pub)]

pub use crossterm;
pub use ratatui;

pub mod app;
pub mod chat;
pub mod clipboard;
pub mod clock;
pub mod command;
pub mod config;
pub mod dialog;
pub mod editor;
pub mod event_loop;
pub mod external_editor;
pub mod help;
pub mod keymap;
mod keys;
pub mod model;
pub mod notify;
pub mod render;
pub mod roster;
pub mod shared_backend;
pub mod terminal;
#[cfg(test)]
mod test_support;
pub mod text;
pub mod theme;
pub mod transcript;

pub use app::{App, Focus, Overlay};
pub use config::{ConfigError, UiConfig};
pub use event_loop::run;
pub use model::{
    Action, AppEvent, ContactRequest, ContactView, Delivery, MailboxState, MessageView,
    NetworkDetails, NetworkStatus, Offline, UiOptions,
};
pub use render::render_to_text;
pub use terminal::{run_in_terminal, spawn_terminal_input, UiError};
