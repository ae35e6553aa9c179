//! The persistent guard set (`docs/spec.md` §11.3): a client's first hop always comes from a
//! small set of guards, kept in its data directory, so that it meets few first hops over time.
//!
//! A guard that goes missing from the consensus (or loses the Guard or Running flag) is kept,
//! unused, for the retention period (Tor keeps unlisted guards for weeks), and used again as
//! soon as it is listed again; only after that period is it dropped. Kept guards count toward
//! the set's size, so one consensus that lists none of them does not make the client pick a
//! new set: it adds at most one temporary guard while none of its own is usable, and drops it
//! again once its own guards are back.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use shallot_crypto::keyfile;
use shallot_crypto::keys::RelayId;
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::Flags;

use crate::path::{related, weighted_pick};

/// Guards a client keeps.
pub const GUARDS: usize = 3;
/// Guards a client keeps at most, counting temporary ones.
pub const MAX_SAMPLED: usize = GUARDS + 2;
/// How long a guard missing from the consensus is kept by default: 20 days, as Tor's
/// `guard-remove-unlisted-guards-after-days`.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(20 * 24 * 3600);

/// One guard and its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    /// The relay.
    pub id: RelayId,
    /// Since when the consensus has not listed it as a usable guard, unix seconds; `None`
    /// while it is listed.
    pub unlisted_since: Option<u64>,
}

/// The guard set and where it is saved.
#[derive(Debug)]
pub struct GuardSet {
    path: PathBuf,
    guards: Vec<Guard>,
    retention: Duration,
}

impl GuardSet {
    /// Loads the set saved in `data_dir` (an unreadable or corrupt file counts as empty, a
    /// corrupt line is skipped), keeping unlisted guards for [`DEFAULT_RETENTION`].
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("guards");
        let guards = keyfile::read_private_file(&path)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
            .map(|text| {
                text.lines()
                    .filter_map(parse_line)
                    .take(MAX_SAMPLED)
                    .collect()
            })
            .unwrap_or_default();
        GuardSet {
            path,
            guards,
            retention: DEFAULT_RETENTION,
        }
    }

    /// The same set, keeping unlisted guards for `retention` instead.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Every guard kept, usable now or not, in order of preference.
    pub fn sampled(&self) -> &[Guard] {
        &self.guards
    }

    /// The guards the consensus last seen lists as usable, in order of preference.
    pub fn guards(&self) -> Vec<RelayId> {
        self.guards
            .iter()
            .filter(|g| g.unlisted_since.is_none())
            .map(|g| g.id)
            .collect()
    }

    /// Updates the set from `consensus` at the current time; see [`GuardSet::update_at`].
    pub fn update<R: Rng>(&mut self, consensus: &VerifiedConsensus, rng: &mut R) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.update_at(consensus, now, rng);
    }

    /// Updates the set from `consensus` at `now` (unix seconds), and saves it if it changed:
    ///
    /// 1. each guard listed with Running and Guard is usable; each other one is marked
    ///    unlisted from `now` (if not already), and dropped once unlisted for longer than the
    ///    retention period;
    /// 2. while fewer than [`GUARDS`] are kept, new ones are drawn (bandwidth-weighted, under
    ///    the weight cap, unrelated to the usable ones);
    /// 3. if none of them is usable, one temporary guard is drawn, up to [`MAX_SAMPLED`];
    /// 4. temporary guards beyond [`GUARDS`] are dropped once the first [`GUARDS`] are all
    ///    usable again.
    pub fn update_at<R: Rng>(&mut self, consensus: &VerifiedConsensus, now: u64, rng: &mut R) {
        let before = self.guards.clone();
        let usable = |id: &RelayId| {
            consensus
                .relay(id)
                .is_some_and(|r| r.flags.contains(Flags::RUNNING | Flags::GUARD))
        };
        let retention = self.retention.as_secs();
        for g in &mut self.guards {
            if usable(&g.id) {
                g.unlisted_since = None;
            } else if g.unlisted_since.is_none() {
                g.unlisted_since = Some(now);
            }
        }
        self.guards.retain(|g| {
            g.unlisted_since
                .is_none_or(|since| now.saturating_sub(since) <= retention)
        });
        while self.guards.len() < GUARDS {
            if !self.sample(consensus, rng) {
                break;
            }
        }
        if self.guards().is_empty() && self.guards.len() < MAX_SAMPLED {
            self.sample(consensus, rng);
        }
        if self.guards.len() > GUARDS
            && self.guards[..GUARDS]
                .iter()
                .all(|g| g.unlisted_since.is_none())
        {
            self.guards.truncate(GUARDS);
        }
        if self.guards != before {
            self.save();
        }
    }

    /// Draws one new guard; false if none qualifies.
    fn sample<R: Rng>(&mut self, consensus: &VerifiedConsensus, rng: &mut R) -> bool {
        let chosen: Vec<_> = self
            .guards
            .iter()
            .filter_map(|g| consensus.relay(&g.id))
            .collect();
        let candidates: Vec<_> = consensus
            .relays
            .iter()
            .filter(|r| r.flags.contains(Flags::RUNNING | Flags::GUARD))
            .filter(|r| self.guards.iter().all(|g| g.id != r.id))
            .filter(|r| chosen.iter().all(|c| !related(c, r)))
            .collect();
        match weighted_pick(&candidates, consensus.params.max_share_ppm, rng) {
            Some(r) => {
                self.guards.push(Guard {
                    id: r.id,
                    unlisted_since: None,
                });
                true
            }
            None => false,
        }
    }

    fn save(&self) {
        let text: String = self
            .guards
            .iter()
            .map(|g| match g.unlisted_since {
                Some(since) => format!("{} {since}\n", g.id),
                None => format!("{}\n", g.id),
            })
            .collect();
        if let Err(e) = keyfile::write_private_file(&self.path, text.as_bytes()) {
            tracing::info!("cannot save the guard set: {e}");
        }
    }
}

/// `<fingerprint>` or `<fingerprint> <unlisted since>`.
fn parse_line(line: &str) -> Option<Guard> {
    let mut words = line.split(' ');
    let id = RelayId::from_hex(words.next()?).ok()?;
    let unlisted_since = match words.next() {
        None => None,
        Some(w) => Some(shallot_proto::dir::lines::parse_u64(w)?),
    };
    if words.next().is_some() {
        return None;
    }
    Some(Guard { id, unlisted_since })
}

#[cfg(test)]
mod tests;
