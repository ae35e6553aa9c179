//! Votes: one authority's signed view of the relays for one period (`docs/spec.md` §5.3).
//!
//! ```text
//! shallot-vote 2
//! authority <hex32>
//! valid-after <unix seconds>
//! fresh-until <unix seconds>
//! valid-until <unix seconds>
//! shared-rand-commit <hex32>             commitment to this round's reveal (§5.10)
//! shared-rand-reveal <hex32>             optional: the reveal committed to last round
//! relay <fingerprint> <descriptor digest hex32> <known-since> <measured or -> <flags>
//! signature <hex64>
//! ```
//!
//! A vote names each relay's descriptor by the SHA-256 of its text, which the authority holds
//! and verified; the relay's address and keys come from that descriptor, never from the vote.
//! The signature is by `authority` over [`super::signed_bytes`] of every line before it.

use std::fmt::Write as _;

use shallot_crypto::hex;
use shallot_crypto::keys::{IdentityKeypair, RelayId, VerifyingKey};

use super::entry::{parse_flags, Flags};
use super::lines::{parse_u64, LineReader, LineWriter};
use super::{check_len, signed_bytes, DocError};

/// The largest vote an authority accepts, in bytes.
pub const MAX_VOTE_LEN: usize = 32 * 1024 * 1024;

/// One relay as a vote lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteEntry {
    /// The relay's fingerprint.
    pub id: RelayId,
    /// SHA-256 of the text of the descriptor the authority holds for it.
    pub descriptor: [u8; 32],
    /// When this authority first accepted a descriptor for the relay, unix seconds.
    pub known_since: u64,
    /// The relay's capacity as this authority measured it, bytes per second; `None` when it
    /// has no measurement (the declared figure is never written here).
    pub measured: Option<u64>,
    /// The flags this authority gives it.
    pub flags: Flags,
}

impl VoteEntry {
    /// The entry's line, without its newline.
    pub fn line(&self) -> String {
        let mut out = format!(
            "relay {} {} {} ",
            self.id,
            hex::encode(&self.descriptor),
            self.known_since
        );
        // Writing to a String cannot fail.
        let _ = match self.measured {
            Some(m) => write!(out, "{m}"),
            None => write!(out, "-"),
        };
        let _ = write!(out, " {}", self.flags);
        out
    }

    fn read(r: &mut LineReader<'_>) -> Result<VoteEntry, DocError> {
        let mut a = r.expect("relay")?;
        let id = a.relay_id("fingerprint")?;
        let descriptor = a.hex32("descriptor digest")?;
        let known_since = a.u64("known-since")?;
        let measured = match a.word("measured bandwidth")? {
            "-" => None,
            w => Some(parse_u64(w).ok_or_else(|| {
                a.error(format!("measured bandwidth `{w}` is not an integer or -"))
            })?),
        };
        let words = a.rest();
        let flags = parse_flags(&words).map_err(|e| a.error(e))?;
        Ok(VoteEntry {
            id,
            descriptor,
            known_since,
            measured,
            flags,
        })
    }
}

/// One authority's vote for the period starting at `valid_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The voting authority's ed25519 key, which signs the vote.
    pub authority: VerifyingKey,
    /// Start of the period voted on, unix seconds.
    pub valid_after: u64,
    /// When the resulting consensus stops being fresh.
    pub fresh_until: u64,
    /// When the resulting consensus stops being valid.
    pub valid_until: u64,
    /// The authority's commitment to the reveal it will publish next round.
    pub commit: [u8; 32],
    /// Its reveal of the commitment in its vote of the previous round, if it has one.
    pub reveal: Option<[u8; 32]>,
    /// The relays the authority accepts, sorted by fingerprint.
    pub relays: Vec<VoteEntry>,
}

impl Vote {
    /// The body: every line before the signature.
    pub fn encode_body(&self) -> Result<String, DocError> {
        check_times(self.valid_after, self.fresh_until, self.valid_until)?;
        if self.relays.windows(2).any(|p| p[0].id >= p[1].id) {
            return Err(DocError::invalid(
                "relays",
                "not sorted by fingerprint, or repeated",
            ));
        }
        let mut w = LineWriter::new();
        self.write_head(&mut w);
        for e in &self.relays {
            w.line("relay", [&e.line()["relay ".len()..]]);
        }
        Ok(w.finish())
    }

    fn write_head(&self, w: &mut LineWriter) {
        w.line("shallot-vote", [2]);
        w.line("authority", [hex::encode(self.authority.as_bytes())]);
        w.line("valid-after", [self.valid_after]);
        w.line("fresh-until", [self.fresh_until]);
        w.line("valid-until", [self.valid_until]);
        w.line("shared-rand-commit", [hex::encode(&self.commit)]);
        if let Some(reveal) = &self.reveal {
            w.line("shared-rand-reveal", [hex::encode(reveal)]);
        }
    }

    /// The length of the signed text without any relay line: what [`Vote::sign`] adds to
    /// the relay lines (each [`VoteEntry::line`] plus its newline).
    pub fn overhead_len(&self) -> usize {
        let mut w = LineWriter::new();
        self.write_head(&mut w);
        // "signature " + 128 hex digits + newline.
        w.as_str().len() + 10 + 128 + 1
    }

    /// The whole signed text; `key` must be the vote's authority key.
    pub fn sign(&self, key: &IdentityKeypair) -> Result<String, DocError> {
        if key.public() != self.authority {
            return Err(DocError::invalid(
                "authority",
                "the signing key is not the vote's authority key",
            ));
        }
        let mut text = self.encode_body()?;
        let sig = key.sign(&signed_bytes(&text));
        text.push_str(&format!("signature {}\n", hex::encode(&sig.to_bytes())));
        check_len(&text, MAX_VOTE_LEN)?;
        Ok(text)
    }

    /// Parses a vote strictly and checks its signature by the authority it names. Whether
    /// that authority is one the reader trusts is the caller's question.
    pub fn parse_and_verify(text: &str) -> Result<Vote, DocError> {
        check_len(text, MAX_VOTE_LEN)?;
        let mut r = LineReader::new(text)?;
        let mut a = r.expect("shallot-vote")?;
        if a.word("version")? != "2" {
            return Err(a.error("unsupported version"));
        }
        a.end()?;
        let mut a = r.expect("authority")?;
        let authority = a.key("authority key")?;
        a.end()?;
        let (valid_after, fresh_until, valid_until) = read_times(&mut r)?;
        let mut a = r.expect("shared-rand-commit")?;
        let commit = a.hex32("commitment")?;
        a.end()?;
        let reveal = match r.maybe("shared-rand-reveal")? {
            Some(mut a) => {
                let reveal = a.hex32("reveal")?;
                a.end()?;
                Some(reveal)
            }
            None => None,
        };
        let mut relays: Vec<VoteEntry> = Vec::new();
        while r.peek_keyword() == Some("relay") {
            let e = VoteEntry::read(&mut r)?;
            if relays.last().is_some_and(|prev| prev.id >= e.id) {
                return Err(DocError::malformed(
                    r.line_no(),
                    "relays are not sorted by fingerprint, or repeat one",
                ));
            }
            relays.push(e);
        }
        let body_len = r.position();
        let mut a = r.expect("signature")?;
        let signature = a.signature()?;
        a.end()?;
        r.finish()?;
        authority
            .verify_strict(&signed_bytes(&text[..body_len]), &signature)
            .map_err(|_| DocError::BadSignature)?;
        Ok(Vote {
            authority,
            valid_after,
            fresh_until,
            valid_until,
            commit,
            reveal,
            relays,
        })
    }
}

/// Reads the `valid-after`, `fresh-until` and `valid-until` lines, which must be in order.
pub(crate) fn read_times(r: &mut LineReader<'_>) -> Result<(u64, u64, u64), DocError> {
    let mut a = r.expect("valid-after")?;
    let valid_after = a.u64("time")?;
    a.end()?;
    let mut a = r.expect("fresh-until")?;
    let fresh_until = a.u64("time")?;
    if fresh_until <= valid_after {
        return Err(a.error("must be after valid-after"));
    }
    a.end()?;
    let mut a = r.expect("valid-until")?;
    let valid_until = a.u64("time")?;
    if valid_until < fresh_until {
        return Err(a.error("must not be before fresh-until"));
    }
    a.end()?;
    Ok((valid_after, fresh_until, valid_until))
}

/// Checks the order of the three times when encoding.
pub(crate) fn check_times(
    valid_after: u64,
    fresh_until: u64,
    valid_until: u64,
) -> Result<(), DocError> {
    if fresh_until <= valid_after || valid_until < fresh_until {
        return Err(DocError::invalid(
            "times",
            "need valid-after < fresh-until <= valid-until",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vote(key: &IdentityKeypair, relays: Vec<VoteEntry>) -> Vote {
        Vote {
            authority: key.public(),
            valid_after: 3600,
            fresh_until: 7200,
            valid_until: 14400,
            commit: [1; 32],
            reveal: Some([2; 32]),
            relays,
        }
    }

    fn entry(id: u8, measured: Option<u64>) -> VoteEntry {
        VoteEntry {
            id: RelayId([id; 20]),
            descriptor: [id; 32],
            known_since: 1000 + u64::from(id),
            measured,
            flags: Flags::VALID | Flags::RUNNING,
        }
    }

    #[test]
    fn refuses_forged_and_tampered_votes() {
        let key = IdentityKeypair::generate(&mut rand::thread_rng());
        let other = IdentityKeypair::generate(&mut rand::thread_rng());
        let v = vote(&key, vec![entry(1, Some(5)), entry(2, None)]);
        assert!(v.sign(&other).is_err());
        let text = v.sign(&key).unwrap();
        assert!(text.contains(&format!(
            "\nrelay {} {} 1001 5 Running Valid\n",
            RelayId([1; 20]),
            hex::encode(&[1; 32])
        )));
        assert!(text.contains(" 1002 - Running Valid\n"));
        assert_eq!(Vote::parse_and_verify(&text).unwrap(), v);
        let forged = text.replace(
            &hex::encode(key.public().as_bytes()),
            &hex::encode(other.public().as_bytes()),
        );
        assert_eq!(Vote::parse_and_verify(&forged), Err(DocError::BadSignature));
        for (from, to) in [
            ("fresh-until 7200", "fresh-until 3600"),
            (" 1001 5 ", " 1001 05 "),
            (" 1002 - ", " 1002 x "),
            ("shallot-vote 2", "shallot-vote 1"),
        ] {
            assert!(
                matches!(
                    Vote::parse_and_verify(&text.replace(from, to)),
                    Err(DocError::Malformed { .. })
                ),
                "{to}"
            );
        }
        let mut unsorted = v.clone();
        unsorted.relays.reverse();
        assert!(unsorted.sign(&key).is_err());
    }

    #[test]
    fn overhead_and_lines_add_up_to_the_signed_length() {
        let key = IdentityKeypair::generate(&mut rand::thread_rng());
        let v = vote(&key, vec![entry(1, Some(5)), entry(2, None)]);
        let lines: usize = v.relays.iter().map(|e| e.line().len() + 1).sum();
        assert_eq!(v.overhead_len() + lines, v.sign(&key).unwrap().len());
        let mut no_reveal = v;
        no_reveal.reveal = None;
        no_reveal.relays.clear();
        assert_eq!(
            no_reveal.overhead_len(),
            no_reveal.sign(&key).unwrap().len()
        );
    }

    fn arb_entries() -> impl Strategy<Value = Vec<VoteEntry>> {
        proptest::collection::btree_map(
            any::<[u8; 20]>(),
            (
                any::<[u8; 32]>(),
                any::<u64>(),
                proptest::option::of(any::<u64>()),
                0u8..64,
            ),
            0..6,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(
                    |(id, (descriptor, known_since, measured, bits))| VoteEntry {
                        id: RelayId(id),
                        descriptor,
                        known_since,
                        measured,
                        flags: Flags::from_bits(bits),
                    },
                )
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trips_canonically(
            seed in any::<[u8; 32]>(),
            relays in arb_entries(),
            commit in any::<[u8; 32]>(),
            reveal in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let key = IdentityKeypair::from_secret_bytes(&seed);
            let mut v = vote(&key, relays);
            v.commit = commit;
            v.reveal = reveal;
            let text = v.sign(&key).unwrap();
            let back = Vote::parse_and_verify(&text).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(back.sign(&key).unwrap(), text);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = Vote::parse_and_verify(&s);
        }
    }
}
