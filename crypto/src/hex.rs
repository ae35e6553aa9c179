//! Lower-case hexadecimal, the text form of keys and digests in key files and directory
//! documents (`docs/spec.md` §5.1).

use thiserror::Error;

/// A hexadecimal string that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    /// The string has an odd number of digits.
    #[error("hex string has an odd length")]
    OddLength,
    /// A character is not a lower-case hexadecimal digit.
    #[error("invalid hex digit {0:?}")]
    BadDigit(char),
    /// The string decodes to the wrong number of bytes.
    #[error("expected {expected} bytes of hex, found {found}")]
    WrongLength {
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes bytes as lower-case hexadecimal.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn digit(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(HexError::BadDigit(char::from(c))),
    }
}

/// Decodes lower-case hexadecimal into bytes. Upper-case digits are refused so that every
/// value has exactly one text form.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return Err(HexError::OddLength);
    }
    raw.chunks_exact(2)
        .map(|pair| Ok((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

/// Decodes lower-case hexadecimal into exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let bytes = decode(text)?;
    bytes
        .try_into()
        .map_err(|v: Vec<u8>| HexError::WrongLength {
            expected: N,
            found: v.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_bad_input() {
        assert_eq!(decode("abc"), Err(HexError::OddLength));
        assert_eq!(decode("AB"), Err(HexError::BadDigit('A')));
        assert_eq!(decode("zz"), Err(HexError::BadDigit('z')));
        assert_eq!(
            decode_array::<2>("00"),
            Err(HexError::WrongLength {
                expected: 2,
                found: 1
            })
        );
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
    }
}
