//! Where a relay's measured capacity comes from (`docs/spec.md` §5.7): the seam between the
//! vote and whatever measures.
//!
//! A vote carries, for each relay, this authority's *measured* capacity, never the declared
//! one: [`MeasurementSource::measured`] answers it. The figure voted is the scanner's
//! ([`crate::scanner`]): a timed transfer through a two-hop circuit, helper then relay, that
//! the relay cannot tell from a client's by where it comes from. The one-hop timed transfer at
//! the end of each reachability probe ([`shallot_directory::probe`]), which the relay knows it
//! is under and could serve faster than anyone else, is kept apart
//! ([`Measurements::record_probe`]): logged beside the scanner's figure, never voted. A relay
//! the scanner has not measured has no measurement, and its weight is capped
//! (`unmeasured_weight_cap`).

use std::collections::{HashMap, HashSet};

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
    /// The scanner's figures: (when, bytes per second).
    latest: HashMap<RelayId, (u64, u64)>,
    /// The probes' one-hop figures, never voted: (when, bytes per second).
    probed: HashMap<RelayId, (u64, u64)>,
    /// Relays whose descriptor moved them (a new address, link key or onion key) since the
    /// scanner last measured them: due again whatever the scan interval.
    moved: HashSet<RelayId>,
    /// Scanner measurements recorded since start.
    recorded: u64,
    max_age: u64,
}

impl Measurements {
    /// No measurement yet; each one recorded stays usable for `max_age` seconds.
    pub fn new(max_age: u64) -> Self {
        Measurements {
            latest: HashMap::new(),
            probed: HashMap::new(),
            moved: HashSet::new(),
            recorded: 0,
            max_age,
        }
    }

    /// Records that the scanner measured `relay` at `bytes_per_sec` at time `at`: the figure
    /// voted.
    pub fn record(&mut self, relay: RelayId, at: u64, bytes_per_sec: u64) {
        self.latest.insert(relay, (at, bytes_per_sec));
        self.moved.remove(&relay);
        self.recorded += 1;
    }

    /// Scanner measurements recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Notes that `relay`'s new descriptor names another address, link key or onion key:
    /// what was measured may be another machine, so the scanner measures it again in its next
    /// round, whatever the scan interval. The old figure is voted until then.
    pub fn moved(&mut self, relay: RelayId) {
        if self.latest.contains_key(&relay) {
            self.moved.insert(relay);
        }
    }

    /// Records the one-hop figure of a reachability probe of `relay` at time `at`: kept for
    /// comparison with the scanner's, never voted.
    pub fn record_probe(&mut self, relay: RelayId, at: u64, bytes_per_sec: u64) {
        self.probed.insert(relay, (at, bytes_per_sec));
    }

    /// The last probe's one-hop figure for `relay`, fresh or not.
    pub fn probe_figure(&self, relay: &RelayId) -> Option<u64> {
        self.probed.get(relay).map(|(_, v)| *v)
    }

    /// The blocks the next probe of `relay` at `now` asks it to send, of `blocks` configured:
    /// none while its last probe figure is younger than `max_age`, so that a relay probed
    /// every round is timed once every few rounds, not every round.
    pub fn probe_transfer(&self, relay: &RelayId, now: u64, blocks: u16) -> u16 {
        let fresh = self
            .probed
            .get(relay)
            .is_some_and(|(at, _)| at.saturating_add(self.max_age) >= now);
        if fresh {
            0
        } else {
            blocks
        }
    }

    /// Whether the scanner should measure `relay` in a round that ends (is due to be followed
    /// by the next) at `by`, when each relay is measured every `every` seconds: it has no
    /// measurement, its last was taken at least `every` before `by`, or its descriptor moved
    /// it since ([`Measurements::moved`]).
    pub fn scan_due(&self, relay: &RelayId, by: u64, every: u64) -> bool {
        self.moved.contains(relay)
            || self
                .latest
                .get(relay)
                .is_none_or(|(at, _)| at.saturating_add(every) <= by)
    }

    /// Forgets a relay (its descriptor was dropped).
    pub fn forget(&mut self, relay: &RelayId) {
        self.latest.remove(relay);
        self.probed.remove(relay);
        self.moved.remove(relay);
    }

    /// Relays with a scanner measurement, fresh or not.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether no relay has a scanner measurement.
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
    fn a_relay_is_scanned_again_once_its_scan_interval_has_passed() {
        let mut m = Measurements::new(3 * 3600);
        let r = RelayId([4; 20]);
        assert!(m.scan_due(&r, 1003, 3), "never measured");
        m.record(r, 1001, 5_000_000);
        // Scanned every voting interval (3 s): the next round, ending at 1006, takes it.
        assert!(!m.scan_due(&r, 1003, 3), "measured in this very round");
        assert!(m.scan_due(&r, 1006, 3));
        // Scanned hourly under 3-s rounds: not before the round ending an hour after.
        assert!(!m.scan_due(&r, 1006, 3600));
        assert!(!m.scan_due(&r, 4600, 3600));
        assert!(m.scan_due(&r, 4601, 3600));
        // Meanwhile the measurement stays fresh for the vote.
        assert_eq!(m.measured(&r, 4601), Some(5_000_000));
        // A relay its descriptor moved is due at once, its old figure voted until measured.
        m.moved(r);
        assert!(m.scan_due(&r, 1006, 3600));
        assert_eq!(m.measured(&r, 1006), Some(5_000_000));
        m.record(r, 1007, 1_000_000);
        assert!(!m.scan_due(&r, 1010, 3600), "measured again");
        assert_eq!(m.recorded(), 2);
        // Moving a relay never measured, or forgotten, leaves nothing behind.
        let other = RelayId([5; 20]);
        m.moved(other);
        m.forget(&r);
        assert!(m.moved.is_empty());
    }

    #[test]
    fn a_probe_times_a_transfer_only_once_its_last_figure_is_stale() {
        let mut m = Measurements::new(30);
        let r = RelayId([3; 20]);
        assert_eq!(m.probe_transfer(&r, 1000, 256), 256, "no figure yet");
        m.record_probe(r, 1000, 5_000_000);
        assert_eq!(m.probe_transfer(&r, 1010, 256), 0);
        assert_eq!(m.probe_transfer(&r, 1030, 256), 0);
        assert_eq!(m.probe_transfer(&r, 1031, 256), 256, "stale after 30 s");
        // The scanner's measurement does not stand in for the probe's figure.
        let other = RelayId([4; 20]);
        m.record(other, 1000, 1);
        assert_eq!(m.probe_transfer(&other, 1001, 256), 256);
    }

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

    /// A probe's one-hop figure, which a relay can serve faster to the authority than to
    /// anyone, is never voted.
    #[test]
    fn a_probe_figure_is_never_voted() {
        let mut m = Measurements::new(30);
        let r = RelayId([2; 20]);
        m.record_probe(r, 100, 1_000_000_000);
        assert_eq!(m.measured(&r, 100), None);
        assert_eq!(m.probe_figure(&r), Some(1_000_000_000));
        m.record(r, 101, 5000);
        m.record_probe(r, 102, 2_000_000_000);
        assert_eq!(m.measured(&r, 102), Some(5000));
    }
}
