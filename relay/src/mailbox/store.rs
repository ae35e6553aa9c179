//! The mailbox store: sealed envelopes and prekey bundles in SQLite, with expiry and quotas
//! (`docs/spec.md` §9.4).
//!
//! One thread owns the database. Requests queue to it; it runs every request waiting in one
//! transaction and answers them all after the commit (group commit, `serve`): a lone
//! request is committed at once, requests that arrive during a commit go together in the
//! next, and a deposit is acknowledged only once it is on disk (`synchronous=FULL` in WAL
//! mode), so a busy relay pays one disk flush for many deposits. What each mailbox holds is
//! counted in memory, so checking its quota does not read the mailbox.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use shallot_proto::mailbox::{EnvelopeId, MailboxId};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::warn;

pub use crate::config::StoreLimits;

/// Why a store operation failed.
///
/// Clone, because one failed commit answers every request of its batch.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The mailbox (or the whole store) has no room.
    #[error("mailbox full")]
    Full,
    /// The database failed.
    #[error("mailbox database error")]
    Db(#[source] Arc<rusqlite::Error>),
    /// The database file could not be created with its permissions.
    #[error("cannot create the mailbox database file")]
    File(#[source] Arc<shallot_crypto::keyfile::KeyFileError>),
    /// The store thread could not be started.
    #[error("cannot start the mailbox store thread")]
    Thread(#[source] Arc<std::io::Error>),
    /// The store thread has stopped.
    #[error("mailbox store stopped")]
    Stopped,
    /// The database ended the batch's transaction itself, on an error (it does so on a full
    /// disk or an I/O error), undoing what the batch had written.
    #[error("the mailbox database abandoned its transaction")]
    Abandoned,
    /// The store did not answer within its [`StoreLimits::answer_limit`]: the request is
    /// given up, and the store skips it if it has not run it yet.
    #[error("the mailbox store is too busy to answer in time")]
    Overloaded,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(Arc::new(e))
    }
}

/// What a deposit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deposited {
    /// Newly stored.
    Stored,
    /// Already there (a replayed or repeated deposit); nothing changed.
    Duplicate,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Told the ids an ACK deleted once their deletion is committed, before the ACK is answered
/// and whether or not its requester still waits for the answer.
pub type OnDeleted = Box<dyn FnOnce(&[EnvelopeId]) + Send>;

enum Job {
    Deposit {
        mailbox: MailboxId,
        id: EnvelopeId,
        body: Vec<u8>,
        now: u64,
        reply: Reply<Deposited>,
    },
    Fetch {
        mailbox: MailboxId,
        now: u64,
        reply: Reply<Vec<(EnvelopeId, Vec<u8>)>>,
    },
    FetchPage {
        mailbox: MailboxId,
        now: u64,
        after: Option<Cursor>,
        max_bytes: usize,
        reply: Reply<Vec<Stored>>,
    },
    Ack {
        mailbox: MailboxId,
        ids: Vec<EnvelopeId>,
        on_deleted: OnDeleted,
        reply: Reply<Vec<EnvelopeId>>,
    },
    PutBundle {
        mailbox: MailboxId,
        body: Vec<u8>,
        expires: u64,
        reply: Reply<()>,
    },
    GetBundle {
        mailbox: MailboxId,
        now: u64,
        reply: Reply<Option<Vec<u8>>>,
    },
    Expire {
        now: u64,
        reply: Reply<u64>,
    },
    Holdings {
        now: u64,
        reply: Reply<Vec<Holding>>,
    },
    Lacks {
        mailbox: MailboxId,
        ids: Vec<EnvelopeId>,
        reply: Reply<Vec<EnvelopeId>>,
    },
    Bodies {
        mailbox: MailboxId,
        ids: Vec<EnvelopeId>,
        now: u64,
        reply: Reply<Vec<(EnvelopeId, Vec<u8>)>>,
    },
}

/// What the store holds for one mailbox, for repair (`docs/spec.md` §9.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// When its oldest unexpired envelope was stored here (Unix seconds).
    pub oldest: u64,
    /// Its unexpired envelopes.
    pub ids: Vec<EnvelopeId>,
}

/// Where a paged fetch stands: the `stored_at` and id of the last envelope it returned.
pub type Cursor = (u64, EnvelopeId);

/// An envelope as a paged fetch returns it: where it stands in the order, and its bytes.
pub type Stored = (Cursor, Vec<u8>);

/// A job handed to the store thread, its answer still to come.
#[derive(Debug)]
pub struct Handed<T> {
    rx: oneshot::Receiver<Result<T, StoreError>>,
    /// For a request, [`StoreLimits::answer_limit`] after it was handed over; none for the
    /// relay's own upkeep.
    deadline: Option<tokio::time::Instant>,
}

impl<T> Handed<T> {
    /// Waits for the answer: a request's until the answer limit, then it is given up with
    /// [`StoreError::Overloaded`] (and skipped by the store if not yet run; a deposit may be
    /// committed all the same, if the store had run it); the relay's own upkeep (expiry,
    /// repair) without limit, saying so in the log while the store keeps it waiting.
    pub async fn answer(mut self) -> Result<T, StoreError> {
        let Some(deadline) = self.deadline else {
            let mut waited = 0;
            loop {
                match tokio::time::timeout(UPKEEP_PATIENCE, &mut self.rx).await {
                    Ok(answer) => return answer.map_err(|_| StoreError::Stopped)?,
                    Err(_) => {
                        waited += UPKEEP_PATIENCE.as_secs();
                        warn!("the mailbox store has not answered for {waited} s");
                    }
                }
            }
        };
        match tokio::time::timeout_at(deadline, self.rx).await {
            Ok(answer) => answer.map_err(|_| StoreError::Stopped)?,
            Err(_) => Err(StoreError::Overloaded),
        }
    }
}

/// Whose job is handed to the store thread ([`Store::ask`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// A request from a client or a relay: bounded in its wait and by the queue.
    Request,
    /// The relay's own upkeep: expiry, listing holdings for repair, reading envelopes to
    /// hand over.
    Upkeep,
}

/// How long upkeep waits for the store before it says so in the log (and waits on).
const UPKEEP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A handle to the store thread.
#[derive(Clone)]
pub struct Store {
    jobs: std_mpsc::Sender<Job>,
    /// How long a request waits for the store thread ([`StoreLimits::answer_limit`]).
    answer_limit: std::time::Duration,
    /// [`StoreLimits::queued_jobs`].
    queued_jobs: usize,
    committed: Arc<Committed>,
    /// While set, commits wait (tests only: to look at what happens before one ends).
    #[cfg(test)]
    hold: Arc<CommitHold>,
}

/// Makes commits wait, for tests: whether they are held, and whether one is waiting now.
#[cfg(test)]
#[derive(Debug, Default)]
struct CommitHold {
    held: std::sync::atomic::AtomicBool,
    waiting: std::sync::atomic::AtomicBool,
}

/// What the store thread has committed since it started, counted as it goes, and the jobs
/// still waiting for it.
#[derive(Debug, Default)]
struct Committed {
    /// Transactions committed.
    commits: AtomicU64,
    /// Jobs (requests) answered by those commits.
    jobs: AtomicU64,
    /// Nanoseconds spent running batches (from the transaction's start to the answers),
    /// failed ones included.
    busy_nanos: AtomicU64,
    /// Jobs handed to the store thread and not yet taken by it.
    queued: AtomicUsize,
}

/// How much the store has committed since it opened: how many transactions, and how many
/// requests they carried, so that `jobs / commits` is the average batch of the group commit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitCounts {
    /// Transactions committed (each one flush of the log to disk).
    pub commits: u64,
    /// Requests (deposits, fetches, acknowledgements, ...) those transactions carried.
    pub jobs: u64,
    /// Time the store thread spent running transactions (rather than waiting for requests),
    /// failed ones included.
    pub busy: std::time::Duration,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS envelopes (
        mailbox BLOB NOT NULL,
        id BLOB NOT NULL,
        body BLOB NOT NULL,
        stored_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (mailbox, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS envelopes_by_expiry ON envelopes (expires_at);
    CREATE TABLE IF NOT EXISTS bundles (
        mailbox BLOB PRIMARY KEY,
        body BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
";

impl Store {
    /// Opens (creating if needed) the store at `path` (mode 0600) and starts its thread.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Store, StoreError> {
        if !path.exists() {
            shallot_crypto::keyfile::write_private_file(path, b"")
                .map_err(|e| StoreError::File(Arc::new(e)))?;
        }
        let (answer_limit, queued_jobs) = (limits.answer_limit, limits.queued_jobs);
        let mut worker = Worker::open(path, limits)?;
        #[cfg(test)]
        let hold = worker.hold.clone();
        let (jobs, rx) = std_mpsc::channel();
        let committed = Arc::new(Committed::default());
        let counts = committed.clone();
        std::thread::Builder::new()
            .name("mailbox-store".into())
            .spawn(move || {
                // Only a deposit's answer waits for the store (its push goes out at
                // admission, §9.3): on a busy machine, cells are forwarded first.
                // SQLite starts no threads of its own here, so nothing else inherits this.
                shallot_rt::priority::make_this_thread_background();
                serve(&mut worker, &rx, &counts)
            })
            .map_err(|e| StoreError::Thread(Arc::new(e)))?;
        Ok(Store {
            jobs,
            answer_limit,
            queued_jobs,
            committed,
            #[cfg(test)]
            hold,
        })
    }

    /// Makes every commit wait from now on, or lets them go again (tests only).
    #[cfg(test)]
    pub(crate) fn hold_commits(&self, hold: bool) {
        self.hold.held.store(hold, Ordering::SeqCst);
    }

    /// Returns once the store thread waits at a held commit (tests only; panics after 10 s).
    #[cfg(test)]
    pub(crate) async fn until_a_commit_waits(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.hold.waiting.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no commit came to wait"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// How much the store has committed since it opened.
    pub fn commit_counts(&self) -> CommitCounts {
        CommitCounts {
            commits: self.committed.commits.load(Ordering::Relaxed),
            jobs: self.committed.jobs.load(Ordering::Relaxed),
            busy: std::time::Duration::from_nanos(
                self.committed.busy_nanos.load(Ordering::Relaxed),
            ),
        }
    }

    /// Hands a job to the store thread. A request's is refused with
    /// [`StoreError::Overloaded`] at once when [`StoreLimits::queued_jobs`] wait already, so
    /// that what the requests given up still hold (an envelope, a list of ids) stays bounded
    /// while the store is stuck; the relay's own upkeep (a handful of jobs) always goes in.
    fn hand_over(&self, job: Job, from: Asker) -> Result<(), StoreError> {
        let queued = &self.committed.queued;
        if queued.fetch_add(1, Ordering::Relaxed) >= self.queued_jobs && from == Asker::Request {
            queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Overloaded);
        }
        self.jobs.send(job).map_err(|_| {
            queued.fetch_sub(1, Ordering::Relaxed);
            StoreError::Stopped
        })
    }

    /// Hands a job to the store thread; its answer is to come ([`Handed::answer`]).
    fn hand_in<T>(
        &self,
        from: Asker,
        make: impl FnOnce(Reply<T>) -> Job,
    ) -> Result<Handed<T>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.hand_over(make(tx), from)?;
        Ok(Handed {
            rx,
            deadline: (from == Asker::Request)
                .then(|| tokio::time::Instant::now() + self.answer_limit),
        })
    }

    /// Hands a job to the store thread and waits for its answer ([`Handed::answer`]).
    async fn ask<T>(
        &self,
        from: Asker,
        make: impl FnOnce(Reply<T>) -> Job,
    ) -> Result<T, StoreError> {
        self.hand_in(from, make)?.answer().await
    }

    /// Stores an envelope, durably, unless the mailbox or store is full:
    /// [`Deposited::Stored`] only once its transaction has committed.
    pub async fn deposit(
        &self,
        mailbox: MailboxId,
        id: EnvelopeId,
        body: Vec<u8>,
        now: u64,
    ) -> Result<Deposited, StoreError> {
        self.begin_deposit(mailbox, id, body, now)?.answer().await
    }

    /// [`Store::deposit`] in two steps: the envelope is handed to the store thread (or
    /// refused at once: [`StoreError::Overloaded`] with the store's queue full), then its
    /// outcome is awaited. So that a subscriber's push, which need not wait for the store
    /// (`docs/spec.md` §9.3), leaves only once the deposit is in the store's queue, ahead of
    /// any acknowledgement of it.
    pub fn begin_deposit(
        &self,
        mailbox: MailboxId,
        id: EnvelopeId,
        body: Vec<u8>,
        now: u64,
    ) -> Result<Handed<Deposited>, StoreError> {
        self.hand_in(Asker::Request, |reply| Job::Deposit {
            mailbox,
            id,
            body,
            now,
            reply,
        })
    }

    /// Every unexpired envelope waiting in a mailbox, oldest first.
    pub async fn fetch(
        &self,
        mailbox: MailboxId,
        now: u64,
    ) -> Result<Vec<(EnvelopeId, Vec<u8>)>, StoreError> {
        self.ask(Asker::Request, |reply| Job::Fetch {
            mailbox,
            now,
            reply,
        })
        .await
    }

    /// The mailbox's unexpired envelopes after `after` (from the first when `None`), in the
    /// order `(stored_at, id)`, as many as fit in `max_bytes` plus at most one more: a fetch
    /// streams a mailbox page by page instead of loading it whole (`docs/spec.md` §9.7).
    pub async fn fetch_page(
        &self,
        mailbox: MailboxId,
        now: u64,
        after: Option<Cursor>,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        self.ask(Asker::Request, |reply| Job::FetchPage {
            mailbox,
            now,
            after,
            max_bytes,
            reply,
        })
        .await
    }

    /// Deletes envelopes from a mailbox; returns the ids of those that existed. `on_deleted`
    /// is given them once the deletion is committed, even if this request was given up
    /// meanwhile (answered Overloaded while the store had already carried it out).
    pub async fn ack(
        &self,
        mailbox: MailboxId,
        ids: Vec<EnvelopeId>,
        on_deleted: impl FnOnce(&[EnvelopeId]) + Send + 'static,
    ) -> Result<Vec<EnvelopeId>, StoreError> {
        self.ask(Asker::Request, |reply| Job::Ack {
            mailbox,
            ids,
            on_deleted: Box::new(on_deleted),
            reply,
        })
        .await
    }

    /// Keeps a mailbox's prekey bundle until `expires`, replacing any older one.
    pub async fn put_bundle(
        &self,
        mailbox: MailboxId,
        body: Vec<u8>,
        expires: u64,
    ) -> Result<(), StoreError> {
        self.ask(Asker::Request, |reply| Job::PutBundle {
            mailbox,
            body,
            expires,
            reply,
        })
        .await
    }

    /// A mailbox's unexpired prekey bundle.
    pub async fn get_bundle(
        &self,
        mailbox: MailboxId,
        now: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.ask(Asker::Request, |reply| Job::GetBundle {
            mailbox,
            now,
            reply,
        })
        .await
    }

    /// Deletes everything expired at `now`; returns how many envelopes went.
    pub async fn expire(&self, now: u64) -> Result<u64, StoreError> {
        self.ask(Asker::Upkeep, |reply| Job::Expire { now, reply })
            .await
    }

    /// Every mailbox with unexpired envelopes at `now`, with their ids.
    pub async fn holdings(&self, now: u64) -> Result<Vec<Holding>, StoreError> {
        self.ask(Asker::Upkeep, |reply| Job::Holdings { now, reply })
            .await
    }

    /// Those of `ids` that a deposit into `mailbox` would store: not held, expired or not
    /// (for anti-entropy, `docs/spec.md` §9.6).
    pub async fn lacks(
        &self,
        mailbox: MailboxId,
        ids: Vec<EnvelopeId>,
    ) -> Result<Vec<EnvelopeId>, StoreError> {
        self.ask(Asker::Request, |reply| Job::Lacks {
            mailbox,
            ids,
            reply,
        })
        .await
    }

    /// The unexpired envelopes of `mailbox` among `ids`, with their bytes.
    pub async fn bodies(
        &self,
        mailbox: MailboxId,
        ids: Vec<EnvelopeId>,
        now: u64,
    ) -> Result<Vec<(EnvelopeId, Vec<u8>)>, StoreError> {
        self.ask(Asker::Upkeep, |reply| Job::Bodies {
            mailbox,
            ids,
            now,
            reply,
        })
        .await
    }
}

/// How to answer a job once the fate of its transaction is known: `None` if it committed.
type Answer = Box<dyn FnOnce(Option<StoreError>)>;

/// A database that runs jobs in transactions: the store's [`Worker`], or a fake in the
/// tests of [`serve`].
trait Batched {
    /// One request.
    type Job;
    /// Opens a transaction.
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Runs one job inside the open transaction; returns how to answer it.
    fn apply(&mut self, job: Self::Job) -> Answer;
    /// Whether the transaction is still open (the database ends it itself on some errors).
    fn in_transaction(&self) -> bool;
    /// Commits the transaction, durably.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Undoes a transaction whose commit failed, with what it changed in memory.
    fn rollback(&mut self);
    /// Answers a job that was never run.
    fn fail(job: Self::Job, e: StoreError);
}

/// The most jobs run in one transaction.
const BATCH: usize = 512;

/// Group commit: waits for a job, takes with it every job already waiting (at most
/// [`BATCH`]), runs them in one transaction and answers them all once it has committed, until
/// every sender is gone. A lone job is committed at once; jobs that arrive while a commit is
/// on its way to the disk wait for it, then go together in the next. A failed commit fails
/// every job of its batch.
///
/// Each commit, and the time each batch took, is counted in `committed`.
fn serve<B: Batched>(db: &mut B, rx: &std_mpsc::Receiver<B::Job>, committed: &Committed) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(BATCH - 1));
        committed.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        run_batch(db, batch, committed);
    }
}

fn run_batch<B: Batched>(db: &mut B, batch: Vec<B::Job>, committed: &Committed) {
    let started = std::time::Instant::now();
    // Counted before anyone is answered, so that an answered request finds itself counted.
    let busy = || {
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        committed.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    };
    if let Err(e) = db.begin() {
        busy();
        warn!("mailbox store: cannot begin a transaction: {e}");
        for job in batch {
            B::fail(job, e.clone());
        }
        return;
    }
    let jobs = batch.len();
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs);
    let mut waiting = batch.into_iter();
    for job in waiting.by_ref() {
        answers.push(db.apply(job));
        if !db.in_transaction() {
            // What the batch wrote is undone, and the jobs left would each be committed on
            // their own, outside the batch and its accounting: none of them runs.
            let e = StoreError::Abandoned;
            warn!("mailbox store: {e}");
            db.rollback();
            busy();
            for job in waiting {
                B::fail(job, e.clone());
            }
            for answer in answers {
                answer(Some(e.clone()));
            }
            return;
        }
    }
    let failed = db.commit().err();
    if let Some(e) = &failed {
        warn!("mailbox store: commit failed: {e}");
        db.rollback();
    } else {
        committed.commits.fetch_add(1, Ordering::Relaxed);
        committed.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        tracing::trace!(target: "shallot_trace", jobs, "mailbox store: batch committed");
    }
    busy();
    for answer in answers {
        answer(failed.clone());
    }
}

/// What one mailbox holds, counted in memory.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    envelopes: u64,
    bytes: u64,
}

struct Worker {
    conn: Connection,
    limits: StoreLimits,
    total_bytes: u64,
    /// What the mailboxes touched since the last expiry hold (a cache: a mailbox missing here
    /// is counted from the database when next needed). Bounded by the mailboxes holding
    /// envelopes, which the store's byte quota bounds.
    usage: HashMap<MailboxId, Usage>,
    /// `total_bytes` when the open transaction began.
    bytes_before: u64,
    /// [`Store::hold_commits`].
    #[cfg(test)]
    hold: Arc<CommitHold>,
}

impl Batched for Worker {
    type Job = Job;

    fn begin(&mut self) -> Result<(), StoreError> {
        self.bytes_before = self.total_bytes;
        Ok(self.conn.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn apply(&mut self, job: Job) -> Answer {
        // A request given up meanwhile (`StoreLimits::answer_limit`) is not run: a store far behind
        // catches up on what is still awaited instead of on work nobody waits for.
        if job.abandoned() {
            return Box::new(|_| {});
        }
        Worker::apply(self, job)
    }

    fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        #[cfg(test)]
        {
            while self.hold.held.load(Ordering::SeqCst) {
                self.hold.waiting.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.hold.waiting.store(false, Ordering::SeqCst);
        }
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    fn rollback(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.total_bytes = self.bytes_before;
        self.usage.clear();
    }

    fn fail(job: Job, e: StoreError) {
        fn no<T>(reply: Reply<T>, e: StoreError) {
            let _ = reply.send(Err(e));
        }
        match job {
            Job::Deposit { reply, .. } => no(reply, e),
            Job::Fetch { reply, .. } => no(reply, e),
            Job::FetchPage { reply, .. } => no(reply, e),
            Job::Ack { reply, .. } => no(reply, e),
            Job::PutBundle { reply, .. } => no(reply, e),
            Job::GetBundle { reply, .. } => no(reply, e),
            Job::Expire { reply, .. } => no(reply, e),
            Job::Holdings { reply, .. } => no(reply, e),
            Job::Lacks { reply, .. } => no(reply, e),
            Job::Bodies { reply, .. } => no(reply, e),
        }
    }
}

impl Job {
    /// Whether whoever asked has given up waiting for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Job::Deposit { reply, .. } => reply.is_closed(),
            Job::Fetch { reply, .. } => reply.is_closed(),
            Job::FetchPage { reply, .. } => reply.is_closed(),
            Job::Ack { reply, .. } => reply.is_closed(),
            Job::PutBundle { reply, .. } => reply.is_closed(),
            Job::GetBundle { reply, .. } => reply.is_closed(),
            Job::Expire { reply, .. } => reply.is_closed(),
            Job::Holdings { reply, .. } => reply.is_closed(),
            Job::Lacks { reply, .. } => reply.is_closed(),
            Job::Bodies { reply, .. } => reply.is_closed(),
        }
    }
}

impl Worker {
    /// Opens the database at `path`, creating its tables if needed.
    fn open(path: &Path, limits: StoreLimits) -> Result<Worker, StoreError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        let total: i64 = conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM envelopes",
            [],
            |r| r.get(0),
        )?;
        Ok(Worker {
            conn,
            limits,
            total_bytes: u64::try_from(total).unwrap_or(0),
            usage: HashMap::new(),
            bytes_before: 0,
            #[cfg(test)]
            hold: Arc::default(),
        })
    }

    /// Runs one job inside the open transaction and returns how to answer it once the
    /// transaction's fate is known.
    fn apply(&mut self, job: Job) -> Answer {
        fn answer<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Answer {
            Box::new(move |failed| {
                let _ = reply.send(match failed {
                    Some(e) => Err(e),
                    None => result,
                });
            })
        }
        match job {
            Job::Deposit {
                mailbox,
                id,
                body,
                now,
                reply,
            } => answer(reply, self.deposit(&mailbox, &id, &body, now)),
            Job::Fetch {
                mailbox,
                now,
                reply,
            } => answer(reply, self.fetch(&mailbox, now)),
            Job::FetchPage {
                mailbox,
                now,
                after,
                max_bytes,
                reply,
            } => answer(reply, self.fetch_page(&mailbox, now, after, max_bytes)),
            Job::Ack {
                mailbox,
                ids,
                on_deleted,
                reply,
            } => {
                let deleted = self.ack(&mailbox, &ids);
                Box::new(move |failed| {
                    if let (None, Ok(ids)) = (&failed, &deleted) {
                        on_deleted(ids);
                    }
                    let _ = reply.send(match failed {
                        Some(e) => Err(e),
                        None => deleted,
                    });
                })
            }
            Job::PutBundle {
                mailbox,
                body,
                expires,
                reply,
            } => answer(reply, self.put_bundle(&mailbox, &body, expires)),
            Job::GetBundle {
                mailbox,
                now,
                reply,
            } => answer(reply, self.get_bundle(&mailbox, now)),
            Job::Expire { now, reply } => answer(reply, self.expire(now)),
            Job::Holdings { now, reply } => answer(reply, self.holdings(now)),
            Job::Lacks {
                mailbox,
                ids,
                reply,
            } => answer(reply, self.lacks(&mailbox, &ids)),
            Job::Bodies {
                mailbox,
                ids,
                now,
                reply,
            } => answer(reply, self.bodies(&mailbox, &ids, now)),
        }
    }

    fn lacks(
        &self,
        mailbox: &MailboxId,
        ids: &[EnvelopeId],
    ) -> Result<Vec<EnvelopeId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM envelopes WHERE mailbox = ?1 AND id = ?2")?;
        let mut out = Vec::new();
        for id in ids {
            let held: Option<i64> = stmt
                .query_row(params![&mailbox.0[..], &id.0[..]], |r| r.get(0))
                .optional()?;
            if held.is_none() {
                out.push(*id);
            }
        }
        Ok(out)
    }

    fn bodies(
        &self,
        mailbox: &MailboxId,
        ids: &[EnvelopeId],
        now: u64,
    ) -> Result<Vec<(EnvelopeId, Vec<u8>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT body FROM envelopes WHERE mailbox = ?1 AND id = ?2 AND expires_at > ?3",
        )?;
        let mut out = Vec::new();
        for id in ids {
            let body: Option<Vec<u8>> = stmt
                .query_row(params![&mailbox.0[..], &id.0[..], now as i64], |r| r.get(0))
                .optional()?;
            if let Some(body) = body {
                out.push((*id, body));
            }
        }
        Ok(out)
    }

    /// What `mailbox` holds: from memory, or counted from the database once.
    fn usage(&mut self, mailbox: &MailboxId) -> Result<Usage, StoreError> {
        if let Some(u) = self.usage.get(mailbox) {
            return Ok(*u);
        }
        let (count, bytes): (i64, i64) = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM envelopes WHERE mailbox = ?1",
            )?
            .query_row(params![&mailbox.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let u = Usage {
            envelopes: u64::try_from(count).unwrap_or(0),
            bytes: u64::try_from(bytes).unwrap_or(0),
        };
        // An empty mailbox is not kept: a deposit refused, or anyone asking about mailboxes
        // that hold nothing, would otherwise grow the counts without bound.
        if u.envelopes > 0 {
            self.usage.insert(*mailbox, u);
        }
        Ok(u)
    }

    fn deposit(
        &mut self,
        mailbox: &MailboxId,
        id: &EnvelopeId,
        body: &[u8],
        now: u64,
    ) -> Result<Deposited, StoreError> {
        let exists: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM envelopes WHERE mailbox = ?1 AND id = ?2")?
            .query_row(params![&mailbox.0[..], &id.0[..]], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return Ok(Deposited::Duplicate);
        }
        let held = self.usage(mailbox)?;
        let len = body.len() as u64;
        if held.envelopes >= self.limits.envelopes_per_mailbox
            || held.bytes + len > self.limits.bytes_per_mailbox
            || self.total_bytes + len > self.limits.total_bytes
        {
            return Err(StoreError::Full);
        }
        self.conn
            .prepare_cached(
                "INSERT INTO envelopes (mailbox, id, body, stored_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &mailbox.0[..],
                &id.0[..],
                body,
                now as i64,
                now.saturating_add(self.limits.expiry_secs) as i64
            ])?;
        self.total_bytes += len;
        self.usage.insert(
            *mailbox,
            Usage {
                envelopes: held.envelopes + 1,
                bytes: held.bytes + len,
            },
        );
        Ok(Deposited::Stored)
    }

    fn fetch(
        &self,
        mailbox: &MailboxId,
        now: u64,
    ) -> Result<Vec<(EnvelopeId, Vec<u8>)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, body FROM envelopes WHERE mailbox = ?1 AND expires_at > ?2 ORDER BY stored_at",
        )?;
        let rows = stmt.query_map(params![&mailbox.0[..], now as i64], |r| {
            let id: Vec<u8> = r.get(0)?;
            let body: Vec<u8> = r.get(1)?;
            Ok((id, body))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            if let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) {
                out.push((EnvelopeId(id), body));
            }
        }
        Ok(out)
    }

    fn fetch_page(
        &self,
        mailbox: &MailboxId,
        now: u64,
        after: Option<Cursor>,
        max_bytes: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT stored_at, id, body FROM envelopes WHERE mailbox = ?1 AND expires_at > ?2 \
             AND (stored_at > ?3 OR (stored_at = ?3 AND id > ?4)) ORDER BY stored_at, id",
        )?;
        // Before the first: every stored_at is at least 0, and every id is longer than this.
        let (at, id) = match &after {
            Some((at, id)) => (i64::try_from(*at).unwrap_or(i64::MAX), &id.0[..]),
            None => (-1, &[][..]),
        };
        let mut rows = stmt.query(params![&mailbox.0[..], now as i64, at, id])?;
        let mut out = Vec::new();
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(row) = rows.next()? else {
                break;
            };
            let stored_at: i64 = row.get(0)?;
            let id: Vec<u8> = row.get(1)?;
            let body: Vec<u8> = row.get(2)?;
            if let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) {
                bytes += body.len();
                let at = u64::try_from(stored_at).unwrap_or(0);
                out.push(((at, EnvelopeId(id)), body));
            }
        }
        Ok(out)
    }

    fn ack(
        &mut self,
        mailbox: &MailboxId,
        ids: &[EnvelopeId],
    ) -> Result<Vec<EnvelopeId>, StoreError> {
        let mut deleted = Vec::new();
        for id in ids {
            let len: Option<i64> = self
                .conn
                .prepare_cached(
                    "DELETE FROM envelopes WHERE mailbox = ?1 AND id = ?2 RETURNING LENGTH(body)",
                )?
                .query_row(params![&mailbox.0[..], &id.0[..]], |r| r.get(0))
                .optional()?;
            if let Some(len) = len {
                let len = u64::try_from(len).unwrap_or(0);
                self.total_bytes = self.total_bytes.saturating_sub(len);
                if let Some(u) = self.usage.get_mut(mailbox) {
                    u.envelopes = u.envelopes.saturating_sub(1);
                    u.bytes = u.bytes.saturating_sub(len);
                    if u.envelopes == 0 {
                        self.usage.remove(mailbox);
                    }
                }
                deleted.push(*id);
            }
        }
        Ok(deleted)
    }

    fn put_bundle(&self, mailbox: &MailboxId, body: &[u8], expires: u64) -> Result<(), StoreError> {
        let replacing: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM bundles WHERE mailbox = ?1",
                params![&mailbox.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        if replacing.is_none() {
            let count: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM bundles", [], |r| r.get(0))?;
            if count as u64 >= self.limits.bundles {
                return Err(StoreError::Full);
            }
        }
        self.conn.execute(
            "INSERT INTO bundles (mailbox, body, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (mailbox) DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at",
            params![&mailbox.0[..], body, expires as i64],
        )?;
        Ok(())
    }

    fn get_bundle(&self, mailbox: &MailboxId, now: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT body FROM bundles WHERE mailbox = ?1 AND expires_at > ?2",
                params![&mailbox.0[..], now as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn holdings(&self, now: u64) -> Result<Vec<Holding>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT mailbox, id, stored_at FROM envelopes WHERE expires_at > ?1 ORDER BY mailbox, stored_at",
        )?;
        let rows = stmt.query_map(params![now as i64], |r| {
            let mailbox: Vec<u8> = r.get(0)?;
            let id: Vec<u8> = r.get(1)?;
            let at: i64 = r.get(2)?;
            Ok((mailbox, id, at))
        })?;
        let mut out: Vec<Holding> = Vec::new();
        for row in rows {
            let (mailbox, id, at) = row?;
            let (Ok(mailbox), Ok(id)) = (
                <[u8; 32]>::try_from(mailbox.as_slice()),
                <[u8; 16]>::try_from(id.as_slice()),
            ) else {
                continue;
            };
            let at = u64::try_from(at).unwrap_or(0);
            match out.last_mut() {
                Some(h) if h.mailbox.0 == mailbox => {
                    h.oldest = h.oldest.min(at);
                    h.ids.push(EnvelopeId(id));
                }
                _ => out.push(Holding {
                    mailbox: MailboxId(mailbox),
                    oldest: at,
                    ids: vec![EnvelopeId(id)],
                }),
            }
        }
        Ok(out)
    }

    fn expire(&mut self, now: u64) -> Result<u64, StoreError> {
        let freed: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM envelopes WHERE expires_at <= ?1",
            params![now as i64],
            |r| r.get(0),
        )?;
        let n = self.conn.execute(
            "DELETE FROM envelopes WHERE expires_at <= ?1",
            params![now as i64],
        )?;
        // Counted before anything else can fail: a failure later in this job fails the job
        // alone, and the batch still commits the envelopes' deletion.
        self.total_bytes = self.total_bytes.saturating_sub(freed as u64);
        if n > 0 {
            // Counted again from the database as each mailbox is next used.
            self.usage.clear();
        }
        self.conn.execute(
            "DELETE FROM bundles WHERE expires_at <= ?1",
            params![now as i64],
        )?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A fake database for [`serve`]: records each committed batch, can hold a commit until
    /// told to finish it (a commit on its way to the disk), and can fail one.
    struct Fake {
        open: Vec<u32>,
        /// The job after which the fake database ends its transaction itself, if any.
        abandon_after: Option<u32>,
        in_transaction: bool,
        committed: Vec<Vec<u32>>,
        rolled_back: Vec<Vec<u32>>,
        /// Told the batch of each commit as it starts.
        committing: std_mpsc::Sender<Vec<u32>>,
        /// Each commit waits here for `Ok(fail)`.
        finish: std_mpsc::Receiver<bool>,
    }

    type FakeJob = (u32, std_mpsc::Sender<Result<u32, StoreError>>);

    impl Batched for Fake {
        type Job = FakeJob;

        fn begin(&mut self) -> Result<(), StoreError> {
            self.in_transaction = true;
            Ok(())
        }

        fn in_transaction(&self) -> bool {
            self.in_transaction
        }

        fn apply(&mut self, (n, reply): FakeJob) -> Answer {
            self.open.push(n);
            if self.abandon_after == Some(n) {
                self.in_transaction = false;
            }
            Box::new(move |failed| {
                let _ = reply.send(match failed {
                    Some(e) => Err(e),
                    None => Ok(n),
                });
            })
        }

        fn commit(&mut self) -> Result<(), StoreError> {
            let batch = std::mem::take(&mut self.open);
            self.committing.send(batch.clone()).unwrap();
            let fail = self.finish.recv().unwrap();
            if fail {
                self.rolled_back.push(batch);
                return Err(StoreError::Db(Arc::new(rusqlite::Error::InvalidQuery)));
            }
            self.committed.push(batch);
            Ok(())
        }

        fn rollback(&mut self) {
            if !self.open.is_empty() {
                self.rolled_back.push(std::mem::take(&mut self.open));
            }
        }

        fn fail((_, reply): FakeJob, e: StoreError) {
            let _ = reply.send(Err(e));
        }
    }

    /// A fake store served on its own thread, as the real one is.
    struct Rig {
        jobs: std_mpsc::Sender<FakeJob>,
        committing: std_mpsc::Receiver<Vec<u32>>,
        finish: std_mpsc::Sender<bool>,
        done: std::thread::JoinHandle<Fake>,
        counted: Arc<Committed>,
    }

    /// Long enough never to be reached on a loaded machine; only a hang would.
    const WAIT: Duration = Duration::from_secs(60);

    impl Rig {
        fn new() -> Rig {
            Rig::abandoning_after(None)
        }

        /// A rig whose database ends its transaction itself after job `n`.
        fn abandoning_after(n: Option<u32>) -> Rig {
            let (jobs, rx) = std_mpsc::channel();
            let (committing_tx, committing) = std_mpsc::channel();
            let (finish, finish_rx) = std_mpsc::channel();
            let mut fake = Fake {
                open: Vec::new(),
                abandon_after: n,
                in_transaction: false,
                committed: Vec::new(),
                rolled_back: Vec::new(),
                committing: committing_tx,
                finish: finish_rx,
            };
            let counted = Arc::new(Committed::default());
            let counts = counted.clone();
            let done = std::thread::spawn(move || {
                serve(&mut fake, &rx, &counts);
                fake
            });
            Rig {
                jobs,
                committing,
                finish,
                done,
                counted,
            }
        }

        fn submit(&self, n: u32) -> std_mpsc::Receiver<Result<u32, StoreError>> {
            let (tx, rx) = std_mpsc::channel();
            self.jobs.send((n, tx)).unwrap();
            rx
        }

        /// Waits for a commit to start; returns its batch.
        fn commit_started(&self) -> Vec<u32> {
            self.committing.recv_timeout(WAIT).unwrap()
        }

        fn end(self) -> Fake {
            drop(self.jobs);
            self.done.join().unwrap()
        }

        /// The (commits, jobs) counted so far.
        fn counted(&self) -> (u64, u64) {
            (
                self.counted.commits.load(Ordering::Relaxed),
                self.counted.jobs.load(Ordering::Relaxed),
            )
        }
    }

    #[test]
    fn a_lone_job_is_committed_at_once() {
        let rig = Rig::new();
        let answer = rig.submit(1);
        // No other job comes: the commit starts anyway, with this job alone.
        assert_eq!(rig.commit_started(), vec![1]);
        assert!(
            answer.try_recv().is_err(),
            "not answered before its commit ends"
        );
        rig.finish.send(false).unwrap();
        assert_eq!(answer.recv_timeout(WAIT).unwrap().unwrap(), 1);
        let fake = rig.end();
        assert_eq!(fake.committed, vec![vec![1]]);
    }

    /// When the database ends a batch's transaction itself (on a full disk, an I/O error),
    /// the jobs it ran are answered with that failure, the jobs after it are not run at all
    /// (each would otherwise be committed on its own, outside the batch's accounting), no
    /// commit is attempted, and the next batch goes on as usual.
    #[test]
    fn a_transaction_the_database_abandons_fails_its_batch_and_runs_no_more_of_it() {
        let rig = Rig::abandoning_after(Some(3));
        let first = rig.submit(1);
        assert_eq!(rig.commit_started(), vec![1]);
        let batch: Vec<_> = (2..=4).map(|n| rig.submit(n)).collect();
        rig.finish.send(false).unwrap();
        assert_eq!(first.recv_timeout(WAIT).unwrap().unwrap(), 1);
        for (answer, n) in batch.iter().zip(2..) {
            assert!(
                matches!(
                    answer.recv_timeout(WAIT).unwrap(),
                    Err(StoreError::Abandoned)
                ),
                "job {n}"
            );
        }
        let after = rig.submit(5);
        assert_eq!(
            rig.commit_started(),
            vec![5],
            "no commit for the abandoned batch"
        );
        rig.finish.send(false).unwrap();
        assert_eq!(after.recv_timeout(WAIT).unwrap().unwrap(), 5);
        assert_eq!(rig.counted(), (2, 2));
        let fake = rig.end();
        assert_eq!(fake.committed, vec![vec![1], vec![5]]);
        assert_eq!(fake.rolled_back, vec![vec![2, 3]], "job 4 never ran");
    }

    #[test]
    fn jobs_arriving_during_a_commit_go_together_in_the_next() {
        let rig = Rig::new();
        let first = rig.submit(1);
        assert_eq!(rig.commit_started(), vec![1]);
        // While the first commit is on its way to the disk, three more arrive.
        let later: Vec<_> = (2..=4).map(|n| rig.submit(n)).collect();
        rig.finish.send(false).unwrap();
        assert_eq!(first.recv_timeout(WAIT).unwrap().unwrap(), 1);
        assert_eq!(
            rig.commit_started(),
            vec![2, 3, 4],
            "one commit for the three"
        );
        for a in &later {
            assert!(
                a.try_recv().is_err(),
                "not answered before their commit ends"
            );
        }
        rig.finish.send(false).unwrap();
        for (a, n) in later.iter().zip(2..) {
            assert_eq!(a.recv_timeout(WAIT).unwrap().unwrap(), n);
        }
        assert_eq!(rig.counted(), (2, 4), "two commits carried four jobs");
        let fake = rig.end();
        assert_eq!(fake.committed, vec![vec![1], vec![2, 3, 4]]);
    }

    #[test]
    fn a_failed_commit_fails_every_job_of_its_batch_and_the_next_batch_goes_on() {
        let rig = Rig::new();
        let first = rig.submit(1);
        assert_eq!(rig.commit_started(), vec![1]);
        let doomed: Vec<_> = (2..=4).map(|n| rig.submit(n)).collect();
        rig.finish.send(false).unwrap();
        assert_eq!(rig.commit_started(), vec![2, 3, 4]);
        rig.finish.send(true).unwrap();
        for a in &doomed {
            assert!(matches!(
                a.recv_timeout(WAIT).unwrap(),
                Err(StoreError::Db(_))
            ));
        }
        assert_eq!(first.recv_timeout(WAIT).unwrap().unwrap(), 1);
        let after = rig.submit(5);
        assert_eq!(rig.commit_started(), vec![5]);
        rig.finish.send(false).unwrap();
        assert_eq!(after.recv_timeout(WAIT).unwrap().unwrap(), 5);
        assert_eq!(rig.counted(), (2, 2), "a failed commit is not counted");
        let fake = rig.end();
        assert_eq!(fake.committed, vec![vec![1], vec![5]]);
        assert_eq!(fake.rolled_back, vec![vec![2, 3, 4]]);
    }

    #[tokio::test]
    async fn a_transaction_that_cannot_begin_fails_its_jobs_and_the_counts_stay_true() {
        // The database is locked (for the busy timeout, 5 s): the deposit fails with the
        // database's error and is not counted; the store goes on, and a mailbox's count
        // follows its deposits and acknowledgements.
        let (store, path) = open(StoreLimits {
            envelopes_per_mailbox: 1,
            ..StoreLimits::default()
        });
        let m = MailboxId([3; 32]);
        // Another connection holds the write lock, so the store's next transaction fails.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let refused = store.deposit(m, EnvelopeId([1; 16]), vec![1], 1).await;
        assert!(matches!(refused, Err(StoreError::Db(_))), "{refused:?}");
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(
            store
                .deposit(m, EnvelopeId([2; 16]), vec![2], 1)
                .await
                .unwrap(),
            Deposited::Stored
        );
        assert!(matches!(
            store.deposit(m, EnvelopeId([3; 16]), vec![3], 1).await,
            Err(StoreError::Full)
        ));
        store
            .ack(m, vec![EnvelopeId([2; 16])], |_| {})
            .await
            .unwrap();
        assert_eq!(
            store
                .deposit(m, EnvelopeId([3; 16]), vec![3], 1)
                .await
                .unwrap(),
            Deposited::Stored,
            "an acknowledged envelope's room is free again"
        );
    }

    #[test]
    fn an_expiry_pass_that_fails_after_deleting_envelopes_still_counts_them_gone() {
        // The bundles' DELETE fails after the envelopes' DELETE ran: the batch commits the
        // envelopes' deletion all the same (a job's failure is its own), so the counts kept
        // in memory must follow it, or the relay refuses deposits for space it has.
        let path = scratch_db();
        let limits = StoreLimits {
            envelopes_per_mailbox: 2,
            ..StoreLimits::default()
        };
        let expiry = limits.expiry_secs;
        let mut worker = Worker::open(&path, limits).unwrap();
        let m = MailboxId([6; 32]);
        worker.begin().unwrap();
        for id in [1u8, 2] {
            let stored = worker.deposit(&m, &EnvelopeId([id; 16]), &[id; 10], 1);
            assert!(matches!(stored, Ok(Deposited::Stored)));
        }
        worker.put_bundle(&m, b"bundle", 2).unwrap();
        worker.commit().unwrap();
        assert!(matches!(
            worker.deposit(&m, &EnvelopeId([3; 16]), &[3; 10], 1),
            Err(StoreError::Full)
        ));

        let other = Connection::open(&path).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse_bundle_delete BEFORE DELETE ON bundles \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        let later = 1 + expiry + 1;
        worker.begin().unwrap();
        assert!(worker.expire(later).is_err(), "the bundles' delete fails");
        worker.commit().unwrap();
        let on_disk: i64 = other
            .query_row(
                "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM envelopes",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(on_disk, 0, "the envelopes' deletion was committed");
        assert_eq!(worker.total_bytes, 0, "and the relay counts them gone");
        worker.begin().unwrap();
        let stored = worker.deposit(&m, &EnvelopeId([4; 16]), &[4; 10], later);
        worker.commit().unwrap();
        assert!(
            matches!(stored, Ok(Deposited::Stored)),
            "the emptied mailbox takes a deposit: {stored:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_store_thread_runs_in_the_background() {
        // Threads start at their creator's priority: under one already as nice as the store
        // makes itself, this test could not tell the store's call from what it inherited.
        let background = i64::from(shallot_rt::priority::BACKGROUND_NICE);
        let inherited = i64::from(shallot_rt::priority::this_thread_nice().unwrap());
        if inherited >= background {
            eprintln!("skipped: the tests already run at nice {inherited}");
            return;
        }
        let (store, _) = open(StoreLimits::default());
        // Every store's thread in this process (other tests open theirs meanwhile).
        let niced = || -> Vec<i64> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| {
                    let t = t.ok()?.path();
                    let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                    (comm.trim() == "mailbox-store").then_some(())?;
                    let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                    // Fields after the parenthesised name; nice is the 19th field of all.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(16)?.parse().ok()
                })
                .collect()
        };
        // A thread lowers its priority as it starts: one just spawned may not have yet.
        let all_background =
            |seen: &[i64]| !seen.is_empty() && seen.iter().all(|&n| n >= background);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = niced();
        while !all_background(&seen) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            seen = niced();
        }
        drop(store);
        assert!(
            all_background(&seen),
            "mailbox-store threads' nice values: {seen:?}"
        );
    }

    #[tokio::test]
    async fn a_request_the_store_is_too_slow_for_is_given_up_and_not_run() {
        let limit = Duration::from_millis(300);
        let (store, _) = open(StoreLimits {
            answer_limit: limit,
            ..StoreLimits::default()
        });
        let m = MailboxId([8; 32]);
        // The batch of the relay's own upkeep (never given up) is held at its commit: the
        // store is stuck behind it.
        store.hold_commits(true);
        let upkeep = {
            let store = store.clone();
            tokio::spawn(async move { store.holdings(1).await })
        };
        store.until_a_commit_waits().await;
        // A deposit and a fetch queued behind it are given up once the limit has passed,
        // and answered (Busy, at the relay) instead of holding their places for as long as
        // the store takes.
        let started = tokio::time::Instant::now();
        let bounded = Duration::from_secs(10);
        let given_up =
            tokio::time::timeout(bounded, store.deposit(m, EnvelopeId([2; 16]), vec![2], 1))
                .await
                .expect("given up within the limit");
        assert!(
            matches!(given_up, Err(StoreError::Overloaded)),
            "{given_up:?}"
        );
        let fetched = tokio::time::timeout(bounded, store.fetch(m, 1))
            .await
            .expect("given up within the limit");
        assert!(
            matches!(fetched, Err(StoreError::Overloaded)),
            "{fetched:?}"
        );
        assert!(started.elapsed() >= limit);
        // Once the store catches up it skips what was given up: the envelope, whose sender
        // was told Busy, was never stored; one deposited now is.
        store.hold_commits(false);
        assert!(upkeep.await.unwrap().is_ok());
        let stored = tokio::time::timeout(bounded, async {
            loop {
                match store.deposit(m, EnvelopeId([3; 16]), vec![3], 1).await {
                    Err(StoreError::Overloaded) => {}
                    other => return other,
                }
            }
        })
        .await
        .expect("the store catches up");
        assert_eq!(stored.unwrap(), Deposited::Stored);
        let ids: Vec<EnvelopeId> = store
            .fetch(m, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![EnvelopeId([3; 16])]);
    }

    #[tokio::test]
    async fn beyond_its_queue_the_store_refuses_at_once() {
        let (store, _) = open(StoreLimits {
            queued_jobs: 2,
            ..StoreLimits::default()
        });
        let m = MailboxId([9; 32]);
        store.hold_commits(true);
        let deposit = |i: u8| store.begin_deposit(m, EnvelopeId([i; 16]), vec![i], 1);
        // Taken by the store thread, which is then held at its commit.
        let first = deposit(1).unwrap();
        store.until_a_commit_waits().await;
        // Two wait in the queue; the next is refused without waiting for anything.
        let waiting = [deposit(2).unwrap(), deposit(3).unwrap()];
        assert!(matches!(deposit(4), Err(StoreError::Overloaded)));
        let fetched = tokio::time::timeout(Duration::from_secs(1), store.fetch(m, 1)).await;
        assert!(
            matches!(fetched, Ok(Err(StoreError::Overloaded))),
            "refused at once: {fetched:?}"
        );
        // The relay's own upkeep still goes in, and is answered once the store moves on.
        let upkeep = {
            let store = store.clone();
            tokio::spawn(async move { store.holdings(1).await })
        };
        // Once the store moves on, the queue has room again.
        store.hold_commits(false);
        let holdings = upkeep.await.unwrap();
        assert!(holdings.is_ok(), "upkeep waited its turn: {holdings:?}");
        for w in waiting {
            assert_eq!(w.answer().await.unwrap(), Deposited::Stored);
        }
        assert_eq!(first.answer().await.unwrap(), Deposited::Stored);
        assert_eq!(store.fetch(m, 1).await.unwrap().len(), 3);
    }

    #[test]
    fn deposits_refused_into_empty_mailboxes_leave_no_counts_behind() {
        let limits = StoreLimits {
            total_bytes: 10,
            ..StoreLimits::default()
        };
        let mut worker = Worker::open(&scratch_db(), limits).unwrap();
        worker.begin().unwrap();
        let stored = worker.deposit(&MailboxId([1; 32]), &EnvelopeId([1; 16]), &[1; 10], 1);
        assert!(matches!(stored, Ok(Deposited::Stored)));
        // The store is full: deposits into other mailboxes, each new, are refused.
        for m in 2..=200u8 {
            let refused = worker.deposit(&MailboxId([m; 32]), &EnvelopeId([m; 16]), &[m], 1);
            assert!(matches!(refused, Err(StoreError::Full)));
        }
        worker.commit().unwrap();
        assert_eq!(
            worker.usage.len(),
            1,
            "only the mailbox that holds an envelope is counted in memory"
        );
    }

    /// A path for a new database, in a directory of its own.
    fn scratch_db() -> std::path::PathBuf {
        let dir = shallot_rt::scratch::path("store");
        shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
        dir.join("mailbox.db")
    }

    fn open(limits: StoreLimits) -> (Store, std::path::PathBuf) {
        let path = scratch_db();
        (Store::open(&path, limits).unwrap(), path)
    }

    #[tokio::test]
    async fn deposit_fetch_ack() {
        let (store, _) = open(StoreLimits::default());
        let m = MailboxId([1; 32]);
        assert_eq!(
            store
                .deposit(m, EnvelopeId([1; 16]), b"one".to_vec(), 100)
                .await
                .unwrap(),
            Deposited::Stored
        );
        assert_eq!(
            store
                .deposit(m, EnvelopeId([2; 16]), b"two".to_vec(), 101)
                .await
                .unwrap(),
            Deposited::Stored
        );
        // One after the other: each its own commit.
        let counts = store.commit_counts();
        assert_eq!((counts.commits, counts.jobs), (2, 2));
        assert!(counts.busy > std::time::Duration::ZERO);
        assert_eq!(
            store
                .deposit(m, EnvelopeId([1; 16]), b"one".to_vec(), 102)
                .await
                .unwrap(),
            Deposited::Duplicate
        );
        let got = store.fetch(m, 103).await.unwrap();
        assert_eq!(
            got,
            vec![
                (EnvelopeId([1; 16]), b"one".to_vec()),
                (EnvelopeId([2; 16]), b"two".to_vec())
            ]
        );
        assert!(store
            .fetch(MailboxId([9; 32]), 103)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .ack(m, vec![EnvelopeId([1; 16]), EnvelopeId([7; 16])], |_| {})
                .await
                .unwrap(),
            vec![EnvelopeId([1; 16])],
            "the ids deleted, not the ones that were not there"
        );
        assert_eq!(
            store
                .ack(MailboxId([9; 32]), vec![EnvelopeId([2; 16])], |_| {})
                .await
                .unwrap(),
            Vec::<EnvelopeId>::new(),
            "another mailbox's ack deletes nothing"
        );
        assert_eq!(store.fetch(m, 104).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn holdings_list_each_mailbox_once_with_its_oldest_envelope() {
        let (store, _) = open(StoreLimits::default());
        let (a, b) = (MailboxId([1; 32]), MailboxId([2; 32]));
        for (m, i, at) in [(b, 3u8, 50u64), (a, 1, 20), (b, 4, 40), (a, 2, 30)] {
            store
                .deposit(m, EnvelopeId([i; 16]), vec![i], at)
                .await
                .unwrap();
        }
        let held = store.holdings(60).await.unwrap();
        assert_eq!(
            held,
            vec![
                Holding {
                    mailbox: a,
                    oldest: 20,
                    ids: vec![EnvelopeId([1; 16]), EnvelopeId([2; 16])]
                },
                Holding {
                    mailbox: b,
                    oldest: 40,
                    ids: vec![EnvelopeId([4; 16]), EnvelopeId([3; 16])]
                },
            ]
        );
        // Expired envelopes are not held.
        let expiry = StoreLimits::default().expiry_secs;
        assert!(store.holdings(50 + expiry).await.unwrap().is_empty());
        store
            .ack(a, vec![EnvelopeId([1; 16])], |_| {})
            .await
            .unwrap();
        assert_eq!(store.holdings(60).await.unwrap()[0].oldest, 30);
    }

    #[tokio::test]
    async fn quotas_are_enforced() {
        let (store, _) = open(StoreLimits {
            envelopes_per_mailbox: 2,
            bytes_per_mailbox: 10,
            total_bytes: 15,
            ..StoreLimits::default()
        });
        let m = MailboxId([1; 32]);
        store
            .deposit(m, EnvelopeId([1; 16]), vec![0; 4], 1)
            .await
            .unwrap();
        store
            .deposit(m, EnvelopeId([2; 16]), vec![0; 4], 1)
            .await
            .unwrap();
        assert!(matches!(
            store.deposit(m, EnvelopeId([3; 16]), vec![0; 1], 1).await,
            Err(StoreError::Full)
        ));
        let n = MailboxId([2; 32]);
        assert!(matches!(
            store.deposit(n, EnvelopeId([1; 16]), vec![0; 11], 1).await,
            Err(StoreError::Full)
        ));
        store
            .deposit(n, EnvelopeId([2; 16]), vec![0; 7], 1)
            .await
            .unwrap();
        assert!(
            matches!(
                store.deposit(n, EnvelopeId([3; 16]), vec![0; 1], 1).await,
                Err(StoreError::Full)
            ),
            "total"
        );
        store
            .ack(m, vec![EnvelopeId([1; 16])], |_| {})
            .await
            .unwrap();
        store
            .deposit(n, EnvelopeId([3; 16]), vec![0; 1], 1)
            .await
            .unwrap();
    }

    /// An ACK given up (answered Overloaded) after the store carried it out still reports its
    /// deletion once committed, so that the relay learns the envelopes were held here.
    #[tokio::test]
    async fn an_ack_given_up_after_its_deletion_still_reports_it() {
        let (store, _) = open(StoreLimits {
            answer_limit: std::time::Duration::from_millis(200),
            ..StoreLimits::default()
        });
        let m = MailboxId([8; 32]);
        store
            .deposit(m, EnvelopeId([1; 16]), vec![1], 1)
            .await
            .unwrap();
        store.hold_commits(true);
        let (tx, rx) = std_mpsc::channel();
        let acking = {
            let store = store.clone();
            tokio::spawn(async move {
                let ids = vec![EnvelopeId([1; 16]), EnvelopeId([2; 16])];
                let report = move |deleted: &[EnvelopeId]| {
                    let _ = tx.send(deleted.to_vec());
                };
                store.ack(m, ids, report).await
            })
        };
        // Carried out, and held at its commit until the requester has given up.
        store.until_a_commit_waits().await;
        let given_up = acking.await.unwrap();
        assert!(
            matches!(given_up, Err(StoreError::Overloaded)),
            "{given_up:?}"
        );
        store.hold_commits(false);
        let reported = tokio::task::spawn_blocking(move || {
            rx.recv_timeout(std::time::Duration::from_secs(10))
        })
        .await
        .unwrap()
        .expect("the deletion is reported");
        assert_eq!(reported, vec![EnvelopeId([1; 16])]);
        assert!(store.fetch(m, 2).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn expiry_and_bundles() {
        let (store, _) = open(StoreLimits {
            expiry_secs: 10,
            bundles: 1,
            ..StoreLimits::default()
        });
        let m = MailboxId([1; 32]);
        store
            .deposit(m, EnvelopeId([1; 16]), b"x".to_vec(), 100)
            .await
            .unwrap();
        assert_eq!(store.fetch(m, 109).await.unwrap().len(), 1);
        assert!(store.fetch(m, 110).await.unwrap().is_empty());
        store.put_bundle(m, b"bundle".to_vec(), 200).await.unwrap();
        assert_eq!(
            store.get_bundle(m, 150).await.unwrap(),
            Some(b"bundle".to_vec())
        );
        // Replacing is allowed at the cap; a new mailbox's bundle is not.
        store.put_bundle(m, b"newer".to_vec(), 200).await.unwrap();
        assert!(matches!(
            store
                .put_bundle(MailboxId([2; 32]), b"x".to_vec(), 200)
                .await,
            Err(StoreError::Full)
        ));
        assert_eq!(
            store.get_bundle(m, 150).await.unwrap(),
            Some(b"newer".to_vec())
        );
        assert_eq!(store.expire(200).await.unwrap(), 1);
        assert_eq!(store.get_bundle(m, 150).await.unwrap(), None);
    }

    #[tokio::test]
    async fn envelopes_survive_reopening() {
        let (store, path) = open(StoreLimits::default());
        store
            .deposit(MailboxId([5; 32]), EnvelopeId([5; 16]), b"kept".to_vec(), 1)
            .await
            .unwrap();
        drop(store);
        let again = Store::open(&path, StoreLimits::default()).unwrap();
        assert_eq!(
            again.fetch(MailboxId([5; 32]), 2).await.unwrap(),
            vec![(EnvelopeId([5; 16]), b"kept".to_vec())]
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
