//! An authority's in-memory state (`docs/spec.md` §5.2, §5.6–5.7): the descriptors it holds
//! and every descriptor its votes name, relay records and probe results, the votes of each
//! period (with any second vote that proves an equivocation), the consensuses it computed,
//! and its shared-random reveals. Admission is in [`super::admit`], vote building in
//! [`super::vote_builder`].
//!
//! Nothing here does I/O; the caller persists what changed (see `store`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Bytes;
use shallot_crypto::keys::{RelayId, VerifyingKey};
use shallot_proto::dir::consensus::digest;
use shallot_proto::dir::descriptor::descriptor_digest;
use shallot_proto::dir::{Consensus, DocError, RelayDescriptor, Vote};

use super::admit::Index;
use super::bandwidth::Measurements;
use super::store::RelayHistory;
use shallot_directory::equivocation::Holdings;
use shallot_directory::network::NetworkParams;

/// Equivocations remembered for [`State::equivocations`].
const EQUIVOCATION_LOG: usize = 64;

/// A verified descriptor, with its exact text and digest.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The parsed descriptor.
    pub desc: RelayDescriptor,
    /// Its signed text.
    pub text: String,
    /// SHA-256 of the text: what votes name it by.
    pub digest: [u8; 32],
}

impl Accepted {
    /// A descriptor that parsed and verified, from its text.
    pub fn new(desc: RelayDescriptor, text: String) -> Self {
        Accepted {
            digest: descriptor_digest(&text),
            desc,
            text,
        }
    }
}

/// The outcome of the last reachability probe of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// When it finished, unix seconds.
    pub at: u64,
    /// Whether the relay proved its link key, onion key and identity.
    pub ok: bool,
    /// The address probed.
    pub address: SocketAddr,
    /// The link key expected.
    pub link_key: [u8; 32],
    /// The onion key expected.
    pub ntor_key: [u8; 32],
}

impl Probe {
    /// Whether this probe proved what `d` claims.
    pub fn proves(&self, d: &RelayDescriptor) -> bool {
        self.ok
            && self.address == d.address
            && self.link_key == d.link_key
            && self.ntor_key == d.ntor_key
    }
}

/// What the authority knows about one relay besides its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRecord {
    /// The persisted history.
    pub history: RelayHistory,
    /// The last probe, if any since start.
    pub last_probe: Option<Probe>,
    /// The last probe that succeeded, if any since start: the address and keys the relay
    /// proved, kept through failed probes (a failure costs Running, not this).
    pub last_proof: Option<Probe>,
    /// Since when no probe has proven the relay: when its descriptor was accepted (or
    /// reloaded), moved on by every successful probe. `max_unproven_secs` later it is dropped.
    pub unproven_from: u64,
    /// When a probe round last planned it (at first: when accepted), so that rounds rotate.
    pub last_planned: u64,
    /// The network (/24 or /64) that uploaded its first descriptor, while no probe has proven
    /// it: counted against `max_unproven_per_uploader`.
    pub uploader: Option<[u8; 9]>,
}

impl RelayRecord {
    /// A record for a relay first held at `now`.
    pub fn new(history: RelayHistory, now: u64, uploader: Option<[u8; 9]>) -> Self {
        RelayRecord {
            history,
            last_probe: None,
            last_proof: None,
            unproven_from: now,
            last_planned: now,
            uploader: uploader.filter(|_| history.known_since.is_none()),
        }
    }
}

/// A vote held for a period, with its text and digest.
#[derive(Debug, Clone)]
pub struct VoteRecord {
    /// The parsed vote.
    pub vote: Vote,
    /// Its signed text, shared by every response that serves it.
    pub text: Bytes,
    /// SHA-256 of the text.
    pub digest: [u8; 32],
}

impl VoteRecord {
    /// A record for a verified vote and its text.
    pub fn new(vote: Vote, text: impl Into<Bytes>) -> Self {
        let text = text.into();
        VoteRecord {
            digest: shallot_proto::dir::consensus::digest_bytes(&text),
            vote,
            text,
        }
    }
}

/// A consensus this authority computed (or reloaded, or adopted), with the signatures
/// collected so far.
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
    /// Names this version of `text`, unique in the process: a new record, or a signature
    /// added, gets a new one (the key of the answers cached for it, `served.rs`).
    pub serial: u64,
}

/// The next [`ConsensusRecord::serial`].
fn next_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
            serial: next_serial(),
        })
    }

    /// Re-encodes the text after the consensus's signatures changed, as a new version.
    pub fn refresh_text(&mut self) -> Result<(), DocError> {
        self.text = Bytes::from(self.consensus.encode()?);
        self.serial = next_serial();
        Ok(())
    }
}

/// For tests: a consensus with no relays for the period starting at `valid_after` (fresh for
/// 10 s, valid for 30), signed by `keys`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_record(
    valid_after: u64,
    keys: &[&shallot_crypto::keys::IdentityKeypair],
) -> ConsensusRecord {
    let mut c = Consensus {
        valid_after,
        fresh_until: valid_after + 10,
        valid_until: valid_after + 30,
        params: shallot_proto::dir::ConsensusParams {
            epoch_secs: 86400,
            max_share_ppm: 50_000,
        },
        shared_rand: Default::default(),
        relays: vec![],
        signatures: vec![],
    };
    for key in keys {
        let sig = c.sign_body(key).unwrap();
        c.add_signature(key.public(), sig);
    }
    ConsensusRecord::new(c).unwrap()
}

/// Everything an authority holds in memory.
#[derive(Debug)]
pub struct State {
    /// The newest accepted descriptor of each relay.
    pub descriptors: BTreeMap<RelayId, Arc<Accepted>>,
    /// Counts of held descriptors by network, link key and address, for the flood limits.
    pub(crate) index: Index,
    /// Every descriptor this authority can serve by digest (`GET /descriptor/<digest>`): those
    /// it holds, those its votes named, those it fetched from peers; with the last period
    /// that needed each.
    pub by_digest: HashMap<[u8; 32], (Arc<Accepted>, u64)>,
    /// Per-relay history and probe results.
    pub relays: BTreeMap<RelayId, RelayRecord>,
    /// Measured capacities.
    pub measurements: Measurements,
    /// Votes held, by period start then voting authority key: the first one received.
    pub votes: BTreeMap<u64, BTreeMap<[u8; 32], Arc<VoteRecord>>>,
    /// A second, different vote from the same authority for the same period: the evidence of
    /// an equivocation.
    pub conflicts: BTreeMap<u64, BTreeMap<[u8; 32], Arc<VoteRecord>>>,
    /// Periods whose vote exchange has closed: no more votes are taken from their authors.
    pub frozen: BTreeSet<u64>,
    /// Consensuses computed, by period start.
    pub consensuses: BTreeMap<u64, ConsensusRecord>,
    /// This authority's shared-random reveals, by the period whose vote committed to them.
    pub reveals: BTreeMap<u64, [u8; 32]>,
    /// Equivocations caught, newest last: (period, authority).
    pub equivocations: VecDeque<(u64, VerifyingKey)>,
    /// `max_unproven_secs` of the network: how long a relay may go unproven before it is
    /// dropped (see [`State::expire`]).
    pub(crate) max_unproven_secs: u64,
    /// Votes taken in since start (this authority's own and its peers', each once), for the
    /// operator's metrics.
    pub votes_taken: u64,
    /// Consensuses this authority computed and signed since start, for the metrics.
    pub consensuses_made: u64,
}

impl State {
    /// An empty state for a network with these parameters.
    pub fn new(params: &NetworkParams) -> Self {
        State {
            descriptors: BTreeMap::new(),
            index: Index::default(),
            by_digest: HashMap::new(),
            relays: BTreeMap::new(),
            measurements: Measurements::new(3 * params.scan_interval()),
            votes: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            frozen: BTreeSet::new(),
            consensuses: BTreeMap::new(),
            reveals: BTreeMap::new(),
            equivocations: VecDeque::new(),
            max_unproven_secs: params.max_unproven_secs,
            votes_taken: 0,
            consensuses_made: 0,
        }
    }

    /// Records a probe result, keeping running-since and the probe's one-hop figure (never
    /// voted, `bandwidth`) up to date. The first success starts the relay's age (known-since);
    /// a failure ends its Running streak but keeps its age and what it proved.
    pub fn record_probe(&mut self, id: &RelayId, probe: Probe, measured: Option<u64>) {
        if let Some(rec) = self.relays.get_mut(id) {
            rec.history.running_since = match (probe.ok, rec.history.running_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(probe.at),
                (false, _) => None,
            };
            if probe.ok {
                rec.history.known_since.get_or_insert(probe.at);
                rec.last_proof = Some(probe);
                rec.unproven_from = rec.unproven_from.max(probe.at);
                if let Some(net) = rec.uploader.take() {
                    self.index.proven(&net);
                }
            }
            rec.last_probe = Some(probe);
            if let Some(m) = measured {
                self.measurements.record_probe(*id, probe.at, m);
            }
        }
    }

    /// Whether relay `id`'s last probe proved its current descriptor.
    pub fn proven(&self, id: &RelayId) -> bool {
        match (self.descriptors.get(id), self.relays.get(id)) {
            (Some(a), Some(r)) => r.last_probe.is_some_and(|p| p.proves(&a.desc)),
            _ => false,
        }
    }

    /// The IP addresses of the relays a probe has proven at some time (whatever their last
    /// probe said), for the connection slots kept for relays.
    pub fn known_relay_ips(&self) -> HashSet<std::net::IpAddr> {
        self.descriptors
            .iter()
            .filter(|(id, _)| {
                self.relays
                    .get(id)
                    .is_some_and(|r| r.history.known_since.is_some())
            })
            .map(|(_, a)| a.desc.address.ip())
            .collect()
    }

    /// The persisted part of the relay records.
    pub fn history(&self) -> BTreeMap<RelayId, RelayHistory> {
        self.relays.iter().map(|(id, r)| (*id, r.history)).collect()
    }

    /// Keeps `accepted` servable by digest until period `until` has been computed.
    pub fn keep_by_digest(&mut self, accepted: Arc<Accepted>, until: u64) {
        let entry = self
            .by_digest
            .entry(accepted.digest)
            .or_insert((accepted, until));
        entry.1 = entry.1.max(until);
    }

    /// The votes held for `t`, as the vote list reports them.
    pub fn holdings(&self, t: u64) -> Holdings {
        let mut out = Holdings::new();
        for map in [self.votes.get(&t), self.conflicts.get(&t)]
            .into_iter()
            .flatten()
        {
            for (author, rec) in map {
                out.entry(*author).or_default().insert(rec.digest);
            }
        }
        out
    }

    /// Adds a verified vote for `t`: the first from its author is kept as its vote, a second,
    /// different one as evidence. Returns false if a different vote was already held (the
    /// caller reports a conflict).
    pub fn add_vote(&mut self, t: u64, record: VoteRecord) -> bool {
        let author = *record.vote.authority.as_bytes();
        let votes = self.votes.entry(t).or_default();
        match votes.get(&author) {
            None => {
                votes.insert(author, Arc::new(record));
                self.votes_taken += 1;
                true
            }
            Some(held) if held.digest == record.digest => true,
            Some(_) => {
                self.conflicts
                    .entry(t)
                    .or_default()
                    .entry(author)
                    .or_insert_with(|| Arc::new(record));
                false
            }
        }
    }

    /// Keeps the consensus this authority computed for `t`, counting it.
    pub fn add_consensus(&mut self, t: u64, record: ConsensusRecord) {
        self.consensuses.insert(t, record);
        self.consensuses_made += 1;
    }

    /// A vote for `t` held here with this digest, first or conflicting.
    pub fn vote_by_digest(&self, t: u64, d: &[u8; 32]) -> Option<Arc<VoteRecord>> {
        [self.votes.get(&t), self.conflicts.get(&t)]
            .into_iter()
            .flatten()
            .flat_map(|m| m.values())
            .find(|r| r.digest == *d)
            .cloned()
    }

    /// Remembers that `authority` equivocated in period `t` (once).
    pub fn note_equivocation(&mut self, t: u64, authority: VerifyingKey) -> bool {
        if self.equivocations.contains(&(t, authority)) {
            return false;
        }
        if self.equivocations.len() == EQUIVOCATION_LOG {
            self.equivocations.pop_front();
        }
        self.equivocations.push_back((t, authority));
        true
    }

    /// The consensus to serve at `now`: the newest whose period has started, once it carries
    /// the signatures of `majority` authorities, as a client needs. Until then (while the
    /// peers' signatures over it are still being fetched) the newest started that does and
    /// has not expired, which clients still use; with none such, the newest started.
    pub fn serving(&self, now: u64, majority: usize) -> Option<&ConsensusRecord> {
        let started = || self.consensuses.range(..=now).rev().map(|(_, r)| r);
        started()
            .find(|r| r.consensus.signatures.len() >= majority && now <= r.consensus.valid_until)
            .or_else(|| started().next())
    }

    /// Forgets votes, reveals and descriptors kept by digest for periods before `oldest`, and
    /// all but the newest three consensuses.
    pub fn prune(&mut self, oldest: u64) {
        self.votes = self.votes.split_off(&oldest);
        self.conflicts = self.conflicts.split_off(&oldest);
        self.frozen = self.frozen.split_off(&oldest);
        self.reveals = self.reveals.split_off(&oldest);
        let current: HashSet<[u8; 32]> = self.descriptors.values().map(|a| a.digest).collect();
        self.by_digest
            .retain(|d, (_, until)| *until >= oldest || current.contains(d));
        while self.consensuses.len() > 3 {
            self.consensuses.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    /// A consensus the peers have not signed yet is one clients refuse: the previous one is
    /// served until it carries a majority's signatures, unless that one has expired.
    #[test]
    fn a_consensus_is_served_once_a_majority_signed_it() {
        let [a, b] = [1, 2].map(|i| IdentityKeypair::from_secret_bytes(&[i; 32]));
        let mut state = State::new(&NetworkParams::default());
        assert!(state.serving(1000, 2).is_none());
        // The very first, signed by this authority alone: nothing better to serve.
        state.consensuses.insert(1000, test_record(1000, &[&a]));
        assert_eq!(state.serving(1000, 2).unwrap().consensus.valid_after, 1000);
        state.consensuses.insert(1000, test_record(1000, &[&a, &b]));
        state.consensuses.insert(1010, test_record(1010, &[&a]));
        assert_eq!(state.serving(1009, 2).unwrap().consensus.valid_after, 1000);
        assert_eq!(
            state.serving(1010, 2).unwrap().consensus.valid_after,
            1000,
            "the new one has one signature of the two needed"
        );
        assert_eq!(state.serving(1010, 1).unwrap().consensus.valid_after, 1010);
        state.consensuses.insert(1010, test_record(1010, &[&a, &b]));
        assert_eq!(state.serving(1010, 2).unwrap().consensus.valid_after, 1010);
        // Past the previous one's validity, the newest is served, signed or not.
        state.consensuses.insert(1050, test_record(1050, &[&a]));
        assert_eq!(state.serving(1040, 2).unwrap().consensus.valid_after, 1010);
        assert_eq!(state.serving(1050, 2).unwrap().consensus.valid_after, 1050);
    }
}
