//! Relay messages: what a circuit carries inside its onion layers (`docs/spec.md` §4.5).
//!
//! A message is a type byte followed by its fields. It travels in one or more cells: each
//! cell's body (the bytes the onion layer delivers, [`shallot_crypto::onion::body_len`] of
//! them) is a fragment `flags(1) ‖ len(2) ‖ data(len) ‖ zero padding`, where flag bit 0 marks
//! the last fragment of a message. Cells on a circuit arrive in order, so fragments need no
//! sequence numbers; a [`Reassembler`] joins them and refuses messages over its limit.

use shallot_crypto::keys::RelayId;
use shallot_crypto::ntor::{ClientMessage, ServerMessage, CLIENT_MESSAGE_LEN, SERVER_MESSAGE_LEN};

use shallot_crypto::reader::{DecodeError, Reader, Writer};

use crate::dir_cache::DirMsg;
use crate::encode::{check_len, EncodeError};
use crate::mailbox::MailboxMsg;

/// Bytes of fragment header in each cell body.
pub const FRAGMENT_HEADER_LEN: usize = 3;
/// The largest relay message, encoded, that any circuit carries.
pub const MAX_RELAY_MSG_LEN: usize = 24 * 1024;
const FLAG_FINAL: u8 = 0x01;

/// The type byte of each relay message.
mod kind {
    pub(super) const EXTEND: u8 = 1;
    pub(super) const EXTENDED: u8 = 2;
    pub(super) const SENDME: u8 = 3;
    pub(super) const DATA: u8 = 4;
}

/// Ask the last hop to extend the circuit to another relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    /// The fingerprint of the relay to extend to; it must be in the relay's consensus.
    pub target: RelayId,
    /// The ntor client message for the new hop.
    pub handshake: ClientMessage,
}

/// A message carried by a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayMsg {
    /// Extend the circuit by one hop.
    Extend(Extend),
    /// The circuit was extended: the new hop's ntor reply.
    Extended(ServerMessage),
    /// Flow control: the sender of this message has consumed another window increment of
    /// cells (`docs/spec.md` §4.6).
    Sendme,
    /// End-to-end data. A relay answers data addressed to it with the same bytes (an echo
    /// used by diagnostics and benchmarks).
    Data(Vec<u8>),
    /// A mailbox protocol message (`docs/spec.md` §9.3).
    Mailbox(MailboxMsg),
    /// A directory request to a relay acting as a directory cache, or its answer
    /// (`docs/spec.md` §5.13).
    Dir(DirMsg),
}

impl RelayMsg {
    /// Whether this message counts against the circuit's flow-control window.
    pub fn counts_for_flow_control(&self) -> bool {
        !matches!(self, RelayMsg::Sendme)
    }

    /// Encodes the message (without fragment framing).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        match self {
            RelayMsg::Extend(e) => {
                out.put_u8(kind::EXTEND);
                out.put(&e.target.0);
                out.put(&e.handshake.to_bytes());
            }
            RelayMsg::Extended(s) => {
                out.put_u8(kind::EXTENDED);
                out.put(&s.to_bytes());
            }
            RelayMsg::Sendme => out.put_u8(kind::SENDME),
            RelayMsg::Data(d) => {
                out.put_u8(kind::DATA);
                out.put(d);
            }
            RelayMsg::Mailbox(m) => m.encode_into(&mut out)?,
            RelayMsg::Dir(m) => m.encode_into(&mut out),
        }
        check_len("relay message", out.len(), MAX_RELAY_MSG_LEN)?;
        Ok(out)
    }

    /// Decodes one whole message.
    pub fn decode(bytes: &[u8]) -> Result<RelayMsg, DecodeError> {
        if bytes.len() > MAX_RELAY_MSG_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_RELAY_MSG_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        let msg = match r.u8()? {
            kind::EXTEND => {
                let target = RelayId(r.array()?);
                let hs: [u8; CLIENT_MESSAGE_LEN] = r.array()?;
                RelayMsg::Extend(Extend {
                    target,
                    handshake: ClientMessage::from_bytes(&hs),
                })
            }
            kind::EXTENDED => {
                let hs: [u8; SERVER_MESSAGE_LEN] = r.array()?;
                RelayMsg::Extended(ServerMessage::from_bytes(&hs))
            }
            kind::SENDME => RelayMsg::Sendme,
            kind::DATA => RelayMsg::Data(r.take_rest().to_vec()),
            k if MailboxMsg::is_mailbox_kind(k) => {
                RelayMsg::Mailbox(MailboxMsg::decode_fields(k, &mut r)?)
            }
            k if DirMsg::is_dir_kind(k) => RelayMsg::Dir(DirMsg::decode_fields(k, &mut r)?),
            other => return Err(DecodeError::UnknownRelayMessage(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Splits an encoded message into cell bodies of `body_len` bytes each.
pub fn fragment(msg: &[u8], body_len: usize) -> Result<Vec<Vec<u8>>, EncodeError> {
    let chunk = body_len
        .checked_sub(FRAGMENT_HEADER_LEN)
        .filter(|&c| c > 0)
        .ok_or(EncodeError::BodyTooShort(body_len))?;
    check_len("relay message", msg.len(), MAX_RELAY_MSG_LEN)?;
    let pieces: Vec<&[u8]> = if msg.is_empty() {
        vec![&[][..]]
    } else {
        msg.chunks(chunk).collect()
    };
    let last = pieces.len() - 1;
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut body = vec![0u8; body_len];
            body[0] = if i == last { FLAG_FINAL } else { 0 };
            body[1..3].copy_from_slice(&(piece.len() as u16).to_be_bytes());
            body[3..3 + piece.len()].copy_from_slice(piece);
            body
        })
        .collect())
}

/// Bytes of each piece an unfinished message is kept in. Pieces all of one size are reused
/// exactly by the allocator, so many unfinished messages growing side by side do not fragment
/// the heap (as buffers doubling in turn would), and a message holds less than one piece more
/// than it has received.
pub const REASSEMBLY_PIECE: usize = 2048;

/// Joins fragments back into messages, in order, refusing any message over its limit.
#[derive(Debug)]
pub struct Reassembler {
    /// The unfinished message, in pieces of [`REASSEMBLY_PIECE`] bytes' capacity.
    pieces: Vec<Vec<u8>>,
    len: usize,
    max: usize,
}

impl Reassembler {
    /// A reassembler that refuses messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        Reassembler {
            pieces: Vec::new(),
            len: 0,
            max,
        }
    }

    /// Whether a message is partly received.
    pub fn is_partial(&self) -> bool {
        self.len > 0
    }

    /// Bytes allocated for the unfinished message (capacity, not length): what it costs in
    /// memory.
    pub fn held_bytes(&self) -> usize {
        self.pieces.capacity() * std::mem::size_of::<Vec<u8>>()
            + self.pieces.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Adds one cell body; returns a whole message when this fragment completes one.
    pub fn push(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
        let mut r = Reader::new(body);
        let flags = r.u8()?;
        if flags & !FLAG_FINAL != 0 {
            return Err(DecodeError::BadValue {
                field: "fragment flags",
                reason: "unknown flag bits set",
            });
        }
        let data = r.u16_prefixed()?;
        r.finish_zero_padded()?;
        if self.len + data.len() > self.max {
            return Err(DecodeError::TooLong {
                len: self.len + data.len(),
                max: self.max,
            });
        }
        let last = flags & FLAG_FINAL != 0;
        if last && self.len == 0 {
            // A message in one cell: no pieces needed.
            self.pieces = Vec::new();
            return Ok(Some(data.to_vec()));
        }
        let mut rest = data;
        while !rest.is_empty() {
            let piece = match self.pieces.last_mut() {
                Some(p) if p.len() < REASSEMBLY_PIECE => p,
                _ => {
                    self.pieces.push(Vec::with_capacity(REASSEMBLY_PIECE));
                    match self.pieces.last_mut() {
                        Some(p) => p,
                        None => break,
                    }
                }
            };
            let n = (REASSEMBLY_PIECE - piece.len()).min(rest.len());
            piece.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        self.len += data.len();
        if !last {
            return Ok(None);
        }
        let mut msg = Vec::with_capacity(self.len);
        for piece in std::mem::take(&mut self.pieces) {
            msg.extend_from_slice(&piece);
        }
        self.len = 0;
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_relay_msg() -> impl Strategy<Value = RelayMsg> {
        prop_oneof![
            (any::<[u8; 20]>(), any::<[u8; 84]>()).prop_map(|(t, h)| RelayMsg::Extend(Extend {
                target: RelayId(t),
                handshake: ClientMessage::from_bytes(&h)
            })),
            any::<[u8; 64]>().prop_map(|h| RelayMsg::Extended(ServerMessage::from_bytes(&h))),
            Just(RelayMsg::Sendme),
            proptest::collection::vec(any::<u8>(), 0..2000).prop_map(RelayMsg::Data),
            crate::mailbox::tests::arb_mailbox_msg().prop_map(RelayMsg::Mailbox),
            crate::dir_cache::tests::arb_dir_msg().prop_map(RelayMsg::Dir),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(msg in arb_relay_msg()) {
            prop_assert_eq!(RelayMsg::decode(&msg.encode().unwrap()).unwrap(), msg);
        }

        #[test]
        fn fragments_round_trip(msg in arb_relay_msg(), body_len in 20usize..=492) {
            let bytes = msg.encode().unwrap();
            let mut r = Reassembler::new(MAX_RELAY_MSG_LEN);
            let frags = fragment(&bytes, body_len).unwrap();
            let n = frags.len();
            for (i, f) in frags.into_iter().enumerate() {
                prop_assert_eq!(f.len(), body_len);
                let out = r.push(&f).unwrap();
                if i + 1 == n {
                    prop_assert_eq!(out.as_deref(), Some(&bytes[..]));
                } else {
                    prop_assert!(out.is_none());
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = RelayMsg::decode(&bytes);
            let _ = Reassembler::new(1000).push(&bytes);
        }
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert_eq!(
            RelayMsg::decode(&[200]),
            Err(DecodeError::UnknownRelayMessage(200))
        );
        assert!(matches!(
            RelayMsg::decode(&[]),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            RelayMsg::decode(&[kind::SENDME, 0]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(matches!(
            RelayMsg::decode(&[kind::EXTENDED, 1, 2]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    /// An unfinished message is held in equal pieces: what it costs grows with what it has
    /// received, less than one piece ahead, and is all freed when it completes.
    #[test]
    fn unfinished_messages_are_held_in_pieces() {
        let msg: Vec<u8> = (0..MAX_RELAY_MSG_LEN).map(|i| i as u8).collect();
        let frags = fragment(&msg, 509).unwrap();
        let mut r = Reassembler::new(MAX_RELAY_MSG_LEN);
        assert_eq!(r.held_bytes(), 0);
        let mut received = 0;
        for f in &frags[..frags.len() - 1] {
            assert_eq!(r.push(f).unwrap(), None);
            received += 509 - FRAGMENT_HEADER_LEN;
            let held = r.held_bytes();
            assert!(held >= received, "{held} < {received}");
            let pieces = received.div_ceil(REASSEMBLY_PIECE);
            assert!(
                held <= pieces * REASSEMBLY_PIECE + 32 * 24,
                "{held} for {received}"
            );
        }
        assert_eq!(r.push(&frags[frags.len() - 1]).unwrap(), Some(msg));
        assert_eq!(r.held_bytes(), 0);
        assert!(!r.is_partial());
        // A message in one cell never takes a piece.
        let one = fragment(b"hello", 509).unwrap();
        assert_eq!(r.push(&one[0]).unwrap(), Some(b"hello".to_vec()));
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn reassembly_limit_is_enforced() {
        let mut r = Reassembler::new(10);
        let frags = fragment(&[7u8; 11], 8).unwrap();
        assert_eq!(r.push(&frags[0]).unwrap(), None);
        assert_eq!(r.push(&frags[1]).unwrap(), None);
        assert!(matches!(
            r.push(&frags[2]),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            fragment(&[0u8; MAX_RELAY_MSG_LEN + 1], 400),
            Err(EncodeError::TooLong { .. })
        ));
        assert_eq!(fragment(b"x", 3), Err(EncodeError::BodyTooShort(3)));
        assert!(matches!(
            RelayMsg::Data(vec![0; MAX_RELAY_MSG_LEN]).encode(),
            Err(EncodeError::TooLong {
                field: "relay message",
                ..
            })
        ));
    }

    #[test]
    fn bad_fragments_are_refused() {
        let mut body = fragment(b"abc", 30).unwrap().remove(0);
        body[0] = 0x80;
        assert!(Reassembler::new(100).push(&body).is_err());
        body[0] = FLAG_FINAL;
        body[29] = 1;
        assert_eq!(
            Reassembler::new(100).push(&body),
            Err(DecodeError::NonZeroPadding)
        );
        body[29] = 0;
        body[2] = 200;
        assert!(matches!(
            Reassembler::new(100).push(&body),
            Err(DecodeError::Truncated { .. })
        ));
    }
}

/// Garbage after the type byte of each message a relay takes from other relays or
/// clients with the new fields (SYNC, WANT, and DEPOSIT and PUT_BUNDLE with their optional
/// solution), and every mutation of a valid one: decoding never panics, and whatever
/// decodes re-encodes to the same bytes. (The proptest stand-in for the fuzz target
/// `relay_msg`, which the fuzz seeds in `fuzz/seeds/relay_msg` start from.)
#[cfg(test)]
mod mailbox_garbage {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::RelayMsg;
    use crate::mailbox::tests::arb_mailbox_msg;
    use crate::mailbox::{kind, MailboxMsg};
    use proptest::prelude::*;
    use shallot_crypto::reader::Reader;

    fn check(raw: &[u8]) {
        if let Ok(msg) = RelayMsg::decode(raw) {
            assert_eq!(msg.encode().unwrap(), raw, "{msg:?}");
        }
    }

    fn arb_kind() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(kind::SYNC),
            Just(kind::WANT),
            Just(kind::DEPOSIT),
            Just(kind::PUT_BUNDLE),
            any::<u8>(),
        ]
    }

    /// The fuzz seeds of the new messages are valid messages of their kind.
    #[test]
    fn the_fuzz_seeds_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/relay_msg");
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let raw = std::fs::read(entry.unwrap().path()).unwrap();
            let msg = RelayMsg::decode(&raw).unwrap();
            assert_eq!(msg.encode().unwrap(), raw);
            kinds.push(raw[0]);
        }
        for k in [kind::DEPOSIT, kind::PUT_BUNDLE, kind::SYNC, kind::WANT] {
            assert!(kinds.contains(&k), "no seed of kind {k}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn random_fields_never_panic(
            kind in arb_kind(),
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut raw = vec![kind];
            raw.extend_from_slice(&body);
            check(&raw);
            let mut r = Reader::new(&body);
            if let Ok(msg) = MailboxMsg::decode_fields(kind, &mut r) {
                if r.finish().is_ok() {
                    let mut out = Vec::new();
                    msg.encode_into(&mut out).unwrap();
                    prop_assert_eq!(out, raw);
                }
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            msg in arb_mailbox_msg(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            tail in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let Ok(raw) = RelayMsg::Mailbox(msg).encode() else { return Ok(()) };
            // Cut short anywhere.
            check(&raw[..cut.index(raw.len() + 1)]);
            // One bit flipped (the count of ids, the solution's presence, a length).
            let mut flipped = raw.clone();
            if !flipped.is_empty() {
                let i = flip.index(flipped.len());
                flipped[i] ^= 1 << bit;
            }
            check(&flipped);
            // Bytes added (a partial or extra solution).
            let mut longer = raw;
            longer.extend_from_slice(&tail);
            check(&longer);
        }
    }
}
