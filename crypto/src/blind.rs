//! Ed25519 key blinding, exactly as Tor's v3 onion services do it (`docs/spec.md` §9.1;
//! rend-spec-v3 appendix A.2), with an empty secret `s`.
//!
//! From an identity key `A` and a period `(number, length)`, anyone can compute the blinded
//! key `A' = h·A`; only the holder of the identity secret `a` can compute `a' = h·a mod ℓ` and
//! sign under `A'`. Blinded keys of different periods cannot be linked to each other or to `A`
//! without knowing `A`. A recipient's mailbox for a period is named by its blinded key, and the
//! requests that manage it are signed with the blinded secret.
//!
//! ```text
//! h  = SHA3-256("Derive temporary signing key" ‖ 0x00 ‖ A ‖ s ‖ B ‖ N), s empty
//! B  = "(15112221349535400772501151409588531511454012693041857206046113283949847762202, "
//!      "46316835694926478169428394003475163141307993866256225615783033603165251855960)"
//! N  = "key-blind" ‖ INT_8(period number) ‖ INT_8(period length)
//! h is clamped (h[0] &= 248; h[31] &= 63; h[31] |= 64) and read as a scalar mod ℓ
//! a' = h·a mod ℓ,   A' = h·A,
//! nonce prefix' = SHA-512("Derive temporary signing key hash input" ‖ nonce prefix)[..32]
//! ```
//!
//! Blinded signatures are ordinary ed25519 signatures under `A'`.

use curve25519_dalek::scalar::{clamp_integer, Scalar};
use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::digest::generic_array::GenericArray;
use sha2::Sha512;
use sha3::{Digest, Sha3_256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::keys::IdentityKeypair;

/// `BLIND_STRING` of rend-spec-v3 A.2: `"Derive temporary signing key" ‖ INT_1(0)`.
const BLIND_STRING: &[u8] = b"Derive temporary signing key\0";
/// The ed25519 basepoint `B`, written as rend-spec-v3 A.2 (and C tor) write it.
const BASEPOINT_STRING: &[u8] = b"(15112221349535400772501151409588531511454012693041857206046113283949847762202, 46316835694926478169428394003475163141307993866256225615783033603165251855960)";
/// The prefix of the nonce `N`.
const NONCE_PREFIX: &[u8] = b"key-blind";
/// `RH_BLIND_STRING` of rend-spec-v3 A.2, which derives the blinded nonce prefix.
const RH_BLIND_STRING: &[u8] = b"Derive temporary signing key hash input";

/// Why a key could not be blinded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlindError {
    /// The identity key is of small order or has a small-order component, so its blinded keys
    /// would not match the ones its owner derives. No key made by ed25519 key generation is
    /// like this.
    #[error("the identity key is not a valid prime-order ed25519 key and cannot be blinded")]
    UnsuitableKey,
}

/// `h = SHA3-256(BLIND_STRING ‖ A ‖ s ‖ B ‖ N)` with `s` empty, before clamping.
fn blinding_hash(identity: &VerifyingKey, period: u64, period_len: u64) -> [u8; 32] {
    Sha3_256::new()
        .chain_update(BLIND_STRING)
        .chain_update(identity.as_bytes())
        .chain_update(BASEPOINT_STRING)
        .chain_update(NONCE_PREFIX)
        .chain_update(period.to_be_bytes())
        .chain_update(period_len.to_be_bytes())
        .finalize()
        .into()
}

/// The blinding factor: `h` clamped as an X25519/ed25519 secret scalar is, then reduced mod ℓ.
fn blinding_factor(h: [u8; 32]) -> Scalar {
    Scalar::from_bytes_mod_order(clamp_integer(h))
}

/// Refuses identity keys whose blinded forms would be unsafe or inconsistent.
fn check_identity(identity: &VerifyingKey) -> Result<(), BlindError> {
    if identity.is_weak() || !identity.to_edwards().is_torsion_free() {
        return Err(BlindError::UnsuitableKey);
    }
    Ok(())
}

/// `A' = factor·A`.
fn blind_point(identity: &VerifyingKey, factor: &Scalar) -> VerifyingKey {
    VerifyingKey::from(factor * identity.to_edwards())
}

/// `(a', prefix') = (factor·a mod ℓ, SHA-512(RH_BLIND_STRING ‖ prefix)[..32])`.
fn blind_secret(secret: &ExpandedSecretKey, factor: &Scalar) -> ExpandedSecretKey {
    let mut digest = Zeroizing::new([0u8; 64]);
    Sha512::new()
        .chain_update(RH_BLIND_STRING)
        .chain_update(secret.hash_prefix)
        .finalize_into(GenericArray::from_mut_slice(&mut digest[..]));
    let mut hash_prefix = [0u8; 32];
    hash_prefix.copy_from_slice(&digest[..32]);
    ExpandedSecretKey {
        scalar: secret.scalar * factor,
        hash_prefix,
    }
}

/// The blinded public key of `identity` for period number `period` of length `period_len`
/// (in whatever unit the caller uses consistently; Tor uses minutes).
///
/// Anyone who knows the identity key can compute this; it equals
/// [`BlindedKeypair::public`] for the same identity and period.
pub fn blind_public_key(
    identity: &VerifyingKey,
    period: u64,
    period_len: u64,
) -> Result<VerifyingKey, BlindError> {
    check_identity(identity)?;
    let factor = blinding_factor(blinding_hash(identity, period, period_len));
    Ok(blind_point(identity, &factor))
}

/// An identity's blinded key pair for one period: it signs for the blinded public key.
///
/// The blinded secret is zeroized when dropped.
pub struct BlindedKeypair {
    secret: ExpandedSecretKey,
    public: VerifyingKey,
}

impl BlindedKeypair {
    /// Derives the blinded key pair of `identity` for period number `period` of length
    /// `period_len`.
    pub fn derive(
        identity: &IdentityKeypair,
        period: u64,
        period_len: u64,
    ) -> Result<Self, BlindError> {
        let expanded = ExpandedSecretKey::from(identity.signing_key().as_bytes());
        Self::from_expanded(&expanded, &identity.public(), period, period_len)
    }

    /// Blinds an expanded identity secret whose public key is `identity`.
    fn from_expanded(
        expanded: &ExpandedSecretKey,
        identity: &VerifyingKey,
        period: u64,
        period_len: u64,
    ) -> Result<Self, BlindError> {
        check_identity(identity)?;
        let factor = blinding_factor(blinding_hash(identity, period, period_len));
        Ok(Self::with_factor(expanded, &factor))
    }

    fn with_factor(expanded: &ExpandedSecretKey, factor: &Scalar) -> Self {
        let secret = blind_secret(expanded, factor);
        let public = VerifyingKey::from(&secret);
        BlindedKeypair { secret, public }
    }

    /// The blinded public key.
    pub fn public(&self) -> VerifyingKey {
        self.public
    }

    /// Signs `msg` with the blinded secret: a standard ed25519 signature that
    /// `VerifyingKey::verify_strict` accepts under [`BlindedKeypair::public`].
    pub fn sign(&self, msg: &[u8]) -> Signature {
        raw_sign::<Sha512>(&self.secret, msg, &self.public)
    }
}

#[cfg(test)]
mod tests;
