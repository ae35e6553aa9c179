//! A whole Shallot network on one machine (`shallot testnet`, also used by `shallot demo`,
//! `shallot bench` and the end-to-end tests): K authorities and N relays, each on its own
//! loopback address in its own /16 (authorities at 127.1.0.1, 127.2.0.1, …, relays after
//! them), so the same path rules run as in production.
//!
//! Nodes run in this process by default, or each as its own `shallot directory run` /
//! `shallot relay run` process, so that one can be killed like a real daemon. Everything lives
//! under one directory: `network.toml`, one data directory per node, and (for processes) one
//! log file per node. Starting again with the same directory brings the same network back.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shallot_authority::store::KEY_FILE;
use shallot_authority::{Authority, AuthorityConfig, AuthorityError, AuthorityHandle};
use shallot_crypto::keyfile::{ensure_private_dir, KeyFileError};
use shallot_crypto::keys::IdentityKeypair;
use shallot_directory::fetch::fetch_consensus;
use shallot_directory::network::NetworkParams;
use shallot_directory::{AuthorityInfo, NetworkError, NetworkFile};
use shallot_proto::dir::{Consensus, Flags, RelayEntry};
use shallot_relay::{RelayConfig, RelayError, RelayHandle};
use shallot_rt::unix_now;
use thiserror::Error;
use tokio::process::{Child, Command};

/// How to lay out and run a test network.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    /// Where everything lives.
    pub dir: PathBuf,
    /// Relays to run.
    pub relays: usize,
    /// Authorities to run.
    pub authorities: usize,
    /// Run each node as its own process.
    pub processes: bool,
    /// The `shallot` binary to run nodes with (processes only; default: this program).
    pub binary: Option<PathBuf>,
    /// The voting interval, seconds.
    pub voting_interval_secs: u64,
    /// How often each authority measures each relay, seconds (`None`: every voting
    /// interval, the parameter's default).
    pub scan_interval_secs: Option<u64>,
    /// The mailbox epoch, seconds.
    pub epoch_secs: u64,
    /// The first second octet used: authorities get 127.<first>.0.1 onward, relays after.
    pub first_octet: u8,
    /// Envelopes one mailbox may hold (in-process relays; `None` keeps the default).
    pub mailbox_quota: Option<u64>,
    /// Whether relays added later ([`Testnet::add_relay`]) offer mailboxes.
    pub add_mailbox_relays: bool,
    /// Whether mailbox relays repair under churn (tests turn it off to show the loss).
    pub repair: bool,
    /// The mean time between the mailbox relays' anti-entropy rounds (`None`: the default).
    pub sync_interval: Option<Duration>,
    /// The mailbox relays' deposit rate limits and puzzle (in-process relays; `None` keeps
    /// the production defaults, which tests of the limits rely on).
    pub admission: Option<shallot_relay::mailbox::admission::AdmissionLimits>,
    /// The mailbox relays' limits on each circuit's requests (in-process relays; `None`
    /// keeps the default).
    pub mailbox_circuit_limits: Option<shallot_relay::mailbox::admission::CircuitLimits>,
}

impl TestnetOptions {
    /// The defaults: 3 authorities, 8 relays (half of them, and at least 4, with mailboxes),
    /// in this process, voting every 3 seconds.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TestnetOptions {
            dir: dir.into(),
            relays: 8,
            authorities: 3,
            processes: false,
            binary: None,
            voting_interval_secs: 3,
            scan_interval_secs: None,
            epoch_secs: 86_400,
            first_octet: 1,
            mailbox_quota: None,
            add_mailbox_relays: false,
            repair: true,
            sync_interval: None,
            admission: None,
            mailbox_circuit_limits: None,
        }
    }

    /// How many relays offer mailboxes: half, at least 4 (or all, if fewer).
    pub fn mailbox_relays(&self) -> usize {
        (self.relays / 2).max(4).min(self.relays)
    }
}

/// Why the test network failed.
#[derive(Debug, Error)]
pub enum TestnetError {
    /// A file or directory.
    #[error("{0}")]
    Io(String),
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// An authority could not start.
    #[error("authority: {0}")]
    Authority(#[from] AuthorityError),
    /// A relay could not start.
    #[error("relay: {0}")]
    Relay(#[from] RelayError),
    /// A node process could not be started.
    #[error("cannot start {name}: {reason}")]
    Spawn {
        /// The node.
        name: String,
        /// Why.
        reason: String,
    },
    /// The network did not come up in time.
    #[error("network not ready after {secs} s: {detail}")]
    NotReady {
        /// How long it waited.
        secs: u64,
        /// What was missing.
        detail: String,
    },
    /// Too many nodes for the address plan.
    #[error("too many nodes: at most 250 in all")]
    TooMany,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> TestnetError {
    let msg = format!("{what} {}", path.display());
    move |e| TestnetError::Io(format!("{msg}: {e}"))
}

/// A relay being started: a process already, or the configuration of one in this process.
enum RelayStart {
    Started(Node),
    InProcess(Box<RelayConfig>),
}

enum Node {
    Authority(AuthorityHandle),
    Relay(RelayHandle),
    Process(Child),
}

/// A running test network.
pub struct Testnet {
    options: TestnetOptions,
    /// The network file every node and client uses.
    pub network: NetworkFile,
    /// Where the network file is.
    pub network_path: PathBuf,
    /// `None` while stopped ([`Testnet::stop_authority`]).
    authorities: Vec<(String, Option<Node>)>,
    relays: Vec<(String, Option<Node>)>,
}

fn octet_ip(octet: usize) -> Result<IpAddr, TestnetError> {
    let o = u8::try_from(octet).map_err(|_| TestnetError::TooMany)?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, o, 0, 1)))
}

/// The file in a relay's data directory that keeps the address it listens on in this test
/// network, so that the network started again is the same.
pub const LISTEN_FILE: &str = "testnet-listen";

/// A port free right now on `ip` (bound and released; the authority binds it again soon).
fn free_port(ip: IpAddr) -> Result<SocketAddr, TestnetError> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|e| TestnetError::Io(format!("cannot bind {ip}: {e}")))?;
    l.local_addr()
        .map_err(|e| TestnetError::Io(format!("cannot bind {ip}: {e}")))
}

/// The parameters of a test network: the `test_network` preset with this testnet's voting
/// interval and epoch.
fn params(options: &TestnetOptions) -> NetworkParams {
    NetworkParams {
        voting_interval_secs: options.voting_interval_secs,
        scan_interval_secs: options.scan_interval_secs,
        epoch_secs: options.epoch_secs,
        ..NetworkParams::test_network_preset()
    }
}

impl Testnet {
    /// Lays out (or reuses) the directory and starts every node.
    pub async fn start(options: TestnetOptions) -> Result<Testnet, TestnetError> {
        if options.authorities + options.relays + usize::from(options.first_octet) > 250 {
            return Err(TestnetError::TooMany);
        }
        ensure_private_dir(&options.dir)?;
        let network_path = options.dir.join("network.toml");
        let network = Self::network_file(&options, &network_path)?;
        let mut net = Testnet {
            options,
            network,
            network_path,
            authorities: Vec::new(),
            relays: Vec::new(),
        };
        for (i, auth) in net.network.authorities.clone().into_iter().enumerate() {
            let node = net.start_authority(i, &auth).await?;
            net.authorities.push((auth.name.clone(), Some(node)));
        }
        // In-process relays start side by side (a mailbox relay's store takes tens of
        // milliseconds to create), so that all of them publish before the first vote.
        let mut starting = Vec::new();
        for i in 0..net.options.relays {
            let relay = net.prepare_relay(i)?;
            starting.push(tokio::spawn(async move {
                match relay {
                    RelayStart::Started(node) => Ok::<_, TestnetError>(node),
                    RelayStart::InProcess(config) => {
                        Ok(Node::Relay(shallot_relay::start(*config).await?))
                    }
                }
            }));
        }
        for (i, task) in starting.into_iter().enumerate() {
            let node = task.await.map_err(|e| TestnetError::Spawn {
                name: format!("relay{}", i + 1),
                reason: e.to_string(),
            })??;
            net.push_relay(i, node);
        }
        Ok(net)
    }

    /// Reuses `network.toml` when the authorities' keys are still there; otherwise makes new
    /// keys and a new file.
    fn network_file(options: &TestnetOptions, path: &Path) -> Result<NetworkFile, TestnetError> {
        if path.exists() {
            let existing = NetworkFile::load(path)?;
            let same = existing.authorities.len() == options.authorities
                && existing.authorities.iter().enumerate().all(|(i, a)| {
                    IdentityKeypair::load(
                        &options.dir.join(format!("auth{}", i + 1)).join(KEY_FILE),
                    )
                    .map(|k| k.public() == a.key)
                    .unwrap_or(false)
                });
            if same {
                return Ok(existing);
            }
        }
        let mut authorities = Vec::new();
        for i in 0..options.authorities {
            let dir = options.dir.join(format!("auth{}", i + 1));
            ensure_private_dir(&dir)?;
            let key_path = dir.join(KEY_FILE);
            let key = match IdentityKeypair::load(&key_path) {
                Ok(k) => k,
                Err(_) => {
                    let k = IdentityKeypair::generate(&mut rand::rngs::OsRng);
                    k.save(&key_path)?;
                    k
                }
            };
            authorities.push(AuthorityInfo {
                name: format!("auth{}", i + 1),
                address: free_port(octet_ip(usize::from(options.first_octet) + i)?)?,
                key: key.public(),
            });
        }
        let network = NetworkFile {
            authorities,
            params: params(options),
        };
        shallot_crypto::keyfile::write_private_file(path, network.to_toml().as_bytes())?;
        // Checks that what was written is a file nodes accept.
        Ok(NetworkFile::load(path)?)
    }

    fn binary(&self) -> Result<PathBuf, TestnetError> {
        match &self.options.binary {
            Some(b) => Ok(b.clone()),
            None => std::env::current_exe().map_err(|e| TestnetError::Spawn {
                name: "nodes".into(),
                reason: e.to_string(),
            }),
        }
    }

    fn spawn(&self, name: &str, args: &[String]) -> Result<Node, TestnetError> {
        let logs = self.options.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err("cannot create", &logs))?;
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).map_err(io_err("cannot create", &log_path))?;
        let child = Command::new(self.binary()?)
            .args(args)
            // The node stops when this process is gone and the pipe closes, however this
            // process ends (see `cmd::STOP_ON_STDIN_EOF`).
            .env(crate::cmd::STOP_ON_STDIN_EOF, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TestnetError::Spawn {
                name: name.into(),
                reason: e.to_string(),
            })?;
        Ok(Node::Process(child))
    }

    async fn start_authority(&self, i: usize, auth: &AuthorityInfo) -> Result<Node, TestnetError> {
        let dir = self.authority_dir(i);
        if self.options.processes {
            return self.spawn(
                &auth.name,
                &[
                    "directory".into(),
                    "run".into(),
                    "--data-dir".into(),
                    dir.display().to_string(),
                    "--listen".into(),
                    auth.address.to_string(),
                    "--network".into(),
                    self.network_path.display().to_string(),
                ],
            );
        }
        let handle = Authority::start(AuthorityConfig {
            data_dir: dir,
            listen: auth.address,
            network: self.network.clone(),
        })
        .await?;
        Ok(Node::Authority(handle))
    }

    fn relay_ip(&self, i: usize) -> Result<IpAddr, TestnetError> {
        octet_ip(usize::from(self.options.first_octet) + self.options.authorities + i)
    }

    async fn start_relay(&self, i: usize) -> Result<Node, TestnetError> {
        match self.prepare_relay(i)? {
            RelayStart::Started(node) => Ok(node),
            RelayStart::InProcess(config) => Ok(Node::Relay(shallot_relay::start(*config).await?)),
        }
    }

    /// The address relay `i`, whose data directory is `dir`, listens on: the one it had before
    /// (in this run or an earlier one of this network, kept in [`LISTEN_FILE`]) if it is free,
    /// so that the consensus the authorities kept still names it and a client can use it at
    /// once; else a port free now on its own IP address, kept for the next start.
    fn relay_listen(&self, dir: &Path, i: usize) -> Result<SocketAddr, TestnetError> {
        let ip = self.relay_ip(i)?;
        let path = dir.join(LISTEN_FILE);
        let kept = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<SocketAddr>().ok())
            .filter(|addr| addr.ip() == ip);
        // Unless something else listens there now: then a new port (a relay that cannot bind
        // would leave the network short of it, with the reason only in its log).
        if let Some(addr) = kept.filter(|addr| std::net::TcpListener::bind(addr).is_ok()) {
            return Ok(addr);
        }
        let addr = free_port(ip)?;
        std::fs::write(&path, format!("{addr}\n")).map_err(io_err("cannot write", &path))?;
        Ok(addr)
    }

    /// Everything of starting relay `i` but, in this process, the start itself: its keys, its
    /// configuration; a relay process is started at once.
    fn prepare_relay(&self, i: usize) -> Result<RelayStart, TestnetError> {
        let dir = self.options.dir.join(format!("relay{}", i + 1));
        if !dir.join("identity.key").exists() {
            shallot_relay::keys::init(&dir)?;
        }
        let name = format!("relay{}", i + 1);
        let listen = self.relay_listen(&dir, i)?;
        let mailbox = i < self.options.mailbox_relays()
            || (i >= self.options.relays && self.options.add_mailbox_relays);
        if self.options.processes {
            let mut args: Vec<String> = vec![
                "relay".into(),
                "run".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--listen".into(),
                listen.to_string(),
                "--network".into(),
                self.network_path.display().to_string(),
                "--nickname".into(),
                name.clone(),
            ];
            // Relays fetch each consensus when the schedule says it is served; the refresh
            // is only the longest wait besides, so a voting interval's worth is enough (every
            // second, 100 relay processes took most of two cores at rest).
            let refresh = self.options.voting_interval_secs.max(1).to_string();
            for (flag, value) in [
                ("--connections-per-ip", "100000"),
                ("--create-rate", "100000"),
                ("--create-burst", "100000"),
                ("--circuits-per-link", "100000"),
                ("--consensus-refresh", refresh.as_str()),
                ("--publish-interval", "60"),
            ] {
                args.push(flag.into());
                args.push(value.into());
            }
            if mailbox {
                args.push("--mailbox".into());
            }
            if !self.options.repair {
                args.push("--no-repair".into());
            }
            if let Some(d) = self.options.sync_interval {
                args.push("--sync-interval".into());
                args.push(d.as_secs().max(1).to_string());
            }
            return self.spawn(&name, &args).map(RelayStart::Started);
        }
        let mut config = RelayConfig::new(dir, listen);
        config.nickname = name;
        config.mailbox = mailbox;
        config.network = Some(self.network.clone());
        if let Some(q) = self.options.mailbox_quota {
            config.mailbox_limits.store.envelopes_per_mailbox = q;
        }
        config.mailbox_limits.repair.enabled = self.options.repair;
        if let Some(d) = self.options.sync_interval {
            config.mailbox_limits.repair.sync_interval = d;
        }
        if let Some(a) = &self.options.admission {
            config.mailbox_limits.admission = a.clone();
        }
        if let Some(c) = self.options.mailbox_circuit_limits {
            config.mailbox_limits.circuit = c;
        }
        relax(&mut config);
        Ok(RelayStart::InProcess(Box::new(config)))
    }

    /// Waits (within `limit`) until every authority has measured every running relay, as
    /// after its first scan round; whether they all had. An authority in this process is
    /// asked how many relays it holds a measurement of; one running as a process is judged
    /// by its vote for the newest consensus, which must carry a measurement for every relay
    /// that consensus lists (so this waits for the vote after the round as well).
    pub async fn wait_measured(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let want = self.relays.iter().filter(|(_, n)| n.is_some()).count();
        let pause = Duration::from_millis(if self.options.processes { 500 } else { 20 });
        loop {
            if self.all_measured(want).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Whether every authority has measured at least `want` relays ([`Testnet::wait_measured`]).
    async fn all_measured(&self, want: usize) -> bool {
        let mut newest: Option<Consensus> = None;
        for (i, (_, node)) in self.authorities.iter().enumerate() {
            if let Some(Node::Authority(h)) = node {
                if h.measured_relays() < want {
                    return false;
                }
                continue;
            }
            if newest.is_none() {
                let now = unix_now();
                match fetch_consensus(&self.network, None, now, Duration::from_secs(3)).await {
                    Ok((c, _)) => newest = Some(c.into_inner()),
                    Err(_) => return false,
                }
            }
            let Some(c) = &newest else { return false };
            let Some(vote) = self.vote(i, c.valid_after).await else {
                return false;
            };
            let measured = |id| {
                vote.relays
                    .iter()
                    .any(|e| e.id == id && e.measured.is_some())
            };
            if c.relays.len() < want || !c.relays.iter().all(|r| measured(r.id)) {
                return false;
            }
        }
        true
    }

    /// The vote authority `i` serves as its own for period `t` (`GET /vote/<t>`), verified,
    /// if it has one.
    pub async fn vote(&self, i: usize, t: u64) -> Option<shallot_proto::dir::Vote> {
        let authority = self.network.authorities.get(i)?;
        let answer = shallot_directory::fetch::http_request(
            authority.address,
            shallot_directory::fetch::Method::GET,
            &format!("/vote/{t}"),
            None,
            Duration::from_secs(3),
            shallot_proto::dir::MAX_VOTE_LEN,
        )
        .await
        .ok()?;
        let text = String::from_utf8(answer.body).ok()?;
        shallot_proto::dir::Vote::parse_and_verify(&text).ok()
    }

    /// Waits until a consensus lists every running relay as Running at the address it
    /// listens on now, and every running relay holds that consensus or a newer one
    /// ([`Testnet::relays_behind`]); returns that consensus. A consensus kept from an earlier
    /// run of this network, which may name addresses its relays no longer listen on, does not
    /// count until one that lists them where they are is served.
    pub async fn wait_ready(&self, limit: Duration) -> Result<Consensus, TestnetError> {
        let deadline = tokio::time::Instant::now() + limit;
        let want = self.relays.iter().filter(|(_, n)| n.is_some()).count();
        let mut detail = String::from("no consensus yet");
        // Relay processes seen serving a consensus, by address: the newest one's valid-after.
        let mut serving = HashMap::new();
        loop {
            if let Ok((c, _)) =
                fetch_consensus(&self.network, None, unix_now(), Duration::from_secs(2)).await
            {
                let c = c.into_inner();
                let behind = self.relays_behind(&c, &mut serving).await;
                if behind == 0 {
                    return Ok(c);
                }
                detail = format!(
                    "{behind} of {want} relays not yet listed Running where they listen, or not \
                     yet holding the consensus of {}",
                    c.valid_after
                );
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TestnetError::NotReady {
                    secs: limit.as_secs(),
                    detail,
                });
            }
            // Locally a fetch costs about a millisecond: poll often, so the wait adds little
            // to the time the network takes.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many running relays `consensus` does not list Running where they listen now, or
    /// that do not hold it (or a newer one) yet, so that circuits could not reach or extend
    /// through them. A relay in this process is asked directly. A relay process is asked, as a
    /// client asks its guard, for the consensus it serves as a directory cache (`docs/spec.md`
    /// §5.13), at the address `consensus` gives for its own IP address, so an answer also
    /// shows that it listens there; `serving` keeps what each address served, so that a relay
    /// is not asked again for as old a consensus.
    async fn relays_behind(
        &self,
        consensus: &Consensus,
        serving: &mut HashMap<SocketAddr, u64>,
    ) -> usize {
        let listed = |r: &&RelayEntry| r.flags.contains(Flags::RUNNING);
        let mut behind = 0;
        // Relay processes to ask, all at once.
        let mut ask = Vec::new();
        for (i, (_, node)) in self.relays.iter().enumerate() {
            match node {
                None => {}
                Some(Node::Relay(h)) => {
                    let ready = h.stats().consensus_valid_after >= consensus.valid_after
                        && consensus
                            .relays
                            .iter()
                            .filter(listed)
                            .any(|r| r.id == h.id() && r.address == h.local_addr());
                    behind += usize::from(!ready);
                }
                Some(_) => {
                    let ip = self.relay_ip(i).ok();
                    let entry = consensus
                        .relays
                        .iter()
                        .filter(listed)
                        .find(|r| Some(r.address.ip()) == ip);
                    match entry {
                        None => behind += 1,
                        Some(r) if serving.get(&r.address) >= Some(&consensus.valid_after) => {}
                        Some(r) => ask.push(r),
                    }
                }
            }
        }
        let answers =
            futures_util::future::join_all(ask.iter().map(|r| self.relay_serves(r))).await;
        for (r, served) in ask.into_iter().zip(answers) {
            match served {
                Some(t) if t >= consensus.valid_after => {
                    serving.insert(r.address, t);
                }
                _ => behind += 1,
            }
        }
        behind
    }

    /// The valid-after of the consensus `relay` serves as a directory cache, if it answers.
    async fn relay_serves(&self, relay: &RelayEntry) -> Option<u64> {
        let limit = Duration::from_secs(2);
        let Ok(chan) =
            shallot_net::channel::ClientChannel::connect(relay.address, &relay.link_key, limit)
                .await
        else {
            return None;
        };
        let served = shallot_net::dir_cache::fetch_from_guard(
            chan,
            &shallot_net::HopSpec::from(relay),
            None,
            &self.network,
            unix_now(),
            limit,
            &shallot_net::dir_cache::CacheStats::default(),
        )
        .await;
        served.ok().map(|(c, _)| c.valid_after)
    }

    /// The process ids of the authorities that run as processes of their own.
    pub fn authority_pids(&self) -> Vec<u32> {
        self.authorities
            .iter()
            .filter_map(|(_, n)| n.as_ref().and_then(pid_of))
            .collect()
    }

    /// The process ids of the relays that run as processes of their own.
    pub fn relay_pids(&self) -> Vec<u32> {
        self.relays
            .iter()
            .filter_map(|(_, n)| n.as_ref().and_then(pid_of))
            .collect()
    }

    /// The options it runs with.
    pub fn options(&self) -> &TestnetOptions {
        &self.options
    }

    /// Links the in-process relays have opened to other relays to extend circuits, all told
    /// (relays run as processes are not counted).
    pub fn links_opened_for_extends(&self) -> u64 {
        (0..self.relay_count())
            .filter_map(|i| self.relay(i))
            .map(|h| h.stats().links_opened_for_extends)
            .sum()
    }

    /// The in-process handle of authority `i` (0-based), if it runs in this process.
    pub fn authority(&self, i: usize) -> Option<&shallot_authority::AuthorityHandle> {
        match self.authorities.get(i) {
            Some((_, Some(Node::Authority(h)))) => Some(h),
            _ => None,
        }
    }

    /// The in-process handle of relay `i` (0-based), if it runs in this process.
    pub fn relay(&self, i: usize) -> Option<&RelayHandle> {
        match self.relays.get(i) {
            Some((_, Some(Node::Relay(h)))) => Some(h),
            _ => None,
        }
    }

    /// The data directory of relay `i` (0-based).
    pub fn relay_dir(&self, i: usize) -> PathBuf {
        self.options.dir.join(format!("relay{}", i + 1))
    }

    /// Relays started, running or not.
    pub fn relay_count(&self) -> usize {
        self.relays.len()
    }

    /// Kills relay `i` at once, as a crash would (SIGKILL for a process).
    pub async fn kill_relay(&mut self, i: usize) {
        if let Some((_, node)) = self.relays.get_mut(i) {
            match node.take() {
                Some(Node::Relay(h)) => h.abort().await,
                Some(Node::Process(mut child)) => {
                    let _ = child.kill().await;
                }
                _ => {}
            }
        }
    }

    /// Stops relay `i` gracefully (SIGTERM for a process, then SIGKILL after 5 s).
    pub async fn stop_relay(&mut self, i: usize) {
        if let Some(node) = self.relays.get_mut(i).and_then(|(_, n)| n.take()) {
            stop_node(node).await;
        }
    }

    /// Starts relay `i` again (after [`Testnet::kill_relay`]), on the same address if it is
    /// free ([`LISTEN_FILE`]).
    pub async fn restart_relay(&mut self, i: usize) -> Result<(), TestnetError> {
        let node = self.start_relay(i).await?;
        if let Some(slot) = self.relays.get_mut(i) {
            slot.1 = Some(node);
        }
        Ok(())
    }

    fn push_relay(&mut self, i: usize, node: Node) {
        self.relays.push((format!("relay{}", i + 1), Some(node)));
    }

    /// Adds one more relay to the running network.
    pub async fn add_relay(&mut self) -> Result<usize, TestnetError> {
        let i = self.relays.len();
        if usize::from(self.options.first_octet) + self.options.authorities + i >= 250 {
            return Err(TestnetError::TooMany);
        }
        let node = self.start_relay(i).await?;
        self.push_relay(i, node);
        Ok(i)
    }

    /// Stops every authority (the relays keep running), as if none could be reached.
    pub async fn stop_authorities(&mut self) {
        for (_, node) in self.authorities.drain(..) {
            if let Some(node) = node {
                stop_node(node).await;
            }
        }
    }

    /// Stops authority `i` (0-based) cleanly; the others and the relays keep running.
    pub async fn stop_authority(&mut self, i: usize) {
        if let Some(node) = self.authorities.get_mut(i).and_then(|(_, n)| n.take()) {
            stop_node(node).await;
        }
    }

    /// Starts authority `i` again (after [`Testnet::stop_authority`]) on its address and
    /// data directory, so that it reloads what it saved.
    pub async fn restart_authority(&mut self, i: usize) -> Result<(), TestnetError> {
        let Some(auth) = self.network.authorities.get(i).cloned() else {
            return Ok(());
        };
        let node = self.start_authority(i, &auth).await?;
        if let Some(slot) = self.authorities.get_mut(i) {
            slot.1 = Some(node);
        }
        Ok(())
    }

    /// The data directory of authority `i` (0-based).
    pub fn authority_dir(&self, i: usize) -> PathBuf {
        self.options.dir.join(format!("auth{}", i + 1))
    }

    /// Stops every node cleanly (SIGTERM for processes, then SIGKILL after 5 s).
    pub async fn stop(self) {
        let nodes = self
            .relays
            .into_iter()
            .chain(self.authorities)
            .filter_map(|(n, node)| node.map(|node| (n, node)));
        let stops: Vec<_> = nodes
            .map(|(_, node)| tokio::spawn(stop_node(node)))
            .collect();
        for s in stops {
            let _ = s.await;
        }
    }
}

/// The process id of a node that runs as a process of its own.
fn pid_of(node: &Node) -> Option<u32> {
    match node {
        Node::Process(child) => child.id(),
        _ => None,
    }
}

/// Stops one node: gracefully in-process; SIGTERM then, after 5 s, SIGKILL for a process.
async fn stop_node(node: Node) {
    match node {
        Node::Relay(h) => h.shutdown().await,
        Node::Authority(h) => h.shutdown().await,
        Node::Process(mut child) => {
            if let Some(pid) = child.id() {
                // std offers no SIGTERM; `kill` is on every system this runs on.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Per-IP limits sized for one machine, where every client shares 127.0.0.1.
pub fn relax(config: &mut RelayConfig) {
    config.limits.connections_per_ip = 100_000;
    config.limits.creates_per_sec_per_ip = 100_000.0;
    config.limits.create_burst_per_ip = 100_000.0;
    config.limits.circuits_per_link = 100_000;
    config.timing.consensus_refresh = Duration::from_secs(1);
    config.timing.publish_interval = Duration::from_secs(60);
}
