//! Circuit building figures (`README.md`, "Performance"): build time p50 and p99 beside the
//! bound computed in the same run (the round trips to hops 1, 2 and 3 plus six ntor
//! handshakes), where each hop's time goes (CREATE, the two EXTENDs, each beside its round
//! trip), the wait for a circuit when prefixes are built ahead, and circuits built per second
//! beside the ntor handshakes one core does per second; and [`trace`], the path of a build
//! step by step for `shallot bench --trace --only circuits`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::keys::{IdentityKeypair, OnionKeypair};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_crypto::onion::{HopKeys, RelayLayer, CELL_PAYLOAD_LEN};
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_net::{Circuit, ClientChannel, HopNum, HopSpec};
use shallot_proto::relay_msg::RelayMsg;

use super::sched::WakeProbe;
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

/// Complete ntor handshakes per CPU-second on one core, measured over about `cpu`: the
/// client's start and finish and the relay's answer, as each hop of a circuit costs.
pub fn ntor_pairs_per_second(cpu: Duration) -> f64 {
    let mut rng = rand::thread_rng();
    let onion = OnionKeypair::generate(&mut rng);
    let id = IdentityKeypair::generate(&mut rng).relay_id();
    super::cpu::per_cpu_second(cpu, || {
        for _ in 0..50 {
            let (client, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
            if let Ok((reply, _)) = server_handshake(&mut rng, &id, &[&onion], &msg) {
                let _ = std::hint::black_box(client.finish(&reply));
            }
        }
        50
    })
}

/// Onion-layer operations (one layer added to a full cell) per CPU-second on one core,
/// measured over about `cpu`; removing a layer costs the same (one AEAD over the cell).
pub fn layers_per_second(cpu: Duration) -> Result<f64, BenchError> {
    let mut rng = rand::thread_rng();
    let onion = OnionKeypair::generate(&mut rng);
    let id = IdentityKeypair::generate(&mut rng).relay_id();
    let (_, msg) = ClientHandshake::start(&mut rng, id, &onion.public());
    let (_, seed) = server_handshake(&mut rng, &id, &[&onion], &msg).map_err(BenchError::other)?;
    let keys = HopKeys::from_key_seed(&seed).map_err(BenchError::other)?;
    let mut layer = RelayLayer::new(1, &keys).map_err(BenchError::other)?;
    let mut payload = [0u8; CELL_PAYLOAD_LEN];
    let mut failed = None;
    let rate = super::cpu::per_cpu_second(cpu, || {
        for _ in 0..100 {
            if let Err(e) = layer.add_layer(&mut payload) {
                failed = Some(e);
            }
        }
        100
    });
    match failed {
        Some(e) => Err(BenchError::other(e)),
        None => Ok(rate),
    }
}

/// Per hop of a 3-hop build: the time to add it (CREATE for the first, EXTEND for the
/// others) and the plain round trip to it on a built circuit, p50 and p99 each.
struct Hops {
    add: [Duration; 3],
    rtt: [Duration; 3],
    add99: [Duration; 3],
    rtt99: [Duration; 3],
}

/// Builds `count` circuits by hand along paths the manager chose, timing each hop, and
/// measures the echo round trip to each depth on one of them.
async fn per_hop(
    mgr: &CircuitManager,
    per_hop: Duration,
    count: usize,
) -> Result<Hops, BenchError> {
    let mut adds: [Vec<Duration>; 3] = Default::default();
    let mut rtts: [Vec<Duration>; 3] = Default::default();
    let depths = [HopNum::FIRST, HopNum::SECOND, HopNum::THIRD];
    for round in 0..count {
        // The manager's own path and guard link, so that this is the build it times.
        let built = mgr.build(None).await.map_err(BenchError::other)?;
        built.circuit.close();
        let first = &built.path[0];
        let chan = ClientChannel::connect(first.address, &first.link_key, per_hop)
            .await
            .map_err(BenchError::other)?;
        let started = Instant::now();
        let circ = Circuit::create(chan.clone(), &HopSpec::from(first), per_hop)
            .await
            .map_err(BenchError::other)?;
        adds[0].push(started.elapsed());
        for (i, hop) in built.path.iter().enumerate().skip(1) {
            let started = Instant::now();
            circ.extend(&HopSpec::from(hop), per_hop)
                .await
                .map_err(BenchError::other)?;
            adds[i].push(started.elapsed());
        }
        if round < 10 {
            for _ in 0..20 {
                for (i, hop) in depths.iter().enumerate() {
                    let started = Instant::now();
                    circ.send(*hop, &RelayMsg::Data(vec![0; 32]))
                        .await
                        .map_err(BenchError::other)?;
                    circ.recv().await.map_err(BenchError::other)?;
                    rtts[i].push(started.elapsed());
                }
            }
        }
        circ.close();
        // The link was opened for this round only.
        chan.close();
    }
    let at = |q: f64, v: &mut [Vec<Duration>; 3]| v.each_mut().map(|v| quantile(v, q));
    Ok(Hops {
        add: at(0.5, &mut adds),
        rtt: at(0.5, &mut rtts),
        add99: at(0.99, &mut adds),
        rtt99: at(0.99, &mut rtts),
    })
}

/// Builds circuits on `net` and reports the figures.
pub async fn run(
    net: &Testnet,
    client_dir: &Path,
    count: usize,
) -> Result<Vec<Figure>, BenchError> {
    let (dir, mgr) = builder(net, client_dir).await?;
    let limit = mgr.config().per_hop_timeout;
    let mut times = Vec::with_capacity(count);
    // The builds in which no relay had to open a link to the next hop (the test network
    // starts with none between relays; busy relays in a real network keep theirs open).
    let mut on_open_links = Vec::with_capacity(count);
    let probe = WakeProbe::start()?;
    for _ in 0..count {
        let links_before = net.links_opened_for_extends();
        let c = mgr.build(None).await.map_err(BenchError::other)?;
        times.push(c.build_time);
        if net.links_opened_for_extends() == links_before {
            on_open_links.push(c.build_time);
        }
        c.circuit.close();
    }
    let wakes = probe.finish().await?;
    let p50 = quantile(&mut times, 0.5);
    let p99 = quantile(&mut times, 0.99);
    let waited = times.len() - on_open_links.len();
    let open_p99 = quantile(&mut on_open_links, 0.99);

    let ntor = tokio::task::spawn_blocking(|| ntor_per_second(Duration::from_secs(1)))
        .await
        .map_err(BenchError::other)?;
    let hops = per_hop(&mgr, limit, (count / 2).max(10)).await?;
    let ntor_time = Duration::from_secs_f64(1.0 / ntor.max(1.0));
    let bound = hops.rtt.iter().sum::<Duration>() + ntor_time * 6;

    let ready = ready_wait(&dir, client_dir, count).await?;

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
    let note = format!(
        "each 3-hop circuit costs 6 ntor computations (3 relay, 3 client) on this machine's 2 cores: bound ≈ {:.0}/s",
        2.0 * ntor / 6.0
    );
    let hop_figure = |i: usize, what: &str| {
        Figure::new(
            format!("circuit build: {what} (hop {}), p50", i + 1),
            ms(hops.add[i]),
            "ms",
        )
        .note(format!(
            "round trip to hop {} {:.3} ms + 2 ntor {:.3} ms = {:.3} ms",
            i + 1,
            ms(hops.rtt[i]),
            ms(ntor_time * 2),
            ms(hops.rtt[i] + ntor_time * 2)
        ))
    };
    // None when every build opened a link: the figure would read 0.
    let open_links = (!on_open_links.is_empty()).then(|| {
        Figure::new(
            "circuit build time p99, builds on open links",
            ms(open_p99),
            "ms",
        )
        .note(format!(
            "the {} builds in which no relay had to open a link to the next hop",
            on_open_links.len()
        ))
    });
    let mut figures = vec![
        Figure::new("circuit build time p50", ms(p50), "ms").note(format!(
            "{:.2} × the bound of this run, {:.3} ms: round trips to hops 1-3 ({:.3} + {:.3} + {:.3} ms) + 6 ntor ({:.3} ms each)",
            p50.as_secs_f64() / bound.as_secs_f64().max(1e-9),
            ms(bound),
            ms(hops.rtt[0]),
            ms(hops.rtt[1]),
            ms(hops.rtt[2]),
            ms(ntor_time)
        )),
        Figure::new("circuit build time p99", ms(p99), "ms").note(format!(
            "aim ≤ 3 ms; in {waited} of the {} builds a relay opened a link to the next hop \
             first (p99 of the others below); p99 of each step in the hand-built circuits: \
             CREATE {:.3}, EXTEND {:.3}, EXTEND {:.3} ms; of the round trips to hops 1-3: \
             {:.3}, {:.3}, {:.3} ms; during the builds, {}",
            times.len(),
            ms(hops.add99[0]),
            ms(hops.add99[1]),
            ms(hops.add99[2]),
            ms(hops.rtt99[0]),
            ms(hops.rtt99[1]),
            ms(hops.rtt99[2]),
            wakes.describe()
        )),
        Figure::new(
            format!("{} wake-up lateness beside the builds, p99", super::compare::MACHINE),
            ms(wakes.late[1]),
            "ms",
        )
        .note("the raw scheduling tail beside the circuit build p99 (see its note)"),
        Figure::new("circuit build bound (3 round trips + 6 ntor)", ms(bound), "ms"),
        hop_figure(0, "CREATE on an open link"),
        hop_figure(1, "EXTEND"),
        hop_figure(2, "EXTEND"),
        Figure::new(
            "circuit for new work with prefixes built ahead, p50",
            ms(ready.0),
            "ms",
        )
        .note("a send waits for one EXTEND to its chosen last hop, not a whole build"),
        Figure::new(
            "circuit for new work with prefixes built ahead, p99",
            ms(ready.1),
            "ms",
        ),
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
    ];
    // Beside the p99 of all builds.
    if let Some(figure) = open_links {
        figures.insert(2, figure);
    }
    Ok(figures)
}

/// The wait for a circuit to a chosen last hop when the manager keeps prefixes built ahead
/// (as the chat does), p50 and p99 over `count` requests, each after the pool is full again.
async fn ready_wait(
    dir: &Arc<NetDir>,
    client_dir: &Path,
    count: usize,
) -> Result<(Duration, Duration), BenchError> {
    let mgr = CircuitManager::new(
        dir.clone(),
        client_dir.to_path_buf(),
        CircuitConfig::default(),
    );
    let consensus = dir.consensus().map_err(BenchError::other)?;
    let relays: Vec<_> = consensus.relays.iter().map(|r| r.id).collect();
    let mut waits = Vec::with_capacity(count);
    for i in 0..count {
        while !mgr.top_up().await.map_err(BenchError::other)? {}
        // Any relay: the manager takes a prefix it fits, or builds afresh if none does.
        let exit = relays[i % relays.len().max(1)];
        let started = Instant::now();
        let c = mgr.get(exit).await.map_err(BenchError::other)?;
        waits.push(started.elapsed());
        c.circuit.close();
    }
    Ok((quantile(&mut waits, 0.5), quantile(&mut waits, 0.99)))
}

/// The client the circuit figures and [`trace`] build with: a directory that keeps its
/// consensus fresh, a manager that builds nothing ahead, and links to the guards opened by 5
/// warm-up builds.
async fn builder(
    net: &Testnet,
    client_dir: &Path,
) -> Result<(Arc<NetDir>, Arc<CircuitManager>), BenchError> {
    let dir = Arc::new(NetDir::new(net.network.clone(), client_dir));
    dir.bootstrap().await.map_err(BenchError::other)?;
    dir.start_refresher();
    let config = CircuitConfig {
        preemptive: 0,
        ..CircuitConfig::default()
    };
    let mgr = CircuitManager::new(dir.clone(), client_dir.to_path_buf(), config);
    for _ in 0..5 {
        mgr.build(None).await.map_err(BenchError::other)?;
    }
    Ok((dir, mgr))
}

/// `shallot bench --trace --only circuits`: builds `count` circuits one at a time with the
/// circuit figures' `builder`, recording each one's steps; returns the build times, the
/// paths of the median and the slowest build, and how many builds waited for a relay to
/// open a link to the next hop ([`shallot_relay::OPENING_A_LINK`]).
pub async fn trace(
    net: &Testnet,
    client_dir: &Path,
    recorder: &super::trace::Recorder,
    names: &std::collections::HashMap<String, String>,
    count: usize,
) -> Result<(super::trace::Traced, usize), BenchError> {
    let (_dir, mgr) = builder(net, client_dir).await?;
    let mut runs = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        recorder.start();
        let built = mgr.build(None).await;
        let steps = recorder.stop();
        let built = built.map_err(BenchError::other)?;
        built.circuit.close();
        runs.push((built.build_time, start, steps));
    }
    let opened = runs
        .iter()
        .filter(|(_, _, steps)| {
            steps
                .iter()
                .any(|s| s.text.starts_with(shallot_relay::OPENING_A_LINK))
        })
        .count();
    Ok((super::trace::Traced::of(runs, names), opened))
}
