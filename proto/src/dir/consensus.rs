//! The consensus: the relays a majority of authorities vote for, signed by each authority
//! (`docs/spec.md` §5.4).
//!
//! ```text
//! shallot-consensus 1
//! valid-after <unix seconds>
//! fresh-until <unix seconds>
//! valid-until <unix seconds>
//! params epoch-secs=<u64>
//! r … / f …                                  one entry per relay, sorted by fingerprint
//! directory-signature <authority hex32> <signature hex64>   one or more, sorted by key
//! ```
//!
//! The body is every line before the first `directory-signature`; each signature is over
//! [`super::signed_bytes`] of it. Which signatures count is the reader's decision (clients:
//! `shallot_directory::verify`). Between authorities, a [`DetachedSignature`] carries one
//! signature with the digest of the body it covers.

use sha2::{Digest, Sha256};
use shallot_crypto::hex;
use shallot_crypto::keys::{IdentityKeypair, RelayId, Signature, VerifyingKey};

use super::entry::{check_entries, read_entries, write_entries, RelayEntry};
use super::lines::{LineReader, LineWriter};
use super::vote::{check_times, read_times};
use super::{check_len, signed_bytes, DocError};

/// The largest consensus a client accepts, in bytes.
pub const MAX_CONSENSUS_LEN: usize = 32 * 1024 * 1024;

/// Network parameters the consensus carries to clients and relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusParams {
    /// Length of a mailbox epoch, seconds.
    pub epoch_secs: u64,
}

/// A consensus document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consensus {
    /// Start of its period, unix seconds.
    pub valid_after: u64,
    /// When a newer consensus is expected.
    pub fresh_until: u64,
    /// After this, clients refuse it.
    pub valid_until: u64,
    /// Network parameters.
    pub params: ConsensusParams,
    /// The relays, sorted by fingerprint.
    pub relays: Vec<RelayEntry>,
    /// Authority signatures over the body, sorted by key, one per key.
    pub signatures: Vec<(VerifyingKey, Signature)>,
}

impl Consensus {
    /// The body: every line before the signatures. Fails on values that would not parse
    /// back (see [`Consensus::body_digest`] for the unchecked text).
    pub fn encode_body(&self) -> Result<String, DocError> {
        check_times(self.valid_after, self.fresh_until, self.valid_until)?;
        check_entries(&self.relays)?;
        Ok(self.body_text())
    }

    /// The body's text without the checks of [`Consensus::encode_body`]; identical to it for
    /// every consensus that passes them (every parsed one does).
    fn body_text(&self) -> String {
        let mut w = LineWriter::new();
        w.line("shallot-consensus", [1]);
        w.line("valid-after", [self.valid_after]);
        w.line("fresh-until", [self.fresh_until]);
        w.line("valid-until", [self.valid_until]);
        w.line("params", [format!("epoch-secs={}", self.params.epoch_secs)]);
        write_entries(&mut w, &self.relays);
        w.finish()
    }

    /// The whole document: body and signatures (at least one, sorted, unique).
    pub fn encode(&self) -> Result<String, DocError> {
        if self.signatures.is_empty() {
            return Err(DocError::invalid(
                "signatures",
                "a consensus needs at least one",
            ));
        }
        if self
            .signatures
            .windows(2)
            .any(|p| p[0].0.as_bytes() >= p[1].0.as_bytes())
        {
            return Err(DocError::invalid(
                "signatures",
                "not sorted by key, or repeated",
            ));
        }
        let mut w = LineWriter::new();
        for (key, sig) in &self.signatures {
            w.line(
                "directory-signature",
                [hex::encode(key.as_bytes()), hex::encode(&sig.to_bytes())],
            );
        }
        Ok(self.encode_body()? + w.as_str())
    }

    /// SHA-256 of the body.
    pub fn body_digest(&self) -> [u8; 32] {
        digest(&self.body_text())
    }

    /// Signs the body with an authority key.
    pub fn sign_body(&self, key: &IdentityKeypair) -> Result<Signature, DocError> {
        Ok(key.sign(&signed_bytes(&self.encode_body()?)))
    }

    /// Adds a signature, keeping the list sorted and replacing any by the same key.
    pub fn add_signature(&mut self, key: VerifyingKey, sig: Signature) {
        match self
            .signatures
            .binary_search_by(|(k, _)| k.as_bytes().cmp(key.as_bytes()))
        {
            Ok(i) => self.signatures[i] = (key, sig),
            Err(i) => self.signatures.insert(i, (key, sig)),
        }
    }

    /// The keys among `trusted` whose signature in this document verifies over its body.
    /// Signatures by other keys are ignored.
    pub fn valid_signers(&self, trusted: &[VerifyingKey]) -> Result<Vec<VerifyingKey>, DocError> {
        let msg = signed_bytes(&self.encode_body()?);
        Ok(self
            .signatures
            .iter()
            .filter(|(k, _)| trusted.contains(k))
            .filter(|(k, s)| k.verify_strict(&msg, s).is_ok())
            .map(|(k, _)| *k)
            .collect())
    }

    /// The entry for a relay, by binary search.
    pub fn relay(&self, id: &RelayId) -> Option<&RelayEntry> {
        self.relays
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| &self.relays[i])
    }

    /// Parses a consensus strictly. Signatures are checked for form only: see
    /// [`Consensus::valid_signers`].
    pub fn parse(text: &str) -> Result<Consensus, DocError> {
        check_len(text, MAX_CONSENSUS_LEN)?;
        let mut r = LineReader::new(text)?;
        let mut a = r.expect("shallot-consensus")?;
        if a.word("version")? != "1" {
            return Err(a.error("unsupported version"));
        }
        a.end()?;
        let (valid_after, fresh_until, valid_until) = read_times(&mut r)?;
        let mut a = r.expect("params")?;
        let w = a.word("epoch-secs")?;
        let epoch_secs = w
            .strip_prefix("epoch-secs=")
            .and_then(super::lines::parse_u64)
            .ok_or_else(|| a.error(format!("`{w}` is not epoch-secs=<integer>")))?;
        a.end()?;
        let relays = read_entries(&mut r)?;
        let mut signatures: Vec<(VerifyingKey, Signature)> = Vec::new();
        while let Some(mut a) = r.maybe("directory-signature")? {
            let key = a.key("authority key")?;
            let sig = a.signature()?;
            a.end()?;
            if let Some((prev, _)) = signatures.last() {
                if prev.as_bytes() >= key.as_bytes() {
                    return Err(DocError::malformed(
                        r.line_no(),
                        "signatures are not sorted by key, or repeat one",
                    ));
                }
            }
            signatures.push((key, sig));
        }
        if signatures.is_empty() {
            return Err(DocError::malformed(
                r.line_no() + 1,
                "expected a `directory-signature` line",
            ));
        }
        r.finish()?;
        Ok(Consensus {
            valid_after,
            fresh_until,
            valid_until,
            params: ConsensusParams { epoch_secs },
            relays,
            signatures,
        })
    }
}

/// SHA-256 of a document body.
pub fn digest(body: &str) -> [u8; 32] {
    Sha256::digest(body.as_bytes()).into()
}

/// One authority's signature on a consensus body, as authorities exchange them:
///
/// ```text
/// body-digest <hex32>
/// directory-signature <authority hex32> <signature hex64>
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedSignature {
    /// SHA-256 of the body signed.
    pub digest: [u8; 32],
    /// The signing authority.
    pub authority: VerifyingKey,
    /// Its signature over the signed bytes of that body.
    pub signature: Signature,
}

impl DetachedSignature {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut w = LineWriter::new();
        w.line("body-digest", [hex::encode(&self.digest)]);
        w.line(
            "directory-signature",
            [
                hex::encode(self.authority.as_bytes()),
                hex::encode(&self.signature.to_bytes()),
            ],
        );
        w.finish()
    }

    /// Parses the text form strictly (the signature is checked against a body by the
    /// caller, who has one).
    pub fn parse(text: &str) -> Result<Self, DocError> {
        check_len(text, 1024)?;
        let mut r = LineReader::new(text)?;
        let mut a = r.expect("body-digest")?;
        let digest = a.hex32("digest")?;
        a.end()?;
        let mut a = r.expect("directory-signature")?;
        let authority = a.key("authority key")?;
        let signature = a.signature()?;
        a.end()?;
        r.finish()?;
        Ok(DetachedSignature {
            digest,
            authority,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dir::entry::tests::arb_entries;
    use proptest::prelude::*;

    fn signed(relays: Vec<RelayEntry>, keys: &[IdentityKeypair]) -> Consensus {
        let mut c = Consensus {
            valid_after: 3600,
            fresh_until: 7200,
            valid_until: 14400,
            params: ConsensusParams { epoch_secs: 86400 },
            relays,
            signatures: vec![],
        };
        for k in keys {
            let sig = c.sign_body(k).unwrap();
            c.add_signature(k.public(), sig);
        }
        c
    }

    fn keys(n: usize) -> Vec<IdentityKeypair> {
        (0..n)
            .map(|_| IdentityKeypair::generate(&mut rand::thread_rng()))
            .collect()
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let ks = keys(3);
        let c = signed(vec![], &ks);
        let text = c.encode().unwrap();
        assert_eq!(text.matches("directory-signature").count(), 3);
        let back = Consensus::parse(&text).unwrap();
        let trusted: Vec<_> = ks.iter().map(|k| k.public()).collect();
        assert_eq!(back.valid_signers(&trusted).unwrap().len(), 3);
        assert_eq!(back.valid_signers(&trusted[..1]).unwrap().len(), 1);
        let tampered =
            Consensus::parse(&text.replace("epoch-secs=86400", "epoch-secs=86401")).unwrap();
        assert!(tampered.valid_signers(&trusted).unwrap().is_empty());
    }

    #[test]
    fn refuses_unsorted_duplicate_or_missing_signatures() {
        let ks = keys(2);
        let text = signed(vec![], &ks).encode().unwrap();
        let (body, sigs) = text.split_at(text.find("directory-signature").unwrap());
        let lines: Vec<&str> = sigs.lines().collect();
        let swapped = format!("{body}{}\n{}\n", lines[1], lines[0]);
        assert!(Consensus::parse(&swapped).is_err());
        let dup = format!("{body}{}\n{}\n", lines[0], lines[0]);
        assert!(Consensus::parse(&dup).is_err());
        assert!(Consensus::parse(body).is_err());
        let none = signed(vec![], &[]);
        assert!(none.encode().is_err());
        assert!(Consensus::parse(&format!("{body}{}\nextra\n", lines[0])).is_err());
    }

    #[test]
    fn detached_signatures_round_trip() {
        let ks = keys(1);
        let c = signed(vec![], &ks);
        let d = DetachedSignature {
            digest: c.body_digest(),
            authority: ks[0].public(),
            signature: c.signatures[0].1,
        };
        let text = d.encode();
        assert_eq!(DetachedSignature::parse(&text).unwrap(), d);
        assert!(DetachedSignature::parse(&format!("{text}x\n")).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn round_trips_canonically(relays in arb_entries(6), n in 1usize..4) {
            let c = signed(relays, &keys(n));
            let text = c.encode().unwrap();
            let back = Consensus::parse(&text).unwrap();
            prop_assert_eq!(&back, &c);
            prop_assert_eq!(back.encode().unwrap(), text);
            for e in &c.relays {
                prop_assert_eq!(back.relay(&e.id), Some(e));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = Consensus::parse(&s);
        }
    }
}
