//! An authority's state survives a restart: accepted descriptors (so a replay is still
//! refused), relay history and the last consensus are reloaded and verified again, and a
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
    assert!(state.join("consensus.txt").exists());
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
