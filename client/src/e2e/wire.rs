//! What an envelope carries, end to end (`docs/spec.md` §10.6): the framing inside a sealed
//! envelope, and the padded message content inside a ratchet message.
//!
//! Content is padded to one of a few fixed sizes ([`BUCKETS`]) before it is encrypted, so an
//! envelope's length reveals only which bucket its message fell in.

use shallot_crypto::ratchet::{Header, HEADER_LEN};
use shallot_crypto::reader::{DecodeError, Reader, Writer};
use shallot_crypto::x3dh::{InitialHeader, INITIAL_HEADER_LEN};

use crate::ids::MessageId;

/// The padded sizes of message content. The smallest is the largest whose envelope, deposited
/// with no puzzle solution, still travels to a mailbox relay (the third hop) in one cell
/// (`docs/spec.md` §10.6): a short message costs each of its circuits one cell each way, not
/// two out.
pub const BUCKETS: [usize; 4] = [240, 1024, 4096, 16384];
/// Bytes of padded content used by the length prefix.
const LEN_PREFIX: usize = 2;
/// Bytes of framing a text message costs inside its bucket: kind, id, sent time, text length.
const TEXT_OVERHEAD: usize = 1 + 16 + 8 + 2;
/// The longest text, in bytes of UTF-8, a message may carry.
pub const MAX_TEXT_LEN: usize = BUCKETS[3] - LEN_PREFIX - TEXT_OVERHEAD;
/// The most message ids one acknowledgement carries.
pub const MAX_ACK_IDS: usize = 255;

const KIND_TEXT: u8 = 1;
const KIND_ACK: u8 = 2;

/// What a ratchet message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A text message.
    Text {
        /// Its id, the same on every retransmission.
        id: MessageId,
        /// When its sender wrote it (unix seconds).
        sent_at: u64,
        /// The text.
        text: String,
    },
    /// Acknowledges messages received and stored.
    Ack {
        /// The acknowledged message ids.
        ids: Vec<MessageId>,
    },
}

impl Content {
    fn encode_unpadded(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::new();
        match self {
            Content::Text { id, sent_at, text } => {
                if text.len() > MAX_TEXT_LEN {
                    return Err(DecodeError::TooLong {
                        len: text.len(),
                        max: MAX_TEXT_LEN,
                    });
                }
                out.put_u8(KIND_TEXT);
                out.put(id.as_bytes());
                out.put_u64(*sent_at);
                out.put_u16_prefixed(text.as_bytes())?;
            }
            Content::Ack { ids } => {
                if ids.is_empty() || ids.len() > MAX_ACK_IDS {
                    return Err(DecodeError::BadValue {
                        field: "acknowledgement",
                        reason: "must name 1 to 255 messages",
                    });
                }
                out.put_u8(KIND_ACK);
                out.put_u8(ids.len() as u8);
                for id in ids {
                    out.put(id.as_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Encodes and pads to the smallest bucket that fits: `len(2) ‖ content ‖ zeros`.
    pub fn encode_padded(&self) -> Result<Vec<u8>, DecodeError> {
        let content = self.encode_unpadded()?;
        let size = BUCKETS
            .iter()
            .copied()
            .find(|&b| b >= content.len() + LEN_PREFIX)
            .ok_or(DecodeError::TooLong {
                len: content.len(),
                max: BUCKETS[3] - LEN_PREFIX,
            })?;
        let mut out = Vec::with_capacity(size);
        out.put_u16_prefixed(&content)?;
        out.resize(size, 0);
        Ok(out)
    }

    /// Decodes padded content, checking that its size is a bucket and its padding is zero.
    pub fn decode_padded(bytes: &[u8]) -> Result<Content, DecodeError> {
        if !BUCKETS.contains(&bytes.len()) {
            return Err(DecodeError::BadValue {
                field: "message",
                reason: "not one of the padded sizes",
            });
        }
        let mut r = Reader::new(bytes);
        let mut c = Reader::new(r.u16_prefixed()?);
        r.finish_zero_padded()?;
        let content = match c.u8()? {
            KIND_TEXT => {
                let id = MessageId(c.array()?);
                let sent_at = c.u64()?;
                let text = std::str::from_utf8(c.u16_prefixed()?)
                    .map_err(|_| DecodeError::BadValue {
                        field: "text",
                        reason: "not UTF-8",
                    })?
                    .to_string();
                Content::Text { id, sent_at, text }
            }
            KIND_ACK => {
                let n = usize::from(c.u8()?);
                if n == 0 || n * 16 > c.remaining() {
                    return Err(DecodeError::BadValue {
                        field: "acknowledgement",
                        reason: "wrong number of ids",
                    });
                }
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(MessageId(c.array()?));
                }
                Content::Ack { ids }
            }
            _ => {
                return Err(DecodeError::BadValue {
                    field: "message kind",
                    reason: "unknown",
                })
            }
        };
        c.finish()?;
        Ok(content)
    }
}

const INNER_VERSION: u8 = 1;
const INNER_START: u8 = 1;
const INNER_RATCHET: u8 = 2;

/// The plaintext of a sealed envelope: who sent it, and one ratchet message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inner {
    /// The sender's ed25519 identity key (its address).
    pub sender: [u8; 32],
    /// The session start, on messages sent before the peer has answered.
    pub start: Option<InitialHeader>,
    /// The ratchet header.
    pub header: Header,
    /// The ratchet ciphertext of padded [`Content`].
    pub ciphertext: Vec<u8>,
}

impl Inner {
    /// `version(1) ‖ sender(32) ‖ kind(1) ‖ initial header or 36 zero bytes ‖ ratchet
    /// header(40) ‖ ciphertext`: the same length whether or not it starts a session, so an
    /// envelope's size does not tell a mailbox relay that a conversation is new.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 32 + 1 + 36 + 40 + self.ciphertext.len());
        out.put_u8(INNER_VERSION);
        out.put(&self.sender);
        match &self.start {
            Some(start) => {
                out.put_u8(INNER_START);
                out.put(&start.to_bytes());
            }
            None => {
                out.put_u8(INNER_RATCHET);
                out.put(&[0u8; INITIAL_HEADER_LEN]);
            }
        }
        out.put(&self.header.to_bytes());
        out.put(&self.ciphertext);
        out
    }

    /// Decodes an envelope's plaintext.
    pub fn decode(bytes: &[u8]) -> Result<Inner, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != INNER_VERSION {
            return Err(DecodeError::BadValue {
                field: "envelope version",
                reason: "unknown",
            });
        }
        let sender = r.array()?;
        let start = match r.u8()? {
            INNER_START => Some(InitialHeader::from_bytes(r.take(INITIAL_HEADER_LEN)?)?),
            INNER_RATCHET => {
                if r.take(INITIAL_HEADER_LEN)?.iter().any(|&b| b != 0) {
                    return Err(DecodeError::NonZeroPadding);
                }
                None
            }
            _ => {
                return Err(DecodeError::BadValue {
                    field: "envelope kind",
                    reason: "unknown",
                })
            }
        };
        let header = Header::from_bytes(r.take(HEADER_LEN)?)?;
        let ciphertext = r.take_rest().to_vec();
        r.finish()?;
        Ok(Inner {
            sender,
            start,
            header,
            ciphertext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_content() -> impl Strategy<Value = Content> {
        prop_oneof![
            (any::<[u8; 16]>(), any::<u64>(), "\\PC{0,300}").prop_map(|(id, sent_at, text)| {
                Content::Text {
                    id: MessageId(id),
                    sent_at,
                    text,
                }
            }),
            proptest::collection::vec(any::<[u8; 16]>().prop_map(MessageId), 1..=255)
                .prop_map(|ids| Content::Ack { ids }),
        ]
    }

    proptest! {
        #[test]
        fn content_round_trips_in_a_bucket(c in arb_content()) {
            let padded = c.encode_padded().unwrap();
            prop_assert!(BUCKETS.contains(&padded.len()));
            prop_assert_eq!(Content::decode_padded(&padded).unwrap(), c);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Content::decode_padded(&bytes);
            let _ = Inner::decode(&bytes);
        }

        #[test]
        fn inner_round_trips(sender in any::<[u8; 32]>(), start in any::<Option<([u8; 32], u32)>>(),
                             dh in any::<[u8; 32]>(), pn in any::<u32>(), n in any::<u32>(),
                             ct in proptest::collection::vec(any::<u8>(), 0..300)) {
            let inner = Inner {
                sender,
                start: start.map(|(ephemeral, prekey_id)| InitialHeader { ephemeral, prekey_id }),
                header: Header { dh, pn, n },
                ciphertext: ct,
            };
            prop_assert_eq!(Inner::decode(&inner.encode()).unwrap(), inner);
        }
    }

    #[test]
    fn short_texts_share_a_size() {
        let a = Content::Text {
            id: MessageId([1; 16]),
            sent_at: 1,
            text: "hi".into(),
        };
        let b = Content::Text {
            id: MessageId([2; 16]),
            sent_at: 2,
            text: "a somewhat longer message".into(),
        };
        assert_eq!(a.encode_padded().unwrap().len(), 240);
        assert_eq!(b.encode_padded().unwrap().len(), 240);
        let long = Content::Text {
            id: MessageId([3; 16]),
            sent_at: 3,
            text: "x".repeat(300),
        };
        assert_eq!(long.encode_padded().unwrap().len(), 1024);
        let max = Content::Text {
            id: MessageId([3; 16]),
            sent_at: 3,
            text: "x".repeat(MAX_TEXT_LEN),
        };
        assert_eq!(max.encode_padded().unwrap().len(), 16384);
        let over = Content::Text {
            id: MessageId([3; 16]),
            sent_at: 3,
            text: "x".repeat(MAX_TEXT_LEN + 1),
        };
        assert!(over.encode_padded().is_err());
    }

    #[test]
    fn starting_a_session_does_not_change_the_size() {
        let header = Header {
            dh: [1; 32],
            pn: 0,
            n: 0,
        };
        let plain = Inner {
            sender: [2; 32],
            start: None,
            header,
            ciphertext: vec![3; 100],
        };
        let start = Inner {
            start: Some(InitialHeader {
                ephemeral: [4; 32],
                prekey_id: 5,
            }),
            ..plain.clone()
        };
        assert_eq!(plain.encode().len(), start.encode().len());
    }

    #[test]
    fn bad_padding_and_sizes_are_refused() {
        let mut p = Content::Ack {
            ids: vec![MessageId([1; 16])],
        }
        .encode_padded()
        .unwrap();
        p[200] = 1;
        assert_eq!(Content::decode_padded(&p), Err(DecodeError::NonZeroPadding));
        assert!(Content::decode_padded(&[0u8; 300]).is_err());
        assert!(Content::Ack { ids: vec![] }.encode_padded().is_err());
    }
}
