//! Relay figures (`README.md`, "Performance"), each beside its raw limit from the same run:
//! cells forwarded per CPU-second by one middle relay over real loopback links, beside the
//! crypto bound for the same work; ntor handshakes answered per CPU-second, beside raw ntor;
//! and resident memory per idle circuit with 10,000 circuits open.
//!
//! The relay under test runs alone on its own thread (or in its own process, for memory), so
//! its CPU time is measured apart from the client and the other relays sharing the machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::keys::{IdentityKeypair, LinkKeypair, OnionKeypair};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_crypto::onion::{HopKeys, RelayLayer, CELL_PAYLOAD_LEN};
use shallot_link::{Handshake, LinkKind};
use shallot_net::HopNum;
use shallot_net::{build, ClientChannel, HopSpec};
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, CELL_LEN};
use shallot_proto::dir::Consensus;
use shallot_proto::relay_msg::RelayMsg;
use shallot_relay::{NetView, PeerInfo, RelayConfig, RelayHandle};

use super::cpu::{cpu_time, process_stat, resident_bytes, this_thread_stat};
use super::{BenchError, Figure};

/// A relay running alone on its own thread, so its CPU time can be read.
struct Isolated {
    handle: RelayHandle,
    stat: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Isolated {
    fn start(config: RelayConfig) -> Result<Isolated, BenchError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("relay-under-test".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let started = shallot_relay::start(config).await;
                    let stat = this_thread_stat();
                    match (started, stat) {
                        (Ok(h), Some(stat)) => {
                            let _ = ready_tx.send(Ok((h, stat)));
                            let _ = stop_rx.await;
                        }
                        (Err(e), _) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                        }
                        (_, None) => {
                            let _ = ready_tx.send(Err("no /proc/thread-self".into()));
                        }
                    }
                });
            })
            .map_err(BenchError::other)?;
        let (handle, stat) = ready_rx
            .recv()
            .map_err(BenchError::other)?
            .map_err(BenchError::Other)?;
        Ok(Isolated {
            handle,
            stat,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn cpu(&self) -> Result<Duration, BenchError> {
        cpu_time(&self.stat)
            .ok_or_else(|| BenchError::other(format!("cannot read {}", self.stat.display())))
    }

    fn hop(&self) -> HopSpec {
        HopSpec {
            id: self.handle.id(),
            ntor_key: self.handle.onion_key(),
            nickname: "under-test".into(),
        }
    }

    async fn finish(mut self) {
        self.handle.abort().await;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

fn relay_under_test(dir: &Path, consensus: &Consensus) -> Result<Isolated, BenchError> {
    shallot_relay::keys::init(dir).map_err(BenchError::other)?;
    let listen: SocketAddr = "127.200.0.1:0".parse().map_err(BenchError::other)?;
    let mut config = RelayConfig::new(dir.to_path_buf(), listen);
    config.nickname = "undertest".into();
    crate::testnet::relax(&mut config);
    let relay = Isolated::start(config)?;
    relay
        .handle
        .set_netview(NetView::new(consensus.relays.iter().map(|r| PeerInfo {
            id: r.id,
            address: r.address,
            link_key: r.link_key,
        })));
    Ok(relay)
}

/// The crypto a middle relay does per cell, on one core: one onion layer and its share of the
/// link decryption and encryption of records of `cells_per_record` cells. Returns cells/s.
fn crypto_bound(cells_per_record: usize, for_how_long: Duration) -> Result<f64, BenchError> {
    let mut rng = rand::thread_rng();
    let relay = LinkKeypair::generate(&mut rng);
    let mut a = Handshake::client(relay.public().as_bytes()).map_err(BenchError::other)?;
    let mut b = Handshake::responder(LinkKind::Client, &relay).map_err(BenchError::other)?;
    b.read(&a.write().map_err(BenchError::other)?)
        .map_err(BenchError::other)?;
    a.read(&b.write().map_err(BenchError::other)?)
        .map_err(BenchError::other)?;
    let (mut seal, _, _) = a.finish().map_err(BenchError::other)?;
    let (_, mut open, _) = b.finish().map_err(BenchError::other)?;
    let onion = OnionKeypair::generate(&mut rng);
    let id = IdentityKeypair::generate(&mut rng).relay_id();
    let (_, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
    let (_, seed) = server_handshake(&mut rng, &id, &[&onion], &msg).map_err(BenchError::other)?;
    let mut layer = RelayLayer::new(
        1,
        &HopKeys::from_key_seed(&seed).map_err(BenchError::other)?,
    )
    .map_err(BenchError::other)?;
    let cells = vec![7u8; cells_per_record * CELL_LEN];
    let mut wire = Vec::new();
    let mut plain = Vec::new();
    let mut payload = [0u8; CELL_PAYLOAD_LEN];
    let mut failed = None;
    let rate = super::cpu::per_cpu_second(for_how_long, || {
        let step = (|| {
            for _ in 0..cells_per_record {
                layer.add_layer(&mut payload).map_err(|e| e.to_string())?;
            }
            wire.clear();
            seal.seal(&cells, &mut wire).map_err(|e| e.to_string())?;
            open.open(&wire[2..], &mut plain)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })();
        if let Err(e) = step {
            failed = Some(e);
        }
        cells_per_record as u64
    });
    match failed {
        Some(e) => Err(BenchError::Other(e)),
        None => Ok(rate),
    }
}

/// `count` CREATE cells for `relay`, each with a fresh handshake, on circuit ids unique to link
/// number `link`.
fn create_cells(
    relay: shallot_crypto::keys::RelayId,
    onion_key: &x25519_dalek::PublicKey,
    link: usize,
    count: usize,
    rng: &mut rand::rngs::ThreadRng,
) -> Vec<u8> {
    let mut cells = Vec::with_capacity(count * CELL_LEN);
    for i in 0..count {
        let (_, handshake) = ClientHandshake::start(rng, relay, onion_key);
        let Some(id) = CircId::from_random((link * 100_000 + i + 1) as u32, true) else {
            continue;
        };
        let create = ChanMsg::Create(Create {
            depth: 1,
            handshake,
        });
        cells.extend_from_slice(&Cell::new(id, create).encode());
    }
    cells
}

/// Cells forwarded per CPU-second by a middle relay, beside the crypto bound.
async fn forwarding(consensus: &Consensus, dir: &Path) -> Result<Vec<Figure>, BenchError> {
    let relay = relay_under_test(dir, consensus)?;
    let chan = ClientChannel::connect(
        relay.handle.local_addr(),
        &relay.handle.link_key(),
        Duration::from_secs(5),
    )
    .await
    .map_err(BenchError::other)?;
    // Several circuits through the relay under test, each to a different second hop.
    let mut circuits = Vec::new();
    for next in consensus.relays.iter().take(6) {
        let c = build(
            chan.clone(),
            &[relay.hop(), HopSpec::from(next)],
            Duration::from_secs(5),
        )
        .await
        .map_err(BenchError::other)?;
        circuits.push(Arc::new(c));
    }
    let per_circuit = 20_000u32;
    let before = relay.handle.stats();
    let cpu_before = relay.cpu()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in &circuits {
        let (tx, rx) = (c.clone(), c.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_circuit {
                if tx
                    .send(HopNum::SECOND, &RelayMsg::Data(vec![0x42; 400]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }));
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_circuit {
                if rx.recv().await.is_err() {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(BenchError::other)?;
    }
    let wall = started.elapsed();
    let cpu = relay.cpu()?.saturating_sub(cpu_before);
    if cpu < Duration::from_millis(50) {
        return Err(BenchError::other(format!(
            "relay CPU time too small to measure: {cpu:?}"
        )));
    }
    let after = relay.handle.stats();
    let forwarded = (after.cells_forwarded - before.cells_forwarded) as f64;
    let records = (after.records_written - before.records_written).max(1);
    let cells_per_record = ((after.cells_written - before.cells_written) as f64 / records as f64)
        .round()
        .max(1.0) as usize;
    relay.finish().await;
    let rate = forwarded / cpu.as_secs_f64();
    let bound =
        tokio::task::spawn_blocking(move || crypto_bound(cells_per_record, Duration::from_secs(1)))
            .await
            .map_err(BenchError::other)??;
    Ok(vec![
        Figure::new("middle relay: cells forwarded per CPU-second", rate, "cells/s").note(format!(
            "{forwarded:.0} cells in {:.2} s of the relay's CPU ({:.2} s wall); records averaged {cells_per_record} cells",
            cpu.as_secs_f64(),
            wall.as_secs_f64()
        )),
        Figure::new("crypto bound: one layer + link decrypt + link encrypt, per CPU-second", bound, "cells/s")
            .note(format!("at {cells_per_record} cells per record")),
        Figure::new("forwarding ratio (relay / crypto bound)", rate / bound, "ratio").note("aim ≥ 0.5"),
    ])
}

/// ntor handshakes answered per CPU-second by the relay, beside raw ntor on one core.
async fn handshakes(consensus: &Consensus, dir: &Path) -> Result<Vec<Figure>, BenchError> {
    let relay = relay_under_test(dir, consensus)?;
    let hop = relay.hop();
    let total = 9000usize;
    let links = 3;
    let key = x25519_dalek::PublicKey::from(hop.ntor_key);
    let batches: Vec<_> = (0..links)
        .map(|l| create_cells(hop.id, &key, l, total / links, &mut rand::thread_rng()))
        .collect();
    let mut conns = Vec::new();
    for _ in 0..links {
        let s = tokio::net::TcpStream::connect(relay.handle.local_addr())
            .await
            .map_err(BenchError::other)?;
        conns.push(
            shallot_link::connect_client(s, &relay.handle.link_key(), Duration::from_secs(5))
                .await
                .map_err(BenchError::other)?,
        );
    }
    let cpu_before = relay.cpu()?;
    let mut tasks = Vec::new();
    for ((mut reader, mut writer), cells) in conns.into_iter().zip(batches) {
        tasks.push(tokio::spawn(async move {
            let n = cells.len() / CELL_LEN;
            let w = tokio::spawn(async move {
                for chunk in cells.chunks(100 * CELL_LEN) {
                    if writer.write_cells(chunk).await.is_err() {
                        break;
                    }
                }
                writer
            });
            let mut got = 0;
            while got < n {
                match reader.read_cells().await {
                    Ok(c) => got += c.len() / CELL_LEN,
                    Err(_) => break,
                }
            }
            let _ = w.await;
            got
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.map_err(BenchError::other)?;
    }
    let cpu = relay.cpu()?.saturating_sub(cpu_before);
    if cpu < Duration::from_millis(50) {
        return Err(BenchError::other(format!(
            "relay CPU time too small to measure: {cpu:?}"
        )));
    }
    relay.finish().await;
    let rate = answered as f64 / cpu.as_secs_f64();
    let raw =
        tokio::task::spawn_blocking(|| super::circuits::ntor_per_second(Duration::from_secs(1)))
            .await
            .map_err(BenchError::other)?;
    Ok(vec![
        Figure::new(
            "relay: ntor handshakes answered per CPU-second",
            rate,
            "handshakes/s",
        )
        .note(format!(
            "{answered} CREATEs answered in {:.2} s of the relay's CPU",
            cpu.as_secs_f64()
        )),
        Figure::new(
            "raw ntor server handshakes per CPU-second, beside the relay",
            raw,
            "handshakes/s",
        ),
        Figure::new("handshake ratio (relay / raw)", rate / raw, "ratio").note("aim ≥ 0.8"),
    ])
}

/// Resident memory per idle circuit: a relay process holding 10,000 circuits.
async fn memory(binary: &Path, network_file: &Path, dir: &Path) -> Result<Vec<Figure>, BenchError> {
    let keys = shallot_relay::keys::init(dir).map_err(BenchError::other)?;
    let (onion, _) = shallot_relay::keys::load_onion(
        dir,
        Duration::from_secs(86_400 * 7),
        Duration::from_secs(86_400),
        std::time::SystemTime::now(),
    )
    .map_err(BenchError::other)?;
    let addr = std::net::TcpListener::bind("127.201.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(BenchError::other)?;
    let mut child = tokio::process::Command::new(binary)
        .args(["relay", "run", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string(), "--network"])
        .arg(network_file)
        .args([
            "--nickname",
            "memory",
            "--circuits-per-link",
            "100000",
            "--create-rate",
            "100000",
        ])
        .args(["--create-burst", "100000", "--connections-per-ip", "1000"])
        // It stops when this process is gone and the pipe closes, however this process ends
        // (killed, it drops nothing: `kill_on_drop` alone would leave the relay running).
        .env(crate::cmd::STOP_ON_STDIN_EOF, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(BenchError::other)?;
    let pid = child
        .id()
        .ok_or_else(|| BenchError::other("relay process exited"))?;
    let link_key = keys.link.public().to_bytes();
    let mut conns = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let links = 4;
    while conns.len() < links {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => conns.push(
                shallot_link::connect_client(s, &link_key, Duration::from_secs(5))
                    .await
                    .map_err(BenchError::other)?,
            ),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(BenchError::other(e)),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident_bytes(pid).unwrap_or(0);
    let circuits = 10_000usize;
    let mut held = Vec::new();
    for (l, (mut reader, mut writer)) in conns.into_iter().enumerate() {
        let cells = create_cells(
            keys.id,
            &onion.current.public(),
            l,
            circuits / links,
            &mut rand::thread_rng(),
        );
        for chunk in cells.chunks(100 * CELL_LEN) {
            writer.write_cells(chunk).await.map_err(BenchError::other)?;
        }
        let mut got = 0;
        while got < circuits / links {
            got += reader.read_cells().await.map_err(BenchError::other)?.len() / CELL_LEN;
        }
        held.push((reader, writer));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_bytes(pid).unwrap_or(0);
    let cpu = cpu_time(&process_stat(pid)).unwrap_or_default();
    let _ = child.kill().await;
    drop(held);
    let per = after.saturating_sub(before) as f64 / circuits as f64;
    Ok(vec![Figure::new(
        "relay: resident memory per idle circuit (10,000 open)",
        per,
        "bytes",
    )
    .note(format!(
        "RSS {:.1} MiB before, {:.1} MiB after; aim < 2048 bytes (relay used {:.1} s CPU in all)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        cpu.as_secs_f64()
    ))])
}

/// All relay figures.
pub async fn run(
    consensus: &Consensus,
    binary: &Path,
    network_file: &Path,
    scratch: &Path,
) -> Result<Vec<Figure>, BenchError> {
    let mut out = forwarding(consensus, &scratch.join("forwarding")).await?;
    out.extend(handshakes(consensus, &scratch.join("handshakes")).await?);
    out.extend(memory(binary, network_file, &scratch.join("memory")).await?);
    Ok(out)
}
