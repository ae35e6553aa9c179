//! The messenger (`docs/spec.md` §9–10): a user's identity, contacts and sessions, put to work
//! over the network. It sends text to contacts' mailboxes and reports when each message is
//! stored and acknowledged; it watches its own mailboxes and turns arriving envelopes into
//! messages, acknowledgements and contact requests; it retransmits until acknowledged or
//! expired, so each message is delivered once or reported failed.
//!
//! * [`keys`]: signed prekeys and the bundles published beside each mailbox;
//! * [`outgoing`]: sending, retransmission and end-to-end acknowledgements;
//! * [`incoming`]: fetching, subscribing, and handling what arrives.
//!
//! The messenger reaches mailbox relays through a [`MailboxAccess`] (by default
//! [`CircuitMailboxes`], over the circuit manager) and reads the time from a [`WallClock`],
//! so that its retransmission, backoff and expiry are tested with in-memory mailboxes and a
//! fake clock (`messenger/tests.rs`).

pub mod incoming;
pub mod keys;
pub mod outgoing;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use shallot_crypto::address::Address;
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::network::NetworkFile;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::dir::{Consensus, Flags};
use shallot_proto::mailbox::MailboxId;
use shallot_rt::{lock, SystemClock, WallClock};
use tokio::sync::mpsc;

pub use crate::err::{BundleError, MessengerError};
use crate::ids::MessageId;
use crate::mailbox::{CircuitMailboxes, MailboxAccess};
use crate::ring;
use crate::store::{OutState, Store, StoredMessage};

/// Timers and limits of the messenger; the defaults are production values
/// (`docs/spec.md` §10.7).
#[derive(Debug, Clone)]
pub struct MessengerConfig {
    /// Time allowed for one mailbox request.
    pub request_timeout: Duration,
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
}

impl Default for MessengerConfig {
    fn default() -> Self {
        MessengerConfig {
            request_timeout: Duration::from_secs(15),
            retransmit_after: Duration::from_secs(300),
            retransmit_max: Duration::from_secs(6 * 3600),
            message_lifetime: Duration::from_secs(7 * 24 * 3600),
            prekey_rotation: Duration::from_secs(7 * 24 * 3600),
            bundle_epochs_ahead: 6,
            circuits: CircuitConfig::default(),
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
}

/// A user's messenger, reaching mailbox relays through `M`.
pub struct Messenger<M: MailboxAccess = CircuitMailboxes> {
    store: Mutex<Store>,
    me: IdentityKeypair,
    dir: Arc<NetDir>,
    mailboxes: M,
    clock: Arc<dyn WallClock>,
    config: MessengerConfig,
    events: Mutex<Option<mpsc::UnboundedSender<MessengerEvent>>>,
}

impl Messenger {
    /// Opens the user's store in `data_dir` (which must hold an identity) for `network`,
    /// reaching mailboxes over circuits.
    pub fn open(
        data_dir: &Path,
        network: NetworkFile,
        config: MessengerConfig,
    ) -> Result<Arc<Messenger>, MessengerError> {
        let store = Store::open(data_dir)?;
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
        let me = store.identity()?;
        Ok(Arc::new(Messenger {
            store: Mutex::new(store),
            me,
            dir,
            mailboxes,
            clock,
            config,
            events: Mutex::new(None),
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

    fn consensus(&self) -> Result<Arc<Consensus>, MessengerError> {
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
        consensus: &Consensus,
        identity: &VerifyingKey,
        epoch: u64,
    ) -> Result<(MailboxId, Vec<RelayId>), MessengerError> {
        let secs = consensus.params.epoch_secs.max(1);
        let mailbox = ring::mailbox_id(identity, epoch, secs)?;
        let relays = consensus
            .relays
            .iter()
            .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
            .map(|r| r.id);
        // The ring of `epoch` is laid out by its shared random value (`docs/spec.md` §9.2).
        let srv = consensus.srv_for_epoch(epoch);
        let replicas = ring::replicas(&mailbox, &srv, epoch, relays, ring::REPLICAS);
        if replicas.is_empty() {
            return Err(MessengerError::NoMailboxes);
        }
        Ok((mailbox, replicas))
    }

    /// A handle on mailbox relay `relay`.
    pub(crate) async fn link(&self, relay: RelayId) -> Result<Arc<M::Link>, MessengerError> {
        Ok(self.mailboxes.link(relay).await?)
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
