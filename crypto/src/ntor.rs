//! Tor's ntor circuit handshake, as pure client and server state machines
//! (`docs/spec.md` §3; tor-spec §5.1.4).
//!
//! The client knows the relay's fingerprint `ID` and onion key `B`, sends `ID | B | X`, and gets
//! back `Y | AUTH`. Both sides derive `KEY_SEED`, from which [`KeySeed::expand`] draws key
//! material with HKDF-SHA256. An all-zero Diffie-Hellman output and a wrong `AUTH` are refused
//! with one error, decided in constant time after all the work is done.

use hkdf::Hkdf;
use rand::{CryptoRng, RngCore};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::kdf::hmac_sha256;
use crate::keys::{OnionKeypair, RelayId, RELAY_ID_LEN};

/// The protocol identifier mixed into every ntor hash.
pub const PROTOID: &[u8] = b"ntor-curve25519-sha256-1";
const T_MAC: &[u8] = b"ntor-curve25519-sha256-1:mac";
const T_KEY: &[u8] = b"ntor-curve25519-sha256-1:key_extract";
const T_VERIFY: &[u8] = b"ntor-curve25519-sha256-1:verify";
const M_EXPAND: &[u8] = b"ntor-curve25519-sha256-1:key_expand";
const SERVER_STR: &[u8] = b"Server";

/// Length of the client's handshake message: `ID | B | X`.
pub const CLIENT_MESSAGE_LEN: usize = RELAY_ID_LEN + 32 + 32;
/// Length of the server's handshake message: `Y | AUTH`.
pub const SERVER_MESSAGE_LEN: usize = 64;

/// Why an ntor handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NtorError {
    /// The client addressed a different relay.
    #[error("handshake addressed to another relay")]
    WrongRelay,
    /// The client used an onion key this relay does not hold (or no longer accepts).
    #[error("handshake used an unknown or expired onion key")]
    UnknownOnionKey,
    /// A Diffie-Hellman output was all zeros, or the server's AUTH did not verify.
    #[error("handshake failed to authenticate")]
    BadHandshake,
    /// More key material was asked for than HKDF-SHA256 can give.
    #[error("too much key material requested")]
    KeyMaterialTooLong,
}

/// The client's handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMessage {
    /// The relay the client means to reach.
    pub relay_id: RelayId,
    /// The onion key `B` the client used.
    pub onion_key: [u8; 32],
    /// The client's ephemeral public key `X`.
    pub client_key: [u8; 32],
}

impl ClientMessage {
    /// Encodes as `ID | B | X`.
    pub fn to_bytes(&self) -> [u8; CLIENT_MESSAGE_LEN] {
        let mut out = [0u8; CLIENT_MESSAGE_LEN];
        out[..20].copy_from_slice(&self.relay_id.0);
        out[20..52].copy_from_slice(&self.onion_key);
        out[52..].copy_from_slice(&self.client_key);
        out
    }

    /// Decodes `ID | B | X`.
    pub fn from_bytes(bytes: &[u8; CLIENT_MESSAGE_LEN]) -> Self {
        let mut relay_id = [0u8; 20];
        let mut onion_key = [0u8; 32];
        let mut client_key = [0u8; 32];
        relay_id.copy_from_slice(&bytes[..20]);
        onion_key.copy_from_slice(&bytes[20..52]);
        client_key.copy_from_slice(&bytes[52..]);
        ClientMessage {
            relay_id: RelayId(relay_id),
            onion_key,
            client_key,
        }
    }
}

/// The server's handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMessage {
    /// The server's ephemeral public key `Y`.
    pub server_key: [u8; 32],
    /// `AUTH`, proving the server knew `b`.
    pub auth: [u8; 32],
}

impl ServerMessage {
    /// Encodes as `Y | AUTH`.
    pub fn to_bytes(&self) -> [u8; SERVER_MESSAGE_LEN] {
        let mut out = [0u8; SERVER_MESSAGE_LEN];
        out[..32].copy_from_slice(&self.server_key);
        out[32..].copy_from_slice(&self.auth);
        out
    }

    /// Decodes `Y | AUTH`.
    pub fn from_bytes(bytes: &[u8; SERVER_MESSAGE_LEN]) -> Self {
        let mut server_key = [0u8; 32];
        let mut auth = [0u8; 32];
        server_key.copy_from_slice(&bytes[..32]);
        auth.copy_from_slice(&bytes[32..]);
        ServerMessage { server_key, auth }
    }
}

/// `KEY_SEED`, the shared secret both sides end with, from which circuit keys are expanded.
pub struct KeySeed(Zeroizing<[u8; 32]>);

impl KeySeed {
    /// Fills `out` with HKDF-SHA256 expansion of `KEY_SEED` under the info string
    /// `ntor-curve25519-sha256-1:key_expand`. Output is prefix-stable: a longer request starts
    /// with the bytes of a shorter one.
    pub fn expand(&self, out: &mut [u8]) -> Result<(), NtorError> {
        let hk = Hkdf::<Sha256>::from_prk(&*self.0).map_err(|_| NtorError::KeyMaterialTooLong)?;
        hk.expand(M_EXPAND, out)
            .map_err(|_| NtorError::KeyMaterialTooLong)
    }
}

fn is_zero(bytes: &[u8; 32]) -> Choice {
    bytes.ct_eq(&[0u8; 32])
}

/// The shared computation of both sides: returns (KEY_SEED, AUTH).
#[allow(clippy::too_many_arguments)]
fn derive(
    exp1: &[u8; 32],
    exp2: &[u8; 32],
    id: &RelayId,
    b: &[u8; 32],
    x: &[u8; 32],
    y: &[u8; 32],
) -> (KeySeed, [u8; 32]) {
    let secret_input: [&[u8]; 7] = [exp1, exp2, &id.0, b, x, y, PROTOID];
    let key_seed = KeySeed(hmac_sha256(T_KEY, &secret_input));
    let verify = hmac_sha256(T_VERIFY, &secret_input);
    let auth = *hmac_sha256(T_MAC, &[&*verify, &id.0, b, y, x, PROTOID, SERVER_STR]);
    (key_seed, auth)
}

/// A client handshake in progress.
pub struct ClientHandshake {
    secret: StaticSecret,
    message: ClientMessage,
    /// `EXP(B, x)`, once computed: by [`ClientHandshake::prepare`] while the reply is on its
    /// way, or else by [`ClientHandshake::finish`].
    with_onion_key: Option<Zeroizing<[u8; 32]>>,
}

impl ClientHandshake {
    /// Starts a handshake with relay `relay_id`, whose onion key is `onion_key`.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        relay_id: RelayId,
        onion_key: &PublicKey,
    ) -> (Self, ClientMessage) {
        Self::start_with_ephemeral(StaticSecret::random_from_rng(rng), relay_id, onion_key)
    }

    /// Starts a handshake with a given ephemeral secret `x` (for test vectors).
    pub fn start_with_ephemeral(
        secret: StaticSecret,
        relay_id: RelayId,
        onion_key: &PublicKey,
    ) -> (Self, ClientMessage) {
        let message = ClientMessage {
            relay_id,
            onion_key: onion_key.to_bytes(),
            client_key: PublicKey::from(&secret).to_bytes(),
        };
        (
            ClientHandshake {
                secret,
                message: message.clone(),
                with_onion_key: None,
            },
            message,
        )
    }

    /// Computes the half of the client's work that needs no reply, `EXP(B, x)`, so that
    /// [`ClientHandshake::finish`] has one Diffie-Hellman left instead of two. A client calls
    /// it once its message is sent, while the relay works on its answer (`docs/spec.md` §3);
    /// calling it again does nothing.
    pub fn prepare(&mut self) {
        if let Some(work) = self.preparation() {
            self.accept(work.run());
        }
    }

    /// [`ClientHandshake::prepare`]'s work, to run elsewhere (another thread) while this
    /// handshake waits; `None` once it is done.
    pub fn preparation(&self) -> Option<Preparation> {
        if self.with_onion_key.is_some() {
            return None;
        }
        Some(Preparation {
            secret: self.secret.clone(),
            onion_key: self.message.onion_key,
            client_key: self.message.client_key,
        })
    }

    /// Whether `work` is this handshake's and still to be done: a worker that finds it is
    /// not (the answer came first) can skip it.
    pub fn wants(&self, work: &Preparation) -> bool {
        self.with_onion_key.is_none()
            && work.client_key == self.message.client_key
            && work.onion_key == self.message.onion_key
    }

    /// Takes the result of a [`Preparation`] of this handshake. The result of another
    /// handshake's (told by its `X` and `B`) is ignored, as is any once this one is prepared.
    pub fn accept(&mut self, done: Prepared) {
        if self.with_onion_key.is_none()
            && done.client_key == self.message.client_key
            && done.onion_key == self.message.onion_key
        {
            self.with_onion_key = Some(done.with_onion_key);
        }
    }

    /// Checks the server's reply and returns the shared key seed.
    pub fn finish(mut self, reply: &ServerMessage) -> Result<KeySeed, NtorError> {
        self.prepare();
        let exp2 = self.with_onion_key.take().unwrap_or_default();
        let m = &self.message;
        let y = PublicKey::from(reply.server_key);
        let exp1 = Zeroizing::new(self.secret.diffie_hellman(&y).to_bytes());
        let (seed, auth) = derive(
            &exp1,
            &exp2,
            &m.relay_id,
            &m.onion_key,
            &m.client_key,
            &reply.server_key,
        );
        let bad = is_zero(&exp1) | is_zero(&exp2) | !auth.ct_eq(&reply.auth);
        if bool::from(bad) {
            return Err(NtorError::BadHandshake);
        }
        Ok(seed)
    }
}

/// The client's work that needs no reply, taken from a [`ClientHandshake`] to be done apart
/// from it: a copy of the ephemeral secret `x` (zeroized on drop) with `B` and `X`.
pub struct Preparation {
    secret: StaticSecret,
    onion_key: [u8; 32],
    client_key: [u8; 32],
}

impl Preparation {
    /// Computes `EXP(B, x)`.
    pub fn run(self) -> Prepared {
        let b = PublicKey::from(self.onion_key);
        Prepared {
            client_key: self.client_key,
            onion_key: self.onion_key,
            with_onion_key: Zeroizing::new(self.secret.diffie_hellman(&b).to_bytes()),
        }
    }
}

/// A done [`Preparation`], for [`ClientHandshake::accept`].
pub struct Prepared {
    client_key: [u8; 32],
    onion_key: [u8; 32],
    with_onion_key: Zeroizing<[u8; 32]>,
}

/// Answers a client's handshake. `keys` are the onion keys this relay currently accepts (the
/// current one and, during its grace period, the previous one).
pub fn server_handshake<R: RngCore + CryptoRng>(
    rng: &mut R,
    relay_id: &RelayId,
    keys: &[&OnionKeypair],
    message: &ClientMessage,
) -> Result<(ServerMessage, KeySeed), NtorError> {
    server_handshake_with_ephemeral(StaticSecret::random_from_rng(rng), relay_id, keys, message)
}

/// [`server_handshake`] with a given ephemeral secret `y` (for test vectors).
pub fn server_handshake_with_ephemeral(
    secret: StaticSecret,
    relay_id: &RelayId,
    keys: &[&OnionKeypair],
    message: &ClientMessage,
) -> Result<(ServerMessage, KeySeed), NtorError> {
    if message.relay_id != *relay_id {
        return Err(NtorError::WrongRelay);
    }
    let onion = keys
        .iter()
        .find(|k| k.public().as_bytes() == &message.onion_key)
        .ok_or(NtorError::UnknownOnionKey)?;
    let x = PublicKey::from(message.client_key);
    let y = PublicKey::from(&secret).to_bytes();
    let exp1 = Zeroizing::new(secret.diffie_hellman(&x).to_bytes());
    let exp2 = Zeroizing::new(onion.secret().diffie_hellman(&x).to_bytes());
    let (seed, auth) = derive(
        &exp1,
        &exp2,
        relay_id,
        &message.onion_key,
        &message.client_key,
        &y,
    );
    if bool::from(is_zero(&exp1) | is_zero(&exp2)) {
        return Err(NtorError::BadHandshake);
    }
    Ok((
        ServerMessage {
            server_key: y,
            auth,
        },
        seed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    fn field(v: &serde_json::Value, name: &str) -> Vec<u8> {
        hex::decode(v[name].as_str().unwrap()).unwrap()
    }

    fn arr32(bytes: Vec<u8>) -> [u8; 32] {
        bytes.try_into().unwrap()
    }

    /// The published ntor test vector (`shared/vectors/ntor.json`, copied to
    /// `crypto/tests/vectors/ntor.json`): the vector, `ID`, `b`, `x` and `y`.
    fn published() -> (
        serde_json::Value,
        RelayId,
        OnionKeypair,
        StaticSecret,
        StaticSecret,
    ) {
        let text = include_str!("../tests/vectors/ntor.json");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let id = RelayId(field(&v, "server_identity_id").try_into().unwrap());
        let b = OnionKeypair::from_secret_bytes(arr32(field(&v, "server_onion_secret_b")));
        let x = StaticSecret::from(arr32(field(&v, "client_ephemeral_secret_x")));
        let y = StaticSecret::from(arr32(field(&v, "server_ephemeral_secret_y")));
        (v, id, b, x, y)
    }

    #[test]
    fn reproduces_the_published_vector() {
        let (v, id, b, x, y) = published();
        assert_eq!(
            b.public().to_bytes().to_vec(),
            field(&v, "server_onion_public_B")
        );

        let (client, msg) = ClientHandshake::start_with_ephemeral(x, id, &b.public());
        assert_eq!(
            msg.client_key.to_vec(),
            field(&v, "client_ephemeral_public_X")
        );
        let (reply, server_seed) = server_handshake_with_ephemeral(y, &id, &[&b], &msg).unwrap();
        assert_eq!(
            reply.server_key.to_vec(),
            field(&v, "server_ephemeral_public_Y")
        );
        assert_eq!(reply.auth.to_vec(), field(&v, "server_auth"));

        let client_seed = client.finish(&reply).unwrap();
        let mut k_client = [0u8; 72];
        let mut k_server = [0u8; 72];
        client_seed.expand(&mut k_client).unwrap();
        server_seed.expand(&mut k_server).unwrap();
        assert_eq!(k_client.to_vec(), field(&v, "key_material_72_bytes"));
        assert_eq!(k_server, k_client);

        // Prefix stability: expanding more starts with the same 72 bytes.
        let mut longer = [0u8; 200];
        client_seed.expand(&mut longer).unwrap();
        assert_eq!(&longer[..72], &k_client[..]);
    }

    /// A client that computes `EXP(B, x)` while it waits (once or twice) derives the same
    /// keys as one that does it all on the reply: the published vector again.
    #[test]
    fn preparing_ahead_changes_no_byte() {
        let (v, id, b, x, y) = published();
        let (mut client, msg) = ClientHandshake::start_with_ephemeral(x, id, &b.public());
        let work = client.preparation().unwrap();
        client.prepare();
        assert!(!client.wants(&work), "done once");
        client.prepare();
        let (reply, _) = server_handshake_with_ephemeral(y, &id, &[&b], &msg).unwrap();
        let mut k = [0u8; 72];
        client.finish(&reply).unwrap().expand(&mut k).unwrap();
        assert_eq!(k.to_vec(), field(&v, "key_material_72_bytes"));
    }

    /// The result of preparing one handshake given to another (a circuit whose handshake
    /// was replaced while the work ran) is ignored: the keys still agree.
    #[test]
    fn another_handshakes_preparation_is_ignored() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (first, _) = ClientHandshake::start(&mut rng, id, &b.public());
        let stale = first.preparation().unwrap().run();
        let (mut client, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        let own = client.preparation().unwrap();
        assert!(client.wants(&own));
        assert!(!client.wants(&first.preparation().unwrap()));
        client.accept(stale);
        let (reply, s_seed) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        let (mut a, mut c) = ([0u8; 32], [0u8; 32]);
        s_seed.expand(&mut a).unwrap();
        client.finish(&reply).unwrap().expand(&mut c).unwrap();
        assert_eq!(a, c);
    }

    /// A reply whose `AUTH` is right for the given Diffie-Hellman outputs: what a hostile
    /// relay can send when one output is all zeros (it knows every other input).
    fn forged_reply(
        exp1: &[u8; 32],
        exp2: &[u8; 32],
        msg: &ClientMessage,
        y: [u8; 32],
    ) -> ServerMessage {
        let (_, auth) = derive(
            exp1,
            exp2,
            &msg.relay_id,
            &msg.onion_key,
            &msg.client_key,
            &y,
        );
        ServerMessage {
            server_key: y,
            auth,
        }
    }

    /// The client refuses a reply whose `AUTH` is right but built on an all-zero
    /// Diffie-Hellman output, prepared ahead or not: a hostile relay answering with a zero
    /// `Y`, and one whose directory entry gave a small-order onion key `B`.
    #[test]
    fn a_right_auth_over_an_all_zero_output_is_refused() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        for prepared in [false, true] {
            // Y = 0: EXP(Y, x) is zero; the relay knows b, so it computes EXP(X, b).
            let (mut client, msg) = ClientHandshake::start(&mut rng, id, &b.public());
            if prepared {
                client.prepare();
            }
            let xb = b
                .secret()
                .diffie_hellman(&PublicKey::from(msg.client_key))
                .to_bytes();
            let reply = forged_reply(&[0; 32], &xb, &msg, [0; 32]);
            assert_eq!(client.finish(&reply).err(), Some(NtorError::BadHandshake));

            // B of small order: EXP(B, x) is zero; the relay picks y and computes EXP(X, y).
            let small = PublicKey::from([0u8; 32]);
            let (mut client, msg) = ClientHandshake::start(&mut rng, id, &small);
            if prepared {
                client.prepare();
            }
            let y = StaticSecret::random_from_rng(&mut rng);
            let xy = y
                .diffie_hellman(&PublicKey::from(msg.client_key))
                .to_bytes();
            let reply = forged_reply(&xy, &[0; 32], &msg, PublicKey::from(&y).to_bytes());
            assert_eq!(client.finish(&reply).err(), Some(NtorError::BadHandshake));
        }
    }

    /// A prepared client refuses a wrong `AUTH` as an unprepared one does.
    #[test]
    fn a_prepared_client_refuses_a_wrong_auth() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (mut client, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        client.prepare();
        let (mut reply, _) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        reply.auth[0] ^= 0x80;
        assert_eq!(client.finish(&reply).err(), Some(NtorError::BadHandshake));
    }

    fn relay() -> (RelayId, OnionKeypair) {
        let mut rng = rand::thread_rng();
        (
            crate::keys::IdentityKeypair::generate(&mut rng).relay_id(),
            OnionKeypair::generate(&mut rng),
        )
    }

    #[test]
    fn both_sides_agree() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (client, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        let (reply, s_seed) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        let c_seed = client.finish(&reply).unwrap();
        let (mut a, mut c) = ([0u8; 64], [0u8; 64]);
        s_seed.expand(&mut a).unwrap();
        c_seed.expand(&mut c).unwrap();
        assert_eq!(a, c);
    }

    #[test]
    fn wrong_auth_is_refused() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (client, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        let (mut reply, _) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        reply.auth[7] ^= 1;
        assert_eq!(client.finish(&reply).err(), Some(NtorError::BadHandshake));
    }

    #[test]
    fn all_zero_shared_secret_is_refused() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        // A small-order point as the client key makes EXP(X, y) all zeros on the server.
        let (_, mut msg) = ClientHandshake::start(&mut rng, id, &b.public());
        msg.client_key = [0u8; 32];
        assert_eq!(
            server_handshake(&mut rng, &id, &[&b], &msg).err(),
            Some(NtorError::BadHandshake)
        );
        // The client's side, with an AUTH a hostile relay can make right:
        // `a_right_auth_over_an_all_zero_output_is_refused`.
    }

    #[test]
    fn replayed_client_message_yields_different_keys() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (_, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        let (r1, s1) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        let (r2, s2) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        assert_ne!(r1.server_key, r2.server_key);
        let (mut k1, mut k2) = ([0u8; 64], [0u8; 64]);
        s1.expand(&mut k1).unwrap();
        s2.expand(&mut k2).unwrap();
        assert_ne!(k1, k2);
    }

    #[test]
    fn unknown_key_and_wrong_relay_are_refused() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (_, other) = relay();
        let (_, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        assert_eq!(
            server_handshake(&mut rng, &id, &[&other], &msg).err(),
            Some(NtorError::UnknownOnionKey)
        );
        let (other_id, _) = relay();
        assert_eq!(
            server_handshake(&mut rng, &other_id, &[&b], &msg).err(),
            Some(NtorError::WrongRelay)
        );
        // The previous key is accepted while it is still listed.
        assert!(server_handshake(&mut rng, &id, &[&other, &b], &msg).is_ok());
    }

    #[test]
    fn messages_round_trip() {
        let mut rng = rand::thread_rng();
        let (id, b) = relay();
        let (_, msg) = ClientHandshake::start(&mut rng, id, &b.public());
        assert_eq!(ClientMessage::from_bytes(&msg.to_bytes()), msg);
        let (reply, _) = server_handshake(&mut rng, &id, &[&b], &msg).unwrap();
        assert_eq!(ServerMessage::from_bytes(&reply.to_bytes()), reply);
    }
}
