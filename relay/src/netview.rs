//! The relay's view of the other relays, taken from the consensus: where each one listens and
//! which link key it must prove (`docs/spec.md` §6.4).

use std::collections::HashMap;
use std::net::SocketAddr;

use shallot_crypto::keys::RelayId;

/// What a relay needs to know to extend a circuit to another relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's fingerprint.
    pub id: RelayId,
    /// Its link address.
    pub address: SocketAddr,
    /// The static Noise key its links must prove.
    pub link_key: [u8; 32],
}

/// The relays this relay may extend circuits to.
#[derive(Debug, Default)]
pub struct NetView {
    by_id: HashMap<RelayId, PeerInfo>,
    by_link_key: HashMap<[u8; 32], RelayId>,
}

impl NetView {
    /// A view listing `peers`.
    pub fn new(peers: impl IntoIterator<Item = PeerInfo>) -> Self {
        let mut view = NetView::default();
        for p in peers {
            view.by_link_key.insert(p.link_key, p.id);
            view.by_id.insert(p.id, p);
        }
        view
    }

    /// The listed relay with fingerprint `id`.
    pub fn lookup(&self, id: &RelayId) -> Option<&PeerInfo> {
        self.by_id.get(id)
    }

    /// The listed relay whose link key is `key`, if any.
    pub fn identify(&self, key: &[u8; 32]) -> Option<RelayId> {
        self.by_link_key.get(key).copied()
    }

    /// How many relays are listed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no relay is listed.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
