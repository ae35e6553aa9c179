//! Sending (`docs/spec.md` §10.7): seal a message for a contact, deposit it on every relay that
//! keeps the contact's mailbox, and count it sent once a majority of them (two of three) have
//! it on disk. Unacknowledged messages are sent again with exponential backoff until their
//! lifetime ends, when they are reported failed. Acknowledgements of received messages go back
//! the same way.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use futures_util::future::join_all;
use shallot_crypto::keys::RelayId;
use shallot_crypto::ratchet::Header;
use shallot_proto::mailbox::MailboxId;

use super::{Messenger, MessengerEvent};
use crate::e2e::session::{self, SessionError};
use crate::e2e::wire::{Content, MAX_ACK_IDS, MAX_TEXT_LEN};
use crate::err::{BundleError, MessengerError};
use crate::ids::MessageId;
use crate::mailbox::{Isolation, MailboxAccess, MailboxOps};
use crate::store::{OutState, Store, StoreError, StoredMessage};
use shallot_crypto::sealed::EnvelopeKey;
use tracing::debug;

/// What sending achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The message's id.
    pub id: MessageId,
    /// Mailbox relays that stored it.
    pub stored: u8,
    /// Mailbox relays asked.
    pub wanted: u8,
}

/// What to do when an attempt stores the message on too few mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Report it failed now (the command line: the user sees the reason and may retry).
    Fail,
    /// Try again later, up to three attempts (the chat, which keeps running).
    Retry,
}

/// Mailboxes that must store a message for it to count as sent: two, or all if fewer exist.
fn needed(wanted: u8) -> u8 {
    wanted.min(2)
}

/// What depositing one envelope on a mailbox's replicas achieved.
#[derive(Debug)]
pub struct DepositOutcome {
    /// Replicas asked.
    pub wanted: u8,
    /// Replicas that stored it.
    pub stored: u8,
    /// Why each of the others did not.
    pub failures: Vec<(RelayId, MessengerError)>,
}

impl DepositOutcome {
    /// Whether enough replicas stored it for it to count as sent.
    pub fn enough(&self) -> bool {
        self.stored >= needed(self.wanted)
    }
}

impl fmt::Display for DepositOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message stored on only {} of {} mailboxes",
            self.stored, self.wanted
        )?;
        let mut reasons: Vec<String> = self.failures.iter().map(|(_, e)| e.to_string()).collect();
        reasons.dedup();
        if !reasons.is_empty() {
            write!(f, ": {}", reasons.join("; "))?;
        }
        Ok(())
    }
}

/// Where one envelope is to be deposited (`docs/spec.md` §10.7).
struct DepositPlan {
    /// The recipient's mailbox for this epoch.
    mailbox: MailboxId,
    /// Its replicas, then the previous ring's while it settles.
    relays: Vec<RelayId>,
    /// How many of `relays`, from the first, are this ring's replicas (counted).
    counted: usize,
    /// When all that is asked of each replica (its circuit, then the deposit) must be done.
    deadline: tokio::time::Instant,
}

/// A replica and the one-shot circuit to it, or why there is none.
type DepositLink<M> = (
    RelayId,
    Result<Arc<<M as MailboxAccess>::Link>, MessengerError>,
);

impl<M: MailboxAccess> Messenger<M> {
    /// Sends `text` to the contact called `name`. Returns once the message is stored on at
    /// least two of the contact's mailbox relays; otherwise the error says why.
    pub async fn send(
        &self,
        name: &str,
        text: &str,
        on_failure: OnFailure,
    ) -> Result<SendReport, MessengerError> {
        if text.trim().is_empty() {
            return Err(MessengerError::EmptyText);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(MessengerError::TextTooLong {
                len: text.len(),
                max: MAX_TEXT_LEN,
            });
        }
        let contact = self
            .store()
            .contact(name)?
            .ok_or_else(|| StoreError::NoSuchContact(name.to_string()))?;
        let id = MessageId::random(&mut rand::thread_rng());
        tracing::trace!(target: "shallot_trace", "sender: send begins");
        // Circuits built ahead are refilled once the send ends (its outcome recorded), or at
        // most one prefix each 0.5 s meanwhile: a refill's handshakes would compete with the
        // message's commit and deposits for the CPU.
        let _hold = self.mailboxes.hold_background();
        let now = self.now();
        let peer = *contact.address.key();
        let content = Content::Text {
            id,
            sent_at: now,
            text: text.to_string(),
        };
        // With a key taken while the user typed, the message leaves at once and is recorded
        // meanwhile. Otherwise, with a session already there, recording the message and
        // advancing the session are one transaction: one flush to disk before the message
        // leaves. The deposit circuits are built meanwhile: the commit runs on a blocking
        // thread, in a group with any other commit waiting (`store::group`), which also
        // scrubs the log afterwards, out of the message's way.
        let sessions = self.store().sessions(peer.as_bytes())?;
        let plan = (!sessions.is_empty()).then(|| self.deposit_plan(&peer));
        let ready = match &plan {
            Some(Ok(_)) => self.ready_keys.take(peer.as_bytes()),
            _ => None,
        };
        // A key whose session changed since it was taken (by this process or another) is
        // dropped unused: the message is sealed as below.
        let ready = ready.filter(|key| key.is_current(&sessions));
        drop(sessions);
        tracing::trace!(target: "shallot_trace", "sender: planned");
        if let (Some(Ok(plan)), Some(ready)) = (&plan, ready) {
            let (text, expires) = (
                text.to_string(),
                now + self.config.message_lifetime.as_secs(),
            );
            let record = move |store: &Store| {
                store.insert_outgoing(&id, peer.as_bytes(), &text, now, expires)?;
                store
                    .message(&id)?
                    .ok_or_else(|| StoreError::Corrupt("message vanished".into()))
            };
            let (msg, outcome) = self
                .send_ready(plan, ready, &contact.name, &content, record)
                .await?;
            return self.record_attempt(&msg, 0, on_failure, outcome).await;
        }
        let links = async {
            match &plan {
                Some(Ok(plan)) => Some(self.deposit_links(plan).await),
                _ => None,
            }
        };
        tracing::trace!(target: "shallot_trace", "sender: commit queued");
        let commit = {
            let me = self.me.clone();
            let text = text.to_string();
            let content = content.clone();
            let name = contact.name.clone();
            let expires = now + self.config.message_lifetime.as_secs();
            self.commits.run(move |store| {
                store.insert_outgoing(&id, peer.as_bytes(), &text, now, expires)?;
                let sealed = if store.sessions(peer.as_bytes())?.is_empty() {
                    None
                } else {
                    Some(seal_with(store, &me, &peer, &content, None, &name, now)?)
                };
                let msg = store
                    .message(&id)?
                    .ok_or_else(|| StoreError::Corrupt("message vanished".into()))?;
                tracing::trace!(target: "shallot_trace", "sender: sealed and recorded, committing");
                Ok::<_, MessengerError>((msg, sealed))
            })
        };
        let (links, committed) = futures_util::future::join(links, commit).await;
        let (msg, sealed) = committed?;
        tracing::trace!(target: "shallot_trace", "sender: committed; depositing");
        self.emit(MessengerEvent::Message(msg.clone()));
        let outcome = match (sealed, plan, links) {
            (Some(envelope), Some(Ok(plan)), Some(links)) => {
                Ok(self.deposit_on(&plan, links, envelope).await)
            }
            (Some(_), Some(Err(e)), _) => Err(e),
            (Some(envelope), _, _) => self.deposit_everywhere(&peer, envelope).await,
            (None, _, _) => self.seal_and_deposit(&msg.peer, &content).await,
        };
        self.record_attempt(&msg, 0, on_failure, outcome).await
    }

    /// Sends a message sealed with a key taken while the user typed ([`super::ready`]): the
    /// session was saved past that key then, so the envelope leaves at once, and the message
    /// is recorded by `record` (one commit) while it is deposited. Returns the recorded
    /// message and the deposit's outcome.
    async fn send_ready<F>(
        &self,
        plan: &DepositPlan,
        ready: session::ReadyKey,
        name: &str,
        content: &Content,
        record: F,
    ) -> Result<(StoredMessage, Result<DepositOutcome, MessengerError>), MessengerError>
    where
        F: FnOnce(&Store) -> Result<StoredMessage, StoreError> + Send + 'static,
    {
        let record = async {
            let recorded = self.commits.run(record).await;
            if let Ok(msg) = &recorded {
                self.emit(MessengerEvent::Message(msg.clone()));
            }
            recorded
        };
        let deposit = async {
            let envelope = session::seal_ready(&self.me, ready, content)
                .map_err(|e| session_error(e, name))?;
            tracing::trace!(target: "shallot_trace", "sender: sealed with a key taken ahead; depositing");
            let links = self.deposit_links(plan).await;
            Ok(self.deposit_on(plan, links, envelope).await)
        };
        let (recorded, outcome) = futures_util::future::join(record, deposit).await;
        match (recorded, outcome) {
            (Ok(msg), outcome) => Ok((msg, outcome)),
            // It left, but there is no record to keep its outcome in or to retransmit from:
            // the user must not take it for unsent and send it again.
            (Err(reason), Ok(outcome)) if outcome.stored > 0 => {
                Err(MessengerError::SentNotRecorded {
                    stored: outcome.stored,
                    wanted: outcome.wanted,
                    reason,
                })
            }
            (Err(reason), _) => Err(reason.into()),
        }
    }

    /// Takes the next message key of `peer`'s session ahead of its message, in a commit of
    /// its own, unless one is ready or being taken ([`super::ready`]); the user reported
    /// writing to `peer` at `typed_at`. Needs a Tokio runtime; without one nothing is taken.
    pub(super) fn take_key_ahead(&self, peer: VerifyingKey, typed_at: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(take) = self.ready_keys.begin(peer.as_bytes(), typed_at) else {
            return;
        };
        let (commits, keys) = (self.commits.clone(), self.ready_keys.clone());
        runtime.spawn(async move {
            // The envelope's Diffie-Hellman is done here, not in the commit: a transaction
            // of the group commit may carry others' work, which it would hold up.
            let envelope = EnvelopeKey::new(&mut rand::thread_rng(), &peer);
            let taken = match envelope {
                Ok(envelope) => {
                    commits
                        .run(move |store| session::take_ready_key(store, &peer, envelope))
                        .await
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = &taken {
                debug!("no message key taken ahead: {e}");
            }
            keys.taken(peer.as_bytes(), take, taken.ok().flatten());
        });
    }

    /// Whether a message to the contact called `name` would leave with a key taken while
    /// the user typed ([`Messenger::composing`]).
    pub fn key_ready_for(&self, name: &str) -> Result<bool, MessengerError> {
        Ok(self.ready_key_header(name)?.is_some())
    }

    /// The ratchet header a message to the contact called `name` would carry with the key
    /// taken while the user typed, if one is ready (for tests and the bench: which key a
    /// message left with; the header travels inside the sealed envelope).
    pub fn ready_key_header(&self, name: &str) -> Result<Option<Header>, MessengerError> {
        let contact = self
            .store()
            .contact(name)?
            .ok_or_else(|| StoreError::NoSuchContact(name.to_string()))?;
        Ok(self
            .ready_keys
            .peek(contact.address.key().as_bytes(), |k| k.header()))
    }

    /// The user has begun typing to the contact called `name`: gets a circuit ready to each
    /// relay the message will be deposited on (`docs/spec.md` §11.3, circuits finished
    /// ahead), so that sending it waits for no circuit. Cheap to repeat: a relay with one
    /// ready or being finished is skipped. Each such circuit still carries one request only.
    pub fn composing(&self, name: &str) -> Result<(), MessengerError> {
        let contact = self
            .store()
            .contact(name)?
            .ok_or_else(|| StoreError::NoSuchContact(name.to_string()))?;
        let plan = self.deposit_plan(contact.address.key())?;
        for relay in plan.relays {
            self.mailboxes().prepare(relay);
        }
        self.take_key_ahead(*contact.address.key(), self.now());
        Ok(())
    }

    /// Sends a failed or stuck message again now (the chat's retry key).
    pub async fn retry(&self, id: &MessageId) -> Result<SendReport, MessengerError> {
        let msg = self
            .store()
            .message(id)?
            .filter(|m| m.outgoing)
            .ok_or_else(|| StoreError::Corrupt("no such outgoing message".into()))?;
        self.attempt(&msg, 0, OnFailure::Retry).await
    }

    /// One delivery attempt; records the outcome and tells the event listener.
    async fn attempt(
        &self,
        msg: &StoredMessage,
        attempt: u32,
        on_failure: OnFailure,
    ) -> Result<SendReport, MessengerError> {
        let content = Content::Text {
            id: msg.id,
            sent_at: msg.sent_at,
            text: msg.text.clone(),
        };
        let outcome = self.seal_and_deposit(&msg.peer, &content).await;
        self.record_attempt(msg, attempt, on_failure, outcome).await
    }

    /// Records the outcome of a delivery attempt (in a group commit) and tells the event
    /// listener.
    async fn record_attempt(
        &self,
        msg: &StoredMessage,
        attempt: u32,
        on_failure: OnFailure,
        outcome: Result<DepositOutcome, MessengerError>,
    ) -> Result<SendReport, MessengerError> {
        let now = self.now();
        let (state, next, result) = match outcome {
            Ok(outcome) if outcome.enough() => {
                let backoff = backoff(
                    self.config.retransmit_after,
                    self.config.retransmit_max,
                    attempt,
                );
                (
                    OutState::Stored(outcome.stored),
                    Some(now + backoff.as_secs()),
                    Ok(SendReport {
                        id: msg.id,
                        stored: outcome.stored,
                        wanted: outcome.wanted,
                    }),
                )
            }
            Ok(outcome) => {
                let err = MessengerError::NotStored(outcome);
                self.failed_attempt(msg, err, attempt, on_failure, now)
            }
            Err(err) => self.failed_attempt(msg, err, attempt, on_failure, now),
        };
        self.set_outgoing_state(msg.id, state, next).await?;
        tracing::trace!(target: "shallot_trace", "sender: outcome recorded");
        result
    }

    /// Records `state` for the outgoing message `id`, with when to try again (`None`: no
    /// more attempts), in a job of the group commit, and tells the listener; neither if the
    /// message was delivered meanwhile (its acknowledgement may even be taken in the batch
    /// this waits for): a delivered message stays delivered, and is shown so.
    async fn set_outgoing_state(
        &self,
        id: MessageId,
        state: OutState,
        next: Option<u64>,
    ) -> Result<(), MessengerError> {
        let recorded = state.clone();
        let changed = self
            .commits
            .run(move |store| store.update_outgoing(&id, &recorded, next))
            .await?;
        if changed {
            self.emit(MessengerEvent::Delivery { id, state });
        }
        Ok(())
    }

    /// What a failed attempt leaves: a message already stored somewhere stays stored and is
    /// retransmitted on schedule (it may still be delivered); one never stored is retried soon
    /// (in the chat, up to three attempts, while the error is one a retry may fix) or
    /// reported failed.
    fn failed_attempt(
        &self,
        msg: &StoredMessage,
        err: MessengerError,
        attempt: u32,
        on_failure: OnFailure,
        now: u64,
    ) -> (OutState, Option<u64>, Result<SendReport, MessengerError>) {
        if let Some(OutState::Stored(k)) = msg.state {
            let wait = backoff(
                self.config.retransmit_after,
                self.config.retransmit_max,
                attempt,
            );
            return (OutState::Stored(k), Some(now + wait.as_secs()), Err(err));
        }
        match on_failure {
            OnFailure::Retry if attempt < 2 && err.is_retryable() => {
                (OutState::Sending, Some(now + 30), Err(err))
            }
            _ => (OutState::Failed(err.to_string()), None, Err(err)),
        }
    }

    /// Seals `content` for `peer` (fetching its bundle first if there is no session yet) and
    /// deposits it on every relay keeping `peer`'s mailbox.
    pub(crate) async fn seal_and_deposit(
        &self,
        peer: &[u8; 32],
        content: &Content,
    ) -> Result<DepositOutcome, MessengerError> {
        let key = VerifyingKey::from_bytes(peer)
            .map_err(|_| StoreError::Corrupt("a stored contact key is invalid".into()))?;
        let name = self
            .store()
            .contact_by_key(peer)?
            .map(|c| c.name)
            .unwrap_or_else(|| shallot_crypto::Address::new(key).to_string());
        let needs_bundle = self.store().sessions(peer)?.is_empty();
        let bundle = if needs_bundle {
            Some(self.fetch_bundle(&name, &key).await?)
        } else {
            None
        };
        let (me, content, now) = (self.me.clone(), content.clone(), self.now());
        let envelope = self
            .commits
            .run(move |store| seal_with(store, &me, &key, &content, bundle.as_ref(), &name, now))
            .await?;
        self.deposit_everywhere(&key, envelope).await
    }

    /// Deposits an envelope on all of `peer`'s mailbox replicas for this epoch, at once, each
    /// on a circuit of its own and within its own deadline; while the ring settles, also on
    /// the replicas the previous consensus named (not counted).
    async fn deposit_everywhere(
        &self,
        peer: &VerifyingKey,
        envelope: Vec<u8>,
    ) -> Result<DepositOutcome, MessengerError> {
        let plan = self.deposit_plan(peer)?;
        let links = self.deposit_links(&plan).await;
        Ok(self.deposit_on(&plan, links, envelope).await)
    }

    /// Where an envelope for `peer` goes now: its mailbox for this epoch, that mailbox's
    /// replicas, and (while the ring settles) the previous consensus's replicas.
    fn deposit_plan(&self, peer: &VerifyingKey) -> Result<DepositPlan, MessengerError> {
        let consensus = self.consensus()?;
        let (_, epoch) = self.epoch_now(&consensus);
        let (mailbox, replicas, extra) = self.deposit_targets(&consensus, peer, epoch)?;
        Ok(DepositPlan {
            mailbox,
            counted: replicas.len(),
            relays: replicas.into_iter().chain(extra).collect(),
            deadline: self.replica_deadline(),
        })
    }

    /// A one-shot circuit to each relay of `plan`, all asked for at once, each within the
    /// replica deadline; in the plan's order.
    async fn deposit_links(&self, plan: &DepositPlan) -> Vec<DepositLink<M>> {
        join_all(plan.relays.iter().map(|&relay| async move {
            let link = self
                .on_replica_until(plan.deadline, async {
                    self.link(relay, Isolation::Deposit).await
                })
                .await;
            tracing::trace!(target: "shallot_trace", replica = %relay, "sender: deposit circuit ready");
            (relay, link)
        }))
        .await
    }

    /// Deposits `envelope` over `links` (got by [`Self::deposit_links`] for `plan`), each
    /// request within its own deadline, and counts the replicas of the current ring that
    /// stored it.
    async fn deposit_on(
        &self,
        plan: &DepositPlan,
        links: Vec<DepositLink<M>>,
        envelope: Vec<u8>,
    ) -> DepositOutcome {
        let deposits = links.into_iter().map(|(relay, link)| {
            let envelope = envelope.clone();
            async move {
                let deposited = self.on_replica_until(plan.deadline, async {
                    let r = link?
                        .deposit(plan.mailbox, envelope, self.config.request_timeout)
                        .await;
                    tracing::trace!(target: "shallot_trace", replica = %relay, "sender: deposit answered");
                    r.map_err(MessengerError::from)
                });
                (relay, deposited.await)
            }
        });
        let mut outcome = DepositOutcome {
            wanted: u8::try_from(plan.counted).unwrap_or(u8::MAX),
            stored: 0,
            failures: Vec::new(),
        };
        for (i, (relay, r)) in join_all(deposits).await.into_iter().enumerate() {
            match r {
                Ok(()) if i < plan.counted => outcome.stored += 1,
                Ok(()) => {}
                Err(e) if i < plan.counted => outcome.failures.push((relay, e)),
                Err(e) => debug!("deposit on a replica of the previous ring: {e}"),
            }
        }
        outcome
    }

    /// Sends again every message due for retransmission, and reports failed those whose
    /// lifetime is over. Returns how many were handled.
    pub async fn retransmit_due(&self) -> Result<usize, MessengerError> {
        let now = self.now();
        let due = self.store().due_outgoing(now)?;
        let n = due.len();
        for (msg, attempts, expires) in due {
            if now >= expires {
                let state = OutState::Failed("not acknowledged before it expired".into());
                self.set_outgoing_state(msg.id, state, None).await?;
                continue;
            }
            // A failure here is recorded on the message; carry on with the others.
            let _ = self.attempt(&msg, attempts, OnFailure::Retry).await;
        }
        Ok(n)
    }

    /// Sends the acknowledgements owed soon, on a task of its own: at most one such task runs,
    /// and one that is running when more are owed goes round again, so that a burst of
    /// messages is acknowledged in a few ACK contents rather than one each.
    pub(crate) fn acks_soon(self: &Arc<Self>) {
        self.acks_wanted.store(true, Ordering::SeqCst);
        if self.acks_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.acks_wanted.store(false, Ordering::SeqCst);
                let _ = me.send_acks().await;
                me.acks_running.store(false, Ordering::SeqCst);
                // Owed since the pass began: go round again unless another task took over.
                if !me.acks_wanted.load(Ordering::SeqCst)
                    || me.acks_running.swap(true, Ordering::SeqCst)
                {
                    break;
                }
            }
        });
    }

    /// Sends the end-to-end acknowledgements owed to contacts (strangers' messages are
    /// acknowledged only once they are accepted as contacts).
    pub async fn send_acks(&self) -> Result<(), MessengerError> {
        let owed = self.store().pending_acks()?;
        for (peer, ids) in owed {
            if self.store().contact_by_key(&peer)?.is_none() {
                continue;
            }
            for chunk in ids.chunks(MAX_ACK_IDS) {
                let content = Content::Ack {
                    ids: chunk.to_vec(),
                };
                match self.seal_and_deposit(&peer, &content).await {
                    // Forgotten in a commit of the group (one flush for the chunk, shared
                    // with whatever else waits), not on the async runtime, whose thread would
                    // otherwise wait for the disk with every task queued behind it.
                    Ok(outcome) if outcome.stored > 0 => {
                        let chunk = chunk.to_vec();
                        self.commits
                            .run(move |store| store.acks_sent(&peer, &chunk))
                            .await?
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("acknowledgement not sent: {e}"),
                }
            }
        }
        Ok(())
    }
}

/// Seals `content` for `peer` in `store` at `now`, with the errors a user should see.
fn seal_with(
    store: &crate::store::Store,
    me: &shallot_crypto::keys::IdentityKeypair,
    peer: &VerifyingKey,
    content: &Content,
    bundle: Option<&shallot_crypto::x3dh::PrekeyBundle>,
    name: &str,
    now: u64,
) -> Result<Vec<u8>, MessengerError> {
    session::seal_for(store, me, peer, content, bundle, now).map_err(|e| session_error(e, name))
}

/// A sealing error as the messenger reports it, for the contact called `name`.
fn session_error(e: SessionError, name: &str) -> MessengerError {
    match e {
        SessionError::Store(s) => MessengerError::Store(s),
        SessionError::Bundle(x) => MessengerError::NoBundle {
            name: name.to_string(),
            reason: BundleError::Refused(x),
        },
        other => MessengerError::NoBundle {
            name: name.to_string(),
            reason: BundleError::Session(other),
        },
    }
}

/// The wait before retransmission number `attempt + 1`: `base` doubled each time, at most
/// `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(max)
}
