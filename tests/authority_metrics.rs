//! An authority and a relay run as an operator runs them (`shallot directory run --metrics`,
//! `shallot relay run`), on their own loopback addresses: the authority's metrics endpoint
//! serves the Prometheus text format over real TCP and its counters move as it votes, makes
//! consensuses, takes the relay's descriptor and answers requests; `shallot directory status`
//! reads it; and the fingerprint `shallot relay fingerprint` prints is the one by which
//! `shallot directory relays` lists the relay in the consensus (one format everywhere).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shallot_crypto::keys::{IdentityKeypair, RelayId};

fn scratch(name: &str) -> PathBuf {
    let dir = shallot_rt::scratch::path(name);
    shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
    dir
}

fn free_addr(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
}

fn shallot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shallot"))
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent/shallot-test-config")
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = shallot(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `limit`.
fn eventually<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A daemon that stops with the test: it stops by itself when its stdin closes (however this
/// process ends), and is killed on drop in case it does not.
struct Daemon(Child);

impl Daemon {
    fn start(args: &[&str], log: &Path) -> Daemon {
        let log = std::fs::File::create(log).unwrap();
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_shallot"))
                .args(args)
                .env("SHALLOT_STOP_ON_STDIN_EOF", "1")
                .env("XDG_CONFIG_HOME", "/nonexistent/shallot-test-config")
                .env("RUST_LOG", "info")
                .stdin(Stdio::piped())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// Closes its stdin and checks that it stops cleanly.
    fn stop(mut self, what: &str) {
        drop(self.0.stdin.take());
        let status = eventually(
            &format!("the {what} to stop"),
            Duration::from_secs(30),
            || self.0.try_wait().unwrap(),
        );
        assert!(status.success(), "the {what} exited with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over a plain TCP connection, as curl sends it: the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The authority's metrics, by name.
fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let body = http_get(addr, "/metrics")?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect(),
    )
}

#[test]
fn an_authority_serves_live_metrics_and_lists_relays_by_their_fingerprint() {
    let dir = scratch("authority-metrics");
    let auth_dir = dir.join("auth").display().to_string();
    let relay_dir = dir.join("relay").display().to_string();
    let auth_addr = free_addr("127.210.0.1").to_string();
    let metrics = free_addr("127.211.0.1");
    let relay_addr = free_addr("127.212.0.1").to_string();

    let init = stdout_of(&[
        "directory",
        "init",
        "--data-dir",
        &auth_dir,
        "--name",
        "a1",
        "--address",
        &auth_addr,
    ]);
    let entry = &init[init.find("[[authority]]").unwrap()..];
    let network = dir.join("network.toml");
    std::fs::write(
        &network,
        format!("{entry}\n[params]\ntest_network = true\nvoting_interval_secs = 4\n"),
    )
    .unwrap();
    let network = network.display().to_string();
    let authority = Daemon::start(
        &[
            "directory",
            "run",
            "--data-dir",
            &auth_dir,
            "--listen",
            &auth_addr,
            "--network",
            &network,
            "--metrics",
            &metrics.to_string(),
        ],
        &dir.join("authority.log"),
    );
    let before = eventually(
        "the authority's metrics endpoint",
        Duration::from_secs(30),
        || scrape(metrics),
    );
    println!("--- before ---\n{before:#?}");
    for name in [
        "votes_total",
        "consensuses_made_total",
        "requests_total",
        "known_relays",
        "consensus_relays",
    ] {
        assert!(
            before.contains_key(&format!("shallot_authority_{name}")),
            "no shallot_authority_{name} in {before:?}"
        );
    }
    assert_eq!(before["shallot_authority_known_relays"], 0.0);

    // The relay, and the fingerprint its operator is shown.
    let printed = stdout_of(&["relay", "init", "--data-dir", &relay_dir]);
    let fp = printed
        .lines()
        .find_map(|l| l.strip_prefix("Fingerprint:  "))
        .unwrap()
        .to_string();
    assert_eq!(fp.len(), 40, "{printed}");
    assert!(
        !printed.contains("Identity key"),
        "init shows a second form of the relay's identity:\n{printed}"
    );
    let again = stdout_of(&["relay", "fingerprint", "--data-dir", &relay_dir]);
    assert_eq!(again, format!("Fingerprint:  {fp}\n"));
    let relay = Daemon::start(
        &[
            "relay",
            "run",
            "--data-dir",
            &relay_dir,
            "--listen",
            &relay_addr,
            "--network",
            &network,
            "--nickname",
            "fpcheck",
        ],
        &dir.join("relay.log"),
    );

    // The consensus-reading command lists the relay by that same fingerprint.
    let mut fetches = 0u32;
    let listed = eventually(
        "the relay in the consensus",
        Duration::from_secs(120),
        || {
            fetches += 1;
            let out = shallot(&[
                "directory",
                "relays",
                "--network",
                &network,
                "--fingerprint",
                &fp,
            ]);
            out.status
                .success()
                .then(|| String::from_utf8(out.stdout).unwrap())
        },
    );
    println!("--- shallot directory relays --fingerprint {fp} ---\n{listed}---");
    let line = listed.lines().nth(1).unwrap();
    assert!(
        line.starts_with(&format!("{fp}  fpcheck  {relay_addr}  ")),
        "{line}"
    );
    let all = stdout_of(&["directory", "relays", "--network", &network]);
    assert!(all.lines().any(|l| l.starts_with(&fp)), "{all}");
    fetches += 1;

    // The consensus itself names the relay by that fingerprint, not by its identity key
    // (spec §5.4); given where a fingerprint belongs, the key (from the relay's key file) is
    // refused with the fingerprint named.
    let consensus = http_get(auth_addr.parse().unwrap(), "/consensus").unwrap();
    fetches += 1;
    let named = consensus
        .lines()
        .find_map(|l| l.strip_prefix("r fpcheck "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    assert_eq!(named, fp);
    let key = IdentityKeypair::load(&Path::new(&relay_dir).join("identity.key")).unwrap();
    assert_eq!(RelayId::of(&key.public()).to_string(), fp);
    let identity = shallot_crypto::hex::encode(key.public().as_bytes());
    let out = shallot(&[
        "directory",
        "relays",
        "--network",
        &network,
        "--fingerprint",
        &identity,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("its fingerprint is {fp}")), "{err}");

    // The counters moved: votes taken, consensuses made, the descriptor held, the relay
    // listed in the consensus served, and at least the requests this test made.
    let after = eventually(
        "the authority's counters to move",
        Duration::from_secs(30),
        || {
            let m = scrape(metrics)?;
            let moved = |n: &str| {
                m[&format!("shallot_authority_{n}")] > before[&format!("shallot_authority_{n}")]
            };
            (moved("votes_total")
                && moved("consensuses_made_total")
                && moved("known_relays")
                && moved("consensus_relays")
                && m["shallot_authority_requests_total"]
                    >= before["shallot_authority_requests_total"] + f64::from(fetches))
            .then_some(m)
        },
    );
    println!("--- after ---\n{after:#?}");
    assert!(after["shallot_authority_consensus_valid_after_seconds"] > 0.0);

    // `directory status` reads the same endpoint.
    let status = stdout_of(&["directory", "status", "--metrics", &metrics.to_string()]);
    println!("--- shallot directory status ---\n{status}---");
    assert!(status.contains("relays listed"), "{status}");
    assert!(status.contains("relays:     1 known"), "{status}");
    let votes: u64 = status
        .split("since start: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(votes >= 1, "{status}");

    relay.stop("relay");
    authority.stop("authority");
    let _ = std::fs::remove_dir_all(&dir);
}
