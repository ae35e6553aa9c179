//! Reachability: before listing a relay as Running, the authority probes it at the address its
//! descriptor names, for the link key, onion key and identity it names ([`shallot_directory::probe`];
//! `docs/spec.md` §5.7).
//!
//! Probes run in rounds, one every voting interval, and each round ends inside the interval:
//! a probe may take at most [`RoundTiming::probe_limit`], at most `max_concurrent_probes` run
//! at once, so a round fits [`RoundTiming::capacity`] probes in its budget of half an interval;
//! [`plan_round`] picks them, each relay once, the relays that were Running first and then the
//! longest known, so that a flood of new descriptors waits behind the relays clients use. A
//! relay whose descriptor is new or changed address or keys is probed at once, unless a probe
//! of it is already waiting or running; such probes have their own slots (a quarter of
//! `max_concurrent_probes`, at least one), so that they cannot hold up a round.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::schedule::now_secs;
use super::state::{Probe, State};
use super::Shared;
use shallot_directory::probe::{probe, ProbeTarget};

/// Relays waiting for a first probe; beyond this, they wait for the next round.
pub const QUEUE_LEN: usize = 1024;

/// How long probes and rounds may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundTiming {
    /// Time for the whole round.
    pub budget: Duration,
    /// Time for one probe: twice the reachability timeout (connect and handshake, then
    /// answer and transfer), but never more than the budget.
    pub probe_limit: Duration,
    /// Probes at once.
    pub concurrency: usize,
}

impl RoundTiming {
    /// The timing for a voting interval, a probe timeout and a concurrency.
    pub fn new(interval_secs: u64, timeout_secs: u64, concurrency: u64) -> Self {
        let budget = Duration::from_millis(interval_secs.saturating_mul(500).max(1));
        let probe_limit = Duration::from_secs(timeout_secs.saturating_mul(2)).min(budget);
        RoundTiming {
            budget,
            probe_limit,
            concurrency: usize::try_from(concurrency.max(1)).unwrap_or(usize::MAX),
        }
    }

    /// The probes a round can finish within its budget: the concurrency times the number of
    /// probe limits that fit in the budget (at least one).
    pub fn capacity(&self) -> usize {
        let waves = (self.budget.as_millis() / self.probe_limit.as_millis().max(1)).max(1);
        self.concurrency
            .saturating_mul(usize::try_from(waves).unwrap_or(usize::MAX))
    }
}

/// The relays one round probes, in order: every relay with a descriptor once, those whose last
/// probe succeeded first, then by first seen (oldest first), then by fingerprint; at most
/// `capacity` of them.
pub fn plan_round(state: &State, capacity: usize) -> Vec<RelayId> {
    let mut order: Vec<(bool, u64, RelayId)> = state
        .descriptors
        .keys()
        .map(|id| {
            let rec = state.relays.get(id);
            let was_up = rec.and_then(|r| r.last_probe).is_some_and(|p| p.ok);
            let first_seen = rec.map_or(u64::MAX, |r| r.history.first_seen);
            (!was_up, first_seen, *id)
        })
        .collect();
    order.sort();
    order.truncate(capacity);
    order.into_iter().map(|(_, _, id)| id).collect()
}

/// Probes relays as they are accepted and in rounds, until aborted.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<RelayId>) {
    let p = shared.network.params;
    let timing = RoundTiming::new(
        p.voting_interval_secs,
        p.reachability_timeout_secs,
        p.max_concurrent_probes,
    );
    let mut ticker = tokio::time::interval(Duration::from_secs(p.voting_interval_secs));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let permits = Arc::new(Semaphore::new(timing.concurrency));
    let urgent_permits = Arc::new(Semaphore::new((timing.concurrency / 4).max(1)));
    let in_flight: Arc<Mutex<HashSet<RelayId>>> = Arc::new(Mutex::new(HashSet::new()));
    let mut urgent = JoinSet::new();
    let mut round: Option<JoinSet<()>> = None;
    let round_end = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(round_end);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Some(mut old) = round.take() {
                    old.abort_all();
                }
                let plan = plan_round(&shared.state(), timing.capacity());
                let mut set = JoinSet::new();
                for id in plan {
                    spawn_probe(&mut set, &shared, &permits, &in_flight, id, timing.probe_limit);
                }
                round = Some(set);
                round_end.as_mut().reset(tokio::time::Instant::now() + timing.budget);
            }
            _ = &mut round_end, if round.is_some() => {
                // Whatever has not finished inside the budget waits for the next round.
                if let Some(mut set) = round.take() {
                    set.abort_all();
                }
            }
            Some(id) = queue.recv() => {
                spawn_probe(&mut urgent, &shared, &urgent_permits, &in_flight, id, timing.probe_limit);
            }
            Some(_) = next(&mut round), if round.as_ref().is_some_and(|r| !r.is_empty()) => {}
            Some(_) = urgent.join_next(), if !urgent.is_empty() => {}
        }
    }
}

async fn next(round: &mut Option<JoinSet<()>>) -> Option<()> {
    match round {
        Some(set) => set.join_next().await.map(|_| ()),
        None => None,
    }
}

/// Starts a probe of `id` unless one is already waiting or running.
fn spawn_probe(
    set: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    in_flight: &Arc<Mutex<HashSet<RelayId>>>,
    id: RelayId,
    limit: Duration,
) {
    if !lock(in_flight).insert(id) {
        return;
    }
    let (shared, permits, in_flight) = (shared.clone(), permits.clone(), in_flight.clone());
    set.spawn(async move {
        let _done = InFlight(in_flight, id);
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        probe_one(&shared, id, limit).await;
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a relay from the in-flight set when its probe task ends (or is aborted).
struct InFlight(Arc<Mutex<HashSet<RelayId>>>, RelayId);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).remove(&self.1);
    }
}

/// Probes one relay for what its current descriptor claims and records the result.
async fn probe_one(shared: &Shared, id: RelayId, limit: Duration) {
    let Some(target) = shared.state().descriptors.get(&id).map(|a| ProbeTarget {
        address: a.desc.address,
        link_key: a.desc.link_key,
        identity: a.desc.identity,
        ntor_key: a.desc.ntor_key,
    }) else {
        return;
    };
    let transfer = u16::try_from(shared.network.params.probe_transfer_blocks).unwrap_or(0);
    let result = probe(&target, transfer, limit).await;
    let measured = match &result {
        Ok(out) => {
            tracing::debug!("relay {id} at {} is reachable", target.address);
            out.measured
        }
        Err(e) => {
            tracing::info!("relay {id} at {} failed its probe: {e}", target.address);
            None
        }
    };
    shared.state().record_probe(
        &id,
        Probe {
            at: now_secs(),
            ok: result.is_ok(),
            address: target.address,
            link_key: target.link_key,
            ntor_key: target.ntor_key,
        },
        measured,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;
    use shallot_directory::network::NetworkParams;
    use shallot_proto::dir::RelayDescriptor;

    #[test]
    fn a_round_always_fits_its_budget_inside_the_interval() {
        for (interval, timeout, conc) in [(3, 2, 16), (3600, 10, 16), (2, 10, 1), (60, 1, 4)] {
            let t = RoundTiming::new(interval, timeout, conc);
            let waves = u32::try_from(t.capacity() / t.concurrency).unwrap();
            assert!(t.probe_limit * waves <= t.budget, "{interval} {timeout}");
            assert!(t.budget < Duration::from_secs(interval));
            assert!(t.capacity() >= t.concurrency);
        }
        assert_eq!(RoundTiming::new(3600, 10, 16).capacity(), 16 * 90);
        assert_eq!(
            RoundTiming::new(3, 2, 16).probe_limit,
            Duration::from_millis(1500)
        );
    }

    /// Review finding 5: probes are de-duplicated and known relays go first, so a flood of new
    /// descriptors cannot push a Running relay out of a round.
    #[test]
    fn rounds_probe_each_relay_once_known_relays_first() {
        let p = NetworkParams {
            test_network: true,
            max_descriptors_per_ipv4_16: 1000,
            ..NetworkParams::default()
        };
        let mut s = State::new(&p);
        let t = 100_000;
        let add = |s: &mut State, i: u8, seen: u64| {
            let id = IdentityKeypair::generate(&mut rand::thread_rng());
            let text = RelayDescriptor {
                nickname: "r".into(),
                address: format!("10.0.{i}.1:9000").parse().unwrap(),
                identity: id.public(),
                ntor_key: [1; 32],
                link_key: [i; 32],
                bandwidth: 1,
                family: vec![],
                mailbox: false,
                published: seen,
            }
            .sign(&id)
            .unwrap();
            s.admit(&text, seen, &p).unwrap().id
        };
        let old = add(&mut s, 1, t - 500);
        let up = add(&mut s, 2, t - 10);
        let flood: Vec<RelayId> = (3..40).map(|i| add(&mut s, i, t)).collect();
        let d = s.descriptors[&up].desc.clone();
        s.record_probe(
            &up,
            Probe {
                at: t,
                ok: true,
                address: d.address,
                link_key: d.link_key,
                ntor_key: d.ntor_key,
            },
            None,
        );
        let plan = plan_round(&s, 5);
        assert_eq!(plan.len(), 5);
        assert_eq!(plan[0], up, "the relay that was up goes first");
        assert_eq!(plan[1], old, "then the longest known");
        let all = plan_round(&s, 1000);
        assert_eq!(all.len(), 2 + flood.len());
        let unique: HashSet<RelayId> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "each relay once");
    }
}
