//! HMAC-SHA256 and HKDF-SHA256 (RFC 5869) with output lengths fixed at compile time, shared by
//! the ntor handshake (`docs/spec.md` §3) and the end-to-end constructions (§10).
//!
//! The `hmac` and `hkdf` crates report errors that cannot happen for the lengths used here (an
//! HMAC key of any length is fine; HKDF-SHA256 can expand up to 255 × 32 bytes). These helpers
//! settle that once, so the protocol code has no impossible error paths to carry.

use hkdf::HkdfExtract;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The most bytes HKDF-SHA256 can expand: 255 blocks of 32 bytes.
const HKDF_SHA256_MAX: usize = 255 * 32;

/// HMAC-SHA256 keyed with `key` over the concatenation of `parts`.
///
/// HKDF-Extract with salt `key` is exactly this HMAC (RFC 5869 §2.2), and unlike
/// `Hmac::new_from_slice` it has no failure case to handle.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut extract = HkdfExtract::<Sha256>::new(Some(key));
    for part in parts {
        extract.input_ikm(part);
    }
    let (prk, _) = extract.finalize();
    Zeroizing::new(prk.into())
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` from the concatenation of `ikm`, then expand
/// `N` bytes under `info`.
pub(crate) fn hkdf_sha256<const N: usize>(
    salt: &[u8],
    ikm: &[&[u8]],
    info: &[u8],
) -> Zeroizing<[u8; N]> {
    const { assert!(N <= HKDF_SHA256_MAX, "HKDF-SHA256 cannot expand that much") };
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    for part in ikm {
        extract.input_ikm(part);
    }
    let (_, hkdf) = extract.finalize();
    let mut out = Zeroizing::new([0u8; N]);
    // Expansion fails only for lengths over HKDF_SHA256_MAX, ruled out at compile time above.
    let expanded = hkdf.expand(info, &mut *out);
    debug_assert!(expanded.is_ok());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use hkdf::Hkdf;
    use hmac::{Hmac, Mac};

    /// RFC 5869 appendix A.1, test case 1.
    #[test]
    fn reproduces_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_sha256::<42>(&salt, &[&ikm[..11], &ikm[11..]], &info);
        assert_eq!(
            hex::encode(&*okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn matches_the_hmac_and_hkdf_crates() {
        let key = [7u8; 32];
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"ab");
        mac.update(b"cd");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(*hmac_sha256(&key, &[b"abc", b"d"]), expected);

        let mut okm = [0u8; 64];
        Hkdf::<Sha256>::new(Some(&[0u8; 32]), b"input")
            .expand(b"info", &mut okm)
            .unwrap();
        assert_eq!(
            *hkdf_sha256::<64>(&[0u8; 32], &[b"in", b"put"], b"info"),
            okm
        );
        // A salt of HashLen zeros is the same as no salt (RFC 5869 §2.2).
        Hkdf::<Sha256>::new(None, b"input")
            .expand(b"info", &mut okm)
            .unwrap();
        assert_eq!(*hkdf_sha256::<64>(&[0u8; 32], &[b"input"], b"info"), okm);
    }
}
