//! A bounds-checked reader over a byte slice, through which every decoder in Shallot goes.
//!
//! Each read checks that enough bytes remain and fails with [`DecodeError::Truncated`]
//! otherwise; a decoder ends with [`Reader::finish`], which refuses leftover bytes. Nothing
//! here allocates except [`Reader::take_vec`], which copies bytes the input already holds.

use thiserror::Error;

/// Why bytes could not be decoded: the error of every wire-format decoder in Shallot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before a field did.
    #[error("truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes were left over after the message ended.
    #[error("{0} unexpected bytes after the end of the message")]
    TrailingBytes(usize),
    /// Padding that must be zero was not.
    #[error("padding bytes are not zero")]
    NonZeroPadding,
    /// A channel command this version does not know.
    #[error("unknown cell command {0}")]
    UnknownCommand(u8),
    /// A relay message type this version does not know.
    #[error("unknown relay message type {0}")]
    UnknownRelayMessage(u8),
    /// A field holds a value that is not allowed.
    #[error("invalid {field}: {reason}")]
    BadValue {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A message is longer than allowed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Its length (so far).
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Reads fields from a byte slice, front to back, checking every length.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.input.len() {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining: self.input.len(),
            });
        }
        let (head, tail) = self.input.split_at(n);
        self.input = tail;
        Ok(head)
    }

    /// Takes every byte left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.input)
    }

    /// Takes the next `n` bytes as an owned vector (no larger than the input).
    pub fn take_vec(&mut self, n: usize) -> Result<Vec<u8>, DecodeError> {
        Ok(self.take(n)?.to_vec())
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Takes one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Takes a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Takes a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Takes a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Takes a u16 length and then that many bytes.
    pub fn u16_prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    /// Ends decoding: every byte must have been read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// Ends decoding of a padded field: every byte left must be zero.
    pub fn finish_zero_padded(self) -> Result<(), DecodeError> {
        if self.input.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(DecodeError::NonZeroPadding)
        }
    }
}

/// Appends big-endian fields to a byte vector: the encoding side of [`Reader`].
pub trait Writer {
    /// Appends one byte.
    fn put_u8(&mut self, v: u8);
    /// Appends a big-endian u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a big-endian u32.
    fn put_u32(&mut self, v: u32);
    /// Appends a big-endian u64.
    fn put_u64(&mut self, v: u64);
    /// Appends raw bytes.
    fn put(&mut self, bytes: &[u8]);
    /// Appends a u16 length and the bytes; fails if they do not fit in a u16.
    fn put_u16_prefixed(&mut self, bytes: &[u8]) -> Result<(), DecodeError>;
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_u16_prefixed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let n = u16::try_from(bytes.len()).map_err(|_| DecodeError::TooLong {
            len: bytes.len(),
            max: usize::from(u16::MAX),
        })?;
        self.put_u16(n);
        self.put(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_checks_lengths() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 3, 9]);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(
            r.u16(),
            Err(DecodeError::Truncated {
                needed: 2,
                remaining: 1
            })
        );
        assert_eq!(r.clone().finish(), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(r.u8().unwrap(), 9);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn zero_padding_is_checked() {
        assert_eq!(Reader::new(&[0, 0]).finish_zero_padded(), Ok(()));
        assert_eq!(
            Reader::new(&[0, 1]).finish_zero_padded(),
            Err(DecodeError::NonZeroPadding)
        );
    }

    #[test]
    fn prefixed_fields_round_trip() {
        let mut v = Vec::new();
        v.put_u16_prefixed(b"abc").unwrap();
        v.put_u64(7);
        let mut r = Reader::new(&v);
        assert_eq!(r.u16_prefixed().unwrap(), b"abc");
        assert_eq!(r.u64().unwrap(), 7);
        r.finish().unwrap();
        assert!(Vec::new().put_u16_prefixed(&vec![0u8; 70_000]).is_err());
    }
}
