//! The circuit manager with a fake builder and tokio's clock paused: retries, timeouts,
//! relay avoidance and circuits built ahead, without a socket, in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};

use shallot_proto::dir::Flags;
use shallot_rt::FakeClock;

use super::*;
use crate::netdir::DirError;
use crate::testing;

/// What the fake builder does when asked to add a relay.
#[derive(Clone)]
enum Behaviour {
    /// Fails with this error.
    Fail(NetError),
    /// Never answers.
    Hang,
    /// Never answers this time; answers from then on.
    HangOnce,
    /// Answers after this long, every time.
    Slow(Duration),
}

struct FakeCircuit {
    hops: Mutex<Vec<RelayId>>,
    closed: AtomicBool,
}

impl ManagedCircuit for FakeCircuit {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct FakeBuilder {
    behaviour: Mutex<HashMap<RelayId, Behaviour>>,
    /// Every relay the manager asked to add, in order, and whether by create.
    log: Mutex<Vec<(RelayId, bool)>>,
}

impl FakeBuilder {
    async fn add(&self, relay: &RelayEntry, create: bool) -> Result<(), NetError> {
        lock(&self.log).push((relay.id, create));
        let behaviour = {
            let mut table = lock(&self.behaviour);
            match table.get(&relay.id) {
                Some(Behaviour::HangOnce) => table.remove(&relay.id),
                other => other.cloned(),
            }
        };
        match behaviour {
            None => Ok(()),
            Some(Behaviour::Fail(e)) => Err(e),
            Some(Behaviour::Hang | Behaviour::HangOnce) => std::future::pending().await,
            Some(Behaviour::Slow(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }
}

impl CircuitBuilder for FakeBuilder {
    type Circuit = FakeCircuit;

    async fn create(&self, first: &RelayEntry) -> Result<FakeCircuit, NetError> {
        self.add(first, true).await?;
        Ok(FakeCircuit {
            hops: Mutex::new(vec![first.id]),
            closed: AtomicBool::new(false),
        })
    }

    async fn extend(&self, circ: &FakeCircuit, next: &RelayEntry) -> Result<(), NetError> {
        self.add(next, false).await?;
        lock(&circ.hops).push(next.id);
        Ok(())
    }
}

/// A manager over six relays of which only the first is a guard; the builder fails or
/// stalls on the relays named.
struct Setup {
    mgr: Arc<CircuitManager<FakeBuilder>>,
    relays: Vec<RelayEntry>,
    /// The consensus source's wall clock (unix seconds; the consensus is valid 1000–5000).
    clock: Arc<FakeClock>,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config() -> CircuitConfig {
    CircuitConfig {
        hops: 3,
        per_hop_timeout: Duration::from_secs(5),
        attempts: 4,
        lifetime: Duration::from_secs(600),
        preemptive: 2,
        failure_memory: Duration::from_secs(60),
        prepared: 3,
        prepared_lifetime: Duration::from_secs(120),
    }
}

fn setup(guards: usize, config: CircuitConfig, behaviour: &[(usize, Behaviour)]) -> Setup {
    let mut relays = testing::relays(6);
    for r in &mut relays[guards..] {
        r.flags.set(Flags::GUARD, false);
    }
    let consensus = testing::consensus(relays.clone(), 1000, 2000, 5000);
    let clock = Arc::new(FakeClock::new(1500));
    let dir = Arc::new(NetDir::preloaded(consensus, clock.clone()));
    let data = TempDir(shallot_rt::scratch::path("circmgr"));
    std::fs::create_dir_all(&data.0).unwrap();
    let builder = FakeBuilder::default();
    for (i, b) in behaviour {
        lock(&builder.behaviour).insert(relays[*i].id, b.clone());
    }
    let mgr = CircuitManager::with_builder(dir, data.0.clone(), config, builder);
    Setup {
        mgr,
        relays,
        clock,
        _dir: data,
    }
}

fn destroyed() -> Behaviour {
    Behaviour::Fail(NetError::Destroyed(
        shallot_proto::cell::DestroyReason::ConnectFailed,
    ))
}

impl Setup {
    fn log(&self) -> Vec<(RelayId, bool)> {
        lock(&self.mgr.builder.log).clone()
    }

    fn tries_of(&self, i: usize) -> usize {
        self.log()
            .iter()
            .filter(|(id, _)| *id == self.relays[i].id)
            .count()
    }

    fn ids(&self, range: std::ops::Range<usize>) -> Vec<RelayId> {
        self.relays[range].iter().map(|r| r.id).collect()
    }

    /// A relay on no prefix in the pool, so a request for a circuit to it takes a prefix
    /// rather than building afresh (a fixed relay would be both prefixes' middle hop about
    /// one time in twenty-five).
    fn exit_beyond_every_prefix(&self) -> RelayId {
        let pool = lock(&self.mgr.pool);
        self.relays
            .iter()
            .map(|r| r.id)
            .find(|id| pool.iter().all(|c| c.path.iter().all(|r| r.id != *id)))
            .expect("six relays, and prefixes of two")
    }
}

#[tokio::test(start_paused = true)]
async fn a_circuit_starts_at_a_guard_and_has_distinct_relays() {
    let s = setup(1, config(), &[]);
    let built = s.mgr.build(None).await.unwrap();
    assert_eq!(built.path.len(), 3);
    assert_eq!(s.mgr.guards(), vec![s.relays[0].id]);
    assert_eq!(built.path[0].id, s.relays[0].id);
    let hops = lock(&built.circuit.hops).clone();
    assert_eq!(hops, built.path.iter().map(|r| r.id).collect::<Vec<_>>());
    let mut distinct = hops.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    assert_eq!(s.log().iter().filter(|(_, create)| *create).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_relay_that_fails_is_left_out_of_the_next_paths() {
    // Relays 1, 2 and 3 always fail; 4 and 5 work: within four attempts a path of 0, 4 and 5
    // is found, and no failing relay is tried twice.
    let bad = [(1, destroyed()), (2, destroyed()), (3, destroyed())];
    let s = setup(1, config(), &bad);
    let built = s.mgr.build(None).await.unwrap();
    let mut ids: Vec<_> = built.path.iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![s.relays[0].id, s.relays[4].id, s.relays[5].id];
    want.sort();
    assert_eq!(ids, want);
    let recent = s.mgr.recent_failures();
    for i in 1..=3 {
        assert!(
            s.tries_of(i) <= 1,
            "relay {i} tried {} times",
            s.tries_of(i)
        );
        assert_eq!(recent.contains(&s.relays[i].id), s.tries_of(i) == 1);
    }
}

#[tokio::test(start_paused = true)]
async fn failures_are_forgotten_after_the_failure_memory() {
    // Every relay past the guard fails, so the build is sure to record failures (with some
    // good relays, a lucky first path would record none and the test would assert nothing).
    let all_bad: Vec<_> = (1..6).map(|i| (i, destroyed())).collect();
    let s = setup(1, config(), &all_bad);
    assert!(s.mgr.build(None).await.is_err());
    assert!(!s.mgr.recent_failures().is_empty());
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(!s.mgr.recent_failures().is_empty());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(s.mgr.recent_failures().is_empty());
}

#[tokio::test(start_paused = true)]
async fn after_every_attempt_fails_the_last_error_is_reported() {
    let all_bad: Vec<_> = (1..6).map(|i| (i, destroyed())).collect();
    let s = setup(1, config(), &all_bad);
    let err = match s.mgr.build(None).await {
        Err(e) => e,
        Ok(_) => panic!("built through failing relays"),
    };
    let NetError::Build { attempts, last, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*attempts, 4);
    assert!(matches!(**last, NetError::Destroyed(_)), "{last}");
    assert!(!err.is_retryable());
    assert_eq!(s.log().iter().filter(|(_, create)| *create).count(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_hop_that_never_answers_times_out_and_is_avoided() {
    let s = setup(1, config(), &[(1, Behaviour::Hang), (2, Behaviour::Hang)]);
    let started = tokio::time::Instant::now();
    let built = s.mgr.build(None).await.unwrap();
    let stalls = s.tries_of(1) + s.tries_of(2);
    // Each stall costs one hop's time limit on the paused clock (to the timer's millisecond).
    let limit = config().per_hop_timeout * stalls as u32;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= limit && elapsed < limit + Duration::from_millis(10),
        "{elapsed:?}"
    );
    assert!(built
        .path
        .iter()
        .all(|r| r.id != s.relays[1].id && r.id != s.relays[2].id));
    for i in [1, 2] {
        assert!(s.tries_of(i) <= 1);
    }
}

#[tokio::test(start_paused = true)]
async fn an_extension_that_never_answers_times_out_at_that_hop() {
    let s = setup(1, config(), &[(1, Behaviour::Hang)]);
    let err = tokio::time::timeout(
        Duration::from_secs(3600),
        s.mgr
            .build_path(&[s.relays[0].clone(), s.relays[1].clone()]),
    )
    .await
    .unwrap();
    let Err((hop, e)) = err else {
        panic!("built through a stalled relay")
    };
    assert_eq!(hop, 1);
    assert!(matches!(e, NetError::Timeout(BuildStep::Extending)), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_guard_that_fails_is_blamed_and_the_next_guard_starts_the_path() {
    let s = setup(3, config(), &[]);
    s.mgr.build(None).await.unwrap();
    let guards = s.mgr.guards();
    assert_eq!(guards.len(), 3);
    let first = s.relays.iter().position(|r| r.id == guards[0]).unwrap();
    lock(&s.mgr.builder.behaviour).insert(guards[0], destroyed());
    let built = s.mgr.build(None).await.unwrap();
    assert_eq!(built.path[0].id, guards[1]);
    assert!(s.mgr.recent_failures().contains(&guards[0]));
    let failed_creates = s
        .log()
        .iter()
        .filter(|(id, create)| *create && *id == s.relays[first].id)
        .count();
    assert_eq!(failed_creates, 2, "once in the first build, once failing");
}

#[tokio::test(start_paused = true)]
async fn the_requested_last_hop_is_not_blamed_for_failing() {
    let s = setup(1, config(), &[(5, destroyed())]);
    let exit = s.relays[5].id;
    assert!(s.mgr.build(Some(exit)).await.is_err());
    assert_eq!(s.tries_of(5), 4, "tried on every attempt");
    assert!(!s.mgr.recent_failures().contains(&exit));
}

#[tokio::test(start_paused = true)]
async fn an_error_no_retry_can_fix_stops_the_attempts() {
    let s = setup(1, config(), &[(0, Behaviour::Fail(NetError::EmptyPath))]);
    assert!(s.mgr.build(None).await.is_err());
    assert_eq!(s.log().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_valid_consensus_nothing_is_built() {
    let s = setup(1, config(), &[]);
    let dir = NetDir::preloaded(
        testing::consensus(s.relays.clone(), 0, 1, 2),
        Arc::new(FakeClock::new(100)),
    );
    let data = shallot_rt::scratch::path("circmgr");
    let mgr = CircuitManager::with_builder(Arc::new(dir), data, config(), FakeBuilder::default());
    let err = match mgr.build(None).await {
        Err(e) => e,
        Ok(_) => panic!("built without a consensus"),
    };
    assert!(
        matches!(err, NetError::Dir(DirError::Expired { .. })),
        "{err}"
    );
    assert!(lock(&mgr.builder.log).is_empty());
}

#[tokio::test(start_paused = true)]
async fn circuits_built_ahead_lack_their_last_hop_until_a_purpose_names_it() {
    let s = setup(1, config(), &[]);
    assert!(!s.mgr.top_up().await.unwrap());
    assert!(!s.mgr.top_up().await.unwrap());
    assert!(s.mgr.top_up().await.unwrap(), "full at two");
    assert_eq!(s.mgr.ready(), 2);
    let creates = s.log().iter().filter(|(_, c)| *c).count();
    assert_eq!(creates, 2);
    // The exit must be unrelated to both hops of some prefix: any relay not on one will do.
    let exit = s
        .relays
        .iter()
        .map(|r| r.id)
        .find(|id| {
            lock(&s.mgr.pool)
                .iter()
                .any(|c| c.path.iter().all(|r| r.id != *id))
        })
        .unwrap();
    let got = s.mgr.get(exit).await.unwrap();
    assert_eq!(got.path.len(), 3);
    assert_eq!(got.path[2].id, exit);
    assert_eq!(
        s.log().iter().filter(|(_, c)| *c).count(),
        2,
        "no new circuit"
    );
    assert_eq!(s.mgr.ready(), 1);
}

#[tokio::test(start_paused = true)]
async fn circuits_built_ahead_age_out_after_their_lifetime() {
    let s = setup(1, config(), &[]);
    s.mgr.top_up().await.unwrap();
    assert_eq!(s.mgr.ready(), 1);
    tokio::time::advance(Duration::from_secs(599)).await;
    assert_eq!(s.mgr.ready(), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(s.mgr.ready(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_closed_circuit_built_ahead_is_not_handed_out() {
    let s = setup(1, config(), &[]);
    s.mgr.top_up().await.unwrap();
    lock(&s.mgr.pool)[0].circuit.close();
    assert_eq!(s.mgr.ready(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_prefix_with_a_relay_that_failed_since_is_passed_over() {
    let s = setup(1, config(), &[]);
    s.mgr.top_up().await.unwrap();
    let prefix: Vec<RelayId> = lock(&s.mgr.pool)[0].path.iter().map(|r| r.id).collect();
    lock(&s.mgr.failures).note(prefix[1], now());
    assert_eq!(s.mgr.ready(), 0, "dropped, not kept and passed over");
    let exit = s
        .ids(0..6)
        .into_iter()
        .find(|id| !prefix.contains(id))
        .unwrap();
    let got = s.mgr.get(exit).await.unwrap();
    assert!(!got.path.iter().any(|r| r.id == prefix[1]));
    assert_eq!(
        s.log().iter().filter(|(_, c)| *c).count(),
        2,
        "a fresh circuit"
    );
}

/// The circuits built ahead, each with its relays.
fn pool_paths(s: &Setup) -> Vec<(Arc<FakeCircuit>, Vec<RelayId>)> {
    lock(&s.mgr.pool)
        .iter()
        .map(|c| (c.circuit.clone(), c.path.iter().map(|r| r.id).collect()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_prefix_through_a_relay_the_consensus_drops_is_closed_and_replaced() {
    let s = setup(1, config(), &[]);
    while !s.mgr.top_up().await.unwrap() {}
    let before = pool_paths(&s);
    assert_eq!(before.len(), 2);
    // Whichever middle relay the first prefix got leaves the consensus.
    let gone = before[0].1[1];
    let mut relays = s.relays.clone();
    relays.retain(|r| r.id != gone);
    s.mgr
        .netdir()
        .install(testing::consensus(relays, 1000, 2000, 5000));
    let through_gone = before.iter().filter(|(_, p)| p.contains(&gone)).count();
    assert!(through_gone >= 1);
    assert_eq!(s.mgr.ready(), 2 - through_gone);
    for (circ, path) in &before {
        assert_eq!(circ.is_closed(), path.contains(&gone), "{path:?}");
    }
    // Topped up again, around the relay that left.
    while !s.mgr.top_up().await.unwrap() {}
    let after = pool_paths(&s);
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|(_, p)| !p.contains(&gone)));
}

#[tokio::test(start_paused = true)]
async fn circuits_built_ahead_go_when_the_consensus_expires() {
    let s = setup(1, config(), &[]);
    while !s.mgr.top_up().await.unwrap() {}
    let before = pool_paths(&s);
    // The consensus is valid until 5000.
    s.clock.set(5000);
    assert_eq!(s.mgr.ready(), 2);
    s.clock.set(5001);
    assert_eq!(s.mgr.ready(), 0);
    assert!(before.iter().all(|(c, _)| c.is_closed()));
    let exit = s.relays[5].id;
    assert!(matches!(
        s.mgr.get(exit).await,
        Err(NetError::Dir(DirError::Expired { .. }))
    ));
    assert!(s.mgr.top_up().await.is_err());
    assert_eq!(s.mgr.ready(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_pool_never_holds_more_than_its_bound() {
    // Every build waits a second at the guard, so three top-ups all see an empty pool and
    // all build; the one finished last finds the pool full and closes its prefix.
    let s = setup(1, config(), &[(0, Behaviour::Slow(Duration::from_secs(1)))]);
    let (a, b, c) = tokio::join!(s.mgr.top_up(), s.mgr.top_up(), s.mgr.top_up());
    let filled: Vec<bool> = [a, b, c].into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(s.log().iter().filter(|(_, c)| *c).count(), 3, "three built");
    assert_eq!(filled.iter().filter(|f| **f).count(), 1, "{filled:?}");
    assert_eq!(s.mgr.ready(), 2);
    assert!(pool_paths(&s).iter().all(|(c, _)| !c.is_closed()));
    assert!(s.mgr.top_up().await.unwrap(), "full");
    assert_eq!(
        s.log().iter().filter(|(_, c)| *c).count(),
        3,
        "nothing more built"
    );
}

#[tokio::test(start_paused = true)]
async fn with_prefixes_ready_a_circuit_costs_one_extend() {
    // The wait a send sees: whatever paths were drawn, a last hop unrelated to a prefix is
    // reached by extending it, with no CREATE and no other hop added.
    let s = setup(1, config(), &[]);
    while !s.mgr.top_up().await.unwrap() {}
    let before = pool_paths(&s);
    let exit = s
        .ids(0..6)
        .into_iter()
        .find(|id| !before[0].1.contains(id))
        .unwrap();
    let logged = s.log().len();
    let got = s.mgr.get(exit).await.unwrap();
    assert_eq!(s.log()[logged..], [(exit, false)]);
    assert_eq!(got.path.last().map(|r| r.id), Some(exit));
    assert_eq!(s.mgr.ready(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_circuit_asked_for_wakes_the_refill_at_once() {
    // The maintenance task looks every 0.5 s; a request must not leave the pool short until
    // then, or the next message's deposits find no prefix and build from scratch.
    let s = setup(1, config(), &[]);
    let _maintenance = s.mgr.spawn_maintenance();
    for _ in 0..10_000 {
        if s.mgr.ready() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(s.mgr.ready(), 2, "filled at start");
    let exit = s.exit_beyond_every_prefix();
    let asked = tokio::time::Instant::now();
    let _got = s.mgr.get(exit).await.unwrap();
    // The maintenance task has not run since: the request took a prefix.
    assert_eq!(s.mgr.ready(), 1, "a prefix taken");
    // Only yield: the paused clock moves on only when every task is idle, so the task's
    // 0.5 s look cannot be what refills the pool here.
    for _ in 0..10_000 {
        if s.mgr.ready() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(s.mgr.ready(), 2, "refilled");
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn refills_wait_while_held_and_start_once_the_hold_ends() {
    let s = setup(1, config(), &[]);
    let _maintenance = s.mgr.spawn_maintenance();
    let settle = || async {
        // Only yield: the paused clock moves on only when every task is idle, so the
        // task's look after LOOK cannot refill the pool here.
        for _ in 0..10_000 {
            if s.mgr.ready() == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    assert_eq!(s.mgr.ready(), 2, "filled at start");
    let held = tokio::time::Instant::now();
    let hold = s.mgr.hold_refills();
    let _got = s.mgr.get(s.exit_beyond_every_prefix()).await.unwrap();
    settle().await;
    assert_eq!(s.mgr.ready(), 1, "not refilled while held");
    drop(hold);
    settle().await;
    assert_eq!(s.mgr.ready(), 2, "refilled once the hold ended");
    assert!(held.elapsed() < LOOK, "{:?}", held.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_long_hold_slows_refills_to_one_a_look_rather_than_stopping_them() {
    let s = setup(1, config(), &[]);
    let _maintenance = s.mgr.spawn_maintenance();
    let settle = || async {
        for _ in 0..10_000 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    assert_eq!(s.mgr.ready(), 2, "filled at start");
    let _hold = s.mgr.hold_refills();
    let _got = s.mgr.get(s.exit_beyond_every_prefix()).await.unwrap();
    settle().await;
    assert_eq!(s.mgr.ready(), 1);
    // The task's look ends; held, it waits one more look before it builds.
    tokio::time::advance(LOOK + Duration::from_millis(10)).await;
    settle().await;
    assert_eq!(s.mgr.ready(), 1, "held through the first look");
    tokio::time::advance(LOOK).await;
    settle().await;
    assert_eq!(
        s.mgr.ready(),
        2,
        "refilled after the second, though still held"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_extension_of_a_prefix_falls_back_to_a_fresh_circuit() {
    let s = setup(1, config(), &[]);
    s.mgr.top_up().await.unwrap();
    let prefix: Vec<RelayId> = lock(&s.mgr.pool)[0].path.iter().map(|r| r.id).collect();
    let exit = s
        .ids(0..6)
        .into_iter()
        .find(|id| !prefix.contains(id))
        .unwrap();
    // The exit stalls once (the prefix's extension), then answers.
    lock(&s.mgr.builder.behaviour).insert(exit, Behaviour::HangOnce);
    let got = s.mgr.get(exit).await.unwrap();
    assert_eq!(got.path.len(), 3);
    assert_eq!(got.path[2].id, exit);
    assert_eq!(s.log().iter().filter(|(_, c)| *c).count(), 2);
    assert_eq!(s.mgr.ready(), 0);
}

/// How many relays the fake builder was asked to add so far.
fn adds(s: &Setup) -> usize {
    s.log().len()
}

#[tokio::test(start_paused = true)]
async fn a_circuit_finished_ahead_is_handed_out_once_with_nothing_left_to_build() {
    let s = setup(1, config(), &[]);
    let exit = s.relays[5].id;
    s.mgr.prepare(exit).await.unwrap();
    assert_eq!(s.mgr.prepared(), vec![exit]);
    // A second prepare for the same last hop finds it ready and builds nothing.
    let before = adds(&s);
    s.mgr.prepare(exit).await.unwrap();
    assert_eq!(adds(&s), before);
    let got = s.mgr.get_readied(exit).await.unwrap();
    assert_eq!(adds(&s), before, "handed out as it was, no hop added");
    assert_eq!(got.path.last().map(|r| r.id), Some(exit));
    assert!(s.mgr.prepared().is_empty(), "never handed out twice");
    // The next request for that last hop gets a circuit of its own.
    let again = s.mgr.get_readied(exit).await.unwrap();
    assert!(!Arc::ptr_eq(&got.circuit, &again.circuit));
    assert!(adds(&s) > before);
}

#[tokio::test(start_paused = true)]
async fn a_circuit_finished_ahead_and_not_asked_for_is_closed_after_its_lifetime() {
    let s = setup(1, config(), &[]);
    let exit = s.relays[5].id;
    s.mgr.prepare(exit).await.unwrap();
    let circ = lock(&s.mgr.prepared)[0].0.circuit.clone();
    tokio::time::advance(Duration::from_secs(119)).await;
    assert_eq!(s.mgr.prepared(), vec![exit]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(s.mgr.prepared().is_empty());
    assert!(circ.is_closed());
    // And a request then builds one as before.
    let got = s.mgr.get_readied(exit).await.unwrap();
    assert!(!Arc::ptr_eq(&got.circuit, &circ));
}

#[tokio::test(start_paused = true)]
async fn a_circuit_finished_ahead_goes_to_no_other_purpose() {
    // An owner's requests, a bundle put: `get` builds afresh and leaves it for its purpose.
    let s = setup(1, config(), &[]);
    let exit = s.relays[5].id;
    s.mgr.prepare(exit).await.unwrap();
    let readied = lock(&s.mgr.prepared)[0].0.circuit.clone();
    let other = s.mgr.get(exit).await.unwrap();
    assert!(!Arc::ptr_eq(&other.circuit, &readied));
    assert_eq!(s.mgr.prepared(), vec![exit]);
    let got = s.mgr.get_readied(exit).await.unwrap();
    assert!(Arc::ptr_eq(&got.circuit, &readied));
}

#[tokio::test(start_paused = true)]
async fn a_send_that_beats_the_prepare_waits_for_it_rather_than_building_twice() {
    let s = setup(1, config(), &[(5, Behaviour::Slow(Duration::from_secs(1)))]);
    let exit = s.relays[5].id;
    let mgr = s.mgr.clone();
    let preparing = tokio::spawn(async move { mgr.prepare(exit).await });
    while !lock(&s.mgr.preparing).contains(&exit) {
        tokio::task::yield_now().await;
    }
    let got = s.mgr.get_readied(exit).await.unwrap();
    preparing.await.unwrap().unwrap();
    assert_eq!(s.tries_of(5), 1, "one circuit to the last hop, not two");
    assert_eq!(got.path.last().map(|r| r.id), Some(exit));
    assert!(
        s.mgr.prepared().is_empty(),
        "nothing left over at the relay"
    );
}

#[tokio::test(start_paused = true)]
async fn a_prepare_to_a_relay_that_never_answers_ends_and_frees_its_mark() {
    let s = setup(1, config(), &[(5, Behaviour::Hang)]);
    let exit = s.relays[5].id;
    let mgr = s.mgr.clone();
    let preparing = tokio::spawn(async move { mgr.prepare(exit).await });
    while !lock(&s.mgr.preparing).contains(&exit) {
        tokio::task::yield_now().await;
    }
    // A send meanwhile waits at most one hop's time limit for it, then builds its own.
    let asked = tokio::time::Instant::now();
    assert!(s.mgr.get_readied(exit).await.is_err());
    assert!(asked.elapsed() >= config().per_hop_timeout);
    assert!(preparing.await.unwrap().is_err());
    assert!(lock(&s.mgr.preparing).is_empty());
    assert!(s.mgr.prepared().is_empty());
}

#[tokio::test(start_paused = true)]
async fn circuits_finished_ahead_are_bounded_and_the_oldest_make_room() {
    let s = setup(1, config(), &[]);
    let exits = s.ids(1..6);
    let mut circuits = Vec::new();
    for exit in &exits {
        s.mgr.prepare(*exit).await.unwrap();
        let last = lock(&s.mgr.prepared).last().map(|(c, _)| c.circuit.clone());
        circuits.push(last.unwrap());
    }
    assert_eq!(s.mgr.prepared(), exits[2..].to_vec(), "the bound is 3");
    assert!(circuits[..2].iter().all(|c| c.is_closed()));
    assert!(circuits[2..].iter().all(|c| !c.is_closed()));
}

#[tokio::test(start_paused = true)]
async fn a_circuit_finished_ahead_through_a_relay_that_leaves_is_not_handed_out() {
    let s = setup(1, config(), &[]);
    let exit = s.relays[5].id;
    s.mgr.prepare(exit).await.unwrap();
    let circ = lock(&s.mgr.prepared)[0].0.circuit.clone();
    let mut relays = s.relays.clone();
    relays.retain(|r| r.id != exit);
    relays.push({
        let mut gone = s.relays[5].clone();
        gone.flags.set(Flags::RUNNING, false);
        gone
    });
    s.mgr
        .netdir()
        .install(testing::consensus(relays, 1000, 2000, 5000));
    assert!(s.mgr.prepared().is_empty());
    assert!(circ.is_closed());
}

#[tokio::test(start_paused = true)]
async fn two_prepares_for_one_last_hop_at_once_build_one_circuit() {
    let s = setup(1, config(), &[(5, Behaviour::Slow(Duration::from_secs(1)))]);
    let exit = s.relays[5].id;
    let (a, b, c) = tokio::join!(
        s.mgr.prepare(exit),
        s.mgr.prepare(exit),
        s.mgr.prepare(exit)
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(s.tries_of(5), 1, "the second did not unmark the first");
    assert_eq!(s.mgr.prepared(), vec![exit]);
    // A failed prepare leaves the last hop unmarked: the next one tries again.
    let other = s.relays[4].id;
    lock(&s.mgr.builder.behaviour).insert(other, destroyed());
    assert!(s.mgr.prepare(other).await.is_err());
    lock(&s.mgr.builder.behaviour).remove(&other);
    s.mgr.prepare(other).await.unwrap();
    assert_eq!(s.mgr.prepared(), vec![exit, other]);
}

/// Issue 10, hole E: a directory that lists none of the client's guards time after time (each
/// time leaving out every guard the client sampled so far) cannot make it start circuits at
/// relays outside its sampled set, nor sample more than the growth bound; once that is spent,
/// circuits fail with a clear error; the original guards start circuits again once they are
/// listed again.
#[tokio::test(start_paused = true)]
async fn hostile_consensuses_without_the_guards_never_give_a_random_first_hop() {
    let relays = testing::relays(40);
    let honest = testing::consensus(relays.clone(), 1000, 2000, 5000);
    let dir = Arc::new(NetDir::preloaded(
        honest.clone(),
        Arc::new(FakeClock::new(1500)),
    ));
    let data = TempDir(shallot_rt::scratch::path("circmgr"));
    std::fs::create_dir_all(&data.0).unwrap();
    let mgr = CircuitManager::with_builder(
        dir.clone(),
        data.0.clone(),
        config(),
        FakeBuilder::default(),
    );
    let built = mgr.build(None).await.unwrap();
    let original = mgr.guards();
    assert_eq!(original.len(), crate::guards::GUARDS);
    assert_eq!(built.path[0].id, original[0]);

    let mut ever_sampled: HashSet<RelayId> = original.iter().copied().collect();
    let mut refused = 0;
    for _ in 0..6 {
        let gone = mgr.sampled_guards();
        let mut hostile = honest.clone();
        hostile.relays.retain(|r| !gone.contains(&r.id));
        dir.install(hostile);
        for _ in 0..5 {
            match mgr.build(None).await {
                Ok(b) => {
                    let first = b.path[0].id;
                    assert!(
                        mgr.sampled_guards().contains(&first),
                        "a circuit started at {first}, outside the sampled guards"
                    );
                }
                Err(e) => {
                    assert!(
                        e.to_string()
                            .contains("no usable guard; waiting for a consensus that lists one"),
                        "{e}"
                    );
                    refused += 1;
                }
            }
            ever_sampled.extend(mgr.sampled_guards());
        }
    }
    assert!(refused > 0, "the hostile consensuses leave no usable guard");
    assert_eq!(
        ever_sampled.len(),
        crate::guards::MAX_NEW_GUARDS,
        "sampled {} guards",
        ever_sampled.len()
    );
    let first_hops: HashSet<RelayId> = lock(&mgr.builder.log)
        .iter()
        .filter(|(_, create)| *create)
        .map(|(id, _)| *id)
        .collect();
    assert!(first_hops.is_subset(&ever_sampled), "{first_hops:?}");

    // The honest consensus again: the original guards, the first of them first.
    dir.install(honest);
    let built = mgr.build(None).await.unwrap();
    assert_eq!(built.path[0].id, original[0]);
    assert_eq!(mgr.guards(), original);
}
