//! `shallot directory init|run`: create a directory authority's key, and run the authority
//! (`docs/spec.md` §5).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use shallot_authority::store::KEY_FILE;
use shallot_authority::{Authority, AuthorityConfig, AuthorityError};
use shallot_crypto::hex;
use shallot_crypto::keyfile::{ensure_private_dir, KeyFileError};
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::{AuthorityInfo, NetworkError, NetworkFile};
use thiserror::Error;

use super::config::{ConfigError, ConfigFile};
use super::observe::{Kind, Metric, OpsArgs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `directory` subcommands.
#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Create this authority's signing key and print the network.toml entry to share.
    Init {
        /// The authority's name in network.toml.
        #[arg(long, default_value = "authority")]
        name: String,
        /// The HTTP address other nodes will reach it at.
        #[arg(long, default_value = "127.0.0.1:7000", value_parser = super::preflight::reachable_addr)]
        address: SocketAddr,
    },
    /// Run the authority: accept descriptors, vote, and serve the consensus.
    Run(RunArgs),
    /// Print a short summary of a running authority, read from its metrics endpoint.
    Status(super::relay::StatusArgs),
    /// Print this authority's network.toml entry again, from its key.
    Entry {
        /// The authority's name in network.toml.
        #[arg(long, default_value = "authority")]
        name: String,
        /// The HTTP address other nodes reach it at.
        #[arg(long, value_parser = super::preflight::reachable_addr)]
        address: SocketAddr,
    },
    /// Fetch the consensus from the network's authorities and list its relays, each by its
    /// fingerprint (the form `shallot relay fingerprint` prints).
    Relays {
        /// The network file naming the authorities.
        #[arg(long, value_name = "FILE")]
        network: PathBuf,
        /// List only the relay with this fingerprint (40 hex digits); fail if it is not
        /// listed.
        #[arg(long, value_parser = super::relay::parse_fingerprint)]
        fingerprint: Option<RelayId>,
    },
}

/// How to run an authority. Every flag also has a key of the same name (dashes as
/// underscores) in `authority.toml`; a flag given here wins over the file.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// The configuration file [default: authority.toml in $XDG_CONFIG_HOME/shallot/ or
    /// ~/.config/shallot/, if there].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address to serve HTTP on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The network file naming every authority.
    #[arg(long, value_name = "FILE")]
    pub network: Option<PathBuf>,
    /// Heartbeat, metrics and log file.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// The keys `authority.toml` may hold.
const AUTHORITY_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "network",
    "heartbeat",
    "metrics",
    "metrics_public",
    "log_file",
];

impl RunArgs {
    /// Fills every setting not given as a flag from the configuration file, checking each
    /// value; also returns the data directory the file names, if any.
    pub fn merge(mut self, file: &ConfigFile) -> Result<(RunArgs, Option<PathBuf>), ConfigError> {
        file.only(AUTHORITY_KEYS)?;
        let data_dir = file.path_value("data_dir")?;
        self.listen = self.listen.or(file.addr("listen")?);
        self.network = self.network.or(file.path_value("network")?);
        self.ops.merge(file)?;
        Ok((self, data_dir))
    }
}

/// Why a directory command failed.
#[derive(Debug, Error)]
pub enum DirectoryError {
    /// `init` would overwrite an existing key.
    #[error("{0} already exists: this data directory already holds an authority key")]
    AlreadyInitialised(PathBuf),
    /// The name cannot go in a network file.
    #[error("invalid --name: {0}")]
    BadName(String),
    /// The key file or data directory.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The authority could not start.
    #[error(transparent)]
    Start(#[from] AuthorityError),
    /// The async runtime or signal handling failed.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A mistake in the command line.
    #[error(transparent)]
    Preflight(#[from] super::preflight::PreflightError),
    /// Another authority runs on this data directory.
    #[error(transparent)]
    Locked(#[from] shallot_rt::DirLockError),
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No data directory, on the command line or in the configuration file.
    #[error("this command needs --data-dir DIR (or data_dir in authority.toml)")]
    NeedDataDir,
    /// A setting with no default was given neither as a flag nor in the file.
    #[error("no {1} given: add {0}, or `{1} = ...` in authority.toml")]
    Need(&'static str, &'static str),
    /// A setting that cannot work, or a status that could not be read.
    #[error("{0}")]
    Refused(String),
}

/// Runs one `directory` subcommand with the data directory given by `--data-dir`, if any.
pub fn run(data_dir: Option<PathBuf>, cmd: DirectoryCommand) -> Result<(), DirectoryError> {
    match cmd {
        DirectoryCommand::Init { name, address } => init(
            &data_dir.ok_or(DirectoryError::NeedDataDir)?,
            &name,
            address,
        ),
        DirectoryCommand::Run(args) => {
            let file = ConfigFile::locate(args.config.as_deref(), "authority.toml")?;
            let (args, file_dir) = match &file {
                Some(f) => args.merge(f)?,
                None => (args, None),
            };
            let data_dir = data_dir.or(file_dir).ok_or(DirectoryError::NeedDataDir)?;
            let data_dir = data_dir.as_path();
            let listen = args
                .listen
                .ok_or(DirectoryError::Need("--listen IP:PORT", "listen"))?;
            let network = args
                .network
                .ok_or(DirectoryError::Need("--network FILE", "network"))?;
            super::preflight::initialised(
                data_dir,
                KEY_FILE,
                "authority key",
                "create it with `shallot directory init --data-dir {dir}`",
            )?;
            args.ops.check().map_err(DirectoryError::Refused)?;
            let _lock = shallot_rt::DirLock::acquire(data_dir)?;
            let network = NetworkFile::load(&network)?;
            super::init_logging_to(args.ops.log_file.as_deref())?;
            if let Some(f) = &file {
                tracing::info!("configuration read from {}", f.path().display());
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let config = AuthorityConfig {
                data_dir: data_dir.to_path_buf(),
                listen,
                network,
            };
            runtime.block_on(serve(config, args.ops))
        }
        DirectoryCommand::Entry { name, address } => {
            let data_dir = data_dir.ok_or(DirectoryError::NeedDataDir)?;
            super::preflight::initialised(
                &data_dir,
                KEY_FILE,
                "authority key",
                "create it with `shallot directory init --data-dir {dir}`",
            )?;
            let key = IdentityKeypair::load(&data_dir.join(KEY_FILE))?;
            let info = AuthorityInfo {
                name,
                address,
                key: key.public(),
            };
            NetworkFile::parse(&info.to_toml(), Path::new("--name"))
                .map_err(|e| DirectoryError::BadName(e.to_string()))?;
            print!("{}", info.to_toml());
            Ok(())
        }
        DirectoryCommand::Relays {
            network,
            fingerprint,
        } => relays(&NetworkFile::load(&network)?, fingerprint),
        DirectoryCommand::Status(args) => {
            let addr = args
                .address("authority.toml")
                .map_err(DirectoryError::Refused)?;
            let m = super::observe::fetch_metrics(addr).map_err(DirectoryError::Refused)?;
            let get = |n: &str| {
                m.get(&format!("shallot_authority_{n}"))
                    .copied()
                    .unwrap_or(0.0) as u64
            };
            println!(
                "consensus:  {}, {} relays listed",
                super::observe::age(get("consensus_valid_after_seconds")),
                get("consensus_relays")
            );
            println!(
                "relays:     {} known, {} reachable",
                get("known_relays"),
                get("reachable_relays")
            );
            println!(
                "since start: {} votes taken, {} consensuses made, {} requests served",
                get("votes_total"),
                get("consensuses_made_total"),
                get("requests_total")
            );
            println!("equivocations seen: {}", get("equivocations"));
            Ok(())
        }
    }
}

/// Prints the relays of the consensus the authorities serve: one line each, fingerprint
/// first, or only the one with `only`'s fingerprint.
fn relays(network: &NetworkFile, only: Option<RelayId>) -> Result<(), DirectoryError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(network.params.request_timeout_secs);
    let (consensus, _) = runtime
        .block_on(shallot_directory::fetch::fetch_consensus(
            network,
            None,
            shallot_rt::unix_now(),
            limit,
        ))
        .map_err(|e| DirectoryError::Refused(e.to_string()))?;
    let consensus = consensus.into_inner();
    let listed: Vec<_> = consensus
        .relays
        .iter()
        .filter(|r| only.is_none_or(|id| r.id == id))
        .collect();
    if let (Some(id), true) = (only, listed.is_empty()) {
        return Err(DirectoryError::Refused(format!(
            "relay {id} is not in the consensus ({} relays listed)",
            consensus.relays.len()
        )));
    }
    println!(
        "consensus {}, {} relays",
        super::observe::age(consensus.valid_after),
        consensus.relays.len()
    );
    for r in listed {
        println!(
            "{}  {}  {}  {} B/s  {}",
            r.id, r.nickname, r.address, r.bandwidth, r.flags
        );
    }
    Ok(())
}

/// An authority's figures at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct AuthorityReport {
    consensus_valid_after: u64,
    consensus_relays: usize,
    known_relays: usize,
    reachable_relays: usize,
    equivocations: usize,
    counters: shallot_authority::AuthorityCounters,
}

fn report(handle: &shallot_authority::AuthorityHandle) -> AuthorityReport {
    let consensus = handle.current_consensus();
    AuthorityReport {
        consensus_valid_after: consensus.as_ref().map_or(0, |c| c.valid_after),
        consensus_relays: consensus.as_ref().map_or(0, |c| c.relays.len()),
        known_relays: handle.known_relays().len(),
        reachable_relays: handle.reachable_relays().len(),
        equivocations: handle.equivocations().len(),
        counters: handle.counters(),
    }
}

fn authority_metrics(r: &AuthorityReport) -> Vec<Metric> {
    let g = |name: &str, help: &str, v: usize| {
        Metric::new(
            name,
            help,
            Kind::Gauge,
            u64::try_from(v).unwrap_or(u64::MAX),
        )
    };
    vec![
        Metric::new(
            "authority_consensus_valid_after_seconds",
            "Valid-after time (unix seconds) of the consensus served; 0 before the first.",
            Kind::Gauge,
            r.consensus_valid_after,
        ),
        g(
            "authority_consensus_relays",
            "Relays in the consensus served.",
            r.consensus_relays,
        ),
        g(
            "authority_known_relays",
            "Relays whose descriptors this authority holds.",
            r.known_relays,
        ),
        g(
            "authority_reachable_relays",
            "Relays this authority found reachable.",
            r.reachable_relays,
        ),
        g(
            "authority_equivocations",
            "Authorities caught signing two votes for one period.",
            r.equivocations,
        ),
        Metric::new(
            "authority_votes_total",
            "Votes taken in since start: this authority's own and its peers', each once.",
            Kind::Counter,
            r.counters.votes_taken,
        ),
        Metric::new(
            "authority_consensuses_made_total",
            "Consensuses this authority computed and signed since start.",
            Kind::Counter,
            r.counters.consensuses_made,
        ),
        Metric::new(
            "authority_requests_total",
            "HTTP requests answered since start (uploads, consensus and vote fetches).",
            Kind::Counter,
            r.counters.requests_served,
        ),
        Metric::new(
            "authority_relays_measured_total",
            "Relay measurements this authority's bandwidth scanner took since start.",
            Kind::Counter,
            r.counters.relays_measured,
        ),
    ]
}

fn init(data_dir: &Path, name: &str, address: SocketAddr) -> Result<(), DirectoryError> {
    let key_path = data_dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(DirectoryError::AlreadyInitialised(key_path));
    }
    let key = IdentityKeypair::generate(&mut rand::rngs::OsRng);
    let info = AuthorityInfo {
        name: name.to_string(),
        address,
        key: key.public(),
    };
    // Check that the entry we print is one a network file accepts.
    NetworkFile::parse(&info.to_toml(), Path::new("--name"))
        .map_err(|e| DirectoryError::BadName(e.to_string()))?;
    ensure_private_dir(data_dir)?;
    key.save(&key_path)?;
    println!("Created the authority key {}", key_path.display());
    println!("Public key: {}", hex::encode(key.public().as_bytes()));
    println!();
    println!("Add this entry to the network.toml that every node of the network uses:");
    println!();
    print!("{}", info.to_toml());
    Ok(())
}

async fn serve(config: AuthorityConfig, ops: OpsArgs) -> Result<(), DirectoryError> {
    let metrics = match ops.metrics {
        Some(addr) => Some(super::observe::bind_metrics(addr).await.map_err(|e| {
            DirectoryError::Refused(format!("cannot serve metrics on {addr}: {e}"))
        })?),
        None => None,
    };
    let handle = Authority::start(config).await?;
    // The metrics endpoint reads a copy the loop below refreshes, so the handle stays here.
    let latest = Arc::new(Mutex::new(report(&handle)));
    let server = metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("serving metrics at http://{addr}/metrics");
        }
        let latest = latest.clone();
        let render = Arc::new(move || {
            let r = *shallot_rt::lock(&latest);
            super::observe::exposition(&authority_metrics(&r))
        });
        tokio::spawn(super::observe::serve_metrics(listener, render))
    });
    let heartbeat = ops.heartbeat_period();
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let mut next_beat = heartbeat.map(|p| tokio::time::Instant::now() + p);
    let stop = super::wait_for_stop();
    tokio::pin!(stop);
    let why = loop {
        tokio::select! {
            why = &mut stop => break why?,
            _ = refresh.tick() => {
                let r = report(&handle);
                *shallot_rt::lock(&latest) = r;
                if let (Some(at), Some(p)) = (next_beat, heartbeat) {
                    if tokio::time::Instant::now() >= at {
                        next_beat = Some(at + p);
                        tracing::info!(
                            "heartbeat: consensus {} listing {} relays; {} relays known, {} \
                             reachable; {} equivocations seen",
                            super::observe::age(r.consensus_valid_after),
                            r.consensus_relays,
                            r.known_relays,
                            r.reachable_relays,
                            r.equivocations
                        );
                    }
                }
            }
        }
    };
    tracing::info!("stopping ({why})");
    if let Some(s) = server {
        s.abort();
    }
    handle.shutdown().await;
    Ok(())
}
