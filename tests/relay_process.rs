//! A relay run as its own process (`shallot relay run`): it serves circuits, stops gracefully
//! on SIGTERM (destroying every circuit and exiting 0), and its logs at info level never name a
//! client's address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_net::HopNum;
use shallot_net::{build, ClientChannel, HopSpec, NetError};
use shallot_proto::cell::DestroyReason;
use shallot_proto::relay_msg::RelayMsg;
use tokio::io::AsyncWriteExt;

#[test]
fn a_relay_process_serves_then_stops_gracefully_on_sigterm() {
    rt().block_on(async {
        let mut options = TestnetOptions::new(scratch("relay-process"));
        options.relays = 3;
        options.first_octet = 160;
        let net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();

        let dir = scratch("relay-process-node");
        let keys = shallot_relay::keys::init(&dir).unwrap();
        let (onion, _) = shallot_relay::keys::load_onion(
            &dir,
            Duration::from_secs(86_400),
            Duration::from_secs(86_400),
            std::time::SystemTime::now(),
        )
        .unwrap();
        let addr = std::net::TcpListener::bind("127.170.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = dir.join("relay.log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
            .env("SHALLOT_STOP_ON_STDIN_EOF", "1")
            .stdin(std::process::Stdio::piped())
            .args(["relay", "run", "--data-dir"])
            .arg(&dir)
            .args(["--listen", &addr.to_string(), "--network"])
            .arg(&net.network_path)
            .args(["--nickname", "procrelay", "--mailbox"])
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let link_key = keys.link.public().to_bytes();
        let chan = eventually(
            "the relay process to listen",
            Duration::from_secs(20),
            || async {
                ClientChannel::connect(addr, &link_key, Duration::from_secs(2))
                    .await
                    .ok()
            },
        )
        .await;
        let hop = HopSpec {
            id: keys.id,
            ntor_key: onion.current.public().to_bytes(),
            nickname: "procrelay".into(),
        };
        let circ = build(chan, &[hop], Duration::from_secs(5)).await.unwrap();
        circ.send(
            HopNum::FIRST,
            &RelayMsg::Data(b"are you a process?".to_vec()),
        )
        .await
        .unwrap();
        assert_eq!(
            circ.recv().await.unwrap().1,
            RelayMsg::Data(b"are you a process?".to_vec())
        );

        // A misbehaving client too: it must not be logged with its address at info level.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"\x07garbage").await.unwrap();
        assert!(closed_by_peer(&mut s, Duration::from_secs(5)).await);

        let pid = child.id().unwrap();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        let err = tokio::time::timeout(Duration::from_secs(10), circ.recv())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, NetError::Destroyed(DestroyReason::ShuttingDown)),
            "{err}"
        );
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "relay exited with {status}");

        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("relay listening"),
            "the log is empty or unreadable:\n{text}"
        );
        assert!(
            !text.contains("127.0.0.1"),
            "a client address appears in the log:\n{text}"
        );
        net.stop().await;
    });
}
