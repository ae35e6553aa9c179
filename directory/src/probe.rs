//! The reachability probe, both ends (`docs/spec.md` §5.7): the authority's [`probe`] and the
//! relay's [`respond`], over a probe link (Noise NK, preamble `0x03`, §6.1).
//!
//! The authority opens a probe link to the address and link key a descriptor names, and sends
//! a [`Challenge`]: a nonce and an ntor handshake addressed to the descriptor's fingerprint and
//! onion key. The relay answers with the ntor reply and its identity key's signature over the
//! link's handshake hash, the challenge and the reply ([`signed_message`]). The probe succeeds
//! only if all three keys check out on this one link:
//!
//! * the link key, because the Noise handshake completed against it;
//! * the onion key, because the ntor reply authenticates, and only for the fingerprint the
//!   relay itself uses (ntor binds it), so the onion key's holder vouches for the identity;
//! * the identity, because its signature covers the handshake hash of this link.
//!
//! A second identity that copies a relay's address and link key therefore fails: the link
//! reaches the real relay, which answers for its own identity only. After the answer the relay
//! sends the number of blocks the challenge asked for, which the authority times: the
//! measurement behind the relay's consensus weight ([`ProbeOutcome::measured`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use shallot_crypto::keys::{IdentityKeypair, OnionKeypair, RelayId, Signature, VerifyingKey};
use shallot_crypto::ntor::{server_handshake, ClientHandshake};
use shallot_link::{LinkError, LinkReader, LinkWriter, MAX_CELLS_PER_RECORD};
use shallot_proto::dir::probe::{signed_message, Answer, Challenge, PROBE_BLOCK_LEN};
use thiserror::Error;
use tokio::net::TcpStream;
use x25519_dalek::PublicKey;

/// Why a probe failed, or why a relay refused to answer one.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The link failed: handshake (the relay does not hold the link key), or closed early.
    #[error("link: {0}")]
    Link(#[from] LinkError),
    /// The probe did not finish within its time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A message was not what the protocol allows.
    #[error("malformed probe message: {0}")]
    Malformed(String),
    /// The ntor reply does not authenticate: the relay does not hold the onion key, or holds
    /// it under another identity.
    #[error("the relay did not prove the onion key for this identity")]
    OnionKey,
    /// The identity's signature does not verify over this link.
    #[error("the relay did not prove the identity on this link")]
    Identity,
}

/// What a relay's descriptor claims, which a probe checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Its link address.
    pub address: SocketAddr,
    /// Its Noise static link key.
    pub link_key: [u8; 32],
    /// Its ed25519 identity key.
    pub identity: VerifyingKey,
    /// Its ntor onion key.
    pub ntor_key: [u8; 32],
}

/// A successful probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOutcome {
    /// The timed transfer's rate, bytes per second, if one was asked for.
    pub measured: Option<u64>,
}

/// Probes `target`: connect, probe link, challenge, answer, then the timed transfer of
/// `transfer` blocks; all within `limit`.
pub async fn probe(
    target: &ProbeTarget,
    transfer: u16,
    limit: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    tokio::time::timeout(limit, probe_inner(target, transfer, limit))
        .await
        .map_err(|_| ProbeError::Timeout(limit))?
}

async fn probe_inner(
    target: &ProbeTarget,
    transfer: u16,
    limit: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    let stream = TcpStream::connect(target.address)
        .await
        .map_err(ProbeError::Connect)?;
    let (mut reader, mut writer, hash) =
        shallot_link::connect_probe(stream, &target.link_key, limit).await?;
    let (nonce, ntor, message) = {
        let mut rng = rand::thread_rng();
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let relay_id = RelayId::of(&target.identity);
        let (ntor, message) =
            ClientHandshake::start(&mut rng, relay_id, &PublicKey::from(target.ntor_key));
        (nonce, ntor, message)
    };
    let challenge = Challenge {
        nonce,
        ntor: message,
        transfer,
    };
    writer.write_cells(&challenge.encode()).await?;
    let answer = Answer::decode(reader.read_cells().await?)
        .map_err(|e| ProbeError::Malformed(e.to_string()))?;
    let started = Instant::now();
    check_answer(target, &hash, &challenge, &answer, ntor)?;
    let measured = if transfer > 0 {
        Some(timed_transfer(&mut reader, transfer, started).await?)
    } else {
        None
    };
    writer.shutdown().await;
    Ok(ProbeOutcome { measured })
}

/// Checks the relay's answer to `challenge` on the link with handshake hash `hash`.
fn check_answer(
    target: &ProbeTarget,
    hash: &[u8; 32],
    challenge: &Challenge,
    answer: &Answer,
    ntor: ClientHandshake,
) -> Result<(), ProbeError> {
    ntor.finish(&answer.ntor)
        .map_err(|_| ProbeError::OnionKey)?;
    let signature = Signature::from_bytes(&answer.signature);
    target
        .identity
        .verify_strict(&signed_message(hash, challenge, &answer.ntor), &signature)
        .map_err(|_| ProbeError::Identity)
}

/// Reads `blocks` zero blocks and returns their rate, bytes per second, counted from
/// `started` (when the answer arrived).
async fn timed_transfer(
    reader: &mut LinkReader,
    blocks: u16,
    started: Instant,
) -> Result<u64, ProbeError> {
    let want = usize::from(blocks) * PROBE_BLOCK_LEN;
    let mut got = 0usize;
    while got < want {
        let cells = reader.read_cells().await?;
        if cells.iter().any(|b| *b != 0) {
            return Err(ProbeError::Malformed("transfer block not zero".into()));
        }
        got += cells.len();
    }
    if got != want {
        return Err(ProbeError::Malformed(
            "more transfer blocks than asked".into(),
        ));
    }
    let micros = started.elapsed().as_micros().max(1);
    let rate = (want as u128).saturating_mul(1_000_000) / micros;
    Ok(u64::try_from(rate).unwrap_or(u64::MAX))
}

/// The keys a relay answers probes with.
pub struct RelayProbeKeys<'a> {
    /// Its identity.
    pub identity: &'a IdentityKeypair,
    /// The onion keys it accepts now (current, and previous in its grace period).
    pub onion: Vec<&'a OnionKeypair>,
}

/// The relay's answer to one challenge block on the link with handshake hash `hash`, and the
/// number of transfer blocks to send after it. Fails (and the relay closes the link without
/// answering) if the block is malformed or the ntor handshake is not addressed to this relay's
/// fingerprint and one of its onion keys.
pub fn answer(
    keys: &RelayProbeKeys<'_>,
    hash: &[u8; 32],
    block: &[u8],
) -> Result<(Answer, u16), ProbeError> {
    let challenge = Challenge::decode(block).map_err(|e| ProbeError::Malformed(e.to_string()))?;
    let (reply, _seed) = server_handshake(
        &mut rand::thread_rng(),
        &keys.identity.relay_id(),
        &keys.onion,
        &challenge.ntor,
    )
    .map_err(|_| ProbeError::OnionKey)?;
    let signature = keys
        .identity
        .sign(&signed_message(hash, &challenge, &reply))
        .to_bytes();
    Ok((
        Answer {
            ntor: reply,
            signature,
        },
        challenge.transfer,
    ))
}

/// Answers the one challenge of an accepted probe link and sends the transfer blocks, all
/// within `limit`.
pub async fn respond(
    keys: &RelayProbeKeys<'_>,
    hash: &[u8; 32],
    mut reader: LinkReader,
    mut writer: LinkWriter,
    limit: Duration,
) -> Result<(), ProbeError> {
    tokio::time::timeout(limit, async {
        let block = reader.read_cells().await?;
        let (answer, transfer) = answer(keys, hash, block)?;
        writer.write_cells(&answer.encode()).await?;
        let zeros = vec![0u8; MAX_CELLS_PER_RECORD * PROBE_BLOCK_LEN];
        let mut left = usize::from(transfer);
        while left > 0 {
            let n = left.min(MAX_CELLS_PER_RECORD);
            writer.write_cells(&zeros[..n * PROBE_BLOCK_LEN]).await?;
            left -= n;
        }
        writer.shutdown().await;
        Ok(())
    })
    .await
    .map_err(|_| ProbeError::Timeout(limit))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::LinkKeypair;
    use std::sync::Arc;
    use tokio::net::TcpListener;

    const LIMIT: Duration = Duration::from_secs(5);

    struct Relay {
        identity: Arc<IdentityKeypair>,
        onion: Arc<OnionKeypair>,
        link: Arc<LinkKeypair>,
        address: SocketAddr,
    }

    impl Relay {
        fn target(&self) -> ProbeTarget {
            ProbeTarget {
                address: self.address,
                link_key: *self.link.public().as_bytes(),
                identity: self.identity.public(),
                ntor_key: self.onion.public().to_bytes(),
            }
        }
    }

    async fn relay() -> Relay {
        let mut rng = rand::thread_rng();
        let identity = Arc::new(IdentityKeypair::generate(&mut rng));
        let onion = Arc::new(OnionKeypair::generate(&mut rng));
        let link = Arc::new(LinkKeypair::generate(&mut rng));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (i, o, l) = (identity.clone(), onion.clone(), link.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (i, o, l) = (i.clone(), o.clone(), l.clone());
                tokio::spawn(async move {
                    let Ok(acc) = shallot_link::accept(s, &l, LIMIT).await else {
                        return;
                    };
                    let keys = RelayProbeKeys {
                        identity: &i,
                        onion: vec![&o],
                    };
                    let _ =
                        respond(&keys, &acc.handshake_hash, acc.reader, acc.writer, LIMIT).await;
                });
            }
        });
        Relay {
            identity,
            onion,
            link,
            address,
        }
    }

    #[tokio::test]
    async fn an_honest_relay_passes_and_is_measured() {
        let r = relay().await;
        let out = probe(&r.target(), 64, LIMIT).await.unwrap();
        assert!(out.measured.is_some_and(|m| m > 0), "{out:?}");
        let out = probe(&r.target(), 0, LIMIT).await.unwrap();
        assert_eq!(out.measured, None);
    }

    #[tokio::test]
    async fn a_copied_link_key_or_address_proves_nothing() {
        let r = relay().await;
        // Another identity claiming this relay's address and link key (and even its onion key).
        let thief = IdentityKeypair::generate(&mut rand::thread_rng());
        let mut copied = r.target();
        copied.identity = thief.public();
        assert!(matches!(
            probe(&copied, 0, LIMIT).await,
            Err(ProbeError::OnionKey | ProbeError::Link(_))
        ));
        // Its own identity with another onion key.
        let mut wrong_onion = r.target();
        wrong_onion.ntor_key = OnionKeypair::generate(&mut rand::thread_rng())
            .public()
            .to_bytes();
        assert!(probe(&wrong_onion, 0, LIMIT).await.is_err());
        // A link key the relay does not hold.
        let mut wrong_link = r.target();
        wrong_link.link_key = *LinkKeypair::generate(&mut rand::thread_rng())
            .public()
            .as_bytes();
        assert!(matches!(
            probe(&wrong_link, 0, LIMIT).await,
            Err(ProbeError::Link(_))
        ));
    }

    #[test]
    fn an_answer_signed_for_another_link_does_not_verify() {
        let mut rng = rand::thread_rng();
        let identity = IdentityKeypair::generate(&mut rng);
        let onion = OnionKeypair::generate(&mut rng);
        let target = ProbeTarget {
            address: "127.0.0.1:1".parse().unwrap(),
            link_key: [0; 32],
            identity: identity.public(),
            ntor_key: onion.public().to_bytes(),
        };
        let keys = RelayProbeKeys {
            identity: &identity,
            onion: vec![&onion],
        };
        let (ntor, message) = ClientHandshake::start(
            &mut rng,
            identity.relay_id(),
            &PublicKey::from(target.ntor_key),
        );
        let challenge = Challenge {
            nonce: [3; 32],
            ntor: message,
            transfer: 0,
        };
        // The relay answers on a link with another handshake hash (a relayed challenge).
        let (answer, _) = answer(&keys, &[1; 32], &challenge.encode()).unwrap();
        assert!(matches!(
            check_answer(&target, &[2; 32], &challenge, &answer, ntor),
            Err(ProbeError::Identity)
        ));
        // A malformed block is refused before any work.
        assert!(matches!(
            super::answer(&keys, &[1; 32], &[0u8; 10]),
            Err(ProbeError::Malformed(_))
        ));
    }
}
