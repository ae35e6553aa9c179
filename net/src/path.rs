//! Path selection (`docs/spec.md` §11.2), pure: weighted choice among Running relays under
//! the path rules — every relay distinct, no two in one /16 (IPv4) or /32 (IPv6), no two in
//! one declared family — with the first hop a guard and the last hop chosen by purpose. The
//! weights are the consensus weights (measured by the authorities), capped so that no relay
//! gets more than the consensus's `max-share-ppm` of any draw.

use std::collections::HashSet;
use std::net::IpAddr;

use rand::Rng;
use shallot_crypto::keys::RelayId;
use shallot_directory::VerifiedConsensus;
use shallot_proto::dir::consensus::PPM;
use shallot_proto::dir::{Flags, RelayEntry};
use thiserror::Error;

/// Why no path could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The requested last hop is not a usable relay.
    #[error("relay {0} is not running in the consensus")]
    ExitUnavailable(RelayId),
    /// Not enough relays satisfy the rules.
    #[error("not enough usable relays for a {hops}-hop path ({reason})")]
    NotEnoughRelays {
        /// The path length asked for.
        hops: usize,
        /// Which position could not be filled.
        reason: &'static str,
    },
    /// None of the client's guards is listed as usable and it may not add another now
    /// (`docs/spec.md` §11.3): it starts no circuit rather than use a first hop outside its
    /// guards.
    #[error("no usable guard; waiting for a consensus that lists one")]
    NoUsableGuard,
}

/// The network a relay is in for the path rules: its /16 (IPv4) or /32 (IPv6), tagged with
/// the address family so the two never compare equal.
pub fn subnet(ip: IpAddr) -> [u8; 5] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], 0, 0]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [6, o[0], o[1], o[2], o[3]]
        }
    }
}

/// Whether two relays may not share a path: the same relay, the same subnet, or one lists
/// the other in its family.
pub fn related(a: &RelayEntry, b: &RelayEntry) -> bool {
    a.id == b.id
        || subnet(a.address.ip()) == subnet(b.address.ip())
        || a.family.contains(&b.id)
        || b.family.contains(&a.id)
}

/// The weights to draw with: each of `weights` (0 counting as 1) capped at the one value `c`
/// for which a capped relay holds exactly `max_share_ppm` parts per million of the capped
/// total, so that no relay's chance exceeds that share. When even equal weights would give
/// each more than the share (fewer than `1,000,000 / max_share_ppm` relays), all are equal.
pub fn capped_weights(weights: &[u64], max_share_ppm: u64) -> Vec<u128> {
    let w: Vec<u128> = weights.iter().map(|b| u128::from((*b).max(1))).collect();
    let ppm = u128::from(max_share_ppm.clamp(1, PPM));
    let million = u128::from(PPM);
    let mut sorted = w.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut rest: u128 = sorted.iter().sum();
    // With the k largest capped at c: c = ppm·rest / (10^6 − ppm·k), valid while the k-th
    // largest is at least c and the next one at most c.
    for (k, heaviest) in sorted.iter().enumerate() {
        let room = million.saturating_sub(ppm * k as u128);
        if room == 0 {
            break;
        }
        let cap = ppm * rest / room;
        if *heaviest <= cap {
            if k == 0 {
                return w;
            }
            return w.iter().map(|x| (*x).min(cap.max(1))).collect();
        }
        rest -= heaviest;
    }
    vec![1; w.len()]
}

/// Picks one relay from `candidates` with probability proportional to its capped weight
/// ([`capped_weights`]).
pub fn weighted_pick<'a, R: Rng>(
    candidates: &[&'a RelayEntry],
    max_share_ppm: u64,
    rng: &mut R,
) -> Option<&'a RelayEntry> {
    let weights: Vec<u64> = candidates.iter().map(|r| r.bandwidth).collect();
    let capped = capped_weights(&weights, max_share_ppm);
    let total: u128 = capped.iter().sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.gen_range(0..total);
    for (r, w) in candidates.iter().zip(&capped) {
        if x < *w {
            return Some(r);
        }
        x -= w;
    }
    candidates.last().copied()
}

/// Chooses a `hops`-relay path: `first` (a guard) when given, `last` when given, the rest
/// bandwidth-weighted among Running relays not in `avoid`, all under the path rules.
pub fn choose_path<'a, R: Rng>(
    consensus: &'a VerifiedConsensus,
    hops: usize,
    first: Option<&RelayId>,
    last: Option<&RelayId>,
    avoid: &HashSet<RelayId>,
    rng: &mut R,
) -> Result<Vec<&'a RelayEntry>, PathError> {
    let running = |id: &RelayId| {
        consensus
            .relay(id)
            .filter(|r| r.flags.contains(Flags::RUNNING))
            .ok_or(PathError::ExitUnavailable(*id))
    };
    let last = last.map(running).transpose()?;
    let first = first.map(running).transpose()?;
    let usable: Vec<&RelayEntry> = consensus
        .relays
        .iter()
        .filter(|r| r.flags.contains(Flags::RUNNING) && !avoid.contains(&r.id))
        .collect();
    let mut path: Vec<&RelayEntry> = Vec::with_capacity(hops);
    let fits = |r: &RelayEntry, chosen: &[&RelayEntry], last: Option<&RelayEntry>| {
        chosen.iter().all(|c| !related(c, r)) && last.is_none_or(|l| !related(l, r))
    };
    if let Some(f) = first {
        if last.is_some_and(|l| related(l, f)) {
            return Err(PathError::NotEnoughRelays {
                hops,
                reason: "the guard is related to the last hop",
            });
        }
        path.push(f);
    }
    let fill = hops - usize::from(last.is_some());
    while path.len() < fill {
        let candidates: Vec<&RelayEntry> = usable
            .iter()
            .copied()
            .filter(|r| fits(r, &path, last))
            .filter(|r| !path.is_empty() || r.flags.contains(Flags::GUARD) || first.is_some())
            .collect();
        let pick = weighted_pick(&candidates, consensus.params.max_share_ppm, rng).ok_or(
            PathError::NotEnoughRelays {
                hops,
                reason: if path.is_empty() {
                    "no guard"
                } else {
                    "no relay unrelated to the others"
                },
            },
        )?;
        path.push(pick);
    }
    if let Some(l) = last {
        path.push(l);
    }
    path.truncate(hops);
    Ok(path)
}

#[cfg(test)]
mod tests;
