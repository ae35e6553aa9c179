//! The authority's HTTP server: hyper HTTP/1 connections with time limits, connection slots
//! counted per client network, and the per-network upload rate limit (`docs/spec.md` §5.8).
//!
//! Each connection must send complete request headers within `request_timeout_secs`, and
//! lives at most [`MAX_CONNECTION_SECS_FACTOR`] times that long in all. Bodies are read by
//! the handlers in [`super::api`] under the same time limit and a size cap.
//!
//! Connection slots: at most `max_connections_per_network` from one /24 (IPv4) or /64 (IPv6),
//! and `max_connections` in all, of which `reserved_authority_connections` only the other
//! authorities may take (votes, signatures, descriptors), `reserved_relay_connections` only
//! relays a probe has proven, from their own address ([`RELAY_SLOTS_PER_IP`] each; descriptor
//! uploads and consensus fetches), and `reserved_fetch_connections` are kept for consensus
//! fetches: a connection in one of those may only `GET /consensus`. So a flood of connections
//! from many networks cannot keep clients from the consensus, known relays from updating their
//! descriptors, nor the authorities from each other.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::api::{router, ApiError, PeerAddr};
use super::Shared;
use shallot_directory::network::NetworkFile;
use shallot_directory::routable::client_network;

/// A connection lives at most this many request timeouts.
pub const MAX_CONNECTION_SECS_FACTOR: u64 = 6;
/// Client networks whose upload counts are tracked at once; beyond this, uploads from new
/// networks are refused until old windows expire.
const MAX_TRACKED_UPLOADERS: usize = 100_000;
const UPLOAD_WINDOW: Duration = Duration::from_secs(60);
/// Connections one proven relay's address may hold in the slots kept for relays.
pub const RELAY_SLOTS_PER_IP: u64 = 2;

/// Which pool a connection's slot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotClass {
    /// The shared pool: any request.
    General,
    /// Kept for the other authorities.
    Authority,
    /// Kept for consensus fetches: `GET /consensus`, `/consensus.z`, `/consensus/diff/…` only.
    Fetch,
    /// Kept for proven relays: `POST /descriptor` and the consensus fetches only.
    Relay,
}

impl SlotClass {
    /// Whether a connection in this pool may make this request.
    pub fn allows(self, method: &hyper::Method, path: &str) -> bool {
        let fetch = method == hyper::Method::GET
            && (path == "/consensus"
                || path == "/consensus.z"
                || path.starts_with("/consensus/diff/"));
        match self {
            SlotClass::General | SlotClass::Authority => true,
            SlotClass::Fetch => fetch,
            SlotClass::Relay => fetch || (method == hyper::Method::POST && path == "/descriptor"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_network: HashMap<[u8; 9], u64>,
    general: u64,
    authority: u64,
    fetch: u64,
    relay: u64,
    relay_per_ip: HashMap<IpAddr, u64>,
}

/// Connection counts and upload windows.
pub(crate) struct Limits {
    connections: Mutex<Counts>,
    uploads: Mutex<HashMap<[u8; 9], (Instant, u64)>>,
    uploads_per_minute: u64,
    per_network: u64,
    general: u64,
    authority: u64,
    fetch: u64,
    relay: u64,
    authorities: HashSet<IpAddr>,
    /// The addresses of relays a probe has proven, refreshed each probe round.
    relay_ips: Mutex<HashSet<IpAddr>>,
}

impl Limits {
    pub(crate) fn new(network: &NetworkFile, me: &shallot_crypto::keys::VerifyingKey) -> Self {
        let p = &network.params;
        let authority = p.reserved_authority_connections;
        let fetch = p.reserved_fetch_connections;
        let relay = p.reserved_relay_connections;
        Limits {
            connections: Mutex::new(Counts::default()),
            uploads: Mutex::new(HashMap::new()),
            uploads_per_minute: p.max_uploads_per_minute,
            per_network: p.max_connections_per_network,
            general: p
                .max_connections
                .saturating_sub(authority.saturating_add(fetch).saturating_add(relay)),
            authority,
            fetch,
            relay,
            relay_ips: Mutex::new(HashSet::new()),
            authorities: network
                .authorities
                .iter()
                .filter(|a| &a.key != me)
                .map(|a| a.address.ip())
                .collect(),
        }
    }

    /// Counts one upload from `ip`'s network; false if it is over its limit for the current
    /// minute (a window that starts at its first upload).
    pub(crate) fn allow_upload(&self, ip: IpAddr) -> bool {
        let net = client_network(ip);
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_TRACKED_UPLOADERS {
            map.retain(|_, (start, _)| now.duration_since(*start) < UPLOAD_WINDOW);
            if map.len() >= MAX_TRACKED_UPLOADERS && !map.contains_key(&net) {
                return false;
            }
        }
        let (start, count) = map.entry(net).or_insert((now, 0));
        if now.duration_since(*start) >= UPLOAD_WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.uploads_per_minute
    }

    /// Replaces the set of proven relays' addresses.
    pub(crate) fn set_relay_ips(&self, ips: HashSet<IpAddr>) {
        *self.relay_ips.lock().unwrap_or_else(|e| e.into_inner()) = ips;
    }

    /// Adds a proven relay's address (until the next [`Limits::set_relay_ips`]).
    pub(crate) fn add_relay_ip(&self, ip: IpAddr) {
        self.relay_ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ip);
    }

    fn is_relay(&self, ip: &IpAddr) -> bool {
        self.relay_ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(ip)
    }

    /// A slot for a connection from `ip`, or `None` when there is none for it. The shared
    /// pool first (within the per-network limit, which the other authorities are exempt
    /// from); then another authority's pool; then, for a proven relay's address, the relays'
    /// pool (whatever its network holds); then the fetch pool.
    pub(crate) fn open_connection(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut c = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let net = client_network(ip);
        let is_authority = self.authorities.contains(&ip);
        let in_network = c.per_network.get(&net).copied().unwrap_or(0);
        let network_ok = in_network < self.per_network || is_authority;
        let class = if network_ok && c.general < self.general {
            c.general += 1;
            SlotClass::General
        } else if is_authority && c.authority < self.authority {
            c.authority += 1;
            SlotClass::Authority
        } else if c.relay < self.relay
            && c.relay_per_ip.get(&ip).copied().unwrap_or(0) < RELAY_SLOTS_PER_IP
            && self.is_relay(&ip)
        {
            c.relay += 1;
            *c.relay_per_ip.entry(ip).or_insert(0) += 1;
            SlotClass::Relay
        } else if network_ok && c.fetch < self.fetch {
            c.fetch += 1;
            SlotClass::Fetch
        } else {
            return None;
        };
        *c.per_network.entry(net).or_insert(0) += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            net,
            ip,
            class,
        })
    }
}

/// One counted connection; uncounted when dropped.
pub(crate) struct ConnectionSlot {
    limits: Arc<Limits>,
    net: [u8; 9],
    ip: IpAddr,
    class: SlotClass,
}

impl ConnectionSlot {
    /// The pool it came from.
    pub(crate) fn class(&self) -> SlotClass {
        self.class
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self
            .limits
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match self.class {
            SlotClass::General => c.general = c.general.saturating_sub(1),
            SlotClass::Authority => c.authority = c.authority.saturating_sub(1),
            SlotClass::Fetch => c.fetch = c.fetch.saturating_sub(1),
            SlotClass::Relay => {
                c.relay = c.relay.saturating_sub(1);
                if let Some(n) = c.relay_per_ip.get_mut(&self.ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.relay_per_ip.remove(&self.ip);
                    }
                }
            }
        }
        if let Some(n) = c.per_network.get_mut(&self.net) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_network.remove(&self.net);
            }
        }
    }
}

/// Accepts and serves connections until the task is aborted (which ends every connection).
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let limits = shared.limits.clone();
    let timeout = Duration::from_secs(shared.network.params.request_timeout_secs);
    let lifetime = timeout * u32::try_from(MAX_CONNECTION_SECS_FACTOR).unwrap_or(6);
    let app = router(shared.clone());
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = limits.open_connection(peer.ip()) else {
            tracing::debug!("refusing connection from {peer}: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let class = slot.class();
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let allowed = class.allows(req.method(), req.uri().path());
                let call = allowed.then(|| svc.call(req));
                async move {
                    match call {
                        Some(call) => call.await,
                        None => Ok(ApiError::new(
                            hyper::StatusCode::SERVICE_UNAVAILABLE,
                            if class == SlotClass::Relay {
                                "the authority is busy: only descriptor uploads and consensus \
                                 fetches are served now"
                            } else {
                                "the authority is busy: only consensus fetches are served now"
                            },
                        )
                        .into_response()),
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(lifetime, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("connection from {peer} ended: {e}"),
                Err(_) => tracing::debug!("connection from {peer} closed: lifetime limit"),
            }
        });
    }
}
