//! `shallot circuit`: a diagnostic that builds circuits through the network and prints each
//! path and how long it took.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use shallot_directory::{NetworkError, NetworkFile};
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::{DirError, NetDir};
use shallot_net::NetError;
use thiserror::Error;

/// What to build.
#[derive(Args, Debug)]
pub struct CircuitArgs {
    /// The network file naming the directory authorities.
    #[arg(long, value_name = "FILE")]
    pub network: PathBuf,
    /// How many circuits to build.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,
}

/// Why the diagnostic failed.
#[derive(Debug, Error)]
pub enum CircuitCmdError {
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The data directory.
    #[error(transparent)]
    Files(#[from] shallot_crypto::keyfile::KeyFileError),
    /// No consensus.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// No circuit could be built.
    #[error(transparent)]
    Circuit(#[from] NetError),
    /// The runtime.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Milliseconds, for printing.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at quantile `q` of sorted `values`.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i.min(values.len() - 1)]
}

/// Builds the circuits and prints them.
pub fn run(data_dir: &Path, args: CircuitArgs) -> Result<(), CircuitCmdError> {
    let network = NetworkFile::load(&args.network)?;
    shallot_crypto::keyfile::ensure_private_dir(data_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = Arc::new(NetDir::new(network, data_dir));
        let consensus = dir.bootstrap().await?;
        dir.start_refresher();
        println!(
            "consensus: {} relays, valid until {}",
            consensus.relays.len(),
            consensus.valid_until
        );
        let mgr = CircuitManager::new(
            dir,
            data_dir.to_path_buf(),
            CircuitConfig {
                preemptive: 0,
                ..CircuitConfig::default()
            },
        );
        let mut times = Vec::new();
        for i in 1..=args.count {
            let built = mgr.build(None).await?;
            println!(
                "circuit {i}: {}  ({:.1} ms)",
                built.describe(),
                ms(built.build_time)
            );
            times.push(built.build_time);
            built.circuit.close();
        }
        times.sort();
        println!(
            "built {} circuits: p50 {:.1} ms, p99 {:.1} ms",
            times.len(),
            ms(quantile(&times, 0.5)),
            ms(quantile(&times, 0.99))
        );
        Ok(())
    })
}
