//! Consensus diffs (`docs/spec.md` §5.12): the change from one consensus to the next, small
//! enough to fetch every period, applied to the text a client already holds.
//!
//! The format follows the consensus's own layout rather than a generic line diff (Tor's
//! proposal 140 uses `ed` commands): a consensus is a short header, relay entries sorted by
//! fingerprint (an `r` line and an optional `f` line each) and signature lines. A diff sends
//! the new header and the new signatures whole (both are small and change every period) and
//! walks the base's entries in order: each operation copies a run of base entries, then drops
//! some, adds a new entry, or makes one of the edits an hourly consensus is made of, a new
//! weight, new flags, both, or a rotated onion key, which cost a few bytes where a line diff
//! would resend the whole 260-byte `r` line with its three keys. A relay that republishes an
//! unchanged descriptor keeps the same entry text (entries carry no published time, §5.4),
//! so it costs only its share of a run.
//!
//! Since version 4 the operations are binary: keys and addresses as bytes rather than hex and
//! text, weights as their digits and a power of ten (measurements have two significant
//! figures, §5.7). Most of a compressed hourly diff is new relays' random keys, which zstd
//! keeps about 4 % smaller as bytes than as hex, and numbers compress better apart from
//! text: the hourly diff of §5.12 with every relay remeasured went from 21,296 bytes
//! compressed to 18,937.
//!
//! [`consensus_diff`] computes a diff from two parsed consensuses; [`apply_diff`] is bytes in,
//! text out: it checks that the base is the one named (`from`, the SHA-256 of its body), and
//! that the result's body hashes to `to`. The caller still parses and verifies the result's
//! signatures as for any fetched consensus: a diff carries no authority of its own.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use shallot_crypto::hex;
use shallot_crypto::keys::RelayId;
use shallot_crypto::reader::{Reader, Writer};

use super::consensus::{digest, Consensus, MAX_CONSENSUS_LEN};
use super::entry::{Flags, RelayEntry};
use super::lines::{parse_key, LineReader};
use super::{DocError, MAX_FAMILY};

/// The largest diff accepted: no larger than a consensus.
pub const MAX_DIFF_LEN: usize = MAX_CONSENSUS_LEN;

/// How a diff begins: its name and version as a line of text, so that a reader tells the
/// version before anything else. Version 4 made the operations binary; versions 2 and 3 (text
/// lines) are no longer read: a client given one fetches the whole consensus instead.
const DIFF_MAGIC: &[u8] = b"shallot-consensus-diff 4\n";

/// The body of a consensus text (every byte before its first `directory-signature` line) and
/// the rest.
fn split_signatures(text: &str) -> (&str, &str) {
    if text.starts_with("directory-signature ") {
        return ("", text);
    }
    match text.find("\ndirectory-signature ") {
        Some(i) => text.split_at(i + 1),
        None => (text, ""),
    }
}

/// SHA-256 of the body of a consensus text (see [`Consensus::body_digest`]).
pub fn text_body_digest(text: &str) -> [u8; 32] {
    digest(split_signatures(text).0)
}

/// A consensus text cut into its header, its entries (each the text of an `r` line and an
/// optional `f` line, newlines included) and its signature lines.
struct Sections<'a> {
    header: &'a str,
    entries: Vec<&'a str>,
    signatures: &'a str,
}

fn sections(text: &str) -> Result<Sections<'_>, DocError> {
    let (body, signatures) = split_signatures(text);
    let start = if body.starts_with("r ") {
        0
    } else {
        body.find("\nr ").map_or(body.len(), |i| i + 1)
    };
    let header = &body[..start];
    let mut entries: Vec<&str> = Vec::new();
    let mut rest = &body[start..];
    let mut offset = start;
    while !rest.is_empty() {
        let r_end = line_end(rest);
        let mut end = r_end;
        if !rest.starts_with("r ") {
            return Err(DocError::malformed(
                0,
                "base: an entry does not start with `r`",
            ));
        }
        if rest[r_end..].starts_with("f ") {
            end += line_end(&rest[r_end..]);
        }
        entries.push(&body[offset..offset + end]);
        offset += end;
        rest = &rest[end..];
    }
    Ok(Sections {
        header,
        entries,
        signatures,
    })
}

/// The length of the first line of `s`, its newline included.
fn line_end(s: &str) -> usize {
    s.find('\n').map_or(s.len(), |i| i + 1)
}

/// One entry's text: its `r` line and, when it has a family, its `f` line.
fn entry_text(e: &RelayEntry) -> String {
    let mut s = e.r_line();
    s.push('\n');
    if !e.family.is_empty() {
        s.push('f');
        for id in &e.family {
            let _ = write!(s, " {id}");
        }
        s.push('\n');
    }
    s
}

/// Whether two entries differ at most in weight, flags and onion key (the fields a diff can
/// edit in place).
fn same_but_status(a: &RelayEntry, b: &RelayEntry) -> bool {
    a.nickname == b.nickname
        && a.identity == b.identity
        && a.address == b.address
        && a.link_key == b.link_key
        && a.family == b.family
}

/// The operation codes (`docs/spec.md` §5.12), each after the count of base entries it
/// copies first.
mod op {
    /// The entries are done; the signatures follow.
    pub(super) const END: u8 = b'e';
    /// Skip the next `n` base entries.
    pub(super) const DROP: u8 = b'd';
    /// A new entry.
    pub(super) const ADD: u8 = b'a';
    /// The next base entry with a new weight.
    pub(super) const WEIGHT: u8 = b'w';
    /// The next base entry with new flags.
    pub(super) const FLAGS: u8 = b's';
    /// The next base entry with a new weight and new flags.
    pub(super) const BOTH: u8 = b'm';
    /// The next base entry with a new onion key, weight and flags.
    pub(super) const KEY: u8 = b'k';
}

/// Appends `v` as an unsigned LEB128 varint: 7 bits a byte, low bits first.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Reads a varint written by [`put_varint`]: at most 10 bytes, no value over `u64::MAX`, and
/// in its shortest form (no trailing zero byte), so that one value has one encoding.
fn varint(r: &mut Reader<'_>) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = r.u8().map_err(|_| "the diff ends inside a number")?;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err("a number over 64 bits");
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err("a number not in its shortest form");
            }
            return Ok(v);
        }
    }
    Err("a number over 64 bits")
}

/// Appends a weight as a power of ten (one byte) and a varint of what it multiplies, with no
/// trailing zero left in that: weights are measurements with two significant figures (§5.7),
/// so most take three bytes whose first repeats, where LEB128 of the value takes four that
/// look random to the compressor.
fn put_weight(out: &mut Vec<u8>, mut v: u64) {
    let mut power = 0u8;
    while v != 0 && v.is_multiple_of(10) {
        v /= 10;
        power += 1;
    }
    out.push(power);
    put_varint(out, v);
}

/// Reads a weight written by [`put_weight`], refusing a second form of one value and any
/// over `u64::MAX`.
fn weight(r: &mut Reader<'_>) -> Result<u64, &'static str> {
    let power = r.u8().map_err(|_| "the diff ends inside a weight")?;
    let digits = varint(r)?;
    if (digits == 0 && power > 0) || (digits != 0 && digits.is_multiple_of(10)) {
        return Err("a weight not in its shortest form");
    }
    10u64
        .checked_pow(u32::from(power))
        .and_then(|p| digits.checked_mul(p))
        .ok_or("a weight over 64 bits")
}

/// A count of entries: a varint that fits in memory.
fn count(r: &mut Reader<'_>) -> Result<usize, &'static str> {
    usize::try_from(varint(r)?).map_err(|_| "a count too large")
}

/// Flags as the diff carries them: one byte, no unknown bit set.
fn flags(r: &mut Reader<'_>) -> Result<Flags, &'static str> {
    let bits = r.u8().map_err(|_| "the diff ends inside flags")?;
    let f = Flags::from_bits(bits);
    if f.bits() != bits {
        return Err("unknown flag bits");
    }
    Ok(f)
}

/// 32 bytes.
fn key32(r: &mut Reader<'_>) -> Result<[u8; 32], &'static str> {
    r.array::<32>().map_err(|_| "the diff ends inside a key")
}

/// Appends a `u32` length and `text`.
fn put_text(out: &mut Vec<u8>, text: &str) -> Result<(), DocError> {
    let len = u32::try_from(text.len()).map_err(|_| DocError::TooLarge {
        len: text.len(),
        max: MAX_DIFF_LEN,
    })?;
    out.put_u32(len);
    out.put(text.as_bytes());
    Ok(())
}

/// Reads a `u32` length and that much UTF-8 text.
fn text<'a>(r: &mut Reader<'a>) -> Result<&'a str, &'static str> {
    let len = r.u32().map_err(|_| "the diff ends inside a length")?;
    let bytes = usize::try_from(len)
        .ok()
        .and_then(|n| r.take(n).ok())
        .ok_or("the diff ends inside a text")?;
    std::str::from_utf8(bytes).map_err(|_| "a text that is not UTF-8")
}

/// Appends a new entry: nickname (length and bytes), identity key, address (4 or 6, the IP's
/// bytes, port), weight, onion key, link key, flags, family (count and fingerprints).
fn put_entry(out: &mut Vec<u8>, e: &RelayEntry) {
    // A nickname is at most 19 bytes and a family at most 16 (checked by `encode`).
    out.put_u8(e.nickname.len() as u8);
    out.put(e.nickname.as_bytes());
    out.put(e.identity.as_bytes());
    match e.address.ip() {
        IpAddr::V4(ip) => {
            out.put_u8(4);
            out.put(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.put_u8(6);
            out.put(&ip.octets());
        }
    }
    out.put_u16(e.address.port());
    put_weight(out, e.bandwidth);
    out.put(&e.ntor_key);
    out.put(&e.link_key);
    out.put_u8(e.flags.bits());
    out.put_u8(e.family.len() as u8);
    for id in &e.family {
        out.put(&id.0);
    }
}

/// Reads an entry written by [`put_entry`], checked as a consensus entry is.
fn entry(r: &mut Reader<'_>) -> Result<RelayEntry, &'static str> {
    let short = |_| "the diff ends inside a new entry";
    let n = r.u8().map_err(short)?;
    let nickname = std::str::from_utf8(r.take(usize::from(n)).map_err(short)?)
        .map_err(|_| "a nickname that is not UTF-8")?
        .to_string();
    let identity = parse_key(&key32(r)?).ok_or("an identity that is not a usable ed25519 key")?;
    let ip = match r.u8().map_err(short)? {
        4 => IpAddr::from(r.array::<4>().map_err(short)?),
        6 => IpAddr::from(r.array::<16>().map_err(short)?),
        _ => return Err("an address family other than 4 or 6"),
    };
    let address = SocketAddr::new(ip, r.u16().map_err(short)?);
    let bandwidth = weight(r)?;
    let ntor_key = key32(r)?;
    let link_key = key32(r)?;
    let flags = flags(r)?;
    let members = r.u8().map_err(short)?;
    if usize::from(members) > MAX_FAMILY {
        return Err("a family of more than 16");
    }
    let family = (0..members)
        .map(|_| r.array::<20>().map(RelayId).map_err(short))
        .collect::<Result<Vec<_>, _>>()?;
    let e = RelayEntry {
        id: RelayId::of(&identity),
        nickname,
        identity,
        address,
        bandwidth,
        ntor_key,
        link_key,
        flags,
        family,
    };
    e.check()
        .map_err(|_| "a new entry that no consensus could hold")?;
    Ok(e)
}

/// The operations being written, each after the run of base entries it keeps.
struct Ops {
    out: Vec<u8>,
    keep: u64,
    drop: u64,
}

impl Ops {
    /// Counts one more base entry copied as it is.
    fn keep(&mut self) {
        self.flush_drops();
        self.keep += 1;
    }

    /// Counts one more base entry skipped.
    fn drop(&mut self) {
        self.drop += 1;
    }

    /// Writes the skipped entries waiting, as one operation.
    fn flush_drops(&mut self) {
        if self.drop > 0 {
            let n = std::mem::take(&mut self.drop);
            self.op(op::DROP);
            put_varint(&mut self.out, n);
        }
    }

    /// Starts operation `code`, after the run of kept entries before it.
    fn op(&mut self, code: u8) {
        if code != op::DROP {
            self.flush_drops();
        }
        put_varint(&mut self.out, std::mem::take(&mut self.keep));
        self.out.push(code);
    }
}

/// The diff that turns `base` into `target` (`docs/spec.md` §5.12). Both must encode (every
/// parsed consensus does) and `target` must carry its signatures.
pub fn consensus_diff(base: &Consensus, target: &Consensus) -> Result<Vec<u8>, DocError> {
    let target_text = target.encode()?;
    let parts = sections(&target_text)?;
    let mut ops = Ops {
        out: Vec::new(),
        keep: 0,
        drop: 0,
    };
    ops.out.put(DIFF_MAGIC);
    ops.out.put(&base.body_digest());
    ops.out.put(&target.body_digest());
    put_text(&mut ops.out, parts.header)?;
    let (mut i, mut j) = (0, 0);
    let (old, new) = (&base.relays, &target.relays);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.id.cmp(&b.id),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match (order, old.get(i), new.get(j)) {
            (std::cmp::Ordering::Less, _, _) => {
                ops.drop();
                i += 1;
            }
            (std::cmp::Ordering::Equal, Some(a), Some(b)) if a == b => {
                ops.keep();
                i += 1;
                j += 1;
            }
            (std::cmp::Ordering::Equal, Some(a), Some(b)) if same_but_status(a, b) => {
                if a.ntor_key != b.ntor_key {
                    // A weekly onion key rotation: 32 bytes, not a whole entry.
                    ops.op(op::KEY);
                    ops.out.put(&b.ntor_key);
                    put_weight(&mut ops.out, b.bandwidth);
                    ops.out.put_u8(b.flags.bits());
                } else if a.flags == b.flags {
                    ops.op(op::WEIGHT);
                    put_weight(&mut ops.out, b.bandwidth);
                } else if a.bandwidth == b.bandwidth {
                    ops.op(op::FLAGS);
                    ops.out.put_u8(b.flags.bits());
                } else {
                    ops.op(op::BOTH);
                    put_weight(&mut ops.out, b.bandwidth);
                    ops.out.put_u8(b.flags.bits());
                }
                i += 1;
                j += 1;
            }
            (std::cmp::Ordering::Equal, _, Some(b)) => {
                ops.drop();
                ops.op(op::ADD);
                put_entry(&mut ops.out, b);
                i += 1;
                j += 1;
            }
            (_, _, Some(b)) => {
                ops.op(op::ADD);
                put_entry(&mut ops.out, b);
                j += 1;
            }
            (_, _, None) => break,
        }
    }
    ops.op(op::END);
    put_text(&mut ops.out, parts.signatures)?;
    Ok(ops.out)
}

/// Applies `diff` to the consensus text `base` and returns the new consensus text
/// (`docs/spec.md` §5.12). Refused unless the diff is well formed, names `base` by its body
/// digest, uses every base entry exactly once and yields a body whose digest is the diff's
/// `to`. The result's signatures are not checked here.
pub fn apply_diff(base: &str, diff: &[u8]) -> Result<String, DocError> {
    if diff.len() > MAX_DIFF_LEN {
        return Err(DocError::TooLarge {
            len: diff.len(),
            max: MAX_DIFF_LEN,
        });
    }
    let mut r = Reader::new(diff);
    let at = |r: &Reader<'_>| diff.len() - r.remaining();
    let fail = |r: &Reader<'_>, reason: &'static str| DocError::MalformedDiff {
        offset: at(r),
        reason,
    };
    if !diff.starts_with(DIFF_MAGIC) {
        return Err(fail(&r, "not a `shallot-consensus-diff` of version 4"));
    }
    r.take(DIFF_MAGIC.len())
        .map_err(|_| fail(&r, "the diff ends early"))?;
    let from = r
        .array::<32>()
        .map_err(|_| fail(&r, "the diff ends early"))?;
    let to = r
        .array::<32>()
        .map_err(|_| fail(&r, "the diff ends early"))?;
    if text_body_digest(base) != from {
        return Err(DocError::DiffMismatch("it is not from the consensus held"));
    }
    let base = sections(base)?;
    let header = text(&mut r).map_err(|e| fail(&r, e))?;
    // Whole lines of §5.1, none an entry's or a signature's: the body it starts must end
    // where the signatures begin, or `to` would not cover the entries.
    if !(header.is_empty() || LineReader::new(header).is_ok())
        || header.split_inclusive('\n').any(|l| {
            l.starts_with("r ") || l.starts_with("f ") || l.starts_with("directory-signature ")
        })
    {
        return Err(fail(&r, "a header that is not lines of a consensus's head"));
    }
    let mut out = String::with_capacity(base.header.len() + base.entries.len() * 280);
    out.push_str(header);
    let mut next = 0usize;
    loop {
        if out.len() > MAX_CONSENSUS_LEN {
            return Err(DocError::TooLarge {
                len: out.len(),
                max: MAX_CONSENSUS_LEN,
            });
        }
        let keep = count(&mut r).map_err(|e| fail(&r, e))?;
        let end = next
            .checked_add(keep)
            .filter(|&e| e <= base.entries.len())
            .ok_or_else(|| fail(&r, "the diff uses more entries than the base has"))?;
        for e in &base.entries[next..end] {
            if out.len() + e.len() > MAX_CONSENSUS_LEN {
                return Err(DocError::TooLarge {
                    len: out.len() + e.len(),
                    max: MAX_CONSENSUS_LEN,
                });
            }
            out.push_str(e);
        }
        next = end;
        let code = r.u8().map_err(|_| fail(&r, "the diff ends early"))?;
        match code {
            op::END => break,
            op::DROP => {
                let n = count(&mut r).map_err(|e| fail(&r, e))?;
                next = next
                    .checked_add(n)
                    .filter(|&e| n >= 1 && e <= base.entries.len())
                    .ok_or_else(|| fail(&r, "a drop of none, or of entries the base lacks"))?;
            }
            op::ADD => {
                let e = entry(&mut r).map_err(|e| fail(&r, e))?;
                out.push_str(&entry_text(&e));
            }
            op::WEIGHT | op::FLAGS | op::BOTH | op::KEY => {
                let entry = base
                    .entries
                    .get(next)
                    .ok_or_else(|| fail(&r, "the diff edits an entry the base lacks"))?;
                next += 1;
                let edit = read_edit(&mut r, code).map_err(|e| fail(&r, e))?;
                edit_entry(&mut out, entry, &edit).map_err(|e| fail(&r, e))?;
            }
            _ => return Err(fail(&r, "unknown diff operation")),
        }
    }
    if next != base.entries.len() {
        return Err(fail(&r, "the diff leaves base entries unused"));
    }
    if text_body_digest(&out) != to {
        return Err(DocError::DiffMismatch(
            "the body it rebuilds does not have the digest it names",
        ));
    }
    let signatures = text(&mut r).map_err(|e| fail(&r, e))?;
    if LineReader::new(signatures).is_err()
        || !signatures
            .split_inclusive('\n')
            .all(|l| l.starts_with("directory-signature "))
    {
        return Err(fail(
            &r,
            "signatures that are not `directory-signature` lines",
        ));
    }
    if out.len() + signatures.len() > MAX_CONSENSUS_LEN {
        return Err(DocError::TooLarge {
            len: out.len() + signatures.len(),
            max: MAX_CONSENSUS_LEN,
        });
    }
    out.push_str(signatures);
    let offset = at(&r);
    r.finish().map_err(|_| DocError::MalformedDiff {
        offset,
        reason: "bytes after the signatures",
    })?;
    Ok(out)
}

/// What an edit puts in place of a base entry's fields; `None` keeps the base's.
struct Edit {
    weight: Option<u64>,
    ntor: Option<[u8; 32]>,
    flags: Option<Flags>,
}

/// Reads the arguments of edit `code`.
fn read_edit(r: &mut Reader<'_>, code: u8) -> Result<Edit, &'static str> {
    let ntor = match code {
        op::KEY => Some(key32(r)?),
        _ => None,
    };
    let weight = match code {
        op::FLAGS => None,
        _ => Some(weight(r)?),
    };
    let flags = match code {
        op::WEIGHT => None,
        _ => Some(flags(r)?),
    };
    Ok(Edit {
        weight,
        ntor,
        flags,
    })
}

/// Appends `entry` with the fields of `edit` replaced.
fn edit_entry(out: &mut String, entry: &str, edit: &Edit) -> Result<(), &'static str> {
    let r_len = line_end(entry);
    let fields: Vec<&str> = entry[..r_len].trim_end_matches('\n').split(' ').collect();
    // r <nickname> <identity> <address> <weight> <ntor> <link> <flags…>
    if fields.len() < 8 {
        return Err("the base entry is malformed");
    }
    out.push_str(&fields[..4].join(" "));
    out.push(' ');
    match edit.weight {
        Some(w) => {
            let _ = write!(out, "{w}");
        }
        None => out.push_str(fields[4]),
    }
    out.push(' ');
    match &edit.ntor {
        Some(k) => out.push_str(&hex::encode(k)),
        None => out.push_str(fields[5]),
    }
    out.push(' ');
    out.push_str(fields[6]);
    out.push(' ');
    match edit.flags {
        Some(f) => {
            let _ = write!(out, "{f}");
        }
        None => out.push_str(&fields[7..].join(" ")),
    }
    out.push('\n');
    out.push_str(&entry[r_len..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::entry::tests::arb_entries;
    use crate::dir::{ConsensusParams, Flags, SharedRandom};
    use proptest::prelude::*;
    use shallot_crypto::keys::IdentityKeypair;

    fn signed(valid_after: u64, relays: Vec<RelayEntry>, key: &IdentityKeypair) -> Consensus {
        let mut c = Consensus {
            valid_after,
            fresh_until: valid_after + 3600,
            valid_until: valid_after + 10800,
            params: ConsensusParams {
                epoch_secs: 86400,
                max_share_ppm: 50_000,
            },
            shared_rand: SharedRandom {
                previous: None,
                current: [valid_after as u8; 32],
                epochs: vec![],
                commits: vec![(key.public(), [9; 32])],
            },
            relays,
            signatures: vec![],
        };
        let sig = c.sign_body(key).unwrap();
        c.add_signature(key.public(), sig);
        c
    }

    fn key() -> IdentityKeypair {
        IdentityKeypair::from_secret_bytes(&[7; 32])
    }

    /// `target`'s relays: `base`'s with some dropped, some edited, and `added` merged in.
    fn evolve(base: &[RelayEntry], added: Vec<RelayEntry>, choices: &[u8]) -> Vec<RelayEntry> {
        let mut out: Vec<RelayEntry> = Vec::new();
        for (i, e) in base.iter().enumerate() {
            let mut e = e.clone();
            match choices.get(i).copied().unwrap_or(0) % 7 {
                0 => continue,
                1 => e.bandwidth = e.bandwidth.wrapping_add(1),
                2 => e.flags = Flags::from_bits(e.flags.bits() ^ 1),
                3 => e.ntor_key[0] ^= 1,
                4 => {
                    e.bandwidth = e.bandwidth.wrapping_add(1);
                    e.flags = Flags::from_bits(e.flags.bits() ^ 1);
                }
                _ => {}
            }
            out.push(e);
        }
        out.extend(added);
        out.sort_by_key(|e| e.id);
        out.dedup_by_key(|e| e.id);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn apply_of_diff_gives_the_target(
            a in arb_entries(12),
            b in arb_entries(6),
            choices in proptest::collection::vec(any::<u8>(), 12),
        ) {
            let base = signed(3600, a.clone(), &key());
            let target = signed(7200, evolve(&a, b, &choices), &key());
            let diff = consensus_diff(&base, &target).unwrap();
            let out = apply_diff(&base.encode().unwrap(), &diff).unwrap();
            prop_assert_eq!(&out, &target.encode().unwrap());
            prop_assert_eq!(Consensus::parse(&out).unwrap(), target);
        }

        /// Arbitrary bytes, alone or after a true start (the name and the base's digest, and
        /// then a true header, so that the operations are read against the base's entries).
        #[test]
        fn arbitrary_diffs_never_panic(
            a in arb_entries(8),
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let base = signed(3600, a, &key());
            let text = base.encode().unwrap();
            let _ = apply_diff(&text, &bytes);
            let mut named = DIFF_MAGIC.to_vec();
            named.extend_from_slice(&base.body_digest());
            named.extend_from_slice(&bytes);
            let _ = apply_diff(&text, &named);
            let mut headed = consensus_diff(&base, &base).unwrap();
            headed.truncate(ops_start(&headed));
            headed.extend_from_slice(&bytes);
            let _ = apply_diff(&text, &headed);
        }

        /// A diff changed anywhere, or cut short, is refused, or rebuilds the very body it
        /// names (a change in the signature lines is for the signature check to catch).
        #[test]
        fn a_changed_diff_is_refused_or_rebuilds_its_target(
            a in arb_entries(8),
            b in arb_entries(4),
            choices in proptest::collection::vec(any::<u8>(), 8),
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<bool>(),
        ) {
            let base = signed(3600, a.clone(), &key());
            let target = signed(7200, evolve(&a, b, &choices), &key());
            let mut diff = consensus_diff(&base, &target).unwrap();
            let i = at.index(diff.len());
            if cut {
                diff.truncate(i);
            } else {
                diff[i] ^= xor;
            }
            if let Ok(out) = apply_diff(&base.encode().unwrap(), &diff) {
                prop_assert_eq!(text_body_digest(&out), target.body_digest());
            }
        }

        #[test]
        fn weights_round_trip_in_one_form(digits in 1u64..1000, power in 0u32..20) {
            let v = digits.saturating_mul(10u64.saturating_pow(power));
            let mut out = Vec::new();
            put_weight(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(weight(&mut r), Ok(v));
            prop_assert!(r.finish().is_ok());
            // With one zero more in the digits and one power of ten less, it is refused.
            if out[0] > 0 {
                let mut longer = vec![out[0] - 1];
                put_varint(&mut longer, (v / 10u64.pow(u32::from(out[0]))) * 10);
                prop_assert!(weight(&mut Reader::new(&longer)).is_err());
            }
        }

        #[test]
        fn varints_round_trip_in_one_form(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(varint(&mut r), Ok(v));
            prop_assert!(r.finish().is_ok());
            // The same value with a needless zero byte is refused.
            let last = out.len() - 1;
            out[last] |= 0x80;
            out.push(0);
            prop_assert!(varint(&mut Reader::new(&out)).is_err());
        }
    }

    #[test]
    fn numbers_over_64_bits_are_refused() {
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            varint(&mut Reader::new(&over)),
            Err("a number over 64 bits")
        );
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(varint(&mut Reader::new(&max)), Ok(u64::MAX));
        assert!(varint(&mut Reader::new(&[0x80; 11])).is_err());
    }

    fn pair() -> (Consensus, Consensus) {
        let k = key();
        let relays: Vec<RelayEntry> = (0..4u8)
            .map(|i| {
                let id = IdentityKeypair::from_secret_bytes(&[i + 1; 32]).public();
                RelayEntry {
                    id: shallot_crypto::keys::RelayId::of(&id),
                    nickname: format!("r{i}"),
                    identity: id,
                    address: ([10, 0, 0, i + 1], 9000).into(),
                    bandwidth: 1000,
                    ntor_key: [i; 32],
                    link_key: [i; 32],
                    flags: Flags::RUNNING | Flags::VALID,
                    family: vec![],
                }
            })
            .collect();
        let mut relays: Vec<RelayEntry> = relays;
        relays.sort_by_key(|e| e.id);
        let base = signed(3600, relays.clone(), &k);
        relays[1].bandwidth = 2000;
        relays.remove(3);
        (base, signed(7200, relays, &k))
    }

    /// `target` signed again after its relays were changed.
    fn resigned(mut target: Consensus) -> Consensus {
        target.signatures.clear();
        let sig = target.sign_body(&key()).unwrap();
        target.add_signature(key().public(), sig);
        target
    }

    /// Where the operations of `diff` start (after the magic, the digests and the header).
    fn ops_start(diff: &[u8]) -> usize {
        let at = DIFF_MAGIC.len() + 64;
        let len = u32::from_be_bytes(diff[at..at + 4].try_into().unwrap()) as usize;
        at + 4 + len
    }

    /// The offset of `needle` in `hay`.
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    // Keep 1, new weight 2000 (2 × 10³); keep 1, drop 1; keep 0, end.
    const PAIR_OPS: [u8; 9] = [1, b'w', 3, 2, 1, b'd', 1, 0, b'e'];

    #[test]
    fn small_changes_give_small_operations() {
        let (base, target) = pair();
        let diff = consensus_diff(&base, &target).unwrap();
        assert!(diff.starts_with(b"shallot-consensus-diff 4\n"));
        let at = ops_start(&diff);
        assert_eq!(diff[at..at + PAIR_OPS.len()], PAIR_OPS);
        assert_eq!(
            apply_diff(&base.encode().unwrap(), &diff).unwrap(),
            target.encode().unwrap()
        );
    }

    #[test]
    fn a_rotated_onion_key_costs_its_bytes_and_no_new_entry() {
        let (base, mut target) = pair();
        target.relays[0].ntor_key = [0xab; 32];
        let target = resigned(target);
        let diff = consensus_diff(&base, &target).unwrap();
        let mut op = vec![0, b'k'];
        op.extend_from_slice(&[0xab; 32]);
        op.extend_from_slice(&[3, 1, (Flags::RUNNING | Flags::VALID).bits()]);
        let at = ops_start(&diff);
        assert_eq!(diff[at..at + op.len()], op[..]);
        assert!(find(&diff[at..], &[0, b'a']).is_none());
        let base_text = base.encode().unwrap();
        assert_eq!(
            apply_diff(&base_text, &diff).unwrap(),
            target.encode().unwrap()
        );
        // Cut inside the key, the diff is refused.
        assert!(matches!(
            apply_diff(&base_text, &diff[..at + 20]),
            Err(DocError::MalformedDiff {
                reason: "the diff ends inside a key",
                ..
            })
        ));
    }

    #[test]
    fn new_flags_alone_cost_only_the_flags() {
        let (base, mut target) = pair();
        target.relays[0].flags = Flags::RUNNING | Flags::VALID | Flags::GUARD;
        let target = resigned(target);
        let diff = consensus_diff(&base, &target).unwrap();
        let at = ops_start(&diff);
        let bits = target.relays[0].flags.bits();
        assert_eq!(diff[at..at + 3], [0, b's', bits]);
        let base_text = base.encode().unwrap();
        assert_eq!(
            apply_diff(&base_text, &diff).unwrap(),
            target.encode().unwrap()
        );
        // An unknown flag bit is refused, and so is a text diff of an earlier version.
        let mut unknown = diff.clone();
        unknown[at + 2] |= 0x40;
        assert!(matches!(
            apply_diff(&base_text, &unknown),
            Err(DocError::MalformedDiff {
                reason: "unknown flag bits",
                ..
            })
        ));
        let v3 = format!(
            "shallot-consensus-diff 3\nfrom {}\n",
            hex::encode(&base.body_digest())
        );
        assert!(matches!(
            apply_diff(&base_text, v3.as_bytes()),
            Err(DocError::MalformedDiff { offset: 0, .. })
        ));
    }

    #[test]
    fn a_new_relay_is_added_whole_and_checked() {
        let (base, mut target) = pair();
        let id = IdentityKeypair::from_secret_bytes(&[9; 32]).public();
        target.relays.push(RelayEntry {
            id: shallot_crypto::keys::RelayId::of(&id),
            nickname: "newcomer".into(),
            identity: id,
            address: "[2001:db8::1]:443".parse().unwrap(),
            bandwidth: 5_500_000,
            ntor_key: [0x11; 32],
            link_key: [0x22; 32],
            flags: Flags::RUNNING | Flags::VALID | Flags::FAST,
            family: vec![target.relays[0].id],
        });
        target.relays.sort_by_key(|e| e.id);
        let target = resigned(target);
        let diff = consensus_diff(&base, &target).unwrap();
        let base_text = base.encode().unwrap();
        assert_eq!(
            apply_diff(&base_text, &diff).unwrap(),
            target.encode().unwrap()
        );
        // Its nickname turned into one no consensus holds: refused before any digest.
        let nick = find(&diff, b"newcomer").unwrap();
        let mut bad = diff.clone();
        bad[nick] = b' ';
        assert!(matches!(
            apply_diff(&base_text, &bad),
            Err(DocError::MalformedDiff {
                reason: "a new entry that no consensus could hold",
                ..
            })
        ));
        // An address family other than 4 or 6.
        let mut bad = diff.clone();
        bad[nick + 8 + 32] = 5;
        assert!(matches!(
            apply_diff(&base_text, &bad),
            Err(DocError::MalformedDiff {
                reason: "an address family other than 4 or 6",
                ..
            })
        ));
    }

    #[test]
    fn refuses_another_base_a_wrong_target_and_bad_counts() {
        let (base, target) = pair();
        let base_text = base.encode().unwrap();
        let diff = consensus_diff(&base, &target).unwrap();
        let at = ops_start(&diff);
        let with_ops = |ops: &[u8]| {
            let mut d = diff[..at].to_vec();
            d.extend_from_slice(ops);
            d.extend_from_slice(&diff[at + PAIR_OPS.len()..]);
            d
        };
        assert_eq!(with_ops(&PAIR_OPS), diff);
        // A diff from another consensus.
        let other = signed(1800, vec![], &key()).encode().unwrap();
        assert!(matches!(
            apply_diff(&other, &diff),
            Err(DocError::DiffMismatch("it is not from the consensus held"))
        ));
        // A diff whose operations do not rebuild the body it names.
        assert!(matches!(
            apply_diff(
                &base_text,
                &with_ops(&[1, b'w', 0, 0xd1, 0x0f, 1, b'd', 1, 0, b'e'])
            ),
            Err(DocError::DiffMismatch(_))
        ));
        let refused = |ops: &[u8], why: &str| match apply_diff(&base_text, &with_ops(ops)) {
            Err(DocError::MalformedDiff { reason, .. }) => assert_eq!(reason, why),
            other => panic!("{ops:?}: {other:?}"),
        };
        // Using more entries than the base has, or fewer; a drop of none; a number in two
        // bytes where one does.
        refused(
            &[1, b'w', 3, 2, 1, b'd', 2, 0, b'e'],
            "a drop of none, or of entries the base lacks",
        );
        refused(
            &[1, b'w', 3, 2, 1, b'd', 0, 0, b'e'],
            "a drop of none, or of entries the base lacks",
        );
        refused(
            &[1, b'w', 3, 2, 3, b'e'],
            "the diff uses more entries than the base has",
        );
        refused(
            &[1, b'w', 3, 2, 1, b'e'],
            "the diff leaves base entries unused",
        );
        refused(
            &[0x81, 0, b'w', 3, 2, 1, b'd', 1, 0, b'e'],
            "a number not in its shortest form",
        );
        refused(&[1, b'x'], "unknown diff operation");
        // 2000 as 200 × 10 or 2000 × 1, and a weight past 64 bits.
        refused(
            &[1, b'w', 1, 0xc8, 0x01, 1, b'd', 1, 0, b'e'],
            "a weight not in its shortest form",
        );
        refused(
            &[1, b'w', 0, 0xd0, 0x0f, 1, b'd', 1, 0, b'e'],
            "a weight not in its shortest form",
        );
        refused(&[1, b'w', 20, 1], "a weight over 64 bits");
        refused(
            &[4, b'w', 3, 2, 0, b'e'],
            "the diff edits an entry the base lacks",
        );
        // Bytes after the signatures, and signature text that is not signature lines.
        let mut extra = diff.clone();
        extra.push(0);
        assert!(matches!(
            apply_diff(&base_text, &extra),
            Err(DocError::MalformedDiff {
                reason: "bytes after the signatures",
                ..
            })
        ));
        let sigs = find(&diff, b"directory-signature ").unwrap();
        let mut forged = diff.clone();
        forged[sigs] = b'r';
        assert!(matches!(
            apply_diff(&base_text, &forged),
            Err(DocError::MalformedDiff { .. })
        ));
        assert!(apply_diff(&base_text, &diff).is_ok());
    }

    #[test]
    fn a_header_or_signatures_out_of_their_place_are_refused() {
        let (base, target) = pair();
        let base_text = base.encode().unwrap();
        let diff = consensus_diff(&base, &target).unwrap();
        let at = DIFF_MAGIC.len() + 64;
        let header_len = u32::from_be_bytes(diff[at..at + 4].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&diff[at + 4..at + 4 + header_len]).unwrap();
        let sigs = find(&diff, b"directory-signature ").unwrap();
        let signature_lines = std::str::from_utf8(&diff[sigs..]).unwrap();
        let with = |header: &str, signatures: &str| {
            let mut d = diff[..at].to_vec();
            d.extend_from_slice(&(header.len() as u32).to_be_bytes());
            d.extend_from_slice(header.as_bytes());
            d.extend_from_slice(&diff[at + 4 + header_len..sigs - 4]);
            d.extend_from_slice(&(signatures.len() as u32).to_be_bytes());
            d.extend_from_slice(signatures.as_bytes());
            d
        };
        assert_eq!(with(header, signature_lines), diff);
        let refused = |d: Vec<u8>, why: &str| match apply_diff(&base_text, &d) {
            Err(DocError::MalformedDiff { reason, .. }) => assert_eq!(reason, why),
            other => panic!("{other:?}"),
        };
        let head = "a header that is not lines of a consensus's head";
        // A signature line in the header would end the body there, before the entries.
        refused(
            with(&format!("{header}{signature_lines}"), signature_lines),
            head,
        );
        refused(with(&format!("{header}r x\n"), signature_lines), head);
        refused(with(header.trim_end_matches('\n'), signature_lines), head);
        let sigs_why = "signatures that are not `directory-signature` lines";
        refused(with(header, ""), sigs_why);
        refused(
            with(header, &format!("{signature_lines}valid-after 1\n")),
            sigs_why,
        );
        refused(
            with(header, signature_lines.trim_end_matches('\n')),
            sigs_why,
        );
    }

    #[test]
    fn a_result_over_the_consensus_limit_is_refused() {
        let (base, target) = pair();
        let base_text = base.encode().unwrap();
        let diff = consensus_diff(&base, &target).unwrap();
        let at = DIFF_MAGIC.len() + 64;
        let header_len = u32::from_be_bytes(diff[at..at + 4].try_into().unwrap()) as usize;
        // The true header padded with lines until the diff is as long as a diff may be: the
        // entries it keeps then take the result past the limit of a consensus.
        let mut header = String::from_utf8(diff[at + 4..at + 4 + header_len].to_vec()).unwrap();
        let room = MAX_DIFF_LEN - diff.len();
        let pad = format!("params {}\n", "x".repeat(1000));
        while header.len() + pad.len() <= header_len + room - 100 {
            header.push_str(&pad);
        }
        let last = header_len + room - header.len() - "params \n".len();
        header.push_str(&format!("params {}\n", "x".repeat(last)));
        let mut d = diff[..at].to_vec();
        d.extend_from_slice(&(header.len() as u32).to_be_bytes());
        d.extend_from_slice(header.as_bytes());
        d.extend_from_slice(&diff[at + 4 + header_len..]);
        assert_eq!(d.len(), MAX_DIFF_LEN);
        let got = apply_diff(&base_text, &d);
        assert!(
            matches!(
                got,
                Err(DocError::TooLarge {
                    max: MAX_CONSENSUS_LEN,
                    ..
                })
            ),
            "{got:?}"
        );
    }

    #[test]
    fn the_fuzz_seeds_apply_to_their_base() {
        let base = include_str!("../../../fuzz/seeds/directory/consensus.txt");
        let same = include_bytes!("../../../fuzz/seeds/consensus_diff/same.bin");
        assert_eq!(apply_diff(base, same).unwrap(), base);
        let edit = include_bytes!("../../../fuzz/seeds/consensus_diff/edit.bin");
        let out = Consensus::parse(&apply_diff(base, edit).unwrap()).unwrap();
        assert_eq!(
            out.relays.len(),
            Consensus::parse(base).unwrap().relays.len() - 1
        );
    }
}
