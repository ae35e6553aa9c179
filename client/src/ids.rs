//! The two 16-byte ids of messaging, as types that cannot be mistaken for each other
//! (`docs/spec.md` §9.3, §10.6): a [`MessageId`] names a message end to end and is chosen by
//! its sender; an [`EnvelopeId`] is a mailbox's name for one sealed envelope, the hash of its
//! bytes. Acknowledgements to a sender carry message ids; acknowledgements to a mailbox carry
//! envelope ids; de-duplication uses each for its own purpose.

use std::fmt;

use rand::{CryptoRng, RngCore};
use shallot_crypto::hex;

/// A message's id, chosen at random by its sender and the same on every retransmission.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random id.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        MessageId(id)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the hex form [`MessageId`]'s `Display` writes.
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode_array::<16>(text).ok().map(MessageId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// A mailbox's name for one envelope: the first 16 bytes of SHA-256 over its bytes. It is the
/// protocol's own type, so that what the relay names and what the store records cannot differ.
pub use shallot_proto::mailbox::EnvelopeId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_round_trips_through_hex() {
        let id = MessageId::random(&mut rand::thread_rng());
        assert_eq!(MessageId::from_hex(&id.to_string()), Some(id));
        assert_eq!(MessageId::from_hex("zz"), None);
    }

    #[test]
    fn an_envelope_id_is_the_hash_of_its_bytes() {
        assert_eq!(EnvelopeId::of(b"abc"), EnvelopeId::of(b"abc"));
        assert_ne!(EnvelopeId::of(b"abc"), EnvelopeId::of(b"abd"));
    }
}
