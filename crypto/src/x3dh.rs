//! The start of an end-to-end session: X3DH as Signal specifies it, without one-time prekeys
//! (`docs/spec.md` §10.1–10.3).
//!
//! Each user has one long-term ed25519 identity. Its X25519 form ([`identity_dh_secret`],
//! [`identity_dh_public`]) takes part in the key agreement, so an address, which encodes only
//! the ed25519 key, is all a contact needs. A user publishes a [`PrekeyBundle`]: a medium-term
//! X25519 [`SignedPrekey`] signed by the identity, with a validity window. To start a session,
//! the initiator checks the bundle, then [`initiate`]s with a fresh ephemeral key:
//!
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)
//! SK  = HKDF-SHA256(salt = 0x00 × 32, ikm = 0xFF × 32 ‖ DH1 ‖ DH2 ‖ DH3, info = "shallot-x3dh-v1")
//! AD  = IK_A ‖ IK_B   (the ed25519 identity keys, 32 bytes each)
//! ```
//!
//! and sends its ephemeral public key and the prekey's id ([`InitialHeader`]) with its first
//! message. The responder [`respond`]s with the same computation from its side. Any all-zero
//! Diffie-Hellman output (a small-order key) is refused, decided in constant time.
//!
//! Times are seconds since the Unix epoch.

use ed25519_dalek::{Signature, VerifyingKey};
use rand::{CryptoRng, RngCore};
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::kdf::hkdf_sha256;
use crate::keys::IdentityKeypair;
use crate::reader::{DecodeError, Reader, Writer};

/// The label every prekey bundle signature starts with.
const BUNDLE_LABEL: &[u8] = b"shallot-prekey-bundle-v1";
/// HKDF info of the session key.
const X3DH_INFO: &[u8] = b"shallot-x3dh-v1";
/// The only prekey bundle encoding version so far.
pub const BUNDLE_VERSION: u8 = 1;
/// Length of an encoded prekey bundle: version, identity, prekey id, prekey, created, expires,
/// signature.
pub const BUNDLE_LEN: usize = 1 + 32 + 4 + 32 + 8 + 8 + 64;
/// The only signed prekey storage version so far.
pub const SIGNED_PREKEY_VERSION: u8 = 1;
/// Length of a stored signed prekey: version, id, created, expires, secret.
pub const SIGNED_PREKEY_LEN: usize = 1 + 4 + 8 + 8 + 32;
/// Length of an encoded [`InitialHeader`]: ephemeral key, prekey id.
pub const INITIAL_HEADER_LEN: usize = 32 + 4;

/// Why a session could not be started.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum X3dhError {
    /// The bundle is signed by, and for, some other identity than the contact's.
    #[error("the prekey bundle belongs to another identity")]
    WrongIdentity,
    /// The bundle's signature does not verify: it was modified or forged.
    #[error("the prekey bundle's signature does not verify")]
    BadSignature,
    /// The bundle's validity starts in the future.
    #[error("the prekey bundle is not valid until {created} (it is now {now})")]
    NotYetValid {
        /// When the bundle becomes valid.
        created: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The bundle's validity has ended.
    #[error("the prekey bundle expired at {expires} (it is now {now})")]
    Expired {
        /// When the bundle stopped being valid.
        expires: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The session start names a different prekey than the one offered to answer it.
    #[error("the session start uses prekey {got}, not prekey {expected}")]
    WrongPrekey {
        /// The id of the prekey given to [`respond`].
        expected: u32,
        /// The id the initial header names.
        got: u32,
    },
    /// A key in the exchange is of small order, so a Diffie-Hellman output was all zeros.
    #[error("a key in the session start is invalid")]
    BadKey,
}

/// The X25519 secret of an identity: the first 32 bytes of SHA-512 of the ed25519 seed (the
/// ed25519 secret scalar before clamping; X25519 clamps it in every use).
pub fn identity_dh_secret(identity: &IdentityKeypair) -> StaticSecret {
    let scalar = Zeroizing::new(identity.signing_key().to_scalar_bytes());
    StaticSecret::from(*scalar)
}

/// The X25519 public key of an identity: the Montgomery form of its ed25519 key. It matches
/// [`identity_dh_secret`].
pub fn identity_dh_public(identity: &VerifyingKey) -> PublicKey {
    PublicKey::from(identity.to_montgomery().to_bytes())
}

/// The 32-byte secret a session starts from. Zeroized when dropped.
pub struct SharedSecret32(Zeroizing<[u8; 32]>);

impl SharedSecret32 {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SharedSecret32(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl ConstantTimeEq for SharedSecret32 {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.0.ct_eq(&*other.0)
    }
}

impl PartialEq for SharedSecret32 {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for SharedSecret32 {}

impl std::fmt::Debug for SharedSecret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret32(..)")
    }
}

/// The associated data every message of a session authenticates: the initiator's ed25519
/// identity key, then the responder's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AssociatedData([u8; 64]);

impl AssociatedData {
    /// `initiator ‖ responder`.
    pub fn new(initiator: &VerifyingKey, responder: &VerifyingKey) -> Self {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(initiator.as_bytes());
        bytes[32..].copy_from_slice(responder.as_bytes());
        AssociatedData(bytes)
    }

    /// Rebuilds associated data from its bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        AssociatedData(bytes)
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

/// What the initiator sends beside its first message so the responder can derive the session
/// key: its ephemeral public key and the id of the prekey it used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InitialHeader {
    /// The initiator's ephemeral X25519 public key `EK_A`.
    pub ephemeral: [u8; 32],
    /// The id of the responder's signed prekey the initiator used.
    pub prekey_id: u32,
}

impl InitialHeader {
    /// Encodes as `ephemeral(32) ‖ prekey_id(4)`.
    pub fn to_bytes(&self) -> [u8; INITIAL_HEADER_LEN] {
        let mut out = [0u8; INITIAL_HEADER_LEN];
        out[..32].copy_from_slice(&self.ephemeral);
        out[32..].copy_from_slice(&self.prekey_id.to_be_bytes());
        out
    }

    /// Decodes [`InitialHeader::to_bytes`]; the input must be exactly that long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let ephemeral = r.array()?;
        let prekey_id = r.u32()?;
        r.finish()?;
        Ok(InitialHeader {
            ephemeral,
            prekey_id,
        })
    }
}

/// A medium-term X25519 prekey with its id and validity window. The secret is zeroized when
/// dropped.
pub struct SignedPrekey {
    id: u32,
    secret: StaticSecret,
    created: u64,
    expires: u64,
}

impl SignedPrekey {
    /// A fresh prekey with id `id`, valid from `created` until just before `expires`.
    pub fn generate<R: RngCore + CryptoRng>(
        rng: &mut R,
        id: u32,
        created: u64,
        expires: u64,
    ) -> Self {
        SignedPrekey {
            id,
            secret: StaticSecret::random_from_rng(rng),
            created,
            expires,
        }
    }

    /// The prekey's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(&self.secret)
    }

    /// The secret half; it is also the responder's first ratchet key.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// When the prekey becomes valid.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// When the prekey stops being valid.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The bundle that publishes this prekey, signed by `identity`.
    pub fn bundle(&self, identity: &IdentityKeypair) -> PrekeyBundle {
        let public = identity.public();
        let prekey = self.public().to_bytes();
        let message = signed_message(&public, self.id, &prekey, self.created, self.expires);
        PrekeyBundle {
            identity: public,
            prekey_id: self.id,
            prekey,
            created: self.created,
            expires: self.expires,
            signature: identity.sign(&message),
        }
    }

    /// The storage form: `version(1) = 1 ‖ id(4) ‖ created(8) ‖ expires(8) ‖ secret(32)`.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SIGNED_PREKEY_LEN]> {
        let mut out = Zeroizing::new([0u8; SIGNED_PREKEY_LEN]);
        out[0] = SIGNED_PREKEY_VERSION;
        out[1..5].copy_from_slice(&self.id.to_be_bytes());
        out[5..13].copy_from_slice(&self.created.to_be_bytes());
        out[13..21].copy_from_slice(&self.expires.to_be_bytes());
        out[21..].copy_from_slice(self.secret.as_bytes());
        out
    }

    /// Decodes [`SignedPrekey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != SIGNED_PREKEY_VERSION {
            return Err(DecodeError::BadValue {
                field: "signed prekey version",
                reason: "unknown version",
            });
        }
        let id = r.u32()?;
        let created = r.u64()?;
        let expires = r.u64()?;
        let secret = StaticSecret::from(*Zeroizing::new(r.array::<32>()?));
        r.finish()?;
        Ok(SignedPrekey {
            id,
            secret,
            created,
            expires,
        })
    }
}

/// The bytes a bundle's signature covers:
/// `"shallot-prekey-bundle-v1" ‖ identity ‖ prekey_id ‖ prekey ‖ created ‖ expires`.
fn signed_message(
    identity: &VerifyingKey,
    prekey_id: u32,
    prekey: &[u8; 32],
    created: u64,
    expires: u64,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(BUNDLE_LABEL.len() + 32 + 4 + 32 + 8 + 8);
    m.put(BUNDLE_LABEL);
    m.put(identity.as_bytes());
    m.put_u32(prekey_id);
    m.put(prekey);
    m.put_u64(created);
    m.put_u64(expires);
    m
}

/// A user's published signed prekey: what an initiator needs to start a session with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyBundle {
    identity: VerifyingKey,
    prekey_id: u32,
    prekey: [u8; 32],
    created: u64,
    expires: u64,
    signature: Signature,
}

impl PrekeyBundle {
    /// The identity that signed the bundle (not yet checked: see [`PrekeyBundle::verify`]).
    pub fn identity(&self) -> &VerifyingKey {
        &self.identity
    }

    /// The prekey's id.
    pub fn prekey_id(&self) -> u32 {
        self.prekey_id
    }

    /// The signed prekey `SPK`; the initiator's first ratchet peer key.
    pub fn prekey(&self) -> PublicKey {
        PublicKey::from(self.prekey)
    }

    /// When the bundle becomes valid.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// When the bundle stops being valid.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// Encodes as `version(1) = 1 ‖ identity(32) ‖ prekey_id(4) ‖ prekey(32) ‖ created(8) ‖
    /// expires(8) ‖ signature(64)`: [`BUNDLE_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUNDLE_LEN);
        out.put_u8(BUNDLE_VERSION);
        out.put(self.identity.as_bytes());
        out.put_u32(self.prekey_id);
        out.put(&self.prekey);
        out.put_u64(self.created);
        out.put_u64(self.expires);
        out.put(&self.signature.to_bytes());
        out
    }

    /// Decodes [`PrekeyBundle::encode`]. This checks the form only; [`PrekeyBundle::verify`]
    /// checks the contents.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != BUNDLE_VERSION {
            return Err(DecodeError::BadValue {
                field: "prekey bundle version",
                reason: "unknown version",
            });
        }
        let identity =
            VerifyingKey::from_bytes(&r.array()?).map_err(|_| DecodeError::BadValue {
                field: "prekey bundle identity",
                reason: "not an ed25519 public key",
            })?;
        let prekey_id = r.u32()?;
        let prekey = r.array()?;
        let created = r.u64()?;
        let expires = r.u64()?;
        let signature = Signature::from_bytes(&r.array()?);
        r.finish()?;
        Ok(PrekeyBundle {
            identity,
            prekey_id,
            prekey,
            created,
            expires,
            signature,
        })
    }

    fn check_signature(&self) -> Result<(), X3dhError> {
        let message = signed_message(
            &self.identity,
            self.prekey_id,
            &self.prekey,
            self.created,
            self.expires,
        );
        self.identity
            .verify_strict(&message, &self.signature)
            .map_err(|_| X3dhError::BadSignature)
    }

    /// Checks that the bundle is `expected_identity`'s, that its signature verifies, and that
    /// `now` lies in `[created, expires)`.
    pub fn verify(&self, expected_identity: &VerifyingKey, now: u64) -> Result<(), X3dhError> {
        if self.identity != *expected_identity {
            return Err(X3dhError::WrongIdentity);
        }
        self.check_signature()?;
        if now < self.created {
            return Err(X3dhError::NotYetValid {
                created: self.created,
                now,
            });
        }
        if now >= self.expires {
            return Err(X3dhError::Expired {
                expires: self.expires,
                now,
            });
        }
        Ok(())
    }
}

fn is_zero(bytes: &[u8; 32]) -> Choice {
    bytes.ct_eq(&[0u8; 32])
}

/// `SK` from the three Diffie-Hellman outputs, refusing any that is all zeros.
fn session_key(
    dh1: &[u8; 32],
    dh2: &[u8; 32],
    dh3: &[u8; 32],
) -> Result<SharedSecret32, X3dhError> {
    let key = hkdf_sha256::<32>(&[0u8; 32], &[&[0xFF; 32], dh1, dh2, dh3], X3DH_INFO);
    if bool::from(is_zero(dh1) | is_zero(dh2) | is_zero(dh3)) {
        return Err(X3dhError::BadKey);
    }
    Ok(SharedSecret32(key))
}

/// Starts a session with the owner of `bundle`.
///
/// The bundle's signature is checked here; the caller must first have checked with
/// [`PrekeyBundle::verify`] that it belongs to the intended contact and is valid now.
/// Returns the session key, the header to send with the first message, and the session's
/// associated data.
pub fn initiate<R: RngCore + CryptoRng>(
    rng: &mut R,
    me: &IdentityKeypair,
    bundle: &PrekeyBundle,
) -> Result<(SharedSecret32, InitialHeader, AssociatedData), X3dhError> {
    bundle.check_signature()?;
    let ephemeral = StaticSecret::random_from_rng(rng);
    let prekey = bundle.prekey();
    let their_identity = identity_dh_public(&bundle.identity);
    let dh1 = identity_dh_secret(me).diffie_hellman(&prekey);
    let dh2 = ephemeral.diffie_hellman(&their_identity);
    let dh3 = ephemeral.diffie_hellman(&prekey);
    let key = session_key(dh1.as_bytes(), dh2.as_bytes(), dh3.as_bytes())?;
    let header = InitialHeader {
        ephemeral: PublicKey::from(&ephemeral).to_bytes(),
        prekey_id: bundle.prekey_id,
    };
    Ok((
        key,
        header,
        AssociatedData::new(&me.public(), &bundle.identity),
    ))
}

/// Answers a session started by `sender` with `header`, using the signed prekey it names.
///
/// Choosing `prekey` by `header.prekey_id`, and deciding how long an expired prekey is still
/// answered, is the caller's business. Returns the session key and associated data.
pub fn respond(
    me: &IdentityKeypair,
    prekey: &SignedPrekey,
    sender: &VerifyingKey,
    header: &InitialHeader,
) -> Result<(SharedSecret32, AssociatedData), X3dhError> {
    if header.prekey_id != prekey.id {
        return Err(X3dhError::WrongPrekey {
            expected: prekey.id,
            got: header.prekey_id,
        });
    }
    let ephemeral = PublicKey::from(header.ephemeral);
    let dh1 = prekey.secret.diffie_hellman(&identity_dh_public(sender));
    let dh2 = identity_dh_secret(me).diffie_hellman(&ephemeral);
    let dh3 = prekey.secret.diffie_hellman(&ephemeral);
    let key = session_key(dh1.as_bytes(), dh2.as_bytes(), dh3.as_bytes())?;
    Ok((key, AssociatedData::new(sender, &me.public())))
}

#[cfg(test)]
mod tests;
