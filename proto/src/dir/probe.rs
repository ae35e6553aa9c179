//! The reachability probe's two messages (`docs/spec.md` §5.7, §6.1): the authority's
//! challenge and the relay's answer, each one 514-byte block sent as a cell-sized record over
//! a probe link (Noise NK, preamble `0x03`).
//!
//! ```text
//! challenge = version(1) = 1 ‖ nonce(32) ‖ ntor client message(84) ‖ transfer(2) ‖ zeros
//! answer    = version(1) = 1 ‖ ntor server message(64) ‖ signature(64) ‖ zeros
//! ```
//!
//! The ntor client message names the relay's fingerprint and onion key from its descriptor: a
//! relay answers it only for its own fingerprint, so the holder of the onion key vouches for
//! the identity (Tor's ntor-onion-key-crosscert, made live). The signature is by the relay's
//! identity key over [`signed_message`], which binds the link's Noise handshake hash: the
//! identity is present on this very link, which proved the link key. After the answer the
//! relay sends `transfer` zero blocks, which the authority times (§5.7).

use shallot_crypto::ntor::{ClientMessage, ServerMessage, CLIENT_MESSAGE_LEN, SERVER_MESSAGE_LEN};
use shallot_crypto::reader::{DecodeError, Reader};

use crate::cell::CELL_LEN;

/// Bytes in each probe message: one cell's worth, so that it travels as one link record.
pub const PROBE_BLOCK_LEN: usize = CELL_LEN;
/// The most blocks a challenge may ask the relay to send after its answer (514 KiB).
pub const MAX_TRANSFER_BLOCKS: u16 = 1024;
const VERSION: u8 = 1;
const SIGNED_PREFIX: &[u8] = b"shallot-probe-answer-v1";

/// The authority's challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Fresh random bytes.
    pub nonce: [u8; 32],
    /// An ntor handshake addressed to the fingerprint and onion key the descriptor names.
    pub ntor: ClientMessage,
    /// Blocks the relay sends after its answer, for the timed transfer.
    pub transfer: u16,
}

impl Challenge {
    /// The 514-byte block.
    pub fn encode(&self) -> [u8; PROBE_BLOCK_LEN] {
        let mut out = [0u8; PROBE_BLOCK_LEN];
        out[0] = VERSION;
        out[1..33].copy_from_slice(&self.nonce);
        out[33..33 + CLIENT_MESSAGE_LEN].copy_from_slice(&self.ntor.to_bytes());
        let at = 33 + CLIENT_MESSAGE_LEN;
        out[at..at + 2].copy_from_slice(&self.transfer.to_be_bytes());
        out
    }

    /// Decodes a block, refusing another version, a transfer over [`MAX_TRANSFER_BLOCKS`] and
    /// anything but zeros after the fields.
    pub fn decode(bytes: &[u8]) -> Result<Challenge, DecodeError> {
        let mut r = Reader::new(exact_block(bytes)?);
        check_version(r.u8()?)?;
        let nonce = r.array::<32>()?;
        let ntor = ClientMessage::from_bytes(&r.array::<CLIENT_MESSAGE_LEN>()?);
        let transfer = r.u16()?;
        if transfer > MAX_TRANSFER_BLOCKS {
            return Err(DecodeError::BadValue {
                field: "transfer",
                reason: "more blocks than a probe may ask for",
            });
        }
        r.finish_zero_padded()?;
        Ok(Challenge {
            nonce,
            ntor,
            transfer,
        })
    }
}

/// The relay's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The ntor server reply, proving the onion key under the relay's own fingerprint.
    pub ntor: ServerMessage,
    /// The identity key's signature over [`signed_message`].
    pub signature: [u8; 64],
}

impl Answer {
    /// The 514-byte block.
    pub fn encode(&self) -> [u8; PROBE_BLOCK_LEN] {
        let mut out = [0u8; PROBE_BLOCK_LEN];
        out[0] = VERSION;
        out[1..1 + SERVER_MESSAGE_LEN].copy_from_slice(&self.ntor.to_bytes());
        let at = 1 + SERVER_MESSAGE_LEN;
        out[at..at + 64].copy_from_slice(&self.signature);
        out
    }

    /// Decodes a block.
    pub fn decode(bytes: &[u8]) -> Result<Answer, DecodeError> {
        let mut r = Reader::new(exact_block(bytes)?);
        check_version(r.u8()?)?;
        let ntor = ServerMessage::from_bytes(&r.array::<SERVER_MESSAGE_LEN>()?);
        let signature = r.array::<64>()?;
        r.finish_zero_padded()?;
        Ok(Answer { ntor, signature })
    }
}

/// What the relay's identity key signs: a prefix, the link's Noise handshake hash, the whole
/// challenge block and the ntor reply.
pub fn signed_message(
    handshake_hash: &[u8; 32],
    challenge: &Challenge,
    reply: &ServerMessage,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_PREFIX.len() + 32 + PROBE_BLOCK_LEN + 64);
    m.extend_from_slice(SIGNED_PREFIX);
    m.extend_from_slice(handshake_hash);
    m.extend_from_slice(&challenge.encode());
    m.extend_from_slice(&reply.to_bytes());
    m
}

fn exact_block(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    if bytes.len() != PROBE_BLOCK_LEN {
        return Err(DecodeError::BadValue {
            field: "probe message",
            reason: "not one 514-byte block",
        });
    }
    Ok(bytes)
}

fn check_version(v: u8) -> Result<(), DecodeError> {
    if v != VERSION {
        return Err(DecodeError::BadValue {
            field: "probe version",
            reason: "not a version this node speaks",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shallot_crypto::keys::RelayId;

    fn challenge() -> Challenge {
        Challenge {
            nonce: [1; 32],
            ntor: ClientMessage {
                relay_id: RelayId([2; 20]),
                onion_key: [3; 32],
                client_key: [4; 32],
            },
            transfer: 7,
        }
    }

    #[test]
    fn messages_round_trip_and_refuse_junk() {
        let c = challenge();
        let block = c.encode();
        assert_eq!(Challenge::decode(&block).unwrap(), c);
        let mut trailing = block;
        trailing[PROBE_BLOCK_LEN - 1] = 1;
        assert!(Challenge::decode(&trailing).is_err());
        let mut too_many = c.clone();
        too_many.transfer = MAX_TRANSFER_BLOCKS + 1;
        assert!(Challenge::decode(&too_many.encode()).is_err());
        assert!(Challenge::decode(&block[1..]).is_err());
        let mut v2 = block;
        v2[0] = 2;
        assert!(Challenge::decode(&v2).is_err());

        let a = Answer {
            ntor: ServerMessage {
                server_key: [5; 32],
                auth: [6; 32],
            },
            signature: [7; 64],
        };
        assert_eq!(Answer::decode(&a.encode()).unwrap(), a);
        let mut junk = a.encode();
        junk[200] = 1;
        assert!(Answer::decode(&junk).is_err());
    }

    #[test]
    fn the_signed_message_binds_every_input() {
        let c = challenge();
        let reply = ServerMessage {
            server_key: [5; 32],
            auth: [6; 32],
        };
        let base = signed_message(&[9; 32], &c, &reply);
        assert_ne!(base, signed_message(&[8; 32], &c, &reply));
        let mut other = c.clone();
        other.nonce = [0; 32];
        assert_ne!(base, signed_message(&[9; 32], &other, &reply));
        let mut other_reply = reply.clone();
        other_reply.auth = [0; 32];
        assert_ne!(base, signed_message(&[9; 32], &c, &other_reply));
    }

    proptest! {
        #[test]
        fn arbitrary_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Challenge::decode(&bytes);
            let _ = Answer::decode(&bytes);
        }
    }
}
