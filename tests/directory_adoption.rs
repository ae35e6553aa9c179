//! Authorities that were down, and what they find when they come back.
//!
//! - One down while its peers made a consensus (`docs/spec.md` §5.6, §5.10): when it comes
//!   back, its next round continues the shared random chain from the consensus its peers
//!   signed, which it adopts, and saves as it saves one of its own, so that a later restart
//!   still holds it (`authority/src/voting.rs`, `chain_base`).
//! - Two of three down when a relay started, so that only one took its descriptor (§6.7): the
//!   relay sends the same descriptor again to the two, and is listed soon after they are
//!   back, not at its next publication (45 to 60 s later on a test network).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_proto::dir::Flags;
use shallot_rt::unix_now;

/// The consensuses saved under `dir` (files `consensus-<period>.txt`), by period.
fn saved(dir: &Path) -> BTreeMap<u64, PathBuf> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(p) = name
                .strip_prefix("consensus-")
                .and_then(|n| n.strip_suffix(".txt"))
                .and_then(|n| n.parse().ok())
            {
                out.insert(p, path);
            }
        }
    }
    out
}

#[test]
fn an_authority_back_from_downtime_saves_the_consensus_it_adopts() {
    rt().block_on(async {
        let interval = 2;
        let mut options = TestnetOptions::new(scratch("adoption"));
        options.first_octet = 55;
        options.relays = 3;
        options.voting_interval_secs = interval;
        let mut net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();
        let dir = net.authority_dir(2);
        eventually(
            "the third authority saves a consensus",
            Duration::from_secs(30),
            || {
                let held = !saved(&dir).is_empty();
                async move { held.then_some(()) }
            },
        )
        .await;

        net.stop_authority(2).await;
        let stopped = unix_now();
        let before = saved(&dir);
        // The two others go on: a consensus voted and computed entirely while it was down.
        let missed = eventually(
            "a consensus made without the third authority",
            Duration::from_secs(60),
            || async {
                let c = newest_consensus(&net.network).await?;
                (c.valid_after > stopped + 2 * interval).then_some(c.valid_after)
            },
        )
        .await;
        assert!(!before.contains_key(&missed));

        net.restart_authority(2).await.unwrap();
        let restarted = unix_now();
        // Its first round after the restart is for a period beginning after it; the one it
        // continues from began before, while it was down: on its disk only by adoption.
        let (adopted, path) = eventually(
            "the consensus it adopted, saved",
            Duration::from_secs(60),
            || {
                let new = saved(&dir)
                    .into_iter()
                    .find(|(p, _)| !before.contains_key(p) && *p >= missed && *p <= restarted);
                async move { new }
            },
        )
        .await;
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.starts_with("shallot-consensus "), "{text:.40}");
        assert!(text.contains(&format!("\nvalid-after {adopted}\n")));
        net.stop().await;
    });
}

#[test]
fn a_relay_that_only_one_authority_took_is_listed_soon_after_the_others_return() {
    rt().block_on(async {
        let mut options = TestnetOptions::new(scratch("late-authorities"));
        options.first_octet = 62;
        options.relays = 3;
        options.voting_interval_secs = 2;
        let mut net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();

        // Two of the three authorities are down when a new relay starts: only the first
        // takes its descriptor; the uploads to the two others fail.
        net.stop_authority(1).await;
        net.stop_authority(2).await;
        let new = net.add_relay().await.unwrap();
        let relay = net.relay(new).unwrap();
        let id = relay.id();
        eventually(
            "the new relay's uploads to the two authorities down have failed",
            Duration::from_secs(30),
            || {
                let s = relay.stats();
                let done = s.descriptor_uploads_accepted >= 1 && s.descriptor_uploads_failed >= 2;
                async move { done.then_some(()) }
            },
        )
        .await;

        // Back, the two get it again from the relay (the test network's relays publish anew
        // only 45 to 60 s after an accepted upload), and the consensus lists it Running.
        net.restart_authority(1).await.unwrap();
        net.restart_authority(2).await.unwrap();
        let back = std::time::Instant::now();
        eventually(
            "the new relay listed Running",
            Duration::from_secs(30),
            || async {
                let c = newest_consensus(&net.network).await?;
                c.relays
                    .iter()
                    .any(|r| r.id == id && r.flags.contains(Flags::RUNNING))
                    .then_some(())
            },
        )
        .await;
        let relay = net.relay(new).unwrap();
        assert!(relay.stats().descriptor_uploads_accepted >= 3);
        eprintln!(
            "listed {:.1} s after the authorities came back",
            back.elapsed().as_secs_f64()
        );
        net.stop().await;
    });
}
