//! An authority that was down while its peers made a consensus (`docs/spec.md` §5.6, §5.10):
//! when it comes back, its next round continues the shared random chain from the consensus
//! its peers signed, which it adopts, and saves as it saves one of its own, so that a later
//! restart still holds it (`authority/src/voting.rs`, `chain_base`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
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
