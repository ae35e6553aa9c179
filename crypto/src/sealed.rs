//! Sealed-sender envelopes (`docs/spec.md` §10.5): what a sender leaves in a recipient's
//! mailbox. An envelope is encrypted to the recipient's identity with a fresh ephemeral key
//! and carries nothing about its sender; only the recipient can open it, and only the
//! contents (a ratchet message, which authenticates its sender) say who sent it.
//!
//! ```text
//! e, E          a fresh X25519 key pair, one per envelope
//! R_dh          the recipient's identity X25519 key (§10.1)
//! key ‖ nonce   = HKDF-SHA256(salt = E ‖ R_dh, ikm = DH(e, R_dh), info = "shallot-sealed-v1")
//! envelope      = version(1) = 1 ‖ E(32) ‖ ChaCha20-Poly1305(key, nonce, aad = version ‖ E, inner)
//! ```
//!
//! An envelope is exactly [`ENVELOPE_OVERHEAD`] bytes longer than its contents, so envelopes
//! of equal contents length are of equal length. Any change to any byte makes it unreadable.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::VerifyingKey;
use rand::{CryptoRng, RngCore};
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::kdf::hkdf_sha256;
use crate::keys::IdentityKeypair;
use crate::reader::Reader;
use crate::x3dh::{identity_dh_public, identity_dh_secret};

/// The only envelope version so far.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes an envelope adds to its contents: version, ephemeral key, AEAD tag.
pub const ENVELOPE_OVERHEAD: usize = 1 + 32 + 16;
/// HKDF info of the envelope key.
const SEALED_INFO: &[u8] = b"shallot-sealed-v1";
/// Length of the clear part of an envelope, which is its associated data.
const CLEAR_LEN: usize = 1 + 32;

/// Why an envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    /// The recipient's identity key is of small order: nothing can be sealed to it.
    #[error("the recipient's identity key is invalid")]
    BadRecipient,
    /// The contents are longer than ChaCha20-Poly1305 can encrypt at once.
    #[error("message is too long to seal")]
    TooLong,
    /// The envelope is shorter than the smallest possible one.
    #[error("envelope of {len} bytes is shorter than the minimum of {ENVELOPE_OVERHEAD}")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The envelope is of a version this program does not know.
    #[error("envelope version {0} is not supported")]
    UnknownVersion(u8),
    /// The envelope is not for this identity, or was modified.
    #[error("envelope could not be opened: it is not for this identity, or it was modified")]
    Unreadable,
}

/// The key and nonce of one envelope (`key ‖ nonce` above).
fn envelope_okm(
    ephemeral: &[u8; 32],
    recipient_dh: &[u8; 32],
    shared: &[u8; 32],
) -> Zeroizing<[u8; 44]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient_dh);
    hkdf_sha256::<44>(&salt, &[shared], SEALED_INFO)
}

/// The AEAD and nonce of `key ‖ nonce`.
fn envelope_cipher(okm: &[u8; 44]) -> (ChaCha20Poly1305, Nonce) {
    let aead = ChaCha20Poly1305::new(Key::from_slice(&okm[..32]));
    (aead, *Nonce::from_slice(&okm[32..]))
}

fn is_zero(bytes: &[u8; 32]) -> Choice {
    bytes.ct_eq(&[0u8; 32])
}

/// Seals `inner` so that only the holder of `recipient`'s identity can open it.
pub fn seal<R: RngCore + CryptoRng>(
    rng: &mut R,
    recipient: &VerifyingKey,
    inner: &[u8],
) -> Result<Vec<u8>, SealError> {
    EnvelopeKey::new(rng, recipient)?.seal(inner)
}

/// The key of one envelope to one recipient, made ahead of its contents: the ephemeral key
/// pair and the Diffie-Hellman with the recipient, which are most of sealing's work. It seals
/// one envelope and is consumed doing so; its key, on the heap, is wiped when it is dropped.
pub struct EnvelopeKey {
    ephemeral_public: [u8; 32],
    okm: Box<Zeroizing<[u8; 44]>>,
}

impl EnvelopeKey {
    /// A fresh envelope key for `recipient`.
    pub fn new<R: RngCore + CryptoRng>(
        rng: &mut R,
        recipient: &VerifyingKey,
    ) -> Result<Self, SealError> {
        let ephemeral = EphemeralSecret::random_from_rng(rng);
        let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
        let recipient_dh = identity_dh_public(recipient);
        let shared = ephemeral.diffie_hellman(&recipient_dh);
        if bool::from(is_zero(shared.as_bytes())) {
            return Err(SealError::BadRecipient);
        }
        // Boxed first and copied in, as the ratchet's send key is (`SendKey`).
        let mut okm = Box::new(Zeroizing::new([0u8; 44]));
        okm.copy_from_slice(
            &envelope_okm(
                &ephemeral_public,
                recipient_dh.as_bytes(),
                shared.as_bytes(),
            )[..],
        );
        Ok(EnvelopeKey {
            ephemeral_public,
            okm,
        })
    }

    /// Seals `inner` with this key.
    pub fn seal(self, inner: &[u8]) -> Result<Vec<u8>, SealError> {
        let (aead, nonce) = envelope_cipher(&self.okm);
        let mut clear = [0u8; CLEAR_LEN];
        clear[0] = ENVELOPE_VERSION;
        clear[1..].copy_from_slice(&self.ephemeral_public);
        let sealed = aead
            .encrypt(
                &nonce,
                Payload {
                    msg: inner,
                    aad: &clear,
                },
            )
            .map_err(|_| SealError::TooLong)?;
        let mut envelope = Vec::with_capacity(CLEAR_LEN + sealed.len());
        envelope.extend_from_slice(&clear);
        envelope.extend_from_slice(&sealed);
        Ok(envelope)
    }
}

/// Opens an envelope sealed to `me`.
pub fn open(me: &IdentityKeypair, envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let too_short = SealError::TooShort {
        len: envelope.len(),
    };
    let mut r = Reader::new(envelope);
    let version = r.u8().map_err(|_| too_short.clone())?;
    if version != ENVELOPE_VERSION {
        return Err(SealError::UnknownVersion(version));
    }
    if envelope.len() < ENVELOPE_OVERHEAD {
        return Err(too_short);
    }
    let ephemeral: [u8; 32] = r.array().map_err(|_| too_short.clone())?;
    let sealed = r.take_rest();
    r.finish().map_err(|_| too_short)?;

    let shared = identity_dh_secret(me).diffie_hellman(&PublicKey::from(ephemeral));
    let recipient_dh = identity_dh_public(&me.public());
    let okm = envelope_okm(&ephemeral, recipient_dh.as_bytes(), shared.as_bytes());
    let (aead, nonce) = envelope_cipher(&okm);
    let opened = aead.decrypt(
        &nonce,
        Payload {
            msg: sealed,
            aad: &envelope[..CLEAR_LEN],
        },
    );
    match opened {
        Ok(inner) if !bool::from(is_zero(shared.as_bytes())) => Ok(Zeroizing::new(inner)),
        Ok(inner) => {
            drop(Zeroizing::new(inner));
            Err(SealError::Unreadable)
        }
        Err(_) => Err(SealError::Unreadable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn identity() -> IdentityKeypair {
        IdentityKeypair::generate(&mut rand::thread_rng())
    }

    #[test]
    fn round_trips() {
        let mut rng = rand::thread_rng();
        let bob = identity();
        for len in [0usize, 1, 100, 5000] {
            let inner: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let envelope = seal(&mut rng, &bob.public(), &inner).unwrap();
            assert_eq!(envelope.len(), inner.len() + ENVELOPE_OVERHEAD);
            assert_eq!(envelope[0], ENVELOPE_VERSION);
            assert_eq!(*open(&bob, &envelope).unwrap(), inner);
        }
    }

    #[test]
    fn a_key_made_ahead_seals_an_envelope_like_any_other() {
        let mut rng = rand::thread_rng();
        let (alice, bob) = (identity(), identity());
        let key = EnvelopeKey::new(&mut rng, &bob.public()).unwrap();
        let other = EnvelopeKey::new(&mut rng, &bob.public()).unwrap();
        let envelope = key.seal(b"written later").unwrap();
        assert_eq!(&open(&bob, &envelope).unwrap()[..], b"written later");
        assert_eq!(open(&alice, &envelope).err(), Some(SealError::Unreadable));
        // Each key is its own ephemeral: two envelopes share nothing in the clear.
        let second = other.seal(b"written later").unwrap();
        assert_eq!(second.len(), envelope.len());
        assert_ne!(second[..CLEAR_LEN], envelope[..CLEAR_LEN]);
    }

    #[test]
    fn every_modified_byte_is_refused() {
        let mut rng = rand::thread_rng();
        let bob = identity();
        let envelope = seal(&mut rng, &bob.public(), b"meet at the usual place").unwrap();
        for i in 0..envelope.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = envelope.clone();
                bad[i] ^= bit;
                let err = open(&bob, &bad).unwrap_err();
                if i == 0 {
                    assert_eq!(err, SealError::UnknownVersion(ENVELOPE_VERSION ^ bit));
                } else {
                    assert_eq!(err, SealError::Unreadable, "byte {i}");
                }
            }
        }
        // Truncated or extended, it is refused too.
        assert!(open(&bob, &envelope[..envelope.len() - 1]).is_err());
        let mut longer = envelope.clone();
        longer.push(0);
        assert_eq!(open(&bob, &longer).err(), Some(SealError::Unreadable));
    }

    #[test]
    fn only_the_recipient_can_open() {
        let mut rng = rand::thread_rng();
        let bob = identity();
        let envelope = seal(&mut rng, &bob.public(), b"for bob").unwrap();
        assert_eq!(
            open(&identity(), &envelope).err(),
            Some(SealError::Unreadable)
        );
    }

    #[test]
    fn envelopes_of_equal_contents_length_are_of_equal_length_and_unlinkable() {
        let mut rng = rand::thread_rng();
        let (bob, carol) = (identity(), identity());
        let a = seal(&mut rng, &bob.public(), b"first message").unwrap();
        let b = seal(&mut rng, &carol.public(), b"other message").unwrap();
        let c = seal(&mut rng, &bob.public(), b"first message").unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(a.len(), c.len());
        // The same contents to the same recipient share nothing but the version byte.
        assert_ne!(a[1..33], c[1..33]);
        assert_ne!(a[33..], c[33..]);
    }

    #[test]
    fn short_and_unknown_envelopes_are_refused() {
        let bob = identity();
        assert_eq!(open(&bob, &[]).err(), Some(SealError::TooShort { len: 0 }));
        assert_eq!(
            open(&bob, &[ENVELOPE_VERSION; ENVELOPE_OVERHEAD - 1]).err(),
            Some(SealError::TooShort {
                len: ENVELOPE_OVERHEAD - 1
            })
        );
        let mut v2 = vec![0u8; ENVELOPE_OVERHEAD + 10];
        v2[0] = 2;
        assert_eq!(open(&bob, &v2).err(), Some(SealError::UnknownVersion(2)));
    }

    #[test]
    fn small_order_keys_are_refused() {
        let mut rng = rand::thread_rng();
        // The neutral element as a recipient identity.
        let mut neutral = [0u8; 32];
        neutral[0] = 1;
        let weak = VerifyingKey::from_bytes(&neutral).unwrap();
        assert_eq!(
            seal(&mut rng, &weak, b"x").err(),
            Some(SealError::BadRecipient)
        );
        // A small-order ephemeral key in an envelope.
        let bob = identity();
        let mut envelope = seal(&mut rng, &bob.public(), b"x").unwrap();
        envelope[1..33].fill(0);
        assert_eq!(open(&bob, &envelope).err(), Some(SealError::Unreadable));
        // Even one made to authenticate: with a small-order ephemeral key the shared secret is
        // zero and anyone can compute the envelope key.
        let recipient_dh = identity_dh_public(&bob.public());
        let okm = envelope_okm(&[0u8; 32], recipient_dh.as_bytes(), &[0u8; 32]);
        let (aead, nonce) = envelope_cipher(&okm);
        let mut forged = vec![ENVELOPE_VERSION];
        forged.extend_from_slice(&[0u8; 32]);
        let aad = forged.clone();
        let sealed = aead
            .encrypt(
                &nonce,
                Payload {
                    msg: &b"forged"[..],
                    aad: &aad,
                },
            )
            .unwrap();
        forged.extend_from_slice(&sealed);
        assert_eq!(open(&bob, &forged).err(), Some(SealError::Unreadable));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_contents_round_trip(inner in proptest::collection::vec(any::<u8>(), 0..600)) {
            let bob = IdentityKeypair::from_secret_bytes(&[4u8; 32]);
            let envelope = seal(&mut rand::thread_rng(), &bob.public(), &inner).unwrap();
            prop_assert_eq!(envelope.len(), inner.len() + ENVELOPE_OVERHEAD);
            prop_assert_eq!(&*open(&bob, &envelope).unwrap(), &inner);
        }

        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let bob = IdentityKeypair::from_secret_bytes(&[4u8; 32]);
            prop_assert!(open(&bob, &bytes).is_err());
        }
    }
}
