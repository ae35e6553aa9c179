//! Onion key rotation: a new ntor key every rotation period; the previous key still accepted
//! for the grace period, then refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use shallot_net::{Circuit, NetError};
use shallot_proto::cell::DestroyReason;

/// How long the previous key is still accepted after a rotation.
const GRACE: Duration = Duration::from_secs(4);

#[test]
fn the_previous_onion_key_works_for_the_grace_period_then_is_refused() {
    rt().block_on(async {
        let relay = start_relay("rotating", 60, |c| {
            c.timing.onion_key_rotation = Duration::from_secs(8);
            c.timing.onion_key_grace = GRACE;
        })
        .await;
        let old = relay.hop();
        eventually(
            "the onion key to rotate",
            Duration::from_secs(20),
            || async { (relay.handle.onion_key() != old.ntor_key).then_some(()) },
        )
        .await;
        // The relay sets the new key file's modification time to the moment of the rotation
        // and counts the grace period from it, so both bounds below are exact.
        let rotated = std::fs::metadata(relay.dir.join("onion.key"))
            .and_then(|m| m.modified())
            .unwrap();
        let over = rotated + GRACE;
        let chan = relay.channel().await;
        // Within the grace period both keys work.
        Circuit::create(chan.clone(), &old, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            SystemTime::now() < over,
            "test too slow to check the grace period"
        );
        Circuit::create(chan.clone(), &relay.hop(), Duration::from_secs(5))
            .await
            .unwrap();
        // After it, the old key is refused with a reason the client can act on.
        let err = eventually(
            "the old key to be refused",
            Duration::from_secs(10),
            || async {
                match Circuit::create(chan.clone(), &old, Duration::from_secs(5)).await {
                    Err(e) => Some(e),
                    Ok(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        None
                    }
                }
            },
        )
        .await;
        assert!(
            matches!(err, NetError::Destroyed(DestroyReason::OnionKey)),
            "{err}"
        );
        assert!(
            SystemTime::now() >= over,
            "the old key was refused before its grace period ended"
        );
        Circuit::create(chan, &relay.hop(), Duration::from_secs(5))
            .await
            .unwrap();
    });
}
