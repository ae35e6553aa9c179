//! The chat's periodic work as independent tasks (`docs/spec.md` §10.7): fetching what waits
//! in this user's mailboxes, sending owed acknowledgements, retransmitting what is due, and
//! keeping the prekey bundle published. Each runs on its own timer, so a relay that never
//! answers holds up at most the task that asked it, and that only until the replica deadline
//! ([`MessengerConfig::replica_timeout`](super::MessengerConfig)).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shallot_rt::AbortOnDrop;
use tracing::debug;

use super::{Messenger, MessengerError};
use crate::mailbox::MailboxAccess;

/// One of the messenger's periodic jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Fetch and delete what waits in this user's mailboxes.
    Fetch,
    /// Send the end-to-end acknowledgements owed.
    Acks,
    /// Send again what is due, and report expired messages failed.
    Retransmit,
    /// Publish the prekey bundle when the epoch or the prekey changed.
    Bundles,
}

impl Job {
    /// Every job.
    pub const ALL: [Job; 4] = [Job::Fetch, Job::Acks, Job::Retransmit, Job::Bundles];

    /// How often the job runs when the others run every `every`: fetching, a fallback behind
    /// the subscriptions (and the way to the slack and previous-ring replicas, which have no
    /// subscription), six times less often.
    pub fn period(self, every: Duration) -> Duration {
        match self {
            Job::Fetch => every.saturating_mul(6),
            Job::Acks | Job::Retransmit | Job::Bundles => every,
        }
    }
}

impl<M: MailboxAccess> Messenger<M> {
    /// Runs one round of `job`.
    pub async fn run_job(&self, job: Job) -> Result<(), MessengerError> {
        match job {
            Job::Fetch => self.fetch_waiting().await.map(|_| ()),
            Job::Acks => self.send_acks().await,
            Job::Retransmit => self.retransmit_due().await.map(|_| ()),
            Job::Bundles => self.ensure_bundle_published().await,
        }
    }

    /// Starts every [`Job`] as its own task, each running once every [`Job::period`] of
    /// `every`; `failed` is told of each failure. They stop when the returned handles are dropped.
    pub fn spawn_periodic(
        self: &Arc<Self>,
        every: Duration,
        failed: impl Fn(Job, MessengerError) + Send + Sync + 'static,
    ) -> Vec<AbortOnDrop<()>> {
        let failed = Arc::new(failed);
        Job::ALL
            .into_iter()
            .map(|job| {
                let (me, failed) = (self.clone(), failed.clone());
                spawn_every(job.period(every), move || {
                    let (me, failed) = (me.clone(), failed.clone());
                    async move {
                        if let Err(e) = me.run_job(job).await {
                            debug!(?job, "periodic work: {e}");
                            failed(job, e);
                        }
                    }
                })
            })
            .collect()
    }
}

/// Runs `round` every `every` (the first after one wait), until the handle is dropped.
fn spawn_every<F, Fut>(every: Duration, round: F) -> AbortOnDrop<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    AbortOnDrop::new(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            round().await;
        }
    }))
}
