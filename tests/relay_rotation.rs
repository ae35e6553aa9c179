//! Onion key rotation: a new ntor key every rotation period; the previous key still accepted
//! for the grace period, then refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

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
        // The rotation happened after the last look that still saw the old key: every bound
        // below counts from that look, so a late look only weakens the checks.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut still_old = std::time::Instant::now();
        loop {
            let looked = std::time::Instant::now();
            if relay.handle.onion_key() != old.ntor_key {
                break;
            }
            still_old = looked;
            assert!(looked < deadline, "the onion key never rotated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let chan = relay.channel().await;
        // Within the grace period both keys work.
        Circuit::create(chan.clone(), &old, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            still_old.elapsed() < GRACE,
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
        assert!(still_old.elapsed() >= GRACE - Duration::from_millis(100));
        Circuit::create(chan, &relay.hop(), Duration::from_secs(5))
            .await
            .unwrap();
    });
}
