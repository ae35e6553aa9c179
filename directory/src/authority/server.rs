//! The authority's HTTP server: hyper HTTP/1 connections with time limits, a cap on
//! connections per client IP address and in total, and the per-IP upload rate limit
//! (`docs/spec.md` §5.8).
//!
//! Each connection must send complete request headers within `request_timeout_secs`, and
//! lives at most [`MAX_CONNECTION_SECS_FACTOR`] times that long in all. Bodies are read by
//! the handlers in [`super::api`] under the same time limit and a size cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::api::{router, PeerAddr};
use super::Shared;
use crate::network::NetworkParams;

/// Connections one client IP address may hold open at once.
pub const MAX_CONNECTIONS_PER_IP: usize = 32;
/// Connections held open at once, in total.
pub const MAX_CONNECTIONS: usize = 1024;
/// A connection lives at most this many request timeouts.
pub const MAX_CONNECTION_SECS_FACTOR: u64 = 6;
/// Client addresses whose upload counts are tracked at once; beyond this, uploads from new
/// addresses are refused until old windows expire.
const MAX_TRACKED_UPLOADERS: usize = 100_000;
const UPLOAD_WINDOW: Duration = Duration::from_secs(60);

/// Connection counts and upload windows.
pub(crate) struct Limits {
    connections: Mutex<(HashMap<IpAddr, usize>, usize)>,
    uploads: Mutex<HashMap<IpAddr, (Instant, u64)>>,
    uploads_per_minute: u64,
}

impl Limits {
    pub fn new(params: &NetworkParams) -> Self {
        Limits {
            connections: Mutex::new((HashMap::new(), 0)),
            uploads: Mutex::new(HashMap::new()),
            uploads_per_minute: params.max_uploads_per_minute,
        }
    }

    /// Counts one upload from `ip`; false if it is over its limit for the current minute
    /// (a window that starts at its first upload).
    pub fn allow_upload(&self, ip: IpAddr) -> bool {
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_TRACKED_UPLOADERS {
            map.retain(|_, (start, _)| now.duration_since(*start) < UPLOAD_WINDOW);
            if map.len() >= MAX_TRACKED_UPLOADERS && !map.contains_key(&ip) {
                return false;
            }
        }
        let (start, count) = map.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= UPLOAD_WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.uploads_per_minute
    }

    fn open_connection(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut guard = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        let (per_ip, total) = &mut *guard;
        if *total >= MAX_CONNECTIONS {
            return None;
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_IP {
            return None;
        }
        *n += 1;
        *total += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }
}

/// One counted connection; uncounted when dropped.
struct ConnectionSlot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut guard = self
            .limits
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (per_ip, total) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
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
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(PeerAddr(peer));
                svc.call(req)
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
