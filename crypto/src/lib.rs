//! Shallot's cryptography, with no I/O beyond reading and writing key files.
//!
//! This crate holds every primitive construction the rest of Shallot builds on:
//!
//! * [`keys`]: long-term key types (ed25519 identity, x25519 ntor onion key, Noise link key)
//!   and [`keyfile`], their on-disk form with strict file permissions;
//! * [`ntor`]: Tor's ntor circuit handshake (`docs/spec.md` §3, tor-spec §5.1.4);
//! * [`onion`]: the per-hop ChaCha20-Poly1305 onion layers (`docs/spec.md` §4);
//! * [`address`]: user addresses that encode an identity key with a typo-proof checksum
//!   (`docs/spec.md` §7);
//! * [`blind`]: Tor's ed25519 key blinding, which names a user's mailbox for each period
//!   (`docs/spec.md` §9.1, rend-spec-v3 appendix A.2);
//! * [`x3dh`]: the X3DH-style start of an end-to-end session: identity Diffie-Hellman keys,
//!   signed prekey bundles, and the key agreement (`docs/spec.md` §10.1–10.3);
//! * [`ratchet`]: the Double Ratchet that carries a session's messages, with forward secrecy
//!   and recovery from compromise (`docs/spec.md` §10.4);
//! * [`sealed`]: sealed-sender envelopes, which only their recipient can open and which say
//!   nothing about their sender (`docs/spec.md` §10.5);
//! * [`reader`]: the bounds-checked reader through which every decoder in Shallot goes. It
//!   lives here, at the bottom of the stack, so that this crate's own encodings use it too.
//!
//! Secrets are zeroized on drop and secret comparisons are constant time.

#![forbid(unsafe_code)]

pub mod address;
pub mod blind;
pub mod hex;
mod kdf;
pub mod keyfile;
pub mod keys;
pub mod ntor;
pub mod onion;
pub mod published;
pub mod ratchet;
pub mod reader;
pub mod sealed;
pub mod x3dh;

pub use address::{Address, AddressError};
pub use keys::{IdentityKeypair, LinkKeypair, OnionKeypair, RelayId};
