//! The persistent guard set (`docs/spec.md` §11.3): a client's first hop always comes from a
//! small set of guards, kept in its data directory, so that it meets few first hops over time.
//! A guard is replaced once it leaves the consensus (or loses the Guard or Running flag).

use std::path::{Path, PathBuf};

use rand::Rng;
use shallot_crypto::keyfile;
use shallot_crypto::keys::RelayId;
use shallot_proto::dir::{Consensus, Flags};

use crate::path::{related, weighted_pick};

/// Guards a client keeps.
pub const GUARDS: usize = 3;

/// The guard set and where it is saved.
#[derive(Debug)]
pub struct GuardSet {
    path: PathBuf,
    guards: Vec<RelayId>,
}

impl GuardSet {
    /// Loads the set saved in `data_dir` (an unreadable or corrupt file counts as empty).
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("guards");
        let guards = keyfile::read_private_file(&path)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
            .map(|text| {
                text.lines()
                    .filter_map(|l| RelayId::from_hex(l.trim()).ok())
                    .collect()
            })
            .unwrap_or_default();
        GuardSet { path, guards }
    }

    /// The guards, in order of preference.
    pub fn guards(&self) -> &[RelayId] {
        &self.guards
    }

    /// Drops guards the consensus no longer lists as Running guards, and adds new ones
    /// (bandwidth-weighted, unrelated to the others) until there are [`GUARDS`]. Saves the
    /// set if it changed.
    pub fn update<R: Rng>(&mut self, consensus: &Consensus, rng: &mut R) {
        let before = self.guards.clone();
        let usable = |id: &RelayId| {
            consensus
                .relay(id)
                .is_some_and(|r| r.flags.contains(Flags::RUNNING | Flags::GUARD))
        };
        self.guards.retain(usable);
        while self.guards.len() < GUARDS {
            let chosen: Vec<_> = self
                .guards
                .iter()
                .filter_map(|g| consensus.relay(g))
                .collect();
            let candidates: Vec<_> = consensus
                .relays
                .iter()
                .filter(|r| r.flags.contains(Flags::RUNNING | Flags::GUARD))
                .filter(|r| chosen.iter().all(|c| !related(c, r)))
                .collect();
            match weighted_pick(&candidates, rng) {
                Some(r) => self.guards.push(r.id),
                None => break,
            }
        }
        if self.guards != before {
            let text: String = self.guards.iter().map(|g| format!("{g}\n")).collect();
            if let Err(e) = keyfile::write_private_file(&self.path, text.as_bytes()) {
                tracing::info!("cannot save the guard set: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use shallot_crypto::keys::IdentityKeypair;
    use shallot_proto::dir::{ConsensusParams, RelayEntry};

    fn consensus(n: u8) -> Consensus {
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(n));
        let mut relays: Vec<RelayEntry> = (0..n)
            .map(|i| {
                let identity = IdentityKeypair::generate(&mut rng).public();
                RelayEntry {
                    id: RelayId::of(&identity),
                    nickname: format!("g{i}"),
                    identity,
                    address: format!("10.{i}.0.1:1").parse().unwrap(),
                    bandwidth: 1000,
                    ntor_key: [0; 32],
                    link_key: [0; 32],
                    published: 0,
                    flags: Flags::RUNNING | Flags::GUARD,
                    family: Vec::new(),
                }
            })
            .collect();
        relays.sort_by_key(|r| r.id);
        Consensus {
            valid_after: 0,
            fresh_until: 1,
            valid_until: 2,
            params: ConsensusParams { epoch_secs: 1 },
            relays,
            signatures: Vec::new(),
        }
    }

    #[test]
    fn guards_persist_and_are_replaced_when_they_leave() {
        let dir = std::env::temp_dir().join(format!("shallot-guards-{}", rand::random::<u64>()));
        keyfile::ensure_private_dir(&dir).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut c = consensus(10);
        let mut g = GuardSet::load(&dir);
        g.update(&c, &mut rng);
        assert_eq!(g.guards().len(), GUARDS);
        let first = g.guards().to_vec();
        assert_eq!(
            GuardSet::load(&dir).guards(),
            &first[..],
            "saved and reloaded"
        );
        // The same consensus keeps the same guards.
        g.update(&c, &mut rng);
        assert_eq!(g.guards(), &first[..]);
        // One leaves the consensus: it is replaced, the others stay in order.
        c.relays.retain(|r| r.id != first[1]);
        g.update(&c, &mut rng);
        assert_eq!(g.guards().len(), GUARDS);
        assert_eq!(g.guards()[0], first[0]);
        assert_eq!(g.guards()[1], first[2]);
        assert!(!g.guards().contains(&first[1]));
    }
}
