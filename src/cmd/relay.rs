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
use shallot_relay::daemon::RelayReport;
use shallot_relay::{RelayConfig, RelayError};
use thiserror::Error;

use super::config::{parse_duration, ConfigError, ConfigFile};
use super::observe::{Kind, Metric, OpsArgs};

/// The `relay` subcommands.
#[derive(Subcommand, Debug)]
pub enum RelayCommand {
    /// Create this relay's keys (identity, onion, link) and print its fingerprint.
    Init,
    /// Run the relay in the foreground.
    Run(Box<RunArgs>),
    /// Print a short summary of a running relay, read from its metrics endpoint.
    Status(StatusArgs),
    /// Print this relay's fingerprint again (the form `--family` and logs use).
    Fingerprint,
}

/// Where to find a running daemon's metrics.
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The metrics address the daemon serves [default: `metrics` in its configuration file].
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
    /// The daemon's configuration file [default: the platform's config directory].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl StatusArgs {
    /// The metrics address: the flag, else the file's `metrics` key.
    pub fn address(&self, file_name: &'static str) -> Result<SocketAddr, String> {
        if let Some(a) = self.metrics {
            return Ok(a);
        }
        let file =
            ConfigFile::locate(self.config.as_deref(), file_name).map_err(|e| e.to_string())?;
        match file.as_ref().map(|f| f.addr("metrics")) {
            Some(Ok(Some(a))) => Ok(a),
            Some(Err(e)) => Err(e.to_string()),
            _ => Err(format!(
                "no metrics address: give --metrics IP:PORT, or set `metrics` in {file_name} \
                 (and run the daemon with it)"
            )),
        }
    }
}

/// How to run a relay. Every flag also has a key of the same name (dashes as underscores) in
/// `relay.toml`; a flag given here wins over the file.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// The configuration file [default: relay.toml in $XDG_CONFIG_HOME/shallot/ or
    /// ~/.config/shallot/, if there].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The address to accept links on (port 0 picks a free port, which is then published).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The network file naming the directory authorities.
    #[arg(long, value_name = "FILE")]
    pub network: Option<PathBuf>,
    /// Offer a mailbox service (stores sealed envelopes for users).
    #[arg(long)]
    pub mailbox: bool,
    /// The relay's nickname in the consensus (1 to 19 letters and digits) [default: shallot].
    #[arg(long, value_parser = super::preflight::nickname)]
    pub nickname: Option<String>,
    /// Declared bandwidth, bytes per second, with an optional K, M or G suffix (×1024)
    /// [default: 1M].
    #[arg(long, value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// The address to publish, if other nodes reach this relay at a different one (needed
    /// when --listen is 0.0.0.0 or [::]).
    #[arg(long, value_parser = super::preflight::reachable_addr)]
    pub advertise: Option<SocketAddr>,
    /// Fingerprint of another relay run by the same operator; repeat for each.
    #[arg(long = "family", value_parser = parse_fingerprint)]
    pub family: Vec<RelayId>,
    /// Open connections accepted from one IP address [default: 32].
    #[arg(long)]
    pub connections_per_ip: Option<usize>,
    /// Circuits one link may hold [default: 4096].
    #[arg(long)]
    pub circuits_per_link: Option<usize>,
    /// Circuit creations per second allowed from one IP address [default: 20].
    #[arg(long)]
    pub create_rate: Option<f64>,
    /// Circuit creations one IP address may make in a burst [default: 200].
    #[arg(long)]
    pub create_burst: Option<f64>,
    /// The relay's memory budget above its baseline, MiB: half for cells held (beyond it the
    /// circuits holding the oldest are destroyed), a quarter for links (their fixed state and
    /// busy links' buffers), a quarter for circuits [default: 256].
    #[arg(long, value_name = "MIB")]
    pub queue_memory: Option<usize>,
    /// Time a link may carry no circuit before it is closed [default: 3m].
    #[arg(long, value_parser = parse_duration)]
    pub link_idle_timeout: Option<Duration>,
    /// Time a circuit may pass no cell before it is destroyed [default: 20m].
    #[arg(long, value_parser = parse_duration)]
    pub circuit_idle_timeout: Option<Duration>,
    /// Time between descriptor uploads, such as 1h or 90s (bare numbers are seconds)
    /// [default: 1h].
    #[arg(long, value_parser = parse_duration)]
    pub publish_interval: Option<Duration>,
    /// Time between consensus fetches [default: 5m].
    #[arg(long, value_parser = parse_duration)]
    pub consensus_refresh: Option<Duration>,
    /// Time between onion key rotations [default: 7d].
    #[arg(long, value_parser = parse_duration)]
    pub onion_key_rotation: Option<Duration>,
    /// Time the previous onion key is still accepted after a rotation [default: 1d].
    #[arg(long, value_parser = parse_duration)]
    pub onion_key_grace: Option<Duration>,
    /// Tests only: no mailbox repair (no pushes on ring change, no hand-over on stop, no
    /// anti-entropy), to show what churn loses without it. Not in relay.toml.
    #[arg(long, hide = true)]
    pub no_repair: bool,
    /// Tests only: mean time between anti-entropy rounds [default: 10m]. Not in relay.toml.
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub sync_interval: Option<Duration>,
    /// Heartbeat, metrics and log file.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// The keys `relay.toml` may hold.
const RELAY_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "network",
    "mailbox",
    "nickname",
    "bandwidth",
    "advertise",
    "family",
    "connections_per_ip",
    "circuits_per_link",
    "create_rate",
    "create_burst",
    "queue_memory",
    "link_idle_timeout",
    "circuit_idle_timeout",
    "publish_interval",
    "consensus_refresh",
    "onion_key_rotation",
    "onion_key_grace",
    "heartbeat",
    "metrics",
    "metrics_public",
    "log_file",
];

impl RunArgs {
    /// Fills every setting not given as a flag from the configuration file, checking each
    /// value; also returns the data directory the file names, if any.
    pub fn merge(mut self, file: &ConfigFile) -> Result<(RunArgs, Option<PathBuf>), ConfigError> {
        file.only(RELAY_KEYS)?;
        let data_dir = file.path_value("data_dir")?;
        self.listen = self.listen.or(file.addr("listen")?);
        self.network = self.network.or(file.path_value("network")?);
        self.mailbox = self.mailbox || file.boolean("mailbox")?.unwrap_or(false);
        self.nickname = match self.nickname {
            Some(n) => Some(n),
            None => file.text("nickname", super::preflight::nickname)?,
        };
        self.bandwidth = self.bandwidth.or(file.size("bandwidth")?);
        self.advertise = match self.advertise {
            Some(a) => Some(a),
            None => file.text("advertise", super::preflight::reachable_addr)?,
        };
        if self.family.is_empty() {
            self.family = file.list("family", parse_fingerprint)?.unwrap_or_default();
        }
        let count = |key: &str| -> Result<Option<usize>, ConfigError> {
            Ok(file
                .count(key)?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
        };
        self.connections_per_ip = self.connections_per_ip.or(count("connections_per_ip")?);
        self.circuits_per_link = self.circuits_per_link.or(count("circuits_per_link")?);
        self.create_rate = self.create_rate.or(file.number("create_rate")?);
        self.create_burst = self.create_burst.or(file.number("create_burst")?);
        self.queue_memory = self.queue_memory.or(count("queue_memory")?);
        self.link_idle_timeout = self
            .link_idle_timeout
            .or(file.duration("link_idle_timeout")?);
        self.circuit_idle_timeout = self
            .circuit_idle_timeout
            .or(file.duration("circuit_idle_timeout")?);
        self.publish_interval = self.publish_interval.or(file.duration("publish_interval")?);
        self.consensus_refresh = self
            .consensus_refresh
            .or(file.duration("consensus_refresh")?);
        self.onion_key_rotation = self
            .onion_key_rotation
            .or(file.duration("onion_key_rotation")?);
        self.onion_key_grace = self.onion_key_grace.or(file.duration("onion_key_grace")?);
        self.ops.merge(file)?;
        Ok((self, data_dir))
    }
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

/// Parses a relay fingerprint as `relay fingerprint` prints it: 40 hex digits. A 64-digit
/// identity key is refused with its fingerprint, so the mistake takes one step to fix.
pub fn parse_fingerprint(text: &str) -> Result<RelayId, String> {
    if let Ok(key) = hex::decode_array::<32>(text) {
        if let Ok(key) = shallot_crypto::keys::VerifyingKey::from_bytes(&key) {
            return Err(format!(
                "{text} is an identity key, not a fingerprint: its fingerprint is {}",
                RelayId::of(&key)
            ));
        }
    }
    RelayId::from_hex(text).map_err(|e| {
        format!(
            "not a relay fingerprint (40 hex digits, as `shallot relay fingerprint` prints): {e}"
        )
    })
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
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No data directory, on the command line or in the configuration file.
    #[error("this command needs --data-dir DIR (or data_dir in relay.toml)")]
    NeedDataDir,
    /// A setting with no default was given neither as a flag nor in the file.
    #[error("no {1} given: add {0}, or `{1} = ...` in relay.toml")]
    Need(&'static str, &'static str),
    /// A setting that cannot work, or a status that could not be read.
    #[error("{0}")]
    Refused(String),
}

/// Runs one `relay` subcommand with the data directory given by `--data-dir`, if any.
pub fn run(data_dir: Option<PathBuf>, cmd: RelayCommand) -> Result<(), RelayCmdError> {
    match cmd {
        RelayCommand::Init => {
            let data_dir = data_dir.ok_or(RelayCmdError::NeedDataDir)?;
            let keys = shallot_relay::keys::init(&data_dir)?;
            println!("Created relay keys in {}", data_dir.display());
            print_identity(&keys);
            Ok(())
        }
        RelayCommand::Fingerprint => {
            let data_dir = data_dir.ok_or(RelayCmdError::NeedDataDir)?;
            super::preflight::initialised(
                &data_dir,
                "identity.key",
                "relay keys",
                "create its keys with `shallot relay init --data-dir {dir}`",
            )?;
            print_identity(&shallot_relay::keys::load(&data_dir)?);
            Ok(())
        }
        RelayCommand::Run(args) => {
            let file = ConfigFile::locate(args.config.as_deref(), "relay.toml")?;
            let (args, file_dir) = match &file {
                Some(f) => (*args).merge(f)?,
                None => (*args, None),
            };
            let data_dir = data_dir.or(file_dir).ok_or(RelayCmdError::NeedDataDir)?;
            let listen = args
                .listen
                .ok_or(RelayCmdError::Need("--listen IP:PORT", "listen"))?;
            super::preflight::relay_addresses(listen, args.advertise)?;
            super::preflight::initialised(
                &data_dir,
                "identity.key",
                "relay keys",
                "create its keys with `shallot relay init --data-dir {dir}`",
            )?;
            args.ops.check().map_err(RelayCmdError::Refused)?;
            let _lock = shallot_rt::DirLock::acquire(&data_dir)?;
            let config = config(&data_dir, &args)?;
            super::init_logging_to(args.ops.log_file.as_deref())?;
            if let Some(f) = &file {
                tracing::info!("configuration read from {}", f.path().display());
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let metrics = match args.ops.metrics {
                    Some(addr) => Some(super::observe::bind_metrics(addr).await.map_err(|e| {
                        RelayCmdError::Refused(format!("cannot serve metrics on {addr}: {e}"))
                    })?),
                    None => None,
                };
                let relay = shallot_relay::start(config).await?;
                let monitor = relay.monitor();
                let mut tasks = Vec::new();
                if let Some(listener) = metrics {
                    if let Ok(addr) = listener.local_addr() {
                        tracing::info!("serving metrics at http://{addr}/metrics");
                    }
                    let m = monitor.clone();
                    let render = std::sync::Arc::new(move || {
                        super::observe::exposition(&relay_metrics(&m.report()))
                    });
                    tasks.push(tokio::spawn(super::observe::serve_metrics(
                        listener, render,
                    )));
                }
                if let Some(period) = args.ops.heartbeat_period() {
                    tasks.push(tokio::spawn(async move {
                        let mut tick =
                            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        loop {
                            tick.tick().await;
                            tracing::info!("{}", heartbeat_line(&monitor.report()));
                        }
                    }));
                }
                let why = super::wait_for_stop().await?;
                tracing::info!("stopping ({why}): destroying circuits");
                for t in &tasks {
                    t.abort();
                }
                relay.shutdown().await;
                Ok(())
            })
        }
        RelayCommand::Status(args) => {
            let addr = args.address("relay.toml").map_err(RelayCmdError::Refused)?;
            let m = super::observe::fetch_metrics(addr).map_err(RelayCmdError::Refused)?;
            print!("{}", status_summary(&m));
            Ok(())
        }
    }
}

/// The fingerprint: the one form in which every command, log and panel shows a relay
/// (`docs/spec.md` §3).
fn print_identity(keys: &shallot_relay::keys::RelayKeys) {
    println!("Fingerprint:  {}", keys.id);
}

/// The relay's metrics, from its report.
pub fn relay_metrics(r: &RelayReport) -> Vec<Metric> {
    let mut out = Vec::new();
    for (name, help, value) in r.stats.named() {
        if name == "consensus_valid_after" || name == "dir_cache_valid_after" {
            out.push(Metric::new(
                &format!("relay_{name}_seconds"),
                help,
                Kind::Gauge,
                value,
            ));
        } else {
            out.push(Metric::new(
                &format!("relay_{name}_total"),
                help,
                Kind::Counter,
                value,
            ));
        }
    }
    let gauge = |name: &str, help: &str, v: usize| {
        Metric::new(
            name,
            help,
            Kind::Gauge,
            u64::try_from(v).unwrap_or(u64::MAX),
        )
    };
    out.push(gauge("relay_circuits", "Circuits open now.", r.circuits));
    out.push(gauge("relay_links", "Links open now.", r.links));
    out.push(Metric::new(
        "relay_queued_bytes",
        "Bytes of cells queued on all links now.",
        Kind::Gauge,
        r.queued_bytes,
    ));
    out.push(gauge(
        "relay_known_relays",
        "Relays in the consensus in use.",
        r.known_relays,
    ));
    out.push(Metric::new(
        "relay_limits_hit_total",
        "Connections, creations and extends refused, and circuits cut, by a limit.",
        Kind::Counter,
        r.limits_hit(),
    ));
    out
}

/// The heartbeat log line.
pub fn heartbeat_line(r: &RelayReport) -> String {
    let s = &r.stats;
    format!(
        "heartbeat: {} circuits on {} links; {} cells forwarded, {} delivered; {} queued; \
         {} limits hit; mailbox {} requests, {} envelopes stored, {} sent; consensus {} \
         ({} relays)",
        r.circuits,
        r.links,
        s.cells_forwarded,
        s.cells_delivered,
        super::observe::human_bytes(r.queued_bytes),
        r.limits_hit(),
        s.mailbox_requests,
        s.mailbox_envelopes_stored,
        s.mailbox_envelopes_sent,
        super::observe::age(s.consensus_valid_after),
        r.known_relays,
    )
}

/// The `relay status` summary of a relay's metrics.
pub fn status_summary(m: &std::collections::BTreeMap<String, f64>) -> String {
    let get = |name: &str| {
        m.get(&format!("shallot_relay_{name}"))
            .copied()
            .unwrap_or(0.0) as u64
    };
    format!(
        "circuits:   {} open ({} created, {} destroyed)\n\
         links:      {} open ({} opened)\n\
         cells:      {} forwarded, {} delivered\n\
         queued:     {}\n\
         limits hit: {}\n\
         mailbox:    {} requests, {} envelopes stored, {} sent\n\
         consensus:  {}, {} relays\n",
        get("circuits"),
        get("circuits_created_total"),
        get("circuits_destroyed_total"),
        get("links"),
        get("links_opened_total"),
        get("cells_forwarded_total"),
        get("cells_delivered_total"),
        super::observe::human_bytes(get("queued_bytes")),
        get("limits_hit_total"),
        get("mailbox_requests_total"),
        get("mailbox_envelopes_stored_total"),
        get("mailbox_envelopes_sent_total"),
        super::observe::age(get("consensus_valid_after_seconds")),
        get("known_relays"),
    )
}

/// The relay configuration the arguments (merged with the configuration file) describe.
pub fn config(data_dir: &Path, args: &RunArgs) -> Result<RelayConfig, RelayCmdError> {
    let listen = args
        .listen
        .ok_or(RelayCmdError::Need("--listen IP:PORT", "listen"))?;
    let network = args
        .network
        .as_ref()
        .ok_or(RelayCmdError::Need("--network FILE", "network"))?;
    let mut c = RelayConfig::new(data_dir.to_path_buf(), listen);
    c.network = Some(NetworkFile::load(network)?);
    c.mailbox = args.mailbox;
    if let Some(n) = &args.nickname {
        c.nickname = n.clone();
    }
    if let Some(b) = args.bandwidth {
        c.bandwidth = b;
    }
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
        l.link_idle_timeout = v.max(Duration::from_secs(1));
    }
    if let Some(v) = args.circuit_idle_timeout {
        l.circuit_idle_timeout = v.max(Duration::from_secs(1));
    }
    let t = &mut c.timing;
    let at_least_a_second = |d: Duration| d.max(Duration::from_secs(1));
    if let Some(v) = args.publish_interval {
        t.publish_interval = at_least_a_second(v);
    }
    if let Some(v) = args.consensus_refresh {
        t.consensus_refresh = at_least_a_second(v);
    }
    if let Some(v) = args.onion_key_rotation {
        t.onion_key_rotation = at_least_a_second(v);
    }
    if let Some(v) = args.onion_key_grace {
        t.onion_key_grace = v;
    }
    let repair = &mut c.mailbox_limits.repair;
    repair.enabled = !args.no_repair;
    if let Some(v) = args.sync_interval {
        repair.sync_interval = at_least_a_second(v);
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
