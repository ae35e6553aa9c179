//! Shallot's wire formats, as pure encode and decode functions with no I/O.
//!
//! It sits at the bottom of the layering beside `crypto` (on which it builds): `link`,
//! `directory`, the relay and the client all speak through these types.
//!
//! * [`cell`]: the fixed-size 514-byte cell and the channel commands (`docs/spec.md` §2);
//! * [`relay_msg`]: the messages a circuit carries inside its onion layers, and their
//!   fragmentation into cells (`docs/spec.md` §4.5);
//! * [`flow`]: the end-to-end flow-control windows (`docs/spec.md` §4.6);
//! * [`mailbox`]: the mailbox protocol's messages (`docs/spec.md` §9.3);
//! * [`pow`]: the client puzzle a busy mailbox relay asks for (`docs/spec.md` §9.7);
//! * [`placement`]: the hash ring that says which relays keep a mailbox (`docs/spec.md` §9.2);
//! * [`repair`]: which envelopes go where when the ring changes (`docs/spec.md` §9.6);
//! * [`dir`]: directory documents (descriptors, votes, the consensus) as strict signed text
//!   (`docs/spec.md` §5);
//! * [`dir_cache`]: the directory messages a client sends its guard, acting as a directory
//!   cache, and their answers (`docs/spec.md` §5.13);
//!
//! Decoders read through [`shallot_crypto::reader::Reader`], the bounds-checked reader shared
//! by every parser in Shallot.
//!
//! Every decoder checks every length, refuses trailing bytes, and allocates no more than the
//! input it was given; unknown commands are typed errors. Encoders fail with [`EncodeError`]
//! (a field over its limit: the caller's fault), never with [`DecodeError`].

#![forbid(unsafe_code)]

pub mod cell;
pub mod dir;
pub mod dir_cache;
pub mod encode;
pub mod flow;
pub mod mailbox;
pub mod placement;
pub mod pow;
pub mod relay_msg;
pub mod repair;

pub use encode::EncodeError;
pub use shallot_crypto::reader::{DecodeError, Reader, Writer};
