//! A relay process run from a configuration file only (`relay run --config relay.toml`) with
//! its metrics endpoint on: the endpoint serves the Prometheus text format over real TCP, its
//! counters rise with real traffic, `shallot relay status` reads it, the heartbeat lands in the
//! log file, and an endpoint others could reach is refused unless asked for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use shallot_net::HopNum;
use shallot_net::{build, ClientChannel, HopSpec};
use shallot_proto::relay_msg::RelayMsg;

fn free_addr(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET /metrics` over a plain TCP connection, as curl would send it.
async fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let values = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    (body.to_string(), values)
}

#[test]
fn a_relay_run_from_its_config_file_serves_live_metrics() {
    rt().block_on(async {
        let dir = scratch("relay-metrics");
        let keys = shallot_relay::keys::init(&dir).unwrap();
        let (onion, _) = shallot_relay::keys::load_onion(
            &dir,
            Duration::from_secs(86_400),
            Duration::from_secs(86_400),
            std::time::SystemTime::now(),
        )
        .unwrap();
        // An authority that is not there (nothing listens on its loopback port): the relay
        // runs without a consensus, which is what its metrics then say.
        let network = dir.join("network.toml");
        std::fs::write(
            &network,
            format!(
                "[[authority]]\nname = \"a\"\naddress = \"{}\"\nkey = \"\
                 3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c\"\n\n\
                 [params]\ntest_network = true\n",
                free_addr("127.202.0.1")
            ),
        )
        .unwrap();
        let listen = free_addr("127.200.0.1");
        let metrics = free_addr("127.201.0.1");
        let log = dir.join("relay.log");
        let config = dir.join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nlisten = \"{listen}\"\nnetwork = {:?}\nnickname = \"metered\"\n\
                 bandwidth = \"2M\"\nmailbox = true\nheartbeat = \"1s\"\n\
                 metrics = \"{metrics}\"\nlog_file = {:?}\n",
                dir.display().to_string(),
                network.display().to_string(),
                log.display().to_string()
            ),
        )
        .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
            .env("SHALLOT_STOP_ON_STDIN_EOF", "1")
            .stdin(std::process::Stdio::piped())
            .args(["relay", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let link_key = keys.link.public().to_bytes();
        let chan = eventually(
            "the relay process to listen",
            Duration::from_secs(30),
            || async {
                ClientChannel::connect(listen, &link_key, Duration::from_secs(2))
                    .await
                    .ok()
            },
        )
        .await;
        let (_, before) = scrape(metrics).await;
        let delivered = |m: &BTreeMap<String, f64>| m["shallot_relay_cells_delivered_total"];
        assert_eq!(before["shallot_relay_consensus_valid_after_seconds"], 0.0);

        let hop = HopSpec {
            id: keys.id,
            ntor_key: onion.current.public().to_bytes(),
            nickname: "metered".into(),
        };
        let circ = build(chan, &[hop], Duration::from_secs(10)).await.unwrap();
        for i in 0..10u8 {
            circ.send(HopNum::FIRST, &RelayMsg::Data(vec![i; 100]))
                .await
                .unwrap();
            assert_eq!(circ.recv().await.unwrap().1, RelayMsg::Data(vec![i; 100]));
        }
        let (text, after) = scrape(metrics).await;
        println!("--- GET http://{metrics}/metrics ---\n{text}---");
        assert!(
            delivered(&after) >= delivered(&before) + 10.0,
            "cells delivered went from {} to {}",
            delivered(&before),
            delivered(&after)
        );
        assert!(
            after["shallot_relay_circuits_created_total"]
                > before["shallot_relay_circuits_created_total"]
        );
        assert_eq!(after["shallot_relay_circuits"], 1.0);
        assert!(after["shallot_relay_links"] >= 1.0);
        assert!(after["shallot_relay_links_opened_total"] >= 1.0);

        // `relay status` reads the same endpoint.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
            .args(["relay", "status", "--metrics", &metrics.to_string()])
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        println!("--- shallot relay status ---\n{status}---");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(status.contains("circuits:   1 open"), "{status}");
        assert!(status.contains("consensus:  none yet"), "{status}");
        // ... and with it stopped, says where it looked.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
            .args([
                "relay",
                "status",
                "--metrics",
                &free_addr("127.201.0.1").to_string(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no metrics at"));

        // The heartbeat and the first-consensus line go to the log file, without colours.
        let beat = eventually(
            "a heartbeat in the log file",
            Duration::from_secs(30),
            || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    text.lines()
                        .find(|l| l.contains("heartbeat:") && l.contains("1 circuits"))
                        .map(str::to_string)
                }
            },
        )
        .await;
        println!("--- heartbeat ---\n{beat}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("no consensus yet; one may be served at"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "colour codes in the log file");
        drop(circ);
        drop(child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "relay exited with {status}");
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn metrics_others_could_reach_are_refused_unless_asked_for() {
    let dir = scratch("relay-metrics-public");
    shallot_relay::keys::init(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shallot"))
        .args(["relay", "run", "--data-dir"])
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--network", "/nonexistent"])
        .args(["--metrics", "0.0.0.0:9100"])
        .env("XDG_CONFIG_HOME", "/nonexistent/shallot-test-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--metrics-public"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
