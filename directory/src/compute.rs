//! Computing the consensus from votes and the descriptors they name: pure and deterministic
//! (`docs/spec.md` §5.7).
//!
//! Given the confirmed votes of one period (at most one per authority), the number of
//! configured authorities `n`, and the verified descriptors the votes name (by digest):
//!
//! * a relay is listed iff more than `n / 2` votes name one and the same descriptor of it, that
//!   descriptor is held, is the relay's own (its fingerprint), and was published no later than
//!   valid-after and no earlier than the descriptor age limit before it;
//! * every field of its entry (nickname, address, keys, family) comes from that descriptor: no
//!   vote can set any of them;
//! * every threshold below counts all `n` configured authorities, not the votes naming the
//!   descriptor, so rogues that are many among few voters gain nothing ([`vote_values`]);
//! * its flags are those set by more than `n / 2` of the votes naming that descriptor;
//! * its weight is, when more than `n / 2` of those votes carry a measurement, the
//!   measurement no coalition of `⌊n/2⌋` authorities can raise, capped by the declared
//!   bandwidth; otherwise the declared bandwidth capped at `unmeasured_weight_cap`;
//!   and when the base consensus (the newest majority-signed one before it, which the
//!   shared random value also continues from) lists the relay with a weight within
//!   [`WEIGHT_STEADY_PERCENT`] of the measured one, that weight is kept, so that measurement
//!   noise does not change the entry every period ([`steady_weight`]);
//! * its known-since is the claim no coalition of `⌊n/2⌋` authorities can make older;
//! * then the Sybil limit ([`apply_sybil_limit`]): at most two relays per IP address keep
//!   Running, the longest known.
//!
//! The result does not depend on the order of the votes.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use shallot_crypto::hex;
use shallot_crypto::keys::RelayId;
use shallot_proto::dir::{
    Consensus, ConsensusParams, Flags, RelayDescriptor, RelayEntry, SharedRandom, Vote, VoteEntry,
};
use thiserror::Error;

/// Relays per IP address that may keep the Running flag.
pub const MAX_RUNNING_PER_IP: usize = 2;

/// A measured weight within this many percent of the base consensus's weight for the relay
/// leaves the base's weight in place ([`steady_weight`]).
pub const WEIGHT_STEADY_PERCENT: u64 = 20;

/// The weight to publish for a relay whose rule-4 weight (§5.7) is `computed`, given its
/// weight `base` in the base consensus: `base` while it lies within
/// [`WEIGHT_STEADY_PERCENT`] of `computed` (`0.8 computed ≤ base ≤ 1.2 computed`) and does
/// not exceed the declared bandwidth, else `computed`. Measurements move by tens of percent
/// from one period to the next without the relay changing; republishing every such move
/// would change most entries every period and make every diff large. What rogues gain: at
/// most 20 % above a weight they cannot raise, and only while a majority-signed consensus
/// gave the relay that weight.
pub fn steady_weight(base: Option<u64>, computed: u64, declared: u64) -> u64 {
    match base {
        Some(b)
            if b <= declared
                && u128::from(b) * 100
                    <= u128::from(computed) * u128::from(100 + WEIGHT_STEADY_PERCENT)
                && u128::from(b) * 100
                    >= u128::from(computed) * u128::from(100 - WEIGHT_STEADY_PERCENT) =>
        {
            b
        }
        _ => computed,
    }
}

/// Significant figures a vote gives a measurement ([`rounded_measurement`]).
pub const MEASUREMENT_FIGURES: u32 = 2;

/// A measurement as a vote carries it (`docs/spec.md` §5.7): rounded to the nearest value with
/// [`MEASUREMENT_FIGURES`] significant figures (values under 100 are kept whole), at most 5 %
/// from the figure measured. Tor's bandwidth scanner rounds the same way (sbws, 2 significant
/// figures), and for the same reason: measurements of one relay differ by tens of percent
/// between runs and between authorities, so the digits past the second are noise, and every
/// one of them that changes puts the relay's entry in the next consensus diff.
pub fn rounded_measurement(value: u64) -> u64 {
    let keep = 10u64.pow(MEASUREMENT_FIGURES);
    let mut unit: u64 = 1;
    while value / unit >= keep {
        unit *= 10;
    }
    let rounded = (u128::from(value) + u128::from(unit / 2)) / u128::from(unit) * u128::from(unit);
    u64::try_from(rounded).unwrap_or(value / unit * unit)
}

/// Flags a relay loses with Running under the Sybil limit, since each presumes it.
pub(crate) const NEEDS_RUNNING: Flags = Flags::from_bits(
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

/// The network parameters the computation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComputeParams {
    /// What the consensus carries.
    pub consensus: ConsensusParams,
    /// The weight of an unmeasured relay is its declared bandwidth capped at this.
    pub unmeasured_weight_cap: u64,
    /// A descriptor published more than this long before valid-after is not used.
    pub descriptor_max_age_secs: u64,
}

/// The verified descriptors the votes may name, by digest.
pub type Descriptors = HashMap<[u8; 32], RelayDescriptor>;

/// Computes the unsigned consensus for `period` from `votes`, out of `n_authorities`
/// configured authorities, with the shared random values `shared_rand` (computed by
/// [`crate::shared_random::compute`]), continuing from `base` (the newest majority-signed
/// consensus before it, if any: measured weights close to its own are kept, [`steady_weight`]).
#[allow(clippy::too_many_arguments)]
pub fn compute_consensus(
    votes: &[Vote],
    n_authorities: usize,
    period: Period,
    params: &ComputeParams,
    descriptors: &Descriptors,
    shared_rand: SharedRandom,
    base: Option<&Consensus>,
) -> Result<Consensus, ComputeError> {
    check_votes(votes, period)?;
    let mut by_relay: BTreeMap<RelayId, Vec<&VoteEntry>> = BTreeMap::new();
    for v in votes {
        for e in &v.relays {
            by_relay.entry(e.id).or_default().push(e);
        }
    }
    let mut relays = Vec::new();
    let mut known_since = Vec::new();
    for (id, listing) in &by_relay {
        if let Some((mut entry, since, measured, declared)) =
            relay_entry(id, listing, n_authorities, period, params, descriptors)
        {
            if measured {
                let before = base.and_then(|b| b.relay(id)).map(|e| e.bandwidth);
                entry.bandwidth = steady_weight(before, entry.bandwidth, declared);
            }
            relays.push(entry);
            known_since.push(since);
        }
    }
    apply_sybil_limit(&mut relays, &known_since);
    Ok(Consensus {
        valid_after: period.valid_after,
        fresh_until: period.fresh_until,
        valid_until: period.valid_until,
        params: params.consensus,
        shared_rand,
        relays,
        signatures: Vec::new(),
    })
}

/// The descriptors a consensus computed from `votes` would need: for each relay, the digest
/// more than `n / 2` votes name, if any.
pub fn needed_descriptors(votes: &[Vote], n_authorities: usize) -> Vec<[u8; 32]> {
    let mut count: BTreeMap<(RelayId, [u8; 32]), usize> = BTreeMap::new();
    for v in votes {
        for e in &v.relays {
            *count.entry((e.id, e.descriptor)).or_default() += 1;
        }
    }
    count
        .into_iter()
        .filter(|(_, c)| c * 2 > n_authorities)
        .map(|((_, d), _)| d)
        .collect()
}

fn check_votes(votes: &[Vote], period: Period) -> Result<(), ComputeError> {
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
    Ok(())
}

/// One relay's entry, known-since time, whether its weight is measured, and its declared
/// bandwidth; or `None` when it is not listed.
fn relay_entry(
    id: &RelayId,
    listing: &[&VoteEntry],
    n: usize,
    period: Period,
    params: &ComputeParams,
    descriptors: &Descriptors,
) -> Option<(RelayEntry, u64, bool, u64)> {
    let mut by_digest: BTreeMap<[u8; 32], Vec<&VoteEntry>> = BTreeMap::new();
    for e in listing {
        by_digest.entry(e.descriptor).or_default().push(e);
    }
    // At most one digest can be named by more than half of all authorities.
    let (digest, voters) = by_digest.into_iter().find(|(_, v)| v.len() * 2 > n)?;
    let d = descriptors.get(&digest)?;
    let oldest = period
        .valid_after
        .saturating_sub(params.descriptor_max_age_secs);
    if d.fingerprint() != *id || d.published > period.valid_after || d.published < oldest {
        return None;
    }
    let (flags, weight, known_since, measured) = vote_values(&voters, n, d.bandwidth, params);
    let entry = RelayEntry {
        id: *id,
        nickname: d.nickname.clone(),
        address: d.address,
        bandwidth: weight,
        ntor_key: d.ntor_key,
        link_key: d.link_key,
        flags,
        family: d.family.clone(),
    };
    Some((entry, known_since, measured, d.bandwidth))
}

/// The flags, weight and known-since of an entry, from the `voters` naming its descriptor,
/// out of `n` configured authorities.
///
/// Every threshold counts all `n` authorities, never only the `k` voters: a relay that
/// uploaded to the rogues and to one honest authority is named by few votes, and among those
/// the rogues may be the majority. Let `t = ⌊n/2⌋`, the most authorities that are not a
/// majority: any coalition of rogues has at most `t` members, and each rule holds against
/// `t` of them, whoever else voted.
///
/// * A flag needs more than `n/2` votes for it, so `t` rogues need an honest vote too.
/// * The weight: the `m` measurements sorted ascending, the element at index `m − 1 − t`
///   (when `m > t`, that is more than `n/2` measured). At least `t + 1` measurements are at or
///   above it, and one of those is honest: rogues cannot raise it above an honest
///   measurement. With `m ≤ t` every measurement may be a rogue's: the declared bandwidth,
///   capped at `unmeasured_weight_cap`.
/// * The known-since: the claims sorted ascending (oldest first), the element at index `t`
///   (it exists: `k > n/2`). At least `t + 1` claims are at or before it, and one of those is
///   honest: rogues cannot make the relay look older than an honest authority says it is.
///
/// With all `n` votes in, `m − 1 − t = ⌊(n − 1)/2⌋` and `t = ⌊n/2⌋`: the low median of the
/// measurements and the upper median of the claims, as when thresholds counted the voters.
fn vote_values(
    voters: &[&VoteEntry],
    n: usize,
    declared: u64,
    params: &ComputeParams,
) -> (Flags, u64, u64, bool) {
    let t = n / 2;
    let mut flags = Flags::empty();
    for (flag, _) in Flags::ALL {
        let set = voters.iter().filter(|e| e.flags.contains(flag)).count();
        flags.set(flag, set * 2 > n);
    }
    let mut measured: Vec<u64> = voters.iter().filter_map(|e| e.measured).collect();
    measured.sort_unstable();
    let (weight, by_measurement) = match measured.len().checked_sub(t + 1) {
        Some(i) => (measured[i].min(declared), true),
        None => (declared.min(params.unmeasured_weight_cap), false),
    };
    let mut since: Vec<u64> = voters.iter().map(|e| e.known_since).collect();
    since.sort_unstable();
    // Listed relays have more than n/2 voters, so index t exists; the fallback (the newest
    // claim) is the safe side if it ever did not.
    let known_since = since.get(t).or(since.last()).copied().unwrap_or(u64::MAX);
    (flags, weight, known_since, by_measurement)
}

/// Lets at most [`MAX_RUNNING_PER_IP`] relays per IP address keep Running: the longest known
/// (smallest `known_since[i]` for `relays[i]`), ties to the lowest fingerprint. The others
/// lose Running and the flags that presume it (Guard, Stable, Mailbox). Bandwidth plays no
/// part, so a newcomer claiming more cannot push a known relay out.
pub fn apply_sybil_limit(relays: &mut [RelayEntry], known_since: &[u64]) {
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
        let since = |i: usize| known_since.get(i).copied().unwrap_or(u64::MAX);
        idx.sort_by(|&a, &b| {
            since(a)
                .cmp(&since(b))
                .then(relays[a].id.cmp(&relays[b].id))
        });
        for &i in &idx[MAX_RUNNING_PER_IP..] {
            relays[i].flags.set(NEEDS_RUNNING, false);
        }
    }
}

#[cfg(test)]
mod tests;
