//! The directory end to end: three authorities on loopback with a 4 s voting interval,
//! relays that answer real link handshakes, one consensus signed by all three; then one
//! authority stops and the other two still publish a consensus the client library accepts.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use shallot_authority::Authority;
use shallot_directory::{fetch_consensus, upload_descriptor, ConsensusCache};
use shallot_proto::dir::{Consensus, Flags};

const RELAYS: u8 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_authorities_agree_and_two_carry_on() {
    let (configs, network) = authorities(3, 41, test_params(4));
    let mut handles = Vec::new();
    for config in configs {
        handles.push(Authority::start(config).await.unwrap());
    }

    // Relays on their own loopback addresses (the Sybil limit counts relays per IP), plus
    // one that publishes a link key it does not hold.
    let mut relays = Vec::new();
    for i in 0..RELAYS {
        relays.push(TestRelay::start([127, 60 + i, 0, 1]).await);
    }
    let impostor = TestRelay::start([127, 70, 0, 1]).await;
    let mut lying = impostor.descriptor(now());
    lying.link_key = [9; 32];
    let lying = lying.sign(&impostor.identity).unwrap();
    for h in &handles {
        for r in &relays {
            upload_descriptor(h.local_addr(), &r.signed(now()), Duration::from_secs(5))
                .await
                .unwrap();
        }
        upload_descriptor(h.local_addr(), &lying, Duration::from_secs(5))
            .await
            .unwrap();
    }

    let lists_all_running = |c: &Consensus| {
        relays.iter().all(|r| {
            c.relay(&r.identity.relay_id())
                .is_some_and(|e| e.flags.contains(Flags::RUNNING | Flags::VALID))
        })
    };
    // Every authority serves one and the same consensus, signed by all three.
    let first = poll(
        Duration::from_secs(40),
        "a consensus signed by all 3",
        || {
            let cs: Vec<Consensus> = handles
                .iter()
                .map(|h| h.current_consensus())
                .collect::<Option<_>>()?;
            let agreed = cs
                .iter()
                .all(|c| c.signatures.len() == 3 && c == &cs[0] && lists_all_running(c));
            agreed.then(|| cs[0].clone())
        },
    )
    .await;
    assert!(
        first.relay(&impostor.identity.relay_id()).is_none(),
        "a relay no probe proved is not listed"
    );
    assert!(first
        .relay(&relays[0].identity.relay_id())
        .unwrap()
        .flags
        .contains(Flags::MAILBOX | Flags::FAST));

    // The client library accepts it and caches it.
    let (fetched, text) = fetch_consensus(&network, None, now(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(fetched.valid_after >= first.valid_after);
    let cache_dir = scratch("client");
    let cache = ConsensusCache::new(cache_dir.join("consensus.txt"));
    cache.store(&text).unwrap();
    assert_eq!(cache.load(&network, now()).unwrap().unwrap(), fetched);

    // One authority stops; the other two go on publishing a consensus a client accepts.
    let stopped = handles.remove(2);
    let stopped_key = stopped.key();
    stopped.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let later = loop {
        match fetch_consensus(&network, Some(&fetched), now(), Duration::from_secs(5)).await {
            Ok((c, _)) if c.valid_after > fetched.valid_after + 4 && lists_all_running(&c) => {
                break c
            }
            Ok(_) => {}
            Err(e) => eprintln!("still waiting: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "no consensus from the two remaining authorities"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(later.signatures.len(), 2);
    assert!(later.signatures.iter().all(|(k, _)| *k != stopped_key));

    for h in handles {
        h.shutdown().await;
    }
}
