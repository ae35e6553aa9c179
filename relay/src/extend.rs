//! Extending a circuit to the next relay (`docs/spec.md` §6.4): check the target, reuse or
//! open a link to it (proving our link key, checking theirs against the consensus), send a
//! create, and wait for the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shallot_crypto::onion::MAX_HOPS;
use shallot_link::LinkKind;
use shallot_proto::cell::{ChanMsg, Create, DestroyReason};
use shallot_proto::relay_msg::Extend;
use tokio::net::{TcpSocket, TcpStream};
use tracing::debug;

use crate::channel::{lock, Channel, CircRef, Side};
use crate::circuit::Circuit;
use crate::core::Core;
use crate::netview::PeerInfo;
use crate::stats::Stats;

/// Runs one extend request to completion (or to the circuit's destruction).
pub(crate) async fn run(core: Arc<Core>, circ: Arc<Circuit>, ext: Extend) {
    let mut checked = check_target(&core, &circ, &ext);
    if checked == Err(DestroyReason::ConnectFailed) && core.config.network.is_some() {
        // The target may be newer than our consensus: fetch one and look again.
        let changed = core.netview_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        core.refetch.notify_one();
        if tokio::time::timeout(Duration::from_secs(3), changed)
            .await
            .is_ok()
        {
            checked = check_target(&core, &circ, &ext);
        }
    }
    let peer = match checked {
        Ok(peer) => peer,
        Err(reason) => {
            Stats::bump(&core.stats.extends_refused);
            return circ.destroy(&core, reason, None);
        }
    };
    let chan = match channel_to(&core, &peer).await {
        Ok(chan) => chan,
        Err(e) => {
            debug!("extend to {} failed: {e}", peer.id);
            Stats::bump(&core.stats.extends_refused);
            return circ.destroy(&core, DestroyReason::ConnectFailed, None);
        }
    };
    {
        let mut st = lock(&circ.state);
        if st.destroyed {
            return;
        }
        let Some(id) = chan.add_outbound_circuit(
            &core,
            CircRef {
                circ: circ.clone(),
                side: Side::Next,
            },
        ) else {
            drop(st);
            return circ.destroy(&core, DestroyReason::ResourceLimit, None);
        };
        st.next = Some((chan.clone(), id));
        chan.send_control(
            &core,
            id,
            ChanMsg::Create(Create {
                depth: circ.depth + 1,
                handshake: ext.handshake,
            }),
        );
    }
    tokio::time::sleep(core.config.limits.extend_timeout).await;
    let timed_out = {
        let st = lock(&circ.state);
        st.extending && !st.destroyed
    };
    if timed_out {
        circ.destroy(&core, DestroyReason::Timeout, None);
    }
}

fn check_target(core: &Core, circ: &Circuit, ext: &Extend) -> Result<PeerInfo, DestroyReason> {
    if circ.depth >= MAX_HOPS {
        return Err(DestroyReason::Protocol);
    }
    if ext.target == core.keys.id {
        debug!("refusing to extend to ourselves");
        return Err(DestroyReason::Protocol);
    }
    if circ.prev.peer_relay == Some(ext.target) {
        debug!("refusing to extend back along the circuit");
        return Err(DestroyReason::Protocol);
    }
    core.netview()
        .lookup(&ext.target)
        .cloned()
        .ok_or(DestroyReason::ConnectFailed)
}

/// An open channel to `peer`, opening one if there is none.
pub(crate) async fn channel_to(
    core: &Arc<Core>,
    peer: &PeerInfo,
) -> Result<Arc<Channel>, shallot_link::LinkError> {
    if let Some(chan) = core.channel_to(&peer.id) {
        return Ok(chan);
    }
    let gate = lock(&core.connect_locks)
        .entry(peer.id)
        .or_default()
        .clone();
    let _held = gate.lock().await;
    if let Some(chan) = core.channel_to(&peer.id) {
        return Ok(chan);
    }
    let limit = core.config.limits.handshake_timeout;
    let stream = connect_from(
        core.config.listen,
        peer.address,
        core.config.limits.socket_send_buffer,
    );
    let stream = tokio::time::timeout(limit, stream)
        .await
        .map_err(|_| shallot_link::LinkError::Timeout)??;
    let (reader, writer) =
        shallot_link::connect_relay(stream, &core.keys.link, &peer.link_key, limit).await?;
    let chan = Channel::new(
        core.next_channel_id(),
        LinkKind::Relay,
        peer.address.ip(),
        Some(peer.id),
        true,
        false,
    );
    Ok(core.start_channel(chan, reader, writer))
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
