//! Tests of key blinding: Tor's published vectors, agreement between the public and secret
//! derivations, and separation between periods.

use super::*;
use crate::hex;
use curve25519_dalek::constants::EIGHT_TORSION;
use ed25519_dalek::Verifier;

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../../tests/vectors/tor-key-blinding.json")).unwrap()
}

fn bytes<const N: usize>(v: &serde_json::Value, name: &str) -> [u8; N] {
    hex::decode_array(v[name].as_str().unwrap()).unwrap()
}

/// The 64-byte form C tor prints: the scalar (little-endian, reduced) and the nonce prefix.
fn expanded_bytes(secret: &ExpandedSecretKey) -> Vec<u8> {
    let mut out = secret.scalar.to_bytes().to_vec();
    out.extend_from_slice(&secret.hash_prefix);
    out
}

/// C tor's `test_blinding_basics`: identity, period 1234 of 1440 minutes, through the whole
/// derivation (hash, blinded public key, blinded secret key).
#[test]
fn reproduces_c_tor_test_blinding_basics() {
    let v = &vectors()["full_derivation"];
    let identity = VerifyingKey::from_bytes(&bytes(v, "identity_public")).unwrap();
    let expanded = ExpandedSecretKey::from_bytes(&bytes(v, "identity_expanded_secret"));
    assert_eq!(VerifyingKey::from(&expanded), identity);
    let period = v["period_number"].as_u64().unwrap();
    let period_len = v["period_length"].as_u64().unwrap();

    assert_eq!(
        blinding_hash(&identity, period, period_len),
        bytes::<32>(v, "blinding_hash")
    );
    let blinded = blind_public_key(&identity, period, period_len).unwrap();
    assert_eq!(blinded.to_bytes(), bytes::<32>(v, "blinded_public"));

    let pair = BlindedKeypair::from_expanded(&expanded, &identity, period, period_len).unwrap();
    assert_eq!(pair.public(), blinded);
    assert_eq!(
        expanded_bytes(&pair.secret),
        bytes::<64>(v, "blinded_expanded_secret").to_vec()
    );
    let sig = pair.sign(b"descriptor");
    assert!(blinded.verify_strict(b"descriptor", &sig).is_ok());
}

/// Tor's `ed25519_exts_ref.py` vectors (as Arti's tor-llcrypto tests them): the blinding
/// arithmetic for a given hash `h`, including the edge values all-zero and all-0x11.
#[test]
fn reproduces_tor_blinding_vectors_for_given_hashes() {
    let cases = vectors()["given_blinding_hash"]["cases"].clone();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let seed: [u8; 32] = bytes(case, "seed");
        let identity = IdentityKeypair::from_secret_bytes(&seed);
        assert_eq!(identity.public().to_bytes(), bytes::<32>(case, "public"));

        // The expanded secret from the seed is C tor's (up to the scalar's representation).
        let expanded = ExpandedSecretKey::from(&seed);
        let c_tor: [u8; 64] = bytes(case, "expanded_secret");
        let mut c_scalar = [0u8; 32];
        c_scalar.copy_from_slice(&c_tor[..32]);
        assert_eq!(Scalar::from_bytes_mod_order(c_scalar), expanded.scalar);
        assert_eq!(&expanded.hash_prefix[..], &c_tor[32..]);

        let factor = blinding_factor(bytes(case, "param"));
        let blinded = blind_point(&identity.public(), &factor);
        assert_eq!(blinded.to_bytes(), bytes::<32>(case, "blinded_public"));

        let pair = BlindedKeypair::with_factor(&expanded, &factor);
        assert_eq!(pair.public(), blinded);
        assert_eq!(
            expanded_bytes(&pair.secret),
            bytes::<64>(case, "blinded_expanded_secret").to_vec()
        );
        let sig = pair.sign(b"hello world");
        assert!(blinded.verify_strict(b"hello world", &sig).is_ok());
    }
}

#[test]
fn blinded_signature_verifies_under_the_key_computed_from_the_public_identity() {
    let mut rng = rand::thread_rng();
    for period in [0u64, 1, 19_000, u64::MAX] {
        let identity = IdentityKeypair::generate(&mut rng);
        let pair = BlindedKeypair::derive(&identity, period, 1440).unwrap();
        let public_only = blind_public_key(&identity.public(), period, 1440).unwrap();
        assert_eq!(pair.public(), public_only);
        let sig = pair.sign(b"fetch mailbox");
        assert!(public_only.verify_strict(b"fetch mailbox", &sig).is_ok());
        assert!(public_only.verify_strict(b"fetch mailbax", &sig).is_err());
        // Not a signature by the identity itself.
        assert!(identity.public().verify(b"fetch mailbox", &sig).is_err());
        assert!(identity
            .public()
            .verify_strict(b"fetch mailbox", &sig)
            .is_err());
        assert_ne!(public_only, identity.public());
    }
}

#[test]
fn periods_and_period_lengths_give_different_keys() {
    let identity = IdentityKeypair::generate(&mut rand::thread_rng()).public();
    let keys = [
        blind_public_key(&identity, 100, 1440).unwrap(),
        blind_public_key(&identity, 101, 1440).unwrap(),
        blind_public_key(&identity, 100, 60).unwrap(),
    ];
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
    assert_ne!(keys[1], keys[2]);
    // The same inputs always give the same key.
    assert_eq!(keys[0], blind_public_key(&identity, 100, 1440).unwrap());
    // A signature for one period is no good for the next.
    let pair =
        BlindedKeypair::derive(&IdentityKeypair::from_secret_bytes(&[9u8; 32]), 100, 1440).unwrap();
    let next = blind_public_key(
        &IdentityKeypair::from_secret_bytes(&[9u8; 32]).public(),
        101,
        1440,
    )
    .unwrap();
    assert!(next.verify_strict(b"m", &pair.sign(b"m")).is_err());
}

#[test]
fn small_order_and_mixed_order_identities_are_refused() {
    // The neutral element: compressed y = 1.
    let mut neutral = [0u8; 32];
    neutral[0] = 1;
    let weak = VerifyingKey::from_bytes(&neutral).unwrap();
    assert_eq!(
        blind_public_key(&weak, 1, 1440),
        Err(BlindError::UnsuitableKey)
    );

    // A genuine key plus a point of order 8.
    let honest = IdentityKeypair::generate(&mut rand::thread_rng()).public();
    let mixed = VerifyingKey::from(honest.to_edwards() + EIGHT_TORSION[1]);
    assert!(!mixed.is_weak());
    assert_eq!(
        blind_public_key(&mixed, 1, 1440),
        Err(BlindError::UnsuitableKey)
    );
    assert!(blind_public_key(&honest, 1, 1440).is_ok());
}
