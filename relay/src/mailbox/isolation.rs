//! The relay's check of circuit isolation (`docs/spec.md` §10.7, §9.3): a record, per
//! circuit, of which mailbox id and which kinds of request it carried, so that a circuit
//! breaking the rule clients follow is counted (`mailbox_isolation_violations`) and named in a
//! debug log line.
//!
//! The rule, as a relay can see it: a circuit carries requests for one mailbox id only, and
//! either an owner's requests (FETCH, SUBSCRIBE, ACK), or deposits (with the SYNC of a repairing
//! relay beside them), or one kind of bundle request (GET_BUNDLE or PUT_BUNDLE). The relay
//! cannot tell two deposits of one client from a repairing relay's pushes, so it does not count
//! those. The check only observes: it refuses nothing, since a client that mixes requests harms
//! only its own privacy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use shallot_proto::mailbox::{MailboxId, MailboxMsg};
use shallot_rt::lock;
use tracing::debug;

use crate::shell::Circuit;

/// A kind of request, as isolation groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Owner = 1,
    Deposit = 2,
    GetBundle = 4,
    PutBundle = 8,
    Sync = 16,
}

/// The sets of classes one circuit may carry together.
const ALLOWED: [u8; 6] = [
    Class::Owner as u8,
    Class::Deposit as u8,
    Class::Sync as u8,
    Class::Deposit as u8 | Class::Sync as u8,
    Class::GetBundle as u8,
    Class::PutBundle as u8,
];

/// How a circuit broke isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// It carried requests for two mailbox ids.
    TwoMailboxes,
    /// It carried kinds of request that go on circuits of their own.
    MixedKinds,
}

/// The class of a request and the mailbox it names; `None` for answers.
fn classify(msg: &MailboxMsg) -> Option<(Class, MailboxId)> {
    Some(match msg {
        MailboxMsg::Deposit { mailbox, .. } => (Class::Deposit, *mailbox),
        MailboxMsg::Fetch { auth, .. }
        | MailboxMsg::Subscribe { auth, .. }
        | MailboxMsg::Ack { auth, .. } => (Class::Owner, auth.mailbox),
        MailboxMsg::PutBundle { auth, .. } => (Class::PutBundle, auth.mailbox),
        MailboxMsg::GetBundle { mailbox, .. } => (Class::GetBundle, *mailbox),
        MailboxMsg::Sync { mailbox, .. } => (Class::Sync, *mailbox),
        MailboxMsg::Result { .. }
        | MailboxMsg::Envelope { .. }
        | MailboxMsg::Bundle { .. }
        | MailboxMsg::Want { .. } => return None,
    })
}

struct Record {
    /// Keeps the circuit's allocation, so that its address stays its key.
    circ: Weak<Circuit>,
    mailbox: MailboxId,
    classes: u8,
    flagged: bool,
}

/// The circuits this relay tracks at most; beyond, new circuits go unchecked until
/// destroyed ones are forgotten.
const MAX_TRACKED: usize = 200_000;

/// Per-circuit records of what mailbox requests each circuit carried.
#[derive(Default)]
pub(crate) struct IsolationWatch {
    inner: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    circuits: HashMap<usize, Record>,
    /// When the map reaches this size, destroyed circuits are forgotten.
    prune_at: usize,
}

impl IsolationWatch {
    /// Records that `circ` carried `msg`; returns how the circuit broke isolation, the first
    /// time it does.
    pub(crate) fn record(&self, circ: &Arc<Circuit>, msg: &MailboxMsg) -> Option<Violation> {
        let (class, mailbox) = classify(msg)?;
        let key = Arc::as_ptr(circ) as usize;
        let mut t = lock(&self.inner);
        if !t.circuits.contains_key(&key) {
            if t.circuits.len() >= t.prune_at {
                t.circuits
                    .retain(|_, r| r.circ.upgrade().is_some_and(|c| !c.is_destroyed()));
                t.prune_at = (t.circuits.len() * 2).max(1024);
            }
            if t.circuits.len() >= MAX_TRACKED {
                return None;
            }
            t.circuits.insert(
                key,
                Record {
                    circ: Arc::downgrade(circ),
                    mailbox,
                    classes: 0,
                    flagged: false,
                },
            );
        }
        let r = t.circuits.get_mut(&key)?;
        r.classes |= class as u8;
        let violation = if r.mailbox != mailbox {
            Violation::TwoMailboxes
        } else if !ALLOWED.contains(&r.classes) {
            Violation::MixedKinds
        } else {
            return None;
        };
        if r.flagged {
            return None;
        }
        r.flagged = true;
        debug!(
            ?violation,
            classes = r.classes,
            "mailbox isolation violation on a circuit"
        );
        Some(violation)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Instant;

    use shallot_proto::mailbox::{EnvelopeId, MailboxAuth};

    use super::*;
    use crate::shell::testing::{self, CircuitMaker};

    fn deposit(m: u8) -> MailboxMsg {
        MailboxMsg::Deposit {
            req: 1,
            mailbox: MailboxId([m; 32]),
            envelope: vec![1],
            pow: None,
        }
    }

    fn fetch(m: u8) -> MailboxMsg {
        MailboxMsg::Fetch {
            req: 2,
            auth: MailboxAuth {
                mailbox: MailboxId([m; 32]),
                timestamp: 0,
                nonce: [0; 16],
                signature: [0; 64],
            },
        }
    }

    #[test]
    fn each_way_of_mixing_is_flagged_once_and_isolated_circuits_never() {
        let (env, _extends) = testing::env(1_000_000, None);
        let link = testing::link(&env, 1);
        let maker = CircuitMaker::new();
        let now = Instant::now();
        let w = IsolationWatch::default();
        let mut id = 0x8000_0000u32;
        let mut circ = || {
            id += 1;
            maker.circuit(&link, id, now).0
        };
        // Isolated: an owner circuit, a deposit circuit, a repair circuit.
        let owner = circ();
        assert_eq!(w.record(&owner, &fetch(1)), None);
        assert_eq!(w.record(&owner, &fetch(1)), None);
        let dep = circ();
        assert_eq!(w.record(&dep, &deposit(2)), None);
        let sync = circ();
        let s = MailboxMsg::Sync {
            req: 1,
            mailbox: MailboxId([3; 32]),
            ids: vec![EnvelopeId([0; 16])],
        };
        assert_eq!(w.record(&sync, &s), None);
        assert_eq!(w.record(&sync, &deposit(3)), None);
        // Two ids: flagged, once.
        let two = circ();
        assert_eq!(w.record(&two, &deposit(4)), None);
        assert_eq!(w.record(&two, &deposit(5)), Some(Violation::TwoMailboxes));
        assert_eq!(w.record(&two, &deposit(6)), None, "counted once");
        // An owner request beside a deposit, same id.
        let mixed = circ();
        assert_eq!(w.record(&mixed, &fetch(7)), None);
        assert_eq!(w.record(&mixed, &deposit(7)), Some(Violation::MixedKinds));
        // A bundle fetch beside a deposit.
        let bundle = circ();
        let get = MailboxMsg::GetBundle {
            req: 1,
            mailbox: MailboxId([8; 32]),
        };
        assert_eq!(w.record(&bundle, &get), None);
        assert_eq!(w.record(&bundle, &deposit(8)), Some(Violation::MixedKinds));
        // Answers are not requests.
        let want = MailboxMsg::Want {
            req: 1,
            ids: Vec::new(),
        };
        assert_eq!(w.record(&owner, &want), None);
    }
}
