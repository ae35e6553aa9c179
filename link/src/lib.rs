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
//! * [`stream`]: both driven over a tokio `TcpStream`, and the authorities' probe links
//!   ([`stream::connect_probe`]), on which a relay proves the link key it publishes and vouches
//!   for its identity;
//! * [`error`]: [`LinkError`], and which failures are worth retrying;
//! * [`meter`]: what each link's buffers hold, counted link by link and in a shared total;
//! * [`pump`]: the two loops that move cells over an open link, one implementation shared by
//!   relays and clients.
//!
//! In the layering it sits on `crypto` and `proto` and under everything that talks to another
//! node: `directory` (reachability probes), the relay, and the client's transport.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod error;
pub mod handshake;
pub mod meter;
pub mod pump;
pub mod record;
pub mod stream;

pub use error::LinkError;
pub use handshake::{Handshake, LinkKind};
pub use meter::{BufferMeter, BufferTotal};
pub use pump::{read_loop, write_loop, CellQueue, LinkSignals, ReadEnd};
pub use record::{Opener, Sealer, MAX_CELLS_PER_RECORD};
pub use stream::{
    accept, connect_client, connect_probe, connect_relay, Accepted, LinkReader, LinkWriter,
};
