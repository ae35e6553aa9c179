//! The fixed-size cell and its channel commands (`docs/spec.md` §2).
//!
//! Every cell is 514 bytes: a 4-byte big-endian circuit id, a 1-byte command and a 509-byte
//! payload. Commands are padding, create, created, relay and destroy. Fields inside the
//! payload are followed by zero padding, which the decoder checks.
//!
//! A padding cell belongs to no circuit and says nothing: it is 514 zero bytes
//! ([`PADDING_CELL`]), and [`Cell::decode`] reads it as `None`. Every other cell is a [`Cell`],
//! whose [`CircId`] cannot be zero.

use std::num::NonZeroU32;

use shallot_crypto::ntor::{ClientMessage, ServerMessage, CLIENT_MESSAGE_LEN, SERVER_MESSAGE_LEN};
use shallot_crypto::onion::{Payload, CELL_PAYLOAD_LEN, MAX_HOPS};

use shallot_crypto::reader::{DecodeError, Reader};

/// Bytes in every cell.
pub const CELL_LEN: usize = 4 + 1 + CELL_PAYLOAD_LEN;
/// The handshake type number of ntor (as in Tor).
pub const HTYPE_NTOR: u16 = 2;

/// A padding cell: circuit id 0, command 0, a zero payload.
pub const PADDING_CELL: [u8; CELL_LEN] = [0u8; CELL_LEN];

/// A circuit's id on one link: never zero (zero is the padding cell's). The side that opened
/// the link picks ids with the top bit set; the other side picks ids with it clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircId(NonZeroU32);

impl CircId {
    /// The top bit, set on ids chosen by the side that opened the link.
    pub const INITIATOR_BIT: u32 = 0x8000_0000;

    /// The id `v`, unless it is zero.
    pub const fn new(v: u32) -> Option<CircId> {
        match NonZeroU32::new(v) {
            Some(v) => Some(CircId(v)),
            None => None,
        }
    }

    /// An id made from random bits for the side that opened the link (`opened_link`) or the
    /// other side: the top bit is set or cleared to match. `None` when that leaves zero (draw
    /// again).
    pub const fn from_random(bits: u32, opened_link: bool) -> Option<CircId> {
        if opened_link {
            CircId::new(bits | Self::INITIATOR_BIT)
        } else {
            CircId::new(bits & !Self::INITIATOR_BIT)
        }
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// Whether this id was chosen by the side that opened the link.
    pub const fn chosen_by_initiator(self) -> bool {
        self.get() & Self::INITIATOR_BIT != 0
    }
}

impl std::fmt::Display for CircId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#010x}", self.get())
    }
}

/// The command byte of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChanCmd {
    /// Link padding; ignored.
    Padding = 0,
    /// Opens a circuit: an ntor client message.
    Create = 1,
    /// Answers create: an ntor server message.
    Created = 2,
    /// Carries onion-layered relay payload.
    Relay = 3,
    /// Tears a circuit down, with a reason.
    Destroy = 4,
}

impl TryFrom<u8> for ChanCmd {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => ChanCmd::Padding,
            1 => ChanCmd::Create,
            2 => ChanCmd::Created,
            3 => ChanCmd::Relay,
            4 => ChanCmd::Destroy,
            other => return Err(DecodeError::UnknownCommand(other)),
        })
    }
}

/// Why a circuit was destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyReason {
    /// No reason given.
    None,
    /// A peer broke the protocol (including a layer that failed to authenticate).
    Protocol,
    /// An internal error.
    Internal,
    /// The client asked for it.
    Requested,
    /// A resource limit was hit (queues, memory, circuits per link).
    ResourceLimit,
    /// The next hop could not be reached.
    ConnectFailed,
    /// A handshake or build step took too long.
    Timeout,
    /// A link carrying the circuit closed.
    LinkClosed,
    /// The circuit has done its work.
    Finished,
    /// The handshake used an onion key the relay no longer accepts.
    OnionKey,
    /// The relay is shutting down.
    ShuttingDown,
    /// A reason this version does not know, kept as received.
    Other(u8),
}

impl DestroyReason {
    /// The reason's byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            DestroyReason::None => 0,
            DestroyReason::Protocol => 1,
            DestroyReason::Internal => 2,
            DestroyReason::Requested => 3,
            DestroyReason::ResourceLimit => 4,
            DestroyReason::ConnectFailed => 5,
            DestroyReason::Timeout => 6,
            DestroyReason::LinkClosed => 7,
            DestroyReason::Finished => 8,
            DestroyReason::OnionKey => 9,
            DestroyReason::ShuttingDown => 10,
            DestroyReason::Other(v) => v,
        }
    }

    /// The reason a byte names.
    pub fn from_byte(v: u8) -> Self {
        match v {
            0 => DestroyReason::None,
            1 => DestroyReason::Protocol,
            2 => DestroyReason::Internal,
            3 => DestroyReason::Requested,
            4 => DestroyReason::ResourceLimit,
            5 => DestroyReason::ConnectFailed,
            6 => DestroyReason::Timeout,
            7 => DestroyReason::LinkClosed,
            8 => DestroyReason::Finished,
            9 => DestroyReason::OnionKey,
            10 => DestroyReason::ShuttingDown,
            other => DestroyReason::Other(other),
        }
    }
}

impl std::fmt::Display for DestroyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            DestroyReason::None => "no reason given",
            DestroyReason::Protocol => "protocol violation",
            DestroyReason::Internal => "internal error",
            DestroyReason::Requested => "closed on request",
            DestroyReason::ResourceLimit => "resource limit reached",
            DestroyReason::ConnectFailed => "could not reach the next relay",
            DestroyReason::Timeout => "timed out",
            DestroyReason::LinkClosed => "a link on the circuit closed",
            DestroyReason::Finished => "finished",
            DestroyReason::OnionKey => "unknown or expired onion key",
            DestroyReason::ShuttingDown => "relay shutting down",
            DestroyReason::Other(v) => return write!(f, "reason code {v}"),
        };
        f.write_str(text)
    }
}

/// The body of a create cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The depth (1-based) at which the new hop sits on its circuit.
    pub depth: u8,
    /// The ntor client message.
    pub handshake: ClientMessage,
}

/// What a cell on a circuit says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChanMsg {
    /// Open a circuit.
    Create(Create),
    /// Circuit opened.
    Created(ServerMessage),
    /// Onion-layered payload.
    Relay(Box<Payload>),
    /// Tear the circuit down.
    Destroy(DestroyReason),
}

impl ChanMsg {
    /// The command byte this message is sent with.
    pub fn command(&self) -> ChanCmd {
        match self {
            ChanMsg::Create(_) => ChanCmd::Create,
            ChanMsg::Created(_) => ChanCmd::Created,
            ChanMsg::Relay(_) => ChanCmd::Relay,
            ChanMsg::Destroy(_) => ChanCmd::Destroy,
        }
    }
}

/// A decoded cell on a circuit (padding cells, which belong to none, decode to `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The circuit it belongs to.
    pub circ_id: CircId,
    /// What it says.
    pub msg: ChanMsg,
}

impl Cell {
    /// A cell on circuit `circ_id`.
    pub fn new(circ_id: CircId, msg: ChanMsg) -> Self {
        Cell { circ_id, msg }
    }

    /// Encodes into `out`, which must be [`CELL_LEN`] bytes.
    pub fn encode_into(&self, out: &mut [u8; CELL_LEN]) {
        out[..4].copy_from_slice(&self.circ_id.get().to_be_bytes());
        out[4] = self.msg.command() as u8;
        let payload = &mut out[5..];
        match &self.msg {
            ChanMsg::Create(c) => {
                payload.fill(0);
                payload[0] = c.depth;
                payload[1..3].copy_from_slice(&HTYPE_NTOR.to_be_bytes());
                payload[3..5].copy_from_slice(&(CLIENT_MESSAGE_LEN as u16).to_be_bytes());
                payload[5..5 + CLIENT_MESSAGE_LEN].copy_from_slice(&c.handshake.to_bytes());
            }
            ChanMsg::Created(s) => {
                payload.fill(0);
                payload[..2].copy_from_slice(&(SERVER_MESSAGE_LEN as u16).to_be_bytes());
                payload[2..2 + SERVER_MESSAGE_LEN].copy_from_slice(&s.to_bytes());
            }
            ChanMsg::Relay(p) => payload.copy_from_slice(&p[..]),
            ChanMsg::Destroy(reason) => {
                payload.fill(0);
                payload[0] = reason.to_byte();
            }
        }
    }

    /// Encodes into a new array.
    pub fn encode(&self) -> [u8; CELL_LEN] {
        let mut out = [0u8; CELL_LEN];
        self.encode_into(&mut out);
        out
    }

    /// Decodes exactly one cell: `None` for a padding cell, which belongs to no circuit.
    pub fn decode(bytes: &[u8]) -> Result<Option<Cell>, DecodeError> {
        let mut r = Reader::new(bytes);
        let circ_id = CircId::new(r.u32()?);
        let command = ChanCmd::try_from(r.u8()?)?;
        let payload = r.take(CELL_PAYLOAD_LEN)?;
        r.finish()?;
        let bad_id = DecodeError::BadValue {
            field: "circuit id",
            reason: "zero is for padding cells only, and padding uses zero",
        };
        if (command == ChanCmd::Padding) != circ_id.is_none() {
            return Err(bad_id);
        }
        let mut p = Reader::new(payload);
        let msg = match command {
            ChanCmd::Padding => {
                p.finish_zero_padded()?;
                return Ok(None);
            }
            ChanCmd::Create => {
                let depth = p.u8()?;
                if depth == 0 || depth > MAX_HOPS {
                    return Err(DecodeError::BadValue {
                        field: "create depth",
                        reason: "outside the allowed circuit length",
                    });
                }
                if p.u16()? != HTYPE_NTOR {
                    return Err(DecodeError::BadValue {
                        field: "handshake type",
                        reason: "only ntor is supported",
                    });
                }
                let hs: [u8; CLIENT_MESSAGE_LEN] = expect_len(p.u16_prefixed()?)?;
                p.finish_zero_padded()?;
                ChanMsg::Create(Create {
                    depth,
                    handshake: ClientMessage::from_bytes(&hs),
                })
            }
            ChanCmd::Created => {
                let hs: [u8; SERVER_MESSAGE_LEN] = expect_len(p.u16_prefixed()?)?;
                p.finish_zero_padded()?;
                ChanMsg::Created(ServerMessage::from_bytes(&hs))
            }
            ChanCmd::Relay => {
                let mut out = Box::new([0u8; CELL_PAYLOAD_LEN]);
                out.copy_from_slice(p.take_rest());
                ChanMsg::Relay(out)
            }
            ChanCmd::Destroy => {
                let reason = DestroyReason::from_byte(p.u8()?);
                p.finish_zero_padded()?;
                ChanMsg::Destroy(reason)
            }
        };
        let circ_id = circ_id.ok_or(bad_id)?;
        Ok(Some(Cell { circ_id, msg }))
    }
}

fn expect_len<const N: usize>(bytes: &[u8]) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| DecodeError::BadValue {
        field: "handshake length",
        reason: "not the length ntor uses",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shallot_crypto::keys::RelayId;

    fn arb_msg() -> impl Strategy<Value = ChanMsg> {
        prop_oneof![
            (
                1u8..=MAX_HOPS,
                any::<[u8; 20]>(),
                any::<[u8; 32]>(),
                any::<[u8; 32]>()
            )
                .prop_map(|(depth, id, b, x)| ChanMsg::Create(Create {
                    depth,
                    handshake: ClientMessage {
                        relay_id: RelayId(id),
                        onion_key: b,
                        client_key: x
                    }
                })),
            (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(y, auth)| ChanMsg::Created(
                ServerMessage {
                    server_key: y,
                    auth
                }
            )),
            proptest::collection::vec(any::<u8>(), CELL_PAYLOAD_LEN).prop_map(|v| {
                let mut p = Box::new([0u8; CELL_PAYLOAD_LEN]);
                p.copy_from_slice(&v);
                ChanMsg::Relay(p)
            }),
            any::<u8>().prop_map(|b| ChanMsg::Destroy(DestroyReason::from_byte(b))),
        ]
    }

    proptest! {
        #[test]
        fn cells_round_trip(circ in 1u32.., msg in arb_msg()) {
            let cell = Cell::new(CircId::new(circ).unwrap(), msg);
            prop_assert_eq!(Cell::decode(&cell.encode()).unwrap(), Some(cell));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Cell::decode(&bytes);
        }

        #[test]
        fn arbitrary_full_cells_never_panic(bytes in proptest::collection::vec(any::<u8>(), CELL_LEN)) {
            match Cell::decode(&bytes) {
                // Whatever decodes re-encodes to the same bytes: the encoding is canonical.
                Ok(Some(cell)) => prop_assert_eq!(&cell.encode()[..], &bytes[..]),
                Ok(None) => prop_assert_eq!(&PADDING_CELL[..], &bytes[..]),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn padding_decodes_to_no_cell() {
        assert_eq!(Cell::decode(&PADDING_CELL), Ok(None));
    }

    #[test]
    fn circuit_ids_cannot_be_zero_and_keep_their_parity() {
        assert_eq!(CircId::new(0), None);
        assert_eq!(CircId::from_random(0, false), None);
        let mine = CircId::from_random(0, true).unwrap();
        assert!(mine.chosen_by_initiator());
        assert_eq!(mine.get(), CircId::INITIATOR_BIT);
        let theirs = CircId::from_random(u32::MAX, false).unwrap();
        assert!(!theirs.chosen_by_initiator());
        assert_eq!(theirs.get(), u32::MAX >> 1);
        assert_eq!(mine.to_string(), "0x80000000");
    }

    #[test]
    fn bad_cells_are_typed_errors() {
        let id = |v| CircId::new(v).unwrap();
        let mut raw = Cell::new(id(5), ChanMsg::Destroy(DestroyReason::Protocol)).encode();
        raw[4] = 99;
        assert_eq!(Cell::decode(&raw), Err(DecodeError::UnknownCommand(99)));
        raw[4] = ChanCmd::Destroy as u8;
        raw[100] = 1;
        assert_eq!(Cell::decode(&raw), Err(DecodeError::NonZeroPadding));
        assert!(matches!(
            Cell::decode(&raw[..100]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = raw.to_vec();
        long.push(0);
        assert_eq!(Cell::decode(&long), Err(DecodeError::TrailingBytes(1)));
        // Padding on a circuit, and a circuit message on id 0.
        let mut pad = PADDING_CELL;
        pad[3] = 3;
        assert!(matches!(
            Cell::decode(&pad),
            Err(DecodeError::BadValue {
                field: "circuit id",
                ..
            })
        ));
        let mut destroy0 = Cell::new(id(1), ChanMsg::Destroy(DestroyReason::None)).encode();
        destroy0[3] = 0;
        assert!(matches!(
            Cell::decode(&destroy0),
            Err(DecodeError::BadValue {
                field: "circuit id",
                ..
            })
        ));
        let mut create = Cell::new(
            id(9),
            ChanMsg::Create(Create {
                depth: 1,
                handshake: ClientMessage::from_bytes(&[1u8; CLIENT_MESSAGE_LEN]),
            }),
        )
        .encode();
        create[5] = 0;
        assert!(matches!(
            Cell::decode(&create),
            Err(DecodeError::BadValue {
                field: "create depth",
                ..
            })
        ));
        create[5] = 1;
        create[7] = 7;
        assert!(matches!(
            Cell::decode(&create),
            Err(DecodeError::BadValue {
                field: "handshake type",
                ..
            })
        ));
    }
}
