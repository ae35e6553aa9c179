//! Bad input from the network, each refused with the peer dropped (or the one circuit
//! destroyed) while the relay keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use shallot_net::HopNum;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot_crypto::keys::{IdentityKeypair, LinkKeypair};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_crypto::onion::{ClientLayers, HopKeys, Peeled, RelayLayer};
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, DestroyReason, CELL_LEN};
use shallot_proto::relay_msg::{fragment, Extend, RelayMsg};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(5);

struct Net {
    /// Shared by the tests: r[0]..r[3].
    relays: Vec<TestRelay>,
    /// Used only as the third hop of the tampering test, so nothing else is delivered there.
    tamper_exit: TestRelay,
    /// Killed by the dying-hop test.
    doomed: std::sync::Mutex<Option<TestRelay>>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let n = Net {
                relays: relay_net("b", 40, 4).await,
                tamper_exit: start_relay("tamperexit", 48, |_| {}).await,
                doomed: std::sync::Mutex::new(Some(start_relay("doomed", 49, |_| {}).await)),
            };
            let mut all: Vec<&TestRelay> = n.relays.iter().collect();
            all.push(&n.tamper_exit);
            let doomed = n.doomed.lock().unwrap();
            all.extend(doomed.as_ref());
            introduce(&all);
            drop(doomed);
            n
        })
    })
}

#[test]
fn garbage_before_the_handshake_drops_the_peer() {
    let r = &net().relays;
    rt().block_on(async {
        let mut s = tokio::net::TcpStream::connect(r[0].addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(closed_by_peer(&mut s, WAIT).await);
        still_serves(&[&r[0], &r[1]]).await;
    });
}

#[test]
fn garbage_during_the_handshake_drops_the_peer() {
    let r = &net().relays;
    rt().block_on(async {
        let mut s = tokio::net::TcpStream::connect(r[0].addr()).await.unwrap();
        // A valid preamble, then a handshake message of random bytes.
        s.write_all(&[0x01, 0, 48]).await.unwrap();
        s.write_all(&[0xab; 48]).await.unwrap();
        assert!(closed_by_peer(&mut s, WAIT).await);
        // And an oversized handshake message length.
        let mut s = tokio::net::TcpStream::connect(r[0].addr()).await.unwrap();
        s.write_all(&[0x02, 0xff, 0xff]).await.unwrap();
        assert!(closed_by_peer(&mut s, WAIT).await);
        still_serves(&[&r[0]]).await;
    });
}

#[test]
fn truncated_and_malformed_records_drop_the_peer() {
    let r = &net().relays;
    rt().block_on(async {
        // A record whose length is not a whole number of cells.
        let mut link = RawLink::connect(r[1].addr(), &r[1].handle.link_key()).await;
        link.stream.write_all(&[0, 100]).await.unwrap();
        link.stream.write_all(&[0u8; 100]).await.unwrap();
        assert!(closed_by_peer(&mut link.stream, WAIT).await);

        // A record cut short: the peer closes mid-record; the relay just drops it.
        let mut link = RawLink::connect(r[1].addr(), &r[1].handle.link_key()).await;
        let mut wire = Vec::new();
        link.sealer.seal(&[0u8; CELL_LEN], &mut wire).unwrap();
        link.stream
            .write_all(&wire[..wire.len() / 2])
            .await
            .unwrap();
        link.stream.shutdown().await.unwrap();
        assert!(closed_by_peer(&mut link.stream, WAIT).await);

        // A record that fails to authenticate.
        let mut link = RawLink::connect(r[1].addr(), &r[1].handle.link_key()).await;
        let mut wire = Vec::new();
        link.sealer.seal(&[0u8; CELL_LEN], &mut wire).unwrap();
        wire[40] ^= 1;
        link.stream.write_all(&wire).await.unwrap();
        assert!(closed_by_peer(&mut link.stream, WAIT).await);

        still_serves(&[&r[1], &r[2]]).await;
    });
}

#[test]
fn an_unknown_cell_command_drops_the_link() {
    let r = &net().relays;
    rt().block_on(async {
        let before = r[2].handle.stats().links_dropped_for_protocol;
        let mut link = RawLink::connect(r[2].addr(), &r[2].handle.link_key()).await;
        let mut cell = Cell::new(
            CircId::new(0x8000_0001).unwrap(),
            ChanMsg::Destroy(DestroyReason::None),
        )
        .encode();
        cell[4] = 99;
        link.send_cells(&cell).await;
        assert!(closed_by_peer(&mut link.stream, WAIT).await);
        assert_eq!(r[2].handle.stats().links_dropped_for_protocol, before + 1);
        still_serves(&[&r[2], &r[0]]).await;
    });
}

#[test]
fn relay_cells_on_unknown_circuits_are_dropped_and_the_link_lives() {
    let r = &net().relays;
    rt().block_on(async {
        let before = r[3].handle.stats().cells_for_unknown_circuits;
        let mut link = RawLink::connect(r[3].addr(), &r[3].handle.link_key()).await;
        let relay = Cell::new(
            CircId::new(0x8000_0042).unwrap(),
            ChanMsg::Relay(Box::new([7u8; 509])),
        );
        link.send_cells(&relay.encode()).await;
        // The same link still creates circuits.
        let (_hs, create) = create_cell(&r[3], 0x8000_0043, 1);
        link.send_cells(&create).await;
        let reply = link.next_cell(WAIT).await.expect("relay answered");
        assert_eq!(reply.circ_id, CircId::new(0x8000_0043).unwrap());
        assert!(matches!(reply.msg, ChanMsg::Created(_)));
        assert_eq!(r[3].handle.stats().cells_for_unknown_circuits, before + 1);
    });
}

#[test]
fn create_on_a_circuit_id_in_use_is_refused() {
    let r = &net().relays;
    rt().block_on(async {
        let mut link = RawLink::connect(r[0].addr(), &r[0].handle.link_key()).await;
        let (_hs, create) = create_cell(&r[0], 0x8000_0007, 1);
        link.send_cells(&create).await;
        assert!(matches!(
            link.next_cell(WAIT).await.unwrap().msg,
            ChanMsg::Created(_)
        ));
        let (_hs, again) = create_cell(&r[0], 0x8000_0007, 1);
        link.send_cells(&again).await;
        let reply = link.next_cell(WAIT).await.unwrap();
        assert_eq!(reply.circ_id, CircId::new(0x8000_0007).unwrap());
        assert_eq!(reply.msg, ChanMsg::Destroy(DestroyReason::Protocol));
        // An id of the wrong parity (the relay's half of the id space) is refused too.
        let (_hs, wrong) = create_cell(&r[0], 0x0000_0009, 1);
        link.send_cells(&wrong).await;
        let reply = link.next_cell(WAIT).await.unwrap();
        assert_eq!(reply.msg, ChanMsg::Destroy(DestroyReason::Protocol));
        still_serves(&[&r[0]]).await;
    });
}

/// The test plays a malicious first hop: it opens a relay link (XK) to `b1`, creates a
/// circuit there at depth 2 and extends it to `b2`, then tampers with one relay cell. Hop 2
/// (`b1`) must destroy the circuit both ways, and nothing may be delivered at hop 3.
#[test]
fn a_cell_tampered_at_hop_one_is_caught_at_hop_two() {
    let r = &net().relays;
    rt().block_on(async {
        let mut rng = rand::thread_rng();
        let (hop2, hop3) = (&r[1], &net().tamper_exit);
        // Our own stand-in for hop 1: matching client and relay layers.
        let fake_id = IdentityKeypair::generate(&mut rng).relay_id();
        let fake_onion = shallot_crypto::keys::OnionKeypair::generate(&mut rng);
        let (hs1, m1) = ClientHandshake::start(&mut rng, fake_id, &fake_onion.public());
        let (reply1, seed1) = server_handshake(&mut rng, &fake_id, &[&fake_onion], &m1).unwrap();
        let mut client = ClientLayers::new();
        client
            .push_hop(&HopKeys::from_key_seed(&hs1.finish(&reply1).unwrap()).unwrap())
            .unwrap();
        let mut hop1 = RelayLayer::new(1, &HopKeys::from_key_seed(&seed1).unwrap()).unwrap();

        // A relay link to hop 2, and a circuit at depth 2.
        let me = LinkKeypair::generate(&mut rng);
        let s = tokio::net::TcpStream::connect(hop2.addr()).await.unwrap();
        let (mut rd, mut wr) = shallot_link::connect_relay(s, &me, &hop2.handle.link_key(), WAIT)
            .await
            .unwrap();
        let id = CircId::new(0x8000_0100).unwrap();
        let (hs2, m2) = ClientHandshake::start(
            &mut rng,
            hop2.handle.id(),
            &x25519_dalek::PublicKey::from(hop2.handle.onion_key()),
        );
        wr.write_cells(
            &Cell::new(
                id,
                ChanMsg::Create(Create {
                    depth: 2,
                    handshake: m2,
                }),
            )
            .encode(),
        )
        .await
        .unwrap();
        let created = Cell::decode(&rd.read_cells().await.unwrap()[..CELL_LEN])
            .unwrap()
            .unwrap();
        let ChanMsg::Created(reply2) = created.msg else {
            panic!("no CREATED: {created:?}")
        };
        client
            .push_hop(&HopKeys::from_key_seed(&hs2.finish(&reply2).unwrap()).unwrap())
            .unwrap();

        // Sends a message to hop `k` through our hop 1, optionally flipping one byte after it.
        let send = |client: &mut ClientLayers,
                    hop1: &mut RelayLayer,
                    k: usize,
                    msg: &RelayMsg,
                    tamper: bool| {
            let body = &fragment(
                &msg.encode().unwrap(),
                shallot_crypto::onion::body_len(k as u8),
            )
            .unwrap()[0];
            let mut payload = client.wrap(k, body).unwrap();
            assert_eq!(hop1.peel(&mut payload).unwrap(), Peeled::Forward);
            if tamper {
                payload[100] ^= 0x20;
            }
            Cell::new(id, ChanMsg::Relay(Box::new(payload))).encode()
        };

        // Extend to hop 3 and wait for EXTENDED (hop 2 answers through our hop 1).
        let (hs3, m3) = ClientHandshake::start(
            &mut rng,
            hop3.handle.id(),
            &x25519_dalek::PublicKey::from(hop3.handle.onion_key()),
        );
        let ext = RelayMsg::Extend(Extend {
            target: hop3.handle.id(),
            handshake: m3,
        });
        wr.write_cells(&send(&mut client, &mut hop1, 2, &ext, false))
            .await
            .unwrap();
        let back = Cell::decode(&rd.read_cells().await.unwrap()[..CELL_LEN])
            .unwrap()
            .unwrap();
        let ChanMsg::Relay(mut payload) = back.msg else {
            panic!("expected EXTENDED, got {back:?}")
        };
        hop1.add_layer(&mut payload).unwrap();
        assert_eq!(client.unwrap(&mut payload).unwrap(), 2);
        let done = shallot_proto::relay_msg::Reassembler::new(1000)
            .push(&payload[..shallot_crypto::onion::body_len(2)])
            .unwrap()
            .unwrap();
        let RelayMsg::Extended(reply3) = RelayMsg::decode(&done).unwrap() else {
            panic!()
        };
        client
            .push_hop(&HopKeys::from_key_seed(&hs3.finish(&reply3).unwrap()).unwrap())
            .unwrap();

        let delivered_at_3 = hop3.handle.stats().cells_delivered;
        let destroyed_at_3 = hop3.handle.stats().circuits_destroyed;
        let tamper_at_2 = hop2.handle.stats().circuits_destroyed_for_tamper;

        // Now a data cell for hop 3, changed by "hop 1" on the way.
        let data = RelayMsg::Data(b"secret".to_vec());
        wr.write_cells(&send(&mut client, &mut hop1, 3, &data, true))
            .await
            .unwrap();

        // Hop 2 destroys the circuit back toward us...
        let back = Cell::decode(&rd.read_cells().await.unwrap()[..CELL_LEN])
            .unwrap()
            .unwrap();
        assert_eq!(
            back,
            Cell::new(id, ChanMsg::Destroy(DestroyReason::Protocol))
        );
        assert_eq!(
            hop2.handle.stats().circuits_destroyed_for_tamper,
            tamper_at_2 + 1
        );
        // ...and forward to hop 3, which never had anything delivered.
        eventually("hop 3 to see the destroy", WAIT, || async {
            (hop3.handle.stats().circuits_destroyed > destroyed_at_3).then_some(())
        })
        .await;
        assert_eq!(hop3.handle.stats().cells_delivered, delivered_at_3);
        still_serves(&[&r[1], &r[2]]).await;
    });
}

#[test]
fn a_next_hop_that_dies_destroys_the_circuit_back_to_the_client() {
    let r = &net().relays;
    rt().block_on(async {
        let doomed = net().doomed.lock().unwrap().take().unwrap();
        let circ = shallot_net::build(
            r[0].channel().await,
            &[r[0].hop(), r[3].hop(), doomed.hop()],
            WAIT,
        )
        .await
        .unwrap();
        circ.send(HopNum::THIRD, &RelayMsg::Data(b"x".to_vec()))
            .await
            .unwrap();
        circ.recv().await.unwrap();
        doomed.handle.abort().await;
        let err = tokio::time::timeout(WAIT, circ.recv())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                err,
                shallot_net::NetError::Destroyed(DestroyReason::LinkClosed)
            ),
            "{err}"
        );
        still_serves(&[&r[0], &r[3]]).await;
    });
}

/// The test plays a malicious next hop: a relay extends a client's circuit to it, and it
/// answers with DESTROY carrying the undefined reason byte 0xA7, meant as a tag for a colluding
/// relay further along. The client must receive the generic reason 0 instead.
#[test]
fn an_unknown_destroy_reason_arrives_clamped() {
    let r = &net().relays;
    rt().block_on(async {
        let mut rng = rand::thread_rng();
        let fake_id = IdentityKeypair::generate(&mut rng).relay_id();
        let fake_link = LinkKeypair::generate(&mut rng);
        let fake_onion = shallot_crypto::keys::OnionKeypair::generate(&mut rng);
        let fake_hop = shallot_net::HopSpec {
            id: fake_id,
            ntor_key: fake_onion.public().to_bytes(),
            nickname: "evil".into(),
        };
        let listener = tokio::net::TcpListener::bind("127.47.0.1:0").await.unwrap();
        // Only r[3] learns of the fake relay; other tests never extend to it.
        let mut peers: Vec<_> = r.iter().map(|x| x.peer()).collect();
        peers.push(shallot_relay::PeerInfo {
            id: fake_id,
            address: listener.local_addr().unwrap(),
            link_key: fake_link.public().to_bytes(),
        });
        r[3].handle.set_netview(shallot_relay::NetView::new(peers));
        let evil = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut acc = shallot_link::accept(stream, &fake_link, WAIT)
                .await
                .unwrap();
            let cell = Cell::decode(&acc.reader.read_cells().await.unwrap()[..CELL_LEN])
                .unwrap()
                .unwrap();
            let ChanMsg::Create(create) = cell.msg else {
                panic!("no CREATE: {cell:?}")
            };
            let (reply, _) = server_handshake(
                &mut rand::thread_rng(),
                &fake_id,
                &[&fake_onion],
                &create.handshake,
            )
            .unwrap();
            let created = Cell::new(cell.circ_id, ChanMsg::Created(reply));
            acc.writer.write_cells(&created.encode()).await.unwrap();
            let mut destroy = Cell::new(cell.circ_id, ChanMsg::Destroy(DestroyReason::None))
                .encode()
                .to_vec();
            destroy[5] = 0xA7;
            acc.writer.write_cells(&destroy).await.unwrap();
            acc
        });
        let built = shallot_net::build(r[3].channel().await, &[r[3].hop(), fake_hop], WAIT).await;
        let err = match built {
            Ok(circ) => circ.recv().await.unwrap_err(),
            Err(e) => e,
        };
        match err {
            shallot_net::NetError::Destroyed(reason) => {
                assert_eq!(reason, DestroyReason::None, "passed on unclamped")
            }
            other => panic!("expected a destroy, got {other}"),
        }
        let _link = evil.await.unwrap();
        still_serves(&[&r[3], &r[0]]).await;
    });
}
