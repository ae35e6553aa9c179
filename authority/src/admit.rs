//! Which descriptors an authority accepts and how long it keeps them (`docs/spec.md` §5.2):
//! the document checks, the address rule, the binding of a link key and an address to the
//! relay that proved them, and the flood limits (per /16 or /64, per link key, unproven ones
//! per uploader network, in all). Pure, over [`State`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use shallot_crypto::keys::RelayId;
use shallot_proto::dir::{DocError, RelayDescriptor};
use thiserror::Error;

use super::state::{Accepted, RelayRecord, State};
use super::store::RelayHistory;
use shallot_directory::network::NetworkParams;
use shallot_directory::routable::{client_network, descriptor_network, not_global};
use shallot_directory::verify::CLOCK_SKEW_SECS;

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
    /// Its address is not globally routable (and the network is not a test network).
    #[error("address {address} is not globally routable: {reason}")]
    NotRoutable {
        /// The address.
        address: SocketAddr,
        /// Why.
        reason: &'static str,
    },
    /// Another relay holds this link key and proved it.
    #[error("link key already listed for relay {0}, which proved it")]
    LinkKeyTaken(RelayId),
    /// Another relay is at this address and proved its keys there.
    #[error("address already listed for relay {0}, which proved its keys there")]
    AddressTaken(RelayId),
    /// Too many relays claim this link key and none of them has failed its probe yet.
    #[error("{limit} relays already claim this link key; try again after their probes")]
    LinkKeyLimit {
        /// The limit.
        limit: u64,
    },
    /// Too many descriptors with addresses in this network.
    #[error("the authority holds {limit} descriptors in {network} already")]
    NetworkFull {
        /// The network, as text.
        network: String,
        /// The limit.
        limit: u64,
    },
    /// The uploader's network already has as many unproven descriptors held as it may.
    #[error(
        "the authority holds {limit} descriptors uploaded from {network} that no probe has \
         proven yet; try again once their relays are reachable"
    )]
    UploaderFull {
        /// The uploader's network, as text.
        network: String,
        /// The limit.
        limit: u64,
    },
    /// The authority holds as many descriptors as it may.
    #[error("the authority holds its limit of {limit} descriptors")]
    Full {
        /// The limit.
        limit: u64,
    },
}

/// What accepting a descriptor changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The relay.
    pub id: RelayId,
    /// Whether its reachability must be (re)tested: new relay, or new address or keys.
    pub needs_probe: bool,
    /// Relays whose descriptors were dropped to make room: they claimed the same link key,
    /// never proved it, and failed their probe.
    pub evicted: Vec<RelayId>,
}

/// Counts of the held descriptors, kept in step with [`State::descriptors`].
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_network: HashMap<[u8; 9], u64>,
    by_link_key: HashMap<[u8; 32], Vec<RelayId>>,
    by_address: HashMap<SocketAddr, Vec<RelayId>>,
    /// Relays no probe has proven yet, by the network that uploaded them.
    unproven_by_uploader: HashMap<[u8; 9], u64>,
}

impl Index {
    /// One relay uploaded from `net` was proven (or dropped): it no longer counts.
    pub(crate) fn proven(&mut self, net: &[u8; 9]) {
        if let Some(n) = self.unproven_by_uploader.get_mut(net) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unproven_by_uploader.remove(net);
            }
        }
    }

    fn add(&mut self, id: RelayId, d: &RelayDescriptor) {
        *self
            .by_network
            .entry(descriptor_network(d.address.ip()))
            .or_default() += 1;
        self.by_link_key.entry(d.link_key).or_default().push(id);
        self.by_address.entry(d.address).or_default().push(id);
    }

    fn remove(&mut self, id: &RelayId, d: &RelayDescriptor) {
        let net = descriptor_network(d.address.ip());
        if let Some(n) = self.by_network.get_mut(&net) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_network.remove(&net);
            }
        }
        remove_from(&mut self.by_link_key, &d.link_key, id);
        remove_from(&mut self.by_address, &d.address, id);
    }

    fn network_count(&self, d: &RelayDescriptor) -> u64 {
        self.by_network
            .get(&descriptor_network(d.address.ip()))
            .copied()
            .unwrap_or(0)
    }
}

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<RelayId>>, k: &K, id: &RelayId) {
    if let Some(v) = map.get_mut(k) {
        v.retain(|x| x != id);
        if v.is_empty() {
            map.remove(k);
        }
    }
}

impl State {
    /// Checks a descriptor and keeps it if it is the relay's newest (`docs/spec.md` §5.2),
    /// without counting who uploaded it (see [`State::admit_from`]).
    pub fn admit(
        &mut self,
        text: &str,
        now: u64,
        params: &NetworkParams,
    ) -> Result<Admitted, AdmitError> {
        self.admit_inner(text, now, params, None)
    }

    /// Checks a descriptor uploaded from `uploader` and keeps it if it is the relay's newest
    /// (`docs/spec.md` §5.2); a relay not yet held counts against its uploader network's
    /// limit of unproven descriptors until a probe proves it.
    pub fn admit_from(
        &mut self,
        text: &str,
        now: u64,
        params: &NetworkParams,
        uploader: IpAddr,
    ) -> Result<Admitted, AdmitError> {
        self.admit_inner(text, now, params, Some(uploader))
    }

    fn admit_inner(
        &mut self,
        text: &str,
        now: u64,
        params: &NetworkParams,
        uploader: Option<IpAddr>,
    ) -> Result<Admitted, AdmitError> {
        let desc = RelayDescriptor::parse_and_verify(text)?;
        check_age(desc.published, now, params.descriptor_max_age_secs)?;
        if !params.test_network {
            if let Some(reason) = not_global(desc.address.ip()) {
                return Err(AdmitError::NotRoutable {
                    address: desc.address,
                    reason,
                });
            }
        }
        let id = desc.fingerprint();
        let old = self.descriptors.get(&id).cloned();
        if let Some(old) = &old {
            if old.desc.published >= desc.published {
                return Err(AdmitError::NotNewer {
                    have: old.desc.published,
                    got: desc.published,
                });
            }
        }
        let evicted = self.check_claims(&id, &desc, params)?;
        let same_network = old.as_ref().is_some_and(|o| {
            descriptor_network(o.desc.address.ip()) == descriptor_network(desc.address.ip())
        });
        let in_network = self.index.network_count(&desc) - u64::from(same_network);
        let limit = if desc.address.is_ipv4() {
            params.max_descriptors_per_ipv4_16
        } else {
            params.max_descriptors_per_ipv6_64
        };
        if in_network >= limit {
            let network = match desc.address.ip() {
                std::net::IpAddr::V4(v4) => {
                    let o = v4.octets();
                    format!("{}.{}.0.0/16", o[0], o[1])
                }
                std::net::IpAddr::V6(v6) => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            };
            return Err(AdmitError::NetworkFull { network, limit });
        }
        let uploader = match uploader {
            Some(ip) if old.is_none() => {
                let net = client_network(ip);
                let held = self
                    .index
                    .unproven_by_uploader
                    .get(&net)
                    .copied()
                    .unwrap_or(0);
                if held >= params.max_unproven_per_uploader {
                    return Err(AdmitError::UploaderFull {
                        network: client_network_text(ip),
                        limit: params.max_unproven_per_uploader,
                    });
                }
                Some(net)
            }
            _ => None,
        };
        if old.is_none() && self.descriptors.len() as u64 >= params.max_descriptors {
            return Err(AdmitError::Full {
                limit: params.max_descriptors,
            });
        }
        for e in &evicted {
            self.drop_relay(e);
        }
        let needs_probe = old.as_ref().is_none_or(|o| {
            o.desc.address != desc.address
                || o.desc.link_key != desc.link_key
                || o.desc.ntor_key != desc.ntor_key
        });
        if let Some(old) = &old {
            self.index.remove(&id, &old.desc);
            if needs_probe {
                self.measurements.moved(id);
            }
        }
        self.index.add(id, &desc);
        if !self.relays.contains_key(&id) {
            if let Some(net) = uploader {
                *self.index.unproven_by_uploader.entry(net).or_default() += 1;
            }
            self.relays
                .insert(id, RelayRecord::new(RelayHistory::default(), now, uploader));
        }
        self.descriptors
            .insert(id, Arc::new(Accepted::new(desc, text.to_string())));
        Ok(Admitted {
            id,
            needs_probe,
            evicted,
        })
    }

    /// Whether relay `id` proved what it claims: the link key (`key`) or the address of its
    /// descriptor, by its last successful probe, whatever probes failed since.
    fn proved_claim(&self, id: &RelayId, key: bool) -> bool {
        let (Some(a), Some(proof)) = (
            self.descriptors.get(id),
            self.relays.get(id).and_then(|r| r.last_proof),
        ) else {
            return false;
        };
        if key {
            proof.link_key == a.desc.link_key
        } else {
            proof.address == a.desc.address
        }
    }

    /// Refuses a link key or address another relay proved (even if its last probe failed);
    /// makes room under the per-link-key limit by evicting claimants that never proved the
    /// key and failed their last probe, newest first (returned); otherwise the newcomer, the
    /// newest unproven claimant, is refused.
    fn check_claims(
        &self,
        id: &RelayId,
        desc: &RelayDescriptor,
        params: &NetworkParams,
    ) -> Result<Vec<RelayId>, AdmitError> {
        let others = |ids: Option<&Vec<RelayId>>| -> Vec<RelayId> {
            ids.map(|v| v.iter().filter(|o| *o != id).copied().collect())
                .unwrap_or_default()
        };
        let same_key = others(self.index.by_link_key.get(&desc.link_key));
        if let Some(owner) = same_key.iter().find(|o| self.proved_claim(o, true)) {
            return Err(AdmitError::LinkKeyTaken(*owner));
        }
        let same_addr = others(self.index.by_address.get(&desc.address));
        if let Some(owner) = same_addr.iter().find(|o| self.proved_claim(o, false)) {
            return Err(AdmitError::AddressTaken(*owner));
        }
        let limit = params.max_descriptors_per_link_key;
        let excess = (same_key.len() as u64 + 1).saturating_sub(limit);
        if excess == 0 {
            return Ok(Vec::new());
        }
        let mut failed: Vec<(u64, RelayId)> = same_key
            .into_iter()
            .filter_map(|o| {
                let r = self.relays.get(&o)?;
                r.last_probe
                    .is_some_and(|p| !p.ok)
                    .then_some((r.unproven_from, o))
            })
            .collect();
        failed.sort_by(|a, b| b.cmp(a));
        let failed: Vec<RelayId> = failed
            .into_iter()
            .map(|(_, o)| o)
            .take(usize::try_from(excess).unwrap_or(usize::MAX))
            .collect();
        if (failed.len() as u64) < excess {
            return Err(AdmitError::LinkKeyLimit { limit });
        }
        Ok(failed)
    }

    /// Forgets a relay's descriptor and record.
    pub(crate) fn drop_relay(&mut self, id: &RelayId) {
        if let Some(a) = self.descriptors.remove(id) {
            self.index.remove(id, &a.desc);
        }
        if let Some(net) = self.relays.remove(id).and_then(|r| r.uploader) {
            self.index.proven(&net);
        }
        self.measurements.forget(id);
    }

    /// Keeps a descriptor reloaded from disk at `now` (verified again by the caller), without
    /// the upload checks.
    pub(crate) fn insert_loaded(&mut self, accepted: Accepted, history: RelayHistory, now: u64) {
        let id = accepted.desc.fingerprint();
        if let Some(old) = self.descriptors.remove(&id) {
            self.index.remove(&id, &old.desc);
        }
        self.index.add(id, &accepted.desc);
        if let Some(net) = self.relays.remove(&id).and_then(|r| r.uploader) {
            self.index.proven(&net);
        }
        self.relays.insert(id, RelayRecord::new(history, now, None));
        self.descriptors.insert(id, Arc::new(accepted));
    }

    /// Drops descriptors (and relay records) older than the age limit, and relays no probe
    /// has proven for `max_unproven_secs` (never, since they were accepted, or not since their
    /// last success): their history goes with them. Returns their ids.
    pub fn expire(&mut self, now: u64, max_age: u64) -> Vec<RelayId> {
        let lapse = self.max_unproven_secs;
        let old: Vec<RelayId> = self
            .descriptors
            .iter()
            .filter(|(id, a)| {
                a.desc.published.saturating_add(max_age) < now
                    || self
                        .relays
                        .get(id)
                        .is_none_or(|r| r.unproven_from.saturating_add(lapse) < now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &old {
            self.drop_relay(id);
        }
        old
    }
}

/// An uploader's network as text: `a.b.c.0/24` or `x:x:x:x::/64`.
fn client_network_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => client_network_text(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
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

#[cfg(test)]
mod tests;
