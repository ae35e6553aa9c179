//! `shallot relay init|run`: create a relay's keys, and run the relay daemon (`docs/spec.md`
//! §6) until SIGINT or SIGTERM, then stop gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use shallot_crypto::hex;
use shallot_crypto::keyfile::KeyFileError;
use shallot_crypto::keys::RelayId;
use shallot_directory::{NetworkError, NetworkFile};
use shallot_relay::{RelayConfig, RelayError};
use thiserror::Error;

/// The `relay` subcommands.
#[derive(Subcommand, Debug)]
pub enum RelayCommand {
    /// Create this relay's keys (identity, onion, link) and print its fingerprint.
    Init,
    /// Run the relay in the foreground.
    Run(Box<RunArgs>),
}

/// How to run a relay.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The address to accept links on (port 0 picks a free port, which is then published).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The network file naming the directory authorities.
    #[arg(long, value_name = "FILE")]
    pub network: PathBuf,
    /// Offer a mailbox service (stores sealed envelopes for users).
    #[arg(long)]
    pub mailbox: bool,
    /// The relay's nickname in the consensus (1 to 19 letters and digits).
    #[arg(long, default_value = "shallot", value_parser = super::preflight::nickname)]
    pub nickname: String,
    /// Declared bandwidth, bytes per second, with an optional K, M or G suffix (×1024).
    #[arg(long, default_value = "1M", value_parser = parse_rate)]
    pub bandwidth: u64,
    /// The address to publish, if other nodes reach this relay at a different one (needed
    /// when --listen is 0.0.0.0 or [::]).
    #[arg(long, value_parser = super::preflight::reachable_addr)]
    pub advertise: Option<SocketAddr>,
    /// Fingerprint (hex) of another relay run by the same operator; repeat for each.
    #[arg(long = "family", value_parser = parse_fingerprint)]
    pub family: Vec<RelayId>,
    /// Open connections accepted from one IP address.
    #[arg(long)]
    pub connections_per_ip: Option<usize>,
    /// Circuits one link may hold.
    #[arg(long)]
    pub circuits_per_link: Option<usize>,
    /// Circuit creations per second allowed from one IP address.
    #[arg(long)]
    pub create_rate: Option<f64>,
    /// Circuit creations one IP address may make in a burst.
    #[arg(long)]
    pub create_burst: Option<f64>,
    /// MiB of cells the relay may hold (queued on links, replies waiting for a window,
    /// unfinished messages) before it destroys the circuits holding the oldest [default: 256].
    #[arg(long, value_name = "MIB")]
    pub queue_memory: Option<usize>,
    /// Seconds a link may carry no circuit before it is closed [default: 180].
    #[arg(long, value_name = "SECS")]
    pub link_idle_timeout: Option<u64>,
    /// Seconds a circuit may pass no cell before it is destroyed [default: 1200].
    #[arg(long, value_name = "SECS")]
    pub circuit_idle_timeout: Option<u64>,
    /// Seconds between descriptor uploads.
    #[arg(long)]
    pub publish_interval: Option<u64>,
    /// Seconds between consensus fetches.
    #[arg(long)]
    pub consensus_refresh: Option<u64>,
    /// Seconds between onion key rotations.
    #[arg(long)]
    pub onion_key_rotation: Option<u64>,
    /// Seconds the previous onion key is still accepted after a rotation.
    #[arg(long)]
    pub onion_key_grace: Option<u64>,
}

/// Parses a rate such as `500K` or `2M` (binary multiples) into bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let (digits, mult) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1u64 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1u64 << 30),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a rate like 500K, 2M or 1048576"))
}

fn parse_fingerprint(text: &str) -> Result<RelayId, String> {
    RelayId::from_hex(text).map_err(|e| format!("not a relay fingerprint: {e}"))
}

/// Why a relay command failed.
#[derive(Debug, Error)]
pub enum RelayCmdError {
    /// Keys.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The relay could not start.
    #[error(transparent)]
    Start(#[from] RelayError),
    /// The async runtime or signal handling failed.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A mistake in the command line.
    #[error(transparent)]
    Preflight(#[from] super::preflight::PreflightError),
    /// Another relay runs on this data directory.
    #[error(transparent)]
    Locked(#[from] shallot_rt::DirLockError),
}

/// Runs one `relay` subcommand with the given data directory.
pub fn run(data_dir: &Path, cmd: RelayCommand) -> Result<(), RelayCmdError> {
    match cmd {
        RelayCommand::Init => {
            let keys = shallot_relay::keys::init(data_dir)?;
            println!("Created relay keys in {}", data_dir.display());
            println!("Fingerprint: {}", keys.id);
            println!(
                "Link key:    {}",
                hex::encode(keys.link.public().as_bytes())
            );
            Ok(())
        }
        RelayCommand::Run(args) => {
            super::preflight::relay_addresses(args.listen, args.advertise)?;
            super::preflight::initialised(
                data_dir,
                "identity.key",
                "relay keys",
                "create its keys with `shallot relay init --data-dir {dir}`",
            )?;
            let _lock = shallot_rt::DirLock::acquire(data_dir)?;
            let config = config(data_dir, &args)?;
            super::init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let relay = shallot_relay::start(config).await?;
                let why = super::wait_for_stop().await?;
                tracing::info!("stopping ({why}): destroying circuits");
                relay.shutdown().await;
                Ok(())
            })
        }
    }
}

/// The relay configuration the arguments describe.
pub fn config(data_dir: &Path, args: &RunArgs) -> Result<RelayConfig, RelayCmdError> {
    let mut c = RelayConfig::new(data_dir.to_path_buf(), args.listen);
    c.network = Some(NetworkFile::load(&args.network)?);
    c.mailbox = args.mailbox;
    c.nickname = args.nickname.clone();
    c.bandwidth = args.bandwidth;
    c.advertise = args.advertise;
    c.family = args.family.clone();
    let l = &mut c.limits;
    if let Some(v) = args.connections_per_ip {
        l.connections_per_ip = v;
    }
    if let Some(v) = args.circuits_per_link {
        l.circuits_per_link = v;
    }
    if let Some(v) = args.create_rate {
        l.creates_per_sec_per_ip = v;
    }
    if let Some(v) = args.create_burst {
        l.create_burst_per_ip = v;
    }
    if let Some(v) = args.queue_memory {
        l.queue_memory_bytes = v.max(1).saturating_mul(1024 * 1024);
    }
    if let Some(v) = args.link_idle_timeout {
        l.link_idle_timeout = Duration::from_secs(v.max(1));
    }
    if let Some(v) = args.circuit_idle_timeout {
        l.circuit_idle_timeout = Duration::from_secs(v.max(1));
    }
    let t = &mut c.timing;
    let secs = Duration::from_secs;
    if let Some(v) = args.publish_interval {
        t.publish_interval = secs(v.max(1));
    }
    if let Some(v) = args.consensus_refresh {
        t.consensus_refresh = secs(v.max(1));
    }
    if let Some(v) = args.onion_key_rotation {
        t.onion_key_rotation = secs(v.max(1));
    }
    if let Some(v) = args.onion_key_grace {
        t.onion_key_grace = secs(v);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("1048576"), Ok(1_048_576));
        assert_eq!(parse_rate("500K"), Ok(512_000));
        assert_eq!(parse_rate("2M"), Ok(2 << 20));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("99999999999999999G").is_err());
    }
}
