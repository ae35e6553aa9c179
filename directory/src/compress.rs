//! zstd compression of directory documents on the wire (`docs/spec.md` §5.8, §5.12): the
//! authority compresses the consensus and its diffs when asked (`.z` paths); the client
//! decompresses under a hard cap on the decompressed size, so that a small answer cannot
//! make it allocate more than a consensus may hold (a decompression bomb).
//!
//! Signatures are always over the uncompressed body: compression is transport only.

use std::io::Read;

use thiserror::Error;

/// The zstd level the authority uses: level 19 costs ~1 s per 2.8 MB consensus on one core
/// and gains under 10 % over this one; level 9 compresses a consensus in tens of ms.
pub const LEVEL: i32 = 9;

/// The zstd level for consensus diffs: they are small (tens of kilobytes at 10,000 relays),
/// so the highest level costs tens of milliseconds a diff and saves 5-8 % of what every
/// client fetches every period (`cargo bench -p shallot-directory --bench
/// consensus_transfer` prints both sizes and the time).
pub const DIFF_LEVEL: i32 = 19;

/// Why a compressed document was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecompressError {
    /// The compressed data is not a valid zstd stream.
    #[error("not valid zstd data: {0}")]
    Corrupt(String),
    /// It decompresses to more than the cap allows.
    #[error("decompresses to more than {0} bytes (refused as a decompression bomb)")]
    TooLarge(usize),
}

/// Compresses `data` with zstd at [`LEVEL`].
pub fn compress(data: &[u8]) -> Vec<u8> {
    // Compressing into memory fails only on allocation failure, which aborts anyway; an empty
    // result would be refused by the client as corrupt rather than misread.
    zstd::bulk::compress(data, LEVEL).unwrap_or_default()
}

/// Compresses a consensus diff with zstd at [`DIFF_LEVEL`].
pub fn compress_diff(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, DIFF_LEVEL).unwrap_or_default()
}

/// Decompresses `data`, refusing it as soon as the output would pass `cap` bytes. Memory
/// grows with what is decompressed, never beyond `cap` plus one read buffer.
pub fn decompress_capped(data: &[u8], cap: usize) -> Result<Vec<u8>, DecompressError> {
    let decoder = zstd::stream::read::Decoder::new(data)
        .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecompressError::Corrupt(e.to_string()))?;
    if out.len() > cap {
        return Err(DecompressError::TooLarge(cap));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let text = b"r relay 00ff\n".repeat(1000);
        let z = compress(&text);
        assert!(z.len() < text.len() / 10);
        assert_eq!(decompress_capped(&z, text.len()).unwrap(), text);
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_the_cap() {
        // 64 MiB of zeros compress to a few KiB; the cap is 1 MiB.
        let bomb = compress(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            decompress_capped(&bomb, 1 << 20),
            Err(DecompressError::TooLarge(1 << 20))
        );
        // Exactly at the cap is fine.
        let exact = compress(&vec![0u8; 1 << 20]);
        assert_eq!(decompress_capped(&exact, 1 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            decompress_capped(b"not zstd at all", 1 << 20),
            Err(DecompressError::Corrupt(_))
        ));
        let mut z = compress(&b"hello world ".repeat(100));
        z.truncate(z.len() - 3);
        assert!(matches!(
            decompress_capped(&z, 1 << 20),
            Err(DecompressError::Corrupt(_))
        ));
    }
}
