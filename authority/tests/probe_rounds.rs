//! Probe rounds at scale, end to end against one real authority on loopback: with more relays
//! than a round is sure to finish if every probe were slow (here one: a single probe slot and
//! room for one probe limit in the budget), quick probes let each round reach every relay, so
//! that every honest relay keeps Running period after period. Before rounds went past that
//! worst-case figure, each relay was probed once every eight rounds and lost Running (proof
//! must be at most two voting intervals old) in most consensuses.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot_authority::Authority;
use shallot_directory::{upload_descriptor, NetworkParams};
use shallot_proto::dir::{Consensus, Flags};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_probes_keep_more_relays_running_than_a_slow_round_holds() {
    let params = NetworkParams {
        max_concurrent_probes: 1,
        ..test_params(3)
    };
    let (mut configs, _network) = authorities(1, 150, params);
    let auth = Authority::start(configs.remove(0)).await.unwrap();
    let addr = auth.local_addr();
    let mut relays = Vec::new();
    for octet in 151..159u8 {
        let r = TestRelay::start([127, octet, 0, 1]).await;
        upload_descriptor(addr, &r.signed(now()), Duration::from_secs(5))
            .await
            .unwrap();
        relays.push(r);
    }
    let running = |c: &Consensus| {
        relays
            .iter()
            .filter(|r| {
                c.relay(&r.identity.relay_id())
                    .is_some_and(|e| e.flags.contains(Flags::RUNNING))
            })
            .count()
    };
    let first = poll(Duration::from_secs(30), "all eight relays running", || {
        auth.current_consensus()
            .filter(|c| running(c) == relays.len())
    })
    .await;
    // Five more periods (15 s): proof older than two periods (6 s) would cost Running, and a
    // round that stopped at one probe would reach each relay once in 24 s.
    let mut last = first.valid_after;
    for _ in 0..5 {
        let c = poll(Duration::from_secs(20), "a newer consensus", || {
            auth.current_consensus().filter(|c| c.valid_after > last)
        })
        .await;
        assert_eq!(
            running(&c),
            relays.len(),
            "relays lost Running in the consensus of {}",
            c.valid_after
        );
        last = c.valid_after;
    }
    auth.shutdown().await;
}
