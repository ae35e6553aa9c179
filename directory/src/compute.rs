//! Computing the consensus from votes: pure and deterministic (`docs/spec.md` §5.7).
//!
//! Given the votes of one period (at most one per authority) and the number of configured
//! authorities `n`:
//!
//! * a relay is listed iff more than `n / 2` votes list it;
//! * its fields come from the entry with the newest `published` among those votes (ties: the
//!   lexicographically greatest `r` line);
//! * its bandwidth is the low median of those votes' bandwidths;
//! * each flag is set iff more than half of the votes listing the relay set it;
//! * then the Sybil limit ([`apply_sybil_limit`]): at most two relays per IP address keep
//!   Running.
//!
//! The result does not depend on the order of the votes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use shallot_crypto::hex;
use shallot_crypto::keys::RelayId;
use shallot_proto::dir::{Consensus, ConsensusParams, Flags, RelayEntry, Vote};
use thiserror::Error;

/// Relays per IP address that may keep the Running flag.
pub const MAX_RUNNING_PER_IP: usize = 2;

/// Flags a relay loses with Running under the Sybil limit, since each presumes it.
const NEEDS_RUNNING: Flags = Flags::from_bits(
    Flags::RUNNING.bits() | Flags::GUARD.bits() | Flags::STABLE.bits() | Flags::MAILBOX.bits(),
);

/// Why votes could not be combined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ComputeError {
    /// Two votes come from one authority.
    #[error("two votes from authority {0}")]
    DuplicateVote(String),
    /// A vote is for another period than the one computed.
    #[error("a vote from authority {authority} is for period {found}, not {expected}")]
    WrongPeriod {
        /// The voting authority.
        authority: String,
        /// The period computed.
        expected: u64,
        /// The vote's period.
        found: u64,
    },
}

/// The period a consensus covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Start, unix seconds.
    pub valid_after: u64,
    /// When a newer consensus is expected.
    pub fresh_until: u64,
    /// When it expires.
    pub valid_until: u64,
}

/// Computes the unsigned consensus for `period` from `votes`, out of `n_authorities`
/// configured authorities.
pub fn compute_consensus(
    votes: &[Vote],
    n_authorities: usize,
    period: Period,
    params: ConsensusParams,
) -> Result<Consensus, ComputeError> {
    let mut seen = std::collections::BTreeSet::new();
    for v in votes {
        let who = hex::encode(v.authority.as_bytes());
        if v.valid_after != period.valid_after {
            return Err(ComputeError::WrongPeriod {
                authority: who,
                expected: period.valid_after,
                found: v.valid_after,
            });
        }
        if !seen.insert(*v.authority.as_bytes()) {
            return Err(ComputeError::DuplicateVote(who));
        }
    }

    let mut by_relay: BTreeMap<RelayId, Vec<&RelayEntry>> = BTreeMap::new();
    for v in votes {
        for e in &v.relays {
            by_relay.entry(e.id).or_default().push(e);
        }
    }

    let mut relays = Vec::new();
    for listing in by_relay.values() {
        if listing.len() * 2 <= n_authorities {
            continue;
        }
        let mut chosen = newest(listing).clone();
        let mut bandwidths: Vec<u64> = listing.iter().map(|e| e.bandwidth).collect();
        bandwidths.sort_unstable();
        chosen.bandwidth = bandwidths[(bandwidths.len() - 1) / 2];
        let mut flags = Flags::empty();
        for (flag, _) in Flags::ALL {
            let set = listing.iter().filter(|e| e.flags.contains(flag)).count();
            flags.set(flag, set * 2 > listing.len());
        }
        chosen.flags = flags;
        relays.push(chosen);
    }
    apply_sybil_limit(&mut relays);

    Ok(Consensus {
        valid_after: period.valid_after,
        fresh_until: period.fresh_until,
        valid_until: period.valid_until,
        params,
        relays,
        signatures: Vec::new(),
    })
}

/// The entry with the newest `published`; ties go to the greatest `r` line.
fn newest<'a>(listing: &[&'a RelayEntry]) -> &'a RelayEntry {
    let mut best = listing[0];
    for &e in &listing[1..] {
        let better = match e.published.cmp(&best.published) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => e.r_line() > best.r_line(),
        };
        if better {
            best = e;
        }
    }
    best
}

/// Lets at most [`MAX_RUNNING_PER_IP`] relays per IP address keep Running: those with the
/// highest bandwidth, ties by lowest fingerprint. The others lose Running and the flags that
/// presume it (Guard, Stable, Mailbox).
pub fn apply_sybil_limit(relays: &mut [RelayEntry]) {
    let mut by_ip: HashMap<IpAddr, Vec<usize>> = HashMap::new();
    for (i, e) in relays.iter().enumerate() {
        if e.flags.contains(Flags::RUNNING) {
            by_ip.entry(e.address.ip()).or_default().push(i);
        }
    }
    for mut idx in by_ip.into_values() {
        if idx.len() <= MAX_RUNNING_PER_IP {
            continue;
        }
        idx.sort_by(|&a, &b| {
            relays[b]
                .bandwidth
                .cmp(&relays[a].bandwidth)
                .then(relays[a].id.cmp(&relays[b].id))
        });
        for &i in &idx[MAX_RUNNING_PER_IP..] {
            relays[i].flags.set(NEEDS_RUNNING, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shallot_crypto::keys::IdentityKeypair;

    const PERIOD: Period = Period {
        valid_after: 100,
        fresh_until: 110,
        valid_until: 130,
    };
    const PARAMS: ConsensusParams = ConsensusParams { epoch_secs: 60 };

    fn entry(seed: u8, ip: [u8; 4], bw: u64, published: u64, flags: Flags) -> RelayEntry {
        let identity = IdentityKeypair::from_secret_bytes(&[seed; 32]).public();
        RelayEntry {
            id: RelayId::of(&identity),
            nickname: format!("r{seed}"),
            identity,
            address: (ip, 9000 + u16::from(seed)).into(),
            bandwidth: bw,
            ntor_key: [seed; 32],
            link_key: [seed; 32],
            published,
            flags,
            family: vec![],
        }
    }

    fn vote(auth: u8, mut relays: Vec<RelayEntry>) -> Vote {
        relays.sort_by_key(|e| e.id);
        Vote {
            authority: IdentityKeypair::from_secret_bytes(&[200 + auth; 32]).public(),
            valid_after: PERIOD.valid_after,
            fresh_until: PERIOD.fresh_until,
            valid_until: PERIOD.valid_until,
            relays,
        }
    }

    const RV: Flags = Flags::from_bits(Flags::RUNNING.bits() | Flags::VALID.bits());

    #[test]
    fn lists_by_majority_of_all_authorities() {
        let a = entry(1, [10, 0, 0, 1], 100, 5, RV);
        let b = entry(2, [10, 0, 0, 2], 100, 5, RV);
        // a is in 2 of 3 votes, b in 1 of 3: with 3 authorities only a is listed.
        let votes = [
            vote(0, vec![a.clone(), b.clone()]),
            vote(1, vec![a.clone()]),
        ];
        let c = compute_consensus(&votes, 3, PERIOD, PARAMS).unwrap();
        assert_eq!(c.relays.len(), 1);
        assert_eq!(c.relays[0].id, a.id);
        // With 4 configured authorities, 2 votes are not more than half.
        let c = compute_consensus(&votes, 4, PERIOD, PARAMS).unwrap();
        assert!(c.relays.is_empty());
    }

    #[test]
    fn newest_fields_median_bandwidth_majority_flags() {
        let old = entry(1, [10, 0, 0, 1], 300, 5, RV | Flags::FAST);
        let mut new = entry(1, [10, 0, 0, 9], 100, 7, Flags::VALID);
        new.nickname = "renamed".into();
        let mid = entry(1, [10, 0, 0, 1], 200, 6, RV);
        let votes = [
            vote(0, vec![old]),
            vote(1, vec![new.clone()]),
            vote(2, vec![mid]),
        ];
        let c = compute_consensus(&votes, 3, PERIOD, PARAMS).unwrap();
        let e = &c.relays[0];
        assert_eq!(e.nickname, "renamed");
        assert_eq!(e.address, new.address);
        assert_eq!(e.bandwidth, 200);
        assert_eq!(e.flags, RV);
        // Low median of an even count.
        let votes = [
            vote(0, vec![entry(1, [10, 0, 0, 1], 10, 5, RV)]),
            vote(1, vec![entry(1, [10, 0, 0, 1], 40, 5, RV)]),
        ];
        let c = compute_consensus(&votes, 3, PERIOD, PARAMS).unwrap();
        assert_eq!(c.relays[0].bandwidth, 10);
    }

    #[test]
    fn at_most_two_running_relays_per_ip() {
        let ip = [10, 1, 1, 1];
        let relays = vec![
            entry(1, ip, 50, 5, RV | Flags::MAILBOX),
            entry(2, ip, 300, 5, RV),
            entry(3, ip, 200, 5, RV | Flags::GUARD),
            entry(4, [10, 2, 2, 2], 10, 5, RV),
        ];
        let votes = [vote(0, relays.clone()), vote(1, relays)];
        let c = compute_consensus(&votes, 3, PERIOD, PARAMS).unwrap();
        let running: Vec<u64> = c
            .relays
            .iter()
            .filter(|e| e.flags.contains(Flags::RUNNING))
            .map(|e| e.bandwidth)
            .collect();
        assert_eq!(running.len(), 3);
        assert!(!running.contains(&50));
        let loser = c.relays.iter().find(|e| e.bandwidth == 50).unwrap();
        assert_eq!(loser.flags, Flags::VALID);
    }

    #[test]
    fn refuses_duplicate_and_wrong_period_votes() {
        let v = vote(0, vec![]);
        assert!(matches!(
            compute_consensus(&[v.clone(), v.clone()], 3, PERIOD, PARAMS),
            Err(ComputeError::DuplicateVote(_))
        ));
        let mut late = v;
        late.valid_after = 110;
        assert!(matches!(
            compute_consensus(&[late], 3, PERIOD, PARAMS),
            Err(ComputeError::WrongPeriod { .. })
        ));
    }

    fn arb_votes() -> impl Strategy<Value = Vec<Vote>> {
        let relay = (0u8..12, 0u8..3, 0u64..1000, 0u64..4, 0u8..64);
        proptest::collection::vec(proptest::collection::vec(relay, 0..12), 1..5).prop_map(|votes| {
            votes
                .into_iter()
                .enumerate()
                .map(|(auth, relays)| {
                    let mut entries: Vec<RelayEntry> = relays
                        .into_iter()
                        .map(|(seed, ip, bw, published, bits)| {
                            entry(seed, [10, 0, 0, ip], bw, published, Flags::from_bits(bits))
                        })
                        .collect();
                    entries.sort_by_key(|e| e.id);
                    entries.dedup_by_key(|e| e.id);
                    vote(auth as u8, entries)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn deterministic_and_independent_of_vote_order(
            votes in arb_votes(),
            extra in 0usize..3,
            rotate in 0usize..5,
        ) {
            let n = votes.len() + extra;
            let c1 = compute_consensus(&votes, n, PERIOD, PARAMS).unwrap();
            let mut shuffled = votes.clone();
            shuffled.reverse();
            let k = rotate % shuffled.len();
            shuffled.rotate_left(k);
            let c2 = compute_consensus(&shuffled, n, PERIOD, PARAMS).unwrap();
            prop_assert_eq!(c1.encode_body().unwrap(), c2.encode_body().unwrap());
            prop_assert_eq!(&c1, &c2);
            // Every listed relay really is in a majority of all configured authorities' votes.
            for e in &c1.relays {
                let count = votes.iter().filter(|v| v.relays.iter().any(|r| r.id == e.id)).count();
                prop_assert!(count * 2 > n);
            }
        }
    }
}
