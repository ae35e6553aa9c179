//! Circuit building figures (`README.md`, "Performance"): build time p50 and p99, circuits
//! built per second, beside the ntor handshakes one core does per second in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::keys::{IdentityKeypair, OnionKeypair};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;

use super::{ms, quantile, BenchError, Figure};
use crate::testnet::Testnet;

/// Raw ntor server handshakes per CPU-second on one core, measured over about `cpu`.
pub fn ntor_per_second(cpu: Duration) -> f64 {
    let mut rng = rand::thread_rng();
    let onion = OnionKeypair::generate(&mut rng);
    let id = IdentityKeypair::generate(&mut rng).relay_id();
    let (_, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
    super::cpu::per_cpu_second(cpu, || {
        for _ in 0..100 {
            let _ = std::hint::black_box(server_handshake(&mut rng, &id, &[&onion], &msg));
        }
        100
    })
}

/// Builds circuits on `net` and reports the figures.
pub async fn run(
    net: &Testnet,
    client_dir: &Path,
    count: usize,
) -> Result<Vec<Figure>, BenchError> {
    let dir = Arc::new(NetDir::new(net.network.clone(), client_dir));
    dir.bootstrap().await.map_err(BenchError::other)?;
    dir.start_refresher();
    let mgr = CircuitManager::new(
        dir,
        client_dir.to_path_buf(),
        CircuitConfig {
            preemptive: 0,
            ..CircuitConfig::default()
        },
    );
    // Warm up links to the guards.
    for _ in 0..5 {
        mgr.build(None).await.map_err(BenchError::other)?;
    }
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let c = mgr.build(None).await.map_err(BenchError::other)?;
        times.push(c.build_time);
        c.circuit.close();
    }
    let p50 = quantile(&mut times, 0.5);
    let p99 = quantile(&mut times, 0.99);

    let concurrency = 8;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let mgr = mgr.clone();
            tokio::spawn(async move {
                for _ in 0..count / concurrency {
                    if let Ok(c) = mgr.build(None).await {
                        c.circuit.close();
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(BenchError::other)?;
    }
    let per_sec = (count / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64();
    let ntor = tokio::task::spawn_blocking(|| ntor_per_second(Duration::from_secs(1)))
        .await
        .map_err(BenchError::other)?;
    let note = format!(
        "each 3-hop circuit costs 6 ntor computations (3 relay, 3 client) on this machine's 2 cores: bound ≈ {:.0}/s",
        2.0 * ntor / 6.0
    );
    Ok(vec![
        Figure::new("circuit build time p50", ms(p50), "ms"),
        Figure::new("circuit build time p99", ms(p99), "ms"),
        Figure::new(
            "circuits built per second (8 at a time)",
            per_sec,
            "circuits/s",
        )
        .note(note),
        Figure::new(
            "raw ntor server handshakes per CPU-second, one core",
            ntor,
            "handshakes/s",
        ),
    ])
}
