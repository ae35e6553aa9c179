//! Where a relay's measured capacity comes from (`docs/spec.md` §5.7): the seam between the
//! vote and whatever measures.
//!
//! A vote carries, for each relay, this authority's *measured* capacity, never the declared
//! one: [`MeasurementSource::measured`] answers it. Today the only source is the timed
//! transfer at the end of each reachability probe ([`shallot_directory::probe`]): a relay sends a few
//! hundred blocks straight to the authority over the probe link, and the rate is recorded
//! here. That is a one-hop measurement the relay knows it is under, not Tor's scanner (a timed
//! download through a two-hop circuit the relay cannot tell from a client's); a scanner can
//! record into [`Measurements`] (or implement the trait) without the vote changing.

use std::collections::HashMap;

use shallot_crypto::keys::RelayId;

/// Measured capacities, per relay.
pub trait MeasurementSource {
    /// The capacity of `relay` in bytes per second, if a measurement fresh at `now` (unix
    /// seconds) exists.
    fn measured(&self, relay: &RelayId, now: u64) -> Option<u64>;
}

/// The latest measurement of each relay, each usable for `max_age` seconds.
#[derive(Debug, Clone)]
pub struct Measurements {
    latest: HashMap<RelayId, (u64, u64)>,
    max_age: u64,
}

impl Measurements {
    /// No measurement yet; each one recorded stays usable for `max_age` seconds.
    pub fn new(max_age: u64) -> Self {
        Measurements {
            latest: HashMap::new(),
            max_age,
        }
    }

    /// Records that `relay` was measured at `bytes_per_sec` at time `at`.
    pub fn record(&mut self, relay: RelayId, at: u64, bytes_per_sec: u64) {
        self.latest.insert(relay, (at, bytes_per_sec));
    }

    /// Forgets a relay (its descriptor was dropped).
    pub fn forget(&mut self, relay: &RelayId) {
        self.latest.remove(relay);
    }

    /// Relays with a measurement, fresh or not.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no relay has a measurement.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

impl MeasurementSource for Measurements {
    fn measured(&self, relay: &RelayId, now: u64) -> Option<u64> {
        self.latest
            .get(relay)
            .filter(|(at, _)| at.saturating_add(self.max_age) >= now)
            .map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_expire() {
        let mut m = Measurements::new(30);
        let r = RelayId([1; 20]);
        assert_eq!(m.measured(&r, 100), None);
        m.record(r, 100, 5000);
        assert_eq!(m.measured(&r, 130), Some(5000));
        assert_eq!(m.measured(&r, 131), None);
        m.forget(&r);
        assert!(m.is_empty());
    }
}
