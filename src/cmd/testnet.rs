//! `shallot testnet`: run a whole network on this machine in the foreground until Ctrl-C.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::testnet::{Testnet, TestnetError, TestnetOptions};

/// How to run the test network.
#[derive(Args, Debug)]
pub struct TestnetArgs {
    /// Where to keep its keys, state and network.toml (reused on the next start).
    #[arg(long)]
    pub dir: PathBuf,
    /// Relays to run (half of them, at least 4, offer mailboxes).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub relays: u16,
    /// Directory authorities to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub authorities: u16,
    /// Run every node as its own process, so one can be killed like a real daemon.
    #[arg(long)]
    pub processes: bool,
    /// Seconds between votes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub voting_interval: u64,
}

/// Runs the test network until Ctrl-C or SIGTERM.
pub fn run(args: TestnetArgs) -> Result<(), TestnetError> {
    let mut options = TestnetOptions::new(args.dir);
    options.relays = usize::from(args.relays);
    options.authorities = usize::from(args.authorities);
    options.processes = args.processes;
    options.voting_interval_secs = args.voting_interval;
    if std::env::var_os("RUST_LOG").is_some() {
        super::init_logging();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| TestnetError::Io(e.to_string()))?;
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let net = Testnet::start(options).await?;
        let ready = tokio::select! {
            r = net.wait_ready(Duration::from_secs(120)) => r,
            _ = super::wait_for_stop() => {
                net.stop().await;
                return Ok(());
            }
        };
        match ready {
            Ok(consensus) => println!(
                "ready: {} relays in the consensus after {:.1} s; network file {}",
                consensus.relays.len(),
                started.elapsed().as_secs_f64(),
                net.network_path.display()
            ),
            Err(e) => {
                net.stop().await;
                return Err(e);
            }
        }
        let why = super::wait_for_stop().await;
        // After SIGHUP the terminal may be gone: a failed write must not stop the cleanup.
        let _ = writeln!(
            std::io::stdout(),
            "stopping ({})",
            why.unwrap_or("signal handling failed")
        );
        net.stop().await;
        Ok(())
    })
}
