//! Onion key rotation: a new ntor key every rotation period; the previous key still accepted
//! for the grace period, then refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot_net::{Circuit, NetError};
use shallot_proto::cell::DestroyReason;

#[test]
fn the_previous_onion_key_works_for_the_grace_period_then_is_refused() {
    rt().block_on(async {
        let relay = start_relay("rotating", 60, |c| {
            c.timing.onion_key_rotation = Duration::from_secs(3);
            c.timing.onion_key_grace = Duration::from_secs(2);
        })
        .await;
        let old = relay.hop();
        let rotated_at = eventually(
            "the onion key to rotate",
            Duration::from_secs(10),
            || async { (relay.handle.onion_key() != old.ntor_key).then(std::time::Instant::now) },
        )
        .await;
        let chan = relay.channel().await;
        // Within the grace period both keys work.
        Circuit::create(chan.clone(), &old, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            rotated_at.elapsed() < Duration::from_secs(2),
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
        assert!(rotated_at.elapsed() >= Duration::from_millis(1900));
        Circuit::create(chan, &relay.hop(), Duration::from_secs(5))
            .await
            .unwrap();
    });
}
