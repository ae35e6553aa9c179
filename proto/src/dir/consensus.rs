//! The consensus: the relays a majority of authorities vote for, signed by each authority
//! (`docs/spec.md` §5.4).
//!
//! ```text
//! shallot-consensus 4
//! valid-after <unix seconds>
//! fresh-until <unix seconds>
//! valid-until <unix seconds>
//! params epoch-secs=<u64> max-share-ppm=<u64>
//! shared-rand-previous <hex32>                 optional: the previous round's value
//! shared-rand-current <hex32>                  this round's value
//! shared-rand-epoch <epoch> <hex32>            zero or more, epochs ascending
//! shared-rand-commit <authority hex32> <hex32> zero or more, sorted by key
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
use super::lines::{parse_u64, Args, LineReader, LineWriter};
use super::vote::{check_times, read_times};
use super::{check_len, signed_bytes, srv, DocError};

/// The largest consensus a client accepts, in bytes.
pub const MAX_CONSENSUS_LEN: usize = 32 * 1024 * 1024;

/// Parts per million: the unit of [`ConsensusParams::max_share_ppm`].
pub const PPM: u64 = 1_000_000;

/// Network parameters the consensus carries to clients and relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsensusParams {
    /// Length of a mailbox epoch, seconds.
    pub epoch_secs: u64,
    /// The largest share of the total weight any one relay may get in path selection, in
    /// parts per million (`docs/spec.md` §11.2).
    pub max_share_ppm: u64,
}

/// The shared random values a consensus carries (`docs/spec.md` §5.10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedRandom {
    /// The value of the previous round, when that round had a consensus.
    pub previous: Option<[u8; 32]>,
    /// The value of this round.
    pub current: [u8; 32],
    /// The value each mailbox epoch in the carried window uses, by epoch, ascending.
    pub epochs: Vec<(u64, [u8; 32])>,
    /// The commitments of this round's votes, by authority key, sorted by key: the next
    /// round's reveals are checked against them.
    pub commits: Vec<(VerifyingKey, [u8; 32])>,
}

impl SharedRandom {
    /// The commitment of `authority` in this round, if its vote counted and carried one.
    pub fn commit(&self, authority: &VerifyingKey) -> Option<&[u8; 32]> {
        self.commits
            .binary_search_by(|(k, _)| k.as_bytes().cmp(authority.as_bytes()))
            .ok()
            .map(|i| &self.commits[i].1)
    }

    fn check(&self) -> Result<(), DocError> {
        if self.epochs.windows(2).any(|p| p[0].0 >= p[1].0) {
            return Err(DocError::invalid(
                "shared-rand-epoch",
                "epochs not ascending",
            ));
        }
        if self
            .commits
            .windows(2)
            .any(|p| p[0].0.as_bytes() >= p[1].0.as_bytes())
        {
            return Err(DocError::invalid(
                "shared-rand-commit",
                "not sorted by key, or repeated",
            ));
        }
        Ok(())
    }

    fn write(&self, w: &mut LineWriter) {
        if let Some(p) = &self.previous {
            w.line("shared-rand-previous", [hex::encode(p)]);
        }
        w.line("shared-rand-current", [hex::encode(&self.current)]);
        for (epoch, value) in &self.epochs {
            w.line("shared-rand-epoch", [epoch.to_string(), hex::encode(value)]);
        }
        for (key, commit) in &self.commits {
            w.line(
                "shared-rand-commit",
                [hex::encode(key.as_bytes()), hex::encode(commit)],
            );
        }
    }

    fn read(r: &mut LineReader<'_>) -> Result<SharedRandom, DocError> {
        let previous = match r.maybe("shared-rand-previous")? {
            Some(mut a) => {
                let v = a.hex32("value")?;
                a.end()?;
                Some(v)
            }
            None => None,
        };
        let mut a = r.expect("shared-rand-current")?;
        let current = a.hex32("value")?;
        a.end()?;
        let mut epochs: Vec<(u64, [u8; 32])> = Vec::new();
        while let Some(mut a) = r.maybe("shared-rand-epoch")? {
            let epoch = a.u64("epoch")?;
            let value = a.hex32("value")?;
            if epochs.last().is_some_and(|(prev, _)| *prev >= epoch) {
                return Err(a.error("epochs are not ascending"));
            }
            if epochs.len() as u64 > srv::LEAD_EPOCHS + srv::KEEP_EPOCHS {
                return Err(a.error("more epochs than the window carries"));
            }
            a.end()?;
            epochs.push((epoch, value));
        }
        let mut commits: Vec<(VerifyingKey, [u8; 32])> = Vec::new();
        while let Some(mut a) = r.maybe("shared-rand-commit")? {
            let key = a.key("authority key")?;
            let commit = a.hex32("commitment")?;
            if commits
                .last()
                .is_some_and(|(prev, _)| prev.as_bytes() >= key.as_bytes())
            {
                return Err(a.error("commitments are not sorted by key, or repeat one"));
            }
            a.end()?;
            commits.push((key, commit));
        }
        Ok(SharedRandom {
            previous,
            current,
            epochs,
            commits,
        })
    }
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
    /// The shared random values.
    pub shared_rand: SharedRandom,
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
        self.shared_rand.check()?;
        check_entries(&self.relays)?;
        Ok(self.body_text())
    }

    /// The body's text without the checks of [`Consensus::encode_body`]; identical to it for
    /// every consensus that passes them (every parsed one does).
    fn body_text(&self) -> String {
        let mut w = LineWriter::new();
        w.line("shallot-consensus", [4]);
        w.line("valid-after", [self.valid_after]);
        w.line("fresh-until", [self.fresh_until]);
        w.line("valid-until", [self.valid_until]);
        w.line(
            "params",
            [
                format!("epoch-secs={}", self.params.epoch_secs),
                format!("max-share-ppm={}", self.params.max_share_ppm),
            ],
        );
        self.shared_rand.write(&mut w);
        write_entries(&mut w, &self.relays);
        w.finish()
    }

    /// The shared random value that places mailboxes in `epoch` (`docs/spec.md` §9.2): the
    /// one this consensus carries for it, or the fixed fallback of that epoch.
    pub fn srv_for_epoch(&self, epoch: u64) -> [u8; 32] {
        self.shared_rand
            .epochs
            .binary_search_by(|(e, _)| e.cmp(&epoch))
            .map(|i| self.shared_rand.epochs[i].1)
            .unwrap_or_else(|_| srv::fallback_value(epoch))
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
        if a.word("version")? != "4" {
            return Err(a.error("unsupported version"));
        }
        a.end()?;
        let (valid_after, fresh_until, valid_until) = read_times(&mut r)?;
        let mut a = r.expect("params")?;
        let epoch_secs = param(&mut a, "epoch-secs")?;
        let max_share_ppm = param(&mut a, "max-share-ppm")?;
        a.end()?;
        let shared_rand = SharedRandom::read(&mut r)?;
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
            params: ConsensusParams {
                epoch_secs,
                max_share_ppm,
            },
            shared_rand,
            relays,
            signatures,
        })
    }
}

/// Reads one `name=<integer>` argument of the `params` line.
fn param(a: &mut Args<'_>, name: &str) -> Result<u64, DocError> {
    let w = a.word(name)?;
    w.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('='))
        .and_then(parse_u64)
        .ok_or_else(|| a.error(format!("`{w}` is not {name}=<integer>")))
}

/// SHA-256 of a document body.
pub fn digest(body: &str) -> [u8; 32] {
    digest_bytes(body.as_bytes())
}

/// SHA-256 of a document's bytes (a vote's digest is of its whole signed text).
pub fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
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
            params: ConsensusParams {
                epoch_secs: 86400,
                max_share_ppm: 50_000,
            },
            shared_rand: SharedRandom {
                previous: Some([1; 32]),
                current: [2; 32],
                epochs: vec![(5, [3; 32]), (6, [4; 32])],
                commits: keys.iter().map(|k| (k.public(), [5; 32])).collect(),
            },
            relays,
            signatures: vec![],
        };
        c.shared_rand
            .commits
            .sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
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
    fn shared_random_lines_are_checked_and_looked_up() {
        let ks = keys(2);
        let c = signed(vec![], &ks);
        let text = c.encode().unwrap();
        assert!(text.contains(&format!(
            "\nshared-rand-epoch 5 {}\n",
            hex::encode(&[3; 32])
        )));
        assert_eq!(c.srv_for_epoch(6), [4; 32]);
        assert_eq!(c.srv_for_epoch(7), srv::fallback_value(7));
        assert_eq!(c.shared_rand.commit(&ks[1].public()), Some(&[5; 32]));
        let swapped = text.replace("shared-rand-epoch 5", "shared-rand-epoch 7");
        assert!(Consensus::parse(&swapped).is_err(), "epochs must ascend");
        let no_current = text.replace("shared-rand-current", "shared-rand-now");
        assert!(Consensus::parse(&no_current).is_err());
        let bad_params = text.replace("max-share-ppm=", "max-share=");
        assert!(Consensus::parse(&bad_params).is_err());
        let mut unsorted = c.clone();
        unsorted.shared_rand.commits.reverse();
        assert!(unsorted.encode_body().is_err());
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
        fn round_trips_canonically(
            relays in arb_entries(6),
            n in 1usize..4,
            previous in proptest::option::of(any::<[u8; 32]>()),
            epochs in proptest::collection::btree_map(any::<u64>(), any::<[u8; 32]>(), 0..16),
        ) {
            let mut c = signed(relays, &[]);
            c.shared_rand.previous = previous;
            c.shared_rand.epochs = epochs.into_iter().collect();
            let ks = keys(n);
            c.shared_rand.commits = ks.iter().map(|k| (k.public(), [7; 32])).collect();
            c.shared_rand.commits.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for k in &ks {
                let sig = c.sign_body(k).unwrap();
                c.add_signature(k.public(), sig);
            }
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
