//! Signed prekeys and their bundles (`docs/spec.md` §10.2, §9.3): a new prekey every rotation
//! period, old ones kept long enough for late session starts, and the bundle published beside
//! this user's mailbox for the current epoch and several ahead.

use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::x3dh::{PrekeyBundle, SignedPrekey};

use futures_util::future::join_all;

use super::{Messenger, MessengerError};
use crate::err::BundleError;
use crate::mailbox::{Isolation, MailboxAccess, MailboxOps};

impl<M: MailboxAccess> Messenger<M> {
    /// The newest signed prekey, making a new one if there is none or it is due for rotation.
    /// Prekeys are kept one rotation period past their bundle's expiry. Done in a job of the
    /// group commit, off the async runtime.
    pub(crate) async fn current_prekey(&self) -> Result<SignedPrekey, MessengerError> {
        let now = self.now();
        let rotation = self.config.prekey_rotation.as_secs().max(1);
        self.commits
            .run(move |store| {
                store.drop_old_prekeys(now)?;
                let newest = store.prekeys()?.into_iter().max_by_key(|p| p.created());
                match newest {
                    Some(p) if now < p.created() + rotation => Ok(p),
                    _ => {
                        let p = SignedPrekey::generate(
                            &mut rand::thread_rng(),
                            rand::random(),
                            now,
                            now + 2 * rotation,
                        );
                        store.add_prekey(&p, p.expires() + rotation)?;
                        Ok::<_, MessengerError>(p)
                    }
                }
            })
            .await
    }

    /// This user's current prekey bundle.
    pub async fn bundle(&self) -> Result<PrekeyBundle, MessengerError> {
        Ok(self.current_prekey().await?.bundle(&self.me))
    }

    /// Publishes the bundle beside this user's mailboxes for the current epoch and the next
    /// few, unless that was already done this epoch with this prekey (so calling it often is
    /// cheap; a long-running client calls it periodically to rotate prekeys and keep the
    /// bundle ahead of the epochs).
    pub async fn ensure_bundle_published(&self) -> Result<(), MessengerError> {
        let consensus = self.consensus()?;
        let (secs, epoch) = self.epoch_now(&consensus);
        let bundle = self.bundle().await?;
        // Published again when the epoch, the prekey or the relays that should hold it
        // change (a new consensus moving the ring).
        let (_, here) = self.bundle_targets(&consensus, epoch)?;
        let mut where_hash = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&here, &mut where_hash);
        let marker = format!(
            "{epoch}:{}:{:x}",
            bundle.prekey_id(),
            std::hash::Hasher::finish(&where_hash)
        );
        if self.store().get("bundle_published")?.as_deref() == Some(marker.as_bytes()) {
            return Ok(());
        }
        let plain = bundle.encode();
        let mut published = 0;
        let mut last_error = None;
        for e in epoch..=epoch + self.config.bundle_epochs_ahead {
            let key = BlindedKeypair::derive(&self.me, e, secs)?;
            let (mailbox, targets) = self.bundle_targets(&consensus, e)?;
            // Readable by whoever knows this user's address, not by the relay that keeps it.
            let body = shallot_crypto::published::seal(
                &mut rand::thread_rng(),
                &self.me.public(),
                &mailbox.0,
                &plain,
            )
            .map_err(MessengerError::SealBundle)?;
            let expires = (e + 1) * secs + secs;
            // Each put on a circuit of its own: one circuit carrying the bundles of several
            // epochs would link this user's mailboxes across them.
            let puts = targets.into_iter().map(|relay| {
                let (key, body) = (&key, body.clone());
                async move {
                    let put = self
                        .on_replica(async move {
                            let link = self.link(relay, Isolation::OneShot).await?;
                            link.put_bundle(key, expires, body, self.config.request_timeout)
                                .await
                                .map_err(MessengerError::from)
                        })
                        .await;
                    self.note_answer(relay, &put);
                    put
                }
            });
            for r in join_all(puts).await {
                match r {
                    Ok(()) => published += 1,
                    Err(e) => last_error = Some(e),
                }
            }
        }
        if published == 0 {
            return Err(last_error.unwrap_or(MessengerError::NoMailboxes));
        }
        self.commits
            .run(move |store| store.set("bundle_published", marker.as_bytes()))
            .await?;
        Ok(())
    }

    /// Fetches and checks `peer`'s bundle from its mailbox replicas for this epoch, trying
    /// them one by one (and, should they lack it, the relays where `peer` may have published
    /// by another consensus), each on a circuit of its own.
    pub(crate) async fn fetch_bundle(
        &self,
        name: &str,
        peer: &ed25519_dalek::VerifyingKey,
    ) -> Result<PrekeyBundle, MessengerError> {
        let consensus = self.consensus()?;
        let (_, epoch) = self.epoch_now(&consensus);
        let (mailbox, replicas) = self.read_targets(&consensus, peer, epoch)?;
        let mut reason = BundleError::Missing;
        for relay in replicas {
            let got = self
                .on_replica(async {
                    let link = self.link(relay, Isolation::OneShot).await?;
                    Ok(link
                        .get_bundle(mailbox, self.config.request_timeout)
                        .await?)
                })
                .await;
            reason = match got {
                Ok(Some(record)) => match check_bundle(peer, &mailbox, &record, self.now()) {
                    Ok(b) => return Ok(b),
                    Err(e) => e,
                },
                // A replica without it says nothing against the others' answers.
                Ok(None) => reason,
                Err(e) => BundleError::Unreachable(Box::new(e)),
            };
        }
        Err(MessengerError::NoBundle {
            name: name.to_string(),
            reason,
        })
    }
}

/// Opens and checks a bundle record published beside `mailbox` by `peer`.
fn check_bundle(
    peer: &ed25519_dalek::VerifyingKey,
    mailbox: &shallot_proto::mailbox::MailboxId,
    record: &[u8],
    now: u64,
) -> Result<PrekeyBundle, BundleError> {
    let bytes = shallot_crypto::published::open(peer, &mailbox.0, record)
        .map_err(BundleError::Unreadable)?;
    let bundle = PrekeyBundle::decode(&bytes).map_err(BundleError::Malformed)?;
    bundle.verify(peer, now).map_err(BundleError::Refused)?;
    Ok(bundle)
}
