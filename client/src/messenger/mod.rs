//! The messenger (`docs/spec.md` §9–10): a user's identity, contacts and sessions, put to work
//! over the network. It sends text to contacts' mailboxes and reports when each message is
//! stored and acknowledged; it watches its own mailboxes and turns arriving envelopes into
//! messages, acknowledgements and contact requests; it retransmits until acknowledged or
//! expired, so each message is delivered once or reported failed.
//!
//! * [`keys`]: signed prekeys and the bundles published beside each mailbox;
//! * [`outgoing`]: sending, retransmission and end-to-end acknowledgements;
//! * [`incoming`]: fetching, subscribing, and handling what arrives.

pub mod incoming;
pub mod keys;
pub mod outgoing;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use shallot_crypto::address::Address;
use shallot_crypto::keys::{IdentityKeypair, RelayId};
use shallot_directory::network::NetworkFile;
use shallot_proto::dir::{Consensus, Flags};
use shallot_proto::mailbox::MailboxId;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::e2e::wire::MessageId;
use crate::mailbox::{MailboxError, MailboxLink};
use crate::ring;
use crate::store::{OutState, Store, StoreError, StoredMessage};
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::{DirError, NetDir};
use shallot_net::NetError;
use shallot_rt::lock;
use shallot_rt::unix_now;

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

/// Why a messenger operation failed, in the user's words.
#[derive(Debug, Error)]
pub enum MessengerError {
    /// The local store.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The consensus.
    #[error("{0}")]
    Dir(#[from] DirError),
    /// Circuits.
    #[error("{0}")]
    Circuit(#[from] NetError),
    /// A mailbox.
    #[error("{0}")]
    Mailbox(#[from] MailboxError),
    /// Too few mailbox relays.
    #[error("the network has no mailbox relays for this contact right now")]
    NoMailboxes,
    /// The message could not be stored on enough mailboxes.
    #[error("message stored on only {stored} of {wanted} mailboxes: {reason}")]
    NotStored {
        /// Mailboxes that stored it.
        stored: u8,
        /// Mailboxes asked.
        wanted: u8,
        /// Why the others did not.
        reason: String,
    },
    /// The contact's prekey bundle is missing or bad.
    #[error("cannot start a conversation with {name}: {reason}")]
    NoBundle {
        /// The contact.
        name: String,
        /// Why.
        reason: String,
    },
    /// Text too long or empty.
    #[error("{0}")]
    BadText(String),
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

/// A user's messenger.
pub struct Messenger {
    store: Mutex<Store>,
    me: IdentityKeypair,
    dir: Arc<NetDir>,
    circuits: Arc<CircuitManager>,
    links: tokio::sync::Mutex<HashMap<RelayId, (Arc<MailboxLink>, std::time::Instant)>>,
    config: MessengerConfig,
    events: Mutex<Option<mpsc::UnboundedSender<MessengerEvent>>>,
}

impl Messenger {
    /// Opens the user's store in `data_dir` (which must hold an identity) for `network`.
    pub fn open(
        data_dir: &Path,
        network: NetworkFile,
        config: MessengerConfig,
    ) -> Result<Arc<Messenger>, MessengerError> {
        let store = Store::open(data_dir)?;
        let me = store.identity()?;
        let dir = Arc::new(NetDir::new(network, data_dir));
        let circuits =
            CircuitManager::new(dir.clone(), data_dir.to_path_buf(), config.circuits.clone());
        Ok(Arc::new(Messenger {
            store: Mutex::new(store),
            me,
            dir,
            circuits,
            links: tokio::sync::Mutex::new(HashMap::new()),
            config,
            events: Mutex::new(None),
        }))
    }

    /// Gets a consensus (from the cache or the authorities) and makes sure this user's prekey
    /// bundle is published. Call before using the network.
    pub async fn connect(&self) -> Result<(), MessengerError> {
        self.dir.bootstrap().await?;
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

    /// The circuit manager.
    pub fn circuits(&self) -> &Arc<CircuitManager> {
        &self.circuits
    }

    /// The configuration.
    pub fn config(&self) -> &MessengerConfig {
        &self.config
    }

    fn consensus(&self) -> Result<Arc<Consensus>, MessengerError> {
        Ok(self.dir.consensus()?)
    }

    /// The epoch length and current epoch.
    fn epoch_now(&self, consensus: &Consensus) -> (u64, u64) {
        let secs = consensus.params.epoch_secs.max(1);
        (secs, ring::epoch_of(unix_now(), secs))
    }

    /// The mailbox of `identity` for `epoch`, and the relays that keep it.
    fn placement(
        &self,
        consensus: &Consensus,
        identity: &VerifyingKey,
        epoch: u64,
    ) -> Result<(MailboxId, Vec<RelayId>), MessengerError> {
        let secs = consensus.params.epoch_secs.max(1);
        let mailbox = ring::mailbox_id(identity, epoch, secs)
            .map_err(|e| MessengerError::BadText(e.to_string()))?;
        let relays = consensus
            .relays
            .iter()
            .filter(|r| r.flags.contains(Flags::MAILBOX | Flags::RUNNING))
            .map(|r| r.id);
        let replicas = ring::replicas(&mailbox, relays, ring::REPLICAS);
        if replicas.is_empty() {
            return Err(MessengerError::NoMailboxes);
        }
        Ok((mailbox, replicas))
    }

    /// A circuit ending at mailbox relay `relay`, reused while it works and is younger than
    /// the circuit lifetime (an older one keeps serving whoever holds it, such as a
    /// subscription, but gets no new work).
    pub(crate) async fn link(&self, relay: RelayId) -> Result<Arc<MailboxLink>, MessengerError> {
        let lifetime = self.config.circuits.lifetime;
        let fresh_enough = |(l, at): &(Arc<MailboxLink>, std::time::Instant)| {
            l.is_open() && at.elapsed() < lifetime
        };
        if let Some(entry) = self.links.lock().await.get(&relay) {
            if fresh_enough(entry) {
                return Ok(entry.0.clone());
            }
        }
        // Built without holding the table, so links to different relays build in parallel.
        let built = self.circuits.get(relay).await?;
        let fresh = MailboxLink::new(built.circuit.clone(), relay);
        let mut links = self.links.lock().await;
        match links.get(&relay) {
            Some(entry) if fresh_enough(entry) => {
                fresh.circuit().close();
                Ok(entry.0.clone())
            }
            _ => {
                links.insert(relay, (fresh.clone(), built.built_at));
                Ok(fresh)
            }
        }
    }

    /// Circuits to mailbox relays that are open now.
    pub async fn open_links(&self) -> usize {
        self.links
            .lock()
            .await
            .values()
            .filter(|(l, _)| l.is_open())
            .count()
    }
}
