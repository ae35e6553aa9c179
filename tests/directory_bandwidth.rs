//! Review finding 4, end to end: a relay declaring `u64::MAX` bytes per second. Authorities
//! and relays run as their own processes. The consensus weight of every relay is the low
//! median of the authorities' measurements (the scanner's timed transfer through a two-hop
//! circuit, `docs/spec.md` §5.7), never the declared figure; and the client's path selection draws
//! the liar no more often than its share of those weights.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod integrity;

use std::time::Duration;

use common::*;
use integrity::{params, ProcNet};
use rand::SeedableRng;
use shallot_directory::NetworkParams;
use shallot_net::path::{capped_weights, weighted_pick};
use shallot_proto::dir::{Flags, RelayEntry};

#[test]
fn a_relay_declaring_an_absurd_bandwidth_gets_its_measured_share() {
    rt().block_on(async {
        let p = NetworkParams {
            // A cap well above 1/n, so that it does not hide the weights in a small network.
            max_relay_share_ppm: 600_000,
            ..params(4)
        };
        let mut net = ProcNet::layout("bandwidth", 3, 221, p);
        for i in 0..3 {
            net.spawn_authority(i);
        }
        let max = u64::MAX.to_string();
        // Honest relays declare more than they can carry here, so that their weights are
        // their measurements too.
        for octet in [225, 226, 227, 228] {
            net.spawn_relay(octet, &["--bandwidth", "100G"]);
        }
        net.spawn_relay(229, &["--bandwidth", &max]);
        let liar = net.relays[4].id;
        let ids: Vec<_> = net.relays.iter().map(|r| r.id).collect();
        // A consensus whose every weight comes from measurements: each relay measured by
        // every authority in its vote.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut after = 0;
        let (c, votes) = loop {
            let c = net
                .consensus_where(Duration::from_secs(60), "all relays running", |c| {
                    c.valid_after > after
                        && ids.iter().all(|id| {
                            c.relay(id)
                                .is_some_and(|e| e.flags.contains(Flags::RUNNING))
                        })
                })
                .await;
            after = c.valid_after;
            let mut votes = Vec::new();
            for i in 0..3 {
                votes.extend(net.vote_of(i, c.valid_after).await);
            }
            // The consensus lists the commitment of every vote it counted (spec §5.10): a
            // vote that came late is served but not counted, and the median below needs all.
            let measured = votes.len() == 3
                && c.shared_rand.commits.len() == 3
                && votes.iter().all(|v| {
                    ids.iter()
                        .all(|id| v.relays.iter().any(|e| e.id == *id && e.measured.is_some()))
                });
            if measured {
                break (c, votes);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no consensus counted all three votes with every relay measured in each"
            );
        };
        // Each weight is the low median of the three measurements, capped by the declared
        // figure; the liar's is nowhere near what it declared.
        for id in &ids {
            let mut m: Vec<u64> = votes
                .iter()
                .map(|v| {
                    v.relays
                        .iter()
                        .find(|e| e.id == *id)
                        .unwrap()
                        .measured
                        .unwrap()
                })
                .collect();
            m.sort_unstable();
            let declared = if *id == liar { u64::MAX } else { 100 << 30 };
            assert_eq!(c.relay(id).unwrap().bandwidth, m[1].min(declared));
        }
        let liar_weight = c.relay(&liar).unwrap().bandwidth;
        eprintln!(
            "consensus weights (bytes/s): {:?}; the liar's: {liar_weight}",
            ids.iter()
                .map(|id| c.relay(id).unwrap().bandwidth)
                .collect::<Vec<_>>()
        );
        assert!(liar_weight < u64::MAX / 1024, "{liar_weight}");

        // The client draws the liar no more often than its (capped) share of the weights.
        let running: Vec<&RelayEntry> = c
            .relays
            .iter()
            .filter(|r| r.flags.contains(Flags::RUNNING))
            .collect();
        let weights: Vec<u64> = running.iter().map(|r| r.bandwidth).collect();
        let capped = capped_weights(&weights, c.params.max_share_ppm);
        let total: u128 = capped.iter().sum();
        let i = running.iter().position(|r| r.id == liar).unwrap();
        let share = capped[i] as f64 / total as f64;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let draws = 50_000;
        let hits = (0..draws)
            .filter(|_| {
                weighted_pick(&running, c.params.max_share_ppm, &mut rng)
                    .unwrap()
                    .id
                    == liar
            })
            .count();
        let observed = hits as f64 / f64::from(draws);
        assert!(
            observed <= share + 0.01,
            "drawn {observed:.3} of the time, share {share:.3}"
        );
        assert!(share <= 0.6 + 1e-9, "{share}");
        net.stop().await;
    });
}
