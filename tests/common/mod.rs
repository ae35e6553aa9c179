//! Shared harness for the end-to-end tests: a runtime that outlives each test, relays started
//! in-process on their own loopback addresses, and polling with deadlines.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use shallot_net::{ClientChannel, HopSpec};
use shallot_relay::{NetView, PeerInfo, RelayConfig, RelayHandle};
use tokio::runtime::Runtime;

/// One multi-threaded runtime per test binary, so that a network started by one test keeps
/// running while the others use it.
pub(crate) fn rt() -> &'static Runtime {
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
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = shallot_rt::scratch::path(name);
    shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
    dir
}

/// The newest consensus the network's authorities serve, if one answers within 2 s.
pub(crate) async fn newest_consensus(
    network: &shallot_directory::network::NetworkFile,
) -> Option<shallot_proto::dir::Consensus> {
    let now = shallot_rt::unix_now();
    shallot_directory::fetch::fetch_consensus(network, None, now, Duration::from_secs(2))
        .await
        .ok()
        .map(|(c, _)| c.into_inner())
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
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
pub(crate) struct TestRelay {
    pub handle: RelayHandle,
    pub nickname: String,
    pub dir: PathBuf,
}

impl TestRelay {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub(crate) fn hop(&self) -> HopSpec {
        HopSpec {
            id: self.handle.id(),
            ntor_key: self.handle.onion_key(),
            nickname: self.nickname.clone(),
        }
    }

    pub(crate) fn peer(&self) -> PeerInfo {
        PeerInfo {
            id: self.handle.id(),
            address: self.addr(),
            link_key: self.handle.link_key(),
        }
    }

    pub(crate) async fn channel(&self) -> std::sync::Arc<ClientChannel> {
        ClientChannel::connect(self.addr(), &self.handle.link_key(), Duration::from_secs(5))
            .await
            .unwrap()
    }
}

/// Starts a relay on `127.<octet>.0.1`, letting `tune` adjust its configuration.
pub(crate) async fn start_relay(
    name: &str,
    octet: u8,
    tune: impl FnOnce(&mut RelayConfig),
) -> TestRelay {
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

/// Starts `count` relays named `<prefix>0…` on 127.<first_octet + i>.0.1, each told about
/// the others.
pub(crate) async fn relay_net(prefix: &str, first_octet: u8, count: u8) -> Vec<TestRelay> {
    let mut relays = Vec::new();
    for i in 0..count {
        relays.push(start_relay(&format!("{prefix}{i}"), first_octet + i, |_| {}).await);
    }
    introduce(&relays.iter().collect::<Vec<_>>());
    relays
}

/// Tells every relay about every other (standing in for a consensus).
pub(crate) fn introduce(relays: &[&TestRelay]) {
    for r in relays {
        r.handle
            .set_netview(NetView::new(relays.iter().map(|p| p.peer())));
    }
}

/// A raw client link for sending arbitrary bytes after a real handshake.
pub(crate) struct RawLink {
    pub stream: tokio::net::TcpStream,
    pub sealer: shallot_link::Sealer,
    pub opener: shallot_link::Opener,
}

impl RawLink {
    /// Connects and runs the client handshake by hand, keeping the raw stream.
    pub(crate) async fn connect(addr: SocketAddr, link_key: &[u8; 32]) -> RawLink {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut hs = shallot_link::Handshake::client(link_key).unwrap();
        stream.write_all(&[hs.kind().preamble()]).await.unwrap();
        let m1 = hs.write().unwrap();
        stream
            .write_all(&(m1.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&m1).await.unwrap();
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut m2 = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut m2).await.unwrap();
        hs.read(&m2).unwrap();
        let (sealer, opener, _) = hs.finish().unwrap();
        RawLink {
            stream,
            sealer,
            opener,
        }
    }

    /// Sends encoded cells in one record.
    pub(crate) async fn send_cells(&mut self, cells: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mut wire = Vec::new();
        self.sealer.seal(cells, &mut wire).unwrap();
        self.stream.write_all(&wire).await.unwrap();
    }

    /// Reads one record's cells, or `None` if the relay closed the link.
    pub(crate) async fn read_cells(&mut self) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut len = [0u8; 2];
        self.stream.read_exact(&mut len).await.ok()?;
        let mut rec = vec![0u8; u16::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut rec).await.ok()?;
        let mut plain = Vec::new();
        self.opener.open(&rec, &mut plain).ok()?;
        Some(plain)
    }

    /// Reads the next cell, with a time limit.
    pub(crate) async fn next_cell(&mut self, limit: Duration) -> Option<shallot_proto::cell::Cell> {
        let cells = tokio::time::timeout(limit, self.read_cells())
            .await
            .ok()??;
        shallot_proto::cell::Cell::decode(&cells[..shallot_proto::cell::CELL_LEN]).unwrap()
    }
}

/// Waits until the peer closes `stream` (reads EOF), failing after `limit`.
pub(crate) async fn closed_by_peer(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Builds a circuit through `path` on a fresh channel and checks the last hop echoes data:
/// the proof, after each bad input, that a relay still serves everyone else.
pub(crate) async fn still_serves(path: &[&TestRelay]) {
    let hops: Vec<HopSpec> = path.iter().map(|r| r.hop()).collect();
    let circ = shallot_net::build(path[0].channel().await, &hops, Duration::from_secs(5))
        .await
        .unwrap();
    let msg = shallot_proto::relay_msg::RelayMsg::Data(b"ping".to_vec());
    let last = circ.last_hop().unwrap();
    circ.send(last, &msg).await.unwrap();
    assert_eq!(circ.recv().await.unwrap(), (last, msg));
}

/// A `CREATE` cell for `relay` with a fresh handshake, and the handshake state.
pub(crate) fn create_cell(
    relay: &TestRelay,
    id: u32,
    depth: u8,
) -> (shallot_crypto::ntor::ClientHandshake, Vec<u8>) {
    use shallot_proto::cell::{Cell, ChanMsg, CircId, Create};
    let (hs, msg) = shallot_crypto::ntor::ClientHandshake::start(
        &mut rand::thread_rng(),
        relay.handle.id(),
        &x25519_dalek::PublicKey::from(relay.handle.onion_key()),
    );
    let cell = Cell::new(
        CircId::new(id).unwrap(),
        ChanMsg::Create(Create {
            depth,
            handshake: msg,
        }),
    );
    (hs, cell.encode().to_vec())
}

/// A fake relay that accepts relay links, answers the first few CREATEs with a real ntor reply,
/// and then never reads again: the next hop that stops reading, which makes cells queue up
/// at the relay in front of it. Its listening socket has a tiny receive buffer so the queue
/// builds after a few cells rather than after megabytes of kernel buffering.
pub(crate) struct StalledRelay {
    pub hop: HopSpec,
    pub peer: PeerInfo,
}

impl StalledRelay {
    pub(crate) async fn start(octet: u8, creates: usize) -> StalledRelay {
        use shallot_crypto::keys::{IdentityKeypair, LinkKeypair, OnionKeypair};
        use shallot_proto::cell::{Cell, ChanMsg, CELL_LEN};
        let mut rng = rand::thread_rng();
        let identity = IdentityKeypair::generate(&mut rng);
        let onion = OnionKeypair::generate(&mut rng);
        let link = LinkKeypair::generate(&mut rng);
        let id = identity.relay_id();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(format!("127.{octet}.0.1:0").parse().unwrap())
            .unwrap();
        let listener = socket.listen(16).unwrap();
        let address = listener.local_addr().unwrap();
        let link_key = link.public().to_bytes();
        let hop = HopSpec {
            id,
            ntor_key: onion.public().to_bytes(),
            nickname: format!("stalled{octet}"),
        };
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                let Ok(mut acc) = shallot_link::accept(s, &link, Duration::from_secs(5)).await
                else {
                    continue;
                };
                // Answer the first `creates` CREATEs, then stop reading for good.
                let mut answered = 0;
                while answered < creates {
                    let Ok(cells) = acc.reader.read_cells().await else {
                        break;
                    };
                    let mut replies = Vec::new();
                    for raw in cells.chunks_exact(CELL_LEN) {
                        if let Ok(Some(Cell {
                            circ_id,
                            msg: ChanMsg::Create(c),
                        })) = Cell::decode(raw)
                        {
                            let (reply, _) = shallot_crypto::ntor::server_handshake(
                                &mut rand::thread_rng(),
                                &id,
                                &[&onion],
                                &c.handshake,
                            )
                            .unwrap();
                            replies.extend_from_slice(
                                &Cell::new(circ_id, ChanMsg::Created(reply)).encode(),
                            );
                            answered += 1;
                        }
                    }
                    if !replies.is_empty() {
                        acc.writer.write_cells(&replies).await.unwrap();
                    }
                }
                held.push(acc);
            }
        });
        StalledRelay {
            hop,
            peer: PeerInfo {
                id,
                address,
                link_key,
            },
        }
    }
}

/// A user of the messaging layer for tests: a data directory with an identity, and its
/// messenger on `network`.
pub(crate) struct TestUser {
    pub dir: PathBuf,
    pub messenger: std::sync::Arc<shallot_client::messenger::Messenger>,
    pub address: shallot_crypto::Address,
}

impl TestUser {
    pub(crate) async fn new(name: &str, network: &shallot_directory::NetworkFile) -> TestUser {
        Self::with_config(name, network, Self::config()).await
    }

    /// The messenger settings of test users: short deadlines, so a silent relay costs
    /// seconds, not minutes.
    pub(crate) fn config() -> shallot_client::messenger::MessengerConfig {
        shallot_client::messenger::MessengerConfig {
            request_timeout: Duration::from_secs(5),
            circuits: shallot_net::circmgr::CircuitConfig {
                per_hop_timeout: Duration::from_secs(3),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A new user called `name`, with its messenger set up by `config`.
    pub(crate) async fn with_config(
        name: &str,
        network: &shallot_directory::NetworkFile,
        config: shallot_client::messenger::MessengerConfig,
    ) -> TestUser {
        let dir = scratch(name);
        let store = shallot_client::store::Store::open(&dir).unwrap();
        store.create_identity(Some(name), 1).unwrap();
        drop(store);
        let messenger =
            shallot_client::messenger::Messenger::open(&dir, network.clone(), config).unwrap();
        messenger.connect().await.unwrap();
        let address = messenger.address();
        TestUser {
            dir,
            messenger,
            address,
        }
    }

    /// Opens again the user whose data is in `dir` (after its messenger was dropped).
    pub(crate) async fn reopen(
        dir: &std::path::Path,
        network: &shallot_directory::NetworkFile,
    ) -> TestUser {
        let messenger =
            shallot_client::messenger::Messenger::open(dir, network.clone(), Self::config())
                .unwrap();
        messenger.connect().await.unwrap();
        let address = messenger.address();
        TestUser {
            dir: dir.to_path_buf(),
            messenger,
            address,
        }
    }

    pub(crate) fn add_contact(&self, name: &str, other: &TestUser) {
        self.messenger
            .store()
            .add_contact(name, &other.address, 1)
            .unwrap();
    }

    /// Syncs until a message with `text` has arrived (polling), returning every new message.
    pub(crate) async fn receive(&self, text: &str) -> Vec<shallot_client::store::StoredMessage> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let _ = self.messenger.sync().await;
            got.extend(self.messenger.store().take_unreported().unwrap());
            if got.iter().any(|m| m.text == text) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
