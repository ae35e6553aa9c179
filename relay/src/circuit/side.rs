//! Which neighbour of a circuit a cell comes from or goes to, seen from this relay.

use std::fmt;

/// A circuit's two neighbours at a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    /// The previous hop: toward the client.
    Prev,
    /// The next hop: away from the client.
    Next,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Prev => "previous hop",
            Side::Next => "next hop",
        })
    }
}
