//! Tests of the session start: agreement, identity and prekey binding, bundle checks and
//! encodings.

use super::*;
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;
const WEEK: u64 = 7 * 24 * 3600;

struct Bob {
    identity: IdentityKeypair,
    prekey: SignedPrekey,
    bundle: PrekeyBundle,
}

fn bob() -> Bob {
    let mut rng = rand::thread_rng();
    let identity = IdentityKeypair::generate(&mut rng);
    let prekey = SignedPrekey::generate(&mut rng, 7, NOW - 10, NOW + WEEK);
    let bundle = prekey.bundle(&identity);
    Bob {
        identity,
        prekey,
        bundle,
    }
}

#[test]
fn identity_dh_keys_match() {
    let mut rng = rand::thread_rng();
    for _ in 0..20 {
        let a = IdentityKeypair::generate(&mut rng);
        let b = IdentityKeypair::generate(&mut rng);
        assert_eq!(
            PublicKey::from(&identity_dh_secret(&a)),
            identity_dh_public(&a.public())
        );
        let ab = identity_dh_secret(&a).diffie_hellman(&identity_dh_public(&b.public()));
        let ba = identity_dh_secret(&b).diffie_hellman(&identity_dh_public(&a.public()));
        assert_eq!(ab.as_bytes(), ba.as_bytes());
    }
}

#[test]
fn both_sides_agree() {
    let mut rng = rand::thread_rng();
    let alice = IdentityKeypair::generate(&mut rng);
    let bob = bob();
    bob.bundle.verify(&bob.identity.public(), NOW).unwrap();
    let (sk_a, header, ad_a) = initiate(&mut rng, &alice, &bob.bundle).unwrap();
    assert_eq!(header.prekey_id, 7);
    let (sk_b, ad_b) = respond(&bob.identity, &bob.prekey, &alice.public(), &header).unwrap();
    assert_eq!(sk_a, sk_b);
    assert_eq!(ad_a, ad_b);
    assert_eq!(&ad_a.as_bytes()[..32], alice.public().as_bytes());
    assert_eq!(&ad_a.as_bytes()[32..], bob.identity.public().as_bytes());

    // A second start with the same bundle uses a new ephemeral key and a new secret.
    let (sk_again, header_again, _) = initiate(&mut rng, &alice, &bob.bundle).unwrap();
    assert_ne!(header_again.ephemeral, header.ephemeral);
    assert_ne!(sk_again, sk_a);
}

#[test]
fn wrong_sender_or_prekey_gives_a_different_secret() {
    let mut rng = rand::thread_rng();
    let alice = IdentityKeypair::generate(&mut rng);
    let mallory = IdentityKeypair::generate(&mut rng);
    let bob = bob();
    let (sk_a, header, _) = initiate(&mut rng, &alice, &bob.bundle).unwrap();

    let (sk, ad) = respond(&bob.identity, &bob.prekey, &mallory.public(), &header).unwrap();
    assert_ne!(sk, sk_a);
    assert_eq!(&ad.as_bytes()[..32], mallory.public().as_bytes());

    // Another prekey that happens to carry the same id.
    let other = SignedPrekey::generate(&mut rng, 7, NOW, NOW + WEEK);
    let (sk, _) = respond(&bob.identity, &other, &alice.public(), &header).unwrap();
    assert_ne!(sk, sk_a);

    // The wrong responder identity.
    let (sk, _) = respond(&mallory, &bob.prekey, &alice.public(), &header).unwrap();
    assert_ne!(sk, sk_a);

    // A prekey with another id is refused outright.
    let other = SignedPrekey::generate(&mut rng, 8, NOW, NOW + WEEK);
    assert_eq!(
        respond(&bob.identity, &other, &alice.public(), &header).err(),
        Some(X3dhError::WrongPrekey {
            expected: 8,
            got: 7
        })
    );
}

#[test]
fn every_tampered_bundle_byte_is_refused() {
    let mut rng = rand::thread_rng();
    let alice = IdentityKeypair::generate(&mut rng);
    let bob = bob();
    let good = bob.bundle.encode();
    assert_eq!(good.len(), BUNDLE_LEN);
    for i in 0..good.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = good.clone();
            bad[i] ^= bit;
            if let Ok(bundle) = PrekeyBundle::decode(&bad) {
                assert!(
                    bundle.verify(&bob.identity.public(), NOW).is_err(),
                    "byte {i}"
                );
                assert!(initiate(&mut rng, &alice, &bundle).is_err(), "byte {i}");
            }
        }
    }
    // A bundle with a changed field and the original signature.
    let mut bundle = bob.bundle.clone();
    bundle.expires += 1;
    assert_eq!(
        bundle.verify(&bob.identity.public(), NOW),
        Err(X3dhError::BadSignature)
    );
    assert_eq!(
        initiate(&mut rng, &alice, &bundle).err(),
        Some(X3dhError::BadSignature)
    );
}

#[test]
fn validity_window_and_identity_are_checked() {
    let bob = bob();
    let me = bob.identity.public();
    let (created, expires) = (bob.bundle.created(), bob.bundle.expires());
    assert!(bob.bundle.verify(&me, created).is_ok());
    assert!(bob.bundle.verify(&me, expires - 1).is_ok());
    assert_eq!(
        bob.bundle.verify(&me, created - 1),
        Err(X3dhError::NotYetValid {
            created,
            now: created - 1
        })
    );
    assert_eq!(
        bob.bundle.verify(&me, expires),
        Err(X3dhError::Expired {
            expires,
            now: expires
        })
    );
    let stranger = IdentityKeypair::generate(&mut rand::thread_rng()).public();
    assert_eq!(
        bob.bundle.verify(&stranger, NOW),
        Err(X3dhError::WrongIdentity)
    );
    // A bundle re-signed by someone else, for their own identity, is theirs, not Bob's.
    let forged = bob
        .prekey
        .bundle(&IdentityKeypair::generate(&mut rand::thread_rng()));
    assert_eq!(forged.verify(&me, NOW), Err(X3dhError::WrongIdentity));
}

#[test]
fn all_zero_diffie_hellman_outputs_are_refused() {
    let mut rng = rand::thread_rng();
    let alice = IdentityKeypair::generate(&mut rng);
    let bob = bob();
    // A correctly signed bundle whose prekey is a small-order point.
    let message = signed_message(&bob.identity.public(), 1, &[0u8; 32], NOW, NOW + WEEK);
    let bundle = PrekeyBundle {
        identity: bob.identity.public(),
        prekey_id: 1,
        prekey: [0u8; 32],
        created: NOW,
        expires: NOW + WEEK,
        signature: bob.identity.sign(&message),
    };
    assert!(bundle.verify(&bob.identity.public(), NOW).is_ok());
    assert_eq!(
        initiate(&mut rng, &alice, &bundle).err(),
        Some(X3dhError::BadKey)
    );
    // An initial header whose ephemeral key is a small-order point.
    let header = InitialHeader {
        ephemeral: [0u8; 32],
        prekey_id: 7,
    };
    assert_eq!(
        respond(&bob.identity, &bob.prekey, &alice.public(), &header).err(),
        Some(X3dhError::BadKey)
    );
}

#[test]
fn encodings_refuse_bad_lengths_and_versions() {
    let bob = bob();
    let good = bob.bundle.encode();
    assert_eq!(PrekeyBundle::decode(&good).unwrap(), bob.bundle);
    assert!(matches!(
        PrekeyBundle::decode(&good[..good.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        PrekeyBundle::decode(&long),
        Err(DecodeError::TrailingBytes(1))
    );
    let mut v2 = good.clone();
    v2[0] = 2;
    assert!(matches!(
        PrekeyBundle::decode(&v2),
        Err(DecodeError::BadValue { .. })
    ));

    let stored = bob.prekey.to_bytes();
    let mut v2 = *stored;
    v2[0] = 2;
    assert!(SignedPrekey::from_bytes(&v2).is_err());
    assert!(SignedPrekey::from_bytes(&stored[..SIGNED_PREKEY_LEN - 1]).is_err());
    assert!(InitialHeader::from_bytes(&[0u8; INITIAL_HEADER_LEN + 1]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_prekeys_round_trip(id: u32, created: u64, expires: u64, seed: [u8; 32]) {
        let prekey = SignedPrekey { id, secret: StaticSecret::from(seed), created, expires };
        let back = SignedPrekey::from_bytes(&*prekey.to_bytes()).unwrap();
        prop_assert_eq!(back.id(), id);
        prop_assert_eq!(back.created(), created);
        prop_assert_eq!(back.expires(), expires);
        prop_assert_eq!(back.public(), prekey.public());
        prop_assert_eq!(back.secret().to_bytes(), seed);
    }

    #[test]
    fn bundles_round_trip(id: u32, created: u64, expires: u64, seed: [u8; 32], key: [u8; 32]) {
        let identity = IdentityKeypair::from_secret_bytes(&seed);
        let prekey = SignedPrekey { id, secret: StaticSecret::from(key), created, expires };
        let bundle = prekey.bundle(&identity);
        let back = PrekeyBundle::decode(&bundle.encode()).unwrap();
        prop_assert!(back.verify(&identity.public(), created).is_ok() || created >= expires);
        prop_assert_eq!(back, bundle);
    }

    #[test]
    fn initial_headers_round_trip(ephemeral: [u8; 32], prekey_id: u32) {
        let header = InitialHeader { ephemeral, prekey_id };
        prop_assert_eq!(InitialHeader::from_bytes(&header.to_bytes()).unwrap(), header);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = PrekeyBundle::decode(&bytes);
        let _ = SignedPrekey::from_bytes(&bytes);
        let _ = InitialHeader::from_bytes(&bytes);
    }
}
