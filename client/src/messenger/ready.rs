//! Message keys taken while the user types (`docs/spec.md` §10.7, keys taken ahead): when the
//! chat says the user is writing to a contact, the next message key of that contact's session
//! is taken and the session saved past it, so that the message, once sent, leaves without
//! waiting for the disk. At most one key per peer, held in memory only: a key lost with the
//! process was never used, and the saved session has moved past it, so it is never given
//! again.
//!
//! This module keeps the keys and the bookkeeping of keys being taken; taking one (a commit)
//! is the messenger's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shallot_rt::lock;

use crate::e2e::session::ReadyKey;

/// A peer's slot: a key being taken (by the take numbered so), or one ready.
enum Slot<K> {
    Taking(u64),
    Ready(K),
}

struct Inner<K> {
    /// Each peer's slot, with when the user last reported writing to the peer (unix
    /// seconds) before its take began.
    slots: HashMap<[u8; 32], (Slot<K>, u64)>,
    next_take: u64,
}

/// The message keys taken ahead, by peer identity key; cheap to clone (shared). `K` is a
/// key ([`ReadyKey`]; anything, in the tests).
pub struct ReadyKeys<K = ReadyKey> {
    inner: Arc<Mutex<Inner<K>>>,
}

impl<K> Clone for ReadyKeys<K> {
    fn clone(&self) -> Self {
        ReadyKeys {
            inner: self.inner.clone(),
        }
    }
}

impl<K> Default for ReadyKeys<K> {
    fn default() -> Self {
        ReadyKeys {
            inner: Arc::new(Mutex::new(Inner {
                slots: HashMap::new(),
                next_take: 0,
            })),
        }
    }
}

impl<K> ReadyKeys<K> {
    /// Claims the right to take a key for `peer`, whom the user reported writing to at
    /// `typed_at`: `None` if one is ready or being taken (its slot then remembers the later
    /// report), else the number of this take, for [`ReadyKeys::taken`].
    pub fn begin(&self, peer: &[u8; 32], typed_at: u64) -> Option<u64> {
        let mut inner = lock(&self.inner);
        if let Some((_, at)) = inner.slots.get_mut(peer) {
            *at = (*at).max(typed_at);
            return None;
        }
        let take = inner.next_take;
        inner.next_take += 1;
        inner.slots.insert(*peer, (Slot::Taking(take), typed_at));
        Some(take)
    }

    /// Ends take number `take` for `peer` with `key` (or none, if it failed). The key is kept
    /// only if that take is still the peer's: a key taken before a message from the peer
    /// arrived ([`ReadyKeys::forget`]) is dropped, so that the next message takes the
    /// ratchet step that message calls for.
    pub fn taken(&self, peer: &[u8; 32], take: u64, key: Option<K>) {
        let mut inner = lock(&self.inner);
        let Some((slot, _)) = inner.slots.get_mut(peer) else {
            return;
        };
        if !matches!(slot, Slot::Taking(t) if *t == take) {
            return;
        }
        match key {
            Some(key) => *slot = Slot::Ready(key),
            None => {
                inner.slots.remove(peer);
            }
        }
    }

    /// Takes out `peer`'s ready key, if there is one; a key being taken is left to finish.
    pub fn take(&self, peer: &[u8; 32]) -> Option<K> {
        let mut inner = lock(&self.inner);
        if !matches!(inner.slots.get(peer), Some((Slot::Ready(_), _))) {
            return None;
        }
        match inner.slots.remove(peer) {
            Some((Slot::Ready(key), _)) => Some(key),
            _ => None,
        }
    }

    /// Drops `peer`'s key, ready or being taken (a message from the peer that took a ratchet
    /// step was opened). If there was one, when the user last reported writing to the peer
    /// before it was taken: a new key may be taken once what the message did to the session
    /// is committed.
    pub fn forget(&self, peer: &[u8; 32]) -> Option<u64> {
        lock(&self.inner)
            .slots
            .remove(peer)
            .map(|(_, typed_at)| typed_at)
    }

    /// `f` of `peer`'s ready key, if there is one.
    pub fn peek<R>(&self, peer: &[u8; 32], f: impl FnOnce(&K) -> R) -> Option<R> {
        match lock(&self.inner).slots.get(peer) {
            Some((Slot::Ready(key), _)) => Some(f(key)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: [u8; 32] = [7; 32];

    #[test]
    fn one_key_per_peer_taken_once() {
        let keys = ReadyKeys::<u32>::default();
        let take = keys.begin(&PEER, 5).unwrap();
        assert_eq!(keys.begin(&PEER, 5), None, "a second take while one runs");
        assert!(keys.peek(&PEER, |_| ()).is_none());
        assert_eq!(keys.take(&PEER), None, "not ready yet");
        keys.taken(&PEER, take, Some(1));
        assert!(keys.peek(&PEER, |_| ()).is_some());
        assert_eq!(
            keys.begin(&PEER, 5),
            None,
            "a second take while one is ready"
        );
        assert_eq!(keys.take(&PEER), Some(1));
        assert_eq!(keys.take(&PEER), None, "a key is given once");
        assert!(
            keys.begin(&PEER, 5).is_some(),
            "then a new one may be taken"
        );
    }

    #[test]
    fn a_key_taken_before_the_peer_spoke_is_dropped() {
        let keys = ReadyKeys::<u32>::default();
        assert_eq!(keys.forget(&PEER), None, "nothing to drop");
        let old = keys.begin(&PEER, 5).unwrap();
        assert_eq!(keys.forget(&PEER), Some(5), "a key being taken is dropped");
        let new = keys.begin(&PEER, 5).unwrap();
        keys.taken(&PEER, old, Some(1));
        assert!(
            keys.peek(&PEER, |_| ()).is_none(),
            "the old take's key is not kept"
        );
        keys.taken(&PEER, new, Some(2));
        assert_eq!(keys.take(&PEER), Some(2));
        // A ready key is dropped too.
        let t = keys.begin(&PEER, 5).unwrap();
        keys.taken(&PEER, t, Some(3));
        assert_eq!(keys.forget(&PEER), Some(5), "a ready key is dropped");
        assert_eq!(keys.take(&PEER), None);
    }

    #[test]
    fn a_later_report_of_typing_is_remembered() {
        let keys = ReadyKeys::<u32>::default();
        let t = keys.begin(&PEER, 5).unwrap();
        assert_eq!(keys.begin(&PEER, 40), None);
        keys.taken(&PEER, t, Some(1));
        assert_eq!(
            keys.begin(&PEER, 30),
            None,
            "an older report changes nothing"
        );
        assert_eq!(keys.forget(&PEER), Some(40));
    }

    #[test]
    fn a_failed_take_frees_the_slot() {
        let keys = ReadyKeys::<u32>::default();
        let t = keys.begin(&PEER, 5).unwrap();
        keys.taken(&PEER, t, None);
        assert!(keys.begin(&PEER, 5).is_some());
    }
}
