//! The many-node run (`shallot bench --many`, issue 16 item 5): a test network of real relay
//! and authority processes, each on its own loopback address, and many lightweight clients in
//! this process (one [`Messenger`] each, with its own store and identity), paired as
//! contacts and exchanging messages at a steady rate for a set time. It reports latency from
//! send to arrival, the share delivered, relay CPU time per message, relay and authority
//! memory, and the directory bytes each client fetched per hour.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerConfig, MessengerEvent};
use shallot_client::store::Store;
use shallot_directory::NetworkFile;
use shallot_rt::{lock, AbortOnDrop};
use tokio::sync::{mpsc, Semaphore};

use super::cpu::{cpu_time, process_stat, resident_bytes};
use super::{ms, quantile, BenchError, Figure};
use crate::testnet::{Testnet, TestnetOptions};

/// The size of a many-node run.
#[derive(Debug, Clone)]
pub struct ManySize {
    /// Relays, each a process of its own.
    pub relays: usize,
    /// Clients, all in this process (rounded down to an even number: they come in pairs).
    pub clients: usize,
    /// How long clients keep sending.
    pub duration: Duration,
    /// Time between two messages of one client.
    pub interval: Duration,
    /// The test network's voting interval, seconds (clients fetch each new consensus).
    pub voting_interval_secs: u64,
    /// The `shallot` binary the nodes run (default: this program).
    pub binary: Option<PathBuf>,
}

/// Marks the texts this run sends.
const TAG: &str = "many";

/// Clients setting up (consensus fetch, bundle publication) at once.
const SETUP_AT_ONCE: usize = 32;

/// What the run measured besides its figures: each delivered message's send time (seconds
/// since sending began) and latency, for the plot.
#[derive(Debug, Default)]
pub struct Samples {
    /// (send time, latency) of each message delivered in the measured phase.
    pub latencies: Vec<(f64, Duration)>,
}

/// What the clients' event collectors saw.
#[derive(Default)]
struct Arrivals {
    /// (sender, sequence) of each message seen, to count duplicates.
    seen: HashSet<(usize, u64)>,
    /// (send time since `start`, latency) of each measured message.
    latencies: Vec<(f64, Duration)>,
    /// Warm-up messages seen.
    warm: usize,
    /// Messages seen a second time.
    duplicates: usize,
}

/// One client: its messenger and what keeps it subscribed.
struct Client {
    messenger: Arc<Messenger>,
    _receiver: AbortOnDrop<()>,
    _collector: AbortOnDrop<()>,
}

/// The text of message `seq` of client `sender`, sent `micros` after `start`.
fn text(sender: usize, seq: u64, micros: u128) -> String {
    format!("{TAG} {sender} {seq} {micros}")
}

/// Reads back what [`text`] wrote.
fn parse(text: &str) -> Option<(usize, u64, u64)> {
    let mut words = text.strip_prefix(TAG)?.split_whitespace();
    let sender = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let micros = words.next()?.parse().ok()?;
    words.next().is_none().then_some((sender, seq, micros))
}

/// Records each incoming message of one client until its events end.
async fn collect(
    mut events: mpsc::UnboundedReceiver<MessengerEvent>,
    arrivals: Arc<Mutex<Arrivals>>,
    start: Instant,
) {
    while let Some(event) = events.recv().await {
        let MessengerEvent::Message(m) = event else {
            continue;
        };
        if m.outgoing {
            continue;
        }
        let now = Instant::now();
        let mut a = lock(&arrivals);
        if m.text.starts_with("warm") {
            a.warm += 1;
            continue;
        }
        let Some((sender, seq, micros)) = parse(&m.text) else {
            continue;
        };
        if !a.seen.insert((sender, seq)) {
            a.duplicates += 1;
            continue;
        }
        let sent = start + Duration::from_micros(micros);
        a.latencies.push((
            sent.duration_since(start).as_secs_f64(),
            now.saturating_duration_since(sent),
        ));
    }
}

/// Makes client `i`: a new identity in its own directory, connected to the network.
async fn client(dir: &Path, network: NetworkFile) -> Result<Arc<Messenger>, BenchError> {
    let store = Store::open(dir).map_err(BenchError::other)?;
    store.create_identity(None, 0).map_err(BenchError::other)?;
    drop(store);
    let config = MessengerConfig {
        // The run lasts minutes inside one epoch: the bundle for the current one is enough.
        bundle_epochs_ahead: 0,
        ..MessengerConfig::default()
    };
    let m = Messenger::open(dir, network, config).map_err(BenchError::other)?;
    // A consensus may drop a relay the network listed a moment ago (a reachability test
    // missed under load): try again with the next one rather than lose the client.
    let mut last = None;
    for attempt in 0..3u64 {
        match m.connect().await {
            Ok(()) => return Ok(m),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1 + attempt * 2)).await;
    }
    Err(BenchError::Other(format!(
        "client {}: {}",
        dir.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// CPU time used so far by the processes `pids`, seconds.
fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| cpu_time(&process_stat(*p)))
        .map(|d| d.as_secs_f64())
        .sum()
}

/// Resident memory of each of `pids`, MiB.
fn memory_of(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .filter_map(|p| resident_bytes(*p))
        .map(|b| b as f64 / (1024.0 * 1024.0))
        .collect()
}

/// Average and largest of `values`.
fn avg_max(values: &[f64]) -> (f64, f64) {
    let max = values.iter().copied().fold(0.0, f64::max);
    let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
    (avg, max)
}

/// The reasons sends failed, most frequent first, for a figure's note: empty when none did.
fn why_failed(reasons: &BTreeMap<String, u64>) -> String {
    let mut by_count: Vec<_> = reasons.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    by_count
        .iter()
        .map(|(why, n)| format!("; {n} × {why}"))
        .collect()
}

/// What all clients' consensus fetches have cost so far, from authorities and from guards
/// (directory caches) together.
#[derive(Debug, Clone, Copy, Default)]
struct DirCounts {
    /// Answer bytes received, compressed, from both sources.
    bytes: u64,
    /// Consensuses taken from an authority or a guard.
    fetches: u64,
    /// Of the answers received, those given as a diff from the consensus held.
    diffs: u64,
    /// Consensuses taken from a guard.
    from_guards: u64,
}

impl DirCounts {
    /// The counts of all `clients` now.
    fn of(clients: &[Client]) -> DirCounts {
        let mut all = DirCounts::default();
        for c in clients {
            let dir = c.messenger.netdir();
            let (auth, cache) = (dir.fetch_stats(), dir.cache_stats());
            let guards = cache.from_guards.load(Ordering::Relaxed);
            all.bytes += auth.bytes.load(Ordering::Relaxed) + cache.bytes.load(Ordering::Relaxed);
            all.fetches +=
                auth.full.load(Ordering::Relaxed) + auth.diffs.load(Ordering::Relaxed) + guards;
            all.diffs += auth.diffs.load(Ordering::Relaxed) + cache.diffs.load(Ordering::Relaxed);
            all.from_guards += guards;
        }
        all
    }

    /// What was fetched between `before` and `self`.
    fn since(self, before: DirCounts) -> DirCounts {
        DirCounts {
            bytes: self.bytes - before.bytes,
            fetches: self.fetches - before.fetches,
            diffs: self.diffs - before.diffs,
            from_guards: self.from_guards - before.from_guards,
        }
    }
}

/// Runs the whole thing in `scratch` and returns its figures.
pub async fn run(size: &ManySize, scratch: &Path) -> Result<(Vec<Figure>, Samples), BenchError> {
    if size.relays < 4 || size.clients < 2 {
        return Err(BenchError::Other(
            "a many-node run needs at least 4 relays and 2 clients".into(),
        ));
    }
    let mut options = TestnetOptions::new(scratch.join("net"));
    options.relays = size.relays;
    options.processes = true;
    options.binary = size.binary.clone();
    options.voting_interval_secs = size.voting_interval_secs;
    // Each relay measured once an hour, as in production (`super::PRODUCTION_SCAN_INTERVAL_SECS`).
    options.scan_interval_secs = Some(super::PRODUCTION_SCAN_INTERVAL_SECS);
    // Every node its own /16, as low as needed for this many.
    options.first_octet = u8::try_from(250usize.saturating_sub(size.relays + 3).clamp(1, 100))
        .map_err(BenchError::other)?;
    let started = Instant::now();
    let net = Testnet::start(options).await?;
    let result = measure(size, scratch, &net, started).await;
    net.stop().await;
    result
}

async fn measure(
    size: &ManySize,
    scratch: &Path,
    net: &Testnet,
    started: Instant,
) -> Result<(Vec<Figure>, Samples), BenchError> {
    let wait = Duration::from_secs(60 + size.relays as u64);
    net.wait_ready(wait).await?;
    let ready = started.elapsed();
    let relay_pids = net.relay_pids();
    let authority_pids = net.authority_pids();
    eprintln!(
        "network ready in {:.1} s ({} relay processes); starting {} clients",
        ready.as_secs_f64(),
        relay_pids.len(),
        size.clients
    );

    // The clients, set up a few at a time.
    let n = size.clients / 2 * 2;
    let setup_started = Instant::now();
    let gate = Arc::new(Semaphore::new(SETUP_AT_ONCE));
    let mut setups = Vec::with_capacity(n);
    for i in 0..n {
        let dir = scratch.join("clients").join(format!("c{i}"));
        let (gate, network) = (gate.clone(), net.network.clone());
        setups.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.map_err(BenchError::other)?;
            client(&dir, network).await
        }));
    }
    let mut messengers = Vec::with_capacity(n);
    let mut setup_failures = Vec::new();
    for s in setups {
        match s.await.map_err(BenchError::other)? {
            Ok(m) => messengers.push(m),
            Err(e) => setup_failures.push(e.to_string()),
        }
    }
    if let Some(e) = setup_failures.first() {
        eprintln!(
            "{} clients could not connect; the first: {e}",
            setup_failures.len()
        );
    }
    // The rest run, in pairs; a run where most could not connect says nothing.
    if messengers.len() < n / 2 {
        return Err(BenchError::Other(format!(
            "only {} of {n} clients connected",
            messengers.len()
        )));
    }
    let pairs = messengers.len() / 2;
    let n = pairs * 2;
    messengers.truncate(n);
    let setup = setup_started.elapsed();
    eprintln!("{n} clients connected in {:.1} s", setup.as_secs_f64());

    // Pairs: 2k and 2k+1 are each other's "peer".
    for k in 0..pairs {
        let (a, b) = (&messengers[2 * k], &messengers[2 * k + 1]);
        a.store()
            .add_contact("peer", &b.address(), 0)
            .map_err(BenchError::other)?;
        b.store()
            .add_contact("peer", &a.address(), 0)
            .map_err(BenchError::other)?;
    }
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let start = Instant::now();
    // The same moment in Unix time, to place each send in the voting schedule.
    let start_unix = shallot_directory::schedule::now_ms() as f64 / 1000.0;
    let clients: Vec<Client> = messengers
        .into_iter()
        .map(|m| {
            let (tx, events) = mpsc::unbounded_channel();
            m.set_events(tx);
            let collector = tokio::spawn(collect(events, arrivals.clone(), start));
            Client {
                _receiver: m.spawn_receiver(),
                _collector: AbortOnDrop::new(collector),
                messenger: m,
            }
        })
        .collect();
    let bootstrap_bytes = DirCounts::of(&clients).bytes as f64 / n as f64;

    // Subscribed: every client holds circuits to its mailbox replicas (or the deadline).
    let deadline = Instant::now() + Duration::from_secs(60) + setup;
    loop {
        let mut subscribed = 0;
        for c in &clients {
            if c.messenger.open_links().await >= 3 {
                subscribed += 1;
            }
        }
        if subscribed == n || Instant::now() > deadline {
            eprintln!("{subscribed} of {n} clients subscribed to 3 replicas");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Warm-up: one message each way per pair (a session start, then its answer), so that the
    // measured phase sees conversations, not first contacts.
    let warm_deadline = Instant::now() + Duration::from_secs(60) + setup;
    for round in 0..2 {
        let senders: Vec<_> = clients
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == round)
            .map(|(_, c)| {
                let m = c.messenger.clone();
                tokio::spawn(async move { m.send("peer", "warm", OnFailure::Retry).await })
            })
            .collect();
        for s in senders {
            let _ = s.await;
        }
        while lock(&arrivals).warm < pairs * (round + 1) && Instant::now() < warm_deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let warm = lock(&arrivals).warm;
    // At rest means after the authorities' first measurement of every relay, which a running
    // network has long behind it; their votes show it, up to a voting interval later.
    let scan_wait = Instant::now();
    let measured = net
        .wait_measured(Duration::from_secs(3 * size.voting_interval_secs + 60))
        .await;
    let scan_wait = scan_wait.elapsed();
    eprintln!(
        "warm-up: {warm} of {n} messages arrived; the authorities' votes measured every relay \
         {} {:.1} s; measuring at rest for 10 s",
        if measured { "after" } else { "NOT, after" },
        scan_wait.as_secs_f64()
    );

    // The relays' CPU at rest (consensus fetches, descriptors, mailbox sync), for comparison.
    let rest_window = Duration::from_secs(10);
    let (rest_cpu0, rest_t0) = (cpu_of(&relay_pids), Instant::now());
    tokio::time::sleep(rest_window).await;
    let rest_rate = (cpu_of(&relay_pids) - rest_cpu0) / rest_t0.elapsed().as_secs_f64();

    // The measured phase: every client sends to its peer every `interval`, from a random
    // offset, for `duration`; each send runs on its own, so a slow one delays no other.
    eprintln!(
        "sending for {} s, one message per client every {} s",
        size.duration.as_secs(),
        size.interval.as_secs_f64()
    );
    let cpu0 = cpu_of(&relay_pids);
    let auth_cpu0 = cpu_of(&authority_pids);
    let dir0 = DirCounts::of(&clients);
    let own_cpu0 = cpu_of(&[std::process::id()]);
    let phase_start = Instant::now();
    let send_from = phase_start.duration_since(start);
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let reasons: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let until = phase_start + size.duration;
    let senders: Vec<AbortOnDrop<()>> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let m = c.messenger.clone();
            let (sent, failed, interval) = (sent.clone(), failed.clone(), size.interval);
            let reasons = reasons.clone();
            let offset = interval.mul_f64(rand::random::<f64>());
            AbortOnDrop::new(tokio::spawn(async move {
                let mut next = phase_start + offset;
                let mut seq = 0u64;
                let mut sends = Vec::new();
                while next < until {
                    tokio::time::sleep_until(next.into()).await;
                    let body = text(i, seq, Instant::now().duration_since(start).as_micros());
                    let (m, failed, reasons) = (m.clone(), failed.clone(), reasons.clone());
                    sent.fetch_add(1, Ordering::Relaxed);
                    sends.push(tokio::spawn(async move {
                        if let Err(e) = m.send("peer", &body, OnFailure::Fail).await {
                            failed.fetch_add(1, Ordering::Relaxed);
                            *lock(&reasons).entry(e.to_string()).or_default() += 1;
                        }
                    }));
                    seq += 1;
                    next += interval;
                }
                for s in sends {
                    let _ = s.await;
                }
            }))
        })
        .collect();
    tokio::time::sleep_until(until.into()).await;
    // Let what is in flight arrive: until every message sent has, or the grace time ends.
    let grace_end = Instant::now() + Duration::from_secs(30) + size.interval;
    while Instant::now() < grace_end {
        let have = lock(&arrivals).latencies.len() as u64;
        if have + failed.load(Ordering::Relaxed) >= sent.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = phase_start.elapsed().as_secs_f64();
    let relay_cpu = cpu_of(&relay_pids) - cpu0;
    let auth_cpu = cpu_of(&authority_pids) - auth_cpu0;
    let own_cpu = cpu_of(&[std::process::id()]) - own_cpu0;
    let dir = DirCounts::of(&clients).since(dir0);
    let relay_mem = memory_of(&relay_pids);
    let auth_mem = memory_of(&authority_pids);
    let own_mem = resident_bytes(std::process::id()).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    drop(senders);

    let sent = sent.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let (mut lat, duplicates) = {
        let a = lock(&arrivals);
        (a.latencies.clone(), a.duplicates)
    };
    // Only messages sent in the measured phase (the texts carry their send time).
    lat.retain(|(t, _)| *t >= send_from.as_secs_f64());
    let in_period: Vec<(f64, Duration)> = lat.iter().map(|(t, l)| (start_unix + t, *l)).collect();
    let tenths = p99_by_tenth(&in_period, size.voting_interval_secs);
    let (worst, worst_p99) = tenths
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, p99))| *p99)
        .map(|(i, (_, p99))| (i, *p99))
        .unwrap_or_default();
    let samples: Vec<(f64, Duration)> = lat
        .iter()
        .map(|(t, l)| (t - send_from.as_secs_f64(), *l))
        .collect();
    let delivered = samples.len() as u64;
    let mut values: Vec<Duration> = samples.iter().map(|(_, l)| *l).collect();
    let (p50, p90, p99) = (
        quantile(&mut values, 0.5),
        quantile(&mut values, 0.9),
        quantile(&mut values, 0.99),
    );
    let max = values.last().copied().unwrap_or_default();
    let per_msg = |cpu: f64| cpu * 1000.0 / delivered.max(1) as f64;
    let relay_busy = relay_cpu - rest_rate * elapsed;
    let (relay_avg, relay_max) = avg_max(&relay_mem);
    let (auth_avg, auth_max) = avg_max(&auth_mem);
    let hours = elapsed / 3600.0;
    let per_client_hour = dir.bytes as f64 / n as f64 / hours;
    let per_fetch = dir.bytes as f64 / dir.fetches.max(1) as f64;
    let shape = format!(
        "{} relays, {} authorities, {n} clients, {} s, a message per client every {} s; each \
         relay measured once an hour; the phases began once every vote measured every relay \
         ({}, waited {:.1} s after the warm-up)",
        relay_pids.len(),
        authority_pids.len(),
        size.duration.as_secs(),
        size.interval.as_secs_f64(),
        if measured {
            "so"
        } else {
            "not so within the limit"
        },
        scan_wait.as_secs_f64()
    );
    let figures = vec![
        Figure::new("many-node run: network ready", ready.as_secs_f64(), "s").note(shape),
        Figure::new("many-node run: clients connected", setup.as_secs_f64(), "s").note(format!(
            "{n} clients, {SETUP_AT_ONCE} at a time: consensus, circuits, bundle published; \
             {} could not connect",
            setup_failures.len()
        )),
        Figure::new("many-node run: messages sent", sent as f64, "messages").note(format!(
            "{failed} sends failed{}",
            why_failed(&lock(&reasons))
        )),
        Figure::new(
            "many-node run: messages delivered",
            delivered as f64,
            "messages",
        )
        .note(format!(
            "{:.2} % of those sent",
            100.0 * delivered as f64 / sent.max(1) as f64
        )),
        Figure::new(
            "many-node run: messages that arrived twice",
            duplicates as f64,
            "messages",
        )
        .note("each message must arrive exactly once"),
        Figure::new("many-node run: latency send to arrival, p50", ms(p50), "ms"),
        Figure::new("many-node run: latency send to arrival, p90", ms(p90), "ms"),
        Figure::new("many-node run: latency send to arrival, p99", ms(p99), "ms")
            .note(format!("max {:.1} ms", ms(max))),
        Figure::new(
            "many-node run: latency p99 in the worst tenth of the voting period",
            ms(worst_p99),
            "ms",
        )
        .note(period_note(&tenths, worst, size.voting_interval_secs)),
        Figure::new(
            "many-node run: relay CPU per message delivered (all relays)",
            per_msg(relay_cpu),
            "ms",
        )
        .note(format!(
            "{relay_cpu:.1} CPU-s over {elapsed:.0} s; its end-to-end acknowledgement included"
        )),
        Figure::new(
            "many-node run: the same, less the relays' CPU at rest",
            per_msg(relay_busy),
            "ms",
        )
        .note(format!(
            "at rest the relays used {rest_rate:.3} CPU-s/s (consensus, descriptors, sync)"
        )),
        Figure::new(
            "many-node run: relay resident memory, average",
            relay_avg,
            "MiB",
        ),
        Figure::new(
            "many-node run: relay resident memory, largest",
            relay_max,
            "MiB",
        ),
        Figure::new(
            "many-node run: authority resident memory, average",
            auth_avg,
            "MiB",
        )
        .note(format!(
            "largest {auth_max:.1} MiB; authorities used {auth_cpu:.1} CPU-s in the phase"
        )),
        Figure::new(
            "many-node run: client process resident memory per client",
            own_mem / n as f64,
            "MiB",
        )
        .note(format!(
            "{own_mem:.0} MiB for {n} clients; the process used {own_cpu:.1} CPU-s in the phase"
        )),
        Figure::new(
            "many-node run: directory bytes fetched per client at bootstrap",
            bootstrap_bytes,
            "bytes",
        )
        .note("the first consensus, whole and compressed"),
        Figure::new(
            "many-node run: directory bytes fetched per client per hour",
            per_client_hour,
            "bytes",
        )
        .note(format!(
            "at this run's voting interval of {} s: {} consensuses fetched, {} of them from \
             guards (directory caches), {} answers as diffs; {per_fetch:.0} bytes each, \
             unused answers included; at the production interval (3600 s) about one fetch \
             per hour",
            size.voting_interval_secs, dir.fetches, dir.from_guards, dir.diffs
        )),
    ];
    Ok((figures, Samples { latencies: samples }))
}

/// The p99 latency of the messages sent in each tenth of the voting period, and how many
/// were: `sent` holds each message's send time (Unix seconds) and latency. Periods begin at
/// multiples of the interval in Unix time (`docs/spec.md` §5.6).
fn p99_by_tenth(sent: &[(f64, Duration)], interval_secs: u64) -> Vec<(usize, Duration)> {
    let interval = interval_secs.max(1) as f64;
    let mut tenths: Vec<Vec<Duration>> = vec![Vec::new(); 10];
    for (unix, latency) in sent {
        let tenth = (unix.rem_euclid(interval) / interval * 10.0) as usize;
        tenths[tenth.min(9)].push(*latency);
    }
    tenths
        .into_iter()
        .map(|mut l| (l.len(), quantile(&mut l, 0.99)))
        .collect()
}

/// The note of the worst tenth's figure: every tenth's p99, and what the schedule does when.
fn period_note(tenths: &[(usize, Duration)], worst: usize, interval_secs: u64) -> String {
    let tenth = interval_secs as f64 / 10.0;
    let each: Vec<String> = tenths
        .iter()
        .enumerate()
        .map(|(i, (n, p99))| {
            format!(
                "{:.0}-{:.0} s {:.1} ms ({n})",
                i as f64 * tenth,
                (i + 1) as f64 * tenth,
                ms(*p99)
            )
        })
        .collect();
    // Where in the period before it the authorities vote for and compute a period's consensus.
    let interval = interval_secs.max(1);
    let schedule = shallot_directory::schedule::Schedule::new(interval);
    let period = interval * 2;
    let phase = |at_ms: u64| at_ms.saturating_sub(interval * 1000) as f64 / 1000.0;
    let relays_from = shallot_net::netdir::CACHE_DELAY_MS;
    let relays_to = relays_from + shallot_net::netdir::cache_spread_ms(interval);
    let lead = shallot_net::netdir::guard_lead_secs(interval);
    let spread = shallot_net::netdir::refresh_spread_secs(interval);
    format!(
        "the {:.0}-{:.0} s after a consensus's valid-after; p99 (messages sent) by the second of \
         the {interval_secs}-s period they were sent in: {}. The schedule (docs/spec.md §5.6): \
         votes at {:.0} s, the consensus computed at {:.0} s, relays fetch it {:.2} to \
         {:.2} s after 0 s and the clients {lead} to {} s after",
        worst as f64 * tenth,
        (worst + 1) as f64 * tenth,
        each.join(", "),
        phase(schedule.vote_at(period)),
        phase(schedule.compute_at(period)),
        relays_from as f64 / 1000.0,
        relays_to as f64 / 1000.0,
        lead + spread
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_fall_in_the_tenth_of_the_period_they_were_made_in() {
        let ms = Duration::from_millis;
        // Period 60 s: 120.5 and 179.9 are in its first and last tenths, 6.0 in its second.
        let sent = [
            (120.5, ms(10)),
            (121.0, ms(30)),
            (179.9, ms(500)),
            (6.0, ms(7)),
        ];
        let tenths = p99_by_tenth(&sent, 60);
        assert_eq!(tenths.len(), 10);
        assert_eq!(tenths[0], (2, ms(30)));
        assert_eq!(tenths[1], (1, ms(7)));
        assert_eq!(tenths[9], (1, ms(500)));
        assert_eq!(tenths.iter().map(|(n, _)| n).sum::<usize>(), 4);
        assert_eq!(tenths[5], (0, Duration::ZERO));
        let note = period_note(&tenths, 9, 60);
        assert!(note.starts_with("the 54-60 s after"), "{note}");
        assert!(note.contains("0-6 s 30.0 ms (2)"), "{note}");
        assert!(
            note.contains("votes at 15 s, the consensus computed at 45 s"),
            "{note}"
        );
        // Relays from 0.2 s to 0.2 + 60/16 s; clients from ⌈(0.2 + 3.75 + 3) s⌉ on, over
        // 60/8 = 7 whole seconds (and a fraction: their clocks read whole seconds).
        assert!(
            note.contains("relays fetch it 0.20 to 3.95 s after 0 s and the clients 7 to 14 s"),
            "{note}"
        );
    }

    #[test]
    fn texts_read_back() {
        assert_eq!(parse(&text(7, 3, 123_456)), Some((7, 3, 123_456)));
        assert_eq!(parse("warm"), None);
        assert_eq!(parse("many 1 2"), None);
        assert_eq!(parse("many 1 2 3 4"), None);
    }
}
