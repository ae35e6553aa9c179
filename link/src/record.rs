//! Records: the encrypted unit of a link, carrying whole cells (`docs/spec.md` §6.2).
//!
//! On the wire a record is `len(2) ‖ Noise transport message(len)`, and the message's
//! plaintext is 1 to [`MAX_CELLS_PER_RECORD`] cells of 514 bytes. Each direction keeps its own
//! Noise nonce counter, so the reading and writing halves of a link work independently.

use std::sync::Arc;

use shallot_proto::cell::CELL_LEN;
use snow::StatelessTransportState;

use crate::error::LinkError;

/// Bytes of Noise tag per record.
pub const TAG_LEN: usize = 16;
/// The most cells one record carries: 127 × 514 + 16 fits the Noise limit of 65,535 bytes.
pub const MAX_CELLS_PER_RECORD: usize = 127;
/// The longest record on the wire, without its length prefix.
pub const MAX_RECORD_LEN: usize = MAX_CELLS_PER_RECORD * CELL_LEN + TAG_LEN;

/// Seals cells into records for one direction of a link.
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Sealer {
    pub(crate) fn new(transport: Arc<StatelessTransportState>) -> Self {
        Sealer {
            transport,
            nonce: 0,
        }
    }

    /// Appends to `out` the records (length prefix included) carrying `cells`, which must be
    /// a whole, non-zero number of encoded cells.
    pub fn seal(&mut self, cells: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        if cells.is_empty() || !cells.len().is_multiple_of(CELL_LEN) {
            return Err(LinkError::BadRecordLength(cells.len()));
        }
        for chunk in cells.chunks(MAX_CELLS_PER_RECORD * CELL_LEN) {
            if self.nonce == u64::MAX {
                return Err(LinkError::NonceExhausted);
            }
            let len = chunk.len() + TAG_LEN;
            let start = out.len();
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.resize(start + 2 + len, 0);
            self.transport
                .write_message(self.nonce, chunk, &mut out[start + 2..])
                .map_err(|_| LinkError::BadRecord)?;
            self.nonce += 1;
        }
        Ok(())
    }
}

/// Opens records from one direction of a link.
pub struct Opener {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

impl Opener {
    pub(crate) fn new(transport: Arc<StatelessTransportState>) -> Self {
        Opener {
            transport,
            nonce: 0,
        }
    }

    /// Checks a record length from the wire before its body is read.
    pub fn check_len(len: usize) -> Result<(), LinkError> {
        let cells = len.saturating_sub(TAG_LEN);
        if len <= TAG_LEN
            || !cells.is_multiple_of(CELL_LEN)
            || cells / CELL_LEN > MAX_CELLS_PER_RECORD
        {
            return Err(LinkError::BadRecordLength(len));
        }
        Ok(())
    }

    /// Opens one record (without its length prefix) into `out`, replacing its contents with
    /// the cells it carries.
    pub fn open(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        Self::check_len(record.len())?;
        if self.nonce == u64::MAX {
            return Err(LinkError::NonceExhausted);
        }
        // Exactly the record's cells: a buffer kept from a smaller record is not doubled.
        let len = record.len() - TAG_LEN;
        out.clear();
        out.reserve_exact(len);
        out.resize(len, 0);
        self.transport
            .read_message(self.nonce, record, out)
            .map_err(|_| LinkError::BadRecord)?;
        self.nonce += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two ends of a transport, from a bare Noise NN handshake (the link's own handshakes are
    /// tested in `handshake`, which builds on this module).
    fn pair() -> ((Sealer, Opener), (Sealer, Opener)) {
        let params: snow::params::NoiseParams = "Noise_NN_25519_ChaChaPoly_SHA256".parse().unwrap();
        let mut a = snow::Builder::new(params.clone())
            .build_initiator()
            .unwrap();
        let mut b = snow::Builder::new(params).build_responder().unwrap();
        let (mut m, mut p) = ([0u8; 96], [0u8; 96]);
        let n = a.write_message(&[], &mut m).unwrap();
        b.read_message(&m[..n], &mut p).unwrap();
        let n = b.write_message(&[], &mut m).unwrap();
        a.read_message(&m[..n], &mut p).unwrap();
        let ta = Arc::new(a.into_stateless_transport_mode().unwrap());
        let tb = Arc::new(b.into_stateless_transport_mode().unwrap());
        (
            (Sealer::new(ta.clone()), Opener::new(ta)),
            (Sealer::new(tb.clone()), Opener::new(tb)),
        )
    }

    #[test]
    fn cells_cross_in_records_of_whole_cells() {
        let ((mut sa, _), (_, mut ob)) = pair();
        let cells: Vec<u8> = (0..300 * CELL_LEN).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        sa.seal(&cells, &mut wire).unwrap();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut records = 0;
        let mut plain = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            ob.open(&rest[2..2 + len], &mut plain).unwrap();
            got.extend_from_slice(&plain);
            rest = &rest[2 + len..];
            records += 1;
        }
        assert_eq!(records, 3);
        assert_eq!(got, cells);
    }

    #[test]
    fn bad_records_are_refused() {
        let ((mut sa, _), (_, mut ob)) = pair();
        let mut wire = Vec::new();
        sa.seal(&[0u8; CELL_LEN], &mut wire).unwrap();
        let mut plain = Vec::new();
        let mut tampered = wire[2..].to_vec();
        tampered[5] ^= 1;
        assert!(matches!(
            ob.open(&tampered, &mut plain),
            Err(LinkError::BadRecord)
        ));
        for len in [
            0,
            16,
            17,
            CELL_LEN,
            CELL_LEN + 17,
            MAX_RECORD_LEN + CELL_LEN,
        ] {
            assert!(Opener::check_len(len).is_err(), "{len}");
        }
        assert!(Opener::check_len(CELL_LEN + TAG_LEN).is_ok());
        assert!(Opener::check_len(MAX_RECORD_LEN).is_ok());
        assert!(sa.seal(&[0u8; 100], &mut wire).is_err());
        assert!(sa.seal(&[], &mut wire).is_err());
    }
}
