//! Group commit for the client store (`docs/spec.md` §10.7): work that must be on disk before
//! the messenger goes on (a message recorded and its session advanced before it leaves, an
//! arriving envelope recorded before it is shown and acknowledged) is queued here and run on
//! a blocking thread, off the async runtime, so that what does not need the disk (building
//! the deposit circuits, say) goes on meanwhile.
//!
//! One runner at a time takes every job waiting, runs each under a savepoint of one
//! transaction (a job that fails is rolled back alone), commits once, and answers them all
//! after the commit: a lone job is committed at once, and jobs that arrive during a commit go
//! together in the next, so a burst of messages pays one flush to disk, not one each. Once no
//! job has come for [`SCRUB_IDLE`] (or [`SCRUB_MAX`] after the first commit not yet scrubbed,
//! when jobs keep coming), the runner checkpoints and truncates the write-ahead log
//! ([`Store::scrub`]), so what the transactions replaced does not stay in it. The wait keeps
//! the checkpoint's flushes out of the way of a message and of the answers that follow it
//! (its deposits, the recipient's acknowledgement), and lets a conversation's burst share one.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shallot_rt::lock;
use tokio::sync::oneshot;

use super::{Store, StoreError};

/// A queued job, its result type erased.
trait Job: Send {
    /// Runs the job inside the open transaction, under a savepoint of its own.
    fn run(&mut self, store: &Store);
    /// Answers the job once its batch is committed, or failed to commit (`committed` says
    /// why).
    fn answer(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Typed<T, E, F> {
    work: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Typed<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnOnce(&Store) -> Result<T, E> + Send,
{
    fn run(&mut self, store: &Store) {
        let Some(work) = self.work.take() else {
            return;
        };
        // Outside the batch's transaction (SQLite rolled it back after an I/O error), a
        // savepoint would start and commit a transaction of its own: refuse instead.
        if store.conn.is_autocommit() {
            self.result = Some(Err(E::from(StoreError::Corrupt(
                "the store's transaction ended early".into(),
            ))));
            return;
        }
        if let Err(e) = store.conn.execute_batch("SAVEPOINT job") {
            self.result = Some(Err(E::from(StoreError::Db(e))));
            return;
        }
        // A panicking job fails alone, rolled back, instead of taking the runner down.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(store)))
            .unwrap_or_else(|_| Err(E::from(StoreError::Corrupt("a store job panicked".into()))));
        let end = match result {
            Ok(_) => "RELEASE job",
            Err(_) => "ROLLBACK TO job; RELEASE job",
        };
        self.result = Some(match store.conn.execute_batch(end) {
            Ok(()) if !store.conn.is_autocommit() => result,
            Ok(()) => Err(E::from(StoreError::Corrupt(
                "the store's transaction ended early".into(),
            ))),
            Err(e) => Err(E::from(StoreError::Db(e))),
        });
    }

    fn answer(self: Box<Self>, committed: Result<(), &StoreError>) {
        let result = match (committed, self.result) {
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => Err(E::from(StoreError::Corrupt(
                "a queued job never ran".into(),
            ))),
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), _) => Err(E::from(StoreError::Corrupt(format!(
                "the store could not commit: {e}"
            )))),
        };
        let _ = self.reply.send(result);
    }
}

/// How long the runner waits for another job after a commit before it scrubs the log.
pub const SCRUB_IDLE: Duration = Duration::from_millis(25);

/// The longest the log goes unscrubbed after a commit while jobs keep coming.
pub const SCRUB_MAX: Duration = Duration::from_millis(500);

#[derive(Default)]
struct Queue {
    jobs: Vec<Box<dyn Job>>,
    /// Whether a runner is at work (it takes every job queued before it stops).
    running: bool,
}

/// Marks the runner stopped if it unwinds, so that the next job starts another.
struct StopGuard<'a>(&'a Mutex<Queue>);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(self.0).running = false;
        }
    }
}

/// The group committer of one store.
#[derive(Clone)]
pub struct GroupCommit {
    store: Arc<Mutex<Store>>,
    queue: Arc<Mutex<Queue>>,
    /// Signalled when a job is queued (for a runner waiting before it scrubs).
    queued: Arc<Condvar>,
    /// Transactions committed so far.
    batches: Arc<AtomicU64>,
}

impl GroupCommit {
    /// A group committer for `store` (which others may also lock: a job waits for them).
    pub fn new(store: Arc<Mutex<Store>>) -> Self {
        GroupCommit {
            store,
            queue: Arc::new(Mutex::new(Queue::default())),
            queued: Arc::new(Condvar::new()),
            batches: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many transactions it has committed (or tried to): fewer than the jobs run when
    /// jobs waited together.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Runs `work` in a transaction shared with the jobs queued beside it; returns its result
    /// once that transaction is on disk. If `work` fails, what it wrote is rolled back and
    /// the others' stands; if the commit fails, every job of the batch fails.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Store) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start_runner = {
            let mut queue = lock(&self.queue);
            queue.jobs.push(Box::new(Typed {
                work: Some(work),
                result: None,
                reply,
            }));
            !std::mem::replace(&mut queue.running, true)
        };
        self.queued.notify_one();
        if start_runner {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.runner());
        }
        answer.await.unwrap_or_else(|_| {
            Err(E::from(StoreError::Corrupt(
                "the store runner stopped".into(),
            )))
        })
    }

    /// Commits batches until nothing is waiting, then scrubs the log once.
    fn runner(&self) {
        // Should the runner itself fail, the next job starts another.
        let _stopped = StopGuard(&self.queue);
        // When the first commit not yet scrubbed was made.
        let mut dirty: Option<Instant> = None;
        loop {
            if dirty.is_some() {
                // Give the next job a moment to come before the log is scrubbed.
                let queue = lock(&self.queue);
                let _waited = self
                    .queued
                    .wait_timeout_while(queue, SCRUB_IDLE, |q| q.jobs.is_empty())
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // The store first, then the jobs: those queued while it was busy go together.
            let store = lock(&self.store);
            let jobs = {
                let mut queue = lock(&self.queue);
                if queue.jobs.is_empty() && dirty.is_none() {
                    queue.running = false;
                    return;
                }
                std::mem::take(&mut queue.jobs)
            };
            let nothing_came = jobs.is_empty();
            if !nothing_came {
                self.batches.fetch_add(1, Ordering::Relaxed);
                Self::commit(&store, jobs);
                dirty.get_or_insert_with(Instant::now);
            }
            // Scrubbed when nothing came, or (while jobs keep coming) once the oldest commit
            // not yet scrubbed is SCRUB_MAX old: after the batch, never in its way.
            // Gone idle, it also begins the next log, so that the next message's commit
            // flushes once (`Store::scrub_and_prime`).
            if dirty.is_some_and(|since| nothing_came || since.elapsed() >= SCRUB_MAX) {
                if nothing_came {
                    store.scrub_and_prime();
                } else {
                    store.scrub();
                }
                dirty = None;
            }
        }
    }

    /// Runs `jobs` in one transaction and answers them.
    fn commit(store: &Store, mut jobs: Vec<Box<dyn Job>>) {
        let n = jobs.len();
        tracing::trace!(target: "shallot_trace", jobs = n, "client store: batch begins");
        // A transaction left open (by a failed commit elsewhere) must not be joined: the batch
        // would be answered without reaching the disk.
        if !store.conn.is_autocommit() {
            let _ = store.conn.execute_batch("ROLLBACK");
        }
        let committed = store.atomically_then_scrub(|store| {
            for job in &mut jobs {
                job.run(store);
            }
            Ok::<_, StoreError>(())
        });
        tracing::trace!(target: "shallot_trace", jobs = n, "client store: batch committed");
        let committed = committed.as_ref().map(|_| ());
        for job in jobs {
            job.answer(committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::address::Address;
    use shallot_crypto::keys::IdentityKeypair;

    fn store() -> Arc<Mutex<Store>> {
        let dir = shallot_rt::scratch::path("client-group");
        let store = Store::open(&dir).unwrap();
        store.create_identity(None, 0).unwrap();
        Arc::new(Mutex::new(store))
    }

    fn someone() -> Address {
        Address::new(IdentityKeypair::generate(&mut rand::thread_rng()).public())
    }

    #[tokio::test]
    async fn a_failed_job_is_rolled_back_alone() {
        let store = store();
        let group = GroupCommit::new(store.clone());
        let (kept, dropped) = (someone(), someone());
        let ok = group.run(move |s| s.add_contact("kept", &kept, 0));
        let failing = group.run(move |s| {
            s.add_contact("dropped", &dropped, 0)?;
            Err::<(), _>(StoreError::Corrupt("refused on purpose".into()))
        });
        let (a, b) = futures_util::future::join(ok, failing).await;
        assert!(a.is_ok(), "{a:?}");
        assert!(matches!(b, Err(StoreError::Corrupt(ref m)) if m == "refused on purpose"));
        let log = {
            let s = lock(&store);
            assert!(s.contact("kept").unwrap().is_some());
            assert!(s.contact("dropped").unwrap().is_none());
            s.dir().join("shallot.db-wal")
        };
        // The log is scrubbed once nothing more has come for a while: what is left in it is
        // the next log's beginning, the database's first page, and nothing of the contacts.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut pages = log_pages(&log);
        while pages != [1] && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            pages = log_pages(&log);
        }
        assert_eq!(pages, [1]);
        let bytes = std::fs::read(&log).unwrap();
        assert!(!bytes.windows(4).any(|w| w == b"kept"));
    }

    /// The page numbers of the frames in the write-ahead log at `path`, in order (SQLite's
    /// file format: a 32-byte header giving the page size, then frames of a 24-byte header,
    /// whose first 4 bytes are the page number, and a page).
    fn log_pages(path: &std::path::Path) -> Vec<u32> {
        let bytes = std::fs::read(path).unwrap_or_default();
        let Some(size) = bytes.get(8..12) else {
            return Vec::new();
        };
        let size = u32::from_be_bytes(size.try_into().unwrap()) as usize;
        bytes
            .get(32..)
            .unwrap_or_default()
            .chunks(24 + size)
            .filter(|f| f.len() == 24 + size)
            .map(|f| u32::from_be_bytes(f[..4].try_into().unwrap()))
            .collect()
    }

    /// Contacts as another connection sees them: what is on disk, committed.
    fn contacts_on_disk(store: &Arc<Mutex<Store>>) -> i64 {
        let path = lock(store).dir().join("shallot.db");
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM contacts", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    #[allow(clippy::panic)]
    async fn a_panicking_job_fails_alone_and_the_next_reaches_the_disk() {
        let store = store();
        let group = GroupCommit::new(store.clone());
        let address = someone();
        let panicked = group
            .run(move |s| {
                s.add_contact("half", &address, 0)?;
                panic!("a bug in a job");
                #[allow(unreachable_code)]
                Ok::<(), StoreError>(())
            })
            .await;
        assert!(
            matches!(panicked, Err(StoreError::Corrupt(_))),
            "{panicked:?}"
        );
        let address = someone();
        group
            .run(move |s| s.add_contact("whole", &address, 0))
            .await
            .unwrap();
        assert_eq!(contacts_on_disk(&store), 1);
        assert!(lock(&store).contact("half").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_transaction_left_open_is_not_joined() {
        let store = store();
        let group = GroupCommit::new(store.clone());
        // As a commit that failed and left its transaction open would.
        lock(&store).conn.execute_batch("BEGIN").unwrap();
        let address = someone();
        group
            .run(move |s| s.add_contact("kept", &address, 0))
            .await
            .unwrap();
        assert_eq!(contacts_on_disk(&store), 1, "answered, but not on disk");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_that_wait_are_committed_together() {
        let store = store();
        let group = GroupCommit::new(store.clone());
        // Another thread holds the store, as a commit in progress would: every job queues
        // behind it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (holding, held) = std::sync::mpsc::channel::<()>();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _guard = lock(&store);
                let _ = holding.send(());
                let _ = released.recv();
            })
        };
        held.recv().unwrap();
        let jobs: Vec<_> = (0..20)
            .map(|i| {
                let group = group.clone();
                let address = someone();
                tokio::spawn(async move {
                    group
                        .run(move |s| s.add_contact(&format!("c{i}"), &address, 0))
                        .await
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock(&group.queue).jobs.len() < 20 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(lock(&group.queue).jobs.len(), 20, "the jobs never queued");
        release.send(()).unwrap();
        holder.join().unwrap();
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert_eq!(lock(&store).contacts().unwrap().len(), 20);
        assert_eq!(
            group.batches(),
            1,
            "20 waiting jobs took more than one commit"
        );
    }
}
