//! The client puzzle a busy mailbox relay asks for before it takes a deposit or a bundle
//! (`docs/spec.md` §9.7): hashcash over SHA-256, bound to the relay, the request and a
//! timestamp, with a difficulty the relay adapts to its load.
//!
//! A solution is a timestamp and a nonce such that
//! `SHA-256("shallot-pow-v1" ‖ relay(20) ‖ type(1) ‖ mailbox(32) ‖ SHA-256(body)(32) ‖
//! timestamp(8) ‖ nonce(16))` starts with at least `difficulty` zero bits. Pure: the caller
//! supplies the time; solving is CPU work the caller runs off its event loop.

use sha2::{Digest, Sha256};
use shallot_crypto::keys::RelayId;
use shallot_crypto::reader::{DecodeError, Reader, Writer};

/// Bytes of a solution on the wire: timestamp(8) ‖ nonce(16).
pub const POW_LEN: usize = 24;

/// The hardest puzzle a client agrees to solve (about 2^22 hashes, well under a second);
/// a relay asking for more is refused by the client.
pub const MAX_CLIENT_DIFFICULTY: u8 = 22;

const DOMAIN: &[u8] = b"shallot-pow-v1";

/// A solution to a relay's puzzle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pow {
    /// When it was solved (unix seconds, the client's clock).
    pub timestamp: u64,
    /// Chosen by the solver.
    pub nonce: [u8; 16],
}

impl Pow {
    /// Appends its wire form.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u64(self.timestamp);
        out.put(&self.nonce);
    }

    /// Reads its wire form.
    pub fn read(r: &mut Reader<'_>) -> Result<Pow, DecodeError> {
        Ok(Pow {
            timestamp: r.u64()?,
            nonce: r.array()?,
        })
    }
}

/// The hasher state before timestamp and nonce, shared by every attempt of one puzzle.
fn prefix(relay: &RelayId, op: u8, mailbox: &[u8; 32], body: &[u8]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(relay.0);
    h.update([op]);
    h.update(mailbox);
    h.update(Sha256::digest(body));
    h
}

fn finish(mut h: Sha256, pow: &Pow) -> [u8; 32] {
    h.update(pow.timestamp.to_be_bytes());
    h.update(pow.nonce);
    h.finalize().into()
}

/// The digest a solution is judged by.
pub fn digest(relay: &RelayId, op: u8, mailbox: &[u8; 32], body: &[u8], pow: &Pow) -> [u8; 32] {
    finish(prefix(relay, op, mailbox, body), pow)
}

/// Leading zero bits of a digest: the effort a solution shows.
pub fn effort(digest: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for b in digest {
        if *b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// Finds a solution of at least `difficulty` bits for request `op` on mailbox id `mailbox`
/// with `body`
/// at relay `relay`, stamped `timestamp`. Expected work: 2^difficulty hashes. `salt`, random,
/// keeps two solvers of the same request apart; a counter fills the rest of the nonce.
pub fn solve(
    relay: &RelayId,
    op: u8,
    mailbox: &[u8; 32],
    body: &[u8],
    difficulty: u8,
    timestamp: u64,
    salt: [u8; 8],
) -> Pow {
    let base = prefix(relay, op, mailbox, body);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&salt);
    for counter in 0u64.. {
        nonce[8..].copy_from_slice(&counter.to_be_bytes());
        let pow = Pow { timestamp, nonce };
        if effort(&finish(base.clone(), &pow)) >= u32::from(difficulty) {
            return pow;
        }
    }
    // 2^64 attempts without a solution cannot happen for any difficulty up to 64.
    Pow { timestamp, nonce }
}

#[cfg(test)]
mod tests {
    use super::*;
    // DEPOSIT and PUT_BUNDLE (`crate::mailbox::kind`, not imported: mailbox uses this file).
    const DEPOSIT: u8 = 16;
    const PUT_BUNDLE: u8 = 20;

    #[test]
    fn effort_counts_leading_zero_bits() {
        let mut d = [0xffu8; 32];
        assert_eq!(effort(&d), 0);
        d[0] = 0;
        d[1] = 0x1f;
        assert_eq!(effort(&d), 11);
        assert_eq!(effort(&[0; 32]), 256);
    }

    #[test]
    fn a_solution_holds_for_its_request_only() {
        let (relay, mailbox) = (RelayId([1; 20]), [2u8; 32]);
        let pow = solve(&relay, DEPOSIT, &mailbox, b"envelope", 12, 1000, [5; 8]);
        let ok = |r: &RelayId, op, m: &[u8; 32], body: &[u8], p: &Pow| {
            effort(&digest(r, op, m, body, p)) >= 12
        };
        assert!(ok(&relay, DEPOSIT, &mailbox, b"envelope", &pow));
        // Another relay, type, mailbox, body or time: the work does not carry over (each
        // fails with probability 1 - 2^-12; fixed inputs keep the test deterministic).
        let others = [
            ok(&RelayId([9; 20]), DEPOSIT, &mailbox, b"envelope", &pow),
            ok(&relay, PUT_BUNDLE, &mailbox, b"envelope", &pow),
            ok(&relay, DEPOSIT, &[3u8; 32], b"envelope", &pow),
            ok(&relay, DEPOSIT, &mailbox, b"other", &pow),
            ok(
                &relay,
                DEPOSIT,
                &mailbox,
                b"envelope",
                &Pow {
                    timestamp: 1001,
                    ..pow
                },
            ),
        ];
        assert!(others.iter().filter(|o| **o).count() <= 1, "{others:?}");
    }

    #[test]
    fn wire_form_round_trips() {
        let pow = Pow {
            timestamp: 0x0102_0304_0506_0708,
            nonce: [7; 16],
        };
        let mut out = Vec::new();
        pow.encode_into(&mut out);
        assert_eq!(out.len(), POW_LEN);
        let mut r = Reader::new(&out);
        assert_eq!(Pow::read(&mut r).unwrap(), pow);
        r.finish().unwrap();
    }
}
