//! Dispatch of each cell a link reads (`docs/spec.md` §6.3): CREATE is admitted or refused
//! here; CREATED, RELAY and DESTROY go to the circuit the link knows by that id, as the input
//! from that side. Cells that do not decode never get here: the link's read loop ends the link.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use shallot_crypto::keys::RelayId;
use shallot_link::LinkKind;
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, DestroyReason};
use tracing::debug;

use crate::circuit::{CircuitError, CircuitMachine, Input, Placement, Side, Violation};
use crate::create::{answer_now, Admission};
use crate::shell::{CircRef, Circuit, Env, Link};
use crate::stats::Stats;

/// What a new circuit at this relay is told about where it sits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// This relay.
    pub(crate) me: RelayId,
    /// Time the next hop has to answer an extend's CREATE.
    pub(crate) extend_timeout: std::time::Duration,
}

/// Handles one cell read from `link`.
pub(crate) fn handle_cell(
    env: &Env,
    admission: &Admission,
    origin: &Origin,
    link: &Arc<Link>,
    cell: Cell,
) {
    let id = cell.circ_id;
    let (r, input) = match cell.msg {
        ChanMsg::Create(create) => return handle_create(env, admission, origin, link, id, create),
        ChanMsg::Destroy(reason) => match link.circuit(id) {
            Some(r) => {
                let side = r.side;
                (r, Input::Destroy(side, reason))
            }
            None => return,
        },
        ChanMsg::Created(reply) => match link.circuit(id) {
            Some(r) => {
                let side = r.side;
                (r, Input::Created(side, reply))
            }
            None => return Stats::bump(&env.stats.cells_for_unknown_circuits),
        },
        ChanMsg::Relay(payload) => match link.circuit(id) {
            Some(r) => {
                let side = r.side;
                (r, Input::Relay(side, payload))
            }
            None => return Stats::bump(&env.stats.cells_for_unknown_circuits),
        },
    };
    r.circ.input(env, input);
}

fn refuse(env: &Env, link: &Link, id: CircId, reason: DestroyReason) {
    Stats::bump(&env.stats.creates_refused);
    link.chan.send_control(id, ChanMsg::Destroy(reason));
}

/// CREATE: refused with DESTROY (no circuit made), in this order, for a wrong id parity, an id
/// in use (that circuit is destroyed instead), a full link, the create rate, or a failed
/// handshake; otherwise the circuit is recorded and CREATED answers.
fn handle_create(
    env: &Env,
    admission: &Admission,
    origin: &Origin,
    link: &Arc<Link>,
    id: CircId,
    create: Create,
) {
    let peer = link.chan.peer;
    // The peer chooses ids with the top bit set exactly when it opened the link.
    if id.chosen_by_initiator() == peer.we_initiated {
        return refuse(env, link, id, DestroyReason::Protocol);
    }
    if let Some(existing) = link.circuit(id) {
        debug!(
            channel = link.chan.id.0,
            "create on a circuit id already in use"
        );
        // Destroying it sends the one DESTROY this id gets.
        Stats::bump(&env.stats.creates_refused);
        let cause = CircuitError::Violation(Violation::CircIdInUse);
        return existing.circ.input(env, Input::Kill(cause));
    }
    if link.circuit_count() >= admission.circuits_per_link {
        return refuse(env, link, id, DestroyReason::ResourceLimit);
    }
    let rate_limited = peer.kind == LinkKind::Client || !peer.is_listed_relay();
    if rate_limited && !admission.allow_create(peer.ip, Instant::now()) {
        return refuse(env, link, id, DestroyReason::ResourceLimit);
    }
    let (layer, reply) = match answer_now(admission, &origin.me, &create, SystemTime::now()) {
        Ok(done) => done,
        Err(reason) => return refuse(env, link, id, reason),
    };
    let at = Placement {
        me: origin.me,
        prev_relay: peer.relay,
        extend_timeout: origin.extend_timeout,
    };
    let circ = Arc::new(Circuit::new(
        CircuitMachine::new(layer, at),
        link.clone(),
        id,
    ));
    link.insert(
        id,
        CircRef {
            circ,
            side: Side::Prev,
        },
    );
    Stats::bump(&env.stats.circuits_created);
    link.chan.send_control(id, ChanMsg::Created(reply));
}
