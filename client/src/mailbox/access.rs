//! How the messenger reaches mailbox relays (`docs/spec.md` §9.3, §11.3): the seam between
//! what the messenger decides (what to deposit where, when to send again) and the network.
//!
//! [`MailboxOps`] is what one mailbox relay can be asked; [`MailboxAccess`] gives a handle
//! on a relay. [`CircuitMailboxes`] is the real thing: one circuit per mailbox relay from the
//! circuit manager, reused while it works and is young enough. Tests give the messenger an
//! in-memory set of mailboxes instead.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::keys::RelayId;
use shallot_net::circmgr::CircuitManager;
use shallot_proto::mailbox::MailboxId;
use tokio::sync::mpsc;

use super::{Delivered, MailboxError, MailboxLink};
use crate::ids::EnvelopeId;

/// What one mailbox relay can be asked, each request within `limit`.
pub trait MailboxOps: Send + Sync + 'static {
    /// Whether the way to the relay still works.
    fn is_open(&self) -> bool;

    /// Leaves an envelope in `mailbox`; Ok once the relay has it on disk.
    fn deposit(
        &self,
        mailbox: MailboxId,
        envelope: Vec<u8>,
        limit: Duration,
    ) -> impl Future<Output = Result<(), MailboxError>> + Send;

    /// The prekey bundle kept for `mailbox`, if any.
    fn get_bundle(
        &self,
        mailbox: MailboxId,
        limit: Duration,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, MailboxError>> + Send;

    /// Stores the owner's prekey bundle beside its mailbox until `expires`.
    fn put_bundle(
        &self,
        key: &BlindedKeypair,
        expires: u64,
        bundle: Vec<u8>,
        limit: Duration,
    ) -> impl Future<Output = Result<(), MailboxError>> + Send;

    /// Subscribes to the owner's mailbox: every waiting envelope, then each new one; and how
    /// many were waiting.
    fn subscribe(
        &self,
        key: &BlindedKeypair,
        limit: Duration,
    ) -> impl Future<Output = Result<(mpsc::UnboundedReceiver<Delivered>, u32), MailboxError>> + Send;

    /// Every envelope waiting in the owner's mailbox.
    fn fetch(
        &self,
        key: &BlindedKeypair,
        limit: Duration,
    ) -> impl Future<Output = Result<Vec<Delivered>, MailboxError>> + Send;

    /// Deletes envelopes from the owner's mailbox; how many the relay still had.
    fn ack(
        &self,
        key: &BlindedKeypair,
        ids: Vec<EnvelopeId>,
        limit: Duration,
    ) -> impl Future<Output = Result<u32, MailboxError>> + Send;
}

/// How the messenger gets a handle on a mailbox relay.
pub trait MailboxAccess: Send + Sync + 'static {
    /// A handle on one relay.
    type Link: MailboxOps;

    /// A handle on mailbox relay `relay`.
    fn link(
        &self,
        relay: RelayId,
    ) -> impl Future<Output = Result<Arc<Self::Link>, MailboxError>> + Send;

    /// Handles whose way to their relay is open now.
    fn open_links(&self) -> impl Future<Output = usize> + Send;
}

impl MailboxOps for MailboxLink {
    fn is_open(&self) -> bool {
        MailboxLink::is_open(self)
    }

    async fn deposit(
        &self,
        mailbox: MailboxId,
        envelope: Vec<u8>,
        limit: Duration,
    ) -> Result<(), MailboxError> {
        MailboxLink::deposit(self, mailbox, envelope, limit).await
    }

    async fn get_bundle(
        &self,
        mailbox: MailboxId,
        limit: Duration,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        MailboxLink::get_bundle(self, mailbox, limit).await
    }

    async fn put_bundle(
        &self,
        key: &BlindedKeypair,
        expires: u64,
        bundle: Vec<u8>,
        limit: Duration,
    ) -> Result<(), MailboxError> {
        MailboxLink::put_bundle(self, key, expires, bundle, limit).await
    }

    async fn subscribe(
        &self,
        key: &BlindedKeypair,
        limit: Duration,
    ) -> Result<(mpsc::UnboundedReceiver<Delivered>, u32), MailboxError> {
        MailboxLink::subscribe(self, key, limit).await
    }

    async fn fetch(
        &self,
        key: &BlindedKeypair,
        limit: Duration,
    ) -> Result<Vec<Delivered>, MailboxError> {
        MailboxLink::fetch(self, key, limit).await
    }

    async fn ack(
        &self,
        key: &BlindedKeypair,
        ids: Vec<EnvelopeId>,
        limit: Duration,
    ) -> Result<u32, MailboxError> {
        MailboxLink::ack(self, key, ids, limit).await
    }
}

/// A link and when its circuit was built.
type Held = (Arc<MailboxLink>, Instant);

/// Mailbox relays reached over circuits from the circuit manager: one circuit per relay,
/// reused while it works and is younger than the circuit lifetime (an older one keeps serving
/// whoever holds it, such as a subscription, but gets no new work).
pub struct CircuitMailboxes {
    circuits: Arc<CircuitManager>,
    links: tokio::sync::Mutex<HashMap<RelayId, Held>>,
}

impl CircuitMailboxes {
    /// Mailboxes reached over `circuits`.
    pub fn new(circuits: Arc<CircuitManager>) -> Self {
        CircuitMailboxes {
            circuits,
            links: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The relays to which a handle is open now (read-only, for display).
    pub async fn open_relays(&self) -> Vec<RelayId> {
        self.links
            .lock()
            .await
            .iter()
            .filter(|(_, (l, _))| l.is_open())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The circuit manager.
    pub fn circuits(&self) -> &Arc<CircuitManager> {
        &self.circuits
    }

    fn fresh_enough(&self, (link, built_at): &Held) -> bool {
        link.is_open() && built_at.elapsed() < self.circuits.config().lifetime
    }
}

impl MailboxAccess for CircuitMailboxes {
    type Link = MailboxLink;

    async fn link(&self, relay: RelayId) -> Result<Arc<MailboxLink>, MailboxError> {
        if let Some(held) = self.links.lock().await.get(&relay) {
            if self.fresh_enough(held) {
                return Ok(held.0.clone());
            }
        }
        // Built without holding the table, so links to different relays build in parallel.
        let built = self.circuits.get(relay).await?;
        let fresh = MailboxLink::new(built.circuit.clone(), relay);
        let mut links = self.links.lock().await;
        match links.get(&relay) {
            Some(held) if self.fresh_enough(held) => {
                fresh.circuit().close();
                Ok(held.0.clone())
            }
            _ => {
                links.insert(relay, (fresh.clone(), built.built_at));
                Ok(fresh)
            }
        }
    }

    async fn open_links(&self) -> usize {
        self.links
            .lock()
            .await
            .values()
            .filter(|(l, _)| l.is_open())
            .count()
    }
}
