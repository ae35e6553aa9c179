//! Client faults over a network of real processes: a relay process killed while the client
//! holds circuits through it, and a relay that joins later.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::dir::Flags;
use shallot_proto::relay_msg::RelayMsg;

struct Net {
    net: tokio::sync::Mutex<Testnet>,
    mgr: Arc<CircuitManager>,
    /// Relays killed by a test, which no other test may rely on.
    dead: Mutex<HashSet<usize>>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("client-faults"));
            options.relays = 6;
            options.processes = true;
            options.first_octet = 80;
            options.binary = Some(env!("CARGO_BIN_EXE_shallot").into());
            let net = Testnet::start(options).await.unwrap();
            net.wait_ready(Duration::from_secs(60)).await.unwrap();
            let client_dir = scratch("client-faults-client");
            let dir = Arc::new(NetDir::new(net.network.clone(), &client_dir));
            dir.bootstrap().await.unwrap();
            dir.start_refresher();
            let mgr = CircuitManager::new(
                dir,
                client_dir,
                CircuitConfig {
                    per_hop_timeout: Duration::from_secs(3),
                    ..CircuitConfig::default()
                },
            );
            Net {
                net: tokio::sync::Mutex::new(net),
                mgr,
                dead: Mutex::new(HashSet::new()),
            }
        })
    })
}

async fn echo(circ: &shallot_net::Circuit) -> bool {
    let Some(hop) = circ.last_hop() else {
        return false;
    };
    if circ
        .send(hop, &RelayMsg::Data(b"ping".to_vec()))
        .await
        .is_err()
    {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(5), circ.recv()).await,
        Ok(Ok((_, RelayMsg::Data(_))))
    )
}

#[test]
fn a_killed_relay_is_noticed_and_avoided() {
    let n = net();
    rt().block_on(async {
        // Hold circuits, find one whose middle relay we can kill (never the guard: its
        // failure is covered by the retry path too, but the test wants held circuits to die).
        let guards: HashSet<_> = n.mgr.guards().into_iter().collect();
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(n.mgr.build(None).await.unwrap());
        }
        let victim = held
            .iter()
            .map(|c| c.path[1].clone())
            .find(|r| !guards.contains(&r.id))
            .unwrap();
        let victim_index: usize = victim
            .nickname
            .trim_start_matches("relay")
            .parse::<usize>()
            .unwrap()
            - 1;
        n.dead.lock().unwrap().insert(victim_index);
        n.net.lock().await.kill_relay(victim_index).await;

        // Every held circuit through it notices.
        for c in held
            .iter()
            .filter(|c| c.path.iter().any(|r| r.id == victim.id))
        {
            eventually(
                "a circuit through the dead relay to close",
                Duration::from_secs(10),
                || async { c.circuit.is_closed().then_some(()) },
            )
            .await;
        }
        // New circuits are built, and none goes through the dead relay.
        for _ in 0..12 {
            let c = n.mgr.build(None).await.unwrap();
            assert!(
                c.path.iter().all(|r| r.id != victim.id),
                "path {} uses the dead relay",
                c.describe()
            );
            assert!(echo(&c.circuit).await);
        }
        // Circuits held through other relays still work.
        for c in held
            .iter()
            .filter(|c| c.path.iter().all(|r| r.id != victim.id))
        {
            assert!(echo(&c.circuit).await, "{}", c.describe());
        }
    });
}

#[test]
fn a_relay_that_joins_is_listed_later_and_used() {
    let n = net();
    rt().block_on(async {
        let joined = n.net.lock().await.add_relay().await.unwrap();
        let name = format!("relay{}", joined + 1);
        let entry = eventually(
            "the new relay in the client's consensus",
            Duration::from_secs(30),
            || async {
                let c = n.mgr.netdir().refresh().await.ok()?;
                c.relays
                    .iter()
                    .find(|r| r.nickname == name && r.flags.contains(Flags::RUNNING))
                    .cloned()
            },
        )
        .await;
        // Ordinary path selection picks it up.
        let mut used = false;
        for _ in 0..300 {
            let c = n.mgr.build(None).await.unwrap();
            if c.path.iter().any(|r| r.id == entry.id) {
                assert!(echo(&c.circuit).await);
                used = true;
                break;
            }
        }
        assert!(used, "the new relay was never chosen in 300 circuits");
    });
}
