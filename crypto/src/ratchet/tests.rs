//! Tests of the Double Ratchet: conversations, out-of-order delivery, the skip limits,
//! replays, tampering, persistence and zeroization.

use super::*;
use crate::keys::IdentityKeypair;
use crate::x3dh::{initiate, respond, SignedPrekey};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Alice's and Bob's ratchets, started through a real X3DH exchange.
fn pair(rng: &mut StdRng) -> (Ratchet, Ratchet) {
    let alice = IdentityKeypair::generate(rng);
    let bob = IdentityKeypair::generate(rng);
    let prekey = SignedPrekey::generate(rng, 1, 0, u64::MAX);
    let bundle = prekey.bundle(&bob);
    let (sk_a, header, ad_a) = initiate(rng, &alice, &bundle).unwrap();
    let (sk_b, ad_b) = respond(&bob, &prekey, &alice.public(), &header).unwrap();
    (
        Ratchet::init_initiator(sk_a, bundle.prekey(), ad_a),
        Ratchet::init_responder(sk_b, prekey.secret(), ad_b),
    )
}

type Sent = (Header, Vec<u8>, Vec<u8>);

fn send(from: &mut Ratchet, rng: &mut StdRng, text: &str) -> Sent {
    let (header, ciphertext) = from.encrypt(rng, text.as_bytes()).unwrap();
    (header, ciphertext, text.as_bytes().to_vec())
}

fn receive(to: &mut Ratchet, sent: &Sent) {
    assert_eq!(to.decrypt(&sent.0, &sent.1).unwrap(), sent.2);
}

fn send_many(from: &mut Ratchet, rng: &mut StdRng, n: usize, tag: &str) -> Vec<Sent> {
    (0..n)
        .map(|i| send(from, rng, &format!("{tag} {i}")))
        .collect()
}

#[test]
fn a_long_conversation_with_alternating_and_consecutive_messages() {
    let mut rng = StdRng::seed_from_u64(1);
    let (mut alice, mut bob) = pair(&mut rng);
    for round in 0..150 {
        let alice_turn = round % 3 != 2;
        let burst = 1 + (round * 7) % 4;
        let (from, to) = if alice_turn {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        for sent in send_many(from, &mut rng, burst, &format!("round {round}")) {
            receive(to, &sent);
        }
    }
    assert!(alice.skipped.is_empty() && bob.skipped.is_empty());
}

#[test]
fn every_message_key_is_different_and_ratchet_keys_change_each_turn() {
    let mut rng = StdRng::seed_from_u64(2);
    let (mut alice, mut bob) = pair(&mut rng);
    let a1 = send_many(&mut alice, &mut rng, 2, "a");
    a1.iter().for_each(|m| receive(&mut bob, m));
    let b1 = send(&mut bob, &mut rng, "b");
    receive(&mut alice, &b1);
    let a2 = send(&mut alice, &mut rng, "a again");
    receive(&mut bob, &a2);
    assert_eq!(a1[0].0.dh, a1[1].0.dh);
    assert_eq!((a1[0].0.n, a1[1].0.n), (0, 1));
    assert_ne!(a2.0.dh, a1[0].0.dh);
    assert_ne!(b1.0.dh, a1[0].0.dh);
    assert_eq!((a2.0.pn, a2.0.n), (2, 0));
    // Same plaintext, different ciphertexts.
    let x = alice.encrypt(&mut rng, b"same").unwrap();
    let y = alice.encrypt(&mut rng, b"same").unwrap();
    assert_ne!(x.1, y.1);
}

/// Signal's pseudocode (section 3) run literally, with the Diffie-Hellman ratchet step done
/// whole on receipt, to check that [`Ratchet`]'s deferred sending half gives the same keys.
/// In-order delivery only; it shares the KDFs and AEAD with the code under test.
struct Literal {
    dhs: StaticSecret,
    dhr: Option<[u8; 32]>,
    rk: [u8; 32],
    cks: Option<Chain>,
    ckr: Option<Chain>,
    pn: u32,
    ad: AssociatedData,
}

impl Literal {
    fn alice(rng: &mut StdRng, sk: [u8; 32], bob_spk: &PublicKey, ad: AssociatedData) -> Self {
        let dhs = StaticSecret::random_from_rng(rng);
        let mut rk = sk;
        let cks = kdf_rk(&mut rk, &dh(&dhs, bob_spk.as_bytes()).unwrap());
        Literal {
            dhs,
            dhr: Some(bob_spk.to_bytes()),
            rk,
            cks: Some(cks),
            ckr: None,
            pn: 0,
            ad,
        }
    }

    fn bob(sk: [u8; 32], spk: &StaticSecret, ad: AssociatedData) -> Self {
        Literal {
            dhs: spk.clone(),
            dhr: None,
            rk: sk,
            cks: None,
            ckr: None,
            pn: 0,
            ad,
        }
    }

    fn encrypt(&mut self, plaintext: &[u8]) -> (Header, Vec<u8>) {
        let chain = self.cks.as_mut().unwrap();
        let header = Header {
            dh: PublicKey::from(&self.dhs).to_bytes(),
            pn: self.pn,
            n: chain.n,
        };
        let (aead, nonce) = message_cipher(&chain.step().unwrap());
        let aad = aad(&self.ad, &header);
        let ciphertext = aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap();
        (header, ciphertext)
    }

    fn decrypt(&mut self, rng: &mut StdRng, header: &Header, ciphertext: &[u8]) -> Vec<u8> {
        if self.dhr != Some(header.dh) {
            self.pn = self.cks.as_ref().map_or(0, |c| c.n);
            self.dhr = Some(header.dh);
            self.ckr = Some(kdf_rk(&mut self.rk, &dh(&self.dhs, &header.dh).unwrap()));
            self.dhs = StaticSecret::random_from_rng(rng);
            self.cks = Some(kdf_rk(&mut self.rk, &dh(&self.dhs, &header.dh).unwrap()));
        }
        let key = self.ckr.as_mut().unwrap().step().unwrap();
        open(&key, &self.ad, header, ciphertext).unwrap()
    }
}

#[test]
fn deferring_the_sending_step_gives_the_keys_of_the_specification() {
    let ad = AssociatedData::from_bytes([3; 64]);
    let spk = StaticSecret::from([6; 32]);
    let (mut rng_a, mut rng_b) = (StdRng::seed_from_u64(20), StdRng::seed_from_u64(21));
    let (mut lit_rng_a, mut lit_rng_b) = (StdRng::seed_from_u64(20), StdRng::seed_from_u64(21));
    let mut alice = Ratchet::init_initiator(
        SharedSecret32::from_bytes([5; 32]),
        PublicKey::from(&spk),
        ad,
    );
    let mut bob = Ratchet::init_responder(SharedSecret32::from_bytes([5; 32]), &spk, ad);
    let mut lit_alice = Literal::alice(&mut lit_rng_a, [5; 32], &PublicKey::from(&spk), ad);
    let mut lit_bob = Literal::bob([5; 32], &spk, ad);
    for round in 0..40usize {
        for i in 0..1 + round % 3 {
            let text = format!("{round} {i}");
            let (a_turn, b_turn) = (round % 4 != 3, round % 4 == 3);
            if a_turn {
                let sent = alice.encrypt(&mut rng_a, text.as_bytes()).unwrap();
                assert_eq!(sent, lit_alice.encrypt(text.as_bytes()), "round {round}");
                assert_eq!(bob.decrypt(&sent.0, &sent.1).unwrap(), text.as_bytes());
                lit_bob.decrypt(&mut lit_rng_b, &sent.0, &sent.1);
            }
            if b_turn || (a_turn && i == 0 && round % 2 == 1) {
                let sent = bob.encrypt(&mut rng_b, text.as_bytes()).unwrap();
                assert_eq!(sent, lit_bob.encrypt(text.as_bytes()), "round {round}");
                assert_eq!(alice.decrypt(&sent.0, &sent.1).unwrap(), text.as_bytes());
                lit_alice.decrypt(&mut lit_rng_a, &sent.0, &sent.1);
            }
        }
    }
}

#[test]
fn the_responder_cannot_send_first() {
    let mut rng = StdRng::seed_from_u64(3);
    let (_, mut bob) = pair(&mut rng);
    assert_eq!(
        bob.encrypt(&mut rng, b"hi").err(),
        Some(RatchetError::CannotSendYet)
    );
}

#[test]
fn out_of_order_delivery_within_max_skip() {
    let mut rng = StdRng::seed_from_u64(4);
    let (mut alice, mut bob) = pair(&mut rng);
    let mut batch = send_many(&mut alice, &mut rng, 20, "shuffled");
    batch.shuffle(&mut rng);
    batch.iter().for_each(|m| receive(&mut bob, m));
    assert!(bob.skipped.is_empty());

    // Across ratchet steps: Bob gets Alice's second chain before the rest of her first.
    let first = send_many(&mut alice, &mut rng, 3, "first chain");
    receive(&mut bob, &first[0]);
    let reply = send(&mut bob, &mut rng, "reply");
    receive(&mut alice, &reply);
    let second = send_many(&mut alice, &mut rng, 3, "second chain");
    receive(&mut bob, &second[2]);
    receive(&mut bob, &first[2]);
    receive(&mut bob, &second[0]);
    receive(&mut bob, &first[1]);
    receive(&mut bob, &second[1]);
    assert!(bob.skipped.is_empty());

    // Exactly MAX_SKIP may be skipped in one step.
    let many = send_many(&mut alice, &mut rng, MAX_SKIP as usize + 1, "many");
    receive(&mut bob, &many[MAX_SKIP as usize]);
    assert_eq!(bob.skipped.len(), MAX_SKIP as usize);
    receive(&mut bob, &many[0]);
    receive(&mut bob, &many[500]);
    assert_eq!(bob.skipped.len(), MAX_SKIP as usize - 2);
}

#[test]
fn skipping_too_far_is_refused() {
    let mut rng = StdRng::seed_from_u64(5);
    let (mut alice, mut bob) = pair(&mut rng);
    let many = send_many(&mut alice, &mut rng, MAX_SKIP as usize + 2, "far");
    let before = bob.to_bytes();
    assert_eq!(
        bob.decrypt(
            &many[MAX_SKIP as usize + 1].0,
            &many[MAX_SKIP as usize + 1].1
        )
        .err(),
        Some(RatchetError::TooFarAhead {
            ahead: u64::from(MAX_SKIP) + 1,
            max: MAX_SKIP
        })
    );
    assert_eq!(*bob.to_bytes(), *before);
    receive(&mut bob, &many[0]);

    // The previous chain's length counts too: Alice's first chain ran 1002 messages, of
    // which Bob saw one, then she moved to a new chain.
    let reply = send(&mut bob, &mut rng, "reply");
    receive(&mut alice, &reply);
    let next = send(&mut alice, &mut rng, "next chain");
    assert_eq!(next.0.pn, MAX_SKIP + 2);
    assert_eq!(
        bob.decrypt(&next.0, &next.1).err(),
        Some(RatchetError::TooFarAhead {
            ahead: u64::from(MAX_SKIP) + 1,
            max: MAX_SKIP
        })
    );
}

#[test]
fn replays_are_refused() {
    let mut rng = StdRng::seed_from_u64(6);
    let (mut alice, mut bob) = pair(&mut rng);
    let msgs = send_many(&mut alice, &mut rng, 3, "once");
    receive(&mut bob, &msgs[0]);
    assert_eq!(
        bob.decrypt(&msgs[0].0, &msgs[0].1).err(),
        Some(RatchetError::Duplicate)
    );
    // A skipped message, received late, once only.
    receive(&mut bob, &msgs[2]);
    receive(&mut bob, &msgs[1]);
    assert_eq!(
        bob.decrypt(&msgs[1].0, &msgs[1].1).err(),
        Some(RatchetError::Duplicate)
    );
    // A message of a chain that has since been replaced.
    let reply = send(&mut bob, &mut rng, "reply");
    receive(&mut alice, &reply);
    receive(&mut bob, &send(&mut alice, &mut rng, "new chain"));
    assert_eq!(
        bob.decrypt(&msgs[2].0, &msgs[2].1).err(),
        Some(RatchetError::Duplicate)
    );
    assert_eq!(
        alice.decrypt(&reply.0, &reply.1).err(),
        Some(RatchetError::Duplicate)
    );
}

#[test]
fn evicted_keys_are_refused_and_the_store_stays_bounded() {
    let mut rng = StdRng::seed_from_u64(7);
    let (mut alice, mut bob) = pair(&mut rng);
    let mut first_chain = Vec::new();
    for round in 0..3 {
        let msgs = send_many(&mut alice, &mut rng, MAX_SKIP as usize + 1, "bulk");
        receive(&mut bob, &msgs[MAX_SKIP as usize]);
        assert!(bob.skipped.len() <= MAX_STORED_SKIPPED);
        if round == 0 {
            first_chain = msgs;
        }
        let reply = send(&mut bob, &mut rng, "ack");
        receive(&mut alice, &reply);
    }
    assert_eq!(bob.skipped.len(), MAX_STORED_SKIPPED);
    // The oldest (the first chain's) were discarded.
    assert_eq!(
        bob.decrypt(&first_chain[5].0, &first_chain[5].1).err(),
        Some(RatchetError::Duplicate)
    );
}

#[test]
fn tampering_is_refused_and_the_session_goes_on() {
    let mut rng = StdRng::seed_from_u64(8);
    let (mut alice, mut bob) = pair(&mut rng);
    receive(&mut bob, &send(&mut alice, &mut rng, "hello"));
    let reply = send(&mut bob, &mut rng, "hi");
    receive(&mut alice, &reply);

    // The first message of Alice's new chain, tampered every way, then delivered intact.
    let genuine = send(&mut alice, &mut rng, "how are you?");
    let before = bob.to_bytes();
    for i in 0..genuine.1.len() {
        let mut ciphertext = genuine.1.clone();
        ciphertext[i] ^= 0x01;
        assert_eq!(
            bob.decrypt(&genuine.0, &ciphertext).err(),
            Some(RatchetError::BadMessage)
        );
    }
    assert!(bob.decrypt(&genuine.0, &genuine.1[..10]).is_err());
    let header_bytes = genuine.0.to_bytes();
    for i in 0..HEADER_LEN {
        let mut bytes = header_bytes;
        bytes[i] ^= 0x01;
        let header = Header::from_bytes(&bytes).unwrap();
        assert!(bob.decrypt(&header, &genuine.1).is_err(), "header byte {i}");
    }
    assert_eq!(*bob.to_bytes(), *before);
    receive(&mut bob, &genuine);

    // And within a chain, with skipped keys in play.
    let msgs = send_many(&mut alice, &mut rng, 3, "more");
    let mut ciphertext = msgs[2].1.clone();
    ciphertext[0] ^= 0x80;
    assert!(bob.decrypt(&msgs[2].0, &ciphertext).is_err());
    assert!(bob.skipped.is_empty());
    receive(&mut bob, &msgs[2]);
    let mut ciphertext = msgs[0].1.clone();
    ciphertext[0] ^= 0x80;
    assert!(bob.decrypt(&msgs[0].0, &ciphertext).is_err());
    assert_eq!(bob.skipped.len(), 2);
    receive(&mut bob, &msgs[0]);
    receive(&mut bob, &msgs[1]);
}

#[test]
fn a_message_for_another_session_is_refused() {
    let mut rng = StdRng::seed_from_u64(9);
    let (mut alice, mut bob) = pair(&mut rng);
    let (mut carol, _) = pair(&mut rng);
    let stray = send(&mut carol, &mut rng, "not for bob");
    assert_eq!(
        bob.decrypt(&stray.0, &stray.1).err(),
        Some(RatchetError::BadMessage)
    );
    receive(&mut bob, &send(&mut alice, &mut rng, "for bob"));
    // A small-order ratchet key is refused before any work.
    let bad = Header {
        dh: [0u8; 32],
        pn: 0,
        n: 0,
    };
    assert_eq!(
        bob.decrypt(&bad, &stray.1).err(),
        Some(RatchetError::InvalidKey)
    );
}

#[test]
fn state_round_trips_through_bytes_mid_conversation() {
    let mut rng = StdRng::seed_from_u64(10);
    let (mut alice, mut bob) = pair(&mut rng);
    let fresh = Ratchet::from_bytes(&alice.to_bytes()).unwrap();
    assert_eq!(*fresh.to_bytes(), *alice.to_bytes());

    let early = send_many(&mut alice, &mut rng, 4, "early");
    receive(&mut bob, &early[3]);
    let reply = send(&mut bob, &mut rng, "reply");
    receive(&mut alice, &reply);

    let mut alice = Ratchet::from_bytes(&alice.to_bytes()).unwrap();
    let mut bob = Ratchet::from_bytes(&bob.to_bytes()).unwrap();
    assert_eq!(bob.skipped.len(), 3);
    assert_eq!(bob.retired.len(), 0);
    receive(&mut bob, &early[1]);
    let later = send(&mut alice, &mut rng, "later");
    receive(&mut bob, &later);
    receive(&mut alice, &send(&mut bob, &mut rng, "and back"));
    let bytes = bob.to_bytes();
    assert_eq!(*Ratchet::from_bytes(&bytes).unwrap().to_bytes(), *bytes);
    assert_eq!(Ratchet::from_bytes(&bytes).unwrap().retired.len(), 1);
}

#[test]
fn stored_state_is_checked() {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut alice, mut bob) = pair(&mut rng);
    let m = send_many(&mut alice, &mut rng, 3, "x");
    receive(&mut bob, &m[2]);
    let good = bob.to_bytes().to_vec();
    assert!(Ratchet::from_bytes(&good).is_ok());
    let mut v = good.clone();
    v[0] = 2;
    assert!(Ratchet::from_bytes(&v).is_err());
    let mut v = good.clone();
    v.push(0);
    assert_eq!(
        Ratchet::from_bytes(&v).err(),
        Some(DecodeError::TrailingBytes(1))
    );
    assert!(Ratchet::from_bytes(&good[..good.len() - 1]).is_err());
    // Presence byte of DHs (right after version, AD and RK) must be 0 or 1.
    let mut v = good.clone();
    v[1 + 64 + 32] = 2;
    assert!(Ratchet::from_bytes(&v).is_err());
    // A count of skipped keys over the limit, or over what the input holds.
    let mut fake = vec![persist::STATE_VERSION];
    fake.extend_from_slice(&[0u8; 64 + 32]);
    fake.extend_from_slice(&[0, 0, 0, 0]);
    fake.extend_from_slice(&[0, 0, 0, 0]);
    let mut over = fake.clone();
    over.extend_from_slice(&(MAX_STORED_SKIPPED as u16 + 1).to_be_bytes());
    assert!(matches!(
        Ratchet::from_bytes(&over),
        Err(DecodeError::TooLong { .. })
    ));
    let mut short = fake.clone();
    short.extend_from_slice(&10u16.to_be_bytes());
    assert!(matches!(
        Ratchet::from_bytes(&short),
        Err(DecodeError::Truncated { .. })
    ));
    let mut empty = fake;
    empty.extend_from_slice(&[0, 0, 0, 0]);
    assert!(Ratchet::from_bytes(&empty).is_ok());
    // A sending chain without a ratchet secret.
    let mut v = vec![persist::STATE_VERSION];
    v.extend_from_slice(&[0u8; 64 + 32]);
    v.extend_from_slice(&[0, 0, 1]);
    v.extend_from_slice(&[0u8; 36]);
    v.extend_from_slice(&[0; 1 + 4 + 2 + 2]);
    assert!(matches!(
        Ratchet::from_bytes(&v),
        Err(DecodeError::BadValue { .. })
    ));
}

fn zeroizes_on_drop<T: ZeroizeOnDrop>() {}

#[test]
fn secret_fields_are_zeroized_on_drop() {
    // Every type that holds a secret wipes it when dropped.
    zeroizes_on_drop::<Ratchet>();
    zeroizes_on_drop::<Core>();
    zeroizes_on_drop::<Chain>();
    zeroizes_on_drop::<SkippedKey>();
    // (x25519-dalek's StaticSecret wipes itself in its own Drop, `#[zeroize(drop)]`, without
    // implementing the marker trait, so it cannot be listed here.)
    zeroizes_on_drop::<Zeroizing<Vec<u8>>>();

    // And the derived zeroization covers every secret field of the state.
    let mut rng = StdRng::seed_from_u64(12);
    let (mut alice, mut bob) = pair(&mut rng);
    let m = send_many(&mut alice, &mut rng, 2, "x");
    receive(&mut bob, &m[1]);
    receive(&mut alice, &send(&mut bob, &mut rng, "y"));
    let mut core = bob.core.clone();
    assert!(core.send.is_some() && core.recv.is_some() && core.dh_self.is_some());
    core.zeroize();
    assert_eq!(core.root, [0u8; 32]);
    assert!(core.dh_self.is_none() && core.send.is_none() && core.recv.is_none());
    let mut kept = SkippedKey {
        dh: [1; 32],
        n: 1,
        key: bob.skipped[0].key,
    };
    kept.zeroize();
    assert_eq!(kept.key, [0u8; 32]);
}

#[test]
fn headers_round_trip_and_refuse_wrong_lengths() {
    let header = Header {
        dh: [7; 32],
        pn: 3,
        n: 9,
    };
    assert_eq!(Header::from_bytes(&header.to_bytes()).unwrap(), header);
    assert!(Header::from_bytes(&[0u8; HEADER_LEN - 1]).is_err());
    assert!(Header::from_bytes(&[0u8; HEADER_LEN + 1]).is_err());
}

/// One step of a random conversation: who sends, how many, and whether the batch arrives
/// in reverse order.
#[derive(Debug, Clone)]
struct Step {
    from_alice: bool,
    count: usize,
    reversed: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (any::<bool>(), 1usize..4, any::<bool>()).prop_map(|(from_alice, count, reversed)| Step {
        from_alice,
        count,
        reversed,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Saving and restoring both sides at any point changes nothing about the conversation.
    #[test]
    fn state_round_trips_at_any_point(
        steps in proptest::collection::vec(step(), 1..16),
        restore_at in 0usize..16,
        seed: u64,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut alice, mut bob) = pair(&mut rng);
        for (i, step) in steps.iter().enumerate() {
            if i == restore_at {
                for side in [&mut alice, &mut bob] {
                    let bytes = side.to_bytes();
                    let back = Ratchet::from_bytes(&bytes).unwrap();
                    prop_assert_eq!(&*back.to_bytes(), &*bytes);
                    *side = back;
                }
            }
            // The first message must come from the initiator.
            let from_alice = step.from_alice || i == 0;
            let (from, to) = if from_alice { (&mut alice, &mut bob) } else { (&mut bob, &mut alice) };
            let mut batch = send_many(from, &mut rng, step.count, "prop");
            if step.reversed {
                batch.reverse();
            }
            for sent in &batch {
                prop_assert_eq!(&to.decrypt(&sent.0, &sent.1).unwrap(), &sent.2);
            }
        }
    }

    #[test]
    fn decoding_arbitrary_state_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Ratchet::from_bytes(&bytes);
        let _ = Header::from_bytes(&bytes);
    }
}

#[test]
fn a_send_key_taken_ahead_is_the_next_key_and_is_never_given_again() {
    let mut rng = StdRng::seed_from_u64(40);
    let (mut alice, mut bob) = pair(&mut rng);
    // Alice's first key is taken ahead (it also takes her first ratchet step); the state
    // saved after that, as after a crash, goes on from the next key.
    let ahead = alice.take_send_key(&mut rng).unwrap();
    let saved = alice.to_bytes();
    let mut restarted = Ratchet::from_bytes(&saved).unwrap();
    let later = send(&mut restarted, &mut rng, "after a restart");
    assert_eq!(ahead.header().n, 0);
    assert_eq!(later.0.n, 1);
    assert_eq!(later.0.dh, ahead.header().dh);
    // Both decrypt, the later-numbered first: the key taken ahead gives the message Bob
    // skipped.
    receive(&mut bob, &later);
    let (header, ciphertext) = ahead.encrypt(b"written later").unwrap();
    assert_eq!(bob.decrypt(&header, &ciphertext).unwrap(), b"written later");
    // It was used once: a replay of it is refused.
    assert_eq!(
        bob.decrypt(&header, &ciphertext),
        Err(RatchetError::Duplicate)
    );
}

#[test]
fn a_send_key_never_used_leaves_a_gap_the_conversation_goes_past() {
    let mut rng = StdRng::seed_from_u64(41);
    let (mut alice, mut bob) = pair(&mut rng);
    receive(&mut bob, &send(&mut alice, &mut rng, "hello"));
    receive(&mut alice, &send(&mut bob, &mut rng, "hi"));
    // Taken as Alice starts typing, then dropped (she gave up, or her client stopped).
    drop(alice.take_send_key(&mut rng).unwrap());
    for sent in send_many(&mut alice, &mut rng, 3, "then") {
        receive(&mut bob, &sent);
    }
    assert_eq!(bob.skipped.len(), 1, "the unused key's message is skipped");
    receive(&mut alice, &send(&mut bob, &mut rng, "and back"));
}

#[test]
fn the_responder_cannot_take_a_send_key_first() {
    let mut rng = StdRng::seed_from_u64(42);
    let (_, mut bob) = pair(&mut rng);
    let before = bob.to_bytes();
    assert!(matches!(
        bob.take_send_key(&mut rng),
        Err(RatchetError::CannotSendYet)
    ));
    assert_eq!(*bob.to_bytes(), *before, "a refused take changes nothing");
}
