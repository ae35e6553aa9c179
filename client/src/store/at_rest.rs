//! The store at rest (`docs/spec.md` §10.7): how its file is encrypted, and what is done so
//! that deleted secrets do not stay in it.
//!
//! An encrypted store is a SQLCipher database whose key is derived from the user's passphrase
//! with Argon2id. The Argon2 salt is SQLCipher's own: the first 16 bytes of the file, which
//! SQLCipher keeps in the clear. The key is handed to SQLCipher in its raw form
//! `x'<key><salt>'`, so SQLCipher's own PBKDF2 is skipped and a new database takes the salt
//! given. A store made without a passphrase is a plain SQLite file (it starts with SQLite's
//! magic string), as every store made before encryption was.
//!
//! In either form `secure_delete` overwrites deleted rows, and the write-ahead log is
//! checkpointed and truncated after each transaction ([`super::Store::atomically`]), or for the
//! messenger's grouped transactions once a burst of them is over ([`super::group`]: 25 ms
//! without one, at most 500 ms), so an old ratchet state or a dropped prekey does not linger
//! in the log. After the group's idle checkpoint the log holds one frame again: the
//! database's first page, rewritten unchanged ([`super::Store::scrub_and_prime`]).

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use zeroize::Zeroizing;

use super::StoreError;

/// SQLite's magic string, the first 16 bytes of every unencrypted database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Bytes of the salt SQLCipher keeps at the start of the file.
pub const SALT_LEN: usize = 16;

/// Argon2id's memory cost in KiB (64 MiB), passes and lanes: the second recommended
/// setting of RFC 9106 §4, for machines without 2 GiB to spare.
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;

/// What a store file holds, read from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtRest {
    /// No store yet (no file, or an empty one).
    New,
    /// A plain SQLite database: made with `--no-passphrase`, or before stores were encrypted.
    Plain,
    /// A SQLCipher database; its Argon2 salt.
    Encrypted([u8; SALT_LEN]),
}

/// Reads what the store file at `path` holds.
pub fn at_rest(path: &Path) -> Result<AtRest, StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AtRest::New),
        Err(e) => return Err(StoreError::Io(e)),
    };
    let mut head = [0u8; SALT_LEN];
    let mut got = 0;
    while got < head.len() {
        let n = file.read(&mut head[got..]).map_err(StoreError::Io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(match got {
        0 => AtRest::New,
        SALT_LEN if &head == SQLITE_MAGIC => AtRest::Plain,
        SALT_LEN => AtRest::Encrypted(head),
        _ => return Err(StoreError::Corrupt("the store file is truncated".into())),
    })
}

/// A fresh random salt.
pub fn new_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// The SQLCipher key for `passphrase` and `salt`, in its raw form `x'<key><salt>'` (hex).
pub fn sqlcipher_key(
    passphrase: &[u8],
    salt: &[u8; SALT_LEN],
) -> Result<Zeroizing<String>, StoreError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32))
        .map_err(|e| StoreError::Kdf(e.to_string()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut key[..])
        .map_err(|e| StoreError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new(String::with_capacity(3 + 2 * (32 + SALT_LEN)));
    out.push_str("x'");
    for b in key.iter().chain(salt.iter()) {
        let _ = write!(out, "{b:02x}");
    }
    out.push('\'');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ids::MessageId;
    use crate::store::{SessionRow, Store, StoreError, DB_FILE};
    use shallot_crypto::x3dh::SignedPrekey;

    /// The schema as the code before encryption made it, verbatim.
    const OLD_SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS identity (
        one INTEGER PRIMARY KEY CHECK (one = 1), seed BLOB NOT NULL, name TEXT, created_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS contacts (
        name TEXT PRIMARY KEY, key BLOB NOT NULL UNIQUE, added_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS requests (
        key BLOB PRIMARY KEY, first_seen INTEGER NOT NULL, ignored INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS sessions (
        peer BLOB NOT NULL, sid BLOB NOT NULL, state BLOB NOT NULL, start BLOB,
        used_at INTEGER NOT NULL, PRIMARY KEY (peer, sid));
    CREATE TABLE IF NOT EXISTS prekeys (
        id INTEGER PRIMARY KEY, body BLOB NOT NULL, expires_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS messages (
        id BLOB PRIMARY KEY, peer BLOB NOT NULL, outgoing INTEGER NOT NULL, text TEXT NOT NULL,
        sent_at INTEGER NOT NULL, received_at INTEGER, state INTEGER NOT NULL, copies INTEGER NOT NULL DEFAULT 0,
        failure TEXT, reported INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER, expires_at INTEGER);
    CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (peer, sent_at);
    CREATE TABLE IF NOT EXISTS seen_envelopes (id BLOB PRIMARY KEY, seen_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS seen_starts (ephemeral BLOB PRIMARY KEY, seen_at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS pending_acks (peer BLOB NOT NULL, id BLOB NOT NULL, PRIMARY KEY (peer, id));
    CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
";

    fn scratch() -> std::path::PathBuf {
        shallot_rt::scratch::path("atrest")
    }

    /// Whether `needle` is anywhere in the store file or its write-ahead log.
    fn on_disk(dir: &Path, needle: &[u8]) -> bool {
        ["", "-wal"].iter().any(|suffix| {
            std::fs::read(dir.join(format!("{DB_FILE}{suffix}")))
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
    }

    fn marker(tag: &str) -> Vec<u8> {
        format!("{tag}-{}", "#".repeat(200)).into_bytes()
    }

    /// Writes what the test looks for: a message, an identity, a ratchet state replaced by a
    /// newer one (as sealing does), and a prekey past its time, deleted. Returns the
    /// identity seed and the prekey's bytes.
    fn fill(s: &Store) -> (Vec<u8>, Vec<u8>) {
        let id = s.create_identity(Some("me"), 1).unwrap();
        s.insert_incoming(&MessageId([1; 16]), &[2; 32], "KNOWN-PLAINTEXT-4471", 1, 2)
            .unwrap();
        for (tag, t) in [("OLD-RATCHET-STATE", 1), ("NEW-RATCHET-STATE", 2)] {
            let row = SessionRow {
                sid: [3; 32],
                state: Zeroizing::new(marker(tag)),
                start: None,
            };
            s.atomically(|s| s.save_session(&[2; 32], &row, t)).unwrap();
        }
        let spk = SignedPrekey::generate(&mut rand::thread_rng(), 9, 0, 10);
        s.add_prekey(&spk, 5).unwrap();
        s.drop_old_prekeys(6).unwrap();
        (id.secret_bytes().to_vec(), spk.to_bytes().to_vec())
    }

    #[test]
    fn an_encrypted_store_shows_nothing_on_disk() {
        let dir = scratch();
        let s = Store::open_with(&dir, Some(b"correct horse")).unwrap();
        let (seed, prekey) = fill(&s);
        // Something still in the log, not yet checkpointed.
        s.set("late", b"KNOWN-PLAINTEXT-IN-THE-LOG").unwrap();
        assert!(s.is_encrypted().unwrap());
        for needle in [
            &b"KNOWN-PLAINTEXT-4471"[..],
            b"KNOWN-PLAINTEXT-IN-THE-LOG",
            &seed,
            &prekey,
            &marker("OLD-RATCHET-STATE"),
            &marker("NEW-RATCHET-STATE"),
            b"CREATE TABLE",
        ] {
            assert!(
                !on_disk(&dir, needle),
                "{:?} found",
                String::from_utf8_lossy(&needle[..20])
            );
        }
        assert_eq!(
            s.get("late").unwrap().unwrap(),
            b"KNOWN-PLAINTEXT-IN-THE-LOG"
        );
    }

    #[test]
    fn a_plain_store_keeps_no_deleted_secret_in_its_file_or_log() {
        let dir = scratch();
        let s = Store::open(&dir).unwrap();
        let (_, prekey) = fill(&s);
        assert!(!s.is_encrypted().unwrap());
        // The scan finds what is there...
        assert!(on_disk(&dir, b"KNOWN-PLAINTEXT-4471"));
        assert!(on_disk(&dir, &marker("NEW-RATCHET-STATE")));
        // ...and not what was replaced or deleted.
        assert!(
            !on_disk(&dir, &marker("OLD-RATCHET-STATE")),
            "old ratchet state found"
        );
        assert!(!on_disk(&dir, &prekey), "deleted prekey found");
    }

    #[test]
    fn a_wrong_or_missing_passphrase_is_refused() {
        let dir = scratch();
        let me = Store::open_with(&dir, Some(b"right"))
            .unwrap()
            .create_identity(None, 1)
            .unwrap()
            .public();
        assert!(matches!(
            Store::open_with(&dir, Some(b"wrong")),
            Err(StoreError::WrongPassphrase(_))
        ));
        assert!(matches!(
            Store::open(&dir),
            Err(StoreError::NeedPassphrase(_))
        ));
        let s = Store::open_with(&dir, Some(b"right")).unwrap();
        assert_eq!(s.identity().unwrap().public(), me);
    }

    #[test]
    fn passphrases_change_round_trip() {
        let dir = scratch();
        let s = Store::open(&dir).unwrap();
        let me = s.create_identity(None, 1).unwrap().public();
        s.insert_incoming(&MessageId([1; 16]), &[2; 32], "KNOWN-PLAINTEXT-4471", 1, 2)
            .unwrap();
        assert!(on_disk(&dir, b"KNOWN-PLAINTEXT-4471"));
        let s = s.change_passphrase(Some(b"one")).unwrap();
        assert!(s.is_encrypted().unwrap());
        assert!(!on_disk(&dir, b"KNOWN-PLAINTEXT-4471"));
        drop(s);
        let s = Store::open_with(&dir, Some(b"one")).unwrap();
        let s = s.change_passphrase(Some(b"two")).unwrap();
        drop(s);
        assert!(matches!(
            Store::open_with(&dir, Some(b"one")),
            Err(StoreError::WrongPassphrase(_))
        ));
        let s = Store::open_with(&dir, Some(b"two")).unwrap();
        assert_eq!(s.history().unwrap()[0].text, "KNOWN-PLAINTEXT-4471");
        let s = s.change_passphrase(None).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert!(!s.is_encrypted().unwrap());
        assert_eq!(s.identity().unwrap().public(), me);
        let version: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, crate::store::MIGRATIONS.len());
        assert!(!dir.join(format!("{DB_FILE}.rekey")).exists());
    }

    #[test]
    fn a_store_made_before_encryption_opens_and_is_migrated() {
        // A store as the code before this change made it: plain SQLite, the old schema,
        // user_version 0.
        let dir = scratch();
        shallot_crypto::keyfile::ensure_private_dir(&dir).unwrap();
        shallot_crypto::keyfile::write_private_file(&dir.join(DB_FILE), b"").unwrap();
        let old = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        old.execute_batch(OLD_SCHEMA).unwrap();
        old.execute(
            "INSERT INTO identity (one, seed, name, created_at) VALUES (1, ?1, 'old', 1)",
            [&[5u8; 32][..]],
        )
        .unwrap();
        old.execute(
            "INSERT INTO messages (id, peer, outgoing, text, sent_at, received_at, state)
             VALUES (?1, ?2, 0, 'from before', 1, 2, 10)",
            [&[1u8; 16][..], &[2u8; 32][..]],
        )
        .unwrap();
        drop(old);
        assert_eq!(at_rest(&dir.join(DB_FILE)).unwrap(), AtRest::Plain);
        let s = Store::open(&dir).unwrap();
        let version: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, crate::store::MIGRATIONS.len());
        assert_eq!(s.history().unwrap()[0].text, "from before");
        let me = s.identity().unwrap().public();
        // It stays plain until the user sets a passphrase, then opens only with it.
        let s = s.change_passphrase(Some(b"now secret")).unwrap();
        drop(s);
        let s = Store::open_with(&dir, Some(b"now secret")).unwrap();
        assert_eq!(s.identity().unwrap().public(), me);
        assert_eq!(s.history().unwrap()[0].text, "from before");
    }

    #[test]
    fn the_key_depends_on_passphrase_and_salt() {
        let a = sqlcipher_key(b"one", &[1; SALT_LEN]).unwrap();
        let b = sqlcipher_key(b"two", &[1; SALT_LEN]).unwrap();
        let c = sqlcipher_key(b"one", &[2; SALT_LEN]).unwrap();
        assert_eq!(a.len(), 3 + 96);
        assert!(a.starts_with("x'") && a.ends_with(&format!("{}'", "01".repeat(SALT_LEN))));
        assert_ne!(a[..66], b[..66]);
        assert_ne!(a[..66], c[..66]);
        assert_eq!(a, sqlcipher_key(b"one", &[1; SALT_LEN]).unwrap());
    }

    #[test]
    fn the_first_bytes_say_what_a_file_holds() {
        let dir = shallot_rt::scratch::path("atrest");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("db");
        assert_eq!(at_rest(&p).unwrap(), AtRest::New);
        std::fs::write(&p, b"").unwrap();
        assert_eq!(at_rest(&p).unwrap(), AtRest::New);
        std::fs::write(&p, b"SQLite format 3\0rest").unwrap();
        assert_eq!(at_rest(&p).unwrap(), AtRest::Plain);
        std::fs::write(&p, [7u8; 40]).unwrap();
        assert_eq!(at_rest(&p).unwrap(), AtRest::Encrypted([7; SALT_LEN]));
        std::fs::write(&p, [7u8; 5]).unwrap();
        assert!(at_rest(&p).is_err());
    }
}
