//! The relay soak run (`shallot bench --soak`, issue 13): one relay, in a process of its own,
//! under 10,000 circuits each sent most of an unfinished message (a reassembly flood) and 8,000
//! silent links, while a client keeps building circuits through it. Reports the relay's peak
//! resident memory beside its configured memory budget, and circuit build times under attack
//! beside the same without it, measured in the same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_crypto::ntor::ClientHandshake;
use shallot_crypto::onion::{body_len, ClientLayers, HopKeys};
use shallot_link::{LinkReader, LinkWriter};
use shallot_net::{build, ClientChannel, HopSpec};
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, CELL_LEN};
use shallot_proto::dir::Consensus;
use shallot_proto::relay_msg::FRAGMENT_HEADER_LEN;

use super::cpu::resident_bytes;
use super::{ms, quantile, BenchError, Figure};

/// The attack's size, and the budget the relay runs with.
#[derive(Debug, Clone, Copy)]
pub struct SoakSize {
    /// Circuits each holding an unfinished message.
    pub circuits: usize,
    /// Silent links (handshake done, no circuit).
    pub silent_links: usize,
    /// Cells of an unfinished message sent on each circuit (47 is just under 24 KiB).
    pub fragments: usize,
    /// The relay's memory budget, MiB (`--queue-memory`).
    pub budget_mib: usize,
    /// Circuits the client builds in each phase.
    pub builds: usize,
}

impl Default for SoakSize {
    fn default() -> Self {
        SoakSize {
            circuits: 10_000,
            silent_links: 8_000,
            fragments: 47,
            budget_mib: 64,
            builds: 40,
        }
    }
}

/// Links carrying the flood's circuits.
const FLOOD_LINKS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Peak resident memory of process `pid` (`VmHWM`), bytes.
fn peak_resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The client that keeps building circuits through the relay under test: its channel, opened
/// again whenever the relay closes it, and the builds that failed.
struct Builder {
    addr: SocketAddr,
    link_key: [u8; 32],
    chan: Option<Arc<ClientChannel>>,
    failed: usize,
}

impl Builder {
    /// Builds `n` two-hop circuits (the relay under test, then a relay of the test network)
    /// one after another; returns the time of each that succeeded. A failed build (a timeout
    /// under load, a link the relay closed) is counted in `failed`, not fatal: the soak
    /// reports how many failed.
    async fn build_times(
        &mut self,
        first: &HopSpec,
        seconds: &[HopSpec],
        n: usize,
    ) -> Vec<Duration> {
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let path = [first.clone(), seconds[i % seconds.len()].clone()];
            let started = Instant::now();
            match self.build_one(&path).await {
                Ok(()) => times.push(started.elapsed()),
                Err(_) => self.failed += 1,
            }
        }
        times
    }

    async fn build_one(&mut self, path: &[HopSpec]) -> Result<(), BenchError> {
        let chan = match self.chan.take() {
            Some(chan) if !chan.is_closed() => chan,
            _ => ClientChannel::connect(self.addr, &self.link_key, TIMEOUT)
                .await
                .map_err(BenchError::other)?,
        };
        self.chan = Some(chan.clone());
        let circ = build(chan, path, TIMEOUT)
            .await
            .map_err(|e| BenchError::other(format!("building a circuit: {e}")))?;
        circ.close();
        Ok(())
    }
}

/// One flood link: its circuits' client layers, by id.
struct FloodLink {
    reader: LinkReader,
    writer: LinkWriter,
    circuits: Vec<(CircId, ClientLayers)>,
}

/// Opens a link and creates `count` circuits on it, keeping each one's client layer.
async fn flood_link(
    addr: SocketAddr,
    link_key: &[u8; 32],
    relay: RelayId,
    onion_key: &[u8; 32],
    link: usize,
    count: usize,
) -> Result<FloodLink, BenchError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(BenchError::other)?;
    let (mut reader, mut writer) = shallot_link::connect_client(stream, link_key, TIMEOUT)
        .await
        .map_err(BenchError::other)?;
    let key = x25519_dalek::PublicKey::from(*onion_key);
    let mut pending = HashMap::new();
    let mut cells = Vec::with_capacity(count * CELL_LEN);
    for i in 0..count {
        let Some(id) = CircId::from_random((link * 100_000 + i + 1) as u32, true) else {
            continue;
        };
        let (hs, handshake) = ClientHandshake::start(&mut rand::thread_rng(), relay, &key);
        let create = ChanMsg::Create(Create {
            depth: 1,
            handshake,
        });
        cells.extend_from_slice(&Cell::new(id, create).encode());
        pending.insert(id, hs);
    }
    for chunk in cells.chunks(100 * CELL_LEN) {
        writer.write_cells(chunk).await.map_err(BenchError::other)?;
    }
    let mut circuits = Vec::with_capacity(count);
    let expected = pending.len();
    let mut answered = 0;
    while answered < expected {
        let got = reader.read_cells().await.map_err(BenchError::other)?;
        for raw in got.chunks(CELL_LEN) {
            answered += 1;
            let Ok(Some(cell)) = Cell::decode(raw) else {
                continue;
            };
            let ChanMsg::Created(reply) = cell.msg else {
                continue;
            };
            let Some(hs) = pending.remove(&cell.circ_id) else {
                continue;
            };
            let Ok(seed) = hs.finish(&reply) else {
                continue;
            };
            let mut layers = ClientLayers::new();
            let keys = HopKeys::from_key_seed(&seed).map_err(BenchError::other)?;
            layers.push_hop(&keys).map_err(BenchError::other)?;
            circuits.push((cell.circ_id, layers));
        }
    }
    Ok(FloodLink {
        reader,
        writer,
        circuits,
    })
}

/// Sends `fragments` cells of an unfinished message on every circuit of `link`, one cell per
/// circuit in turn; returns the cells sent. The relay's answers (DESTROYs from its
/// out-of-memory handler) are read and dropped meanwhile, so the link never stalls.
async fn flood(mut link: FloodLink, fragments: usize) -> Result<(usize, FloodLink), BenchError> {
    let data = body_len(1) - FRAGMENT_HEADER_LEN;
    let mut body = vec![0x5a; body_len(1)];
    body[0] = 0; // not the final fragment
    body[1..3].copy_from_slice(&(data as u16).to_be_bytes());
    let FloodLink {
        mut reader,
        mut writer,
        mut circuits,
    } = link;
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let drain = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), reader.read_cells()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => break,
            }
        }
        reader
    });
    let mut sent = 0;
    let mut batch = Vec::with_capacity(100 * CELL_LEN);
    for _ in 0..fragments {
        for (id, layers) in circuits.iter_mut() {
            let payload = layers.wrap(1, &body).map_err(BenchError::other)?;
            batch.extend_from_slice(&Cell::new(*id, ChanMsg::Relay(Box::new(payload))).encode());
            sent += 1;
            if batch.len() >= 100 * CELL_LEN {
                writer
                    .write_cells(&batch)
                    .await
                    .map_err(BenchError::other)?;
                batch.clear();
            }
        }
    }
    if !batch.is_empty() {
        writer
            .write_cells(&batch)
            .await
            .map_err(BenchError::other)?;
    }
    done.store(true, Ordering::Relaxed);
    let reader = drain.await.map_err(BenchError::other)?;
    link = FloodLink {
        reader,
        writer,
        circuits,
    };
    Ok((sent, link))
}

/// Runs the soak: starts `binary` as a relay of the test network described by
/// `network_file`, measures circuit builds through it, attacks it while measuring again, and
/// reports.
pub async fn run(
    consensus: &Consensus,
    binary: &Path,
    network_file: &Path,
    dir: &Path,
    size: SoakSize,
) -> Result<Vec<Figure>, BenchError> {
    let keys = shallot_relay::keys::init(dir).map_err(BenchError::other)?;
    let (onion, _) = shallot_relay::keys::load_onion(
        dir,
        Duration::from_secs(86_400 * 7),
        Duration::from_secs(86_400),
        std::time::SystemTime::now(),
    )
    .map_err(BenchError::other)?;
    let onion_key = onion.current.public().to_bytes();
    let addr = std::net::TcpListener::bind("127.202.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(BenchError::other)?;
    let budget = size.budget_mib.to_string();
    let mut child = tokio::process::Command::new(binary)
        .args(["relay", "run", "--data-dir"])
        .arg(dir)
        .args(["--listen", &addr.to_string(), "--network"])
        .arg(network_file)
        .args(["--nickname", "soak", "--circuits-per-link", "100000"])
        .args(["--create-rate", "100000", "--create-burst", "100000"])
        .args(["--connections-per-ip", "100000", "--queue-memory", &budget])
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
    let under_test = HopSpec {
        id: keys.id,
        ntor_key: onion_key,
        nickname: "soak".into(),
    };
    let seconds: Vec<HopSpec> = consensus.relays.iter().map(HopSpec::from).collect();
    if seconds.is_empty() {
        return Err(BenchError::other("the test network lists no relays"));
    }
    // Wait until it listens and has a consensus to extend by.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = Builder {
        addr,
        link_key,
        chan: None,
        failed: 0,
    };
    loop {
        let path = [under_test.clone(), seconds[0].clone()];
        match client.build_one(&path).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    // The process before any load: the baseline the budget comes on top of.
    let rss_baseline = resident_bytes(pid).unwrap_or(0);
    let mut quiet = client.build_times(&under_test, &seconds, size.builds).await;
    let quiet_failed = std::mem::take(&mut client.failed);
    let rss_quiet = resident_bytes(pid).unwrap_or(0);

    // The attack: the flood's links and circuits first, then silent links (as many as the
    // relay admits: it caps links by its memory budget), then the fragments.
    let attack_started = Instant::now();
    let per_link = size.circuits / FLOOD_LINKS;
    let mut links = Vec::new();
    for l in 0..FLOOD_LINKS {
        links.push(flood_link(addr, &link_key, keys.id, &onion_key, l, per_link).await?);
    }
    let circuits: usize = links.iter().map(|l| l.circuits.len()).sum();
    let rss_circuits = resident_bytes(pid).unwrap_or(0);
    let mut silent = Vec::with_capacity(size.silent_links);
    for _ in 0..size.silent_links {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            break;
        };
        match shallot_link::connect_client(stream, &link_key, TIMEOUT).await {
            Ok(link) => silent.push(link),
            Err(_) => break,
        }
    }
    let rss_silent = resident_bytes(pid).unwrap_or(0);
    // The client keeps building while the flood runs.
    let flooding = tokio::spawn({
        let fragments = size.fragments;
        async move {
            let mut tasks = Vec::new();
            for link in links {
                tasks.push(tokio::spawn(flood(link, fragments)));
            }
            let mut sent = 0;
            let mut kept = Vec::new();
            for t in tasks {
                let (n, link) = t.await.map_err(BenchError::other)??;
                sent += n;
                kept.push(link);
            }
            Ok::<_, BenchError>((sent, kept))
        }
    });
    let mut attacked = client.build_times(&under_test, &seconds, size.builds).await;
    let (flood_cells, kept) = flooding.await.map_err(BenchError::other)??;
    // And once the flood has been sent, with every attacking link still open.
    attacked.extend(client.build_times(&under_test, &seconds, size.builds).await);
    let attacked_failed = client.failed;
    let attack_secs = attack_started.elapsed().as_secs_f64();
    let peak = peak_resident_bytes(pid).unwrap_or(0);
    let rss_end = resident_bytes(pid).unwrap_or(0);
    // Links the relay refused after their handshake read as closed.
    let mut silent_open = 0;
    for (reader, _) in silent.iter_mut() {
        if tokio::time::timeout(Duration::ZERO, reader.read_cells())
            .await
            .is_err()
        {
            silent_open += 1;
        }
    }
    let _ = child.kill().await;
    drop(kept);
    drop(silent);
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let budget_bytes = (size.budget_mib * 1_048_576) as f64;
    let offered = (flood_cells * body_len(1)) as f64;
    Ok(vec![
        Figure::new("soak: relay peak resident memory", mib(peak), "MiB").note(format!(
            "beside its memory budget of {} MiB (held cells, links, circuits) on top of a \
             baseline of {:.1} MiB (resident before any load); resident {:.1} MiB before the \
             attack, {:.1} MiB with the flood's circuits created, {:.1} MiB with the silent \
             links open too, {:.1} MiB at the end",
            size.budget_mib,
            mib(rss_baseline),
            mib(rss_quiet),
            mib(rss_circuits),
            mib(rss_silent),
            mib(rss_end)
        )),
        Figure::new(
            "soak: unfinished-message bytes offered",
            offered / 1_048_576.0,
            "MiB",
        )
        .note(format!(
            "{flood_cells} fragments on {circuits} circuits ({} each), {:.1}× the budget; \
                 {silent_open} of {} silent links admitted; attack lasted {attack_secs:.1} s",
            size.fragments,
            offered / budget_bytes,
            size.silent_links
        )),
        Figure::new(
            "soak: 2-hop circuit build, median, no attack",
            ms(quantile(&mut quiet, 0.5)),
            "ms",
        )
        .note(format!(
            "p90 {:.1} ms over {} builds ({quiet_failed} failed)",
            ms(quantile(&mut quiet, 0.9)),
            quiet.len()
        )),
        Figure::new(
            "soak: 2-hop circuit build, median, under attack",
            ms(quantile(&mut attacked, 0.5)),
            "ms",
        )
        .note(format!(
            "p90 {:.1} ms over {} builds, during and after the flood ({attacked_failed} failed)",
            ms(quantile(&mut attacked, 0.9)),
            attacked.len()
        )),
    ])
}
