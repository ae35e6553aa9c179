//! Records published beside a mailbox, readable only by those who know the owner's address
//! (`docs/spec.md` §9.5): the owner's prekey bundle is stored under the blinded mailbox id, and
//! must not tell the mailbox relay whose mailbox it is.
//!
//! As with Tor's v3 onion service descriptors, the key comes from the unblinded identity key,
//! which the relay does not know and cannot derive from the blinded one:
//! `key = HKDF-SHA256(salt = "shallot-published-v1", ikm = identity ‖ mailbox, info = "")`,
//! and the record is `nonce(12) ‖ ChaCha20-Poly1305(key, nonce, aad = mailbox, plaintext)`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::VerifyingKey;
use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

const SALT: &[u8] = b"shallot-published-v1";
const NONCE_LEN: usize = 12;

/// A published record could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the published record does not open with this address")]
pub struct PublishedError;

fn cipher(identity: &VerifyingKey, mailbox: &[u8; 32]) -> Result<ChaCha20Poly1305, PublishedError> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(identity.as_bytes());
    ikm[32..].copy_from_slice(mailbox);
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(SALT), &ikm[..])
        .expand(b"", &mut key[..])
        .map_err(|_| PublishedError)?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(&key[..])))
}

/// Encrypts `plaintext` for everyone who knows `identity`, to be stored under `mailbox`.
pub fn seal<R: RngCore + CryptoRng>(
    rng: &mut R,
    identity: &VerifyingKey,
    mailbox: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, PublishedError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let ct = cipher(identity, mailbox)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: mailbox,
            },
        )
        .map_err(|_| PublishedError)?;
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a record published by `identity` under `mailbox`.
pub fn open(
    identity: &VerifyingKey,
    mailbox: &[u8; 32],
    record: &[u8],
) -> Result<Vec<u8>, PublishedError> {
    if record.len() < NONCE_LEN {
        return Err(PublishedError);
    }
    let (nonce, ct) = record.split_at(NONCE_LEN);
    cipher(identity, mailbox)?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: mailbox,
            },
        )
        .map_err(|_| PublishedError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeypair;

    #[test]
    fn only_the_address_opens_it() {
        let mut rng = rand::thread_rng();
        let alice = IdentityKeypair::generate(&mut rng).public();
        let eve = IdentityKeypair::generate(&mut rng).public();
        let mailbox = [9u8; 32];
        let record = seal(&mut rng, &alice, &mailbox, b"bundle").unwrap();
        assert!(!record.windows(32).any(|w| w == alice.as_bytes()));
        assert_eq!(open(&alice, &mailbox, &record).unwrap(), b"bundle");
        assert_eq!(open(&eve, &mailbox, &record), Err(PublishedError));
        assert_eq!(
            open(&alice, &[8u8; 32], &record),
            Err(PublishedError),
            "bound to the mailbox"
        );
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 1;
            assert_eq!(open(&alice, &mailbox, &bad), Err(PublishedError));
        }
        assert_eq!(open(&alice, &mailbox, &[1, 2, 3]), Err(PublishedError));
    }
}
