//! An authority's state survives a restart: accepted descriptors (so a replay is still
//! refused), relay history and the consensuses held are reloaded and verified again, and a
//! damaged saved descriptor is dropped.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot_authority::Authority;
use shallot_directory::{upload_descriptor, UploadError};
use shallot_proto::dir::Flags;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let (mut configs, _network) = authorities(1, 31, test_params(2));
    let config = configs.remove(0);
    let auth = Authority::start(config.clone()).await.unwrap();
    let relay = TestRelay::start([127, 32, 0, 1]).await;
    let published = now();
    let text = relay.signed(published);
    upload_descriptor(auth.local_addr(), &text, Duration::from_secs(5))
        .await
        .unwrap();
    let id = relay.identity.relay_id();
    let before = poll(
        Duration::from_secs(20),
        "a consensus listing the relay",
        || {
            auth.current_consensus().filter(|c| {
                c.relay(&id)
                    .is_some_and(|e| e.flags.contains(Flags::RUNNING))
            })
        },
    )
    .await;
    auth.shutdown().await;

    let state = config.data_dir.join("state");
    // Every consensus held is saved under its period (spec §5.8), the one seen among them.
    assert!(state
        .join(format!("consensus-{}.txt", before.valid_after))
        .exists());
    assert!(state.join("relays").exists());
    // A saved descriptor damaged on disk is dropped on load.
    let (other, other_text) = any_descriptor(now());
    let damaged = state
        .join("descriptors")
        .join(format!("{}.txt", other.relay_id()));
    std::fs::write(
        &damaged,
        other_text.replace("bandwidth 1000", "bandwidth 9999"),
    )
    .unwrap();

    let auth = Authority::start(config).await.unwrap();
    assert_eq!(auth.known_relays(), vec![id]);
    assert!(!damaged.exists());
    let reloaded = auth
        .current_consensus()
        .expect("the saved consensus is served at once");
    assert!(reloaded.valid_after >= before.valid_after);
    assert!(reloaded.relay(&id).is_some());
    // The saved descriptor still counts: replaying it is refused.
    let err = upload_descriptor(auth.local_addr(), &text, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, UploadError::Refused { status, .. } if status.as_u16() == 409),
        "{err}"
    );
    auth.shutdown().await;
}

/// Finding J: an authority restarted between committing to a reveal (its vote for `T`) and
/// revealing it (its vote for `T + I`) still reveals it: the round's value is a real shared
/// value, not the disaster value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_round_keeps_the_reveal() {
    use shallot_proto::dir::srv::disaster_value;
    let interval = 6;
    let (mut configs, _network) = authorities(1, 33, test_params(interval));
    let config = configs.remove(0);
    let auth = Authority::start(config.clone()).await.unwrap();
    // A consensus whose commitment lists this authority (its first vote's), caught early in
    // its period: the vote for the next period is due I/4 after it starts.
    let first = poll(
        Duration::from_secs(60),
        "a consensus with a commitment, early in its period",
        || {
            auth.current_consensus().filter(|c| {
                !c.shared_rand.commits.is_empty()
                    && now() * 1000 < c.valid_after * 1000 + interval * 1000 / 8
            })
        },
    )
    .await;
    auth.shutdown().await;
    let auth = Authority::start(config).await.unwrap();
    let next = poll(Duration::from_secs(60), "the next consensus", || {
        auth.current_consensus()
            .filter(|c| c.valid_after > first.valid_after)
    })
    .await;
    assert_eq!(
        next.valid_after,
        first.valid_after + interval,
        "the restarted authority missed a period"
    );
    assert_eq!(next.shared_rand.previous, Some(first.shared_rand.current));
    assert_ne!(
        next.shared_rand.current,
        disaster_value(next.valid_after, Some(&first.shared_rand.current)),
        "the reveal was lost in the restart"
    );
    auth.shutdown().await;
}
