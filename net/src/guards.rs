//! The persistent guard set (`docs/spec.md` §11.3): a client's first hop always comes from a
//! small sampled set of guards, kept in its data directory, so that it meets few first hops
//! over time, as Tor's guard specification (`guard-spec.txt`) has it.
//!
//! A guard that goes missing from the consensus (or loses the Guard or Running flag) is kept,
//! unused, for the retention period (Tor keeps unlisted guards for weeks), and used again as
//! soon as it is listed again; only after that period is it dropped. Kept guards count toward
//! the set's size, so one consensus that lists none of them does not make the client pick a
//! new set: it adds at most one temporary guard while none of its own is usable, and drops it
//! again once its own guards are back.
//!
//! Growth is bounded: at most [`MAX_NEW_GUARDS`] guards are added within
//! [`NEW_GUARD_PERIOD`] (the first ones included), and the set never holds more than
//! [`MAX_SAMPLED`]. So a directory that keeps leaving out the client's guards cannot make it
//! spread its first hops over many relays: once the budget is spent and none of its guards is
//! usable, the client has no first hop at all ([`GuardSet::guards`] is empty) and its
//! circuits fail with "no usable guard" until a consensus lists one; a first hop is never
//! drawn from outside the set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use shallot_crypto::keyfile;
use shallot_crypto::keys::RelayId;
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::Flags;

use crate::path::{related, weighted_pick};

/// Guards a client keeps (its primary guards).
pub const GUARDS: usize = 3;
/// Guards a client keeps at most, counting temporary ones and unlisted ones.
pub const MAX_SAMPLED: usize = 8;
/// Guards a client may add to its set within [`NEW_GUARD_PERIOD`], its first ones included.
pub const MAX_NEW_GUARDS: usize = 6;
/// The period over which [`MAX_NEW_GUARDS`] is counted: 7 days.
pub const NEW_GUARD_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
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
    /// When it was added to the set, unix seconds; `None` for a guard saved before the time
    /// was recorded.
    pub sampled_at: Option<u64>,
}

/// The guard set and where it is saved.
#[derive(Debug)]
pub struct GuardSet {
    path: PathBuf,
    guards: Vec<Guard>,
    /// When each guard added within the last [`NEW_GUARD_PERIOD`] was added, unix seconds,
    /// oldest first; kept when the guard itself is dropped.
    added: Vec<u64>,
    retention: Duration,
}

impl GuardSet {
    /// Loads the set saved in `data_dir` (an unreadable or corrupt file counts as empty, a
    /// corrupt line is skipped), keeping unlisted guards for [`DEFAULT_RETENTION`].
    pub fn load(data_dir: &Path) -> Self {
        let path = data_dir.join("guards");
        let text = keyfile::read_private_file(&path)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
            .unwrap_or_default();
        let guards = text
            .lines()
            .filter_map(parse_line)
            .take(MAX_SAMPLED)
            .collect();
        let mut added: Vec<u64> = text
            .lines()
            .filter_map(parse_added)
            .take(MAX_NEW_GUARDS)
            .collect();
        added.sort_unstable();
        GuardSet {
            path,
            guards,
            added,
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

    /// The guards the consensus last seen lists as usable, in order of preference: the only
    /// relays a circuit may start at. Empty when none is usable and the set may not grow.
    pub fn guards(&self) -> Vec<RelayId> {
        self.guards
            .iter()
            .filter(|g| g.unlisted_since.is_none())
            .map(|g| g.id)
            .collect()
    }

    /// How many more guards may be added before `now` (unix seconds) under the growth bound.
    pub fn budget_at(&self, now: u64) -> usize {
        let period = NEW_GUARD_PERIOD.as_secs();
        let recent = self
            .added
            .iter()
            .filter(|t| **t <= now && now - **t < period)
            .count();
        MAX_NEW_GUARDS.saturating_sub(recent)
    }

    /// Updates the set from `consensus` at `now` (unix seconds), and saves it if it changed:
    ///
    /// 1. each guard listed with Running and Guard is usable; each other one is marked
    ///    unlisted from `now` (if not already), and dropped once unlisted for longer than the
    ///    retention period;
    /// 2. while fewer than [`GUARDS`] are kept, new ones are drawn (bandwidth-weighted, under
    ///    the weight cap, unrelated to the usable ones);
    /// 3. if none of them is usable, one temporary guard is drawn;
    /// 4. temporary guards beyond [`GUARDS`] are dropped once the first [`GUARDS`] are all
    ///    usable again.
    ///
    /// Steps 2 and 3 add a guard only while fewer than [`MAX_NEW_GUARDS`] were added within
    /// [`NEW_GUARD_PERIOD`] before `now` and fewer than [`MAX_SAMPLED`] are kept.
    pub fn update_at<R: Rng>(&mut self, consensus: &VerifiedConsensus, now: u64, rng: &mut R) {
        let before = (self.guards.clone(), self.added.clone());
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
        let period = NEW_GUARD_PERIOD.as_secs();
        self.added.retain(|t| *t <= now && now - *t < period);
        while self.guards.len() < GUARDS {
            if !self.sample(consensus, now, rng) {
                break;
            }
        }
        if self.guards().is_empty() {
            self.sample(consensus, now, rng);
        }
        if self.guards.len() > GUARDS
            && self.guards[..GUARDS]
                .iter()
                .all(|g| g.unlisted_since.is_none())
        {
            self.guards.truncate(GUARDS);
        }
        if (&self.guards, &self.added) != (&before.0, &before.1) {
            self.save();
        }
    }

    /// Draws one new guard at `now`; false if none qualifies or the growth bound forbids it.
    fn sample<R: Rng>(&mut self, consensus: &VerifiedConsensus, now: u64, rng: &mut R) -> bool {
        if self.guards.len() >= MAX_SAMPLED || self.budget_at(now) == 0 {
            return false;
        }
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
                    sampled_at: Some(now),
                });
                self.added.push(now);
                true
            }
            None => false,
        }
    }

    fn save(&self) {
        let guards = self.guards.iter().map(|g| {
            let unlisted = g
                .unlisted_since
                .map(|t| format!(" {t}"))
                .unwrap_or_default();
            let sampled = g
                .sampled_at
                .map(|t| format!(" sampled {t}"))
                .unwrap_or_default();
            format!("{}{unlisted}{sampled}\n", g.id)
        });
        let added = self.added.iter().map(|t| format!("added {t}\n"));
        let text: String = guards.chain(added).collect();
        if let Err(e) = keyfile::write_private_file(&self.path, text.as_bytes()) {
            tracing::info!("cannot save the guard set: {e}");
        }
    }
}

/// `<fingerprint>`, then optionally ` <unlisted since>`, then optionally
/// ` sampled <unix seconds>`.
fn parse_line(line: &str) -> Option<Guard> {
    let number = shallot_proto::dir::lines::parse_u64;
    let mut words = line.split(' ').peekable();
    let id = RelayId::from_hex(words.next()?).ok()?;
    let unlisted_since = match words.next_if(|w| *w != "sampled") {
        None => None,
        Some(w) => Some(number(w)?),
    };
    let sampled_at = match words.next() {
        None => None,
        Some(_sampled) => Some(number(words.next()?)?),
    };
    if words.next().is_some() {
        return None;
    }
    Some(Guard {
        id,
        unlisted_since,
        sampled_at,
    })
}

/// `added <unix seconds>`: when a guard was added to the set.
fn parse_added(line: &str) -> Option<u64> {
    shallot_proto::dir::lines::parse_u64(line.strip_prefix("added ")?)
}

#[cfg(test)]
mod tests;
