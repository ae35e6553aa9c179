//! Issue 10, bandwidth: the authorities' scanner, end to end on loopback (3 authorities and 4
//! relays in this process). It measures a relay through a real two-hop circuit, helper then
//! relay, counting only what the relay itself echoes; and what each authority votes as a
//! relay's measurement is the scanner's figure (the probe's one-hop figure is never voted), of
//! which the consensus weight is the low median, capped.
//!
//! Not covered here: a relay that serves the authorities faster than anyone else. The relay
//! sees a measurement circuit arrive from the helper relay, not from an authority's address,
//! but no test relay throttles by address yet.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_authority::scanner::{measure, pick_helper, ScanError, CHUNK};
use shallot_crypto::hex;
use shallot_directory::fetch::fetch_consensus;
use shallot_proto::dir::{Consensus, Flags, Vote};

/// The newest consensus after `after`, with the three votes it was computed from, once every
/// relay is Running in it and measured in every vote.
async fn measured_round(net: &Testnet, limit: Duration) -> (Consensus, Vec<Vote>) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut after = 0;
    loop {
        let now = shallot_rt::unix_now();
        if let Ok((c, _)) = fetch_consensus(&net.network, None, now, Duration::from_secs(3)).await {
            let c = c.into_inner();
            if c.valid_after > after
                && c.relays.len() == 4
                && c.relays.iter().all(|r| r.flags.contains(Flags::RUNNING))
            {
                after = c.valid_after;
                let mut votes = Vec::new();
                for i in 0..3 {
                    votes.extend(net.vote(i, c.valid_after).await);
                }
                let all_measured = votes.len() == 3
                    && votes.iter().all(|v| {
                        c.relays.iter().all(|r| {
                            v.relays
                                .iter()
                                .any(|e| e.id == r.id && e.measured.is_some())
                        })
                    });
                if all_measured {
                    return (c, votes);
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no consensus whose votes measure every relay within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each vote's measurement of each relay, by authority and relay.
fn figures(votes: &[Vote]) -> std::collections::BTreeMap<(String, String), Option<u64>> {
    votes
        .iter()
        .flat_map(|v| {
            v.relays.iter().map(|e| {
                (
                    (hex::encode(v.authority.as_bytes()), e.id.to_string()),
                    e.measured,
                )
            })
        })
        .collect()
}

#[test]
fn the_scanner_measures_through_two_hops_and_its_figures_are_voted() {
    rt().block_on(async {
        let mut options = TestnetOptions::new(scratch("directory-scanner"));
        options.relays = 4;
        options.first_octet = 190;
        // Each relay measured once an hour, as on a production network, under 3-s periods.
        options.scan_interval_secs = Some(3600);
        let net = Testnet::start(options).await.unwrap();
        let c = net.wait_ready(Duration::from_secs(90)).await.unwrap();

        // One measurement by hand: 200 KiB out to the relay and echoed back through the
        // helper. Only echoes from the second hop are counted, so a complete measurement
        // proves the bytes went through both.
        let target = &c.relays[0];
        let helper = pick_helper(&c, target).unwrap();
        assert_ne!(helper.id, target.id);
        let bytes = 200 * 1024;
        let m = measure(
            helper,
            target,
            bytes,
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(m.complete, "{m:?}");
        assert_eq!(m.bytes, bytes.div_ceil(CHUNK as u64) * CHUNK as u64);
        assert!(m.bytes_per_sec() > 0);

        // A relay the helper does not know cannot be measured: the helper does not extend
        // to it, and nothing is counted from the helper itself.
        let mut ghost = target.clone();
        ghost.id = shallot_crypto::keys::RelayId([0x77; 20]);
        let e = measure(
            helper,
            &ghost,
            bytes,
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ScanError::Circuit { .. }), "{e}");

        // Every authority votes a measurement for every relay (only the scanner's figures
        // are voted), and the consensus weight is their low median, capped by the declared
        // bandwidth.
        let (c, votes) = measured_round(&net, Duration::from_secs(120)).await;
        for r in &c.relays {
            let mut m: Vec<u64> = votes
                .iter()
                .map(|v| {
                    v.relays
                        .iter()
                        .find(|e| e.id == r.id)
                        .and_then(|e| e.measured)
                        .unwrap()
                })
                .collect();
            m.sort_unstable();
            let low_median = m[(m.len() - 1) / 2];
            assert!(
                r.bandwidth <= low_median,
                "{}: weight {} above the measured low median {low_median} ({m:?})",
                r.nickname,
                r.bandwidth
            );
        }

        // Measured once an hour: each authority's scanner took one measurement of each relay,
        // and three periods later it has taken no other, and every vote carries the very
        // figures of that round.
        let measured = |net: &Testnet| -> Vec<u64> {
            (0..3)
                .map(|i| net.authority(i).unwrap().counters().relays_measured)
                .collect()
        };
        let relays = c.relays.len() as u64;
        assert_eq!(measured(&net), vec![relays; 3]);
        let first = figures(&votes);
        assert_eq!(first.len(), 3 * c.relays.len());
        let later = c.valid_after + 3 * net.options().voting_interval_secs;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let again = loop {
            let wait = later.saturating_sub(shallot_rt::unix_now());
            tokio::time::sleep(Duration::from_secs(wait).max(Duration::from_millis(250))).await;
            let (c2, votes) = measured_round(&net, Duration::from_secs(60)).await;
            if c2.valid_after >= later {
                break figures(&votes);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no consensus after {later}"
            );
        };
        assert_eq!(
            measured(&net),
            vec![relays; 3],
            "measured again within the hour"
        );
        assert_eq!(again, first, "a vote changed a figure within the hour");
        net.stop().await;
    });
}
