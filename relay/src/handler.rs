//! Dispatch of each cell a channel reads (`docs/spec.md` §6.3): create, created, relay and
//! destroy. A cell that does not decode is a protocol violation that ends the link; problems
//! confined to one circuit destroy only that circuit.

use std::sync::Arc;
use std::time::SystemTime;

use shallot_crypto::ntor::{server_handshake, NtorError};
use shallot_crypto::onion::{HopKeys, RelayLayer};
use shallot_link::LinkKind;
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, DestroyReason};
use shallot_proto::DecodeError;
use tracing::debug;

use crate::channel::{lock, Channel, CircRef, Side};
use crate::circuit::Circuit;
use crate::core::Core;
use crate::stats::Stats;

/// Handles one encoded cell. An error means the peer broke the protocol and the link must go.
pub(crate) fn handle_cell(
    core: &Arc<Core>,
    chan: &Arc<Channel>,
    raw: &[u8],
) -> Result<(), DecodeError> {
    let cell = Cell::decode(raw)?;
    let id = cell.circ_id;
    match cell.msg {
        ChanMsg::Padding => {}
        ChanMsg::Create(create) => handle_create(core, chan, id, create),
        ChanMsg::Created(reply) => match chan.circuit(id) {
            Some(CircRef {
                circ,
                side: Side::Next,
            }) => circ.on_created(core, reply),
            Some(CircRef { circ, .. }) => circ.destroy(core, DestroyReason::Protocol, None),
            None => Stats::bump(&core.stats.cells_for_unknown_circuits),
        },
        ChanMsg::Relay(payload) => match chan.circuit(id) {
            Some(CircRef {
                circ,
                side: Side::Prev,
            }) => circ.forward(core, payload),
            Some(CircRef {
                circ,
                side: Side::Next,
            }) => circ.backward(core, payload),
            None => Stats::bump(&core.stats.cells_for_unknown_circuits),
        },
        ChanMsg::Destroy(reason) => {
            if let Some(r) = chan.circuit(id) {
                r.circ.destroy(core, reason, Some(r.side));
            }
        }
    }
    Ok(())
}

fn refuse(core: &Core, chan: &Channel, id: CircId, reason: DestroyReason) {
    Stats::bump(&core.stats.creates_refused);
    chan.send_control(core, id, ChanMsg::Destroy(reason));
}

fn handle_create(core: &Arc<Core>, chan: &Arc<Channel>, id: CircId, create: Create) {
    // The peer chooses ids with the top bit set exactly when it opened the link.
    if id.chosen_by_initiator() == chan.we_initiated {
        return refuse(core, chan, id, DestroyReason::Protocol);
    }
    if let Some(existing) = chan.circuit(id) {
        debug!(channel = chan.id, "create on a circuit id already in use");
        // Destroying it sends the one DESTROY this id gets.
        Stats::bump(&core.stats.creates_refused);
        return existing.circ.destroy(core, DestroyReason::Protocol, None);
    }
    if lock(&chan.circuits).len() >= core.config.limits.circuits_per_link {
        return refuse(core, chan, id, DestroyReason::ResourceLimit);
    }
    let rate_limited = chan.kind == LinkKind::Client || !chan.is_listed_relay();
    if rate_limited && !core.allow_create(chan.peer_ip) {
        return refuse(core, chan, id, DestroyReason::ResourceLimit);
    }
    let onion = core.onion_keys();
    let accepted = onion.accepted(SystemTime::now());
    let mut rng = rand::thread_rng();
    let (reply, seed) =
        match server_handshake(&mut rng, &core.keys.id, &accepted, &create.handshake) {
            Ok(done) => done,
            Err(NtorError::UnknownOnionKey) => {
                return refuse(core, chan, id, DestroyReason::OnionKey)
            }
            Err(_) => return refuse(core, chan, id, DestroyReason::Protocol),
        };
    let layer = match HopKeys::from_key_seed(&seed)
        .ok()
        .and_then(|keys| RelayLayer::new(create.depth, &keys).ok())
    {
        Some(layer) => layer,
        None => return refuse(core, chan, id, DestroyReason::Protocol),
    };
    let circ = Arc::new(Circuit::new(layer, chan.clone(), id));
    lock(&chan.circuits).insert(
        id,
        CircRef {
            circ,
            side: Side::Prev,
        },
    );
    Stats::bump(&core.stats.circuits_created);
    chan.send_control(core, id, ChanMsg::Created(reply));
}
