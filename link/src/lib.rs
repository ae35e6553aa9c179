//! Links: the Noise-encrypted TCP connections between clients and relays and between relays
//! (`docs/spec.md` §6.1–6.2).
//!
//! A client opens a link with the Noise `NK` pattern (it knows the relay's static link key from
//! the consensus and stays anonymous); a relay opens one to another relay with `XK` (both prove
//! their static keys). Once the handshake is done, each encrypted record carries a whole number
//! of 514-byte cells, so a record's length reveals only how many cells it holds.
//!
//! * [`handshake`]: the handshake as a pure state machine over `snow`;
//! * [`record`]: sealing and opening records of cells, pure;
//! * [`stream`]: both driven over a tokio `TcpStream`.
//!
//! Directory authorities open probe links ([`stream::connect_probe`]) to test that a relay
//! holds the link key it publishes and vouches for its identity on it.

#![forbid(unsafe_code)]

pub mod handshake;
pub mod record;
pub mod stream;

pub use handshake::{Handshake, LinkKind};
pub use record::{Opener, Sealer, MAX_CELLS_PER_RECORD};
pub use stream::{
    accept, connect_client, connect_probe, connect_relay, Accepted, LinkReader, LinkWriter,
};

use thiserror::Error;

/// Why a link failed.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The TCP connection failed or closed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the link.
    #[error("peer closed the link")]
    Closed,
    /// The handshake did not complete within its time limit.
    #[error("link handshake timed out")]
    Timeout,
    /// The first byte named no link kind this relay speaks.
    #[error("peer sent an unknown link preamble byte {0:#04x}")]
    BadPreamble(u8),
    /// The Noise handshake failed: garbage, or the peer does not hold the expected key.
    #[error("link handshake failed: {0}")]
    Handshake(String),
    /// A record failed to authenticate.
    #[error("link record failed to authenticate")]
    BadRecord,
    /// A record's length is not a whole number of cells (1 to 127) plus the tag.
    #[error("link record of {0} bytes is not a whole number of cells")]
    BadRecordLength(usize),
    /// The link has sent or received 2^64 − 1 records.
    #[error("link nonce exhausted")]
    NonceExhausted,
}

impl From<snow::Error> for LinkError {
    fn from(e: snow::Error) -> Self {
        LinkError::Handshake(e.to_string())
    }
}
