//! The messenger (`docs/spec.md` §9–10): a user's identity, contacts and sessions, put to work
//! over the network. It sends text to contacts' mailboxes and reports when each message is
//! stored and acknowledged; it watches its own mailboxes and turns arriving envelopes into
//! messages, acknowledgements and contact requests; it retransmits until acknowledged or
//! expired, so each message is delivered once or reported failed.
//!
//! * [`keys`]: signed prekeys and the bundles published beside each mailbox;
//! * [`outgoing`]: sending, retransmission and end-to-end acknowledgements;
//! * [`incoming`]: fetching, subscribing, and handling what arrives;
//! * [`ready`]: message keys taken while the user types.
//!
//! The messenger reaches mailbox relays through a [`MailboxAccess`] (by default
//! [`CircuitMailboxes`], over the circuit manager) and reads the time from a [`WallClock`],
//! so that its retransmission, backoff and expiry are tested with in-memory mailboxes and a
//! fake clock (`messenger/tests.rs`).

pub mod answers;
pub mod incoming;
pub mod keys;
pub mod outgoing;
pub mod ready;
pub mod tasks;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use shallot_crypto::address::Address;
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::network::NetworkFile;
use shallot_directory::VerifiedConsensus;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::dir::Consensus;
use shallot_proto::mailbox::MailboxId;
use shallot_rt::{lock, SystemClock, WallClock};
use std::future::Future;
use tokio::sync::mpsc;

pub use crate::err::{BundleError, MessengerError};
use crate::ids::MessageId;
use crate::mailbox::{CircuitMailboxes, Isolation, MailboxAccess};
use crate::ring;
use crate::store::group::GroupCommit;
use crate::store::strangers::StrangerLimits;
use crate::store::{OutState, Store, StoredMessage};

/// Timers and limits of the messenger; the defaults are production values
/// (`docs/spec.md` §10.7).
#[derive(Debug, Clone)]
pub struct MessengerConfig {
    /// Time allowed for one mailbox request (the wait for a send window included).
    pub request_timeout: Duration,
    /// Time allowed for everything asked of one replica at once (reaching it included): past
    /// it, that replica's answer is given up and the others' stand.
    pub replica_timeout: Duration,
    /// How long after a consensus changed the mailbox ring the replicas the old one named are
    /// still read, and deposited at (`docs/spec.md` §9.2).
    pub ring_settle: Duration,
    /// First wait before a stored but unacknowledged message is sent again; doubles each time.
    pub retransmit_after: Duration,
    /// Longest wait between retransmissions.
    pub retransmit_max: Duration,
    /// A message unacknowledged this long is reported failed.
    pub message_lifetime: Duration,
    /// How often a new signed prekey is made.
    pub prekey_rotation: Duration,
    /// Epochs ahead for which the prekey bundle is published, so that senders can start a
    /// session while this user is offline.
    pub bundle_epochs_ahead: u64,
    /// How circuits are built.
    pub circuits: CircuitConfig,
    /// What strangers may make the store hold.
    pub strangers: StrangerLimits,
}

impl Default for MessengerConfig {
    fn default() -> Self {
        MessengerConfig {
            request_timeout: Duration::from_secs(15),
            replica_timeout: Duration::from_secs(60),
            ring_settle: Duration::from_secs(24 * 3600),
            retransmit_after: Duration::from_secs(300),
            retransmit_max: Duration::from_secs(6 * 3600),
            message_lifetime: Duration::from_secs(7 * 24 * 3600),
            prekey_rotation: Duration::from_secs(7 * 24 * 3600),
            bundle_epochs_ahead: 6,
            circuits: CircuitConfig::default(),
            strangers: StrangerLimits::default(),
        }
    }
}

/// Something the messenger tells whoever shows it (the chat UI).
#[derive(Debug, Clone)]
pub enum MessengerEvent {
    /// A message was added to the history (incoming, or outgoing being sent).
    Message(StoredMessage),
    /// An outgoing message's delivery state changed.
    Delivery {
        /// The message.
        id: MessageId,
        /// Its new state.
        state: OutState,
    },
    /// A message arrived from an address that is not a contact.
    Request {
        /// The sender's identity key.
        peer: [u8; 32],
    },
    /// How many of this user's mailbox replicas are subscribed.
    Subscribed {
        /// Replicas currently pushing.
        copies: u8,
    },
    /// Something the user should be told, in words (messages from strangers were dropped).
    Notice(String),
}

/// A user's messenger, reaching mailbox relays through `M`.
pub struct Messenger<M: MailboxAccess = CircuitMailboxes> {
    store: Arc<Mutex<Store>>,
    /// Commits to `store` off the async runtime, in groups (`store::group`).
    commits: GroupCommit,
    me: Arc<IdentityKeypair>,
    dir: Arc<NetDir>,
    mailboxes: M,
    clock: Arc<dyn WallClock>,
    config: MessengerConfig,
    events: Mutex<Option<mpsc::UnboundedSender<MessengerEvent>>>,
    answers: Mutex<answers::ReplicaAnswers>,
    /// Whether a task sending acknowledgements for pushed messages runs
    /// ([`Messenger::acks_soon`]).
    acks_running: AtomicBool,
    /// Whether acknowledgements were queued since that task last looked.
    acks_wanted: AtomicBool,
    /// Message keys taken while the user types, by peer ([`ready`]).
    ready_keys: ready::ReadyKeys,
    /// Mailbox ids and rings computed so far.
    placements: ring::PlacementCache<VerifiedConsensus>,
}

impl Messenger {
    /// Opens the user's store in `data_dir` (which must hold an identity, and must not be
    /// encrypted: see [`Messenger::open_store`]) for `network`, reaching mailboxes over
    /// circuits.
    pub fn open(
        data_dir: &Path,
        network: NetworkFile,
        config: MessengerConfig,
    ) -> Result<Arc<Messenger>, MessengerError> {
        Messenger::open_store(Store::open(data_dir)?, network, config)
    }

    /// A messenger over `store`, already opened (with its passphrase, if any), for `network`,
    /// reaching mailboxes over circuits.
    pub fn open_store(
        store: Store,
        network: NetworkFile,
        config: MessengerConfig,
    ) -> Result<Arc<Messenger>, MessengerError> {
        let data_dir = store.dir().to_path_buf();
        let data_dir = data_dir.as_path();
        let dir = Arc::new(NetDir::new(network, data_dir));
        let circuits =
            CircuitManager::new(dir.clone(), data_dir.to_path_buf(), config.circuits.clone());
        Messenger::with_parts(
            store,
            dir,
            CircuitMailboxes::new(circuits),
            Arc::new(SystemClock),
            config,
        )
    }

    /// The circuit manager.
    pub fn circuits(&self) -> &Arc<CircuitManager> {
        self.mailboxes.circuits()
    }
}

impl<M: MailboxAccess> Messenger<M> {
    /// A messenger over `store` (which must hold an identity), taking the consensus from
    /// `dir`, reaching mailboxes through `mailboxes` and the time from `clock`.
    pub fn with_parts(
        store: Store,
        dir: Arc<NetDir>,
        mailboxes: M,
        clock: Arc<dyn WallClock>,
        config: MessengerConfig,
    ) -> Result<Arc<Self>, MessengerError> {
        let me = Arc::new(store.identity()?);
        let store = Arc::new(Mutex::new(store));
        Ok(Arc::new(Messenger {
            commits: GroupCommit::new(store.clone()),
            store,
            me,
            dir,
            mailboxes,
            clock,
            config,
            events: Mutex::new(None),
            answers: Mutex::new(answers::ReplicaAnswers::default()),
            acks_running: AtomicBool::new(false),
            acks_wanted: AtomicBool::new(false),
            ready_keys: ready::ReadyKeys::default(),
            placements: ring::PlacementCache::default(),
        }))
    }

    /// Gets a consensus (from the cache or the authorities), keeps it fresh from then on
    /// (until the messenger is dropped), and makes sure this user's prekey bundle is
    /// published. Call before using the network.
    pub async fn connect(&self) -> Result<(), MessengerError> {
        self.dir.bootstrap().await?;
        self.dir.start_refresher();
        self.ensure_bundle_published().await
    }

    /// Sends events to `tx` from now on.
    pub fn set_events(&self, tx: mpsc::UnboundedSender<MessengerEvent>) {
        *lock(&self.events) = Some(tx);
    }

    pub(crate) fn emit(&self, event: MessengerEvent) {
        if let Some(tx) = lock(&self.events).as_ref() {
            let _ = tx.send(event);
        }
    }

    /// The local store (locked).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// This user's address.
    pub fn address(&self) -> Address {
        Address::new(self.me.public())
    }

    /// The consensus source.
    pub fn netdir(&self) -> &Arc<NetDir> {
        &self.dir
    }

    /// How mailbox relays are reached.
    pub fn mailboxes(&self) -> &M {
        &self.mailboxes
    }

    /// The configuration.
    pub fn config(&self) -> &MessengerConfig {
        &self.config
    }

    /// Seconds since the Unix epoch, by the messenger's clock.
    pub(crate) fn now(&self) -> u64 {
        self.clock.unix_now()
    }

    fn consensus(&self) -> Result<Arc<VerifiedConsensus>, MessengerError> {
        Ok(self.dir.consensus()?)
    }

    /// The epoch length and current epoch.
    fn epoch_now(&self, consensus: &Consensus) -> (u64, u64) {
        let secs = consensus.params.epoch_secs.max(1);
        (secs, ring::epoch_of(self.now(), secs))
    }

    /// The mailbox of `identity` for `epoch`, and the relays that keep it.
    fn placement(
        &self,
        consensus: &Arc<VerifiedConsensus>,
        identity: &VerifyingKey,
        epoch: u64,
    ) -> Result<(MailboxId, Vec<RelayId>), MessengerError> {
        let secs = consensus.params.epoch_secs.max(1);
        let mailbox = self.placements.mailbox_id(identity, epoch, secs)?;
        let replicas = self.ring_of(consensus, &mailbox, epoch, ring::REPLICAS);
        if replicas.is_empty() {
            return Err(MessengerError::NoMailboxes);
        }
        Ok((mailbox, replicas))
    }

    /// The first `n` relays after `mailbox` on `consensus`'s ring of `epoch`, laid out once
    /// per consensus and epoch.
    fn ring_of(
        &self,
        consensus: &Arc<VerifiedConsensus>,
        mailbox: &MailboxId,
        epoch: u64,
        n: usize,
    ) -> Vec<RelayId> {
        self.placements
            .ring(consensus, epoch, || {
                ring::Ring::of_consensus(consensus, epoch)
            })
            .replicas(mailbox, n)
    }

    /// The consensus before the last change of the mailbox ring, while the ring settles.
    fn previous_consensus(&self) -> Option<Arc<VerifiedConsensus>> {
        self.dir.previous(self.config.ring_settle.as_secs())
    }

    /// Where to deposit for `identity` in `epoch`: its replicas by the current consensus
    /// (those that count), and, while the ring settles, those the previous consensus named
    /// that are not among them (best effort: an owner still on that consensus reads there).
    fn deposit_targets(
        &self,
        consensus: &Arc<VerifiedConsensus>,
        identity: &VerifyingKey,
        epoch: u64,
    ) -> Result<(MailboxId, Vec<RelayId>, Vec<RelayId>), MessengerError> {
        let (mailbox, replicas) = self.placement(consensus, identity, epoch)?;
        let extra = match self.previous_consensus() {
            Some(prev) => self
                .ring_of(&prev, &mailbox, epoch, ring::REPLICAS)
                .into_iter()
                .filter(|r| !replicas.contains(r))
                .collect(),
            None => Vec::new(),
        };
        Ok((mailbox, replicas, extra))
    }

    /// Where this user publishes its bundle for `epoch`: as [`Self::read_targets`] reads,
    /// its replicas and the [`ring::READ_SLACK`] relays after them (a sender whose consensus
    /// lacks relays near the mailbox reads the bundle past them, and finds it there), then,
    /// while the ring settles, the replicas the previous consensus named.
    fn bundle_targets(
        &self,
        consensus: &Arc<VerifiedConsensus>,
        epoch: u64,
    ) -> Result<(MailboxId, Vec<RelayId>), MessengerError> {
        self.read_targets(consensus, &self.me.public(), epoch)
    }

    /// Every relay where mail for `identity`'s mailbox of `epoch` may wait, nearest first:
    /// the replicas by the current consensus and [`ring::READ_SLACK`] successors after them
    /// (a sender whose consensus lacks relays this one has deposited there), then, while the
    /// ring settles, the replicas the previous consensus named.
    fn read_targets(
        &self,
        consensus: &Arc<VerifiedConsensus>,
        identity: &VerifyingKey,
        epoch: u64,
    ) -> Result<(MailboxId, Vec<RelayId>), MessengerError> {
        let (mailbox, _) = self.placement(consensus, identity, epoch)?;
        let mut targets = self.ring_of(
            consensus,
            &mailbox,
            epoch,
            ring::REPLICAS + ring::READ_SLACK,
        );
        if let Some(prev) = self.previous_consensus() {
            for r in self.ring_of(&prev, &mailbox, epoch, ring::REPLICAS) {
                if !targets.contains(&r) {
                    targets.push(r);
                }
            }
        }
        Ok((mailbox, targets))
    }

    /// A handle on mailbox relay `relay` for requests of the class `isolation`.
    pub(crate) async fn link(
        &self,
        relay: RelayId,
        isolation: Isolation,
    ) -> Result<Arc<M::Link>, MessengerError> {
        Ok(self.mailboxes.link(relay, isolation).await?)
    }

    /// Runs `work` (all that is asked of one replica) within the replica deadline, so that a
    /// relay that never answers, or never opens its window, costs only its own answer.
    pub(crate) async fn on_replica<T>(
        &self,
        work: impl Future<Output = Result<T, MessengerError>>,
    ) -> Result<T, MessengerError> {
        self.on_replica_until(self.replica_deadline(), work).await
    }

    /// When all that is asked of one replica from now on must be done.
    pub(crate) fn replica_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.config.replica_timeout
    }

    /// Runs `work`, part of what is asked of one replica, within that replica's `deadline`.
    pub(crate) async fn on_replica_until<T>(
        &self,
        deadline: tokio::time::Instant,
        work: impl Future<Output = Result<T, MessengerError>>,
    ) -> Result<T, MessengerError> {
        match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(crate::mailbox::MailboxError::Timeout.into()),
        }
    }

    /// Records how `relay` answered a request for this user's own mailbox.
    pub(crate) fn note_answer<T>(&self, relay: RelayId, result: &Result<T, MessengerError>) {
        lock(&self.answers).record(relay, result, self.now());
    }

    /// How `relay` last answered a request for this user's own mailbox (a fetch, a
    /// subscription or a bundle put), and when; `None` if it was never asked (read-only, for
    /// the network panel).
    pub fn last_answer(&self, relay: &RelayId) -> Option<answers::LastAnswer> {
        lock(&self.answers).get(relay).cloned()
    }

    /// The relays that keep this user's mailbox for the current epoch (read-only, for the
    /// network panel).
    pub fn my_replicas(&self) -> Result<Vec<RelayId>, MessengerError> {
        let consensus = self.consensus()?;
        let (_, epoch) = self.epoch_now(&consensus);
        let (_, relays) = self.placement(&consensus, &self.me.public(), epoch)?;
        Ok(relays)
    }

    /// Handles on mailbox relays whose circuits are open now.
    pub async fn open_links(&self) -> usize {
        self.mailboxes.open_links().await
    }
}
