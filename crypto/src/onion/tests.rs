//! Tests of the onion layers: round trips at every depth, tampering at every byte, order,
//! and nonce exhaustion.

use super::*;
use crate::keys::{IdentityKeypair, OnionKeypair};
use crate::ntor::{server_handshake, ClientHandshake};
use proptest::prelude::*;

/// Builds an n-hop circuit's worth of matching client and relay layers through real ntor
/// handshakes.
fn circuit(n: u8) -> (ClientLayers, Vec<RelayLayer>) {
    let mut rng = rand::thread_rng();
    let mut client = ClientLayers::new();
    let mut relays = Vec::new();
    for depth in 1..=n {
        let id = IdentityKeypair::generate(&mut rng).relay_id();
        let onion = OnionKeypair::generate(&mut rng);
        let (hs, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
        let (reply, seed) = server_handshake(&mut rng, &id, &[&onion], &msg).unwrap();
        relays.push(RelayLayer::new(depth, &HopKeys::from_key_seed(&seed).unwrap()).unwrap());
        let keys = HopKeys::from_key_seed(&hs.finish(&reply).unwrap()).unwrap();
        client.push_hop(&keys).unwrap();
    }
    (client, relays)
}

/// Sends `body` from the client to hop `target`, through the relays in order, and returns
/// what the target received.
fn send(
    client: &mut ClientLayers,
    relays: &mut [RelayLayer],
    target: usize,
    body: &[u8],
) -> Payload {
    let mut cell = client.wrap(target, body).unwrap();
    for (i, relay) in relays.iter_mut().enumerate().take(target) {
        let peeled = relay.peel(&mut cell).unwrap();
        if i + 1 == target {
            assert_eq!(peeled, Peeled::Deliver);
        } else {
            assert_eq!(peeled, Peeled::Forward);
        }
    }
    cell
}

/// Sends a reply from hop `origin` back to the client; returns (hop seen by client, cell).
fn reply(
    client: &mut ClientLayers,
    relays: &mut [RelayLayer],
    origin: usize,
    body: &[u8],
) -> (usize, Payload) {
    let mut cell = [0u8; CELL_PAYLOAD_LEN];
    cell[..body.len()].copy_from_slice(body);
    relays[origin - 1].originate(&mut cell).unwrap();
    for relay in relays[..origin - 1].iter_mut().rev() {
        relay.add_layer(&mut cell).unwrap();
    }
    let hop = client.unwrap(&mut cell).unwrap();
    (hop, cell)
}

#[test]
fn sizes_follow_the_brief() {
    assert_eq!(layer_len(1), 509);
    assert_eq!(layer_len(3), 475);
    assert_eq!(body_len(3), 458);
    assert_eq!(body_len(1), 492);
}

#[test]
fn round_trips_to_and_from_every_hop() {
    for n in 1..=MAX_HOPS {
        let (mut client, mut relays) = circuit(n);
        for target in 1..=usize::from(n) {
            let depth = target as u8;
            let body: Vec<u8> = (0..body_len(depth))
                .map(|i| (i * 7 + target) as u8)
                .collect();
            let got = send(&mut client, &mut relays, target, &body);
            assert_eq!(&got[..body.len()], &body[..]);
            assert!(got[layer_len(depth) - LAYER_OVERHEAD..]
                .iter()
                .all(|&b| b == 0));
            let (hop, back) = reply(&mut client, &mut relays, target, &body);
            assert_eq!(hop, target);
            assert_eq!(&back[..body.len()], &body[..]);
        }
    }
}

#[test]
fn every_modified_byte_is_detected_going_forward() {
    let (mut client, mut relays) = circuit(3);
    // At hop 1 the layer covers the whole payload.
    for pos in 0..CELL_PAYLOAD_LEN {
        let (mut c, mut r) = circuit(3);
        let mut cell = c.wrap(3, b"hello").unwrap();
        cell[pos] ^= 0x40;
        assert_eq!(
            r[0].peel(&mut cell),
            Err(OnionError::BadTag { hop: 1 }),
            "byte {pos}"
        );
    }
    // Between hop 1 and hop 2, every byte of hop 2's layer is covered: a tampering hop 1 is
    // caught at hop 2, and hop 3 is never reached.
    for pos in 0..layer_len(2) {
        let (mut c, mut r) = circuit(3);
        let mut cell = c.wrap(3, b"hello").unwrap();
        r[0].peel(&mut cell).unwrap();
        cell[pos] ^= 0x01;
        assert_eq!(
            r[1].peel(&mut cell),
            Err(OnionError::BadTag { hop: 2 }),
            "byte {pos}"
        );
    }
    // Bytes past hop 2's layer are padding hop 2 discards; they never reach hop 3.
    let mut cell = client.wrap(3, b"hello").unwrap();
    relays[0].peel(&mut cell).unwrap();
    cell[layer_len(2)..].fill(0xee);
    assert_eq!(relays[1].peel(&mut cell), Ok(Peeled::Forward));
    assert!(cell[layer_len(3)..].iter().all(|&b| b == 0));
    assert_eq!(relays[2].peel(&mut cell), Ok(Peeled::Deliver));
}

#[test]
fn every_modified_byte_is_detected_going_back() {
    for pos in 0..CELL_PAYLOAD_LEN {
        let (mut c, mut r) = circuit(3);
        let mut cell = [0u8; CELL_PAYLOAD_LEN];
        r[2].originate(&mut cell).unwrap();
        r[1].add_layer(&mut cell).unwrap();
        r[0].add_layer(&mut cell).unwrap();
        cell[pos] ^= 0x80;
        assert!(
            matches!(c.unwrap(&mut cell), Err(OnionError::BadTag { hop: 1 })),
            "byte {pos}"
        );
    }
    // A reply changed between hop 3 and hop 2 is caught by the client at hop 3's layer.
    let (mut c, mut r) = circuit(3);
    let mut cell = [0u8; CELL_PAYLOAD_LEN];
    r[2].originate(&mut cell).unwrap();
    cell[10] ^= 1;
    r[1].add_layer(&mut cell).unwrap();
    r[0].add_layer(&mut cell).unwrap();
    assert_eq!(c.unwrap(&mut cell), Err(OnionError::BadTag { hop: 3 }));
}

#[test]
fn reordered_cells_are_refused() {
    let (mut client, mut relays) = circuit(2);
    let _first = client.wrap(2, b"one").unwrap();
    let mut second = client.wrap(2, b"two").unwrap();
    assert_eq!(
        relays[0].peel(&mut second),
        Err(OnionError::BadTag { hop: 1 })
    );
}

#[test]
fn forward_past_the_last_hop_is_refused() {
    let (mut client, mut relays) = circuit(2);
    // The client wraps for hop 2, but only hop 1 is on this relay-side circuit: hop 1 would
    // forward. At the deepest possible hop a forward marker is an error.
    let mut cell = client.wrap(2, b"x").unwrap();
    assert_eq!(relays[0].peel(&mut cell), Ok(Peeled::Forward));
    let (mut deep_client, mut deep) = circuit(MAX_HOPS);
    let mut cell = deep_client.wrap(usize::from(MAX_HOPS), b"x").unwrap();
    for r in deep.iter_mut().take(usize::from(MAX_HOPS) - 1) {
        r.peel(&mut cell).unwrap();
    }
    assert_eq!(
        deep[usize::from(MAX_HOPS) - 1].peel(&mut cell),
        Ok(Peeled::Deliver)
    );
    assert!(deep[usize::from(MAX_HOPS) - 1]
        .add_layer(&mut cell)
        .is_err());
}

#[test]
fn nonce_counters_never_wrap() {
    let (mut client, mut relays) = circuit(1);
    client.set_counters_for_test(u64::MAX - 1);
    relays[0].set_counters_for_test(u64::MAX - 1);
    let mut cell = client.wrap(1, b"last").unwrap();
    assert_eq!(relays[0].peel(&mut cell), Ok(Peeled::Deliver));
    assert_eq!(
        client.wrap(1, b"one more").err(),
        Some(OnionError::NonceExhausted)
    );
    let mut cell = [0u8; CELL_PAYLOAD_LEN];
    relays[0].originate(&mut cell).unwrap();
    assert_eq!(
        relays[0].originate(&mut cell),
        Err(OnionError::NonceExhausted)
    );
}

#[test]
fn bad_arguments_are_errors() {
    let (mut client, _) = circuit(2);
    assert_eq!(client.wrap(3, b"x").err(), Some(OnionError::BadDepth(3)));
    assert_eq!(client.wrap(0, b"x").err(), Some(OnionError::BadDepth(0)));
    assert!(matches!(
        client.wrap(2, &[0u8; 476]),
        Err(OnionError::BodyTooLong { max: 475, .. })
    ));
    let (mut full, _) = circuit(MAX_HOPS);
    let keys = {
        let mut rng = rand::thread_rng();
        let id = IdentityKeypair::generate(&mut rng).relay_id();
        let onion = OnionKeypair::generate(&mut rng);
        let (_, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
        let (_, seed) = server_handshake(&mut rng, &id, &[&onion], &msg).unwrap();
        HopKeys::from_key_seed(&seed).unwrap()
    };
    assert!(full.push_hop(&keys).is_err());
    assert!(RelayLayer::new(0, &keys).is_err());
    assert!(RelayLayer::new(MAX_HOPS + 1, &keys).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_messages_round_trip(n in 1u8..=4, target_seed in 0usize..100, body in proptest::collection::vec(any::<u8>(), 0..=441)) {
        let (mut client, mut relays) = circuit(n);
        let target = target_seed % usize::from(n) + 1;
        let got = send(&mut client, &mut relays, target, &body);
        prop_assert_eq!(&got[..body.len()], &body[..]);
        let (hop, back) = reply(&mut client, &mut relays, target, &body);
        prop_assert_eq!(hop, target);
        prop_assert_eq!(&back[..body.len()], &body[..]);
    }
}
