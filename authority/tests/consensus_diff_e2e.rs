//! Consensus diffs end to end (`docs/spec.md` §5.12): three authorities on loopback with a 4 s
//! voting interval; a client holding a consensus refreshes across several periods by diff
//! (counted, so the test knows a diff was used and not a whole fetch), each result identical
//! to what the authorities serve; a client back after its consensus expired still gets a diff,
//! from the authorities' bases of the last day; a client holding a consensus no authority
//! keeps falls back to the whole compressed consensus; bad diff requests are refused.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use shallot_authority::Authority;
use shallot_directory::fetch::{fetch_consensus_counted, http_request, FetchStats, Method};
use shallot_directory::upload_descriptor;
use shallot_proto::dir::{Consensus, Flags};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refreshes_by_diff_across_periods() {
    let (configs, network) = authorities(3, 111, test_params(4));
    let mut handles = Vec::new();
    for config in configs {
        handles.push(Authority::start(config).await.unwrap());
    }
    let mut relays = Vec::new();
    for i in 0..3u8 {
        relays.push(TestRelay::start([127, 80 + i, 0, 1]).await);
    }
    for h in &handles {
        for r in &relays {
            upload_descriptor(h.local_addr(), &r.signed(now()), T)
                .await
                .unwrap();
        }
    }
    let lists_all = |c: &Consensus| {
        relays.iter().all(|r| {
            c.relay(&r.identity.relay_id())
                .is_some_and(|e| e.flags.contains(Flags::RUNNING))
        })
    };

    // Bootstrap: nothing held, so the whole consensus, compressed.
    let stats = FetchStats::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = loop {
        if let Ok((c, _)) = fetch_consensus_counted(&network, None, now(), T, &stats).await {
            if lists_all(&c) {
                break c.into_inner();
            }
        }
        assert!(Instant::now() < deadline, "no consensus listing the relays");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let first = held.clone();
    let full_after_bootstrap = stats.full.load(Ordering::Relaxed);
    assert!(full_after_bootstrap >= 1);
    assert_eq!(stats.diffs.load(Ordering::Relaxed), 0);

    // Three newer periods, each obtained as a diff from the one held.
    let mut newer = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while newer < 3 {
        assert!(
            Instant::now() < deadline,
            "only {newer} newer consensuses by diff; stats {stats:?}"
        );
        let Ok((c, text)) = fetch_consensus_counted(&network, Some(&held), now(), T, &stats).await
        else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        // The text rebuilt from the diff is exactly the signed document.
        assert_eq!(Consensus::parse(&text).unwrap().encode().unwrap(), text);
        if c.valid_after > held.valid_after {
            newer += 1;
        }
        held = c.into_inner();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        stats.full.load(Ordering::Relaxed),
        full_after_bootstrap,
        "every refresh went by diff: {stats:?}"
    );
    assert!(stats.diffs.load(Ordering::Relaxed) >= 3, "{stats:?}");

    // A client back after its consensus expired (it is valid for three periods) and two
    // periods more, so that it is older than every consensus an authority keeps whole (the
    // last three, pruned once a period, and the next one once computed): a diff from it all
    // the same, computed from the day's bases on request.
    let wait = first.valid_until.saturating_sub(now()) + 2 * 4 + 1;
    assert!(wait < 40, "the first consensus is valid for {wait} s more");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let back = FetchStats::default();
    let (c, text) = fetch_consensus_counted(&network, Some(&first), now(), T, &back)
        .await
        .unwrap();
    assert!(c.valid_after > first.valid_after);
    assert_eq!(Consensus::parse(&text).unwrap().encode().unwrap(), text);
    assert_eq!(back.diffs.load(Ordering::Relaxed), 1, "{back:?}");
    assert_eq!(back.full.load(Ordering::Relaxed), 0, "{back:?}");
    let older: u64 = handles.iter().map(|h| h.counters().older_diffs_built).sum();
    assert!(older >= 1, "no diff was computed from an older base");

    // A consensus no authority keeps (here: one nobody signed): the diff is refused (404)
    // and the client falls back to the whole consensus.
    let mut unknown = held.clone();
    unknown.relays[0].bandwidth += 1;
    unknown.valid_after -= 1;
    let fallback = FetchStats::default();
    let (c, _) = fetch_consensus_counted(&network, Some(&unknown), now(), T, &fallback)
        .await
        .unwrap();
    assert!(c.valid_after >= held.valid_after);
    assert_eq!(fallback.diffs.load(Ordering::Relaxed), 0);
    assert_eq!(fallback.diff_failures.load(Ordering::Relaxed), 1);
    assert_eq!(fallback.full.load(Ordering::Relaxed), 1);

    // Bad requests get a clear refusal; the authority keeps serving.
    let addr = handles[0].local_addr();
    let r = http_request(addr, Method::GET, "/consensus/diff/zz", None, T, 4096)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    let missing = format!("/consensus/diff/{}.z", "00".repeat(32));
    let r = http_request(addr, Method::GET, &missing, None, T, 4096)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 404, "{}", r.text());
    assert!(r.text().contains("no consensus with that digest"));
    let r = http_request(addr, Method::GET, "/consensus.z", None, T, 1 << 20)
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 200);

    // Repeated fetches of one version are answered from the cache: three fetches (whole and
    // diff) of an unchanged served consensus build its answers at most once. The served
    // version can change between (a new period, a signature added): then try again.
    let h = &handles[0];
    let diff_path = format!(
        "/consensus/diff/{}.z",
        shallot_crypto::hex::encode(&held.body_digest())
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the served consensus never held still"
        );
        let version = h.current_consensus();
        let before = h.counters().consensus_answers_built;
        for path in ["/consensus.z", "/consensus.z", diff_path.as_str()] {
            let r = http_request(addr, Method::GET, path, None, T, 1 << 20)
                .await
                .unwrap();
            assert!(matches!(r.status.as_u16(), 200 | 404), "{}", r.text());
        }
        let after = h.counters().consensus_answers_built;
        if h.current_consensus() == version {
            assert!(after <= before + 1, "built {} times", after - before);
            assert!(after >= 1);
            break;
        }
    }

    for h in handles {
        h.shutdown().await;
    }
}
