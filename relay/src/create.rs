//! Admitting a CREATE (`docs/spec.md` §6.3): the onion keys accepted now, the per-address
//! create rate, and the ntor answer that makes a circuit's layer.

use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::{Instant, SystemTime};

use rand::{CryptoRng, RngCore};
use shallot_crypto::keys::{OnionKeypair, RelayId};
use shallot_crypto::ntor::{server_handshake, NtorError, ServerMessage};
use shallot_crypto::onion::{HopKeys, RelayLayer};
use shallot_proto::cell::{Create, DestroyReason};
use shallot_rt::lock;

use crate::config::Limits;
use crate::keys::OnionKeys;
use crate::limits::CreateLimiter;

/// What deciding on a CREATE needs: the onion keys and the create rate limiter.
pub(crate) struct Admission {
    onion: RwLock<OnionKeys>,
    creates: Mutex<CreateLimiter>,
    /// Circuits one link may carry.
    pub(crate) circuits_per_link: usize,
    /// Circuits the relay carries at once (its memory budget's share for them).
    pub(crate) max_circuits: usize,
}

impl Admission {
    /// Admission with `onion` keys and the create limits of `limits`.
    pub(crate) fn new(onion: OnionKeys, limits: &Limits) -> Self {
        Admission {
            onion: RwLock::new(onion),
            creates: Mutex::new(CreateLimiter::new(
                limits.creates_per_sec_per_ip,
                limits.create_burst_per_ip,
            )),
            circuits_per_link: limits.circuits_per_link,
            max_circuits: limits.max_circuits(),
        }
    }

    /// The onion keys accepted now.
    pub(crate) fn onion_keys(&self) -> OnionKeys {
        match self.onion.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs the keys of a new rotation.
    pub(crate) fn set_onion_keys(&self, keys: OnionKeys) {
        match self.onion.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
    }

    /// Whether `ip` may create a circuit at `now` (takes a token if so).
    pub(crate) fn allow_create(&self, ip: IpAddr, now: Instant) -> bool {
        lock(&self.creates).allow(ip, now)
    }
}

/// Answers a CREATE's ntor handshake with the keys `accepted`: the new circuit's layer at the
/// depth the CREATE names, and the CREATED reply; or the reason to refuse (9 for an onion key
/// not accepted, else 1).
pub(crate) fn answer<R: RngCore + CryptoRng>(
    rng: &mut R,
    me: &RelayId,
    accepted: &[&OnionKeypair],
    create: &Create,
) -> Result<(RelayLayer, ServerMessage), DestroyReason> {
    let (reply, seed) = match server_handshake(rng, me, accepted, &create.handshake) {
        Ok(done) => done,
        Err(NtorError::UnknownOnionKey) => return Err(DestroyReason::OnionKey),
        Err(_) => return Err(DestroyReason::Protocol),
    };
    let layer = HopKeys::from_key_seed(&seed)
        .ok()
        .and_then(|keys| RelayLayer::new(create.depth, &keys).ok())
        .ok_or(DestroyReason::Protocol)?;
    Ok((layer, reply))
}

/// [`answer`] with the keys accepted at `now`.
pub(crate) fn answer_now(
    admission: &Admission,
    me: &RelayId,
    create: &Create,
    now: SystemTime,
) -> Result<(RelayLayer, ServerMessage), DestroyReason> {
    let onion = admission.onion_keys();
    let accepted = onion.accepted(now);
    answer(&mut rand::thread_rng(), me, &accepted, create)
}
