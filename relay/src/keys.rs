//! A relay's keys on disk: identity, link and the rotating ntor onion keys
//! (`docs/spec.md` §6.7, §8.1).
//!
//! `identity.key`, `link.key` and `onion.key` live in the relay's data directory (0700, files
//! 0600). At a rotation the current onion key moves to `onion.key.prev` and a new one takes
//! its place; the previous key is accepted until `grace` after the rotation (the rotation time
//! is the modification time of `onion.key`), then refused and deleted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shallot_crypto::keyfile::{self, KeyFileError};
use shallot_crypto::keys::{IdentityKeypair, LinkKeypair, OnionKeypair, RelayId};

/// The fixed keys of a relay.
pub struct RelayKeys {
    /// ed25519 identity; signs descriptors.
    pub identity: IdentityKeypair,
    /// Noise static key proven by every link.
    pub link: LinkKeypair,
    /// Fingerprint of the identity.
    pub id: RelayId,
}

/// The onion keys accepted right now.
#[derive(Clone)]
pub struct OnionKeys {
    /// The published key.
    pub current: Arc<OnionKeypair>,
    /// When the current key was made.
    pub current_since: SystemTime,
    /// The previous key and when it stops being accepted.
    pub previous: Option<(Arc<OnionKeypair>, SystemTime)>,
}

impl OnionKeys {
    /// The keys a handshake may use at `now`.
    pub fn accepted(&self, now: SystemTime) -> Vec<&OnionKeypair> {
        let mut keys = vec![&*self.current];
        if let Some((prev, until)) = &self.previous {
            if now < *until {
                keys.push(prev);
            }
        }
        keys
    }
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Creates a relay's keys in `dir` (made 0700 if new). Fails if keys already exist there.
pub fn init(dir: &Path) -> Result<RelayKeys, KeyFileError> {
    keyfile::ensure_private_dir(dir)?;
    let identity_path = path(dir, "identity.key");
    if identity_path.exists() {
        return Err(KeyFileError::Malformed {
            path: identity_path,
            label: "identity-ed25519",
            reason: "a relay is already initialised here; refusing to overwrite its keys".into(),
        });
    }
    let mut rng = rand::thread_rng();
    let identity = IdentityKeypair::generate(&mut rng);
    let link = LinkKeypair::generate(&mut rng);
    OnionKeypair::generate(&mut rng).save(&path(dir, "onion.key"))?;
    link.save(&path(dir, "link.key"))?;
    identity.save(&identity_path)?;
    let id = identity.relay_id();
    Ok(RelayKeys { identity, link, id })
}

/// Loads a relay's fixed keys from `dir`.
pub fn load(dir: &Path) -> Result<RelayKeys, KeyFileError> {
    keyfile::check_private_dir(dir)?;
    let identity = IdentityKeypair::load(&path(dir, "identity.key"))?;
    let link = LinkKeypair::load(&path(dir, "link.key"))?;
    let id = identity.relay_id();
    Ok(RelayKeys { identity, link, id })
}

fn modified(p: &Path) -> Result<SystemTime, KeyFileError> {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .map_err(|source| KeyFileError::Io {
            path: p.to_path_buf(),
            source,
        })
}

/// Loads the onion keys, rotating first if the current key is older than `rotation`, and
/// dropping a previous key whose grace period is over. Returns the keys and whether a
/// rotation happened.
pub fn load_onion(
    dir: &Path,
    rotation: Duration,
    grace: Duration,
    now: SystemTime,
) -> Result<(OnionKeys, bool), KeyFileError> {
    let cur_path = path(dir, "onion.key");
    let prev_path = path(dir, "onion.key.prev");
    let mut rotated = false;
    if !cur_path.exists() {
        OnionKeypair::generate(&mut rand::thread_rng()).save(&cur_path)?;
    }
    let since = modified(&cur_path)?;
    if now.duration_since(since).unwrap_or_default() >= rotation {
        let old = OnionKeypair::load(&cur_path)?;
        old.save(&prev_path)?;
        OnionKeypair::generate(&mut rand::thread_rng()).save(&cur_path)?;
        // The rotation time is `now` exactly (the file system's clock is coarser).
        std::fs::File::options()
            .write(true)
            .open(&cur_path)
            .and_then(|f| f.set_modified(now))
            .map_err(|source| KeyFileError::Io {
                path: cur_path.clone(),
                source,
            })?;
        rotated = true;
    }
    let current_since = modified(&cur_path)?;
    let until = current_since + grace;
    let previous = if prev_path.exists() && now < until {
        Some((Arc::new(OnionKeypair::load(&prev_path)?), until))
    } else {
        if prev_path.exists() {
            std::fs::remove_file(&prev_path).map_err(|source| KeyFileError::Io {
                path: prev_path.clone(),
                source,
            })?;
        }
        None
    };
    Ok((
        OnionKeys {
            current: Arc::new(OnionKeypair::load(&cur_path)?),
            current_since,
            previous,
        },
        rotated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        shallot_rt::scratch::path("relay-keys")
    }

    #[test]
    fn init_then_load() {
        let d = dir();
        let keys = init(&d).unwrap();
        let again = load(&d).unwrap();
        assert_eq!(keys.id, again.id);
        assert!(init(&d).is_err(), "init must not overwrite keys");
    }

    #[test]
    fn rotation_keeps_the_previous_key_for_the_grace_period() {
        let d = dir();
        init(&d).unwrap();
        let day = Duration::from_secs(86_400);
        let now = SystemTime::now();
        let (k0, rotated) = load_onion(&d, day, day, now).unwrap();
        assert!(!rotated);
        assert!(k0.previous.is_none());
        // A day later the key is rotated and the old one is still accepted.
        let (k1, rotated) = load_onion(&d, Duration::ZERO, day, now + day).unwrap();
        assert!(rotated);
        assert_ne!(k1.current.public(), k0.current.public());
        let accepted: Vec<_> = k1.accepted(now + day).iter().map(|k| k.public()).collect();
        assert!(accepted.contains(&k0.current.public()));
        // After the grace period it is refused.
        let late = now + day + day + Duration::from_secs(1);
        assert_eq!(k1.accepted(late).len(), 1);
        let (k2, _) = load_onion(&d, day * 30, day, late).unwrap();
        assert!(k2.previous.is_none());
        assert!(!d.join("onion.key.prev").exists());
    }
}
