//! The diffs from the day's older consensuses (`crate::day_bases`), computed when a client
//! first names one, one at a time and off the runtime's threads (`docs/spec.md` §5.12,
//! §5.13): the one piece of that work that waits, shared by the authorities and the relays'
//! directory caches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::day_bases::OLDER_WAIT;

/// Lets one diff from an older base be computed at a time.
#[derive(Debug, Default, Clone)]
pub struct DiffQueue {
    permit: Arc<tokio::sync::Mutex<()>>,
}

impl DiffQueue {
    /// Waits up to [`OLDER_WAIT`] for this queue's turn, then gives what `ready` finds (another
    /// request may have computed the answer meanwhile) or runs `job` on a blocking thread,
    /// counting it in `started`. The turn moves into the job, so an answer given up (its
    /// request's time limit) does not let a second computation start beside it. `None` if
    /// the turn did not come in time or the job panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        started: &AtomicU64,
        ready: impl Fn() -> Option<T>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let turn = self.permit.clone().lock_owned();
        let turn = tokio::time::timeout(OLDER_WAIT, turn).await.ok()?;
        if let Some(done) = ready() {
            return Some(done);
        }
        started.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            job()
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::future::Future;
    use std::sync::Mutex;

    /// A request dropped once its job started (its client hung up) keeps the turn until the
    /// job ends; the next request waits for it and takes its answer instead of computing
    /// the diff again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_keeps_its_turn_and_the_next_takes_its_answer() {
        let queue = DiffQueue::default();
        let started = AtomicU64::new(0);
        let done: Arc<Mutex<Option<u32>>> = Arc::default();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let d = done.clone();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        {
            let job = move || {
                wait.recv().unwrap();
                *d.lock().unwrap() = Some(7);
                7
            };
            let mut first = std::pin::pin!(queue.run(&started, || None, job));
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(started.load(Ordering::Relaxed), 1, "the job started");
        assert!(queue.permit.try_lock().is_err(), "and holds the turn");
        go.send(()).unwrap();
        let next = queue.run(&started, || *done.lock().unwrap(), || 9).await;
        assert_eq!(next, Some(7), "the first job's answer, not a second job's");
        assert_eq!(started.load(Ordering::Relaxed), 1);
    }

    /// Past [`OLDER_WAIT`] for the turn, a request gives up and runs nothing.
    #[tokio::test(start_paused = true)]
    async fn a_request_kept_waiting_gives_up() {
        let queue = DiffQueue::default();
        let started = AtomicU64::new(0);
        let busy = queue.permit.clone().lock_owned().await;
        let t0 = tokio::time::Instant::now();
        assert_eq!(queue.run(&started, || None, || 9).await, None);
        assert_eq!(t0.elapsed(), OLDER_WAIT);
        assert_eq!(started.load(Ordering::Relaxed), 0);
        drop(busy);
        assert_eq!(queue.run(&started, || None, || 9).await, Some(9));
        assert_eq!(started.load(Ordering::Relaxed), 1);
    }
}
