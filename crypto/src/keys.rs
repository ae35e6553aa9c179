//! Long-term key types (`docs/spec.md` §8.1).
//!
//! * [`IdentityKeypair`]: ed25519; names a relay, an authority or a user, and signs for it.
//! * [`OnionKeypair`]: x25519; a relay's ntor onion key, rotated periodically.
//! * [`LinkKeypair`]: x25519; a relay's Noise static key, which its links prove.
//!
//! Each type generates from a caller-supplied RNG and saves to and loads from a key file
//! ([`crate::keyfile`]). Secret halves are zeroized when dropped.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::hex;
use crate::keyfile::{self, KeyFileError};

pub use ed25519_dalek::{Signature, SignatureError, VerifyingKey};

/// Length in bytes of a [`RelayId`].
pub const RELAY_ID_LEN: usize = 20;

/// A relay's fingerprint: the first 20 bytes of SHA-256 of its ed25519 identity key.
///
/// It is the node ID of the ntor handshake and the name by which an extend request picks the
/// next hop.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub [u8; RELAY_ID_LEN]);

impl RelayId {
    /// The fingerprint of an identity key.
    pub fn of(identity: &VerifyingKey) -> Self {
        let digest = Sha256::digest(identity.as_bytes());
        let mut id = [0u8; RELAY_ID_LEN];
        id.copy_from_slice(&digest[..RELAY_ID_LEN]);
        RelayId(id)
    }

    /// Parses the hex form printed by `Display`.
    pub fn from_hex(text: &str) -> Result<Self, hex::HexError> {
        Ok(RelayId(hex::decode_array(text)?))
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({self})")
    }
}

/// An ed25519 identity key pair.
pub struct IdentityKeypair {
    signing: SigningKey,
}

impl IdentityKeypair {
    const LABEL: &'static str = "identity-ed25519";

    /// Generates a fresh identity.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        IdentityKeypair {
            signing: SigningKey::generate(rng),
        }
    }

    /// Rebuilds an identity from its 32-byte secret seed.
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        IdentityKeypair {
            signing: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret seed.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The fingerprint of the public half.
    pub fn relay_id(&self) -> RelayId {
        RelayId::of(&self.public())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }

    /// The underlying ed25519 signing key, for constructions (key blinding, the end-to-end
    /// handshake) that need its expanded form.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Saves the secret seed to a key file (mode 0600).
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        keyfile::write_secret(path, Self::LABEL, &*self.secret_bytes())
    }

    /// Loads a key file written by [`IdentityKeypair::save`].
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let secret = keyfile::read_secret(path, Self::LABEL)?;
        Ok(Self::from_secret_bytes(&secret))
    }
}

/// Declares an x25519 key pair type with the shared generate/save/load behaviour.
macro_rules! x25519_keypair {
    ($(#[$meta:meta])* $name:ident, $label:literal) => {
        $(#[$meta])*
        pub struct $name {
            secret: StaticSecret,
            public: PublicKey,
        }

        impl $name {
            const LABEL: &'static str = $label;

            /// Generates a fresh key pair.
            pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                Self::from_secret(StaticSecret::random_from_rng(rng))
            }

            /// Rebuilds a key pair from its 32 secret bytes.
            pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
                Self::from_secret(StaticSecret::from(secret))
            }

            fn from_secret(secret: StaticSecret) -> Self {
                let public = PublicKey::from(&secret);
                $name { secret, public }
            }

            /// The public half.
            pub fn public(&self) -> PublicKey {
                self.public
            }

            /// The secret half.
            pub fn secret(&self) -> &StaticSecret {
                &self.secret
            }

            /// The 32 secret bytes.
            pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
                Zeroizing::new(self.secret.to_bytes())
            }

            /// Saves the secret to a key file (mode 0600).
            pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
                keyfile::write_secret(path, Self::LABEL, &*self.secret_bytes())
            }

            /// Loads a key file written by `save`.
            pub fn load(path: &Path) -> Result<Self, KeyFileError> {
                let secret = keyfile::read_secret(path, Self::LABEL)?;
                Ok(Self::from_secret_bytes(*secret))
            }
        }
    };
}

x25519_keypair!(
    /// A relay's x25519 ntor onion key pair (the `b`, `B` of tor-spec §5.1.4).
    OnionKeypair,
    "onion-x25519"
);

x25519_keypair!(
    /// A relay's x25519 Noise static key pair, proven by every link handshake.
    LinkKeypair,
    "link-x25519"
);

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn identity_round_trips_through_a_file() {
        let dir = shallot_rt::scratch::path("keys");
        keyfile::ensure_private_dir(&dir).unwrap();
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        id.save(&dir.join("id")).unwrap();
        let back = IdentityKeypair::load(&dir.join("id")).unwrap();
        assert_eq!(back.public(), id.public());
        let sig = back.sign(b"hello");
        assert!(id.public().verify(b"hello", &sig).is_ok());

        let onion = OnionKeypair::generate(&mut rand::thread_rng());
        onion.save(&dir.join("onion")).unwrap();
        assert_eq!(
            OnionKeypair::load(&dir.join("onion")).unwrap().public(),
            onion.public()
        );
        // A key file of one kind is not accepted as another.
        assert!(LinkKeypair::load(&dir.join("onion")).is_err());
    }

    #[test]
    fn relay_id_hex_round_trips() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng()).relay_id();
        assert_eq!(RelayId::from_hex(&id.to_string()).unwrap(), id);
    }
}
