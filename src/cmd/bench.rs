//! `shallot bench [--json] [--compare FILE] [--soak] [--only GROUP] [--trace] [--many ...]`:
//! starts its own test network and prints performance figures, each beside the raw limit
//! measured in the same run (or, with `--soak`, the relay soak run's figures; with `--trace`,
//! one message's path step by step, or one circuit build's with `--only circuits`; with
//! `--many`, the many-node run's); `--compare` sets them
//! beside a run saved with `--json`.

use std::time::Duration;

use clap::Args;

use crate::bench::{self, BenchError, Figure};
use crate::testnet::{Testnet, TestnetOptions};

/// Output options.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Circuits to build for the circuit figures (or to trace, with `--trace --only circuits`).
    #[arg(long, default_value_t = 200)]
    pub circuits: usize,
    /// Run only the relay soak instead: one relay under 10,000 circuits each holding an
    /// unfinished message and 8,000 silent links while a client keeps building circuits.
    #[arg(long)]
    pub soak: bool,
    /// Print each figure beside the same figure of a run saved with `--json`, with the ratio
    /// and whether it got better or worse.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub compare: Option<std::path::PathBuf>,
    /// Run only one group of figures (the test network's readiness is always reported).
    #[arg(long, value_parser = ["circuits", "messaging", "mailbox", "relay"])]
    pub only: Option<String>,
    /// Print only the path of a message, step by step with the time of each: the median and
    /// the slowest of `--messages`, each typed first as in the chat, then sent, one at a time.
    /// With `--only circuits`, the path of a circuit build instead (of `--circuits` builds).
    #[arg(long, conflicts_with_all = ["json", "compare", "soak"])]
    pub trace: bool,
    /// Messages the trace sends (at least 1).
    #[arg(long, default_value_t = 5, requires = "trace", value_parser = clap::value_parser!(u16).range(1..))]
    pub messages: u16,
    /// Run only the many-node run instead: relay and authority processes, and many clients in
    /// this process exchanging messages in pairs (`docs/many-nodes.md`).
    #[arg(long, conflicts_with_all = ["soak", "only", "trace"])]
    pub many: bool,
    /// Relays of the many-node run, each a process of its own.
    #[arg(long, default_value_t = 100, requires = "many")]
    pub relays: usize,
    /// Clients of the many-node run, all in this process, in pairs.
    #[arg(long, default_value_t = 1000, requires = "many")]
    pub clients: usize,
    /// Seconds the many-node run's clients keep sending.
    #[arg(long, default_value_t = 180, requires = "many")]
    pub duration: u64,
    /// Seconds between two messages of one client in the many-node run.
    #[arg(long, default_value_t = 20.0, requires = "many")]
    pub interval: f64,
    /// The many-node network's voting interval, seconds (each client fetches every consensus).
    #[arg(long, default_value_t = 10, requires = "many")]
    pub voting_interval: u64,
    /// Where the many-node run writes its plot (SVG).
    #[arg(long, value_name = "FILE", requires = "many")]
    pub svg: Option<std::path::PathBuf>,
}

/// Runs every benchmark.
pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    // Read and check the saved run first, so a wrong file fails before a long benchmark.
    let saved = match &args.compare {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                BenchError::Other(format!("cannot read the saved run {}: {e}", path.display()))
            })?;
            bench::compare::compare(&[], &text).map_err(BenchError::other)?;
            Some(text)
        }
        None => None,
    };
    if let (true, Some(group)) = (args.trace, args.only.as_deref()) {
        if group != "circuits" && group != "messaging" {
            return Err(BenchError::Other(format!(
                "--trace follows a message (or, with --only circuits, a circuit build); the {group} group has no trace"
            )));
        }
    }
    let recorder = match args.trace {
        true => Some(bench::trace::Recorder::install().map_err(BenchError::Other)?),
        false => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::other)?;
    // The figures are taken on the runtime's worker threads, where the chat runs its client
    // (spawned beside the UI, which alone keeps the main thread). Awaited on the main thread
    // instead, a client pays a wake-up of that thread for every answer it reads: a 3-hop echo
    // took 0.26-0.38 ms at the median there, 0.16 ms on a worker.
    let (task_args, task_recorder) = (args.clone(), recorder.clone());
    let task = runtime.spawn(async move {
        match task_args.many {
            true => many(&task_args).await,
            false => network_figures(&task_args, task_recorder.as_ref()).await,
        }
    });
    let figures = runtime.block_on(task).map_err(BenchError::other)??;
    if let Some(saved) = saved {
        for row in bench::compare::compare(&figures, &saved).map_err(BenchError::other)? {
            println!("{}", bench::compare::render(&row));
        }
    } else if args.json {
        let json = serde_json::to_string_pretty(&serde_json::json!({ "figures": figures }))
            .map_err(BenchError::other)?;
        println!("{json}");
    } else {
        for f in &figures {
            println!("{:<62} {:>12.2} {}", f.name, f.value, f.unit);
            if !f.note.is_empty() {
                println!("    {}", f.note);
            }
        }
    }
    Ok(())
}

/// The many-node run, and its plot if asked for.
async fn many(args: &BenchArgs) -> Result<Vec<Figure>, BenchError> {
    if !(args.interval > 0.0 && args.interval.is_finite()) || args.duration == 0 {
        return Err(BenchError::Other(
            "--interval and --duration must be more than zero".into(),
        ));
    }
    let size = bench::many::ManySize {
        relays: args.relays,
        clients: args.clients,
        duration: Duration::from_secs(args.duration),
        interval: Duration::from_secs_f64(args.interval),
        voting_interval_secs: args.voting_interval.max(1),
        binary: None,
    };
    let scratch = bench::scratch()?;
    let result = bench::many::run(&size, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let (figures, samples) = result?;
    if let Some(path) = &args.svg {
        let title = format!(
            "Send to arrival: {} relays, {} clients, {} messages",
            args.relays,
            args.clients / 2 * 2,
            samples.latencies.len()
        );
        let svg = bench::many_plot::plot(&title, &samples.latencies);
        std::fs::write(path, svg).map_err(|e| {
            BenchError::Other(format!("cannot write the plot {}: {e}", path.display()))
        })?;
    }
    Ok(figures)
}

/// The figures of the usual run (or the soak, or the trace) on the 8-relay test network.
async fn network_figures(
    args: &BenchArgs,
    recorder: Option<&bench::trace::Recorder>,
) -> Result<Vec<Figure>, BenchError> {
    {
        let scratch = bench::scratch()?;
        let mut options = TestnetOptions::new(scratch.join("net"));
        options.first_octet = 150;
        // Capacity is measured with the deposit rate limits out of the way: at their
        // production values a mailbox asks for a puzzle past 100 deposits in a burst (0.2 a
        // second sustained), and every relay past 200 deposits a second, so the figures would
        // measure the puzzle, not the network (`docs/spec.md` §9.7).
        options.admission = Some(bench::messaging::unlimited_deposits());
        options.scan_interval_secs = Some(bench::PRODUCTION_SCAN_INTERVAL_SECS);
        let started = std::time::Instant::now();
        let net = Testnet::start(options).await?;
        let result = async {
            let consensus = net.wait_ready(Duration::from_secs(60)).await?;
            let ready = started.elapsed();
            // The figures are taken on a network at rest: after the authorities' first
            // measurement of every relay, which a running network has long behind it (each
            // relay is measured once an hour).
            let measured = net.wait_measured(Duration::from_secs(30)).await;
            let after = started.elapsed().saturating_sub(ready).as_secs_f64();
            let mut figures = vec![Figure::new(
                "test network ready (3 authorities, 8 relays, in this process)",
                ready.as_secs_f64(),
                "s",
            )
            .note(format!(
                "from start to a consensus listing every relay Running, held by every relay; \
                 the figures below waited {after:.2} s more for the authorities' first \
                 measurement of every relay{}",
                if measured { "" } else { " (not all done within 30 s)" }
            ))];
            let wanted = |group: &str| args.only.as_deref().is_none_or(|o| o == group);
            if let Some(recorder) = recorder {
                let names = consensus
                    .relays
                    .iter()
                    .map(|r| (r.id.to_string(), r.nickname.clone()))
                    .collect();
                let (traced, what) = if args.only.as_deref() == Some("circuits") {
                    let dir = scratch.join("trace-circuits");
                    let count = args.circuits.max(1);
                    let (traced, opened) =
                        bench::circuits::trace(&net, &dir, recorder, &names, count).await?;
                    let what = format!("3-hop circuits built one at a time, as the circuit figures build them ({opened} of them waited for a relay to open a link to the next hop)");
                    (traced, what)
                } else {
                    let dir = scratch.join("trace");
                    let count = usize::from(args.messages);
                    let (traced, cpu) = bench::messaging::trace(&net, &dir, recorder, &names, count).await?;
                    (traced, format!("messages typed then sent one at a time (the chat gets their circuits ready while the user types){cpu}; send to arrival"))
                };
                print_trace(traced, &what);
                return Ok(Vec::new());
            }
            if args.soak {
                let binary = std::env::current_exe().map_err(BenchError::other)?;
                let size = bench::soak::SoakSize::default();
                let dir = scratch.join("soak");
                figures.extend(
                    bench::soak::run(&consensus, &binary, &net.network_path, &dir, size).await?,
                );
                return Ok(figures);
            }
            if wanted("circuits") {
                let dir = scratch.join("client");
                figures.extend(bench::circuits::run(&net, &dir, args.circuits).await?);
            }
            if wanted("messaging") {
                let dir = scratch.join("messaging");
                figures.extend(bench::messaging::run(&net, &dir, 200).await?);
            }
            if wanted("relay") {
                let binary = std::env::current_exe().map_err(BenchError::other)?;
                let path = &net.network_path;
                figures.extend(bench::relay::run(&consensus, &binary, path, &scratch).await?);
            }
            Ok::<_, BenchError>(figures)
        }
        .await;
        net.stop().await;
        // The mailbox relay figure, last, on a network of its own (see `mailbox_figures`).
        let mailbox =
            recorder.is_none() && !args.soak && args.only.as_deref().is_none_or(|o| o == "mailbox");
        let result = match result {
            Ok(mut figures) if mailbox => mailbox_figures(&scratch).await.map(|more| {
                figures.extend(more);
                figures
            }),
            other => other,
        };
        let _ = std::fs::remove_dir_all(&scratch);
        result
    }
}

/// Prints what a trace found: the times (each, or their quantiles past 20), the median run's
/// path and the slowest's, then each step's median over the runs that took the most common
/// path, and when each kind of step first happened in the typical run.
fn print_trace(traced: bench::trace::Traced, what: &str) {
    let bench::trace::Traced {
        mut latencies,
        median,
        slowest,
        common_runs,
        typical,
        reached,
    } = traced;
    let count = latencies.len();
    let shown = if count <= 20 {
        let each: Vec<String> = latencies
            .iter()
            .map(|l| format!("{:.2}", bench::ms(*l)))
            .collect();
        format!("{} ms, fastest first", each.join(", "))
    } else {
        let mut q = |p| bench::ms(bench::quantile(&mut latencies, p));
        format!(
            "p50 {:.2}, p90 {:.2}, p99 {:.2}, slowest {:.2} ms",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        )
    };
    println!("{count} {what}: {shown}");
    println!("the median one, ms since it began (+ms since the step before):");
    for line in median {
        println!("{line}");
    }
    if count > 1 {
        println!("the slowest one:");
        for line in slowest {
            println!("{line}");
        }
        println!(
            "each step over the {common_runs} of {count} that took the most common path (relays \
             named by their place in it): the medians' running sum (+median since the step \
             before, and the p90, or with fewer than 10 runs the slowest)"
        );
        for line in typical {
            println!("{line}");
        }
        println!(
            "when each kind of step first happened, over the runs (at least half) that reached \
             it: the median (and the p90, or with fewer than 10 runs the slowest)"
        );
        for line in reached {
            println!("{line}");
        }
    }
}

/// The mailbox relay figure, on a test network of its own: it reuses each circuit for
/// thousands of deposits (a client sends one per circuit) into a few mailboxes, so neither
/// the per-circuit request rate nor the per-mailbox envelope count may cut it short (the
/// 4 MiB per mailbox still applies); lifting them on the other figures' network would change
/// what a recipient's acknowledgements meet there.
async fn mailbox_figures(scratch: &std::path::Path) -> Result<Vec<Figure>, BenchError> {
    let mut options = TestnetOptions::new(scratch.join("mailbox-net"));
    options.first_octet = 151;
    options.admission = Some(bench::messaging::unlimited_deposits());
    options.mailbox_circuit_limits = Some(bench::deposits::unlimited_circuits());
    options.mailbox_quota = Some(1_000_000);
    options.scan_interval_secs = Some(bench::PRODUCTION_SCAN_INTERVAL_SECS);
    let net = Testnet::start(options).await?;
    let result = async {
        net.wait_ready(Duration::from_secs(60)).await?;
        bench::deposits::run(&net, &scratch.join("deposits")).await
    }
    .await;
    net.stop().await;
    result
}
