//! Why a message could not be encoded: the encoders' error, kept apart from
//! [`DecodeError`](crate::DecodeError) because the fault is the caller's (a field over its
//! limit), never a peer's.

use thiserror::Error;

use shallot_crypto::reader::Writer;

/// A message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A field is longer than the format allows.
    #[error("{field} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Which field (or "relay message" for a whole message).
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A cell body is too short to carry a fragment header and any data.
    #[error("a cell body of {0} bytes cannot carry a fragment")]
    BodyTooShort(usize),
}

/// Refuses `len` over `max` for `field`.
pub(crate) fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        return Err(EncodeError::TooLong { field, len, max });
    }
    Ok(())
}

/// Appends `len(2) ‖ bytes`, refusing bytes that do not fit a u16 length.
pub(crate) fn put_u16_prefixed(
    out: &mut Vec<u8>,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::TooLong {
        field,
        len: bytes.len(),
        max: usize::from(u16::MAX),
    })?;
    out.put_u16(len);
    out.put(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_over_their_limit_are_named() {
        assert_eq!(check_len("x", 3, 3), Ok(()));
        assert_eq!(
            check_len("x", 4, 3),
            Err(EncodeError::TooLong {
                field: "x",
                len: 4,
                max: 3
            })
        );
        let mut out = Vec::new();
        put_u16_prefixed(&mut out, "y", b"ab").unwrap();
        assert_eq!(out, [0, 2, b'a', b'b']);
        assert!(put_u16_prefixed(&mut out, "y", &vec![0; 70_000]).is_err());
    }
}
