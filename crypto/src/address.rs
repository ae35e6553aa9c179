//! User addresses: an ed25519 identity key as text, with a version and a checksum that catches
//! every typo of up to four characters (`docs/spec.md` §7).
//!
//! An address is `shallot1` followed by 59 characters of the bech32 alphabet: one version
//! symbol (`p`, version 1), 52 symbols carrying the 32-byte key (5 bits each, the last 4 bits
//! zero), and 6 checksum symbols. The checksum is bech32m's BCH code (BIP-350) over the
//! prefix and the data, which detects any error in up to four symbols; an insertion or a
//! deletion changes the length and is refused too.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;
use thiserror::Error;

/// What every address starts with, before the `1` separator.
pub const HRP: &str = "shallot";
/// The only address version so far.
pub const VERSION: u8 = 1;
const ALPHABET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const CHECKSUM_CONST: u32 = 0x2bc8_30a3;
const KEY_SYMBOLS: usize = 52;
const CHECKSUM_SYMBOLS: usize = 6;
/// Length in characters of every address.
pub const ADDRESS_LEN: usize = HRP.len() + 1 + 1 + KEY_SYMBOLS + CHECKSUM_SYMBOLS;

/// Why text is not a valid address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    /// Wrong number of characters.
    #[error("an address has {ADDRESS_LEN} characters, this has {0}")]
    WrongLength(usize),
    /// It does not start with `shallot1`.
    #[error("an address starts with \"{HRP}1\"")]
    WrongPrefix,
    /// Upper and lower case are mixed.
    #[error("an address is all lower case or all upper case")]
    MixedCase,
    /// A character outside the address alphabet.
    #[error("character {ch:?} at position {pos} cannot appear in an address")]
    BadCharacter {
        /// 1-based position.
        pos: usize,
        /// The character.
        ch: char,
    },
    /// The checksum does not match: a typo.
    #[error("address checksum does not match: check it for typos")]
    BadChecksum,
    /// A version this program does not know.
    #[error("address version {0} is not supported")]
    UnknownVersion(u8),
    /// The key bits are not in canonical form, or do not form a usable ed25519 key.
    #[error("address does not hold a valid identity key")]
    BadKey,
}

/// A user's address: their ed25519 identity key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(VerifyingKey);

impl Address {
    /// The address of an identity key.
    pub fn new(key: VerifyingKey) -> Self {
        Address(key)
    }

    /// The identity key this address names.
    pub fn key(&self) -> &VerifyingKey {
        &self.0
    }
}

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expanded() -> impl Iterator<Item = u8> {
    HRP.bytes()
        .map(|c| c >> 5)
        .chain(std::iter::once(0))
        .chain(HRP.bytes().map(|c| c & 31))
}

/// The 52 five-bit symbols of a 32-byte key, zero-padded.
fn key_symbols(key: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_SYMBOLS);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in key {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    out.push(((acc << (5 - bits)) & 31) as u8);
    out
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = vec![VERSION];
        data.extend(key_symbols(self.0.as_bytes()));
        let pm =
            polymod(hrp_expanded().chain(data.iter().copied()).chain([0u8; 6])) ^ CHECKSUM_CONST;
        data.extend((0..CHECKSUM_SYMBOLS).map(|i| ((pm >> (5 * (5 - i))) & 31) as u8));
        let text: String = data
            .iter()
            .map(|&s| char::from(ALPHABET[usize::from(s & 31)]))
            .collect();
        write!(f, "{HRP}1{text}")
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let text = text.trim();
        if text.chars().count() != ADDRESS_LEN {
            return Err(AddressError::WrongLength(text.chars().count()));
        }
        let has_lower = text.bytes().any(|c| c.is_ascii_lowercase());
        let has_upper = text.bytes().any(|c| c.is_ascii_uppercase());
        if has_lower && has_upper {
            return Err(AddressError::MixedCase);
        }
        let lower = text.to_ascii_lowercase();
        let prefix = format!("{HRP}1");
        if !lower.starts_with(&prefix) {
            return Err(AddressError::WrongPrefix);
        }
        let mut data = Vec::with_capacity(ADDRESS_LEN - prefix.len());
        for (i, c) in lower.bytes().enumerate().skip(prefix.len()) {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(AddressError::BadCharacter {
                    pos: i + 1,
                    ch: char::from(c),
                })?;
            data.push(v as u8);
        }
        if polymod(hrp_expanded().chain(data.iter().copied())) != CHECKSUM_CONST {
            return Err(AddressError::BadChecksum);
        }
        if data[0] != VERSION {
            return Err(AddressError::UnknownVersion(data[0]));
        }
        let symbols = &data[1..1 + KEY_SYMBOLS];
        let mut key = [0u8; 32];
        let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
        for &s in symbols {
            acc = (acc << 5) | u32::from(s);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                key[n] = ((acc >> bits) & 0xff) as u8;
                n += 1;
            }
        }
        if acc & ((1 << bits) - 1) != 0 {
            return Err(AddressError::BadKey);
        }
        let key = VerifyingKey::from_bytes(&key).map_err(|_| AddressError::BadKey)?;
        if key.is_weak() {
            return Err(AddressError::BadKey);
        }
        Ok(Address(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityKeypair;
    use rand::{Rng, SeedableRng};

    fn random_address(rng: &mut rand::rngs::StdRng) -> Address {
        Address::new(IdentityKeypair::generate(rng).public())
    }

    #[test]
    fn round_trips() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let a = random_address(&mut rng);
            let text = a.to_string();
            assert_eq!(text.len(), ADDRESS_LEN);
            assert!(text.starts_with("shallot1p"));
            assert_eq!(text.parse::<Address>().unwrap(), a);
            assert_eq!(text.to_uppercase().parse::<Address>().unwrap(), a);
        }
    }

    /// Every single-character substitution, in every position, of many random addresses, is
    /// refused: 500 keys × 67 positions × every other alphabet character.
    #[test]
    fn every_single_character_typo_is_caught() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let mut tried = 0u64;
        for _ in 0..500 {
            let text = random_address(&mut rng).to_string();
            let bytes = text.as_bytes();
            for pos in 0..bytes.len() {
                for &c in ALPHABET.iter().chain(b"shallot1bio") {
                    if c == bytes[pos] {
                        continue;
                    }
                    let mut typo = bytes.to_vec();
                    typo[pos] = c;
                    let typo = String::from_utf8(typo).unwrap();
                    assert!(typo.parse::<Address>().is_err(), "accepted typo {typo}");
                    tried += 1;
                }
            }
        }
        assert!(tried > 1_000_000);
    }

    #[test]
    fn transpositions_insertions_and_deletions_are_caught() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let text = random_address(&mut rng).to_string();
            let b = text.as_bytes();
            let i = rng.gen_range(0..b.len() - 1);
            if b[i] != b[i + 1] {
                let mut t = b.to_vec();
                t.swap(i, i + 1);
                assert!(String::from_utf8(t).unwrap().parse::<Address>().is_err());
            }
            let mut del = text.clone();
            del.remove(i);
            assert_eq!(
                del.parse::<Address>(),
                Err(AddressError::WrongLength(ADDRESS_LEN - 1))
            );
            let mut ins = text.clone();
            ins.insert(i, 'q');
            assert_eq!(
                ins.parse::<Address>(),
                Err(AddressError::WrongLength(ADDRESS_LEN + 1))
            );
        }
    }

    #[test]
    fn clear_errors() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let text = random_address(&mut rng).to_string();
        let mixed = format!("S{}", &text[1..]);
        assert_eq!(mixed.parse::<Address>(), Err(AddressError::MixedCase));
        let prefix = format!("x{}", &text[1..]);
        assert_eq!(prefix.parse::<Address>(), Err(AddressError::WrongPrefix));
        let bad = format!("{}b{}", &text[..20], &text[21..]);
        assert!(matches!(
            bad.parse::<Address>(),
            Err(AddressError::BadCharacter { pos: 21, ch: 'b' })
        ));
        assert_eq!("".parse::<Address>(), Err(AddressError::WrongLength(0)));
    }
}
