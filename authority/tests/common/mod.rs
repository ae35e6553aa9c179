//! Helpers shared by the directory's end-to-end tests: scratch directories, networks of
//! authorities on loopback, relays that answer real link handshakes, raw HTTP, and polling
//! with deadlines.
#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shallot_authority::AuthorityConfig;
use shallot_crypto::keyfile::ensure_private_dir;
use shallot_crypto::keys::{IdentityKeypair, LinkKeypair, OnionKeypair};
use shallot_directory::probe::{respond, RelayProbeKeys};
use shallot_directory::{AuthorityInfo, NetworkFile, NetworkParams};
use shallot_proto::dir::RelayDescriptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh private directory ([`shallot_rt::scratch`]).
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = shallot_rt::scratch::path(name);
    ensure_private_dir(&dir).unwrap();
    dir
}

/// Parameters for a fast test network.
pub(crate) fn test_params(interval: u64) -> NetworkParams {
    NetworkParams {
        voting_interval_secs: interval,
        descriptor_max_age_secs: 3600,
        reachability_timeout_secs: 2,
        stable_min_uptime_secs: 0,
        guard_min_known_secs: 0,
        request_timeout_secs: 1,
        max_uploads_per_minute: 10,
        fast_min_bandwidth: 0,
        guard_min_bandwidth: 0,
        mailbox_min_known_secs: 0,
        test_network: true,
        ..NetworkParams::default()
    }
}

/// A free port on `ip`, found by binding and releasing it.
pub(crate) fn free_addr(ip: [u8; 4]) -> SocketAddr {
    let l = std::net::TcpListener::bind(SocketAddr::from((ip, 0))).unwrap();
    l.local_addr().unwrap()
}

/// `n` authorities with keys in fresh data directories, on loopback addresses
/// `127.<base + i>.0.1`, and the network file naming them.
pub(crate) fn authorities(
    n: usize,
    base: u8,
    params: NetworkParams,
) -> (Vec<AuthorityConfig>, NetworkFile) {
    let mut infos = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..n {
        let dir = scratch(&format!("auth{i}"));
        let key = IdentityKeypair::generate(&mut rand::thread_rng());
        key.save(&dir.join("authority.key")).unwrap();
        let address = free_addr([127, base + i as u8, 0, 1]);
        infos.push(AuthorityInfo {
            name: format!("auth{i}"),
            address,
            key: key.public(),
        });
        dirs.push(dir);
    }
    let network = NetworkFile {
        authorities: infos.clone(),
        params,
    };
    let configs = dirs
        .into_iter()
        .zip(&infos)
        .map(|(data_dir, info)| AuthorityConfig {
            data_dir,
            listen: info.address,
            network: network.clone(),
        })
        .collect();
    (configs, network)
}

/// A relay simulated by test code: keys, and a listener that answers link handshakes and
/// reachability probes (as a real relay does, `shallot_directory::probe::respond`).
pub(crate) struct TestRelay {
    pub identity: Arc<IdentityKeypair>,
    pub onion: Arc<OnionKeypair>,
    pub link: Arc<LinkKeypair>,
    pub address: SocketAddr,
    pub bandwidth: u64,
}

impl TestRelay {
    /// Starts a relay on `ip` (port chosen by the system).
    pub(crate) async fn start(ip: [u8; 4]) -> TestRelay {
        let mut rng = rand::thread_rng();
        let identity = Arc::new(IdentityKeypair::generate(&mut rng));
        let onion = Arc::new(OnionKeypair::generate(&mut rng));
        let link = Arc::new(LinkKeypair::generate(&mut rng));
        let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (i, o, l) = (identity.clone(), onion.clone(), link.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (i, o, l) = (i.clone(), o.clone(), l.clone());
                tokio::spawn(async move {
                    let limit = Duration::from_secs(5);
                    let Ok(acc) = shallot_link::accept(s, &l, limit).await else {
                        return;
                    };
                    if acc.kind == shallot_link::LinkKind::Probe {
                        let keys = RelayProbeKeys {
                            identity: &i,
                            onion: vec![&o],
                        };
                        let _ = respond(&keys, &acc.handshake_hash, acc.reader, acc.writer, limit)
                            .await;
                    }
                });
            }
        });
        TestRelay {
            identity,
            onion,
            link,
            address,
            bandwidth: 1_000_000,
        }
    }

    pub(crate) fn descriptor(&self, published: u64) -> RelayDescriptor {
        RelayDescriptor {
            nickname: "testrelay".into(),
            address: self.address,
            identity: self.identity.public(),
            ntor_key: self.onion.public().to_bytes(),
            link_key: *self.link.public().as_bytes(),
            bandwidth: self.bandwidth,
            family: vec![],
            mailbox: true,
            published,
        }
    }

    pub(crate) fn signed(&self, published: u64) -> String {
        self.descriptor(published).sign(&self.identity).unwrap()
    }
}

/// A signed descriptor for a fresh identity, with a fresh link key (nothing listens at its
/// address).
pub(crate) fn any_descriptor(published: u64) -> (IdentityKeypair, String) {
    let id = IdentityKeypair::generate(&mut rand::thread_rng());
    let text = RelayDescriptor {
        nickname: "nobody".into(),
        address: "127.99.0.1:9".parse().unwrap(),
        identity: id.public(),
        ntor_key: [1; 32],
        link_key: rand::random(),
        bandwidth: 1000,
        family: vec![],
        mailbox: false,
        published,
    }
    .sign(&id)
    .unwrap();
    (id, text)
}

/// Polls `f` every 100 ms until it returns `Some`, failing the test after `limit`.
pub(crate) async fn poll<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection from a chosen loopback source address, so that tests sharing an authority
/// do not share its per-IP limits.
pub(crate) async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads a whole HTTP/1.1 response (the server closes the connection) and returns the
/// status code and body.
pub(crate) async fn read_response(stream: &mut TcpStream, limit: Duration) -> (u16, String) {
    let mut buf = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut buf))
        .await
        .expect("no complete response in time")
        .expect("read failed");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Sends one request with `Connection: close` from `source` and returns status and body.
pub(crate) async fn raw_request(
    source: [u8; 4],
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut s = connect_from(source, to).await;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_response(&mut s, Duration::from_secs(10)).await
}
