//! Starting and stopping a relay: the listener, its accept loop, the out-of-memory task, and
//! graceful shutdown (`docs/spec.md` §6).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shallot_crypto::keyfile::KeyFileError;
use shallot_crypto::keys::RelayId;
use shallot_link::LinkKind;
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::channel::Peer;
use crate::circuit::{CircuitError, Input, Side};
use crate::config::RelayConfig;
use crate::core::Core;
use crate::keys;
use crate::mailbox::repair::{Repairer, HANDOFF_LIMIT};
use crate::mailbox::store::StoreError;
use crate::mailbox::MailboxService;
use crate::netview::NetView;
use crate::shell::MailboxDoor;
use crate::stats::{Stats, StatsSnapshot};

/// Why a relay could not start.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Its keys could not be loaded.
    #[error("{0}")]
    Keys(#[from] KeyFileError),
    /// Its mailbox store could not be opened.
    #[error("cannot open the mailbox store: {0}")]
    Mailbox(#[source] StoreError),
    /// It could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl RelayError {
    /// Whether starting again later may succeed (the address may be freed, the store's
    /// thread started); keys that do not load will not load next time either.
    pub fn is_retryable(&self) -> bool {
        match self {
            RelayError::Keys(_) => false,
            RelayError::Mailbox(e) => !matches!(e, StoreError::Db(_) | StoreError::File(_)),
            RelayError::Listen { .. } => true,
        }
    }
}

/// A running relay.
pub struct RelayHandle {
    core: Arc<Core>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    repair: Option<Arc<Repairer>>,
    /// Its mailbox store, if it offers mailboxes.
    store: Option<crate::mailbox::store::Store>,
}

/// Starts a relay whose keys are already in `config.data_dir` (see [`keys::init`]).
pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
    let keys = keys::load(&config.data_dir)?;
    let (onion, _) = keys::load_onion(
        &config.data_dir,
        config.timing.onion_key_rotation,
        config.timing.onion_key_grace,
        SystemTime::now(),
    )?;
    let listener = listen(config.listen, config.limits.socket_send_buffer).map_err(|source| {
        RelayError::Listen {
            addr: config.listen,
            source,
        }
    })?;
    let local_addr = listener.local_addr().map_err(|source| RelayError::Listen {
        addr: config.listen,
        source,
    })?;
    let mut mailbox = None;
    let mut door = None;
    if config.mailbox {
        let path = config.data_dir.join("mailbox.db");
        let limits = config.mailbox_limits.clone();
        let pending = Arc::new(Semaphore::new(limits.pending_requests));
        let service = MailboxService::open(&path, limits, keys.id, pending.clone())
            .map_err(RelayError::Mailbox)?;
        let (requests, incoming) = mpsc::unbounded_channel();
        let (gone, gone_incoming) = mpsc::unbounded_channel();
        mailbox = Some((Arc::new(service), incoming, gone_incoming));
        door = Some(MailboxDoor {
            requests,
            pending,
            gone,
            circuit_limits: config.mailbox_limits.circuit,
        });
    }
    // A relay listening on port 0 publishes the port it got.
    let address = match config.advertise {
        Some(a) => a,
        None => local_addr,
    };
    let network = config.network.clone();
    let (extends, extend_requests) = mpsc::unbounded_channel();
    let (dir_requests, dir_incoming) = mpsc::unbounded_channel();
    let core = Arc::new(Core::new(config, keys, onion, extends, door, dir_requests));
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(accept_loop(core.clone(), listener, stopped.clone())),
        tokio::spawn(oom_loop(core.clone(), stopped.clone())),
        tokio::spawn(idle_loop(core.clone(), stopped.clone())),
        tokio::spawn(rotation_loop(core.clone(), stopped.clone())),
        tokio::spawn(crate::extend::serve(core.clone(), extend_requests)),
        tokio::spawn(crate::created_wait::serve(
            core.env.clone(),
            core.created_wait.clone(),
            stopped.clone(),
        )),
        tokio::spawn(crate::dir_cache::serve(core.clone(), dir_incoming)),
    ];
    let mut repair = None;
    let store = mailbox.as_ref().map(|(service, _, _)| service.store());
    if let Some((service, incoming, gone)) = mailbox {
        let settings = core.config.mailbox_limits.repair.clone();
        if settings.enabled {
            let repairer = Arc::new(Repairer::new(
                core.keys.id,
                service.store(),
                core.env.clone(),
                settings,
            ));
            tasks.push(tokio::spawn(
                repairer
                    .clone()
                    .follow(core.consensus.subscribe(), stopped.clone()),
            ));
            tasks.push(tokio::spawn(repairer.clone().sync_loop(stopped.clone())));
            repair = Some(repairer);
        }
        tasks.push(tokio::spawn(service.clone().serve(
            core.env.clone(),
            incoming,
            gone,
        )));
        tasks.push(tokio::spawn(service.expiry_loop()));
    }
    if let Some(network) = network {
        tasks.push(tokio::spawn(crate::publish::directory_loop(
            core.clone(),
            network,
            address,
            stopped.clone(),
        )));
    }
    info!(fingerprint = %core.keys.id, %local_addr, "relay listening");
    Ok(RelayHandle {
        core,
        local_addr,
        stop,
        tasks,
        repair,
        store,
    })
}

impl RelayHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its fingerprint.
    pub fn id(&self) -> RelayId {
        self.core.keys.id
    }

    /// Its counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.core.stats().snapshot()
    }

    /// How much its mailbox store has committed since it started (`None` if it offers no
    /// mailboxes): commits, the requests they carried and the time spent committing (group
    /// commit, `docs/spec.md` §9.4).
    pub fn mailbox_commits(&self) -> Option<crate::mailbox::store::CommitCounts> {
        self.store.as_ref().map(|s| s.commit_counts())
    }

    /// Cells queued on all its links now.
    pub fn queued_cells(&self) -> usize {
        self.core.env.budget.queued()
    }

    /// Bytes of buffer the relay's links hold now, as counted against their share of the
    /// memory budget (`Limits::link_buffer_bytes`, `docs/spec.md` §6.6).
    pub fn link_buffer_bytes(&self) -> usize {
        self.core.buffers.bytes()
    }

    /// Circuits open now (counted once per circuit).
    pub fn open_circuits(&self) -> usize {
        self.core
            .links()
            .iter()
            .map(|l| l.count_side(Side::Prev))
            .sum()
    }

    /// How many relays it may extend circuits to (from its consensus).
    pub fn known_relays(&self) -> usize {
        self.core.netview().len()
    }

    /// A view of its figures that can be kept and read while it runs.
    pub fn monitor(&self) -> RelayMonitor {
        RelayMonitor {
            core: self.core.clone(),
        }
    }

    /// Replaces its view of the network (normally from each new consensus).
    pub fn set_netview(&self, view: NetView) {
        self.core.set_netview(view);
    }

    /// The onion key it publishes now.
    pub fn onion_key(&self) -> [u8; 32] {
        self.core.onion_keys().current.public().to_bytes()
    }

    /// Its link key.
    pub fn link_key(&self) -> [u8; 32] {
        self.core.keys.link.public().to_bytes()
    }

    /// Makes the relay misbehave as `how` from now on, on every circuit (`None`: behave
    /// again). Only in builds with the test-only `misbehave` feature.
    #[cfg(feature = "misbehave")]
    pub fn set_misbehaviour(&self, how: Option<crate::misbehave::Misbehaviour>) {
        self.core.env.misbehaviour.set(how);
    }

    /// Stops at once without telling any peer, as a crash would: every link is dropped with
    /// nothing more sent on it. Returns once the listening socket is closed, so the address
    /// can be bound again. For fault tests.
    pub async fn abort(self) {
        self.core.shutting_down.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.core.abort_all_channels();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Stops gracefully: hands its mailboxes over to the relays that will hold them (within
    /// a time limit, `docs/spec.md` §9.6), stops accepting, destroys every circuit (telling
    /// both neighbours), gives links a moment to flush, and returns.
    pub async fn shutdown(self) {
        if let Some(repair) = &self.repair {
            repair.hand_over(HANDOFF_LIMIT).await;
        }
        self.core.shutting_down.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        let links = self.core.links();
        for link in &links {
            for (_, r) in link.circuits() {
                r.circ
                    .input(&self.core.env, Input::Kill(CircuitError::ShuttingDown));
            }
        }
        // Let writers flush the destroy cells (bounded), then close everything.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.core.env.budget.queued() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for link in links {
            self.core.close_channel(&link);
        }
        info!("relay stopped");
    }
}

/// Reads a running relay's figures, for heartbeats and metrics.
#[derive(Clone)]
pub struct RelayMonitor {
    core: Arc<Core>,
}

/// A running relay's figures at one moment.
#[derive(Debug, Clone)]
pub struct RelayReport {
    /// Its fingerprint.
    pub id: RelayId,
    /// Its counters.
    pub stats: StatsSnapshot,
    /// Circuits open now.
    pub circuits: usize,
    /// Links open now.
    pub links: usize,
    /// Bytes of cells queued on all its links now.
    pub queued_bytes: u64,
    /// Relays it may extend to, from its consensus.
    pub known_relays: usize,
}

impl RelayReport {
    /// How often a limit refused or cut something: connections, creations and extends
    /// refused, circuits destroyed for memory or a full queue.
    pub fn limits_hit(&self) -> u64 {
        let s = &self.stats;
        s.connections_refused
            + s.creates_refused
            + s.extends_refused
            + s.circuits_destroyed_for_memory
            + s.circuits_destroyed_for_queue
    }
}

impl RelayMonitor {
    /// The figures now.
    pub fn report(&self) -> RelayReport {
        let links = self.core.links();
        RelayReport {
            id: self.core.keys.id,
            stats: self.core.stats().snapshot(),
            circuits: links.iter().map(|l| l.count_side(Side::Prev)).sum(),
            links: links.len(),
            queued_bytes: (self.core.env.budget.queued() as u64)
                .saturating_mul(crate::queue::HELD_CELL_BYTES as u64),
            known_relays: self.core.netview().len(),
        }
    }
}

/// Binds the listening socket; accepted sockets inherit its send-buffer size.
fn listen(addr: SocketAddr, send_buffer: Option<u32>) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if let Some(size) = send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(core: Arc<Core>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        if !core.admit_connection(peer.ip()) {
            Stats::bump(&core.stats().connections_refused);
            continue;
        }
        tokio::spawn(handshake(core.clone(), stream, peer));
    }
}

async fn handshake(core: Arc<Core>, stream: TcpStream, peer: SocketAddr) {
    let accepted = shallot_link::accept(
        stream,
        &core.keys.link,
        core.config.limits.handshake_timeout,
    )
    .await;
    match accepted {
        Ok(acc) if acc.kind == LinkKind::Probe => {
            crate::publish::answer_probe(&core, acc, peer).await;
            shallot_rt::lock(&core.conns).release(peer.ip());
        }
        Ok(acc) if acc.kind == LinkKind::Client && !core.admit_client_link() => {
            debug!("client links full: refusing one");
            Stats::bump(&core.stats().connections_refused);
            shallot_rt::lock(&core.conns).release(peer.ip());
            drop(acc);
        }
        Ok(acc) => {
            let peer_relay = match (acc.kind, acc.peer_key) {
                (LinkKind::Relay, Some(key)) => core.netview().identify(&key),
                _ => None,
            };
            let who = Peer {
                kind: acc.kind,
                ip: peer.ip(),
                relay: peer_relay,
                we_initiated: false,
                counted: true,
            };
            core.start_channel(who, acc.reader, acc.writer);
        }
        Err(e) => {
            debug!("link handshake failed: {e}");
            Stats::bump(&core.stats().handshakes_failed);
            shallot_rt::lock(&core.conns).release(peer.ip());
        }
    }
}

async fn oom_loop(core: Arc<Core>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = core.env.oom.notified() => core.relieve_memory_pressure(),
            _ = core.buffers.over_cap() => core.relieve_buffer_pressure(),
            _ = stopped.changed() => return,
        }
    }
}

/// Closes idle links and destroys idle circuits, checking four times per shorter timeout.
async fn idle_loop(core: Arc<Core>, mut stopped: watch::Receiver<bool>) {
    let limits = &core.config.limits;
    let tick = (limits.link_idle_timeout.min(limits.circuit_idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => core.expire_idle(std::time::Instant::now()),
            _ = stopped.changed() => return,
        }
    }
}

/// Rotates the onion key when it is due and drops the previous one when its grace ends.
async fn rotation_loop(core: Arc<Core>, mut stopped: watch::Receiver<bool>) {
    let timing = core.config.timing.clone();
    let tick = (timing.onion_key_rotation.min(timing.onion_key_grace) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stopped.changed() => return,
        }
        match keys::load_onion(
            &core.config.data_dir,
            timing.onion_key_rotation,
            timing.onion_key_grace,
            SystemTime::now(),
        ) {
            Ok((onion, rotated)) => {
                if rotated {
                    info!("rotated the onion key");
                    core.republish.notify_one();
                }
                core.admission.set_onion_keys(onion);
            }
            Err(e) => tracing::warn!("onion key rotation failed: {e}"),
        }
    }
}
