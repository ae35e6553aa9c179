//! The storage form of a [`Ratchet`] (`docs/spec.md` §10.4.5), so a session survives a
//! restart.
//!
//! ```text
//! version(1) = 1 ‖ AD(64) ‖ RK(32)
//! ‖ DHs:  present(1) [secret(32)]
//! ‖ DHr:  present(1) [public(32)]
//! ‖ send: present(1) [CKs(32) ‖ Ns(4)]
//! ‖ recv: present(1) [CKr(32) ‖ Nr(4)]
//! ‖ PN(4)
//! ‖ count(2) ‖ count × (dh(32) ‖ n(4) ‖ message key(32))      skipped-message keys, oldest first
//! ‖ count(2) ‖ count × dh(32)                                 retired peer ratchet keys, oldest first
//! ```
//!
//! `present` is 0 or 1. A decoder refuses counts over the limits, a sending chain without
//! both ratchet keys, a receiving chain without the peer's, and leftover bytes.

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::{Chain, Core, Ratchet, SkippedKey, MAX_RETIRED_KEYS, MAX_STORED_SKIPPED};
use crate::reader::{DecodeError, Reader, Writer};
use crate::x3dh::AssociatedData;

/// The only state format version so far.
pub(super) const STATE_VERSION: u8 = 1;
/// Bytes of one kept skipped-message key.
const SKIPPED_LEN: usize = 32 + 4 + 32;

fn bad(field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::BadValue { field, reason }
}

fn put_chain(out: &mut Vec<u8>, chain: Option<&Chain>) {
    match chain {
        Some(chain) => {
            out.put_u8(1);
            out.put(&chain.key);
            out.put_u32(chain.n);
        }
        None => out.put_u8(0),
    }
}

/// Reads a presence byte: whether the optional field that follows is there.
fn present(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad(field, "presence byte is neither 0 nor 1")),
    }
}

fn chain(r: &mut Reader<'_>, field: &'static str) -> Result<Option<Chain>, DecodeError> {
    if !present(r, field)? {
        return Ok(None);
    }
    let key = *Zeroizing::new(r.array::<32>()?);
    let n = r.u32()?;
    Ok(Some(Chain { key, n }))
}

/// Reads a u16 count of `item_len`-byte items, checks it against `max`, and checks that the
/// input holds that many items before anything is allocated for them.
fn count(r: &mut Reader<'_>, max: usize, item_len: usize) -> Result<usize, DecodeError> {
    let n = usize::from(r.u16()?);
    if n > max {
        return Err(DecodeError::TooLong { len: n, max });
    }
    if n * item_len > r.remaining() {
        return Err(DecodeError::Truncated {
            needed: n * item_len,
            remaining: r.remaining(),
        });
    }
    Ok(n)
}

// The counts are written as u16.
const _: () = assert!(MAX_STORED_SKIPPED <= u16::MAX as usize);
const _: () = assert!(MAX_RETIRED_KEYS <= u16::MAX as usize);

impl Ratchet {
    /// The session's state as bytes, for storage. It holds every secret of the session.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let core = &self.core;
        let len = 1
            + 64
            + 32
            + (1 + 32)
            + (1 + 32)
            + 2 * (1 + 32 + 4)
            + 4
            + 2
            + self.skipped.len() * SKIPPED_LEN
            + 2
            + self.retired.len() * 32;
        // Sized up front so the vector never reallocates and leaves copies behind.
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        out.put_u8(STATE_VERSION);
        out.put(self.ad.as_bytes());
        out.put(&core.root);
        match &core.dh_self {
            Some(secret) => {
                out.put_u8(1);
                out.put(secret.as_bytes());
            }
            None => out.put_u8(0),
        }
        match &core.dh_remote {
            Some(public) => {
                out.put_u8(1);
                out.put(public);
            }
            None => out.put_u8(0),
        }
        put_chain(&mut out, core.send.as_ref());
        put_chain(&mut out, core.recv.as_ref());
        out.put_u32(core.prev_send_len);
        // The counts fit in a u16: both lists are kept within their limits (asserted above).
        out.put_u16(self.skipped.len() as u16);
        for kept in &self.skipped {
            out.put(&kept.dh);
            out.put_u32(kept.n);
            out.put(&kept.key);
        }
        out.put_u16(self.retired.len() as u16);
        for key in &self.retired {
            out.put(key);
        }
        out
    }

    /// Rebuilds a session from [`Ratchet::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != STATE_VERSION {
            return Err(bad("ratchet state version", "unknown version"));
        }
        let ad = AssociatedData::from_bytes(r.array()?);
        let root = *Zeroizing::new(r.array::<32>()?);
        let dh_self = if present(&mut r, "ratchet secret")? {
            Some(StaticSecret::from(*Zeroizing::new(r.array::<32>()?)))
        } else {
            None
        };
        let dh_remote = if present(&mut r, "peer ratchet key")? {
            Some(r.array()?)
        } else {
            None
        };
        let send = chain(&mut r, "sending chain")?;
        let recv = chain(&mut r, "receiving chain")?;
        let prev_send_len = r.u32()?;
        if send.is_some() && (dh_self.is_none() || dh_remote.is_none()) {
            return Err(bad("sending chain", "present without both ratchet keys"));
        }
        if recv.is_some() && dh_remote.is_none() {
            return Err(bad(
                "receiving chain",
                "present without the peer's ratchet key",
            ));
        }

        let n = count(&mut r, MAX_STORED_SKIPPED, SKIPPED_LEN)?;
        let mut skipped = Vec::with_capacity(n);
        for _ in 0..n {
            let dh = r.array()?;
            let n = r.u32()?;
            let key = *Zeroizing::new(r.array::<32>()?);
            skipped.push(Box::new(SkippedKey { dh, n, key }));
        }
        let n = count(&mut r, MAX_RETIRED_KEYS, 32)?;
        let mut retired = Vec::with_capacity(n);
        for _ in 0..n {
            retired.push(r.array()?);
        }
        r.finish()?;
        Ok(Ratchet {
            core: Core {
                root,
                dh_self,
                dh_remote,
                send,
                recv,
                prev_send_len,
            },
            ad,
            skipped,
            retired,
        })
    }
}
