//! The relay issue's end-to-end test: 3 authorities and 6 relays on loopback; every relay
//! registered in the consensus; a client builds a 3-hop circuit through relays taken from the
//! consensus, sends data to the last hop and gets the reply, and the relays count the links
//! they opened to extend it. Also: a rotated onion key is published in a later consensus and
//! works.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_net::HopNum;
use shallot_net::{build, ClientChannel, HopSpec};
use shallot_proto::dir::{Consensus, Flags};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::unix_now;

struct Net {
    net: Testnet,
    consensus: Consensus,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("network-e2e"));
            options.relays = 6;
            options.first_octet = 70;
            let net = Testnet::start(options).await.unwrap();
            let consensus = net.wait_ready(Duration::from_secs(60)).await.unwrap();
            Net { net, consensus }
        })
    })
}

#[test]
fn every_relay_is_in_the_consensus_signed_by_all_authorities() {
    let n = net();
    assert_eq!(n.consensus.relays.len(), 6);
    assert!(n
        .consensus
        .relays
        .iter()
        .all(|r| r.flags.contains(Flags::RUNNING | Flags::VALID)));
    let mailboxes = n
        .consensus
        .relays
        .iter()
        .filter(|r| r.flags.contains(Flags::MAILBOX))
        .count();
    assert_eq!(mailboxes, 4);
    let signers = n.consensus.valid_signers(&n.net.network.keys()).unwrap();
    assert!(signers.len() >= 2, "signed by a majority");
}

#[test]
fn a_client_builds_three_hops_from_the_consensus_and_gets_a_reply() {
    let n = net();
    rt().block_on(async {
        let relays = &n.consensus.relays;
        let path: Vec<HopSpec> = relays.iter().take(3).map(HopSpec::from).collect();
        let first = &relays[0];
        let chan = ClientChannel::connect(first.address, &first.link_key, Duration::from_secs(5))
            .await
            .unwrap();
        let opened_before = n.net.links_opened_for_extends();
        let circ = build(chan.clone(), &path, Duration::from_secs(5))
            .await
            .unwrap();
        circ.send(HopNum::THIRD, &RelayMsg::Data(b"hello, exit".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            circ.recv().await.unwrap(),
            (HopNum::THIRD, RelayMsg::Data(b"hello, exit".to_vec()))
        );
        // No other test here extends circuits: the first two hops each opened a link to the
        // next (the count `shallot bench` sorts its builds by), and the same path again finds
        // both open.
        assert_eq!(n.net.links_opened_for_extends(), opened_before + 2);
        let again = build(chan, &path, Duration::from_secs(5)).await.unwrap();
        again
            .send(HopNum::THIRD, &RelayMsg::Data(b"again".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            again.recv().await.unwrap(),
            (HopNum::THIRD, RelayMsg::Data(b"again".to_vec()))
        );
        assert_eq!(n.net.links_opened_for_extends(), opened_before + 2);
    });
}

#[test]
fn a_rotated_onion_key_is_published_and_used() {
    let n = net();
    rt().block_on(async {
        // A relay that joins with a short rotation period.
        let dir = scratch("rotating-member");
        shallot_relay::keys::init(&dir).unwrap();
        let mut config = shallot_relay::RelayConfig::new(dir, "127.99.0.1:0".parse().unwrap());
        config.nickname = "rotator".into();
        config.network = Some(n.net.network.clone());
        config.timing.onion_key_rotation = Duration::from_secs(4);
        config.timing.onion_key_grace = Duration::from_secs(30);
        shallot::testnet::relax(&mut config);
        let relay = shallot_relay::start(config).await.unwrap();
        let first_key = relay.onion_key();
        let listed_key = |key: [u8; 32]| {
            let network = n.net.network.clone();
            let id = relay.id();
            async move {
                let (c, _) = shallot_directory::fetch::fetch_consensus(
                    &network,
                    None,
                    unix_now(),
                    Duration::from_secs(2),
                )
                .await
                .ok()?;
                let entry = c.relay(&id)?.clone();
                (entry.ntor_key == key).then_some(entry)
            }
        };
        eventually("the relay to be listed", Duration::from_secs(30), || {
            listed_key(first_key)
        })
        .await;
        eventually(
            "the onion key to rotate",
            Duration::from_secs(15),
            || async { (relay.onion_key() != first_key).then_some(()) },
        )
        .await;
        let entry = eventually(
            "the new key in a consensus",
            Duration::from_secs(30),
            || listed_key(relay.onion_key()),
        )
        .await;
        let chan = ClientChannel::connect(entry.address, &entry.link_key, Duration::from_secs(5))
            .await
            .unwrap();
        let circ = build(chan, &[HopSpec::from(&entry)], Duration::from_secs(5))
            .await
            .unwrap();
        circ.send(HopNum::FIRST, &RelayMsg::Data(b"new key".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            circ.recv().await.unwrap().1,
            RelayMsg::Data(b"new key".to_vec())
        );
        relay.shutdown().await;
    });
}
