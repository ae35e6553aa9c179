//! With every authority unreachable, a client keeps working from its valid cached consensus,
//! and fails with a clear error once that consensus has expired.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::{DirError, NetDir};
use shallot_net::HopNum;
use shallot_net::NetError;
use shallot_rt::unix_now;

#[test]
fn the_cached_consensus_carries_the_client_until_it_expires() {
    rt().block_on(async {
        let mut options = TestnetOptions::new(scratch("offline-dir"));
        options.relays = 4;
        options.first_octet = 90;
        let mut net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();
        let client_dir = scratch("offline-dir-client");
        let first = NetDir::new(net.network.clone(), &client_dir);
        first.bootstrap().await.unwrap();

        net.stop_authorities().await;

        // A new client process: only the cache on disk, no authority answering.
        let dir = Arc::new(NetDir::new(net.network.clone(), &client_dir));
        let consensus = dir.bootstrap().await.expect("the cached consensus is used");
        assert!(matches!(dir.refresh().await, Err(DirError::Unavailable(_))));
        let mgr = CircuitManager::new(dir.clone(), client_dir, CircuitConfig::default());
        let c = mgr.build(None).await.unwrap();
        c.circuit
            .send(
                HopNum::THIRD,
                &shallot_proto::relay_msg::RelayMsg::Data(b"x".to_vec()),
            )
            .await
            .unwrap();
        c.circuit.recv().await.unwrap();

        // Once it expires, a clear error.
        let wait = consensus.valid_until.saturating_sub(unix_now()) + 2;
        assert!(wait < 30, "consensus valid for {wait} s");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let err = mgr
            .build(None)
            .await
            .err()
            .expect("an expired consensus is refused");
        assert!(
            matches!(err, NetError::Dir(DirError::Expired { .. })),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("expired") && text.contains("no authority answered"),
            "{text}"
        );
        net.stop().await;
    });
}
