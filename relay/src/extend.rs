//! The extend service (`docs/spec.md` §6.4): for each circuit whose machine asked to be
//! extended, look the target up in the consensus (fetching a new one once if it is unknown),
//! reuse or open a link to it (proving our link key, checking theirs), record the circuit
//! there, and hand the result back to the circuit; then wake it when CREATED is due.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shallot_link::{LinkError, LinkKind};
use shallot_rt::lock;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::channel::Peer;
use crate::circuit::{ExtendRefusal, Input, Side};
use crate::core::Core;
use crate::netview::PeerInfo;
use crate::shell::{CircRef, ExtendRequest, Link};

/// The trace step (target `shallot_trace`) in which this relay, with no link to the relay it
/// is asked to extend to (and no other attempt under way), starts opening one: `shallot bench
/// --trace --only circuits` counts the builds that waited for it.
pub const OPENING_A_LINK: &str = "no link to the next hop; opening one";

/// Serves extend requests until the relay stops. The common case, a listed relay with a link
/// open already, is attached here, so that CREATE leaves without waiting for another task to
/// be scheduled; opening a link (or fetching a consensus first) runs in a task of its own.
/// CREATED's deadline is kept by the relay's one [`crate::created_wait`] task.
pub(crate) async fn serve(core: Arc<Core>, mut requests: mpsc::UnboundedReceiver<ExtendRequest>) {
    while let Some(request) = requests.recv().await {
        let open = core
            .netview()
            .lookup(&request.target)
            .and_then(|peer| core.link_to(&peer.id));
        match open {
            Some(link) => {
                if attach(&core, &request.circ, link) {
                    tracing::trace!(target: "shallot_trace", relay = %core.env.me, "EXTEND: CREATE queued to the next hop");
                    core.created_wait.watch(&request.circ);
                }
            }
            None => {
                tokio::spawn(run(core.clone(), request));
            }
        }
    }
}

/// Runs one extend request to completion (or to the circuit's destruction).
async fn run(core: Arc<Core>, ExtendRequest { circ, target }: ExtendRequest) {
    let env = &core.env;
    let mut peer = core.netview().lookup(&target).cloned();
    if peer.is_none() && core.config.network.is_some() {
        // The target may be newer than our consensus: fetch one and look again.
        let changed = core.netview_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        core.refetch.notify_one();
        if tokio::time::timeout(Duration::from_secs(3), changed)
            .await
            .is_ok()
        {
            peer = core.netview().lookup(&target).cloned();
        }
    }
    let Some(peer) = peer else {
        return circ.input(env, Input::ExtendFailed(ExtendRefusal::NotListed));
    };
    let link = match link_to(&core, &peer).await {
        Ok(link) => link,
        Err(e) => {
            debug!("extend to {} failed: {e}", peer.id);
            return circ.input(env, Input::ExtendFailed(ExtendRefusal::Unreachable(e)));
        }
    };
    if attach(&core, &circ, link) {
        tracing::trace!(target: "shallot_trace", relay = %core.env.me, "EXTEND: CREATE queued to the next hop");
        core.created_wait.watch(&circ);
    }
}

/// Records `circ` on `link` and lets it send CREATE there; false if it was refused or the
/// circuit went away meanwhile.
fn attach(core: &Core, circ: &Arc<crate::shell::Circuit>, link: Arc<Link>) -> bool {
    let env = &core.env;
    let entry = CircRef {
        circ: circ.clone(),
        side: Side::Next,
    };
    let Some(id) = link.add_outbound(entry, core.config.limits.circuits_per_link) else {
        circ.input(env, Input::ExtendFailed(ExtendRefusal::NoFreeId));
        return false;
    };
    circ.attach_next(env, link, id)
}

/// An open link to `peer`, opening one if there is none (one attempt at a time per peer).
async fn link_to(core: &Arc<Core>, peer: &PeerInfo) -> Result<Arc<Link>, LinkError> {
    if let Some(link) = core.link_to(&peer.id) {
        return Ok(link);
    }
    let gate = lock(&core.connect_locks)
        .entry(peer.id)
        .or_default()
        .clone();
    let _held = gate.lock().await;
    if let Some(link) = core.link_to(&peer.id) {
        return Ok(link);
    }
    tracing::trace!(target: "shallot_trace", relay = %core.env.me, "{}", OPENING_A_LINK);
    let limits = &core.config.limits;
    let stream = connect_from(core.config.listen, peer.address, limits.socket_send_buffer);
    let stream = tokio::time::timeout(limits.handshake_timeout, stream)
        .await
        .map_err(|_| LinkError::Timeout)??;
    let (reader, writer) = shallot_link::connect_relay(
        stream,
        &core.keys.link,
        &peer.link_key,
        limits.handshake_timeout,
    )
    .await?;
    let who = Peer {
        kind: LinkKind::Relay,
        ip: peer.address.ip(),
        relay: Some(peer.id),
        we_initiated: true,
        counted: false,
    };
    tracing::trace!(target: "shallot_trace", relay = %core.env.me, "link to a relay opened");
    let link = core.start_channel(who, reader, writer);
    crate::stats::Stats::bump(&core.env.stats.links_opened_for_extends);
    Ok(link)
}

/// Connects to `to` from this relay's own listening address (when it names one), so that
/// other relays see this relay's address rather than whatever the system would pick (behind a
/// NAT, the advertised address is not one this host can bind).
async fn connect_from(
    listen: SocketAddr,
    to: SocketAddr,
    send_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(size) = send_buffer {
        socket.set_send_buffer_size(size)?;
    }
    if !listen.ip().is_unspecified() && listen.is_ipv4() == to.is_ipv4() {
        socket.bind(SocketAddr::new(listen.ip(), 0))?;
    }
    socket.connect(to).await
}
