//! How the messenger reaches mailbox relays (`docs/spec.md` §9.3, §11.3): the seam between
//! what the messenger decides (what to deposit where, when to send again) and the network.
//!
//! [`MailboxOps`] is what one mailbox relay can be asked; [`MailboxAccess`] gives a handle
//! on a relay for one [`Isolation`] class. [`CircuitMailboxes`] is the real thing, over the
//! circuit manager: an owner's requests for one mailbox travel on a circuit of their own
//! (reused while it works and is young enough), and every deposit, bundle fetch and bundle
//! put on a fresh circuit closed after it (`docs/spec.md` §9.3, circuit isolation), so that a
//! mailbox relay never sees two blinded ids, or an owner beside a depositor, on one circuit.
//! Tests give the messenger an in-memory set of mailboxes instead.

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

/// Which requests may share a circuit (`docs/spec.md` §9.3, circuit isolation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// The owner's requests (SUBSCRIBE, FETCH, ACK) for its mailbox with this blinded id:
    /// one circuit per relay and mailbox, shared by nothing else.
    Owner(MailboxId),
    /// One request alone (a bundle fetch or a bundle put): a fresh circuit, closed once the
    /// handle is dropped.
    OneShot,
    /// A deposit alone: as [`Isolation::OneShot`], on a circuit that may have been finished
    /// ahead for a deposit to that relay ([`MailboxAccess::prepare`]) and for nothing else.
    Deposit,
}

/// How the messenger gets a handle on a mailbox relay.
pub trait MailboxAccess: Send + Sync + 'static {
    /// A handle on one relay.
    type Link: MailboxOps;

    /// A handle on mailbox relay `relay` for requests of the class `isolation`; a handle got
    /// for [`Isolation::OneShot`] or [`Isolation::Deposit`] is used for one request and
    /// dropped.
    fn link(
        &self,
        relay: RelayId,
        isolation: Isolation,
    ) -> impl Future<Output = Result<Arc<Self::Link>, MailboxError>> + Send;

    /// Handles whose way to their relay is open now.
    fn open_links(&self) -> impl Future<Output = usize> + Send;

    /// Gets a handle on `relay` ready ahead of need, in the background, for the next
    /// [`Isolation::Deposit`] there (a message is being typed for a mailbox it keeps). Best
    /// effort: a failure only means that deposit builds its own circuit.
    fn prepare(&self, relay: RelayId);

    /// Holds back work in the background that would compete with a message being committed
    /// and deposited (refilling circuits built ahead), until the returned guard is dropped.
    /// Nothing by default.
    fn hold_background(&self) -> Option<shallot_net::circmgr::RefillHold<'_>> {
        None
    }
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

/// Mailbox relays reached over circuits from the circuit manager: for an owner, one circuit
/// per relay and mailbox, reused while it works and is younger than the circuit lifetime (an
/// older one keeps serving whoever holds it, such as a subscription, but gets no new work);
/// for anything else, a fresh circuit per request.
pub struct CircuitMailboxes {
    circuits: Arc<CircuitManager>,
    links: tokio::sync::Mutex<HashMap<(RelayId, MailboxId), Held>>,
}

impl CircuitMailboxes {
    /// Mailboxes reached over `circuits`.
    pub fn new(circuits: Arc<CircuitManager>) -> Self {
        CircuitMailboxes {
            circuits,
            links: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The relays to which an owner's handle is open now (read-only, for display).
    pub async fn open_relays(&self) -> Vec<RelayId> {
        let mut open: Vec<RelayId> = self
            .links
            .lock()
            .await
            .iter()
            .filter(|(_, (l, _))| l.is_open())
            .map(|((id, _), _)| *id)
            .collect();
        open.sort();
        open.dedup();
        open
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

    async fn link(
        &self,
        relay: RelayId,
        isolation: Isolation,
    ) -> Result<Arc<MailboxLink>, MailboxError> {
        let mailbox = match isolation {
            Isolation::Owner(mailbox) => mailbox,
            Isolation::OneShot => {
                // `CircuitManager::get` never hands out a circuit twice: this one is ours
                // alone, and closes when the returned handle is dropped.
                let built = self.circuits.get(relay).await?;
                return Ok(MailboxLink::new(built.circuit.clone(), relay));
            }
            Isolation::Deposit => {
                // Likewise; and only a deposit may take a circuit finished ahead, so that an
                // owner's request never arrives on one (`docs/spec.md` §11.3).
                let built = self.circuits.get_readied(relay).await?;
                return Ok(MailboxLink::new(built.circuit.clone(), relay));
            }
        };
        let key = (relay, mailbox);
        {
            // Links past their lifetime (last epoch's mailboxes among them) leave the table;
            // whoever still holds one keeps it until done.
            let mut links = self.links.lock().await;
            links.retain(|_, held| self.fresh_enough(held));
            if let Some(held) = links.get(&key) {
                return Ok(held.0.clone());
            }
        }
        // Built without holding the table, so links to different relays build in parallel.
        let built = self.circuits.get(relay).await?;
        let fresh = MailboxLink::new(built.circuit.clone(), relay);
        let mut links = self.links.lock().await;
        match links.get(&key) {
            Some(held) if self.fresh_enough(held) => {
                fresh.circuit().close();
                Ok(held.0.clone())
            }
            _ => {
                links.insert(key, (fresh.clone(), built.built_at));
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

    fn prepare(&self, relay: RelayId) {
        let circuits = self.circuits.clone();
        tokio::spawn(async move {
            if let Err(e) = circuits.prepare(relay).await {
                tracing::debug!("a circuit finished ahead to {relay}: {e}");
            }
        });
    }

    fn hold_background(&self) -> Option<shallot_net::circmgr::RefillHold<'_>> {
        Some(self.circuits().hold_refills())
    }
}
