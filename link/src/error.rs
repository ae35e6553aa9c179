//! Why a link failed, and whether trying again may help.

use thiserror::Error;

/// Why a link failed.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The TCP connection failed or closed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the link.
    #[error("peer closed the link")]
    Closed,
    /// The handshake did not complete within its time limit.
    #[error("link handshake timed out")]
    Timeout,
    /// The first byte named no link kind this relay speaks.
    #[error("peer sent an unknown link preamble byte {0:#04x}")]
    BadPreamble(u8),
    /// The Noise handshake failed: garbage, or the peer does not hold the expected key.
    #[error("link handshake failed")]
    Handshake(#[from] snow::Error),
    /// A handshake message was longer than any the patterns send.
    #[error("handshake message of {0} bytes is too long")]
    HandshakeMessageTooLong(usize),
    /// A handshake message carried a payload; ours are always empty.
    #[error("unexpected handshake payload")]
    HandshakePayload,
    /// The peer's static key was not 32 bytes.
    #[error("peer static key of {0} bytes")]
    BadStaticKey(usize),
    /// The handshake hash was not 32 bytes (the Noise suite is fixed, so never in practice).
    #[error("handshake hash of {0} bytes")]
    BadHandshakeHash(usize),
    /// A record failed to authenticate.
    #[error("link record failed to authenticate")]
    BadRecord,
    /// A record's length is not a whole number of cells (1 to 127) plus the tag.
    #[error("link record of {0} bytes is not a whole number of cells")]
    BadRecordLength(usize),
    /// The link has sent or received 2^64 − 1 records.
    #[error("link nonce exhausted")]
    NonceExhausted,
}

impl LinkError {
    /// Whether trying again (a new connection, or the same relay later) may succeed: the
    /// network failed or was slow. A peer that broke the protocol or proved the wrong key will
    /// do so again, so those are fatal for that peer.
    pub fn is_retryable(&self) -> bool {
        match self {
            LinkError::Io(_) | LinkError::Closed | LinkError::Timeout => true,
            LinkError::BadPreamble(_)
            | LinkError::Handshake(_)
            | LinkError::HandshakeMessageTooLong(_)
            | LinkError::HandshakePayload
            | LinkError::BadStaticKey(_)
            | LinkError::BadHandshakeHash(_)
            | LinkError::BadRecord
            | LinkError::BadRecordLength(_)
            | LinkError::NonceExhausted => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_failures_are_retryable_and_violations_are_not() {
        assert!(LinkError::Timeout.is_retryable());
        assert!(LinkError::Closed.is_retryable());
        assert!(LinkError::Io(std::io::ErrorKind::ConnectionReset.into()).is_retryable());
        assert!(!LinkError::BadRecord.is_retryable());
        assert!(!LinkError::BadPreamble(7).is_retryable());
        assert!(!LinkError::HandshakePayload.is_retryable());
    }
}
