//! Votes: one authority's signed view of the relays for one period (`docs/spec.md` §5.3).
//!
//! ```text
//! shallot-vote 1
//! authority <hex32>
//! valid-after <unix seconds>
//! fresh-until <unix seconds>
//! valid-until <unix seconds>
//! r … / f …            one entry per relay, sorted by fingerprint (see `entry`)
//! signature <hex64>
//! ```
//!
//! The signature is by `authority` over [`super::signed_bytes`] of every line before it.

use shallot_crypto::hex;
use shallot_crypto::keys::{IdentityKeypair, VerifyingKey};

use super::entry::{check_entries, read_entries, write_entries, RelayEntry};
use super::lines::{LineReader, LineWriter};
use super::{check_len, signed_bytes, DocError};

/// The largest vote an authority accepts, in bytes.
pub const MAX_VOTE_LEN: usize = 32 * 1024 * 1024;

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
    /// The relays the authority accepts, sorted by fingerprint.
    pub relays: Vec<RelayEntry>,
}

impl Vote {
    /// The body: every line before the signature.
    pub fn encode_body(&self) -> Result<String, DocError> {
        check_times(self.valid_after, self.fresh_until, self.valid_until)?;
        let mut w = LineWriter::new();
        w.line("shallot-vote", [1]);
        w.line("authority", [hex::encode(self.authority.as_bytes())]);
        w.line("valid-after", [self.valid_after]);
        w.line("fresh-until", [self.fresh_until]);
        w.line("valid-until", [self.valid_until]);
        check_entries(&self.relays)?;
        write_entries(&mut w, &self.relays);
        Ok(w.finish())
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
        if a.word("version")? != "1" {
            return Err(a.error("unsupported version"));
        }
        a.end()?;
        let mut a = r.expect("authority")?;
        let authority = a.key("authority key")?;
        a.end()?;
        let (valid_after, fresh_until, valid_until) = read_times(&mut r)?;
        let relays = read_entries(&mut r)?;
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
    use crate::dir::entry::tests::arb_entries;
    use proptest::prelude::*;

    fn vote(key: &IdentityKeypair, relays: Vec<RelayEntry>) -> Vote {
        Vote {
            authority: key.public(),
            valid_after: 3600,
            fresh_until: 7200,
            valid_until: 14400,
            relays,
        }
    }

    #[test]
    fn refuses_forged_and_tampered_votes() {
        let key = IdentityKeypair::generate(&mut rand::thread_rng());
        let other = IdentityKeypair::generate(&mut rand::thread_rng());
        let v = vote(&key, vec![]);
        assert!(v.sign(&other).is_err());
        let text = v.sign(&key).unwrap();
        assert_eq!(Vote::parse_and_verify(&text).unwrap(), v);
        let forged = text.replace(
            &hex::encode(key.public().as_bytes()),
            &hex::encode(other.public().as_bytes()),
        );
        assert_eq!(Vote::parse_and_verify(&forged), Err(DocError::BadSignature));
        let bad_times = text.replace("fresh-until 7200", "fresh-until 3600");
        assert!(matches!(
            Vote::parse_and_verify(&bad_times),
            Err(DocError::Malformed { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trips_canonically(seed in any::<[u8; 32]>(), relays in arb_entries(5)) {
            let key = IdentityKeypair::from_secret_bytes(&seed);
            let v = vote(&key, relays);
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
