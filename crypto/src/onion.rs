//! Onion layers: one ChaCha20-Poly1305 layer per hop and direction (`docs/spec.md` §4).
//!
//! A relay cell's 509-byte payload holds nested layers. The layer of the hop at depth `d`
//! (1-based) fills the first [`layer_len`]`(d) = 509 − 17·(d−1)` bytes and is
//! `seal(inner ‖ marker) ‖ tag`: the 16-byte tag and the 1-byte marker are the 17 bytes each
//! layer costs. The marker says whether the inner bytes are the next hop's layer
//! ([`Marker::Forward`]) or a message for this hop ([`Marker::Deliver`]). A hop that removes a
//! layer pads the cell back to 509 bytes with zeros, so cells never change size; a hop that
//! adds a layer (replies travelling back) only ever reads the first `layer_len(d+1)` bytes of
//! what it received, so nothing a later hop appends survives to the client.
//!
//! Keys come from the ntor key seed ([`HopKeys::from_key_seed`]); nonces are 64-bit counters
//! that never repeat and never wrap ([`OnionError::NonceExhausted`] comes first). Any change
//! to any byte of a layer makes [`OnionError::BadTag`].

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ntor::KeySeed;

/// Bytes in a relay cell's payload.
pub const CELL_PAYLOAD_LEN: usize = 509;
/// Bytes of AEAD tag per layer.
pub const TAG_LEN: usize = 16;
/// Bytes each layer costs: the tag and the marker.
pub const LAYER_OVERHEAD: usize = TAG_LEN + 1;
/// The deepest hop a circuit may have.
pub const MAX_HOPS: u8 = 8;

/// A relay cell's payload.
pub type Payload = [u8; CELL_PAYLOAD_LEN];

/// Length of the layer sealed for the hop at `depth` (1-based): `509 − 17·(depth − 1)`.
pub const fn layer_len(depth: u8) -> usize {
    CELL_PAYLOAD_LEN - LAYER_OVERHEAD * (depth as usize - 1)
}

/// Bytes of message a cell can deliver to the hop at `depth`: `509 − 17·depth`.
pub const fn body_len(depth: u8) -> usize {
    layer_len(depth) - LAYER_OVERHEAD
}

/// What a layer's inner bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Marker {
    /// Forward direction: the next hop's layer. Backward: a layer added on the way back.
    Forward = 0x01,
    /// A message for (forward) or from (backward) the hop that owns this layer.
    Deliver = 0x02,
}

/// Why a layer operation failed. Every one of these ends the circuit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OnionError {
    /// A layer did not authenticate: some byte was changed, or the cell is out of order.
    #[error("onion layer of hop {hop} failed to authenticate")]
    BadTag {
        /// The hop (1-based) whose layer failed.
        hop: u8,
    },
    /// A layer authenticated but its marker byte is neither forward nor deliver.
    #[error("onion layer of hop {hop} has an invalid marker {marker:#04x}")]
    BadMarker {
        /// The hop (1-based) whose layer carried it.
        hop: u8,
        /// The marker found.
        marker: u8,
    },
    /// A cell says to go on past the last hop of the circuit.
    #[error("cell is marked for forwarding beyond the last hop")]
    PastLastHop,
    /// A layer key has sealed or opened 2^64 − 1 cells; the circuit must be replaced.
    #[error("onion layer nonce counter exhausted")]
    NonceExhausted,
    /// The circuit would be deeper than [`MAX_HOPS`].
    #[error("circuit depth {0} is outside 1..={MAX_HOPS}")]
    BadDepth(usize),
    /// A message is longer than a cell can carry to its hop.
    #[error("message of {len} bytes exceeds the {max} bytes a cell carries to hop {hop}")]
    BodyTooLong {
        /// The message length.
        len: usize,
        /// What fits.
        max: usize,
        /// The target hop.
        hop: u8,
    },
}

/// The two 32-byte layer keys of one hop, expanded from its ntor key seed.
pub struct HopKeys {
    forward: Zeroizing<[u8; 32]>,
    backward: Zeroizing<[u8; 32]>,
}

impl HopKeys {
    /// Bytes 0..32 of the ntor key expansion are the forward key, 32..64 the backward key.
    pub fn from_key_seed(seed: &KeySeed) -> Result<Self, crate::ntor::NtorError> {
        let mut material = Zeroizing::new([0u8; 64]);
        seed.expand(&mut *material)?;
        let mut forward = Zeroizing::new([0u8; 32]);
        let mut backward = Zeroizing::new([0u8; 32]);
        forward.copy_from_slice(&material[..32]);
        backward.copy_from_slice(&material[32..]);
        Ok(HopKeys { forward, backward })
    }
}

/// One direction of one hop: an AEAD key and the counter for its next nonce.
struct LayerCipher {
    aead: ChaCha20Poly1305,
    next: u64,
}

impl LayerCipher {
    fn new(key: &[u8; 32]) -> Self {
        LayerCipher {
            aead: ChaCha20Poly1305::new(Key::from_slice(key)),
            next: 0,
        }
    }

    /// The nonce for the next operation: 4 zero bytes, then the counter little-endian.
    fn nonce(&mut self) -> Result<Nonce, OnionError> {
        if self.next == u64::MAX {
            return Err(OnionError::NonceExhausted);
        }
        let mut nonce = Nonce::default();
        nonce[4..].copy_from_slice(&self.next.to_le_bytes());
        self.next += 1;
        Ok(nonce)
    }

    /// Seals the layer of the hop at `depth` in place: `payload[..layer_len - 17]` holds the
    /// inner bytes; the marker and tag are written after them.
    fn seal(&mut self, payload: &mut Payload, depth: u8, marker: Marker) -> Result<(), OnionError> {
        let len = layer_len(depth);
        let nonce = self.nonce()?;
        payload[len - LAYER_OVERHEAD] = marker as u8;
        let (plain, rest) = payload.split_at_mut(len - TAG_LEN);
        let tag = self
            .aead
            .encrypt_in_place_detached(&nonce, &[], plain)
            .map_err(|_| OnionError::NonceExhausted)?;
        rest[..TAG_LEN].copy_from_slice(&tag);
        Ok(())
    }

    /// Opens the layer of the hop at `depth` in place and returns its marker.
    fn open(&mut self, payload: &mut Payload, depth: u8) -> Result<Marker, OnionError> {
        let len = layer_len(depth);
        let nonce = self.nonce()?;
        let (sealed, rest) = payload.split_at_mut(len - TAG_LEN);
        let tag = Tag::clone_from_slice(&rest[..TAG_LEN]);
        self.aead
            .decrypt_in_place_detached(&nonce, &[], sealed, &tag)
            .map_err(|_| OnionError::BadTag { hop: depth })?;
        match sealed[len - LAYER_OVERHEAD] {
            0x01 => Ok(Marker::Forward),
            0x02 => Ok(Marker::Deliver),
            marker => Err(OnionError::BadMarker { hop: depth, marker }),
        }
    }
}

fn check_depth(depth: usize) -> Result<u8, OnionError> {
    match u8::try_from(depth) {
        Ok(d) if (1..=MAX_HOPS).contains(&d) => Ok(d),
        _ => Err(OnionError::BadDepth(depth)),
    }
}

/// The client's view of a circuit's layers: it wraps cells for any hop and unwraps replies
/// from any hop.
#[derive(Default)]
pub struct ClientLayers {
    hops: Vec<(LayerCipher, LayerCipher)>,
}

impl ClientLayers {
    /// A circuit with no hops yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next hop's keys, once its handshake has completed.
    pub fn push_hop(&mut self, keys: &HopKeys) -> Result<(), OnionError> {
        check_depth(self.hops.len() + 1)?;
        self.hops.push((
            LayerCipher::new(&keys.forward),
            LayerCipher::new(&keys.backward),
        ));
        Ok(())
    }

    /// How many hops the circuit has.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the circuit has no hops yet.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Wraps `body` for delivery to hop `hop` (1-based). Bytes after `body` up to
    /// [`body_len`]`(hop)` are zero.
    pub fn wrap(&mut self, hop: usize, body: &[u8]) -> Result<Payload, OnionError> {
        let depth = check_depth(hop)?;
        if hop > self.hops.len() {
            return Err(OnionError::BadDepth(hop));
        }
        let max = body_len(depth);
        if body.len() > max {
            return Err(OnionError::BodyTooLong {
                len: body.len(),
                max,
                hop: depth,
            });
        }
        let mut payload = [0u8; CELL_PAYLOAD_LEN];
        payload[..body.len()].copy_from_slice(body);
        let mut marker = Marker::Deliver;
        for d in (1..=depth).rev() {
            self.hops[usize::from(d) - 1]
                .0
                .seal(&mut payload, d, marker)?;
            marker = Marker::Forward;
        }
        Ok(payload)
    }

    /// Unwraps a reply in place. Returns the hop (1-based) it came from; the message is
    /// `payload[..body_len(hop)]`.
    pub fn unwrap(&mut self, payload: &mut Payload) -> Result<usize, OnionError> {
        for (i, (_, backward)) in self.hops.iter_mut().enumerate() {
            let depth = check_depth(i + 1)?;
            if backward.open(payload, depth)? == Marker::Deliver {
                return Ok(i + 1);
            }
        }
        Err(OnionError::PastLastHop)
    }
}

/// What a relay found under its layer of a cell travelling away from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peeled {
    /// The payload now holds the next hop's layer, padded with zeros: send it on.
    Forward,
    /// The payload's first [`body_len`]`(depth)` bytes are a message for this relay.
    Deliver,
}

/// One relay's layer of a circuit: it peels cells going away from the client and adds its
/// layer to cells going back.
pub struct RelayLayer {
    depth: u8,
    forward: LayerCipher,
    backward: LayerCipher,
}

impl RelayLayer {
    /// This relay's layer, at `depth` (1-based) on the circuit.
    pub fn new(depth: u8, keys: &HopKeys) -> Result<Self, OnionError> {
        check_depth(usize::from(depth))?;
        Ok(RelayLayer {
            depth,
            forward: LayerCipher::new(&keys.forward),
            backward: LayerCipher::new(&keys.backward),
        })
    }

    /// This relay's depth on the circuit.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// Bytes of message a cell can carry to or from this relay.
    pub fn body_len(&self) -> usize {
        body_len(self.depth)
    }

    /// Removes this relay's layer from a cell travelling away from the client.
    pub fn peel(&mut self, payload: &mut Payload) -> Result<Peeled, OnionError> {
        let marker = self.forward.open(payload, self.depth)?;
        // Whatever follows the inner bytes (our marker and tag, and earlier padding) is
        // replaced by zeros, so the next hop sees nothing this cell carried outside its layer.
        payload[layer_len(self.depth) - LAYER_OVERHEAD..].fill(0);
        match marker {
            Marker::Forward if self.depth == MAX_HOPS => Err(OnionError::PastLastHop),
            Marker::Forward => Ok(Peeled::Forward),
            Marker::Deliver => Ok(Peeled::Deliver),
        }
    }

    /// Adds this relay's layer to a cell from the next hop travelling back to the client.
    /// Only the first `layer_len(depth + 1)` bytes of `payload` are kept.
    pub fn add_layer(&mut self, payload: &mut Payload) -> Result<(), OnionError> {
        if self.depth == MAX_HOPS {
            return Err(OnionError::PastLastHop);
        }
        self.backward.seal(payload, self.depth, Marker::Forward)?;
        payload[layer_len(self.depth)..].fill(0);
        Ok(())
    }

    /// Seals a message from this relay to the client in place: the message is
    /// `payload[..body_len(depth)]`.
    pub fn originate(&mut self, payload: &mut Payload) -> Result<(), OnionError> {
        self.backward.seal(payload, self.depth, Marker::Deliver)?;
        payload[layer_len(self.depth)..].fill(0);
        Ok(())
    }

    /// Test support: sets both nonce counters, to reach exhaustion without 2^64 cells.
    #[cfg(test)]
    fn set_counters_for_test(&mut self, next: u64) {
        self.forward.next = next;
        self.backward.next = next;
    }
}

impl ClientLayers {
    /// Test support: sets every nonce counter, to reach exhaustion without 2^64 cells.
    #[cfg(test)]
    fn set_counters_for_test(&mut self, next: u64) {
        for (f, b) in &mut self.hops {
            f.next = next;
            b.next = next;
        }
    }
}

#[cfg(test)]
mod tests;
