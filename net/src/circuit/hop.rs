//! One hop of a client circuit (`docs/spec.md` §6.3–6.4): its number, the relay it is, and
//! everything the client tracks for it (flow-control windows both ways, cells read and not
//! yet acknowledged, the message being reassembled), kept together in one struct.

use std::fmt;
use std::num::NonZeroU8;

use shallot_crypto::keys::RelayId;
use shallot_crypto::onion::MAX_HOPS;
use shallot_proto::flow::{RecvWindow, SendWindow};
use shallot_proto::relay_msg::{Reassembler, MAX_RELAY_MSG_LEN};

/// A hop's position on a circuit, counted from 1 at the client's end: not an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HopNum(NonZeroU8);

impl HopNum {
    /// The first hop (the guard).
    pub const FIRST: HopNum = HopNum(NonZeroU8::MIN);
    /// The second hop.
    pub const SECOND: HopNum = HopNum(NonZeroU8::MIN.saturating_add(1));
    /// The third hop.
    pub const THIRD: HopNum = HopNum(NonZeroU8::MIN.saturating_add(2));

    /// The hop `n` (1-based), if a circuit can have it.
    pub fn new(n: usize) -> Option<HopNum> {
        u8::try_from(n)
            .ok()
            .filter(|&d| d <= MAX_HOPS)
            .and_then(NonZeroU8::new)
            .map(HopNum)
    }

    /// The hop after this one, if a circuit can have it.
    pub fn next(self) -> Option<HopNum> {
        HopNum::new(self.get() + 1)
    }

    /// Its number, 1-based.
    pub fn get(self) -> usize {
        usize::from(self.0.get())
    }

    /// Its depth in the onion layers (the same number, as the layer code counts).
    pub fn depth(self) -> u8 {
        self.0.get()
    }

    /// Its index among the hops, 0-based.
    pub(crate) fn index(self) -> usize {
        self.get() - 1
    }
}

impl fmt::Display for HopNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hop {}", self.0)
    }
}

/// A relay as a circuit hop: who it is and its onion key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSpec {
    /// Its fingerprint.
    pub id: RelayId,
    /// Its ntor onion key.
    pub ntor_key: [u8; 32],
    /// Its nickname, for display.
    pub nickname: String,
}

impl From<&shallot_proto::dir::RelayEntry> for HopSpec {
    fn from(r: &shallot_proto::dir::RelayEntry) -> Self {
        HopSpec {
            id: r.id,
            ntor_key: r.ntor_key,
            nickname: r.nickname.clone(),
        }
    }
}

/// The client's state for one built hop (its layer keys live with the others' in the
/// circuit's onion, which wraps for every hop at once).
#[derive(Debug)]
pub(crate) struct Hop {
    /// The relay.
    pub(crate) spec: HopSpec,
    /// Counted cells this client may still send to the hop.
    pub(crate) send_window: SendWindow,
    /// Counted cells the hop may still send before this client acknowledges.
    pub(crate) recv_window: RecvWindow,
    /// Counted cells delivered to the reader and not yet consumed (so not yet acknowledged).
    pub(crate) unread: u32,
    /// The message being reassembled from the hop's cells.
    pub(crate) assembling: Reassembler,
    /// Cells the message being reassembled has taken so far.
    pub(crate) assembling_cells: u32,
}

impl Hop {
    /// A freshly built hop: full windows, nothing in flight.
    pub(crate) fn new(spec: HopSpec) -> Self {
        Hop {
            spec,
            send_window: SendWindow::default(),
            recv_window: RecvWindow::default(),
            unread: 0,
            assembling: Reassembler::new(MAX_RELAY_MSG_LEN),
            assembling_cells: 0,
        }
    }

    /// Whether `cells` more counted cells from the hop fit in its window beside those it
    /// sent that are not yet consumed.
    pub(crate) fn window_fits(&self, cells: u32) -> bool {
        self.unread.saturating_add(cells) <= self.recv_window.remaining()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_numbers_start_at_one_and_stop_at_the_deepest_layer() {
        assert_eq!(HopNum::new(0), None);
        assert_eq!(HopNum::new(1), Some(HopNum::FIRST));
        assert_eq!(HopNum::new(3), Some(HopNum::THIRD));
        assert_eq!(HopNum::FIRST.next(), Some(HopNum::SECOND));
        assert_eq!(HopNum::THIRD.index(), 2);
        assert_eq!(HopNum::new(usize::from(MAX_HOPS) + 1), None);
        assert_eq!(HopNum::SECOND.to_string(), "hop 2");
    }
}
