//! A network of real `shallot directory run` and `shallot relay run` processes on loopback, for
//! the directory-integrity tests, with room for rogue authorities run in this process (the
//! `misbehave` feature of `shallot-authority`, enabled for tests only).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use shallot_authority::misbehave::Misbehaviour;
use shallot_authority::{Authority, AuthorityConfig, AuthorityHandle};
use shallot_crypto::keys::{IdentityKeypair, RelayId, VerifyingKey};
use shallot_directory::fetch::fetch_consensus;
use shallot_directory::{AuthorityInfo, NetworkFile, NetworkParams};
use shallot_proto::dir::Consensus;
use tokio::process::{Child, Command};

use super::common::scratch;

/// The parameters of these tests' networks.
pub(crate) fn params(interval: u64) -> NetworkParams {
    NetworkParams {
        voting_interval_secs: interval,
        reachability_timeout_secs: 2,
        stable_min_uptime_secs: 0,
        guard_min_known_secs: 0,
        mailbox_min_known_secs: 0,
        fast_min_bandwidth: 0,
        guard_min_bandwidth: 0,
        max_uploads_per_minute: 600,
        request_timeout_secs: 3,
        test_network: true,
        ..NetworkParams::default()
    }
}

/// One relay process and what it publishes.
pub(crate) struct ProcRelay {
    pub name: String,
    pub dir: PathBuf,
    pub id: RelayId,
    pub identity: VerifyingKey,
    pub link_key: [u8; 32],
    pub ntor_key: [u8; 32],
    pub address: SocketAddr,
}

/// A test network.
pub(crate) struct ProcNet {
    pub dir: PathBuf,
    pub network: NetworkFile,
    pub network_path: PathBuf,
    pub keys: Vec<IdentityKeypair>,
    pub relays: Vec<ProcRelay>,
    pub rogues: Vec<AuthorityHandle>,
    children: Vec<Child>,
}

fn free_addr(ip: [u8; 4]) -> SocketAddr {
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
}

impl ProcNet {
    /// Lays out `n` authorities on `127.<first_octet + i>.0.1` and writes the network file.
    pub(crate) fn layout(name: &str, n: usize, first_octet: u8, params: NetworkParams) -> ProcNet {
        let dir = scratch(name);
        let mut keys = Vec::new();
        let mut authorities = Vec::new();
        for i in 0..n {
            let key = IdentityKeypair::generate(&mut rand::thread_rng());
            let auth_dir = dir.join(format!("auth{i}"));
            shallot_crypto::keyfile::ensure_private_dir(&auth_dir).unwrap();
            key.save(&auth_dir.join("authority.key")).unwrap();
            authorities.push(AuthorityInfo {
                name: format!("auth{i}"),
                address: free_addr([127, first_octet + i as u8, 0, 1]),
                key: key.public(),
            });
            keys.push(key);
        }
        let network = NetworkFile {
            authorities,
            params,
        };
        let network_path = dir.join("network.toml");
        std::fs::write(&network_path, network.to_toml()).unwrap();
        let network = NetworkFile::load(&network_path).unwrap();
        ProcNet {
            dir,
            network,
            network_path,
            keys,
            relays: Vec::new(),
            rogues: Vec::new(),
            children: Vec::new(),
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// The log of a node run as a process.
    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn spawn(&mut self, name: &str, args: &[String]) {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shallot"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Starts authority `i` as a `shallot directory run` process.
    pub(crate) fn spawn_authority(&mut self, i: usize) {
        let info = self.network.authorities[i].clone();
        let args = vec![
            "directory".into(),
            "run".into(),
            "--data-dir".into(),
            self.dir.join(format!("auth{i}")).display().to_string(),
            "--listen".into(),
            info.address.to_string(),
            "--network".into(),
            self.network_path.display().to_string(),
        ];
        self.spawn(&info.name, &args);
    }

    /// Starts authority `i` in this process, misbehaving.
    pub(crate) async fn start_rogue(&mut self, i: usize, misbehaviour: Misbehaviour) {
        let info = &self.network.authorities[i];
        let config = AuthorityConfig {
            data_dir: self.dir.join(format!("auth{i}")),
            listen: info.address,
            network: self.network.clone(),
        };
        self.rogues.push(
            Authority::start_misbehaving(config, misbehaviour)
                .await
                .unwrap(),
        );
    }

    /// Makes a relay's keys and starts it as a `shallot relay run` process on
    /// `127.<octet>.0.1`, with `extra` arguments; returns its index.
    pub(crate) fn spawn_relay(&mut self, octet: u8, extra: &[&str]) -> usize {
        let name = format!("relay{}", self.relays.len());
        let dir = self.dir.join(&name);
        let keys = shallot_relay::keys::init(&dir).unwrap();
        let (onion, _) = shallot_relay::keys::load_onion(
            &dir,
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(86_400),
            SystemTime::now(),
        )
        .unwrap();
        let address = free_addr([127, octet, 0, 1]);
        let mut args: Vec<String> = vec![
            "relay".into(),
            "run".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            address.to_string(),
            "--network".into(),
            self.network_path.display().to_string(),
            "--nickname".into(),
            name.clone(),
            "--mailbox".into(),
            "--consensus-refresh".into(),
            "1".into(),
            "--publish-interval".into(),
            "60".into(),
            "--connections-per-ip".into(),
            "100000".into(),
            "--create-rate".into(),
            "100000".into(),
            "--create-burst".into(),
            "100000".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(&name, &args);
        self.relays.push(ProcRelay {
            name,
            dir,
            id: keys.id,
            identity: keys.identity.public(),
            link_key: keys.link.public().to_bytes(),
            ntor_key: onion.current.public().to_bytes(),
            address,
        });
        self.relays.len() - 1
    }

    /// Fetches consensuses (verified as a client does) until one satisfies `ready`.
    pub(crate) async fn consensus_where(
        &self,
        limit: Duration,
        what: &str,
        mut ready: impl FnMut(&Consensus) -> bool,
    ) -> Consensus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let now = shallot_rt::unix_now();
            let last = match fetch_consensus(&self.network, None, now, Duration::from_secs(2)).await
            {
                Ok((c, _)) if ready(&c) => return c.into_inner(),
                Ok((c, _)) => format!("consensus {} not ready", c.valid_after),
                Err(e) => e.to_string(),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The consensus each authority in `which` serves now (`GET /consensus`, unverified).
    pub(crate) async fn served(&self, which: &[usize]) -> Vec<Option<Consensus>> {
        let mut out = Vec::new();
        for &i in which {
            let addr = self.network.authorities[i].address;
            let r = shallot_directory::fetch::http_request(
                addr,
                hyper::Method::GET,
                "/consensus",
                None,
                Duration::from_secs(2),
                shallot_proto::dir::MAX_CONSENSUS_LEN,
            )
            .await;
            out.push(
                r.ok()
                    .filter(|r| r.status == hyper::StatusCode::OK)
                    .and_then(|r| String::from_utf8(r.body).ok())
                    .and_then(|t| Consensus::parse(&t).ok()),
            );
        }
        out
    }

    /// The vote authority `i` serves as its own for period `t` (`GET /vote/<t>`), if any.
    pub(crate) async fn vote_of(&self, i: usize, t: u64) -> Option<shallot_proto::dir::Vote> {
        let addr = self.network.authorities[i].address;
        let r = shallot_directory::fetch::http_request(
            addr,
            hyper::Method::GET,
            &format!("/vote/{t}"),
            None,
            Duration::from_secs(2),
            shallot_proto::dir::MAX_VOTE_LEN,
        )
        .await
        .ok()?;
        let text = String::from_utf8(r.body).ok()?;
        shallot_proto::dir::Vote::parse_and_verify(&text).ok()
    }

    /// Stops every node.
    pub(crate) async fn stop(mut self) {
        for h in self.rogues.drain(..) {
            h.shutdown().await;
        }
        for mut c in self.children.drain(..) {
            let _ = c.kill().await;
        }
    }
}

/// The data directory of a client made for a test.
pub(crate) fn client_dir(name: &str) -> PathBuf {
    scratch(name)
}
