//! Checking an owner's request signature, timestamp and nonce (`docs/spec.md` §9.3).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ed25519_dalek::{Signature, VerifyingKey};
use shallot_crypto::keys::RelayId;
use shallot_proto::mailbox::{auth_message, MailboxAuth, MailboxId, Status};
use shallot_rt::lock;

/// How far a request's timestamp may be from the relay's clock, in seconds.
pub const FRESHNESS_SECS: u64 = 120;

/// Remembers the nonces of accepted requests while their timestamps are fresh, so that none
/// is accepted twice.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashMap<(MailboxId, [u8; 16]), u64>,
    order: VecDeque<(u64, MailboxId, [u8; 16])>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` nonces.
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity,
            ..Default::default()
        }
    }

    fn forget_expired(&mut self, now: u64) {
        while let Some(&(until, m, n)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&(m, n));
        }
    }

    /// Records a nonce; false if it was seen already. When full, the oldest nonce is
    /// forgotten rather than a request refused: only this relay ever sees an owner's signed
    /// requests (they arrive inside the circuit's layers and are bound to this relay), so
    /// filling the cache cannot be turned into a replay by anyone else, while refusing would
    /// let anyone with keys lock every owner out.
    pub(crate) fn insert(
        &mut self,
        mailbox: MailboxId,
        nonce: [u8; 16],
        until: u64,
        now: u64,
    ) -> bool {
        self.forget_expired(now);
        if self.seen.contains_key(&(mailbox, nonce)) {
            return false;
        }
        while self.seen.len() >= self.capacity.max(1) {
            match self.order.pop_front() {
                Some((_, m, n)) => {
                    self.seen.remove(&(m, n));
                }
                None => break,
            }
        }
        self.seen.insert((mailbox, nonce), until);
        self.order.push_back((until, mailbox, nonce));
        true
    }
}

/// Checks that `auth` is a fresh, unreplayed request for operation `op` with `body`, signed by
/// the mailbox's key and meant for relay `me`. The signature is verified before the relay-wide
/// replay cache is locked, which is then held only to record the nonce: a flood of requests
/// with bad signatures costs its sender the verifications and never holds up anyone else's.
pub fn check(
    me: &RelayId,
    op: u8,
    auth: &MailboxAuth,
    body: &[u8],
    now: u64,
    cache: &Mutex<ReplayCache>,
) -> Result<(), Status> {
    if auth.timestamp.abs_diff(now) > FRESHNESS_SECS {
        return Err(Status::Stale);
    }
    let key = VerifyingKey::from_bytes(&auth.mailbox.0).map_err(|_| Status::BadSignature)?;
    let msg = auth_message(me, op, &auth.mailbox, auth.timestamp, &auth.nonce, body);
    key.verify_strict(&msg, &Signature::from_bytes(&auth.signature))
        .map_err(|_| Status::BadSignature)?;
    // The nonce is remembered until the timestamp could no longer pass the freshness check.
    if !lock(cache).insert(
        auth.mailbox,
        auth.nonce,
        auth.timestamp + FRESHNESS_SECS + 1,
        now,
    ) {
        return Err(Status::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;
    use shallot_proto::mailbox::kind;

    fn signed(
        key: &ed25519_dalek::SigningKey,
        me: &RelayId,
        op: u8,
        ts: u64,
        nonce: [u8; 16],
    ) -> MailboxAuth {
        let mailbox = MailboxId(key.verifying_key().to_bytes());
        let sig = key.sign(&auth_message(me, op, &mailbox, ts, &nonce, b""));
        MailboxAuth {
            mailbox,
            timestamp: ts,
            nonce,
            signature: sig.to_bytes(),
        }
    }

    #[test]
    fn accepts_once_then_refuses_replays() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
        let me = RelayId([3; 20]);
        let cache = Mutex::new(ReplayCache::new(100));
        let a = signed(&key, &me, kind::FETCH, 1000, [1; 16]);
        assert_eq!(check(&me, kind::FETCH, &a, b"", 1000, &cache), Ok(()));
        assert_eq!(
            check(&me, kind::FETCH, &a, b"", 1001, &cache),
            Err(Status::Stale)
        );
        // Another relay, another op, another body, a stale or future time: all refused.
        assert_eq!(
            check(
                &RelayId([4; 20]),
                kind::FETCH,
                &signed(&key, &me, kind::FETCH, 1000, [2; 16]),
                b"",
                1000,
                &cache
            ),
            Err(Status::BadSignature)
        );
        assert_eq!(
            check(
                &me,
                kind::ACK,
                &signed(&key, &me, kind::FETCH, 1000, [3; 16]),
                b"",
                1000,
                &cache
            ),
            Err(Status::BadSignature)
        );
        assert_eq!(
            check(
                &me,
                kind::FETCH,
                &signed(&key, &me, kind::FETCH, 1000, [4; 16]),
                b"x",
                1000,
                &cache
            ),
            Err(Status::BadSignature)
        );
        assert_eq!(
            check(
                &me,
                kind::FETCH,
                &signed(&key, &me, kind::FETCH, 800, [5; 16]),
                b"",
                1000,
                &cache
            ),
            Err(Status::Stale)
        );
        assert_eq!(
            check(
                &me,
                kind::FETCH,
                &signed(&key, &me, kind::FETCH, 1200, [6; 16]),
                b"",
                1000,
                &cache
            ),
            Err(Status::Stale)
        );
        // Signed by another key for this mailbox.
        let other = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
        let mut forged = signed(&other, &me, kind::FETCH, 1000, [7; 16]);
        forged.mailbox = a.mailbox;
        assert_eq!(
            check(&me, kind::FETCH, &forged, b"", 1000, &cache),
            Err(Status::BadSignature)
        );
    }

    #[test]
    fn signatures_are_checked_before_the_replay_cache_is_locked() {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
        let me = RelayId([3; 20]);
        let cache = std::sync::Arc::new(Mutex::new(ReplayCache::new(100)));
        let mut forged = signed(&key, &me, kind::FETCH, 1000, [1; 16]);
        forged.signature[0] ^= 1;
        // Another request holds the cache: a forged request is still answered at once, so
        // none is verified under the lock.
        let held = lock(&cache);
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cache.clone();
        let worker = std::thread::spawn(move || {
            tx.send(check(&me, kind::FETCH, &forged, b"", 1000, &c))
                .unwrap();
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(30));
        drop(held);
        worker.join().unwrap();
        assert_eq!(answer, Ok(Err(Status::BadSignature)));
        // A good one takes the lock to record its nonce, once.
        let good = signed(&key, &me, kind::FETCH, 1000, [2; 16]);
        assert_eq!(check(&me, kind::FETCH, &good, b"", 1000, &cache), Ok(()));
        assert_eq!(
            check(&me, kind::FETCH, &good, b"", 1000, &cache),
            Err(Status::Stale)
        );
    }

    #[test]
    fn the_cache_is_bounded_and_never_locks_owners_out() {
        let mut cache = ReplayCache::new(2);
        assert!(cache.insert(MailboxId([0; 32]), [1; 16], 10, 0));
        assert!(cache.insert(MailboxId([0; 32]), [2; 16], 20, 0));
        assert!(
            !cache.insert(MailboxId([0; 32]), [2; 16], 20, 1),
            "a replay is refused"
        );
        // Full of fresh nonces: a new request is still accepted, the oldest nonce forgotten.
        assert!(cache.insert(MailboxId([1; 32]), [3; 16], 20, 5));
        assert_eq!(cache.seen.len(), 2);
        assert!(!cache.seen.contains_key(&(MailboxId([0; 32]), [1; 16])));
        assert!(!cache.insert(MailboxId([1; 32]), [3; 16], 30, 11));
    }
}
