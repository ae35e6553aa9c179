//! The wait for CREATED (`docs/spec.md` §6.4, step 5): a circuit this relay has extended waits
//! for the next hop's CREATED until the extend timeout, and is then woken (`Input::Timer`) to
//! give up.
//!
//! One task per relay keeps every such deadline, in the order they fall, and sleeps until the
//! earliest. A task spawned beside each CREATE cost more than its own few microseconds: on the
//! runtime, the new task takes the place of the link writer that CREATE has just woken (and
//! wakes a second worker to take that writer), so CREATE leaves later. `shallot bench --trace
//! --only circuits` (300 builds, three runs each way) put a build's relay-to-relay CREATE at
//! 0.067-0.073 ms with that task and 0.035-0.040 ms without it; CREATED's way back went from
//! 0.04-0.086 ms to 0.026-0.029 ms too, for reasons the trace does not show.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use shallot_rt::lock;
use tokio::sync::{watch, Notify};

use crate::circuit::Input;
use crate::shell::{Circuit, Env};

/// Entries kept before the first pruning of circuits gone (see [`CreatedWait::watch`]).
const PRUNE_FLOOR: usize = 64;

/// Circuits woken one after another before the task lets others run.
const WAKE_BATCH: usize = 64;

/// The circuits waiting for CREATED, by deadline.
#[derive(Debug, Default)]
pub(crate) struct CreatedWait {
    due: Mutex<Due>,
    /// Wakes the task when a deadline earlier than all others arrives.
    earlier: Notify,
}

/// The deadlines and what pruning them needs.
#[derive(Debug, Default)]
struct Due {
    /// Deadlines and circuits, earliest first. A circuit answered stays until its deadline; a
    /// circuit gone (its state freed, and counted as freed) leaves only its allocation behind
    /// its `Weak`, until the deadline or the next pruning.
    entries: VecDeque<(Instant, Weak<Circuit>)>,
    /// The length past which the next insertion prunes the circuits gone.
    prune_at: usize,
}

impl CreatedWait {
    /// Wakes `circ` at its CREATED deadline, if it is waiting for CREATED.
    ///
    /// Entries of circuits gone are pruned whenever the list has doubled since the last
    /// pruning (and is past [`PRUNE_FLOOR`]), so that a peer extending and destroying circuits
    /// in a loop leaves at most about as many dead allocations as there are live entries:
    /// the cost is linear in the list, once per doubling.
    pub(crate) fn watch(&self, circ: &Arc<Circuit>) {
        let Some(deadline) = circ.created_deadline() else {
            return;
        };
        let mut due = lock(&self.due);
        if due.entries.len() >= due.prune_at.max(PRUNE_FLOOR) {
            due.entries.retain(|(_, c)| c.strong_count() > 0);
            due.prune_at = 2 * due.entries.len();
        }
        // Every extend has the same timeout, so this is nearly always the back.
        let at = due.entries.partition_point(|(d, _)| *d <= deadline);
        due.entries.insert(at, (deadline, Arc::downgrade(circ)));
        drop(due);
        // Only a new earliest deadline shortens the task's sleep: a busy relay wakes it only
        // when deadlines fall, not once per extend.
        if at == 0 {
            self.earlier.notify_one();
        }
    }

    /// The earliest deadline kept.
    fn next(&self) -> Option<Instant> {
        lock(&self.due).entries.front().map(|(d, _)| *d)
    }

    /// Takes the circuits (still alive) whose deadline is at or before `now`.
    fn take_due(&self, now: Instant) -> Vec<Arc<Circuit>> {
        let mut due = lock(&self.due);
        let n = due.entries.partition_point(|(d, _)| *d <= now);
        due.entries
            .drain(..n)
            .filter_map(|(_, c)| c.upgrade())
            .collect()
    }

    /// Circuits kept (alive or not), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.due).entries.len()
    }
}

/// Wakes each circuit whose CREATED deadline has passed, until the relay stops. A circuit
/// woken at its deadline gives up (`docs/spec.md` §6.4 step 5); one answered meanwhile ignores
/// the wake-up. Many deadlines at once (a next hop that swallows every CREATE) are woken
/// [`WAKE_BATCH`] at a time, letting the runtime's other tasks run in between.
pub(crate) async fn serve(
    env: Arc<Env>,
    wait: Arc<CreatedWait>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let sleep = async {
            match wait.next() {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = wait.earlier.notified() => continue,
            _ = stopped.changed() => return,
        }
        for (i, circ) in wait.take_due(Instant::now()).into_iter().enumerate() {
            if i > 0 && i % WAKE_BATCH == 0 {
                tokio::task::yield_now().await;
            }
            circ.input(&env, Input::Timer);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use shallot_crypto::keys::RelayId;
    use shallot_crypto::ntor::ClientMessage;
    use shallot_crypto::onion::body_len;
    use shallot_link::CellQueue;
    use shallot_proto::cell::{Cell, ChanMsg, DestroyReason, CELL_LEN};
    use shallot_proto::relay_msg::{fragment, Extend, RelayMsg};

    use super::*;
    use crate::circuit::Side;
    use crate::shell::testing::{self, CircuitMaker};
    use crate::shell::{CircRef, Link};

    /// A circuit on link 1 that has asked to be extended and been attached to link 2, so it
    /// waits for CREATED until `env.extend_timeout` from now.
    fn extended(env: &Env, maker: &CircuitMaker, id: u32) -> (Arc<Circuit>, Arc<Link>, Arc<Link>) {
        let prev = testing::link(env, 1);
        let (circ, mut client) = maker.circuit(&prev, id, Instant::now());
        let extend = RelayMsg::Extend(Extend {
            target: RelayId([5; 20]),
            handshake: ClientMessage::from_bytes(&[7; 84]),
        });
        for body in fragment(&extend.encode().unwrap(), body_len(1)).unwrap() {
            testing::send_body(env, &circ, &mut client, &body);
        }
        let next = testing::link(env, 2);
        let entry = CircRef {
            circ: circ.clone(),
            side: Side::Next,
        };
        let next_id = next.add_outbound(entry, 10).unwrap();
        assert!(circ.attach_next(env, next.clone(), next_id));
        assert!(circ.created_deadline().is_some());
        (circ, prev, next)
    }

    fn destroys(link: &Link) -> Vec<DestroyReason> {
        let mut buf = Vec::new();
        while link.chan.drain_into(127, &mut buf) > 0 {}
        buf.chunks(CELL_LEN)
            .filter_map(|c| match Cell::decode(c).unwrap().unwrap().msg {
                ChanMsg::Destroy(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The attack: a next hop that takes CREATE and never answers. The circuit must not wait
    /// for good: at the extend timeout it is destroyed, the client is told, and the next hop
    /// is told to forget it. The task is asleep when each deadline arrives: first with nothing
    /// to wait for, then waiting for a later deadline (a circuit extended under a longer
    /// timeout), so each must wake it.
    #[tokio::test]
    async fn a_next_hop_that_never_answers_create_is_given_up_at_the_extend_timeout() {
        let (mut env, mut requests) = testing::env(1_000_000, None);
        env.extend_timeout = Duration::from_millis(50);
        let env = Arc::new(env);
        let (mut slow_env, _slow_requests) = testing::env(1_000_000, None);
        slow_env.extend_timeout = Duration::from_secs(3600);
        let maker = CircuitMaker::new();
        let wait = Arc::new(CreatedWait::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(env.clone(), wait.clone(), stopped));
        let given_up = |circ: Arc<Circuit>| async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !circ.is_destroyed() {
                assert!(Instant::now() < deadline, "the circuit was never given up");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        for later in [None, Some(())] {
            let _kept = later.map(|()| {
                let kept = extended(&slow_env, &maker, 0x8000_0003);
                wait.watch(&kept.0);
                kept
            });
            // Let the task go to sleep (on nothing, or on the hour-long deadline).
            tokio::task::yield_now().await;
            let started = Instant::now();
            let (circ, prev, next) = extended(&env, &maker, 0x8000_0001);
            wait.watch(&circ);
            given_up(circ).await;
            assert!(started.elapsed() >= Duration::from_millis(50));
            // Reason 6 (timed out) to both neighbours, once (`docs/spec.md` §6.4 step 5).
            assert_eq!(
                destroys(&prev),
                [DestroyReason::Timeout],
                "the client is told"
            );
            assert_eq!(
                destroys(&next),
                [DestroyReason::Timeout],
                "the next hop forgets it"
            );
            while requests.try_recv().is_ok() {}
        }
        assert_eq!(env.stats.snapshot().circuits_destroyed, 2);
        assert_eq!(wait.len(), 1, "only the hour-long wait is kept");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task stops with the relay")
            .unwrap();
    }

    #[test]
    fn deadlines_come_due_in_order_and_only_live_circuits_are_woken() {
        let (mut env, mut requests) = testing::env(1_000_000, None);
        let maker = CircuitMaker::new();
        let wait = CreatedWait::default();
        // Three timeouts, so three deadlines apart whatever the clock's resolution.
        env.extend_timeout = Duration::from_secs(10);
        let (first, _p1, _n1) = extended(&env, &maker, 0x8000_0001);
        env.extend_timeout = Duration::from_secs(20);
        let (second, _p2, _n2) = extended(&env, &maker, 0x8000_0003);
        env.extend_timeout = Duration::from_secs(30);
        let (gone, p3, n3) = extended(&env, &maker, 0x8000_0005);
        // Added out of order: kept in order.
        wait.watch(&second);
        wait.watch(&gone);
        wait.watch(&first);
        let d1 = first.created_deadline().unwrap();
        let d2 = second.created_deadline().unwrap();
        let d3 = gone.created_deadline().unwrap();
        assert!(d1 < d2 && d2 < d3);
        assert_eq!(wait.next(), Some(d1));
        assert!(wait.take_due(d1 - Duration::from_millis(1)).is_empty());
        let woken = wait.take_due(d1);
        assert_eq!(woken.len(), 1);
        assert!(Arc::ptr_eq(&woken[0], &first));
        assert_eq!(wait.next(), Some(d2));
        // A circuit that went away is dropped, not woken.
        gone.input(
            &env,
            Input::Kill(crate::circuit::CircuitError::ShuttingDown),
        );
        while requests.try_recv().is_ok() {}
        drop((gone, p3, n3));
        let woken = wait.take_due(d3);
        assert_eq!(woken.len(), 1);
        assert!(Arc::ptr_eq(&woken[0], &second));
        assert_eq!(wait.len(), 0);
        // A circuit answered (or destroyed) is not waiting: nothing to keep.
        first.input(
            &env,
            Input::Kill(crate::circuit::CircuitError::ShuttingDown),
        );
        wait.watch(&first);
        assert_eq!(wait.len(), 0);
    }

    /// The attack on memory: a peer extends circuits and destroys them at once, in a loop.
    /// Each leaves an entry until its deadline (10 s); pruning keeps the entries of circuits
    /// gone from piling up beyond about the live ones.
    #[test]
    fn circuits_extended_and_destroyed_in_a_loop_do_not_pile_up() {
        let (env, mut requests) = testing::env(1_000_000, None);
        let maker = CircuitMaker::new();
        let wait = CreatedWait::default();
        let (live, _p, _n) = extended(&env, &maker, 0x8000_0001);
        wait.watch(&live);
        let mut most = 0;
        for i in 0..1_000u32 {
            let (circ, prev, next) = extended(&env, &maker, 0x8000_0003 + 2 * i);
            wait.watch(&circ);
            circ.input(
                &env,
                Input::Kill(crate::circuit::CircuitError::ShuttingDown),
            );
            while requests.try_recv().is_ok() {}
            drop((circ, prev, next));
            most = most.max(wait.len());
        }
        assert!(
            most <= PRUNE_FLOOR + 1,
            "{most} entries kept for 2 live circuits"
        );
        // The live one is still woken at its deadline.
        let woken = wait.take_due(live.created_deadline().unwrap());
        assert!(woken.iter().any(|c| Arc::ptr_eq(c, &live)));
    }
}
