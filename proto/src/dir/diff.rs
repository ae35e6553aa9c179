//! Consensus diffs (`docs/spec.md` §5.12): the change from one consensus to the next, small
//! enough to fetch every period, applied to the text a client already holds.
//!
//! The format follows the consensus's own layout rather than a generic line diff (Tor's
//! proposal 140 uses `ed` commands): a consensus is a short header, relay entries sorted by
//! fingerprint (an `r` line and an optional `f` line each) and signature lines. A diff sends
//! the new header and the new signatures whole (both are small and change every period) and
//! walks the base's entries in order with run-length operations: keep, drop, add, and the
//! edits an hourly consensus is made of, a new weight (`w`), new flags (`s`), or both (`m`),
//! and a rotated onion key (`k`, the key with weight and flags), which cost a few bytes where a line diff would resend the whole 260-byte `r` line with its
//! three keys. A relay that republishes an unchanged descriptor keeps the same entry text
//! (entries carry no published time, §5.4), so it costs only its share of a `keep` run.
//!
//! [`consensus_diff`] computes a diff from two parsed consensuses; [`apply_diff`] is pure text
//! in, text out: it checks that the base is the one named (`from`, the SHA-256 of its body),
//! and that the result's body hashes to `to`. The caller still parses and verifies the result's
//! signatures as for any fetched consensus: a diff carries no authority of its own.

use std::fmt::Write as _;

use shallot_crypto::hex;

use super::consensus::{digest, Consensus, MAX_CONSENSUS_LEN};
use super::entry::RelayEntry;
use super::lines::{parse_u64, LineReader};
use super::DocError;

/// The largest diff accepted: no larger than a consensus.
pub const MAX_DIFF_LEN: usize = MAX_CONSENSUS_LEN;

/// The keyword of a diff's first line.
const DIFF_KEYWORD: &str = "shallot-consensus-diff";

/// The version this module writes: 3, which added `s` (flags alone) to version 2 (entries
/// without a published time).
const DIFF_VERSION: &str = "3";

/// The versions it reads: a version-2 diff is a version-3 diff without `s`.
const DIFF_VERSIONS_READ: [&str; 2] = ["2", "3"];

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

/// The operation lines being written, with runs of `keep` and `drop` merged.
struct Ops {
    out: String,
    run: Option<(&'static str, usize)>,
}

impl Ops {
    fn run(&mut self, op: &'static str) {
        match &mut self.run {
            Some((o, n)) if *o == op => *n += 1,
            _ => {
                self.flush();
                self.run = Some((op, 1));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((op, n)) = self.run.take() {
            let _ = writeln!(self.out, "{op} {n}");
        }
    }

    fn line(&mut self, line: &str) {
        self.flush();
        self.out.push_str(line);
        self.out.push('\n');
    }
}

/// The diff that turns `base` into `target` (`docs/spec.md` §5.12). Both must encode (every
/// parsed consensus does) and `target` must carry its signatures.
pub fn consensus_diff(base: &Consensus, target: &Consensus) -> Result<String, DocError> {
    let target_text = target.encode()?;
    let parts = sections(&target_text)?;
    let mut ops = Ops {
        out: String::new(),
        run: None,
    };
    let _ = writeln!(ops.out, "{DIFF_KEYWORD} {DIFF_VERSION}");
    let _ = writeln!(ops.out, "from {}", hex::encode(&base.body_digest()));
    let _ = writeln!(ops.out, "to {}", hex::encode(&target.body_digest()));
    let _ = writeln!(ops.out, "header {}", parts.header.lines().count());
    ops.out.push_str(parts.header);
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
                ops.run("drop");
                i += 1;
            }
            (std::cmp::Ordering::Equal, Some(a), Some(b)) if a == b => {
                ops.run("keep");
                i += 1;
                j += 1;
            }
            (std::cmp::Ordering::Equal, Some(a), Some(b)) if same_but_status(a, b) => {
                if a.ntor_key != b.ntor_key {
                    // A weekly onion key rotation: 64 hex digits, not a whole entry.
                    let key = hex::encode(&b.ntor_key);
                    ops.line(&format!("k {key} {} {}", b.bandwidth, b.flags));
                } else if a.flags == b.flags {
                    ops.line(&format!("w {}", b.bandwidth));
                } else if a.bandwidth == b.bandwidth {
                    ops.line(&format!("s {}", b.flags));
                } else {
                    ops.line(&format!("m {} {}", b.bandwidth, b.flags));
                }
                i += 1;
                j += 1;
            }
            (std::cmp::Ordering::Equal, _, Some(b)) => {
                ops.run("drop");
                let text = entry_text(b);
                ops.line(&format!("add {}", text.lines().count()));
                ops.out.push_str(&text);
                i += 1;
                j += 1;
            }
            (_, _, Some(b)) => {
                let text = entry_text(b);
                ops.line(&format!("add {}", text.lines().count()));
                ops.out.push_str(&text);
                j += 1;
            }
            (_, _, None) => break,
        }
    }
    ops.flush();
    let _ = writeln!(ops.out, "signatures {}", parts.signatures.lines().count());
    ops.out.push_str(parts.signatures);
    Ok(ops.out)
}

/// Reads the lines of a diff, whose shape [`LineReader::new`] checked.
struct Lines<'a> {
    rest: &'a str,
    line_no: usize,
}

impl<'a> Lines<'a> {
    /// The next line, newline included.
    fn next_line(&mut self) -> Result<&'a str, DocError> {
        if self.rest.is_empty() {
            return Err(DocError::malformed(self.line_no + 1, "the diff ends early"));
        }
        let end = line_end(self.rest);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.line_no += 1;
        Ok(line)
    }

    /// The next `n` lines as one slice, each checked by `ok`.
    fn block(&mut self, n: usize, ok: impl Fn(&str) -> bool) -> Result<&'a str, DocError> {
        let start = self.rest;
        let mut len = 0;
        for _ in 0..n {
            let line = self.next_line()?;
            if !ok(line) {
                return Err(self.error("a line out of place in a copied block"));
            }
            len += line.len();
        }
        Ok(&start[..len])
    }

    fn error(&self, reason: &str) -> DocError {
        DocError::malformed(self.line_no, reason.to_string())
    }
}

/// Splits `line` (newline included) into its keyword and arguments.
fn words(line: &str) -> (&str, Vec<&str>) {
    let mut w = line.trim_end_matches('\n').split(' ');
    let keyword = w.next().unwrap_or_default();
    (keyword, w.collect())
}

/// A count argument: a canonical integer of at least 1 that fits in memory.
fn count(args: &[&str], lines: &Lines<'_>) -> Result<usize, DocError> {
    match args {
        [n] => parse_u64(n)
            .filter(|&n| n >= 1)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| lines.error("a count must be an integer of at least 1")),
        _ => Err(lines.error("expected one count")),
    }
}

/// Applies `diff` to the consensus text `base` and returns the new consensus text
/// (`docs/spec.md` §5.12). Refused unless the diff is well formed, names `base` by its body
/// digest, uses every base entry exactly once and yields a body whose digest is the diff's
/// `to`. The result's signatures are not checked here.
pub fn apply_diff(base: &str, diff: &str) -> Result<String, DocError> {
    if diff.len() > MAX_DIFF_LEN {
        return Err(DocError::TooLarge {
            len: diff.len(),
            max: MAX_DIFF_LEN,
        });
    }
    LineReader::new(diff)?;
    let mut lines = Lines {
        rest: diff,
        line_no: 0,
    };
    let (k, args) = words(lines.next_line()?);
    if k != DIFF_KEYWORD || !matches!(args.as_slice(), [v] if DIFF_VERSIONS_READ.contains(v)) {
        return Err(lines.error("not a `shallot-consensus-diff` of version 2 or 3"));
    }
    let digest_arg = |lines: &mut Lines<'_>, keyword: &str| -> Result<[u8; 32], DocError> {
        let (k, args) = words(lines.next_line()?);
        match (k == keyword, args.as_slice()) {
            (true, [h]) if h.len() == 64 => hex::decode_array::<32>(h)
                .map_err(|_| lines.error("a digest must be 64 lower-case hex digits")),
            _ => Err(lines.error(&format!("expected `{keyword} <digest>`"))),
        }
    };
    let from = digest_arg(&mut lines, "from")?;
    let to = digest_arg(&mut lines, "to")?;
    if text_body_digest(base) != from {
        return Err(DocError::DiffMismatch("it is not from the consensus held"));
    }
    let base = sections(base)?;
    let (k, args) = words(lines.next_line()?);
    let n = match (k, args.as_slice()) {
        ("header", [n]) => parse_u64(n)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| lines.error("bad header count"))?,
        _ => return Err(lines.error("expected `header <count>`")),
    };
    let mut out = String::with_capacity(base.header.len() + base.entries.len() * 280);
    out.push_str(lines.block(n, |l| !l.starts_with("r ") && !l.starts_with("f "))?);
    let mut next = 0usize;
    loop {
        if out.len() > MAX_CONSENSUS_LEN {
            return Err(DocError::TooLarge {
                len: out.len(),
                max: MAX_CONSENSUS_LEN,
            });
        }
        let line = lines.next_line()?;
        let (k, args) = words(line);
        match k {
            "keep" | "drop" => {
                let n = count(&args, &lines)?;
                let end = next
                    .checked_add(n)
                    .filter(|&e| e <= base.entries.len())
                    .ok_or_else(|| lines.error("the diff uses more entries than the base has"))?;
                if k == "keep" {
                    base.entries[next..end].iter().for_each(|e| out.push_str(e));
                }
                next = end;
            }
            "add" => {
                let n = count(&args, &lines)?;
                out.push_str(lines.block(n, |l| l.starts_with("r ") || l.starts_with("f "))?);
            }
            "w" | "m" | "s" | "k" => {
                let entry = base
                    .entries
                    .get(next)
                    .ok_or_else(|| lines.error("the diff edits an entry the base lacks"))?;
                next += 1;
                edit_entry(&mut out, entry, k, &args).map_err(|reason| lines.error(reason))?;
            }
            "signatures" => {
                let n = count(&args, &lines)?;
                if next != base.entries.len() {
                    return Err(lines.error("the diff leaves base entries unused"));
                }
                if text_body_digest(&out) != to {
                    return Err(DocError::DiffMismatch(
                        "the body it rebuilds does not have the digest it names",
                    ));
                }
                out.push_str(lines.block(n, |l| l.starts_with("directory-signature "))?);
                if !lines.rest.is_empty() {
                    return Err(lines.error("text after the signatures"));
                }
                if out.len() > MAX_CONSENSUS_LEN {
                    return Err(DocError::TooLarge {
                        len: out.len(),
                        max: MAX_CONSENSUS_LEN,
                    });
                }
                return Ok(out);
            }
            _ => return Err(lines.error("unknown diff operation")),
        }
    }
}

/// Appends `entry` with its weight (`w`), weight and flags (`m`), flags (`s`), or onion key,
/// weight and flags (`k`) replaced.
fn edit_entry(out: &mut String, entry: &str, op: &str, args: &[&str]) -> Result<(), &'static str> {
    let r_len = line_end(entry);
    let fields: Vec<&str> = entry[..r_len].trim_end_matches('\n').split(' ').collect();
    // r <nickname> <identity> <address> <weight> <ntor> <link> <flags…>
    if fields.len() < 8 {
        return Err("the base entry is malformed");
    }
    let number = |w: &str| parse_u64(w).is_some();
    // The onion key is copied as written: a malformed one fails the digest check (the base's
    // text is one whose body hashes to `from`) or the parse of the result.
    let key = |k: &str| k.len() == 64 && hex::decode_array::<32>(k).is_ok();
    let (weight, ntor, flags): (&str, &str, &[&str]) = match (op, args) {
        ("w", [w]) if number(w) => (w, fields[5], &fields[7..]),
        ("m", [w, flags @ ..]) if number(w) && !flags.is_empty() => (w, fields[5], flags),
        ("s", flags) if !flags.is_empty() => (fields[4], fields[5], flags),
        ("k", [ntor, w, flags @ ..]) if key(ntor) && number(w) && !flags.is_empty() => {
            (w, ntor, flags)
        }
        _ => return Err("bad arguments to `w`, `m`, `s` or `k`"),
    };
    out.push_str(&fields[..4].join(" "));
    for f in [weight, ntor, fields[6]]
        .into_iter()
        .chain(flags.iter().copied())
    {
        out.push(' ');
        out.push_str(f);
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
            match choices.get(i).copied().unwrap_or(0) % 6 {
                0 => continue,
                1 => e.bandwidth = e.bandwidth.wrapping_add(1),
                2 => e.flags = Flags::from_bits(e.flags.bits() ^ 1),
                3 => e.ntor_key[0] ^= 1,
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

        #[test]
        fn arbitrary_diffs_never_panic(s in "\\PC{0,400}") {
            let base = signed(3600, vec![], &key()).encode().unwrap();
            let _ = apply_diff(&base, &s);
        }
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

    #[test]
    fn small_changes_give_small_operations() {
        let (base, target) = pair();
        let diff = consensus_diff(&base, &target).unwrap();
        assert!(
            diff.contains("\nkeep 1\nw 2000\nkeep 1\ndrop 1\nsignatures 1\n"),
            "{diff}"
        );
    }

    #[test]
    fn a_rotated_onion_key_costs_one_line() {
        let (base, mut target) = pair();
        target.relays[0].ntor_key = [0xab; 32];
        target.signatures.clear();
        let sig = target.sign_body(&key()).unwrap();
        target.add_signature(key().public(), sig);
        let diff = consensus_diff(&base, &target).unwrap();
        let line = format!("k {} 1000 Running Valid\n", "ab".repeat(32));
        assert!(diff.contains(&line), "{diff}");
        assert!(!diff.contains("add "), "{diff}");
        let base_text = base.encode().unwrap();
        assert_eq!(
            apply_diff(&base_text, &diff).unwrap(),
            target.encode().unwrap()
        );
        // A key that is not 64 hex digits, or missing flags, is refused.
        for bad in [
            format!("k {} 1000 Running Valid\n", "ab".repeat(31)),
            format!("k {} 1000 Running Valid\n", "zz".repeat(32)),
            format!("k {} 1000\n", "ab".repeat(32)),
        ] {
            assert!(apply_diff(&base_text, &diff.replace(&line, &bad)).is_err());
        }
    }

    #[test]
    fn new_flags_alone_cost_only_the_flags() {
        let (base, mut target) = pair();
        target.relays[0].flags = Flags::RUNNING | Flags::VALID | Flags::GUARD;
        target.signatures.clear();
        let sig = target.sign_body(&key()).unwrap();
        target.add_signature(key().public(), sig);
        let diff = consensus_diff(&base, &target).unwrap();
        let line = format!("s {}\n", target.relays[0].flags);
        assert!(diff.starts_with("shallot-consensus-diff 3\n"), "{diff}");
        assert!(diff.contains(&format!("\n{line}")), "{diff}");
        let base_text = base.encode().unwrap();
        assert_eq!(
            apply_diff(&base_text, &diff).unwrap(),
            target.encode().unwrap()
        );
        // No flags is refused, and so is an unknown version.
        assert!(apply_diff(&base_text, &diff.replace(&line, "s\n")).is_err());
        let v4 = diff.replacen("shallot-consensus-diff 3", "shallot-consensus-diff 4", 1);
        assert!(apply_diff(&base_text, &v4).is_err());
    }

    #[test]
    fn refuses_another_base_a_wrong_target_and_bad_counts() {
        let (base, target) = pair();
        let base_text = base.encode().unwrap();
        let diff = consensus_diff(&base, &target).unwrap();
        // A diff from another consensus.
        let other = signed(1800, vec![], &key()).encode().unwrap();
        assert!(matches!(
            apply_diff(&other, &diff),
            Err(DocError::DiffMismatch("it is not from the consensus held"))
        ));
        // A diff whose operations do not rebuild the body it names.
        let tampered = diff.replace("w 2000", "w 2001");
        assert!(matches!(
            apply_diff(&base_text, &tampered),
            Err(DocError::DiffMismatch(_))
        ));
        // Using more entries than the base has, or fewer.
        assert!(apply_diff(&base_text, &diff.replace("drop 1", "drop 2")).is_err());
        assert!(apply_diff(&base_text, &diff.replace("drop 1\n", "")).is_err());
        assert!(apply_diff(&base_text, &diff.replace("keep 1\nw", "keep 0\nw")).is_err());
        assert!(apply_diff(&base_text, &diff.replace("keep 1\nw", "keep 01\nw")).is_err());
        assert!(apply_diff(&base_text, &format!("{diff}extra\n")).is_err());
        assert!(apply_diff(&base_text, &diff.replace("signatures 1", "signatures 2")).is_err());
        assert!(apply_diff(&base_text, &diff).is_ok());
    }

    #[test]
    fn the_fuzz_seeds_apply_to_their_base() {
        let base = include_str!("../../../fuzz/seeds/directory/consensus.txt");
        let same = include_str!("../../../fuzz/seeds/consensus_diff/same.txt");
        assert_eq!(apply_diff(base, same).unwrap(), base);
        let edit = include_str!("../../../fuzz/seeds/consensus_diff/edit.txt");
        let out = Consensus::parse(&apply_diff(base, edit).unwrap()).unwrap();
        assert_eq!(
            out.relays.len(),
            Consensus::parse(base).unwrap().relays.len() - 1
        );
    }
}
