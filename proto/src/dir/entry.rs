//! Consensus relay entries and the flags shared by votes and the consensus (`docs/spec.md`
//! §5.3–5.4).
//!
//! An entry is one `r` line and, when the relay declares a family, one `f` line:
//!
//! ```text
//! r <nickname> <fingerprint hex20> <ip:port> <bandwidth> <ntor hex32> <link hex32> <flags>
//! f <fingerprint hex20> …
//! ```
//!
//! An entry carries no published time and no descriptor digest: both change every time a relay
//! republishes an unchanged descriptor, and an entry must stay the same text while nothing a
//! client uses changed, so that consensus diffs (§5.12) cost nothing for it. The binding of an
//! entry to one descriptor lives in the votes, which name descriptor digests (§5.3, §5.7).
//!
//! An entry names its relay by fingerprint, not by its ed25519 identity key: no client or relay
//! uses the key itself (the authorities check it, and the descriptor's signatures, when they
//! admit the descriptor, §5.7), and it would cost every client 12 more random bytes per relay.
//!
//! `<flags>` is the words of the set flags in the order `Fast Guard Mailbox Running Stable
//! Valid`, or `-` when none is set.

use std::fmt;
use std::net::SocketAddr;

use shallot_crypto::hex;
use shallot_crypto::keys::RelayId;

use super::lines::{check_addr, LineReader, LineWriter};
use super::{check_family, check_nickname, DocError, MAX_FAMILY};

/// A set of relay flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// Has enough bandwidth to be used for anything but the slowest paths.
    pub const FAST: Flags = Flags(1 << 0);
    /// Suitable as a client's first hop.
    pub const GUARD: Flags = Flags(1 << 1);
    /// Hosts mailboxes.
    pub const MAILBOX: Flags = Flags(1 << 2);
    /// Reachable: proved its link key to the authority recently.
    pub const RUNNING: Flags = Flags(1 << 3);
    /// Has been running continuously for a long time.
    pub const STABLE: Flags = Flags(1 << 4);
    /// Has a well-formed, correctly signed descriptor.
    pub const VALID: Flags = Flags(1 << 5);

    /// Every flag with its word, in the order they are written.
    pub const ALL: [(Flags, &'static str); 6] = [
        (Flags::FAST, "Fast"),
        (Flags::GUARD, "Guard"),
        (Flags::MAILBOX, "Mailbox"),
        (Flags::RUNNING, "Running"),
        (Flags::STABLE, "Stable"),
        (Flags::VALID, "Valid"),
    ];

    /// No flag.
    pub const fn empty() -> Self {
        Flags(0)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets or clears the flags of `other`.
    pub fn set(&mut self, other: Flags, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set of the given bits; unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Self {
        Flags(bits & 0x3f)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (flag, word) in Flags::ALL {
            if self.contains(flag) {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(word)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({self})")
    }
}

/// One relay as the consensus lists it, with the fields of the descriptor a majority of
/// authorities voted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEntry {
    /// The fingerprint: the first 20 bytes of SHA-256 of the relay's ed25519 identity key
    /// (the key is in its descriptor, not here).
    pub id: RelayId,
    /// The relay's nickname.
    pub nickname: String,
    /// Its link address.
    pub address: SocketAddr,
    /// Its consensus weight, bytes per second: the low median of the authorities'
    /// measurements, or a small capped figure while unmeasured (`docs/spec.md` §5.7).
    pub bandwidth: u64,
    /// Its ntor onion key.
    pub ntor_key: [u8; 32],
    /// Its Noise static link key.
    pub link_key: [u8; 32],
    /// Its flags.
    pub flags: Flags,
    /// Its declared family: sorted, unique, at most 16.
    pub family: Vec<RelayId>,
}

impl RelayEntry {
    /// The `r` line, without its newline.
    pub fn r_line(&self) -> String {
        format!(
            "r {} {} {} {} {} {} {}",
            self.nickname,
            self.id,
            self.address,
            self.bandwidth,
            hex::encode(&self.ntor_key),
            hex::encode(&self.link_key),
            self.flags
        )
    }

    /// Checks the values that have no text form, or whose text would not parse back.
    pub(crate) fn check(&self) -> Result<(), DocError> {
        check_nickname(&self.nickname).map_err(|r| DocError::invalid("nickname", r))?;
        check_addr(&self.address).map_err(|r| DocError::invalid("address", r))?;
        check_family(&self.family).map_err(|r| DocError::invalid("family", r))?;
        Ok(())
    }

    /// Appends the entry's lines (see [`RelayEntry::check`] for what makes them parse).
    pub(crate) fn write(&self, w: &mut LineWriter) {
        let line = self.r_line();
        w.line("r", [&line[2..]]);
        if !self.family.is_empty() {
            w.line("f", &self.family);
        }
    }

    /// Reads one entry (an `r` line and an optional `f` line).
    pub(crate) fn read(r: &mut LineReader<'_>) -> Result<RelayEntry, DocError> {
        let mut a = r.expect("r")?;
        let nickname = a.word("nickname")?.to_string();
        check_nickname(&nickname).map_err(|e| a.error(e))?;
        let id = a.relay_id("fingerprint")?;
        let address = a.addr("address")?;
        let bandwidth = a.u64("bandwidth")?;
        let ntor_key = a.hex32("ntor key")?;
        let link_key = a.hex32("link key")?;
        let words = a.rest();
        let flags = parse_flags(&words).map_err(|e| a.error(e))?;
        let mut family = Vec::new();
        if let Some(mut a) = r.maybe("f")? {
            while let Some(w) = a.next_word() {
                if family.len() == MAX_FAMILY {
                    return Err(a.error("more than 16 family members"));
                }
                family.push(RelayId::from_hex(w).map_err(|e| a.error(format!("family: {e}")))?);
            }
            if family.is_empty() {
                return Err(a.error("an empty family is written as no `f` line"));
            }
            check_family(&family).map_err(|e| a.error(e))?;
        }
        Ok(RelayEntry {
            id,
            nickname,
            address,
            bandwidth,
            ntor_key,
            link_key,
            flags,
            family,
        })
    }
}

pub(crate) fn parse_flags(words: &[&str]) -> Result<Flags, String> {
    match words {
        [] => return Err("missing flags".into()),
        ["-"] => return Ok(Flags::empty()),
        _ => {}
    }
    let mut flags = Flags::empty();
    let mut next = 0;
    for w in words {
        let Some(pos) = Flags::ALL[next..].iter().position(|(_, name)| name == w) else {
            return Err(format!(
                "`{w}` is not a flag, or flags are out of order or repeated"
            ));
        };
        flags.set(Flags::ALL[next + pos].0, true);
        next += pos + 1;
    }
    Ok(flags)
}

/// Reads entries until the next line is not an `r` line, checking they are sorted by
/// fingerprint without duplicates.
pub(crate) fn read_entries(r: &mut LineReader<'_>) -> Result<Vec<RelayEntry>, DocError> {
    let mut out: Vec<RelayEntry> = Vec::new();
    while r.peek_keyword() == Some("r") {
        let e = RelayEntry::read(r)?;
        if let Some(prev) = out.last() {
            if prev.id >= e.id {
                return Err(DocError::malformed(
                    r.line_no(),
                    "relay entries are not sorted by fingerprint, or repeat one",
                ));
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Checks entries: each one's values, and that they are sorted by fingerprint without
/// duplicates.
pub(crate) fn check_entries(entries: &[RelayEntry]) -> Result<(), DocError> {
    if entries.windows(2).any(|p| p[0].id >= p[1].id) {
        return Err(DocError::invalid(
            "relays",
            "not sorted by fingerprint, or repeated",
        ));
    }
    entries.iter().try_for_each(RelayEntry::check)
}

/// Writes entries, which must pass [`check_entries`] to parse back.
pub(crate) fn write_entries(w: &mut LineWriter, entries: &[RelayEntry]) {
    for e in entries {
        e.write(w);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary entries, sorted by fingerprint and unique, for the document tests.
    pub(crate) fn arb_entries(max: usize) -> impl Strategy<Value = Vec<RelayEntry>> {
        proptest::collection::vec(arb_entry(), 0..max).prop_map(|mut v| {
            v.sort_by_key(|e| e.id);
            v.dedup_by_key(|e| e.id);
            v
        })
    }

    pub(crate) fn arb_entry() -> impl Strategy<Value = RelayEntry> {
        (
            "[A-Za-z0-9]{1,19}",
            any::<[u8; 20]>(),
            any::<[u8; 16]>(),
            1u16..,
            any::<u64>(),
            any::<[u8; 32]>(),
            0u8..64,
            proptest::collection::btree_set(any::<[u8; 20]>(), 0..=3),
        )
            .prop_map(|(nickname, id, ip, port, bandwidth, key, bits, fam)| {
                let address = if ip[0] % 2 == 0 {
                    SocketAddr::from(([ip[1], ip[2], ip[3], ip[4].max(1)], port))
                } else {
                    let mut v6 = ip;
                    v6[15] |= 1;
                    SocketAddr::from((v6, port))
                };
                RelayEntry {
                    id: RelayId(id),
                    nickname,
                    address,
                    bandwidth,
                    ntor_key: key,
                    link_key: [!key[0]; 32],
                    flags: Flags::from_bits(bits),
                    family: fam.into_iter().map(RelayId).collect(),
                }
            })
    }

    #[test]
    fn flags_are_written_in_order() {
        assert_eq!(Flags::empty().to_string(), "-");
        let f = Flags::VALID | Flags::FAST | Flags::RUNNING;
        assert_eq!(f.to_string(), "Fast Running Valid");
        assert!(f.contains(Flags::RUNNING) && !f.contains(Flags::GUARD));
        assert_eq!(parse_flags(&["Fast", "Running", "Valid"]), Ok(f));
        assert_eq!(parse_flags(&["-"]), Ok(Flags::empty()));
        for bad in [
            &["Running", "Fast"][..],
            &["Fast", "Fast"],
            &["fast"],
            &["-", "Fast"],
            &[],
        ] {
            assert!(parse_flags(bad).is_err(), "{bad:?}");
        }
    }

    /// The `r` line names a relay by exactly 40 lower-case hex digits: a version-3 line (the
    /// 64-hex identity key there), upper case, and one digit too few or too many are refused.
    #[test]
    fn the_fingerprint_is_forty_lower_case_hex_digits() {
        let key = "ab".repeat(32);
        let read = |fp: &str| {
            let text = format!("x\nr nick {fp} 10.0.0.1:9001 1000 {key} {key} Running\n");
            let mut r = LineReader::new(&text).unwrap();
            r.expect("x").unwrap();
            read_entries(&mut r).map(|e| e[0].id)
        };
        let fp = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(read(fp).unwrap().to_string(), fp);
        for bad in [
            key.clone(),
            fp.to_uppercase(),
            fp[..39].to_string(),
            format!("{fp}8"),
        ] {
            assert!(read(&bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(entries in arb_entries(6)) {
            let mut w = LineWriter::new();
            w.keyword("x");
            check_entries(&entries).unwrap();
            write_entries(&mut w, &entries);
            let text = w.finish();
            let mut r = LineReader::new(&text).unwrap();
            r.expect("x").unwrap();
            let back = read_entries(&mut r).unwrap();
            r.finish().unwrap();
            prop_assert_eq!(back, entries);
        }
    }
}
