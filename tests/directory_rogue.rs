//! Review finding 1, end to end: a rogue authority (one of three, then two of five) votes for
//! an honest relay a forged descriptor, with the rogue's address and keys and a later
//! `published`. Honest authorities and relays run as their own processes; the rogues run in
//! this process with the test-only `misbehave` feature. The consensus the honest authorities
//! sign carries the relay's own fields, and a client that builds circuits through the relay
//! never connects to the forged address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod integrity;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use integrity::{params, ProcNet, ProcRelay};
use shallot_authority::misbehave::Misbehaviour;
use shallot_crypto::hex;
use shallot_crypto::keys::IdentityKeypair;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::dir::descriptor::descriptor_digest;
use shallot_proto::dir::{signed_bytes, Consensus, Flags, RelayDescriptor};
use shallot_rt::unix_now;

/// A listener at the forged address that counts every connection made to it.
async fn trap(ip: [u8; 4]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, hits)
}

/// The rogue's descriptor for the honest relay: its identity, but the rogue's address and
/// keys, a huge bandwidth and a later `published`. The rogue cannot sign as the relay; it signs
/// with a key of its own, so the text never verifies.
fn forged(relay: &ProcRelay, at: SocketAddr) -> String {
    let d = RelayDescriptor {
        nickname: "forged".into(),
        address: at,
        identity: relay.identity,
        ntor_key: [0x66; 32],
        link_key: [0x77; 32],
        bandwidth: u64::MAX,
        family: vec![],
        mailbox: true,
        published: unix_now() + 3600,
    };
    let body = d.encode_body().unwrap();
    let rogue = IdentityKeypair::generate(&mut rand::thread_rng());
    let sig = rogue.sign(&signed_bytes(&body));
    format!("{body}signature {}\n", hex::encode(&sig.to_bytes()))
}

fn honest_fields(c: &Consensus, relay: &ProcRelay) -> bool {
    c.relay(&relay.id).is_some_and(|e| {
        e.address == relay.address && e.link_key == relay.link_key && e.ntor_key == relay.ntor_key
    })
}

async fn rogue_minority(name: &str, n: usize, rogues: usize, first_octet: u8) {
    let mut net = ProcNet::layout(name, n, first_octet, params(4));
    for i in 0..n - rogues {
        net.spawn_authority(i);
    }
    let relay_octet = first_octet + n as u8;
    for r in 0..3 {
        net.spawn_relay(relay_octet + r, &[]);
    }
    let (trap_addr, hits) = trap([127, relay_octet + 3, 0, 1]).await;
    let text = forged(&net.relays[0], trap_addr);
    for i in n - rogues..n {
        let m = Misbehaviour {
            forge: Some((net.relays[0].id, text.clone())),
            equivocate: false,
        };
        net.start_rogue(i, m).await;
    }
    let honest_keys: Vec<_> = net.network.authorities[..n - rogues]
        .iter()
        .map(|a| a.key)
        .collect();
    let relays: Vec<_> = net.relays.iter().map(|r| r.id).collect();
    // A consensus signed by every honest authority, listing every relay as Running.
    let c = net
        .consensus_where(
            Duration::from_secs(90),
            "a consensus the honest authorities signed",
            |c| {
                c.valid_signers(&honest_keys)
                    .is_ok_and(|s| s.len() == honest_keys.len())
                    && relays.iter().all(|id| {
                        c.relay(id)
                            .is_some_and(|e| e.flags.contains(Flags::RUNNING))
                    })
            },
        )
        .await;
    assert!(
        honest_fields(&c, &net.relays[0]),
        "the relay's entry: {:?}",
        c.relay(&net.relays[0].id)
    );
    assert_ne!(c.relay(&net.relays[0].id).unwrap().address, trap_addr);
    // The rogues did vote the forged descriptor for that period.
    let forged_digest = descriptor_digest(&text);
    for i in n - rogues..n {
        let vote = net
            .vote_of(i, c.valid_after)
            .await
            .expect("the rogue's vote");
        let entry = vote
            .relays
            .iter()
            .find(|e| e.id == net.relays[0].id)
            .unwrap();
        assert_eq!(entry.descriptor, forged_digest);
        assert_eq!(entry.measured, Some(u64::MAX));
    }
    // What each honest authority serves says the same.
    let honest: Vec<usize> = (0..n - rogues).collect();
    for served in net.served(&honest).await {
        let served = served.expect("every honest authority serves a consensus");
        if let Some(e) = served.relay(&net.relays[0].id) {
            assert_ne!(e.address, trap_addr);
            assert_eq!(e.link_key, net.relays[0].link_key);
        }
    }

    // A client builds circuits through the relay, and others: it never connects to the
    // forged address.
    let client_dir = scratch(&format!("{name}-client"));
    let dir = Arc::new(NetDir::new(net.network.clone(), &client_dir));
    dir.bootstrap().await.unwrap();
    let config = CircuitConfig {
        per_hop_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let circuits = CircuitManager::new(dir.clone(), client_dir.clone(), config);
    for _ in 0..3 {
        let built = circuits.build(Some(net.relays[0].id)).await.unwrap();
        assert_eq!(built.path.last().unwrap().address, net.relays[0].address);
        built.circuit.close();
        circuits.build(None).await.unwrap().circuit.close();
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a client connected to the forged address"
    );
    net.stop().await;
}

#[test]
fn one_rogue_of_three_cannot_rewrite_a_relay() {
    rt().block_on(rogue_minority("rogue-1of3", 3, 1, 181));
}

#[test]
fn two_rogues_of_five_cannot_rewrite_a_relay() {
    rt().block_on(rogue_minority("rogue-2of5", 5, 2, 191));
}
