//! The mailbox protocol's relay messages (`docs/spec.md` §9.3): deposit, fetch, subscribe,
//! acknowledge, and the prekey bundles kept beside each mailbox.
//!
//! Requests that act for a mailbox's owner (fetch, subscribe, acknowledge, put bundle) carry a
//! [`MailboxAuth`]: an ed25519 signature by the mailbox's blinded key over the relay it is
//! meant for, the operation, a timestamp and a random nonce, so that a captured request cannot
//! be replayed to that relay or used at another.

use sha2::{Digest, Sha256};
use shallot_crypto::keys::RelayId;
use shallot_crypto::reader::{DecodeError, Reader, Writer};

use crate::encode::{check_len, put_u16_prefixed, EncodeError};
use crate::pow::{Pow, POW_LEN};

/// A mailbox's name: its owner's blinded identity key for one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(pub [u8; 32]);

/// An envelope's name at a mailbox: the first 16 bytes of SHA-256 of its bytes
/// ([`envelope_id`]). Its `Display` is hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeId(pub [u8; 16]);

impl EnvelopeId {
    /// The id of `envelope`.
    pub fn of(envelope: &[u8]) -> Self {
        envelope_id(envelope)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shallot_crypto::hex::encode(&self.0))
    }
}

impl std::fmt::Debug for EnvelopeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvelopeId({self})")
    }
}

impl AsRef<[u8]> for MailboxId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for EnvelopeId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The largest sealed envelope a mailbox accepts.
pub const MAX_ENVELOPE_LEN: usize = 20 * 1024;
/// The largest prekey bundle a mailbox keeps.
pub const MAX_BUNDLE_LEN: usize = 1024;
/// The most envelope ids one acknowledgement names.
pub const MAX_ACK_IDS: usize = 256;
/// The most envelope ids one anti-entropy summary (SYNC) or its answer (WANT) names.
pub const MAX_SYNC_IDS: usize = 256;

/// Type bytes of the mailbox messages (within the relay message type space).
pub mod kind {
    /// Leave an envelope.
    pub const DEPOSIT: u8 = 16;
    /// Ask for every waiting envelope.
    pub const FETCH: u8 = 17;
    /// Ask for waiting envelopes and every new one as it arrives.
    pub const SUBSCRIBE: u8 = 18;
    /// Delete envelopes.
    pub const ACK: u8 = 19;
    /// Store the owner's prekey bundle.
    pub const PUT_BUNDLE: u8 = 20;
    /// Ask for a mailbox's prekey bundle.
    pub const GET_BUNDLE: u8 = 21;
    /// The outcome of a request.
    pub const RESULT: u8 = 22;
    /// An envelope, fetched or pushed.
    pub const ENVELOPE: u8 = 23;
    /// A prekey bundle.
    pub const BUNDLE: u8 = 24;
    /// Anti-entropy between the holders of a mailbox: the envelope ids one holds
    /// (`docs/spec.md` §9.6).
    pub const SYNC: u8 = 30;
    /// The answer to SYNC: the ids of its summary the answering relay lacks.
    pub const WANT: u8 = 31;
}

/// The name of an envelope's bytes.
pub fn envelope_id(envelope: &[u8]) -> EnvelopeId {
    let digest = Sha256::digest(envelope);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    EnvelopeId(id)
}

/// An owner's proof of control over a mailbox, for one request to one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxAuth {
    /// The mailbox (the blinded public key that signed).
    pub mailbox: MailboxId,
    /// When the request was made (unix seconds).
    pub timestamp: u64,
    /// Random, never reused.
    pub nonce: [u8; 16],
    /// ed25519 signature by the mailbox key over [`auth_message`].
    pub signature: [u8; 64],
}

/// The bytes a [`MailboxAuth`] signs: `"shallot-mailbox-request-v1" ‖ relay ‖ op ‖ mailbox ‖
/// timestamp ‖ nonce ‖ SHA-256(body)`, where `body` is the operation's other fields.
pub fn auth_message(
    relay: &RelayId,
    op: u8,
    mailbox: &MailboxId,
    timestamp: u64,
    nonce: &[u8; 16],
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(26 + 20 + 1 + 32 + 8 + 16 + 32);
    m.put(b"shallot-mailbox-request-v1");
    m.put(&relay.0);
    m.put_u8(op);
    m.put(&mailbox.0);
    m.put_u64(timestamp);
    m.put(nonce);
    m.put(&Sha256::digest(body));
    m
}

/// The outcome of a mailbox request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Done.
    Ok,
    /// Nothing there (no bundle).
    NotFound,
    /// The mailbox, or the relay's store, is full.
    Full,
    /// The request's signature did not verify.
    BadSignature,
    /// The request is too old, from the future, or a replay.
    Stale,
    /// Something in it is larger than allowed.
    TooLarge,
    /// This relay offers no mailbox service.
    Unavailable,
    /// The relay failed to do it.
    Internal,
    /// Too many requests on this circuit at once or too fast; ask again later.
    Busy,
    /// The relay is under load: solve its puzzle (`count` is the difficulty in bits) and ask
    /// again with the solution (`docs/spec.md` §9.7).
    PuzzleRequired,
}

impl Status {
    fn to_byte(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::Full => 2,
            Status::BadSignature => 3,
            Status::Stale => 4,
            Status::TooLarge => 5,
            Status::Unavailable => 6,
            Status::Internal => 7,
            Status::Busy => 8,
            Status::PuzzleRequired => 9,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Full,
            3 => Status::BadSignature,
            4 => Status::Stale,
            5 => Status::TooLarge,
            6 => Status::Unavailable,
            7 => Status::Internal,
            8 => Status::Busy,
            9 => Status::PuzzleRequired,
            _ => {
                return Err(DecodeError::BadValue {
                    field: "mailbox status",
                    reason: "unknown value",
                })
            }
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::NotFound => "not found",
            Status::Full => "the recipient's mailbox is full",
            Status::BadSignature => "request signature refused",
            Status::Stale => "request too old or replayed",
            Status::TooLarge => "too large",
            Status::Unavailable => "relay offers no mailbox",
            Status::Internal => "relay error",
            Status::Busy => "too many requests on this circuit: try again later",
            Status::PuzzleRequired => "the relay is busy and asks for proof of work",
        })
    }
}

/// A mailbox protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxMsg {
    /// Leave a sealed envelope in a mailbox (anyone may).
    Deposit {
        /// Request id, echoed in the result.
        req: u32,
        /// The mailbox.
        mailbox: MailboxId,
        /// The sealed envelope.
        envelope: Vec<u8>,
        /// A solution to the relay's puzzle, when it asked for one (body: the envelope).
        pow: Option<Pow>,
    },
    /// Send every waiting envelope (owner only).
    Fetch {
        /// Request id.
        req: u32,
        /// Proof of ownership.
        auth: MailboxAuth,
    },
    /// Send every waiting envelope, then each new one as it arrives (owner only).
    Subscribe {
        /// Request id; pushed envelopes carry it.
        req: u32,
        /// Proof of ownership.
        auth: MailboxAuth,
    },
    /// Delete envelopes (owner only).
    Ack {
        /// Request id.
        req: u32,
        /// Proof of ownership; its body is the ids, concatenated.
        auth: MailboxAuth,
        /// The envelopes to delete.
        ids: Vec<EnvelopeId>,
    },
    /// Keep the owner's prekey bundle until `expires` (owner only).
    PutBundle {
        /// Request id.
        req: u32,
        /// Proof of ownership; its body is `expires ‖ bundle`.
        auth: MailboxAuth,
        /// When the relay may forget it.
        expires: u64,
        /// The bundle (opaque to the relay).
        bundle: Vec<u8>,
        /// A solution to the relay's puzzle, when it asked for one (body: `expires ‖ bundle`).
        pow: Option<Pow>,
    },
    /// Send the mailbox's prekey bundle (anyone may).
    GetBundle {
        /// Request id.
        req: u32,
        /// The mailbox.
        mailbox: MailboxId,
    },
    /// The outcome of a request; `count` is what it concerned (envelopes sent or deleted).
    Result {
        /// The request's id.
        req: u32,
        /// Its outcome.
        status: Status,
        /// Envelopes sent (fetch, subscribe) or deleted (ack).
        count: u32,
    },
    /// An envelope from a mailbox.
    Envelope {
        /// The fetch or subscription it answers.
        req: u32,
        /// Its id.
        id: EnvelopeId,
        /// The sealed envelope.
        envelope: Vec<u8>,
    },
    /// A prekey bundle.
    Bundle {
        /// The request it answers.
        req: u32,
        /// The bundle.
        bundle: Vec<u8>,
    },
    /// Anti-entropy (anyone may; relays holding the mailbox send it): "these are envelopes of
    /// this mailbox I hold; which do you lack?"
    Sync {
        /// Request id, echoed in the WANT.
        req: u32,
        /// The mailbox.
        mailbox: MailboxId,
        /// Envelopes the sender holds there (at most [`MAX_SYNC_IDS`]).
        ids: Vec<EnvelopeId>,
    },
    /// The answer to a SYNC: which of its ids the relay would store if deposited.
    Want {
        /// The SYNC it answers.
        req: u32,
        /// The ids it lacks, a subset of the SYNC's.
        ids: Vec<EnvelopeId>,
    },
}

fn put_auth(out: &mut Vec<u8>, a: &MailboxAuth) {
    out.put(&a.mailbox.0);
    out.put_u64(a.timestamp);
    out.put(&a.nonce);
    out.put(&a.signature);
}

fn read_auth(r: &mut Reader<'_>) -> Result<MailboxAuth, DecodeError> {
    Ok(MailboxAuth {
        mailbox: MailboxId(r.array()?),
        timestamp: r.u64()?,
        nonce: r.array()?,
        signature: r.array()?,
    })
}

/// The optional puzzle solution at the end of a DEPOSIT or PUT_BUNDLE: present when bytes
/// are left (anything but exactly [`POW_LEN`] of them fails, here or at the reader's end).
fn read_pow(r: &mut Reader<'_>) -> Result<Option<Pow>, DecodeError> {
    if r.remaining() == 0 {
        return Ok(None);
    }
    if r.remaining() < POW_LEN {
        return Err(DecodeError::Truncated {
            needed: POW_LEN,
            remaining: r.remaining(),
        });
    }
    Pow::read(r).map(Some)
}

fn too_long(len: usize, max: usize) -> DecodeError {
    DecodeError::TooLong { len, max }
}

/// The field names and limits an encoder checks.
const ENVELOPE: (&str, usize) = ("envelope", MAX_ENVELOPE_LEN);
const BUNDLE: (&str, usize) = ("prekey bundle", MAX_BUNDLE_LEN);
const ACK_IDS: (&str, usize) = ("acknowledged ids", MAX_ACK_IDS);
const SYNC_IDS: (&str, usize) = ("anti-entropy ids", MAX_SYNC_IDS);

fn put_ids(out: &mut Vec<u8>, ids: &[EnvelopeId]) {
    out.put_u16(ids.len() as u16);
    for id in ids {
        out.put(&id.0);
    }
}

/// Reads `count(2) ‖ count × id(16)`, at most `max` ids, checking the count against what is
/// left before allocating.
fn read_ids(r: &mut Reader<'_>, max: usize) -> Result<Vec<EnvelopeId>, DecodeError> {
    let n = usize::from(r.u16()?);
    if n > max {
        return Err(too_long(n, max));
    }
    if n * 16 > r.remaining() {
        return Err(DecodeError::Truncated {
            needed: n * 16,
            remaining: r.remaining(),
        });
    }
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(EnvelopeId(r.array()?));
    }
    Ok(ids)
}

fn check((field, max): (&'static str, usize), len: usize) -> Result<(), EncodeError> {
    check_len(field, len, max)
}

impl MailboxMsg {
    /// The request id the message carries (for an answer, the request it answers).
    pub fn request_id(&self) -> u32 {
        match self {
            MailboxMsg::Deposit { req, .. }
            | MailboxMsg::Fetch { req, .. }
            | MailboxMsg::Subscribe { req, .. }
            | MailboxMsg::Ack { req, .. }
            | MailboxMsg::PutBundle { req, .. }
            | MailboxMsg::GetBundle { req, .. }
            | MailboxMsg::Result { req, .. }
            | MailboxMsg::Envelope { req, .. }
            | MailboxMsg::Bundle { req, .. }
            | MailboxMsg::Sync { req, .. }
            | MailboxMsg::Want { req, .. } => *req,
        }
    }

    /// Whether `kind` is a mailbox message type.
    pub fn is_mailbox_kind(kind: u8) -> bool {
        (kind::DEPOSIT..=kind::BUNDLE).contains(&kind) || kind == kind::SYNC || kind == kind::WANT
    }

    /// The body an operation's [`MailboxAuth`] covers (see [`auth_message`]).
    pub fn ack_body(ids: &[EnvelopeId]) -> Vec<u8> {
        ids.iter().flat_map(|id| id.0).collect()
    }

    /// The body a put-bundle's [`MailboxAuth`] covers.
    pub fn bundle_body(expires: u64, bundle: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + bundle.len());
        b.put_u64(expires);
        b.put(bundle);
        b
    }

    /// Encodes the message, type byte first.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            MailboxMsg::Deposit {
                req,
                mailbox,
                envelope,
                pow,
            } => {
                check(ENVELOPE, envelope.len())?;
                out.put_u8(kind::DEPOSIT);
                out.put_u32(*req);
                out.put(&mailbox.0);
                put_u16_prefixed(out, ENVELOPE.0, envelope)?;
                if let Some(p) = pow {
                    p.encode_into(out);
                }
            }
            MailboxMsg::Fetch { req, auth } => {
                out.put_u8(kind::FETCH);
                out.put_u32(*req);
                put_auth(out, auth);
            }
            MailboxMsg::Subscribe { req, auth } => {
                out.put_u8(kind::SUBSCRIBE);
                out.put_u32(*req);
                put_auth(out, auth);
            }
            MailboxMsg::Ack { req, auth, ids } => {
                check(ACK_IDS, ids.len())?;
                out.put_u8(kind::ACK);
                out.put_u32(*req);
                put_auth(out, auth);
                put_ids(out, ids);
            }
            MailboxMsg::PutBundle {
                req,
                auth,
                expires,
                bundle,
                pow,
            } => {
                check(BUNDLE, bundle.len())?;
                out.put_u8(kind::PUT_BUNDLE);
                out.put_u32(*req);
                put_auth(out, auth);
                out.put_u64(*expires);
                put_u16_prefixed(out, BUNDLE.0, bundle)?;
                if let Some(p) = pow {
                    p.encode_into(out);
                }
            }
            MailboxMsg::GetBundle { req, mailbox } => {
                out.put_u8(kind::GET_BUNDLE);
                out.put_u32(*req);
                out.put(&mailbox.0);
            }
            MailboxMsg::Result { req, status, count } => {
                out.put_u8(kind::RESULT);
                out.put_u32(*req);
                out.put_u8(status.to_byte());
                out.put_u32(*count);
            }
            MailboxMsg::Envelope { req, id, envelope } => {
                check(ENVELOPE, envelope.len())?;
                out.put_u8(kind::ENVELOPE);
                out.put_u32(*req);
                out.put(&id.0);
                put_u16_prefixed(out, ENVELOPE.0, envelope)?;
            }
            MailboxMsg::Bundle { req, bundle } => {
                check(BUNDLE, bundle.len())?;
                out.put_u8(kind::BUNDLE);
                out.put_u32(*req);
                put_u16_prefixed(out, BUNDLE.0, bundle)?;
            }
            MailboxMsg::Sync { req, mailbox, ids } => {
                check(SYNC_IDS, ids.len())?;
                out.put_u8(kind::SYNC);
                out.put_u32(*req);
                out.put(&mailbox.0);
                put_ids(out, ids);
            }
            MailboxMsg::Want { req, ids } => {
                check(SYNC_IDS, ids.len())?;
                out.put_u8(kind::WANT);
                out.put_u32(*req);
                put_ids(out, ids);
            }
        }
        Ok(())
    }

    /// Decodes the fields of a message whose type byte `kind` has already been read, through
    /// to the end of the input.
    pub fn decode_fields(kind: u8, r: &mut Reader<'_>) -> Result<MailboxMsg, DecodeError> {
        let req = r.u32()?;
        let msg = match kind {
            kind::DEPOSIT => {
                let mailbox = MailboxId(r.array()?);
                let envelope = r.u16_prefixed()?;
                if envelope.len() > MAX_ENVELOPE_LEN {
                    return Err(too_long(envelope.len(), MAX_ENVELOPE_LEN));
                }
                MailboxMsg::Deposit {
                    req,
                    mailbox,
                    envelope: envelope.to_vec(),
                    pow: read_pow(r)?,
                }
            }
            kind::FETCH => MailboxMsg::Fetch {
                req,
                auth: read_auth(r)?,
            },
            kind::SUBSCRIBE => MailboxMsg::Subscribe {
                req,
                auth: read_auth(r)?,
            },
            kind::ACK => {
                let auth = read_auth(r)?;
                let ids = read_ids(r, MAX_ACK_IDS)?;
                MailboxMsg::Ack { req, auth, ids }
            }
            kind::PUT_BUNDLE => {
                let auth = read_auth(r)?;
                let expires = r.u64()?;
                let bundle = r.u16_prefixed()?;
                if bundle.len() > MAX_BUNDLE_LEN {
                    return Err(too_long(bundle.len(), MAX_BUNDLE_LEN));
                }
                MailboxMsg::PutBundle {
                    req,
                    auth,
                    expires,
                    bundle: bundle.to_vec(),
                    pow: read_pow(r)?,
                }
            }
            kind::GET_BUNDLE => MailboxMsg::GetBundle {
                req,
                mailbox: MailboxId(r.array()?),
            },
            kind::RESULT => MailboxMsg::Result {
                req,
                status: Status::from_byte(r.u8()?)?,
                count: r.u32()?,
            },
            kind::ENVELOPE => {
                let id = EnvelopeId(r.array()?);
                let envelope = r.u16_prefixed()?;
                if envelope.len() > MAX_ENVELOPE_LEN {
                    return Err(too_long(envelope.len(), MAX_ENVELOPE_LEN));
                }
                MailboxMsg::Envelope {
                    req,
                    id,
                    envelope: envelope.to_vec(),
                }
            }
            kind::BUNDLE => {
                let bundle = r.u16_prefixed()?;
                if bundle.len() > MAX_BUNDLE_LEN {
                    return Err(too_long(bundle.len(), MAX_BUNDLE_LEN));
                }
                MailboxMsg::Bundle {
                    req,
                    bundle: bundle.to_vec(),
                }
            }
            kind::SYNC => MailboxMsg::Sync {
                req,
                mailbox: MailboxId(r.array()?),
                ids: read_ids(r, MAX_SYNC_IDS)?,
            },
            kind::WANT => MailboxMsg::Want {
                req,
                ids: read_ids(r, MAX_SYNC_IDS)?,
            },
            other => return Err(DecodeError::UnknownRelayMessage(other)),
        };
        Ok(msg)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_auth() -> impl Strategy<Value = MailboxAuth> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
        )
            .prop_map(|(mailbox, timestamp, nonce, s1, s2)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&s1);
                signature[32..].copy_from_slice(&s2);
                MailboxAuth {
                    mailbox: MailboxId(mailbox),
                    timestamp,
                    nonce,
                    signature,
                }
            })
    }

    fn arb_pow() -> impl Strategy<Value = Option<Pow>> {
        proptest::option::of(
            (any::<u64>(), any::<[u8; 16]>())
                .prop_map(|(timestamp, nonce)| Pow { timestamp, nonce }),
        )
    }

    fn arb_status() -> impl Strategy<Value = Status> {
        (0u8..10).prop_map(|b| Status::from_byte(b).unwrap())
    }

    fn arb_ids() -> impl Strategy<Value = Vec<EnvelopeId>> {
        proptest::collection::vec(any::<[u8; 16]>().prop_map(EnvelopeId), 0..MAX_SYNC_IDS + 1)
    }

    pub(crate) fn arb_mailbox_msg() -> impl Strategy<Value = MailboxMsg> {
        let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
        prop_oneof![
            (any::<u32>(), any::<[u8; 32]>(), bytes(3000), arb_pow()).prop_map(
                |(req, mailbox, envelope, pow)| MailboxMsg::Deposit {
                    req,
                    mailbox: MailboxId(mailbox),
                    envelope,
                    pow,
                }
            ),
            (any::<u32>(), arb_auth()).prop_map(|(req, auth)| MailboxMsg::Fetch { req, auth }),
            (any::<u32>(), arb_auth()).prop_map(|(req, auth)| MailboxMsg::Subscribe { req, auth }),
            (
                any::<u32>(),
                arb_auth(),
                proptest::collection::vec(any::<[u8; 16]>().prop_map(EnvelopeId), 0..40)
            )
                .prop_map(|(req, auth, ids)| MailboxMsg::Ack { req, auth, ids }),
            (
                any::<u32>(),
                arb_auth(),
                any::<u64>(),
                bytes(MAX_BUNDLE_LEN),
                arb_pow()
            )
                .prop_map(|(req, auth, expires, bundle, pow)| MailboxMsg::PutBundle {
                    req,
                    auth,
                    expires,
                    bundle,
                    pow
                }),
            (any::<u32>(), any::<[u8; 32]>()).prop_map(|(req, mailbox)| MailboxMsg::GetBundle {
                req,
                mailbox: MailboxId(mailbox)
            }),
            (any::<u32>(), arb_status(), any::<u32>())
                .prop_map(|(req, status, count)| MailboxMsg::Result { req, status, count }),
            (any::<u32>(), any::<[u8; 16]>(), bytes(3000)).prop_map(|(req, id, envelope)| {
                MailboxMsg::Envelope {
                    req,
                    id: EnvelopeId(id),
                    envelope,
                }
            }),
            (any::<u32>(), bytes(MAX_BUNDLE_LEN))
                .prop_map(|(req, bundle)| MailboxMsg::Bundle { req, bundle }),
            (any::<u32>(), any::<[u8; 32]>(), arb_ids()).prop_map(|(req, mailbox, ids)| {
                MailboxMsg::Sync {
                    req,
                    mailbox: MailboxId(mailbox),
                    ids,
                }
            }),
            (any::<u32>(), arb_ids()).prop_map(|(req, ids)| MailboxMsg::Want { req, ids }),
        ]
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut out = Vec::new();
        let big = MailboxMsg::Deposit {
            req: 1,
            mailbox: MailboxId([0; 32]),
            envelope: vec![0; MAX_ENVELOPE_LEN + 1],
            pow: None,
        };
        assert_eq!(
            big.encode_into(&mut out),
            Err(EncodeError::TooLong {
                field: "envelope",
                len: MAX_ENVELOPE_LEN + 1,
                max: MAX_ENVELOPE_LEN
            })
        );
        // An ack claiming more ids than the bytes hold fails before allocating.
        let mut raw = vec![0u8; 4 + 32 + 8 + 16 + 64];
        raw.extend_from_slice(&200u16.to_be_bytes());
        let err = MailboxMsg::decode_fields(kind::ACK, &mut Reader::new(&raw)).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
        let mut raw = vec![0u8; 4 + 32 + 8 + 16 + 64];
        raw.extend_from_slice(&300u16.to_be_bytes());
        let err = MailboxMsg::decode_fields(kind::ACK, &mut Reader::new(&raw)).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        // So do a summary and an answer naming more ids than allowed.
        let mut raw = vec![0u8; 4 + 32];
        raw.extend_from_slice(&257u16.to_be_bytes());
        raw.extend(std::iter::repeat_n(0u8, 257 * 16));
        let err = MailboxMsg::decode_fields(kind::SYNC, &mut Reader::new(&raw)).unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { .. }), "{err}");
        let mut raw = vec![0u8; 4];
        raw.extend_from_slice(&2u16.to_be_bytes());
        raw.extend_from_slice(&[0u8; 16]);
        let err = MailboxMsg::decode_fields(kind::WANT, &mut Reader::new(&raw)).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
        let too_many = MailboxMsg::Want {
            req: 1,
            ids: vec![EnvelopeId([0; 16]); MAX_SYNC_IDS + 1],
        };
        assert!(too_many.encode_into(&mut Vec::new()).is_err());
    }

    /// A puzzle solution is the last 24 bytes of a DEPOSIT, or nothing: any other tail is
    /// refused.
    #[test]
    fn a_deposit_carries_a_whole_solution_or_none() {
        let mut raw = vec![0u8; 4 + 32];
        raw.extend_from_slice(&3u16.to_be_bytes());
        raw.extend_from_slice(b"abc");
        let plain = MailboxMsg::decode_fields(kind::DEPOSIT, &mut Reader::new(&raw)).unwrap();
        assert!(matches!(plain, MailboxMsg::Deposit { pow: None, .. }));
        let mut solved = raw.clone();
        solved.extend_from_slice(&[1; POW_LEN]);
        let mut r = Reader::new(&solved);
        let msg = MailboxMsg::decode_fields(kind::DEPOSIT, &mut r).unwrap();
        r.finish().unwrap();
        assert!(matches!(msg, MailboxMsg::Deposit { pow: Some(_), .. }));
        for tail in [1, POW_LEN - 1] {
            let mut bad = raw.clone();
            bad.extend(std::iter::repeat_n(0u8, tail));
            let err = MailboxMsg::decode_fields(kind::DEPOSIT, &mut Reader::new(&bad));
            assert!(matches!(err, Err(DecodeError::Truncated { .. })), "{err:?}");
        }
        let mut long = raw;
        long.extend_from_slice(&[1; POW_LEN + 1]);
        let mut r = Reader::new(&long);
        MailboxMsg::decode_fields(kind::DEPOSIT, &mut r).unwrap();
        assert!(r.finish().is_err(), "a byte after the solution");
    }

    #[test]
    fn auth_message_binds_every_field() {
        let relay = RelayId([1; 20]);
        let (m2, m9) = (MailboxId([2; 32]), MailboxId([9; 32]));
        let base = auth_message(&relay, kind::FETCH, &m2, 3, &[4; 16], b"x");
        assert_ne!(
            base,
            auth_message(&RelayId([9; 20]), kind::FETCH, &m2, 3, &[4; 16], b"x")
        );
        assert_ne!(
            base,
            auth_message(&relay, kind::ACK, &m2, 3, &[4; 16], b"x")
        );
        assert_ne!(
            base,
            auth_message(&relay, kind::FETCH, &m9, 3, &[4; 16], b"x")
        );
        assert_ne!(
            base,
            auth_message(&relay, kind::FETCH, &m2, 4, &[4; 16], b"x")
        );
        assert_ne!(
            base,
            auth_message(&relay, kind::FETCH, &m2, 3, &[9; 16], b"x")
        );
        assert_ne!(
            base,
            auth_message(&relay, kind::FETCH, &m2, 3, &[4; 16], b"y")
        );
    }
}
