//! The link handshake as a pure state machine over `snow` (`docs/spec.md` §6.1).
//!
//! Before the Noise messages, the initiator sends one preamble byte naming the pattern:
//! [`LinkKind::Client`] (`Noise_NK_25519_ChaChaPoly_SHA256`), [`LinkKind::Relay`]
//! (`Noise_XK_25519_ChaChaPoly_SHA256`) or [`LinkKind::Probe`] (NK, for an authority's
//! reachability probe). The Noise prologue is `"shallot-link-v1"` followed by that byte, so a
//! changed preamble fails the handshake. Handshake payloads are empty.

use shallot_crypto::keys::LinkKeypair;
use snow::{Builder, HandshakeState};

use crate::error::LinkError;
use crate::record::{Opener, Sealer};

const NK: &str = "Noise_NK_25519_ChaChaPoly_SHA256";
const XK: &str = "Noise_XK_25519_ChaChaPoly_SHA256";
const PROLOGUE: &[u8] = b"shallot-link-v1";
/// The longest handshake message either pattern sends.
pub const MAX_HANDSHAKE_MSG: usize = 96;

/// Which kind of peer opened the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A client: anonymous, Noise NK.
    Client,
    /// A relay: proves its static link key, Noise XK.
    Relay,
    /// A directory authority's reachability probe: anonymous, Noise NK; the relay answers one
    /// challenge on it (`docs/spec.md` §5.7) instead of carrying circuits.
    Probe,
}

impl LinkKind {
    /// The preamble byte that names this kind.
    pub fn preamble(self) -> u8 {
        match self {
            LinkKind::Client => 0x01,
            LinkKind::Relay => 0x02,
            LinkKind::Probe => 0x03,
        }
    }

    /// The kind a preamble byte names.
    pub fn from_preamble(b: u8) -> Result<Self, LinkError> {
        match b {
            0x01 => Ok(LinkKind::Client),
            0x02 => Ok(LinkKind::Relay),
            0x03 => Ok(LinkKind::Probe),
            other => Err(LinkError::BadPreamble(other)),
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            LinkKind::Client | LinkKind::Probe => NK,
            LinkKind::Relay => XK,
        }
    }
}

fn builder(kind: LinkKind) -> Result<Builder<'static>, LinkError> {
    let params = kind.pattern().parse::<snow::params::NoiseParams>()?;
    Ok(Builder::new(params))
}

/// A link handshake in progress, on either side.
pub struct Handshake {
    state: HandshakeState,
    kind: LinkKind,
}

impl Handshake {
    /// A client's handshake with the relay whose static link key is `relay_key`.
    pub fn client(relay_key: &[u8; 32]) -> Result<Self, LinkError> {
        Self::anonymous(LinkKind::Client, relay_key)
    }

    /// An authority's probe handshake with the relay whose static link key is `relay_key`.
    pub fn probe(relay_key: &[u8; 32]) -> Result<Self, LinkError> {
        Self::anonymous(LinkKind::Probe, relay_key)
    }

    fn anonymous(kind: LinkKind, relay_key: &[u8; 32]) -> Result<Self, LinkError> {
        let prologue = [PROLOGUE, &[kind.preamble()]].concat();
        let state = builder(kind)?
            .prologue(&prologue)
            .remote_public_key(relay_key)
            .build_initiator()?;
        Ok(Handshake { state, kind })
    }

    /// A relay's handshake with another relay whose static link key is `relay_key`.
    pub fn relay(me: &LinkKeypair, relay_key: &[u8; 32]) -> Result<Self, LinkError> {
        let prologue = [PROLOGUE, &[LinkKind::Relay.preamble()]].concat();
        let secret = me.secret_bytes();
        let state = builder(LinkKind::Relay)?
            .prologue(&prologue)
            .local_private_key(&secret[..])
            .remote_public_key(relay_key)
            .build_initiator()?;
        Ok(Handshake {
            state,
            kind: LinkKind::Relay,
        })
    }

    /// The responding relay's side, once the preamble has named the kind.
    pub fn responder(kind: LinkKind, me: &LinkKeypair) -> Result<Self, LinkError> {
        let prologue = [PROLOGUE, &[kind.preamble()]].concat();
        let secret = me.secret_bytes();
        let state = builder(kind)?
            .prologue(&prologue)
            .local_private_key(&secret[..])
            .build_responder()?;
        Ok(Handshake { state, kind })
    }

    /// The kind of link being set up.
    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// Whether the handshake has finished.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// Whether the next message is ours to send.
    pub fn is_my_turn(&self) -> bool {
        self.state.is_my_turn()
    }

    /// Produces our next handshake message.
    pub fn write(&mut self) -> Result<Vec<u8>, LinkError> {
        let mut buf = vec![0u8; MAX_HANDSHAKE_MSG];
        let n = self.state.write_message(&[], &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Consumes the peer's next handshake message. Fails if it does not authenticate.
    pub fn read(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        if msg.len() > MAX_HANDSHAKE_MSG {
            return Err(LinkError::HandshakeMessageTooLong(msg.len()));
        }
        let mut buf = [0u8; MAX_HANDSHAKE_MSG];
        let n = self.state.read_message(msg, &mut buf)?;
        if n != 0 {
            return Err(LinkError::HandshakePayload);
        }
        Ok(())
    }

    /// The Noise handshake hash: the same on both ends of one finished handshake, different
    /// for every other. It binds both sides' keys, so a signature over it is bound to this link.
    pub fn handshake_hash(&self) -> Result<[u8; 32], LinkError> {
        let hash = self.state.get_handshake_hash();
        <[u8; 32]>::try_from(hash).map_err(|_| LinkError::BadHandshakeHash(hash.len()))
    }

    /// Ends the handshake: the record sealer and opener, and the peer's static key if the
    /// pattern proved one (a relay initiator, seen from the responder).
    pub fn finish(self) -> Result<(Sealer, Opener, Option<[u8; 32]>), LinkError> {
        let peer = match self.state.get_remote_static() {
            Some(k) => Some(<[u8; 32]>::try_from(k).map_err(|_| LinkError::BadStaticKey(k.len()))?),
            None => None,
        };
        let transport = std::sync::Arc::new(self.state.into_stateless_transport_mode()?);
        Ok((Sealer::new(transport.clone()), Opener::new(transport), peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut a: Handshake, mut b: Handshake) -> Result<(Handshake, Handshake), LinkError> {
        while !(a.is_finished() && b.is_finished()) {
            if a.is_my_turn() {
                let m = a.write()?;
                b.read(&m)?;
            } else {
                let m = b.write()?;
                a.read(&m)?;
            }
        }
        Ok((a, b))
    }

    #[test]
    fn client_and_relay_handshakes_complete() {
        let mut rng = rand::thread_rng();
        let relay = LinkKeypair::generate(&mut rng);
        let (c, r) = run(
            Handshake::client(relay.public().as_bytes()).unwrap(),
            Handshake::responder(LinkKind::Client, &relay).unwrap(),
        )
        .unwrap();
        assert_eq!(c.handshake_hash().unwrap(), r.handshake_hash().unwrap());
        assert_eq!(r.finish().unwrap().2, None);
        c.finish().unwrap();

        let (p, r) = run(
            Handshake::probe(relay.public().as_bytes()).unwrap(),
            Handshake::responder(LinkKind::Probe, &relay).unwrap(),
        )
        .unwrap();
        assert_eq!(p.handshake_hash().unwrap(), r.handshake_hash().unwrap());

        let other = LinkKeypair::generate(&mut rng);
        let (i, r) = run(
            Handshake::relay(&other, relay.public().as_bytes()).unwrap(),
            Handshake::responder(LinkKind::Relay, &relay).unwrap(),
        )
        .unwrap();
        assert_eq!(r.finish().unwrap().2, Some(other.public().to_bytes()));
        i.finish().unwrap();
    }

    #[test]
    fn wrong_key_fails() {
        let mut rng = rand::thread_rng();
        let relay = LinkKeypair::generate(&mut rng);
        let impostor = LinkKeypair::generate(&mut rng);
        assert!(run(
            Handshake::client(relay.public().as_bytes()).unwrap(),
            Handshake::responder(LinkKind::Client, &impostor).unwrap(),
        )
        .is_err());
    }

    #[test]
    fn kinds_do_not_mix() {
        let mut rng = rand::thread_rng();
        let relay = LinkKeypair::generate(&mut rng);
        assert!(run(
            Handshake::client(relay.public().as_bytes()).unwrap(),
            Handshake::responder(LinkKind::Relay, &relay).unwrap(),
        )
        .is_err());
        // A probe and a client link use the same pattern, but not the same prologue.
        assert!(run(
            Handshake::probe(relay.public().as_bytes()).unwrap(),
            Handshake::responder(LinkKind::Client, &relay).unwrap(),
        )
        .is_err());
        assert!(LinkKind::from_preamble(9).is_err());
    }
}
