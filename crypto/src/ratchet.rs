//! The Double Ratchet (`docs/spec.md` §10.4; Signal's Double Ratchet specification, section 3,
//! without header encryption), from X25519, HKDF-SHA256, HMAC-SHA256 and ChaCha20-Poly1305.
//!
//! ```text
//! KDF_RK(rk, dh)  = HKDF-SHA256(salt = rk, ikm = dh, info = "shallot-ratchet-root-v1")
//!                   → new root key(32) ‖ chain key(32)
//! KDF_CK(ck)      = message key HMAC-SHA256(ck, 0x01), next chain key HMAC-SHA256(ck, 0x02)
//! key ‖ nonce     = HKDF-SHA256(salt = 0x00 × 32, ikm = mk, info = "shallot-ratchet-message-v1")
//! ciphertext      = ChaCha20-Poly1305(key, nonce, aad = AD ‖ header, plaintext)
//! header          = dh(32) ‖ pn(u32) ‖ n(u32)
//! ```
//!
//! One ordering differs from the specification's pseudocode and gives the same keys: the
//! sending half of a Diffie-Hellman ratchet step (a fresh key pair and `KDF_RK` with it) runs
//! at the next [`Ratchet::encrypt`] rather than at the end of the [`Ratchet::decrypt`] that
//! received the new peer key, and likewise the initiator's first step runs at its first
//! encrypt. Only encrypt then needs randomness, and a new secret exists only once it is used.
//!
//! [`Ratchet::decrypt`] is transactional: it works on a copy of the state and commits only
//! when the message authenticates, so a forged or damaged message changes nothing. Keys of
//! skipped messages are kept, at most [`MAX_SKIP`] per chain step and [`MAX_STORED_SKIPPED`]
//! in all, the oldest discarded first. Each message key is used once; a message whose key was
//! used or discarded is refused ([`RatchetError::Duplicate`]), which stops replays.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::{CryptoRng, RngCore};
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kdf::{hkdf_sha256, hmac_sha256};
use crate::reader::{DecodeError, Reader};
use crate::x3dh::{AssociatedData, SharedSecret32};

mod persist;

/// The most message keys one step may skip over in one chain.
pub const MAX_SKIP: u32 = 1000;
/// The most skipped-message keys a session keeps; beyond this the oldest are discarded.
pub const MAX_STORED_SKIPPED: usize = 2000;
/// How many of the peer's past ratchet keys a session remembers, to name a late message on
/// a finished chain a duplicate rather than a forgery.
pub const MAX_RETIRED_KEYS: usize = 64;
/// Length of an encoded [`Header`].
pub const HEADER_LEN: usize = 40;
/// HKDF info of `KDF_RK`.
const ROOT_INFO: &[u8] = b"shallot-ratchet-root-v1";
/// HKDF info of the message key expansion.
const MESSAGE_INFO: &[u8] = b"shallot-ratchet-message-v1";

/// Why a message could not be sent or received. A failed receive leaves the session as it
/// was.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RatchetError {
    /// The responder cannot send before the initiator's first message has arrived.
    #[error("cannot send before the first message from the other side has arrived")]
    CannotSendYet,
    /// The message's key was used already, or was discarded: a replay or a very late message.
    #[error("message was already received, or is too old to decrypt")]
    Duplicate,
    /// The message claims more messages were skipped than the limit allows.
    #[error(
        "message is {ahead} messages ahead of the last one received; at most {max} may be skipped"
    )]
    TooFarAhead {
        /// How many message keys would have to be skipped.
        ahead: u64,
        /// [`MAX_SKIP`].
        max: u32,
    },
    /// The message did not authenticate: it was modified, or is not from this session.
    #[error("message failed to authenticate: it was modified or is not for this session")]
    BadMessage,
    /// A ratchet key is of small order, so a Diffie-Hellman output was all zeros.
    #[error("the other side's ratchet key is invalid")]
    InvalidKey,
    /// A chain has carried 2^32 − 1 messages; the session must be replaced.
    #[error("too many messages in one ratchet chain; start a new session")]
    ChainExhausted,
    /// The plaintext is longer than ChaCha20-Poly1305 can encrypt at once.
    #[error("message is too long to encrypt")]
    TooLong,
}

/// The clear header of a ratchet message: the sender's current ratchet public key, the length
/// of its previous sending chain, and this message's number in the current chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's ratchet public key.
    pub dh: [u8; 32],
    /// How many messages the sender sent in its previous sending chain.
    pub pn: u32,
    /// This message's number in the current sending chain, from 0.
    pub n: u32,
}

impl Header {
    /// Encodes as `dh(32) ‖ pn(4) ‖ n(4)`.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(&self.dh);
        out[32..36].copy_from_slice(&self.pn.to_be_bytes());
        out[36..].copy_from_slice(&self.n.to_be_bytes());
        out
    }

    /// Decodes [`Header::to_bytes`]; the input must be exactly [`HEADER_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let dh = r.array()?;
        let pn = r.u32()?;
        let n = r.u32()?;
        r.finish()?;
        Ok(Header { dh, pn, n })
    }
}

/// A symmetric chain: its key and the number of the next message it will give a key for.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Chain {
    key: [u8; 32],
    n: u32,
}

impl Chain {
    /// `KDF_CK`: returns this step's message key and moves the chain on.
    fn step(&mut self) -> Result<Zeroizing<[u8; 32]>, RatchetError> {
        let n = self.n.checked_add(1).ok_or(RatchetError::ChainExhausted)?;
        let message_key = hmac_sha256(&self.key, &[&[0x01]]);
        self.key = *hmac_sha256(&self.key, &[&[0x02]]);
        self.n = n;
        Ok(message_key)
    }
}

/// A kept key of a skipped message, named by the ratchet key and number of its message.
#[derive(Zeroize, ZeroizeOnDrop)]
struct SkippedKey {
    dh: [u8; 32],
    n: u32,
    key: [u8; 32],
}

/// The fixed-size part of the state, copied whole for each transactional decrypt.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Core {
    /// `RK`.
    root: [u8; 32],
    /// `DHs`; `None` only for an initiator that has not sent yet.
    dh_self: Option<StaticSecret>,
    /// `DHr`; `None` only for a responder that has not received yet.
    dh_remote: Option<[u8; 32]>,
    /// `CKs` and `Ns`; `None` until the next encrypt runs the sending half of a ratchet step.
    send: Option<Chain>,
    /// `CKr` and `Nr`.
    recv: Option<Chain>,
    /// `PN`.
    prev_send_len: u32,
}

/// One side of an end-to-end session.
///
/// Every secret it holds (root and chain keys, its ratchet secret, kept message keys) is
/// zeroized when it is dropped.
pub struct Ratchet {
    core: Core,
    ad: AssociatedData,
    /// Boxed so that growing or shifting the vector moves pointers, never leaving copies of
    /// keys behind in memory it frees; each box wipes its key when dropped.
    #[allow(clippy::vec_box)]
    skipped: Vec<Box<SkippedKey>>,
    retired: Vec<[u8; 32]>,
}

// Every secret field zeroizes itself on drop: `Core` and each `SkippedKey` derive it.
impl ZeroizeOnDrop for Ratchet {}

fn is_zero(bytes: &[u8; 32]) -> Choice {
    bytes.ct_eq(&[0u8; 32])
}

/// `DH(secret, public)`, refusing an all-zero output.
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, RatchetError> {
    let shared = Zeroizing::new(secret.diffie_hellman(&PublicKey::from(*public)).to_bytes());
    if bool::from(is_zero(&shared)) {
        return Err(RatchetError::InvalidKey);
    }
    Ok(shared)
}

/// `KDF_RK`: replaces `root` and returns the new chain.
fn kdf_rk(root: &mut [u8; 32], dh_out: &[u8; 32]) -> Chain {
    let out = hkdf_sha256::<64>(&root[..], &[dh_out], ROOT_INFO);
    root.copy_from_slice(&out[..32]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&out[32..]);
    Chain { key, n: 0 }
}

/// The AEAD and nonce of one message key.
fn message_cipher(message_key: &[u8; 32]) -> (ChaCha20Poly1305, Nonce) {
    let okm = hkdf_sha256::<44>(&[0u8; 32], &[message_key], MESSAGE_INFO);
    let aead = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
    (aead, *Nonce::from_slice(&okm[32..]))
}

/// `AD ‖ header`.
fn aad(ad: &AssociatedData, header: &Header) -> [u8; 64 + HEADER_LEN] {
    let mut out = [0u8; 64 + HEADER_LEN];
    out[..64].copy_from_slice(ad.as_bytes());
    out[64..].copy_from_slice(&header.to_bytes());
    out
}

fn open(
    message_key: &[u8; 32],
    ad: &AssociatedData,
    header: &Header,
    ciphertext: &[u8],
) -> Result<Vec<u8>, RatchetError> {
    let (aead, nonce) = message_cipher(message_key);
    let aad = aad(ad, header);
    aead.decrypt(
        &nonce,
        Payload {
            msg: ciphertext,
            aad: &aad,
        },
    )
    .map_err(|_| RatchetError::BadMessage)
}

/// Moves the receiving chain on to message `until`, keeping the keys it passes (boxed, as in
/// [`Ratchet`]'s store).
#[allow(clippy::vec_box)]
fn skip(core: &mut Core, until: u32, kept: &mut Vec<Box<SkippedKey>>) -> Result<(), RatchetError> {
    let start = core.recv.as_ref().map_or(0, |chain| chain.n);
    if u64::from(until) > u64::from(start) + u64::from(MAX_SKIP) {
        return Err(RatchetError::TooFarAhead {
            ahead: u64::from(until) - u64::from(start),
            max: MAX_SKIP,
        });
    }
    if let (Some(chain), Some(dh)) = (core.recv.as_mut(), core.dh_remote) {
        while chain.n < until {
            let n = chain.n;
            let key = chain.step()?;
            kept.push(Box::new(SkippedKey { dh, n, key: *key }));
        }
    }
    Ok(())
}

/// The next message key of `core`'s sending chain, with its header, taking the sending half
/// of a Diffie-Hellman ratchet step first if one is due; `core` moves past it.
fn take_send_key<R: RngCore + CryptoRng>(
    core: &mut Core,
    ad: AssociatedData,
    rng: &mut R,
) -> Result<SendKey, RatchetError> {
    let mut next = core.clone();
    if next.send.is_none() {
        // The sending half of a Diffie-Hellman ratchet step.
        let remote = next.dh_remote.ok_or(RatchetError::CannotSendYet)?;
        let fresh = StaticSecret::random_from_rng(rng);
        let shared = dh(&fresh, &remote)?;
        next.send = Some(kdf_rk(&mut next.root, &shared));
        next.dh_self = Some(fresh);
    }
    let (Some(secret), Some(chain)) = (next.dh_self.as_ref(), next.send.as_mut()) else {
        return Err(RatchetError::CannotSendYet);
    };
    let header = Header {
        dh: PublicKey::from(secret).to_bytes(),
        pn: next.prev_send_len,
        n: chain.n,
    };
    // On the heap, so that moving the key (into a map, through a channel) moves a pointer
    // and leaves no copy of it behind; the box is made first and the key copied in, so the
    // temporary the chain returns is wiped where it lies.
    let mut key = Box::new(Zeroizing::new([0u8; 32]));
    key.copy_from_slice(&chain.step()?[..]);
    *core = next;
    Ok(SendKey { header, key, ad })
}

/// One message key of a session's sending chain, taken ahead of its message
/// ([`Ratchet::take_send_key`]). It encrypts one message and is consumed doing so; its key,
/// on the heap, is wiped when it is dropped.
pub struct SendKey {
    header: Header,
    key: Box<Zeroizing<[u8; 32]>>,
    ad: AssociatedData,
}

impl SendKey {
    /// The header the message will carry.
    pub fn header(&self) -> Header {
        self.header
    }

    /// Encrypts `plaintext` as the message this key was taken for.
    pub fn encrypt(self, plaintext: &[u8]) -> Result<(Header, Vec<u8>), RatchetError> {
        let (aead, nonce) = message_cipher(&self.key);
        let aad = aad(&self.ad, &self.header);
        let ciphertext = aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| RatchetError::TooLong)?;
        Ok((self.header, ciphertext))
    }
}

impl Ratchet {
    /// The initiator's side, from the X3DH session key, the responder's signed prekey (its
    /// first ratchet key) and the session's associated data.
    pub fn init_initiator(
        sk: SharedSecret32,
        their_ratchet_pub: PublicKey,
        ad: AssociatedData,
    ) -> Self {
        Ratchet {
            core: Core {
                root: *sk.as_bytes(),
                dh_self: None,
                dh_remote: Some(their_ratchet_pub.to_bytes()),
                send: None,
                recv: None,
                prev_send_len: 0,
            },
            ad,
            skipped: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// The responder's side, from the X3DH session key, its signed prekey's secret (its first
    /// ratchet key) and the session's associated data.
    pub fn init_responder(
        sk: SharedSecret32,
        my_ratchet_keypair: &StaticSecret,
        ad: AssociatedData,
    ) -> Self {
        Ratchet {
            core: Core {
                root: *sk.as_bytes(),
                dh_self: Some(my_ratchet_keypair.clone()),
                dh_remote: None,
                send: None,
                recv: None,
                prev_send_len: 0,
            },
            ad,
            skipped: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// The associated data every message of this session authenticates.
    pub fn associated_data(&self) -> &AssociatedData {
        &self.ad
    }

    /// Encrypts `plaintext` as the next message of the session.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<(Header, Vec<u8>), RatchetError> {
        let mut core = self.core.clone();
        let key = take_send_key(&mut core, self.ad, rng)?;
        let sealed = key.encrypt(plaintext)?;
        self.core = core;
        Ok(sealed)
    }

    /// Takes the next message key of the sending chain now, for a message written later: the
    /// session moves past it at once, so once this state is saved no later message can be
    /// given the same key, whatever becomes of the one taken. The key is used by
    /// [`SendKey::encrypt`], once; a key dropped unused leaves a gap the other side treats as
    /// a skipped message.
    pub fn take_send_key<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
    ) -> Result<SendKey, RatchetError> {
        take_send_key(&mut self.core, self.ad, rng)
    }

    /// The peer's current ratchet public key (sent in its headers; not a secret), if it
    /// has one. It changes exactly when a message from the peer takes a Diffie-Hellman
    /// ratchet step here, after which this side's next message takes its own.
    pub fn peer_ratchet_key(&self) -> Option<[u8; 32]> {
        self.core.dh_remote
    }

    /// The number the next message key of the sending chain would get, if there is a
    /// sending chain (there is none before this side's next ratchet step).
    pub fn next_send_number(&self) -> Option<u32> {
        self.core.send.as_ref().map(|chain| chain.n)
    }

    /// Decrypts a message of the session. On any error the session is unchanged.
    pub fn decrypt(&mut self, header: &Header, ciphertext: &[u8]) -> Result<Vec<u8>, RatchetError> {
        // A message that was skipped earlier: its key is kept.
        if let Some(i) = self
            .skipped
            .iter()
            .position(|k| k.dh == header.dh && k.n == header.n)
        {
            let plaintext = open(&self.skipped[i].key, &self.ad, header, ciphertext)?;
            drop(self.skipped.remove(i));
            return Ok(plaintext);
        }

        let current = self.core.dh_remote == Some(header.dh);
        let behind = match &self.core.recv {
            Some(chain) => current && header.n < chain.n,
            None => false,
        };
        if behind || self.retired.contains(&header.dh) {
            return Err(RatchetError::Duplicate);
        }

        let mut core = self.core.clone();
        let mut kept = Vec::new();
        let mut retiring = None;
        if !current {
            // The receiving half of a Diffie-Hellman ratchet step.
            skip(&mut core, header.pn, &mut kept)?;
            let secret = core.dh_self.as_ref().ok_or(RatchetError::BadMessage)?;
            let shared = dh(secret, &header.dh)?;
            core.recv = Some(kdf_rk(&mut core.root, &shared));
            retiring = core.dh_remote.replace(header.dh);
            core.prev_send_len = core.send.as_ref().map_or(0, |chain| chain.n);
            core.send = None;
        }
        skip(&mut core, header.n, &mut kept)?;
        let chain = core.recv.as_mut().ok_or(RatchetError::BadMessage)?;
        let message_key = chain.step()?;
        let plaintext = open(&message_key, &self.ad, header, ciphertext)?;

        // It authenticated: commit.
        self.core = core;
        self.skipped.append(&mut kept);
        if self.skipped.len() > MAX_STORED_SKIPPED {
            let excess = self.skipped.len() - MAX_STORED_SKIPPED;
            self.skipped.drain(..excess);
        }
        if let Some(old) = retiring {
            self.retired.push(old);
            if self.retired.len() > MAX_RETIRED_KEYS {
                self.retired.remove(0);
            }
        }
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests;
