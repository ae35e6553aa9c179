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
use super::lines::LineReader;
use super::{DocError, MAX_FAMILY};

/// The largest diff accepted: no larger than a consensus.
pub const MAX_DIFF_LEN: usize = MAX_CONSENSUS_LEN;

/// How a diff begins: its name and version as a line of text, so that a reader tells the
/// version before anything else. Version 4 made the operations binary; version 5 names a new
/// entry by its fingerprint, as consensus version 4 does. Older versions are no longer read: a
/// client given one fetches the whole consensus instead.
const DIFF_MAGIC: &[u8] = b"shallot-consensus-diff 5\n";

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
        && a.id == b.id
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

/// Appends a new entry: nickname (length and bytes), fingerprint, address (4 or 6, the IP's
/// bytes, port), weight, onion key, link key, flags, family (count and fingerprints).
fn put_entry(out: &mut Vec<u8>, e: &RelayEntry) {
    // A nickname is at most 19 bytes and a family at most 16 (checked by `encode`).
    out.put_u8(e.nickname.len() as u8);
    out.put(e.nickname.as_bytes());
    out.put(&e.id.0);
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
    let id = RelayId(r.array::<20>().map_err(short)?);
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
        id,
        nickname,
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
        return Err(fail(&r, "not a `shallot-consensus-diff` of version 5"));
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
    // r <nickname> <fingerprint> <address> <weight> <ntor> <link> <flags…>
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
mod tests;
