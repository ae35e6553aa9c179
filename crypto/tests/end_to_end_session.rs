//! The end-to-end constructions composed through their public API only: a contact's blinded
//! mailbox key, the prekey bundle, the session start, ratchet messages, sealed envelopes,
//! and a restart in the middle.
//!
//! The framing of an envelope's contents here (`sender ‖ initial header ‖ ratchet header ‖
//! ciphertext`) is this test's own; the messaging layer defines the real one.

use rand::rngs::StdRng;
use rand::SeedableRng;
use shallot_crypto::blind::{blind_public_key, BlindedKeypair};
use shallot_crypto::keys::VerifyingKey;
use shallot_crypto::ratchet::{Header, Ratchet, HEADER_LEN};
use shallot_crypto::reader::{Reader, Writer};
use shallot_crypto::sealed::{open, seal};
use shallot_crypto::x3dh::{
    initiate, respond, InitialHeader, PrekeyBundle, SignedPrekey, INITIAL_HEADER_LEN,
};
use shallot_crypto::IdentityKeypair;

const NOW: u64 = 1_750_000_000;
const DAY: u64 = 24 * 3600;

fn first_message(
    sender: &VerifyingKey,
    initial: &InitialHeader,
    header: &Header,
    ct: &[u8],
) -> Vec<u8> {
    let mut inner = Vec::new();
    inner.put(sender.as_bytes());
    inner.put(&initial.to_bytes());
    inner.put(&header.to_bytes());
    inner.put(ct);
    inner
}

fn later_message(header: &Header, ct: &[u8]) -> Vec<u8> {
    let mut inner = header.to_bytes().to_vec();
    inner.put(ct);
    inner
}

#[test]
fn alice_and_bob_talk_through_sealed_envelopes() {
    let mut rng = StdRng::seed_from_u64(42);
    let alice = IdentityKeypair::generate(&mut rng);
    let bob = IdentityKeypair::generate(&mut rng);

    // Alice knows Bob's address, hence his mailbox key for the period; only Bob can sign
    // for it.
    let mailbox = blind_public_key(&bob.public(), 20_000, 1440).unwrap();
    let bob_mailbox = BlindedKeypair::derive(&bob, 20_000, 1440).unwrap();
    assert_eq!(bob_mailbox.public(), mailbox);
    let request = b"fetch";
    assert!(mailbox
        .verify_strict(request, &bob_mailbox.sign(request))
        .is_ok());

    // Bob publishes a bundle; Alice fetches its bytes and checks them.
    let prekey = SignedPrekey::generate(&mut rng, 1, NOW - DAY, NOW + 7 * DAY);
    let stored_prekey = prekey.to_bytes();
    let published = prekey.bundle(&bob).encode();
    let bundle = PrekeyBundle::decode(&published).unwrap();
    bundle.verify(&bob.public(), NOW).unwrap();

    // Alice starts the session and seals her first message to Bob.
    let (sk, initial, ad) = initiate(&mut rng, &alice, &bundle).unwrap();
    let mut alice_session = Ratchet::init_initiator(sk, bundle.prekey(), ad);
    let (header, ct) = alice_session.encrypt(&mut rng, b"hello bob").unwrap();
    let envelope = seal(
        &mut rng,
        &bob.public(),
        &first_message(&alice.public(), &initial, &header, &ct),
    )
    .unwrap();

    // Bob opens it, learns who wrote, and answers the session start with his stored prekey.
    let inner = open(&bob, &envelope).unwrap();
    let mut r = Reader::new(&inner);
    let sender = VerifyingKey::from_bytes(&r.array().unwrap()).unwrap();
    let initial = InitialHeader::from_bytes(r.take(INITIAL_HEADER_LEN).unwrap()).unwrap();
    let header = Header::from_bytes(r.take(HEADER_LEN).unwrap()).unwrap();
    let ct = r.take_rest();
    assert_eq!(sender, alice.public());
    let prekey = SignedPrekey::from_bytes(&*stored_prekey).unwrap();
    let (sk, ad) = respond(&bob, &prekey, &sender, &initial).unwrap();
    let mut bob_session = Ratchet::init_responder(sk, prekey.secret(), ad);
    assert_eq!(bob_session.decrypt(&header, ct).unwrap(), b"hello bob");

    // Bob restarts, then replies.
    let mut bob_session = Ratchet::from_bytes(&bob_session.to_bytes()).unwrap();
    let (header, ct) = bob_session.encrypt(&mut rng, b"hi alice").unwrap();
    let envelope = seal(&mut rng, &alice.public(), &later_message(&header, &ct)).unwrap();
    assert!(open(&bob, &envelope).is_err());
    let inner = open(&alice, &envelope).unwrap();
    let header = Header::from_bytes(&inner[..HEADER_LEN]).unwrap();
    assert_eq!(
        alice_session
            .decrypt(&header, &inner[HEADER_LEN..])
            .unwrap(),
        b"hi alice"
    );
}
