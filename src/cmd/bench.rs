//! `shallot bench [--json] [--compare FILE] [--soak] [--only GROUP] [--trace]`: starts its own
//! test network and prints performance figures, each beside the raw limit measured in the same
//! run (or, with `--soak`, the relay soak run's figures; with `--trace`, one message's path step
//! by step); `--compare` sets them beside a run saved with `--json`.

use std::time::Duration;

use clap::Args;

use crate::bench::{self, BenchError, Figure};
use crate::testnet::{Testnet, TestnetOptions};

/// Output options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Circuits to build for the circuit figures.
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
    #[arg(long, value_parser = ["circuits", "messaging", "relay"])]
    pub only: Option<String>,
    /// Print only the path of one message, step by step with the time of each (the median
    /// of five sent one at a time).
    #[arg(long, conflicts_with_all = ["json", "compare", "soak"])]
    pub trace: bool,
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
    let recorder = match args.trace {
        true => Some(bench::trace::Recorder::install().map_err(BenchError::Other)?),
        false => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::other)?;
    let figures = runtime.block_on(async {
        let scratch = bench::scratch()?;
        let mut options = TestnetOptions::new(scratch.join("net"));
        options.first_octet = 150;
        // Capacity is measured with the deposit rate limits out of the way: at their
        // production values a mailbox asks for a puzzle past 100 deposits in a burst (0.2 a
        // second sustained), and every relay past 200 deposits a second, so the figures would
        // measure the puzzle, not the network (`docs/spec.md` §9.7).
        options.admission = Some(bench::messaging::unlimited_deposits());
        let started = std::time::Instant::now();
        let net = Testnet::start(options).await?;
        let result = async {
            let consensus = net.wait_ready(Duration::from_secs(60)).await?;
            let mut figures = vec![Figure::new(
                "test network ready (3 authorities, 8 relays, in this process)",
                started.elapsed().as_secs_f64(),
                "s",
            )
            .note("from start to a consensus listing every relay Running, held by every relay")];
            let wanted = |group: &str| args.only.as_deref().is_none_or(|o| o == group);
            if let Some(recorder) = &recorder {
                let names = consensus
                    .relays
                    .iter()
                    .map(|r| (r.id.to_string(), r.nickname.clone()))
                    .collect();
                let dir = scratch.join("trace");
                let (latencies, lines) =
                    bench::messaging::trace(&net, &dir, recorder, &names, 5).await?;
                let ms: Vec<String> = latencies
                    .iter()
                    .map(|l| format!("{:.2}", bench::ms(*l)))
                    .collect();
                println!(
                    "send to arrival, 5 messages one at a time: {} ms",
                    ms.join(", ")
                );
                println!("the median one, ms since send (+ms since the step before):");
                for line in lines {
                    println!("{line}");
                }
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
        let _ = std::fs::remove_dir_all(&scratch);
        result
    })?;
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
