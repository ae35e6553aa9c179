//! Review finding 5, end to end against one real authority on loopback: descriptor floods from
//! one /16 and from one /64, then from everywhere up to the total limit, many of them pointing
//! at listeners that never answer (each probe of them runs to its time limit). Every limit is
//! hit with its status and reason; the honest relays keep Running; the authority keeps
//! publishing a consensus each period; and it holds no more than its limit.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use shallot_authority::Authority;
use shallot_crypto::keys::IdentityKeypair;
use shallot_directory::{upload_descriptor, NetworkParams};
use shallot_proto::dir::{Consensus, Flags, RelayDescriptor};

/// A listener that accepts connections and never says a word.
async fn silent(ip: [u8; 4]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

fn fake(address: SocketAddr) -> String {
    let id = IdentityKeypair::generate(&mut rand::thread_rng());
    RelayDescriptor {
        nickname: "flood".into(),
        address,
        identity: id.public(),
        ntor_key: rand::random(),
        link_key: rand::random(),
        bandwidth: u64::MAX,
        family: vec![],
        mailbox: true,
        published: now(),
    }
    .sign(&id)
    .unwrap()
}

/// Uploads from source network `127.31.<n % 250>.1`, a /24 of its own every time (so that the
/// per-network upload rate is not what stops the flood); returns (status, reason).
async fn upload_from(n: usize, to: SocketAddr, text: &str) -> (u16, String) {
    let source = [127, 31 + (n / 250) as u8, (n % 250) as u8, 1];
    raw_request(source, to, "POST", "/descriptor", text).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_hit_their_limits_and_honest_relays_keep_running() {
    let params = NetworkParams {
        max_descriptors: 60,
        max_descriptors_per_ipv4_16: 20,
        max_descriptors_per_ipv6_64: 8,
        max_concurrent_probes: 4,
        max_uploads_per_minute: 1000,
        ..test_params(3)
    };
    let (mut configs, _network) = authorities(1, 91, params);
    let auth = Authority::start(configs.remove(0)).await.unwrap();
    let addr = auth.local_addr();
    let mut honest = Vec::new();
    for octet in [92, 93, 94] {
        let r = TestRelay::start([127, octet, 0, 1]).await;
        upload_descriptor(addr, &r.signed(now()), Duration::from_secs(5))
            .await
            .unwrap();
        honest.push(r.identity.relay_id());
    }
    let running = |c: &Consensus| {
        honest.iter().all(|id| {
            c.relay(id)
                .is_some_and(|e| e.flags.contains(Flags::RUNNING))
        })
    };
    let first = poll(Duration::from_secs(30), "honest relays running", || {
        auth.current_consensus().filter(running)
    })
    .await;

    // One /16: 20 descriptors, all at a listener that never answers; the rest refused.
    let mute = silent([127, 95, 0, 1]).await;
    let mut n = 0;
    let mut accepted = 0;
    for _ in 0..100 {
        let (status, reason) = upload_from(n, addr, &fake(mute)).await;
        n += 1;
        match status {
            200 => accepted += 1,
            429 => assert!(
                reason.contains("20 descriptors in 127.95.0.0/16"),
                "{reason}"
            ),
            other => panic!("{other}: {reason}"),
        }
    }
    assert_eq!(accepted, 20);

    // One /64 (addresses are not checked for routing on a test network, so they need not be
    // reachable): 8 descriptors, the rest refused.
    let mut accepted = 0;
    for i in 0..40u16 {
        let v6: SocketAddr = format!("[fd00:1:2:3::{:x}]:9000", i + 1).parse().unwrap();
        let (status, reason) = upload_from(n, addr, &fake(v6)).await;
        n += 1;
        match status {
            200 => accepted += 1,
            429 => assert!(reason.contains("in fd00:1:2:3::/64"), "{reason}"),
            other => panic!("{other}: {reason}"),
        }
    }
    assert_eq!(accepted, 8);

    // From everywhere: up to the total of 60, then refused.
    let mut accepted = 0;
    let mut full = 0;
    for i in 0..60u8 {
        let at = silent([127, 100 + i, 0, 1]).await;
        let (status, reason) = upload_from(n, addr, &fake(at)).await;
        n += 1;
        match status {
            200 => accepted += 1,
            503 => {
                assert!(reason.contains("limit of 60 descriptors"), "{reason}");
                full += 1;
            }
            other => panic!("{other}: {reason}"),
        }
    }
    assert_eq!((accepted, full), (60 - 3 - 20 - 8, 60 - (60 - 3 - 20 - 8)));
    assert_eq!(auth.known_relays().len(), 60);

    // The authority keeps voting: three more periods, each with the honest relays Running,
    // while up to 49 probes a round run into their time limit.
    let mut last = first.valid_after;
    for _ in 0..3 {
        let c = poll(Duration::from_secs(20), "a newer consensus", || {
            auth.current_consensus().filter(|c| c.valid_after > last)
        })
        .await;
        assert!(
            running(&c),
            "honest relays lost Running in {}",
            c.valid_after
        );
        assert_eq!(
            c.relays.len(),
            3,
            "the flood, which no probe proved, is not listed"
        );
        last = c.valid_after;
    }
    assert!(auth.known_relays().len() <= 60);
    auth.shutdown().await;
}
