//! Dispatch of each cell a link reads (`docs/spec.md` §6.3): CREATE is admitted or refused
//! here; CREATED, RELAY and DESTROY go to the circuit the link knows by that id, as the input
//! from that side. Cells that do not decode never get here: the link's read loop ends the link.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use shallot_link::LinkKind;
use shallot_proto::cell::{Cell, ChanMsg, CircId, Create, DestroyReason};
use tracing::{debug, trace};

use crate::circuit::{CircuitError, CircuitMachine, Input, Side, Violation, MAX_CIRCUIT_DEPTH};
use crate::create::{answer_now, Admission};
use crate::shell::{CircRef, Circuit, Env, Link};
use crate::stats::Stats;

/// Handles one cell read from `link`.
pub(crate) fn handle_cell(env: &Env, admission: &Admission, link: &Arc<Link>, cell: Cell) {
    let id = cell.circ_id;
    let (r, input) = match cell.msg {
        ChanMsg::Create(create) => return handle_create(env, admission, link, id, create),
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
                if side == Side::Next {
                    trace!(target: "shallot_trace", relay = %env.me, "CREATED from the next hop");
                }
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
/// in use (that circuit is destroyed instead), a depth past [`MAX_CIRCUIT_DEPTH`], a full
/// link, the create rate, or a failed handshake; otherwise the circuit is recorded and CREATED
/// answers.
fn handle_create(env: &Env, admission: &Admission, link: &Arc<Link>, id: CircId, create: Create) {
    trace!(target: "shallot_trace", relay = %env.me, "CREATE received");
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
    if create.depth > MAX_CIRCUIT_DEPTH {
        return refuse(env, link, id, DestroyReason::Protocol);
    }
    if link.circuit_count() >= admission.circuits_per_link
        || env.budget.circuits() >= admission.max_circuits
    {
        return refuse(env, link, id, DestroyReason::ResourceLimit);
    }
    let rate_limited = peer.kind == LinkKind::Client || !peer.is_listed_relay();
    if rate_limited && !admission.allow_create(peer.ip, Instant::now()) {
        return refuse(env, link, id, DestroyReason::ResourceLimit);
    }
    let (layer, reply) = match answer_now(admission, &env.me, &create, SystemTime::now()) {
        Ok(done) => done,
        Err(reason) => return refuse(env, link, id, reason),
    };
    let circ = Arc::new(Circuit::new(
        CircuitMachine::new(layer, Instant::now()),
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
    trace!(target: "shallot_trace", relay = %env.me, "CREATE answered, CREATED queued");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use shallot_crypto::keys::{OnionKeypair, RelayId};
    use shallot_crypto::ntor::ClientHandshake;
    use shallot_link::CellQueue;
    use shallot_proto::cell::CELL_LEN;
    use tokio::sync::{mpsc, Notify};

    use super::*;
    use crate::channel::{Channel, ChannelId, Peer};
    use crate::config::Limits;
    use crate::keys::OnionKeys;
    use crate::queue::QueueBudget;

    const ME: RelayId = RelayId([1; 20]);

    struct Rig {
        env: Env,
        admission: Admission,
        onion: Arc<OnionKeypair>,
        link: Arc<Link>,
    }

    fn rig(limits: Limits, kind: LinkKind) -> Rig {
        let (extends, _) = mpsc::unbounded_channel();
        let budget = Arc::new(QueueBudget::default());
        let env = Env {
            me: ME,
            extend_timeout: Duration::from_secs(10),
            budget: budget.clone(),
            stats: Stats::default(),
            circuit_queue_cells: 100,
            queue_cap_cells: 1000,
            oom: Notify::new(),
            extends,
            mailbox: None,
            dir_requests: mpsc::unbounded_channel().0,
            #[cfg(feature = "misbehave")]
            misbehaviour: Default::default(),
        };
        let onion = Arc::new(OnionKeypair::generate(&mut rand::thread_rng()));
        let keys = OnionKeys {
            current: onion.clone(),
            current_since: SystemTime::now(),
            previous: None,
        };
        let peer = Peer {
            kind,
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            relay: None,
            we_initiated: false,
            counted: true,
        };
        Rig {
            env,
            admission: Admission::new(keys, &limits),
            onion,
            link: Arc::new(Link::new(Channel::new(ChannelId(1), peer, budget))),
        }
    }

    impl Rig {
        fn create(&self, id: u32, onion: &OnionKeypair) {
            self.create_at(id, onion, 1);
        }

        fn create_at(&self, id: u32, onion: &OnionKeypair, depth: u8) {
            let (_, handshake) =
                ClientHandshake::start(&mut rand::thread_rng(), ME, &onion.public());
            let cell = Cell::new(
                CircId::new(id).unwrap(),
                ChanMsg::Create(Create { depth, handshake }),
            );
            handle_cell(&self.env, &self.admission, &self.link, cell);
        }

        fn answers(&self) -> Vec<ChanMsg> {
            let mut buf = Vec::new();
            while self.link.chan.drain_into(127, &mut buf) > 0 {}
            buf.chunks(CELL_LEN)
                .map(|c| Cell::decode(c).unwrap().unwrap().msg)
                .collect()
        }
    }

    #[test]
    fn a_good_create_is_answered_and_recorded() {
        let r = rig(Limits::default(), LinkKind::Client);
        r.create(0x8000_0001, &r.onion.clone());
        assert!(matches!(r.answers()[..], [ChanMsg::Created(_)]));
        let circ = r.link.circuit(CircId::new(0x8000_0001).unwrap()).unwrap();
        assert_eq!(circ.side, Side::Prev);
        assert_eq!(r.env.stats.snapshot().circuits_created, 1);
    }

    #[test]
    fn creates_beyond_the_budgets_share_for_circuits_are_refused_until_one_is_freed() {
        use crate::config::{CIRCUIT_BYTES, CIRCUIT_SHARE, MIN_CIRCUITS};
        let limits = Limits {
            queue_memory_bytes: 100 * CIRCUIT_SHARE * CIRCUIT_BYTES,
            ..Limits::default()
        };
        assert_eq!(limits.max_circuits(), 100);
        let tiny = Limits {
            queue_memory_bytes: 1024,
            ..Limits::default()
        };
        assert_eq!(tiny.max_circuits(), MIN_CIRCUITS);
        let r = rig(limits, LinkKind::Relay);
        let onion = r.onion.clone();
        for i in 1..=100 {
            r.create(0x8000_0000 | i, &onion);
        }
        assert_eq!(r.env.budget.circuits(), 100);
        r.create(0x8000_0000 | 101, &onion);
        let answers = r.answers();
        assert_eq!(answers.len(), 101);
        assert!(answers[..100]
            .iter()
            .all(|m| matches!(m, ChanMsg::Created(_))));
        assert_eq!(answers[100], ChanMsg::Destroy(DestroyReason::ResourceLimit));
        assert_eq!(r.env.budget.circuits(), 100);
        // A circuit the client destroys gives its place back.
        let id = CircId::new(0x8000_0001).unwrap();
        let destroy = Cell::new(id, ChanMsg::Destroy(DestroyReason::Requested));
        handle_cell(&r.env, &r.admission, &r.link, destroy);
        assert!(r.link.circuit(id).is_none());
        assert_eq!(r.env.budget.circuits(), 99);
        r.create(0x8000_0000 | 102, &onion);
        assert!(matches!(r.answers()[..], [ChanMsg::Created(_)]));
        assert_eq!(r.env.budget.circuits(), 100);
    }

    #[test]
    fn creates_are_refused_for_parity_full_links_rate_and_unknown_onion_keys() {
        // The client opened the link, so its ids have the top bit set.
        let r = rig(Limits::default(), LinkKind::Client);
        r.create(0x0000_0001, &r.onion.clone());
        assert_eq!(r.answers(), vec![ChanMsg::Destroy(DestroyReason::Protocol)]);
        // An onion key this relay does not hold.
        let stranger = OnionKeypair::generate(&mut rand::thread_rng());
        r.create(0x8000_0002, &stranger);
        assert_eq!(r.answers(), vec![ChanMsg::Destroy(DestroyReason::OnionKey)]);
        // A full link.
        let r = rig(
            Limits {
                circuits_per_link: 1,
                ..Limits::default()
            },
            LinkKind::Client,
        );
        r.create(0x8000_0001, &r.onion.clone());
        r.create(0x8000_0002, &r.onion.clone());
        assert!(matches!(
            r.answers()[..],
            [
                ChanMsg::Created(_),
                ChanMsg::Destroy(DestroyReason::ResourceLimit)
            ]
        ));
        // The create rate of one address.
        let r = rig(
            Limits {
                create_burst_per_ip: 2.0,
                creates_per_sec_per_ip: 0.001,
                ..Limits::default()
            },
            LinkKind::Client,
        );
        for id in 1..=3 {
            r.create(0x8000_0000 | id, &r.onion.clone());
        }
        assert!(matches!(
            r.answers()[..],
            [
                ChanMsg::Created(_),
                ChanMsg::Created(_),
                ChanMsg::Destroy(DestroyReason::ResourceLimit)
            ]
        ));
        assert_eq!(r.env.stats.snapshot().creates_refused, 1);
    }

    #[test]
    fn a_create_deeper_than_clients_build_is_refused() {
        let r = rig(Limits::default(), LinkKind::Relay);
        let onion = r.onion.clone();
        // A relay extending a circuit from depth 2, 3 and 7.
        r.create_at(0x8000_0001, &onion, 3);
        r.create_at(0x8000_0002, &onion, 4);
        r.create_at(0x8000_0003, &onion, 8);
        assert!(matches!(
            r.answers()[..],
            [
                ChanMsg::Created(_),
                ChanMsg::Destroy(DestroyReason::Protocol),
                ChanMsg::Destroy(DestroyReason::Protocol)
            ]
        ));
        assert_eq!(r.link.circuit_count(), 1);
    }

    #[test]
    fn a_create_on_an_id_in_use_destroys_that_circuit_once() {
        let r = rig(Limits::default(), LinkKind::Client);
        r.create(0x8000_0001, &r.onion.clone());
        r.create(0x8000_0001, &r.onion.clone());
        assert!(matches!(
            r.answers()[..],
            [
                ChanMsg::Created(_),
                ChanMsg::Destroy(DestroyReason::Protocol)
            ]
        ));
        assert_eq!(r.link.circuit_count(), 0);
    }

    #[test]
    fn cells_for_unknown_circuits_are_counted_and_dropped() {
        let r = rig(Limits::default(), LinkKind::Client);
        let id = CircId::new(0x8000_0009).unwrap();
        let cell = Cell::new(id, ChanMsg::Relay(Box::new([0; 509])));
        handle_cell(&r.env, &r.admission, &r.link, cell);
        let cell = Cell::new(id, ChanMsg::Destroy(DestroyReason::None));
        handle_cell(&r.env, &r.admission, &r.link, cell);
        assert!(r.answers().is_empty());
        assert_eq!(r.env.stats.snapshot().cells_for_unknown_circuits, 1);
    }
}
