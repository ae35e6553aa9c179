//! Reachability: before listing a relay as Running, the authority probes it at the address its
//! descriptor names, for the link key, onion key and identity it names ([`shallot_directory::probe`];
//! `docs/spec.md` §5.7).
//!
//! Probes run in rounds, one every voting interval, and each round ends inside the interval:
//! a probe may take at most [`RoundTiming::probe_limit`] and at most `max_concurrent_probes`
//! run at once. [`plan_round`] orders every relay with a descriptor, each once: first the
//! [`RoundTiming::capacity`] probes the round finishes in its budget of half an interval even
//! if every one takes its whole limit (the relays a probe has proven before the others, which
//! keep a quarter of them; least recently probed first), then everyone else. A round starts
//! its probes in that order as slots free up, so when probes are quick (the usual case: a few
//! milliseconds each) one round reaches every relay, and when they are slow the first part is
//! still reached and the rest rotate in over the next rounds, so that a flood of new or
//! stalling descriptors waits behind the relays clients use. Every round but the first after
//! a start spreads its starts over the part of its budget that still leaves the last its whole
//! limit, a slot-full at a time ([`RoundTiming::start_offset`]), so that neither the authority
//! nor the machine it shares sees every probe of the interval at once. A relay is marked when
//! its probe
//! ends; one the budget left unstarted or cut short goes first in the next round. A relay whose
//! descriptor is new or changed address or keys is probed at once, unless a probe of it is
//! already waiting or running; such probes have their own slots (a quarter of
//! `max_concurrent_probes`, at least one), so that they cannot hold up a round. Each round
//! also tells the server which addresses are proven relays' ([`super::server`]'s slots kept
//! for relays).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_rt::{lock, AbortOnDrop};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::schedule::now_secs;
use super::state::{Probe, State};
use super::Shared;
use shallot_directory::probe::{probe, ProbeTarget};

/// A set of relays shared by probe tasks: those being probed, or those queued.
type RelaySet = Arc<Mutex<HashSet<RelayId>>>;

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

    /// The probes a round is sure to finish within its budget even if every one takes its
    /// whole limit: the concurrency times the number of probe limits that fit in the budget
    /// (at least one). Quicker probes let the round go on past them.
    pub fn capacity(&self) -> usize {
        let waves = (self.budget.as_millis() / self.probe_limit.as_millis().max(1)).max(1);
        self.concurrency
            .saturating_mul(usize::try_from(waves).unwrap_or(usize::MAX))
    }

    /// The part of the budget over which a round spreads its probes' starts: what is left
    /// once a probe started at its end still has its whole limit. Zero when a probe's limit
    /// takes the whole budget (with the test networks' probe timeout of 2 s, at voting
    /// intervals up to 8 s; 26 s at 60 s).
    pub fn spread(&self) -> Duration {
        self.budget.saturating_sub(self.probe_limit)
    }

    /// How long after its round begins the `i`th probe of a plan of `n` may start, at the
    /// earliest. The plan goes a slot-full (`concurrency` probes) at a time: group `g` starts
    /// `g · concurrency / n` of the way through [`Self::spread`]. Whole groups, not single
    /// probes, so that the guaranteed part still ends inside the budget when every probe
    /// takes its whole limit: a group waits for the later of its start and the group before
    /// it, and each ends a limit after its start.
    pub fn start_offset(&self, i: usize, n: usize) -> Duration {
        let first_of_group = i - i % self.concurrency.max(1);
        if n == 0 || first_of_group >= n {
            return Duration::ZERO;
        }
        let nanos = self.spread().as_nanos() * first_of_group as u128 / n as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The order in which one round probes the relays with a descriptor, each once. The first
/// `capacity` are those the round reaches even if every probe is slow: relays a probe has
/// proven at some time first, the others (never proven) getting what is left but at least a
/// quarter; within each group, the least recently probed first (a new relay counts as probed
/// when it was accepted), then by fingerprint. After them come the remaining relays, proven
/// ones first, in the same order. So, with `n` relays in one group and the round to itself,
/// every relay is probed within ⌈n / capacity⌉ rounds however slow the probes, and in every
/// round when they are quick.
pub fn plan_round(state: &State, capacity: usize) -> Vec<RelayId> {
    let mut known: Vec<(u64, RelayId)> = Vec::new();
    let mut unknown: Vec<(u64, RelayId)> = Vec::new();
    for id in state.descriptors.keys() {
        let rec = state.relays.get(id);
        let entry = (rec.map_or(0, |r| r.last_planned), *id);
        if rec.is_some_and(|r| r.history.known_since.is_some()) {
            known.push(entry);
        } else {
            unknown.push(entry);
        }
    }
    known.sort_unstable();
    unknown.sort_unstable();
    let unknown_share = unknown.len().min(capacity.div_ceil(4));
    let take_known = known.len().min(capacity.saturating_sub(unknown_share));
    let take_unknown = unknown.len().min(capacity.saturating_sub(take_known));
    let (known_first, known_rest) = known.split_at(take_known);
    let (unknown_first, unknown_rest) = unknown.split_at(take_unknown);
    known_first
        .iter()
        .chain(unknown_first)
        .chain(known_rest)
        .chain(unknown_rest)
        .map(|(_, id)| *id)
        .collect()
}

/// Marks `id` as probed at `now` (its probe ended, whatever the result), for the order of
/// later rounds.
pub fn mark_probed(state: &mut State, id: &RelayId, now: u64) {
    if let Some(r) = state.relays.get_mut(id) {
        r.last_planned = now;
    }
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
    // Relays being probed (holding a slot), and relays waiting for an urgent slot: a relay is
    // never probed twice at once, nor queued twice for an urgent probe.
    let running: RelaySet = Arc::default();
    let queued: RelaySet = Arc::default();
    let mut urgent = JoinSet::new();
    let mut round: Option<AbortOnDrop<()>> = None;
    let round_end = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(round_end);
    // The first round after a start is not spread: what relays proved before the authority
    // stopped is not kept, so each needs a probe before its first vote.
    let mut first = true;
    loop {
        tokio::select! {
            began = ticker.tick() => {
                // A round still running at the next tick is ended (its probes aborted) before
                // the new one starts.
                drop(round.take());
                let (plan, relay_ips) = {
                    let state = shared.state();
                    (plan_round(&state, timing.capacity()), state.known_relay_ips())
                };
                shared.limits.set_relay_ips(relay_ips);
                let probing = shared.clone();
                let probe = move |id| {
                    let shared = probing.clone();
                    async move { probe_one(&shared, id, timing.probe_limit).await }
                };
                let slots = (permits.clone(), running.clone());
                let spread = !std::mem::take(&mut first);
                round = Some(AbortOnDrop::new(tokio::spawn(run_round(
                    slots, plan, timing, began, spread, probe,
                ))));
                round_end.as_mut().reset(began + timing.budget);
            }
            _ = &mut round_end, if round.is_some() => {
                // Whatever has not finished inside the budget waits for the next round:
                // dropping the round aborts its probes.
                round = None;
            }
            Some(id) = queue.recv() => {
                let sets = (&running, &queued);
                spawn_probe(&mut urgent, &shared, &urgent_permits, sets, id, timing.probe_limit);
            }
            Some(_) = urgent.join_next(), if !urgent.is_empty() => {}
        }
    }
}

/// One round, begun at `began`: starts `probe` of each relay of `plan` in order, each when a
/// slot of `permits` frees up and, if `spread`, not before its offset in the round
/// ([`RoundTiming::start_offset`]), and waits for them all. A relay in `running` already (an
/// urgent probe of its new descriptor) is passed over. Dropped (at the end of the budget), it
/// aborts the probes still running and starts no more.
async fn run_round<P, F>(
    (permits, running): (Arc<Semaphore>, RelaySet),
    plan: Vec<RelayId>,
    timing: RoundTiming,
    began: tokio::time::Instant,
    spread: bool,
    probe: P,
) where
    P: Fn(RelayId) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let n = plan.len();
    let mut probes = JoinSet::new();
    for (i, id) in plan.into_iter().enumerate() {
        let offset = timing.start_offset(i, n);
        if spread && !offset.is_zero() {
            tokio::time::sleep_until(began + offset).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        while probes.try_join_next().is_some() {}
        let Some(running) = Held::take(&running, id) else {
            continue;
        };
        let probing = probe(id);
        // The slot and the mark go with the task: dropped with it even if it never runs.
        probes.spawn(async move {
            let _held = (running, permit);
            probing.await;
        });
    }
    while probes.join_next().await.is_some() {}
}

/// Queues an urgent probe of `id` (its descriptor is new or changed) unless one is already
/// queued; it waits for a slot of `permits`, then runs unless `id` is being probed by then.
fn spawn_probe(
    set: &mut JoinSet<()>,
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    (running, queued): (&RelaySet, &RelaySet),
    id: RelayId,
    limit: Duration,
) {
    let Some(queued) = Held::take(queued, id) else {
        return;
    };
    let (shared, permits, running) = (shared.clone(), permits.clone(), running.clone());
    set.spawn(async move {
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        drop(queued);
        let Some(_running) = Held::take(&running, id) else {
            return;
        };
        probe_one(&shared, id, limit).await;
    });
}

/// A relay's place in a set of relays being probed (or queued), given up when this is dropped
/// (the probe ended or was aborted, or its task was dropped before it ran).
struct Held(RelaySet, RelayId);

impl Held {
    /// Puts `id` in `set`; `None` if it is there already.
    fn take(set: &RelaySet, id: RelayId) -> Option<Held> {
        lock(set).insert(id).then(|| Held(set.clone(), id))
    }
}

impl Drop for Held {
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
    let blocks = u16::try_from(shared.network.params.probe_transfer_blocks).unwrap_or(0);
    let transfer = shared
        .state()
        .measurements
        .probe_transfer(&id, now_secs(), blocks);
    let result = probe(&target, transfer, limit).await;
    let measured = match &result {
        Ok(out) => {
            tracing::debug!("relay {id} at {} is reachable", target.address);
            shared.limits.add_relay_ip(target.address.ip());
            out.measured
        }
        Err(e) => {
            tracing::info!("relay {id} at {} failed its probe: {e}", target.address);
            None
        }
    };
    let mut state = shared.state();
    // Marked once it ends: a probe the round's end cut short leaves the relay first in line.
    mark_probed(&mut state, &id, now_secs());
    state.record_probe(
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

    /// Review finding (F1): a relay's place among those being probed goes with the task, so a
    /// round dropped at its budget's end, before a probe it just started ever ran, does not
    /// leave the relay marked as being probed (and so never probed again).
    #[tokio::test]
    async fn a_probe_dropped_before_it_ran_leaves_no_mark() {
        let running: RelaySet = Arc::default();
        let id = IdentityKeypair::generate(&mut rand::thread_rng()).relay_id();
        let mut probes = JoinSet::new();
        let held = Held::take(&running, id).unwrap();
        probes.spawn(async move {
            let _held = held;
            std::future::pending::<()>().await;
        });
        assert!(
            Held::take(&running, id).is_none(),
            "not probed twice at once"
        );
        // A current-thread runtime: the task has not run when it is aborted.
        drop(probes);
        for _ in 0..100 {
            if lock(&running).is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(lock(&running).is_empty(), "the relay is still marked");
        assert!(Held::take(&running, id).is_some());
    }

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

    /// The round's starts are spread, a slot-full at a time, over the budget less one limit;
    /// and the guaranteed part still ends inside the budget when every probe takes its whole
    /// limit (the slot schedule simulated: each probe starts at the later of its offset and
    /// the first slot to free up). Starting single probes at `i / n` of the spread fails this
    /// with the default parameters, whose waves fill the budget exactly.
    #[test]
    fn a_round_spreads_its_starts_and_still_ends_its_guaranteed_part_in_the_budget() {
        for (interval, timeout, conc) in [(3600, 10, 16), (60, 2, 16), (60, 1, 4), (7, 1, 3)] {
            let t = RoundTiming::new(interval, timeout, conc);
            let cap = t.capacity();
            for n in [1, 2, 3, 15, 16, 17, 100, cap - 1, cap, 10_000] {
                let mut slots = vec![Duration::ZERO; t.concurrency];
                let (mut last_start, mut last_offset) = (Duration::ZERO, Duration::ZERO);
                for i in 0..n {
                    let offset = t.start_offset(i, n);
                    assert!(offset >= last_offset, "offsets go forward");
                    last_offset = offset;
                    assert!(offset <= t.spread(), "{interval} {n} {i}");
                    let (slot, free) = slots
                        .iter()
                        .copied()
                        .enumerate()
                        .min_by_key(|&(_, f)| f)
                        .unwrap();
                    let start = offset.max(free);
                    assert!(start >= last_start);
                    last_start = start;
                    slots[slot] = start + t.probe_limit;
                    if i < t.capacity() {
                        assert!(
                            slots[slot] <= t.budget,
                            "{interval} {timeout} {conc}: probe {i} of {n} ends at {:?}",
                            slots[slot]
                        );
                    }
                }
            }
            // The first slot-full starts at once; the last group late in the spread.
            assert_eq!(t.start_offset(t.concurrency - 1, 1000), Duration::ZERO);
            assert!(t.start_offset(999, 1000) >= t.spread() * 9 / 10);
        }
        // Production: a new group of 16 every 2.85 s for 10,000 relays, over 1,780 s.
        let t = RoundTiming::new(3600, 10, 16);
        assert_eq!(t.spread(), Duration::from_secs(1780));
        assert_eq!(t.start_offset(16, 10_000), Duration::from_millis(2848));
        // The test networks' limit takes the whole budget: every probe may start at once.
        let t = RoundTiming::new(3, 2, 16);
        assert_eq!(t.spread(), Duration::ZERO);
        assert_eq!(t.start_offset(99, 100), Duration::ZERO);
    }

    /// The round itself keeps the offsets (time paused, probes that take 10 ms): 40 relays,
    /// slots of 16, a spread of 26 s start at 0, 10.4 and 20.8 s; the first round after a
    /// start, unspread, starts each group as slots free up; and a relay being probed already
    /// is passed over.
    #[tokio::test(start_paused = true)]
    async fn a_round_starts_its_groups_at_their_offsets() {
        let timing = RoundTiming::new(60, 2, 16);
        let plan: Vec<RelayId> = (0..40)
            .map(|_| IdentityKeypair::generate(&mut rand::thread_rng()).relay_id())
            .collect();
        for spread in [true, false] {
            let running: RelaySet = Arc::default();
            let busy = Held::take(&running, plan[39]).unwrap();
            let starts: Arc<Mutex<Vec<(RelayId, Duration)>>> = Arc::default();
            let began = tokio::time::Instant::now();
            let seen = starts.clone();
            let probe = move |id| {
                let seen = seen.clone();
                async move {
                    lock(&seen).push((id, began.elapsed()));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let slots = (Arc::new(Semaphore::new(timing.concurrency)), running);
            run_round(slots, plan.clone(), timing, began, spread, probe).await;
            drop(busy);
            let starts = lock(&starts).clone();
            assert_eq!(starts.len(), 39, "the relay being probed is passed over");
            for (i, (id, at)) in starts.iter().enumerate() {
                assert_eq!(*id, plan[i], "in the plan's order");
                // Unspread, each group as soon as the one before it has ended.
                let want = match (spread, i / 16) {
                    (false, g) => Duration::from_millis(10 * g as u64),
                    (true, 0) => Duration::ZERO,
                    (true, 1) => Duration::from_millis(10_400),
                    (true, _) => Duration::from_millis(20_800),
                };
                assert!(
                    *at >= want && *at < want + Duration::from_millis(5),
                    "spread {spread}: probe {i} at {at:?}, not {want:?}"
                );
            }
        }
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
        assert_eq!(plan[0], up, "the relay that was up goes first");
        assert_eq!(plan[1], old, "then the longest waiting");
        // Every relay is in the order, each once: quick probes reach them all in one round.
        assert_eq!(plan.len(), 2 + flood.len());
        let unique: HashSet<RelayId> = plan.iter().copied().collect();
        assert_eq!(unique.len(), plan.len(), "each relay once");
        // A relay whose probe started goes behind the others of its group next round; a
        // proven relay stays before every never-proven one.
        mark_probed(&mut s, &up, t + 1);
        mark_probed(&mut s, &old, t + 1);
        let next = plan_round(&s, 5);
        assert_eq!(next[0], up);
        assert_eq!(next.last(), Some(&old), "behind the flood, accepted at {t}");
    }
}

#[cfg(test)]
mod rotation_tests {
    //! Issue 10, finding F: with more relays than a round holds, rounds rotate, so that every
    //! relay is probed within ⌈N / capacity⌉ rounds. A fake clock; no sockets.

    use super::*;
    use crate::state::Accepted;
    use crate::store::RelayHistory;
    use shallot_crypto::keys::IdentityKeypair;
    use shallot_directory::network::NetworkParams;
    use shallot_proto::dir::RelayDescriptor;
    use std::collections::HashMap;

    const INTERVAL: u64 = 3600;

    /// `n` relays loaded from disk (as after a restart), `proven` of them with a history.
    fn loaded(n: u32, proven: u32, p: &NetworkParams) -> State {
        let mut s = State::new(p);
        for i in 0..n {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            let id = IdentityKeypair::from_secret_bytes(&seed);
            let b = i.to_be_bytes();
            let desc = RelayDescriptor {
                nickname: "r".into(),
                address: format!("8.{}.{}.{}:9000", b[1], b[2], b[3])
                    .parse()
                    .unwrap(),
                identity: id.public(),
                ntor_key: [1; 32],
                link_key: seed,
                bandwidth: 1,
                family: vec![],
                mailbox: false,
                published: 1,
            };
            let known_since = (i < proven).then_some(1);
            s.insert_loaded(
                Accepted::new(desc, String::new()),
                RelayHistory {
                    known_since,
                    running_since: None,
                },
                1,
            );
        }
        s
    }

    /// The relays a round at `now` reaches when every probe takes its whole limit: the first
    /// `capacity` of its order, each marked as it starts.
    fn plan(s: &mut State, capacity: usize, now: u64) -> Vec<RelayId> {
        let mut order = plan_round(s, capacity);
        order.truncate(capacity);
        for id in &order {
            mark_probed(s, id, now);
        }
        order
    }

    /// Runs `rounds` rounds, a relay's probes succeeding iff it was proven before (or every
    /// probe succeeding, with `all_ok`), and returns the rounds in which each relay was probed.
    fn run_rounds(
        s: &mut State,
        capacity: usize,
        rounds: u64,
        all_ok: bool,
    ) -> HashMap<RelayId, Vec<u64>> {
        let mut seen: HashMap<RelayId, Vec<u64>> = HashMap::new();
        for r in 0..rounds {
            let now = 1_000_000 + r * INTERVAL;
            let planned = plan(s, capacity, now);
            assert!(planned.len() <= capacity);
            for id in planned {
                seen.entry(id).or_default().push(r);
                let ok = all_ok || s.relays[&id].history.known_since.is_some();
                let d = s.descriptors[&id].desc.clone();
                s.record_probe(
                    &id,
                    Probe {
                        at: now + 1,
                        ok,
                        address: d.address,
                        link_key: d.link_key,
                        ntor_key: d.ntor_key,
                    },
                    None,
                );
            }
        }
        seen
    }

    /// Every relay of `ids` is probed in every window of `window` consecutive rounds.
    fn assert_covered<'a>(
        seen: &HashMap<RelayId, Vec<u64>>,
        ids: impl Iterator<Item = &'a RelayId>,
        window: u64,
        rounds: u64,
    ) {
        for id in ids {
            let at = seen.get(id).map_or(&[][..], |v| &v[..]);
            assert!(!at.is_empty(), "{id} was never probed");
            let mut last: Option<u64> = None;
            for &r in at {
                let gap = last.map_or(r + 1, |l| r - l);
                assert!(
                    gap <= window,
                    "{id}: a gap of {gap} rounds (window {window})"
                );
                last = Some(r);
            }
            let tail = rounds - last.unwrap_or(0);
            assert!(tail <= window, "{id}: not probed in the last {tail} rounds");
        }
    }

    #[test]
    fn rounds_rotate_over_more_relays_than_they_hold() {
        let p = NetworkParams {
            test_network: true,
            ..NetworkParams::default()
        };
        let capacity = RoundTiming::new(INTERVAL, 10, 16).capacity();
        assert_eq!(capacity, 1440);
        // A large network of proven relays (as after a restart), every probe succeeding; and
        // as many relays never proven, every probe failing.
        for (n, proven) in [(5_000u32, 5_000), (3_000, 0)] {
            let mut s = loaded(n, proven, &p);
            let window = u64::from(n).div_ceil(capacity as u64);
            let rounds = 4 * window;
            let seen = run_rounds(&mut s, capacity, rounds, proven > 0);
            assert_eq!(seen.len(), n as usize);
            assert_covered(&seen, s.descriptors.keys(), window, rounds);
        }
    }

    /// A flood of never-proven descriptors beside the proven relays: the proven ones are
    /// probed every round (while they fit in three quarters of it), and the flood still
    /// rotates through the rest.
    #[test]
    fn a_flood_rotates_behind_the_proven_relays() {
        let p = NetworkParams {
            test_network: true,
            ..NetworkParams::default()
        };
        let capacity = 1440;
        let mut s = loaded(6_000, 1_000, &p);
        let rounds = 30;
        let seen = run_rounds(&mut s, capacity, rounds, false);
        let (known, flood): (Vec<RelayId>, Vec<RelayId>) = s
            .descriptors
            .keys()
            .partition(|id| s.relays[id].history.known_since.is_some());
        assert_eq!((known.len(), flood.len()), (1_000, 5_000));
        assert_covered(&seen, known.iter(), 1, rounds);
        assert_covered(&seen, flood.iter(), 5_000u64.div_ceil(440), rounds);
    }
}
