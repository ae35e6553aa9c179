//! Relay descriptors: what a relay says about itself, signed by its identity key
//! (`docs/spec.md` §5.2).
//!
//! ```text
//! shallot-descriptor 1
//! nickname <1–19 letters and digits>
//! address <ip:port>
//! identity <hex32>
//! ntor-key <hex32>
//! link-key <hex32>
//! bandwidth <u64>
//! family[ <hex20>]*
//! mailbox yes|no
//! published <unix seconds>
//! signature <hex64>
//! ```
//!
//! The signature is by `identity` over [`super::signed_bytes`] of every line before it.

use std::net::SocketAddr;

use shallot_crypto::hex;
use shallot_crypto::keys::{IdentityKeypair, RelayId, VerifyingKey};

use super::lines::{check_addr, LineReader, LineWriter};
use super::{check_family, check_len, check_nickname, signed_bytes, DocError};

/// The largest descriptor an authority accepts, in bytes.
pub const MAX_DESCRIPTOR_LEN: usize = 8 * 1024;

/// The digest votes name a descriptor by: SHA-256 of its whole signed text.
pub fn descriptor_digest(text: &str) -> [u8; 32] {
    super::consensus::digest(text)
}

/// A relay's self-description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayDescriptor {
    /// A human-readable name; not unique and not authenticated beyond the signature.
    pub nickname: String,
    /// The relay's link address, where it answers link handshakes.
    pub address: SocketAddr,
    /// The relay's ed25519 identity key, which signs this descriptor.
    pub identity: VerifyingKey,
    /// The x25519 ntor onion key.
    pub ntor_key: [u8; 32],
    /// The x25519 Noise static key its links prove.
    pub link_key: [u8; 32],
    /// Declared bandwidth, bytes per second.
    pub bandwidth: u64,
    /// Fingerprints of relays run by the same operator: sorted, unique, at most 16.
    pub family: Vec<RelayId>,
    /// Whether the relay offers a mailbox service.
    pub mailbox: bool,
    /// When it was signed, unix seconds.
    pub published: u64,
}

impl RelayDescriptor {
    /// The relay's fingerprint.
    pub fn fingerprint(&self) -> RelayId {
        RelayId::of(&self.identity)
    }

    /// The body: every line before the signature. Fails on values that have no text form.
    pub fn encode_body(&self) -> Result<String, DocError> {
        check_nickname(&self.nickname).map_err(|r| DocError::invalid("nickname", r))?;
        check_addr(&self.address).map_err(|r| DocError::invalid("address", r))?;
        check_family(&self.family).map_err(|r| DocError::invalid("family", r))?;
        let mut w = LineWriter::new();
        w.line("shallot-descriptor", [1]);
        w.line("nickname", [&self.nickname]);
        w.line("address", [self.address]);
        w.line("identity", [hex::encode(self.identity.as_bytes())]);
        w.line("ntor-key", [hex::encode(&self.ntor_key)]);
        w.line("link-key", [hex::encode(&self.link_key)]);
        w.line("bandwidth", [self.bandwidth]);
        w.line("family", &self.family);
        w.line("mailbox", [if self.mailbox { "yes" } else { "no" }]);
        w.line("published", [self.published]);
        Ok(w.finish())
    }

    /// The whole signed text. `identity` must be the key this descriptor names.
    pub fn sign(&self, identity: &IdentityKeypair) -> Result<String, DocError> {
        if identity.public() != self.identity {
            return Err(DocError::invalid(
                "identity",
                "the signing key is not the descriptor's identity key",
            ));
        }
        let mut text = self.encode_body()?;
        let sig = identity.sign(&signed_bytes(&text));
        text.push_str(&format!("signature {}\n", hex::encode(&sig.to_bytes())));
        check_len(&text, MAX_DESCRIPTOR_LEN)?;
        Ok(text)
    }

    /// Parses a descriptor strictly and checks its signature by the identity it names.
    pub fn parse_and_verify(text: &str) -> Result<RelayDescriptor, DocError> {
        check_len(text, MAX_DESCRIPTOR_LEN)?;
        let mut r = LineReader::new(text)?;
        let mut a = r.expect("shallot-descriptor")?;
        if a.word("version")? != "1" {
            return Err(a.error("unsupported version"));
        }
        a.end()?;

        let mut a = r.expect("nickname")?;
        let nickname = a.word("nickname")?.to_string();
        check_nickname(&nickname).map_err(|e| a.error(e))?;
        a.end()?;

        let mut a = r.expect("address")?;
        let address = a.addr("address")?;
        a.end()?;

        let mut a = r.expect("identity")?;
        let identity = a.key("identity key")?;
        a.end()?;

        let mut a = r.expect("ntor-key")?;
        let ntor_key = a.hex32("ntor key")?;
        a.end()?;

        let mut a = r.expect("link-key")?;
        let link_key = a.hex32("link key")?;
        a.end()?;

        let mut a = r.expect("bandwidth")?;
        let bandwidth = a.u64("bandwidth")?;
        a.end()?;

        let mut a = r.expect("family")?;
        let mut family = Vec::new();
        while let Some(w) = a.next_word() {
            if family.len() == super::MAX_FAMILY {
                return Err(a.error("more than 16 family members"));
            }
            family.push(RelayId::from_hex(w).map_err(|e| a.error(format!("family: {e}")))?);
        }
        check_family(&family).map_err(|e| a.error(e))?;

        let mut a = r.expect("mailbox")?;
        let mailbox = match a.word("yes or no")? {
            "yes" => true,
            "no" => false,
            other => return Err(a.error(format!("`{other}` is not yes or no"))),
        };
        a.end()?;

        let mut a = r.expect("published")?;
        let published = a.u64("published time")?;
        a.end()?;

        let body_len = r.position();
        let mut a = r.expect("signature")?;
        let signature = a.signature()?;
        a.end()?;
        r.finish()?;

        identity
            .verify_strict(&signed_bytes(&text[..body_len]), &signature)
            .map_err(|_| DocError::BadSignature)?;
        Ok(RelayDescriptor {
            nickname,
            address,
            identity,
            ntor_key,
            link_key,
            bandwidth,
            family,
            mailbox,
            published,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(id: &IdentityKeypair) -> RelayDescriptor {
        RelayDescriptor {
            nickname: "relay1".into(),
            address: "127.1.0.1:9001".parse().unwrap(),
            identity: id.public(),
            ntor_key: [1; 32],
            link_key: [2; 32],
            bandwidth: 1_000_000,
            family: vec![RelayId([3; 20]), RelayId([4; 20])],
            mailbox: true,
            published: 1_700_000_000,
        }
    }

    #[test]
    fn signs_and_verifies() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let d = sample(&id);
        let text = d.sign(&id).unwrap();
        assert!(text.starts_with("shallot-descriptor 1\nnickname relay1\naddress 127.1.0.1:9001\n"));
        assert!(text.contains(&format!(
            "\nfamily {} {}\n",
            RelayId([3; 20]),
            RelayId([4; 20])
        )));
        let back = RelayDescriptor::parse_and_verify(&text).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.fingerprint(), id.relay_id());
        assert_eq!(back.sign(&id).unwrap(), text);
    }

    #[test]
    fn empty_family_is_the_keyword_alone() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let mut d = sample(&id);
        d.family.clear();
        let text = d.sign(&id).unwrap();
        assert!(text.contains("\nfamily\n"));
        assert_eq!(RelayDescriptor::parse_and_verify(&text).unwrap(), d);
    }

    #[test]
    fn refuses_forgery_tampering_and_bad_values() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let other = IdentityKeypair::generate(&mut rand::thread_rng());
        let d = sample(&id);
        assert!(d.sign(&other).is_err());
        let text = d.sign(&id).unwrap();
        let tampered = text.replace("bandwidth 1000000", "bandwidth 1000001");
        assert_eq!(
            RelayDescriptor::parse_and_verify(&tampered),
            Err(DocError::BadSignature)
        );
        let no_sig = text.split("signature").next().unwrap().to_string();
        assert!(RelayDescriptor::parse_and_verify(&no_sig).is_err());
        for (from, to) in [
            ("mailbox yes", "mailbox Yes"),
            ("bandwidth 1000000", "bandwidth 01000000"),
            ("nickname relay1", "nickname relay-1"),
            ("nickname relay1", "nickname relay1 x"),
            ("shallot-descriptor 1", "shallot-descriptor 2"),
        ] {
            let bad = text.replace(from, to);
            assert!(
                matches!(
                    RelayDescriptor::parse_and_verify(&bad),
                    Err(DocError::Malformed { .. })
                ),
                "{to}"
            );
        }
        let mut unsorted = sample(&id);
        unsorted.family.reverse();
        assert!(unsorted.sign(&id).is_err());
        let mut long = sample(&id);
        long.nickname = "a".repeat(20);
        assert!(long.sign(&id).is_err());
        let huge = format!("{text}{}", "x".repeat(MAX_DESCRIPTOR_LEN));
        assert!(matches!(
            RelayDescriptor::parse_and_verify(&huge),
            Err(DocError::TooLarge { .. })
        ));
    }

    fn arb_descriptor() -> impl Strategy<Value = (RelayDescriptor, [u8; 32])> {
        (
            "[A-Za-z0-9]{1,19}",
            any::<[u8; 4]>(),
            1u16..,
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::btree_set(any::<[u8; 20]>(), 0..=16),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(
                |(
                    nickname,
                    ip,
                    port,
                    seed,
                    ntor_key,
                    link_key,
                    bandwidth,
                    fam,
                    mailbox,
                    published,
                )| {
                    let ip = if ip == [0; 4] { [1, 2, 3, 4] } else { ip };
                    let id = IdentityKeypair::from_secret_bytes(&seed);
                    (
                        RelayDescriptor {
                            nickname,
                            address: SocketAddr::from((ip, port)),
                            identity: id.public(),
                            ntor_key,
                            link_key,
                            bandwidth,
                            family: fam.into_iter().map(RelayId).collect(),
                            mailbox,
                            published,
                        },
                        seed,
                    )
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips_canonically((d, seed) in arb_descriptor()) {
            let id = IdentityKeypair::from_secret_bytes(&seed);
            let text = d.sign(&id).unwrap();
            let back = RelayDescriptor::parse_and_verify(&text).unwrap();
            prop_assert_eq!(&back, &d);
            prop_assert_eq!(back.sign(&id).unwrap(), text);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = RelayDescriptor::parse_and_verify(&s);
        }
    }
}
