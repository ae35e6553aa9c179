//! Receiving (`docs/spec.md` §9.3, §10.7): fetch or subscribe to this user's mailboxes on each
//! relay that keeps them, open each envelope once (copies from the three replicas and replays
//! are recognised by envelope id, then by message id), record what it says, and delete it at
//! the relay only once it is safely in the local store. At an epoch change the previous
//! epochs' mailboxes are drained too.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::keys::RelayId;
use shallot_rt::{lock, AbortOnDrop};
use tracing::debug;

use super::{Messenger, MessengerError, MessengerEvent};
use crate::e2e::session::{self, Opened};
use crate::e2e::wire::Content;
use crate::ids::EnvelopeId;
use crate::mailbox::{Isolation, MailboxAccess, MailboxOps};
use crate::store::strangers::StrangerLimits;
use crate::store::Store;
use shallot_crypto::keys::IdentityKeypair;
use shallot_proto::mailbox::{MailboxId, MAX_ACK_IDS};

/// Epochs back that are drained when a client has been away.
const DRAIN_EPOCHS: u64 = 7;

/// Seconds after the user last reported writing to a contact during which a key taken ahead
/// and dropped (a message from the contact took a ratchet step) is taken again. The chat
/// reports typing to a contact at most every 30 s while the draft is edited, so a user still
/// writing has reported within this; an abandoned draft stops costing keys after it.
pub const RETAKE_WITHIN: u64 = 60;

/// What became of one envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// A message not seen before.
    NewMessage,
    /// An acknowledgement, or a repeat of a message already held.
    Known,
    /// This envelope was seen before (another replica's copy, or a replay).
    Duplicate,
    /// It could not be opened (changed, not for us, or from a forgotten session).
    Rejected,
}

impl<M: MailboxAccess> Messenger<M> {
    /// Opens and records envelopes from this user's mailboxes as they arrive, pushed or
    /// fetched; what became of each, in order. A store error fails them all, and none is
    /// recorded. They are recorded on a blocking thread, in one transaction with whatever
    /// else waits to be committed (the copies the other replicas pushed, messages being
    /// sent), so neither the async runtime nor the other subscriptions wait for the disk.
    /// What they say is shown as soon as they are opened and recorded, before the commit
    /// ends: the mailbox relays (which push an envelope before they have stored it), once
    /// their own commits are done, keep them on disk until this client acknowledges them,
    /// and it does so only once this returns, its commit done. (Should the commit fail, they
    /// come again and are shown again; should the relays have refused them or failed to
    /// commit them too, the sender was told so.)
    pub async fn handle_arrived(
        &self,
        envelopes: Vec<(EnvelopeId, Vec<u8>)>,
    ) -> Result<Vec<Handled>, MessengerError> {
        tracing::trace!(target: "shallot_trace", n = envelopes.len(), "recipient: envelopes in hand");
        let recording = self.recording();
        let listener = lock(&self.events).clone();
        let (handled, retake) = self
            .commits
            .run(move |store| {
                tracing::trace!(target: "shallot_trace", "recipient: job runs");
                let mut after = Recorded::default();
                let handled = recording.record_all(store, &envelopes, &mut after)?;
                tracing::trace!(target: "shallot_trace", "recipient: recorded, shown before the commit");
                if let Some(tx) = listener {
                    for e in after.events {
                        let _ = tx.send(e);
                    }
                }
                Ok::<_, MessengerError>((handled, after.retake))
            })
            .await?;
        tracing::trace!(target: "shallot_trace", "recipient: committed");
        self.take_keys_again(&retake);
        Ok(handled)
    }

    /// Takes a new key ahead for each peer whose key was dropped because a message from it
    /// took a ratchet step, if the user reported writing to that peer within
    /// [`RETAKE_WITHIN`]: the reply then leaves without waiting for the disk, on the step
    /// that message called for. Called once that message's commit is done, so the take reads
    /// the session it left.
    fn take_keys_again(&self, peers: &[([u8; 32], u64)]) {
        let now = self.now();
        for (peer, typed_at) in peers {
            if now >= typed_at.saturating_add(RETAKE_WITHIN) {
                continue;
            }
            if let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(peer) {
                self.take_key_ahead(key, *typed_at);
            }
        }
    }

    /// What recording an envelope needs, apart from the store.
    fn recording(&self) -> Recording {
        Recording {
            me: self.me.clone(),
            strangers: self.config.strangers,
            now: self.now(),
            ready_keys: self.ready_keys.clone(),
        }
    }

    /// This user's mailbox key and replicas for `epoch`.
    fn my_mailbox(&self, epoch: u64) -> Result<(BlindedKeypair, Vec<RelayId>), MessengerError> {
        let consensus = self.consensus()?;
        let secs = consensus.params.epoch_secs.max(1);
        let key = BlindedKeypair::derive(&self.me, epoch, secs)?;
        let (_, replicas) = self.placement(&consensus, &self.me.public(), epoch)?;
        Ok((key, replicas))
    }

    /// This user's mailbox key for `epoch`, and every relay where its mail may wait (the
    /// replicas, the ring slack, and while the ring settles the previous consensus's
    /// replicas).
    fn my_read_targets(
        &self,
        epoch: u64,
    ) -> Result<(BlindedKeypair, Vec<RelayId>), MessengerError> {
        let consensus = self.consensus()?;
        let secs = consensus.params.epoch_secs.max(1);
        let key = BlindedKeypair::derive(&self.me, epoch, secs)?;
        let (_, targets) = self.read_targets(&consensus, &self.me.public(), epoch)?;
        Ok((key, targets))
    }

    /// Fetches, handles and deletes what waits on one replica of one epoch's mailbox.
    async fn drain(
        &self,
        epoch: u64,
        relay: RelayId,
        key: &BlindedKeypair,
    ) -> Result<usize, MessengerError> {
        let mailbox = MailboxId(key.public().to_bytes());
        let link = self.link(relay, Isolation::Owner(mailbox)).await?;
        let waiting = link.fetch(key, self.config.request_timeout).await?;
        let mut new = 0;
        for chunk in waiting.chunks(MAX_ACK_IDS) {
            let handled = self.handle_arrived(chunk.to_vec()).await?;
            new += handled
                .iter()
                .filter(|h| **h == Handled::NewMessage)
                .count();
            let done = chunk.iter().map(|(id, _)| *id).collect();
            link.ack(key, done, self.config.request_timeout).await?;
        }
        debug!(epoch, "drained a mailbox replica");
        Ok(new)
    }

    /// One pass over this user's mailboxes (the current epoch, and those since the last pass,
    /// up to a week back): handles and deletes everything waiting, then sends the
    /// acknowledgements owed and any retransmissions due. Returns the new messages.
    pub async fn sync(&self) -> Result<usize, MessengerError> {
        let new = self.fetch_waiting().await?;
        self.send_acks().await?;
        self.retransmit_due().await?;
        Ok(new)
    }

    /// Handles and deletes everything waiting in this user's mailboxes (the current epoch,
    /// and those since the last pass, up to a week back), each relay on its own within its
    /// deadline. Succeeds if at least one relay was read. Returns the new messages.
    pub async fn fetch_waiting(&self) -> Result<usize, MessengerError> {
        let consensus = self.consensus()?;
        let (_, epoch) = self.epoch_now(&consensus);
        let last: Option<u64> = self
            .store()
            .get("synced_epoch")?
            .and_then(|v| v.try_into().ok())
            .map(u64::from_be_bytes);
        let first = last
            .unwrap_or(epoch)
            .max(epoch.saturating_sub(DRAIN_EPOCHS))
            .min(epoch.saturating_sub(1));
        let mut new = 0;
        let mut reached = 0;
        let mut last_error = None;
        for e in first..=epoch {
            let (key, targets) = self.my_read_targets(e)?;
            let drains = targets.iter().map(|r| async {
                let drained = self.on_replica(self.drain(e, *r, &key)).await;
                self.note_answer(*r, &drained);
                drained
            });
            for r in join_all(drains).await {
                match r {
                    Ok(n) => {
                        new += n;
                        reached += 1;
                    }
                    Err(err) => last_error = Some(err),
                }
            }
        }
        if reached == 0 {
            return Err(last_error.unwrap_or(MessengerError::NoMailboxes));
        }
        // Envelopes expire at the relays within a week and session starts cannot open once
        // their prekey is gone (three weeks): older records are of no more use.
        let month_ago = self.now().saturating_sub(30 * 86_400);
        self.commits
            .run(move |store| {
                store.set("synced_epoch", &epoch.to_be_bytes())?;
                store.forget_seen_before(month_ago)
            })
            .await?;
        Ok(new)
    }

    /// Keeps this user subscribed to its current mailbox on every replica, handling each
    /// envelope as it is pushed and deleting it once recorded; resubscribes when a circuit
    /// fails and moves to the new mailbox at each epoch change. Runs until aborted.
    pub fn spawn_receiver(self: &Arc<Self>) -> AbortOnDrop<()> {
        let me = self.clone();
        AbortOnDrop::new(tokio::spawn(async move {
            let subscribed = Arc::new(AtomicU8::new(0));
            loop {
                let Ok(consensus) = me.consensus() else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                let (secs, epoch) = me.epoch_now(&consensus);
                let replicas = match me.my_mailbox(epoch) {
                    Ok((_, r)) => r,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                // Owned here: they stop at the epoch's end, or when this task is aborted.
                let tasks: Vec<AbortOnDrop<()>> = replicas
                    .into_iter()
                    .map(|relay| {
                        let sub = subscription(me.clone(), epoch, relay, subscribed.clone());
                        AbortOnDrop::new(tokio::spawn(sub))
                    })
                    .collect();
                // Until the epoch ends; then drain what the old mailbox still holds.
                let until_next = ((epoch + 1) * secs).saturating_sub(me.now());
                tokio::time::sleep(Duration::from_secs(until_next) + Duration::from_millis(500))
                    .await;
                drop(tasks);
                subscribed.store(0, Ordering::Relaxed);
                if let Err(e) = me.fetch_waiting().await {
                    debug!("draining the previous epoch: {e}");
                }
            }
        }))
    }
}

/// What recording a batch of envelopes leaves to do.
#[derive(Default)]
struct Recorded {
    /// Events for the listener.
    events: Vec<MessengerEvent>,
    /// Peers whose key taken ahead was dropped, with when the user last reported writing
    /// to them: a new one may be taken once the batch is committed
    /// ([`Messenger::take_keys_again`]).
    retake: Vec<([u8; 32], u64)>,
}

/// Opens and records arriving envelopes inside a transaction: the identity, the limits on
/// strangers and the time, taken from the messenger beforehand.
struct Recording {
    me: Arc<IdentityKeypair>,
    strangers: StrangerLimits,
    now: u64,
    ready_keys: super::ready::ReadyKeys,
}

impl Recording {
    /// Keeps what strangers make the store hold within the configured limits, telling the
    /// user when something was dropped.
    fn limit_strangers(
        &self,
        store: &Store,
        events: &mut Vec<MessengerEvent>,
    ) -> Result<(), MessengerError> {
        let dropped = store.limit_strangers(&self.strangers)?;
        if dropped > 0 {
            events.push(MessengerEvent::Notice(
                crate::store::strangers::dropped_notice(dropped),
            ));
        }
        Ok(())
    }

    /// Records `envelopes` in order; what became of each.
    fn record_all(
        &self,
        store: &Store,
        envelopes: &[(EnvelopeId, Vec<u8>)],
        after: &mut Recorded,
    ) -> Result<Vec<Handled>, MessengerError> {
        envelopes
            .iter()
            .map(|(id, envelope)| self.record(store, id, envelope, after))
            .collect()
    }

    fn record(
        &self,
        store: &Store,
        id: &EnvelopeId,
        envelope: &[u8],
        after: &mut Recorded,
    ) -> Result<Handled, MessengerError> {
        let now = self.now;
        let events = &mut after.events;
        // The id is the hash of the bytes: a relay that sends other bytes under a real
        // envelope's id gets them refused here, without the genuine copies being marked seen.
        if EnvelopeId::of(envelope) != *id {
            debug!("a relay sent an envelope under the wrong id");
            return Ok(Handled::Rejected);
        }
        if !store.first_sight_of_envelope(id, now)? {
            return Ok(Handled::Duplicate);
        }
        let Opened {
            sender,
            content,
            stepped,
        } = match session::open(store, &self.me, envelope, now) {
            Ok(opened) => opened,
            // The store failing is not the envelope's fault: the batch fails, unacknowledged,
            // and the envelope comes again.
            Err(session::SessionError::Store(e)) => return Err(e.into()),
            Err(e) => {
                debug!("envelope refused: {e}");
                return Ok(Handled::Rejected);
            }
        };
        tracing::trace!(target: "shallot_trace", "recipient: opened");
        // A key taken while the user typed to this peer predates the ratchet step this
        // message took: the next message takes a fresh one, with the step it calls for.
        // (Without a step, the key stays good: `ReadyKey::is_current`.)
        if stepped {
            if let Some(typed_at) = self.ready_keys.forget(&sender) {
                after.retake.retain(|(peer, _)| *peer != sender);
                after.retake.push((sender, typed_at));
            }
        }
        match content {
            Content::Text { id, sent_at, text } => {
                let new = store.insert_incoming(&id, &sender, &text, sent_at, now)?;
                store.queue_ack(&sender, &id)?;
                let stranger = store.contact_by_key(&sender)?.is_none();
                if stranger && !store.is_ignored(&sender)? {
                    store.note_request(&sender, now)?;
                }
                if stranger {
                    self.limit_strangers(store, events)?;
                }
                let msg = store.message(&id)?;
                if new {
                    if stranger {
                        events.push(MessengerEvent::Request { peer: sender });
                    }
                    if let Some(m) = msg {
                        events.push(MessengerEvent::Message(m));
                    }
                    Ok(Handled::NewMessage)
                } else {
                    Ok(Handled::Known)
                }
            }
            Content::Ack { ids } => {
                if store.contact_by_key(&sender)?.is_none() {
                    // A stranger's acknowledgement acknowledges nothing; its session goes.
                    self.limit_strangers(store, events)?;
                }
                let changed = store.mark_delivered(&sender, &ids)?;
                for id in changed {
                    events.push(MessengerEvent::Delivery {
                        id,
                        state: crate::store::OutState::Delivered,
                    });
                }
                Ok(Handled::Known)
            }
        }
    }
}

/// One replica's subscription, kept up until aborted.
async fn subscription<M: MailboxAccess>(
    me: Arc<Messenger<M>>,
    epoch: u64,
    relay: RelayId,
    subscribed: Arc<AtomicU8>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = async {
            let (key, _) = me.my_mailbox(epoch)?;
            let mailbox = MailboxId(key.public().to_bytes());
            let subscribed_here = async {
                let link = me.link(relay, Isolation::Owner(mailbox)).await?;
                let (rx, _) = link.subscribe(&key, me.config.request_timeout).await?;
                Ok::<_, MessengerError>((link, rx))
            }
            .await;
            me.note_answer(relay, &subscribed_here);
            let (link, mut rx) = subscribed_here?;
            let n = subscribed.fetch_add(1, Ordering::Relaxed) + 1;
            me.emit(MessengerEvent::Subscribed { copies: n });
            // At the circuit's lifetime, move to a fresh circuit (subscribing again there
            // delivers whatever arrived meanwhile: envelopes stay until acknowledged).
            let retire = tokio::time::sleep(me.config.circuits.lifetime);
            tokio::pin!(retire);
            loop {
                let first = tokio::select! {
                    next = rx.recv() => match next {
                        Some(d) => d,
                        None => break,
                    },
                    _ = &mut retire => break,
                };
                // With it, every envelope that arrived meanwhile (while the last batch was
                // being recorded and acknowledged): one transaction and one ACK for all.
                let mut batch = vec![first];
                while batch.len() < MAX_ACK_IDS {
                    match rx.try_recv() {
                        Ok(d) => batch.push(d),
                        Err(_) => break,
                    }
                }
                let ids: Vec<_> = batch.iter().map(|(id, _)| *id).collect();
                let handled = me.handle_arrived(batch).await?;
                if handled.contains(&Handled::NewMessage) {
                    // Acknowledge to the sender promptly, beside this subscription rather
                    // than in its way; a failure is retried by the periodic acknowledgements.
                    me.acks_soon();
                }
                if let Err(e) = link.ack(&key, ids, me.config.request_timeout).await {
                    debug!("mailbox ack failed: {e}");
                }
            }
            drop(link);
            let n = subscribed.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
            me.emit(MessengerEvent::Subscribed { copies: n });
            Ok::<_, MessengerError>(())
        }
        .await;
        if let Err(e) = result {
            debug!("mailbox subscription: {e}");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
