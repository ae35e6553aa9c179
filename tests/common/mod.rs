//! Shared harness for the end-to-end tests: a runtime that outlives each test, relays started
//! in-process on their own loopback addresses, and polling with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use shallot_client::{ClientChannel, HopSpec};
use shallot_relay::{NetView, PeerInfo, RelayConfig, RelayHandle};
use tokio::runtime::Runtime;

/// One multi-threaded runtime per test binary, so that a network started by one test keeps
/// running while the others use it.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A fresh private scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "shallot-test-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
    dir
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A relay started in-process for a test.
pub struct TestRelay {
    pub handle: RelayHandle,
    pub nickname: String,
    pub dir: PathBuf,
}

impl TestRelay {
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub fn hop(&self) -> HopSpec {
        HopSpec {
            id: self.handle.id(),
            ntor_key: self.handle.onion_key(),
            nickname: self.nickname.clone(),
        }
    }

    pub fn peer(&self) -> PeerInfo {
        PeerInfo {
            id: self.handle.id(),
            address: self.addr(),
            link_key: self.handle.link_key(),
        }
    }

    pub async fn channel(&self) -> std::sync::Arc<ClientChannel> {
        ClientChannel::connect(self.addr(), &self.handle.link_key(), Duration::from_secs(5))
            .await
            .unwrap()
    }
}

/// Starts a relay on `127.<octet>.0.1`, letting `tune` adjust its configuration.
pub async fn start_relay(name: &str, octet: u8, tune: impl FnOnce(&mut RelayConfig)) -> TestRelay {
    let dir = scratch(name);
    shallot_relay::keys::init(&dir).unwrap();
    let listen: SocketAddr = format!("127.{octet}.0.1:0").parse().unwrap();
    let mut config = RelayConfig::new(dir.clone(), listen);
    config.nickname = name.to_string();
    tune(&mut config);
    let handle = shallot_relay::start(config).await.unwrap();
    TestRelay {
        handle,
        nickname: name.to_string(),
        dir,
    }
}

/// Tells every relay about every other (standing in for a consensus).
pub fn introduce(relays: &[&TestRelay]) {
    for r in relays {
        r.handle
            .set_netview(NetView::new(relays.iter().map(|p| p.peer())));
    }
}
