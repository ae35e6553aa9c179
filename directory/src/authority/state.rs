//! An authority's in-memory state and the pure decisions over it (`docs/spec.md` §5.2, §5.7):
//! which descriptors to accept, what this authority votes, and which consensus it serves.
//!
//! Nothing here does I/O; the caller persists what changed (see `store`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Bytes;
use shallot_crypto::keys::{RelayId, VerifyingKey};
use shallot_proto::dir::consensus::digest;
use shallot_proto::dir::{Consensus, DocError, Flags, RelayDescriptor, RelayEntry, Vote};
use thiserror::Error;

use super::store::RelayHistory;
use crate::compute::{apply_sybil_limit, Period};
use crate::network::NetworkParams;
use crate::verify::CLOCK_SKEW_SECS;

/// A descriptor the authority accepted, with its exact text.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The parsed descriptor.
    pub desc: RelayDescriptor,
    /// The text the relay uploaded.
    pub text: String,
}

/// The outcome of the last reachability probe of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// When it finished, unix seconds.
    pub at: u64,
    /// Whether the relay proved its link key.
    pub ok: bool,
    /// The address probed.
    pub address: SocketAddr,
    /// The link key expected.
    pub link_key: [u8; 32],
}

/// What the authority knows about one relay besides its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRecord {
    /// The persisted history.
    pub history: RelayHistory,
    /// The last probe, if any since start.
    pub last_probe: Option<Probe>,
}

/// A vote held for a period, with its text.
#[derive(Debug, Clone)]
pub struct VoteRecord {
    /// The parsed vote.
    pub vote: Vote,
    /// Its signed text, shared by every response that serves it.
    pub text: Bytes,
}

/// A consensus this authority computed (or reloaded), with the signatures collected so far.
#[derive(Debug, Clone)]
pub struct ConsensusRecord {
    /// The consensus and its signatures.
    pub consensus: Consensus,
    /// The full text, re-encoded whenever a signature is added, and shared by every
    /// response that serves it.
    pub text: Bytes,
    /// Its body.
    pub body: String,
    /// SHA-256 of its body.
    pub digest: [u8; 32],
}

impl ConsensusRecord {
    /// A record for a consensus carrying at least one signature.
    pub fn new(consensus: Consensus) -> Result<Self, DocError> {
        let body = consensus.encode_body()?;
        let text = Bytes::from(consensus.encode()?);
        Ok(ConsensusRecord {
            digest: digest(&body),
            consensus,
            text,
            body,
        })
    }
}

/// Why a descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdmitError {
    /// It does not parse or its signature does not verify.
    #[error("{0}")]
    Document(#[from] DocError),
    /// It claims to be published in the future.
    #[error("descriptor published at {published} is in the future (authority time {now})")]
    Future {
        /// Its published time.
        published: u64,
        /// The authority's time.
        now: u64,
    },
    /// It is older than the authority keeps descriptors for.
    #[error(
        "descriptor published at {published} is too old (limit {max_age} s, authority time {now})"
    )]
    TooOld {
        /// Its published time.
        published: u64,
        /// The age limit.
        max_age: u64,
        /// The authority's time.
        now: u64,
    },
    /// A descriptor at least as new is already held: a replay or a stale upload.
    #[error("a descriptor published at {have} is already held; refusing one published at {got}")]
    NotNewer {
        /// The held descriptor's published time.
        have: u64,
        /// The refused one's.
        got: u64,
    },
}

/// What accepting a descriptor changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The relay.
    pub id: RelayId,
    /// Whether its reachability must be (re)tested: new relay, or new address or link key.
    pub needs_probe: bool,
}

/// Everything an authority holds in memory.
#[derive(Debug, Default)]
pub struct State {
    /// The newest accepted descriptor of each relay.
    pub descriptors: BTreeMap<RelayId, Accepted>,
    /// Per-relay history and probe results.
    pub relays: BTreeMap<RelayId, RelayRecord>,
    /// Votes held, by period start then authority key.
    pub votes: BTreeMap<u64, BTreeMap<[u8; 32], Arc<VoteRecord>>>,
    /// Consensuses computed, by period start.
    pub consensuses: BTreeMap<u64, ConsensusRecord>,
}

impl State {
    /// Checks an uploaded descriptor and keeps it if it is the relay's newest.
    pub fn admit(
        &mut self,
        text: &str,
        now: u64,
        params: &NetworkParams,
    ) -> Result<Admitted, AdmitError> {
        let desc = RelayDescriptor::parse_and_verify(text)?;
        check_age(desc.published, now, params.descriptor_max_age_secs)?;
        let id = desc.fingerprint();
        let needs_probe = match self.descriptors.get(&id) {
            Some(old) if old.desc.published >= desc.published => {
                return Err(AdmitError::NotNewer {
                    have: old.desc.published,
                    got: desc.published,
                })
            }
            Some(old) => old.desc.address != desc.address || old.desc.link_key != desc.link_key,
            None => true,
        };
        self.relays.entry(id).or_insert(RelayRecord {
            history: RelayHistory {
                first_seen: now,
                running_since: None,
            },
            last_probe: None,
        });
        self.descriptors.insert(
            id,
            Accepted {
                desc,
                text: text.to_string(),
            },
        );
        Ok(Admitted { id, needs_probe })
    }

    /// Drops descriptors (and relay records) older than the age limit; returns their ids.
    pub fn expire(&mut self, now: u64, max_age: u64) -> Vec<RelayId> {
        let old: Vec<RelayId> = self
            .descriptors
            .iter()
            .filter(|(_, a)| a.desc.published.saturating_add(max_age) < now)
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.descriptors.remove(id);
            self.relays.remove(id);
        }
        old
    }

    /// Records a probe result, keeping running-since up to date.
    pub fn record_probe(&mut self, id: &RelayId, probe: Probe) {
        if let Some(rec) = self.relays.get_mut(id) {
            rec.history.running_since = match (probe.ok, rec.history.running_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(probe.at),
                (false, _) => None,
            };
            rec.last_probe = Some(probe);
        }
    }

    /// The persisted part of the relay records.
    pub fn history(&self) -> BTreeMap<RelayId, RelayHistory> {
        self.relays.iter().map(|(id, r)| (*id, r.history)).collect()
    }

    /// This authority's vote for `period` at time `now` (`docs/spec.md` §5.7).
    pub fn build_vote(
        &self,
        me: VerifyingKey,
        period: Period,
        now: u64,
        params: &NetworkParams,
    ) -> Vote {
        let mut relays: Vec<RelayEntry> = self
            .descriptors
            .iter()
            .filter(|(_, a)| {
                a.desc
                    .published
                    .saturating_add(params.descriptor_max_age_secs)
                    >= now
            })
            .map(|(id, a)| entry_for(id, &a.desc, self.relays.get(id), now, params))
            .collect();
        apply_sybil_limit(&mut relays);
        Vote {
            authority: me,
            valid_after: period.valid_after,
            fresh_until: period.fresh_until,
            valid_until: period.valid_until,
            relays,
        }
    }

    /// The consensus to serve at `now`: the newest whose period has started.
    pub fn serving(&self, now: u64) -> Option<&ConsensusRecord> {
        self.consensuses.range(..=now).next_back().map(|(_, r)| r)
    }

    /// Forgets votes for periods before `oldest` and all but the newest three consensuses.
    pub fn prune(&mut self, oldest: u64) {
        self.votes = self.votes.split_off(&oldest);
        while self.consensuses.len() > 3 {
            self.consensuses.pop_first();
        }
    }
}

/// Refuses a published time in the future (beyond the clock skew allowed) or too old.
fn check_age(published: u64, now: u64, max_age: u64) -> Result<(), AdmitError> {
    if published > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(AdmitError::Future { published, now });
    }
    if published.saturating_add(max_age) < now {
        return Err(AdmitError::TooOld {
            published,
            max_age,
            now,
        });
    }
    Ok(())
}

/// One relay's entry in this authority's vote.
fn entry_for(
    id: &RelayId,
    d: &RelayDescriptor,
    rec: Option<&RelayRecord>,
    now: u64,
    p: &NetworkParams,
) -> RelayEntry {
    let fresh_probe = rec.and_then(|r| r.last_probe).filter(|probe| {
        probe.ok
            && probe.address == d.address
            && probe.link_key == d.link_key
            && probe.at.saturating_add(2 * p.voting_interval_secs) >= now
    });
    let running = fresh_probe.is_some();
    let fast = d.bandwidth >= p.fast_min_bandwidth;
    let stable = running
        && rec
            .and_then(|r| r.history.running_since)
            .is_some_and(|since| now.saturating_sub(since) >= p.stable_min_uptime_secs);
    let known =
        rec.is_some_and(|r| now.saturating_sub(r.history.first_seen) >= p.guard_min_known_secs);
    let guard = fast && stable && d.bandwidth >= p.guard_min_bandwidth && known;
    let mut flags = Flags::VALID;
    flags.set(Flags::RUNNING, running);
    flags.set(Flags::FAST, fast);
    flags.set(Flags::STABLE, stable);
    flags.set(Flags::GUARD, guard);
    flags.set(Flags::MAILBOX, d.mailbox && running);
    RelayEntry {
        id: *id,
        nickname: d.nickname.clone(),
        identity: d.identity,
        address: d.address,
        bandwidth: d.bandwidth,
        ntor_key: d.ntor_key,
        link_key: d.link_key,
        published: d.published,
        flags,
        family: d.family.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    fn params() -> NetworkParams {
        NetworkParams {
            voting_interval_secs: 10,
            descriptor_max_age_secs: 1000,
            stable_min_uptime_secs: 50,
            guard_min_known_secs: 100,
            fast_min_bandwidth: 100,
            guard_min_bandwidth: 200,
            ..NetworkParams::default()
        }
    }

    fn descriptor(id: &IdentityKeypair, published: u64, bandwidth: u64) -> String {
        RelayDescriptor {
            nickname: "r".into(),
            address: "10.0.0.1:9000".parse().unwrap(),
            identity: id.public(),
            ntor_key: [1; 32],
            link_key: [2; 32],
            bandwidth,
            family: vec![],
            mailbox: true,
            published,
        }
        .sign(id)
        .unwrap()
    }

    #[test]
    fn admission_checks_time_and_replay() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let mut s = State::default();
        let p = params();
        let now = 10_000;
        assert!(matches!(
            s.admit(&descriptor(&id, now + 61, 1), now, &p),
            Err(AdmitError::Future { .. })
        ));
        assert!(matches!(
            s.admit(&descriptor(&id, now - 1001, 1), now, &p),
            Err(AdmitError::TooOld { .. })
        ));
        let first = s.admit(&descriptor(&id, now - 5, 1), now, &p).unwrap();
        assert!(first.needs_probe);
        assert!(matches!(
            s.admit(&descriptor(&id, now - 5, 1), now, &p),
            Err(AdmitError::NotNewer { .. })
        ));
        assert!(matches!(
            s.admit(&descriptor(&id, now - 6, 1), now, &p),
            Err(AdmitError::NotNewer { .. })
        ));
        let second = s.admit(&descriptor(&id, now, 1), now, &p).unwrap();
        assert!(!second.needs_probe, "same address and link key");
        assert_eq!(
            s.expire(now + 1001, p.descriptor_max_age_secs),
            vec![first.id]
        );
        assert!(s.descriptors.is_empty());
    }

    #[test]
    fn vote_flags_follow_the_thresholds() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let mut s = State::default();
        let p = params();
        let t0 = 10_000;
        let a = s.admit(&descriptor(&id, t0, 250), t0, &p).unwrap();
        let period = Period {
            valid_after: t0,
            fresh_until: t0 + 10,
            valid_until: t0 + 30,
        };
        let flags = |s: &State, now| s.build_vote(id.public(), period, now, &p).relays[0].flags;
        assert_eq!(flags(&s, t0), Flags::VALID | Flags::FAST);
        let probe = |at, ok| Probe {
            at,
            ok,
            address: "10.0.0.1:9000".parse().unwrap(),
            link_key: [2; 32],
        };
        s.record_probe(&a.id, probe(t0, true));
        assert_eq!(
            flags(&s, t0),
            Flags::VALID | Flags::FAST | Flags::RUNNING | Flags::MAILBOX
        );
        // A probe older than two intervals no longer counts.
        assert!(!flags(&s, t0 + 21).contains(Flags::RUNNING));
        s.record_probe(&a.id, probe(t0 + 60, true));
        assert!(flags(&s, t0 + 60).contains(Flags::STABLE));
        assert!(!flags(&s, t0 + 60).contains(Flags::GUARD));
        s.record_probe(&a.id, probe(t0 + 100, true));
        assert!(flags(&s, t0 + 100).contains(Flags::GUARD));
        s.record_probe(&a.id, probe(t0 + 101, false));
        assert_eq!(flags(&s, t0 + 101), Flags::VALID | Flags::FAST);
        assert_eq!(s.relays[&a.id].history.running_since, None);
    }
}
