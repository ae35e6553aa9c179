//! The client's local store (`docs/spec.md` §10.7): one SQLite file, mode 0600, in the user's
//! data directory, holding the identity, contacts, contact requests, ratchet sessions, signed
//! prekeys, message history and the outbox.
//!
//! The file is encrypted with a key derived from the user's passphrase, or plain for a store
//! made without one ([`at_rest`]); what strangers may make it hold is bounded
//! ([`strangers`]). The schema grows by [`MIGRATIONS`], applied in order.

pub mod at_rest;
pub mod group;
pub mod strangers;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use shallot_crypto::address::Address;
use shallot_crypto::keyfile;
use shallot_crypto::keys::IdentityKeypair;
use shallot_crypto::x3dh::SignedPrekey;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ids::{EnvelopeId, MessageId};
pub use at_rest::AtRest;

mod ui_state;

/// Why the store refused or failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No identity has been created in this data directory.
    #[error("no identity in {0}; create one with `shallot id new`")]
    NoIdentity(PathBuf),
    /// An identity exists already.
    #[error("{0} already holds an identity; refusing to replace it")]
    IdentityExists(PathBuf),
    /// The contact name is taken.
    #[error("there is already a contact named {0:?}")]
    NameTaken(String),
    /// The address is already a contact.
    #[error("that address is already your contact {0:?}")]
    AlreadyContact(String),
    /// The address is the user's own.
    #[error("that is your own address")]
    OwnAddress,
    /// No contact by that name.
    #[error("no contact named {0:?}; see `shallot contact add`")]
    NoSuchContact(String),
    /// A contact name that cannot be used.
    #[error("contact names are 1 to 32 characters, without control characters")]
    BadName,
    /// The data directory or its permissions.
    #[error("{0}")]
    Files(#[from] keyfile::KeyFileError),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Stored data is corrupt.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store is encrypted and no passphrase was given.
    #[error("the store in {0} is encrypted; give its passphrase (on the terminal or in the file named by SHALLOT_PASSPHRASE_FILE)")]
    NeedPassphrase(PathBuf),
    /// The passphrase does not open the store.
    #[error("wrong passphrase for the store in {0}")]
    WrongPassphrase(PathBuf),
    /// The store was made by a newer version.
    #[error("the store in {0} was made by a newer shallot (schema {1}); upgrade shallot")]
    TooNew(PathBuf, usize),
    /// Deriving the key from the passphrase failed.
    #[error("deriving the store key: {0}")]
    Kdf(String),
    /// Reading or replacing the store file failed.
    #[error("store file: {0}")]
    Io(#[source] std::io::Error),
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The name the user gave.
    pub name: String,
    /// Their address.
    pub address: Address,
}

/// Where an outgoing message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutState {
    /// Not yet stored on enough mailboxes.
    Sending,
    /// Stored on this many mailbox relays.
    Stored(u8),
    /// The recipient acknowledged it.
    Delivered,
    /// Given up, with the reason.
    Failed(String),
}

/// A message in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// The other party's identity key.
    pub peer: [u8; 32],
    /// Whether this user sent it.
    pub outgoing: bool,
    /// The text.
    pub text: String,
    /// When it was written.
    pub sent_at: u64,
    /// When it arrived (incoming).
    pub received_at: Option<u64>,
    /// Delivery state (outgoing).
    pub state: Option<OutState>,
}

/// A ratchet session as stored.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The session's id: the ephemeral key of the start that created it.
    pub sid: [u8; 32],
    /// The serialized ratchet state.
    pub state: Zeroizing<Vec<u8>>,
    /// The start header still sent with each message, until the peer answers.
    pub start: Option<Vec<u8>>,
}

/// A message's columns as SQLite returns them.
struct MessageRow {
    id: Vec<u8>,
    peer: Vec<u8>,
    outgoing: i64,
    text: String,
    sent_at: i64,
    received_at: Option<i64>,
    state: i64,
    copies: i64,
    failure: Option<String>,
}

/// Acknowledgements owed to one peer.
pub type PeerAcks = ([u8; 32], Vec<MessageId>);

/// The local store.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
}

/// Prepared statements a connection keeps (more than the store has, so none is parsed twice).
const STATEMENT_CACHE: usize = 96;

/// The store's file in the data directory.
pub const DB_FILE: &str = "shallot.db";

/// Set on every connection: the write-ahead log, a flush per transaction, and deleted content
/// overwritten with zeros (old ratchet states and prekeys must not stay in free pages).
const CONNECTION_SETUP: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    PRAGMA secure_delete = ON;
";

/// The schema as it stood when migrations began: idempotent, so that stores made before
/// (whose `user_version` is 0) pass through it unchanged.
const SCHEMA_V1: &str = "
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

/// The schema's steps, in order: `PRAGMA user_version` counts those applied to a store.
/// Append new steps at the end; never edit or reorder one that has shipped.
pub const MIGRATIONS: &[&str] = &[SCHEMA_V1];

const ST_SENDING: i64 = 0;
const ST_STORED: i64 = 1;
const ST_DELIVERED: i64 = 2;
const ST_FAILED: i64 = 3;
const ST_RECEIVED: i64 = 10;

fn key32(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("bad key length".into()))
}

fn id16(v: Vec<u8>) -> Result<MessageId, StoreError> {
    v.try_into()
        .map(MessageId)
        .map_err(|_| StoreError::Corrupt("bad id length".into()))
}

/// Brings the schema up to date, one migration per transaction.
fn migrate(conn: &Connection, dir: &Path) -> Result<(), StoreError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::TooNew(dir.to_path_buf(), applied));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {step}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    }
    Ok(())
}

fn contact_from(name: String, key: Vec<u8>) -> Result<Contact, StoreError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key32(key)?)
        .map_err(|_| StoreError::Corrupt("bad contact key".into()))?;
    Ok(Contact {
        name,
        address: Address::new(key),
    })
}

/// Checks a contact name: 1 to 32 characters, none of them control characters.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let n = name.chars().count();
    if n == 0 || n > 32 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(StoreError::BadName);
    }
    Ok(())
}

impl Store {
    /// Opens the store in `dir` without a passphrase, creating the directory (0700) and file
    /// (0600) if needed. A new store made this way is not encrypted; an encrypted store is
    /// refused with [`StoreError::NeedPassphrase`]. For test networks, demos and benchmarks.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, None)
    }

    /// Opens the store in `dir`. A new store is encrypted under `passphrase` if one is given;
    /// an encrypted store needs its passphrase; a plain store (made without a passphrase, or
    /// before stores were encrypted) opens as it is, whatever is given, until
    /// [`Store::change_passphrase`] encrypts it.
    pub fn open_with(dir: &Path, passphrase: Option<&[u8]>) -> Result<Store, StoreError> {
        keyfile::ensure_private_dir(dir)?;
        // A copy left by an interrupted passphrase change (which may be unencrypted).
        let _ = std::fs::remove_file(dir.join(format!("{DB_FILE}.rekey")));
        let path = dir.join(DB_FILE);
        if !path.exists() {
            keyfile::write_private_file(&path, b"")?;
        } else {
            // Refuses a store others can read.
            keyfile::check_private_file(&path)?;
        }
        let conn = Connection::open(&path)?;
        let salt = match (at_rest::at_rest(&path)?, passphrase) {
            (AtRest::Encrypted(_), None) => {
                return Err(StoreError::NeedPassphrase(dir.to_path_buf()))
            }
            (AtRest::Encrypted(salt), Some(p)) => Some((salt, p)),
            (AtRest::New, Some(p)) => Some((at_rest::new_salt(), p)),
            (AtRest::New | AtRest::Plain, _) => None,
        };
        if let Some((salt, passphrase)) = salt {
            let key = at_rest::sqlcipher_key(passphrase, &salt)?;
            let pragma = Zeroizing::new(format!("PRAGMA key = \"{}\";", key.as_str()));
            conn.execute_batch(&pragma)?;
        }
        // The first read of an encrypted file is where a wrong key shows.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                StoreError::WrongPassphrase(dir.to_path_buf())
            }
            _ => StoreError::Db(e),
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(CONNECTION_SETUP)?;
        migrate(&conn, dir)?;
        ui_state::migrate(&conn)?;
        Ok(Store {
            conn,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether the store file is encrypted.
    pub fn is_encrypted(&self) -> Result<bool, StoreError> {
        Ok(matches!(
            at_rest::at_rest(&self.dir.join(DB_FILE))?,
            AtRest::Encrypted(_)
        ))
    }

    /// Re-encrypts the store under `new` (a fresh salt), or decrypts it with `None`, and
    /// reopens it. The contents are exported to a new file that then replaces the old one in
    /// one rename, so an interruption leaves either the old store or the new one. The old
    /// file's blocks are freed, not overwritten: on a plain store being encrypted, its
    /// content may stay in the file system's free space.
    pub fn change_passphrase(self, new: Option<&[u8]>) -> Result<Store, StoreError> {
        let path = self.dir.join(DB_FILE);
        let tmp = self.dir.join(format!("{DB_FILE}.rekey"));
        let _ = std::fs::remove_file(&tmp);
        keyfile::write_private_file(&tmp, b"")?;
        let key = match new {
            Some(p) => at_rest::sqlcipher_key(p, &at_rest::new_salt())?,
            None => Zeroizing::new(String::new()),
        };
        let tmp_name = tmp
            .to_str()
            .ok_or_else(|| StoreError::Corrupt("the data directory's path is not UTF-8".into()))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        self.scrub();
        self.conn.execute(
            "ATTACH DATABASE ?1 AS rekeyed KEY ?2",
            params![tmp_name, key.as_str()],
        )?;
        let exported = self
            .conn
            .query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))
            .and_then(|()| {
                self.conn
                    .execute_batch(&format!("PRAGMA rekeyed.user_version = {version};"))
            });
        self.conn.execute_batch("DETACH DATABASE rekeyed")?;
        if let Err(e) = exported {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        let dir = self.dir.clone();
        // Closing the last connection checkpoints the log into the old file and removes it,
        // so no log of the old file can be applied to the new one.
        drop(self);
        for stale in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{DB_FILE}{stale}")));
        }
        std::fs::rename(&tmp, &path).map_err(StoreError::Io)?;
        Store::open_with(&dir, new)
    }

    /// Runs one statement, parsed once per connection and kept in its cache of prepared
    /// statements rather than parsed at every call (a message sent or received runs about
    /// ten); its bindings are cleared when it goes back to the cache. Returns the rows changed.
    fn exec(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, prepared as in [`Store::exec`].
    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.prepare_cached(sql)?.query_row(params, row)
    }

    /// Runs `f` as one transaction: everything it writes reaches the disk together, with one
    /// flush, or not at all if it fails. Inside another `atomically`, `f` joins the outer
    /// transaction. The write lock is taken at the start (`BEGIN IMMEDIATE`), so what `f`
    /// reads cannot change under it, even from another process. After the commit the
    /// write-ahead log is checkpointed and truncated, so what the transaction replaced or
    /// deleted does not stay in the log.
    pub fn atomically<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let v = self.atomically_then_scrub(f)?;
        self.scrub();
        Ok(v)
    }

    /// [`Store::atomically`] without the checkpoint: the caller calls [`Store::scrub`] soon
    /// after, whatever happens, once what must not wait for it is done (the group commit,
    /// [`group`], scrubs once a burst of transactions is over). The flushes of the checkpoint
    /// stay off that path; until it runs, the log holds what the transaction replaced.
    pub fn atomically_then_scrub<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| E::from(StoreError::Db(e)))?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    // SQLite may leave the transaction open after a failed commit: end it,
                    // or the next transaction would join it and never reach the disk.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(E::from(StoreError::Db(e)));
                }
                tracing::trace!(target: "shallot_trace", "client store: committed");
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Copies the write-ahead log into the database and truncates it to nothing (unless
    /// another connection is reading, when the next transaction's checkpoint does it). Inside
    /// a transaction, nothing: the outer transaction's end does it. Returns whether the log
    /// was emptied.
    pub fn scrub(&self) -> bool {
        if !self.conn.is_autocommit() {
            return false;
        }
        // The first column says whether a reader or writer kept the checkpoint from ending.
        let emptied = match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
            Ok(busy) => busy == 0,
            Err(e) => {
                tracing::debug!("checkpoint: {e}");
                false
            }
        };
        tracing::trace!(target: "shallot_trace", "client store: log checkpointed");
        emptied
    }

    /// [`Store::scrub`], then, if the log was emptied, begins the next one at once with a
    /// write of nothing secret: the schema version, unchanged, on the database's first page
    /// (which holds only the header and the schema, or pointers to the schema's pages).
    /// SQLite flushes a new log's header to disk on its own before the first commit's pages,
    /// so a commit into an emptied log costs two flushes; made here, while nothing waits, the
    /// next commit (a message being sent) pays one. For the group committer when it goes idle.
    pub fn scrub_and_prime(&self) {
        if !self.scrub() {
            return;
        }
        // Read and written in one transaction: another process migrating the store in
        // between would otherwise have its version put back.
        let primed = self.conn.execute_batch("BEGIN IMMEDIATE").and_then(|()| {
            let written = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                .and_then(|v| {
                    self.conn
                        .execute_batch(&format!("PRAGMA user_version = {v}; COMMIT"))
                });
            if written.is_err() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
            written
        });
        if let Err(e) = primed {
            tracing::debug!("beginning the next log: {e}");
        }
    }

    /// Creates this user's identity.
    pub fn create_identity(
        &self,
        name: Option<&str>,
        now: u64,
    ) -> Result<IdentityKeypair, StoreError> {
        if self.has_identity()? {
            return Err(StoreError::IdentityExists(self.dir.clone()));
        }
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let seed = id.secret_bytes();
        self.exec(
            "INSERT INTO identity (one, seed, name, created_at) VALUES (1, ?1, ?2, ?3)",
            params![&seed[..], name, now as i64],
        )?;
        Ok(id)
    }

    fn has_identity(&self) -> Result<bool, StoreError> {
        Ok(self
            .one("SELECT 1 FROM identity", [], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// This user's identity.
    pub fn identity(&self) -> Result<IdentityKeypair, StoreError> {
        let seed: Option<Vec<u8>> = self
            .one("SELECT seed FROM identity", [], |r| r.get(0))
            .optional()?;
        let seed = Zeroizing::new(seed.ok_or_else(|| StoreError::NoIdentity(self.dir.clone()))?);
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Corrupt("identity seed".into()))?;
        Ok(IdentityKeypair::from_secret_bytes(&seed))
    }

    /// Adds a contact; a request from that address becomes this contact.
    pub fn add_contact(&self, name: &str, address: &Address, now: u64) -> Result<(), StoreError> {
        check_name(name)?;
        if self.identity()?.public() == *address.key() {
            return Err(StoreError::OwnAddress);
        }
        if let Some(c) = self.contact_by_key(address.key().as_bytes())? {
            return Err(StoreError::AlreadyContact(c.name));
        }
        if self.contact(name)?.is_some() {
            return Err(StoreError::NameTaken(name.to_string()));
        }
        self.exec(
            "INSERT INTO contacts (name, key, added_at) VALUES (?1, ?2, ?3)",
            params![name, &address.key().as_bytes()[..], now as i64],
        )?;
        self.exec(
            "DELETE FROM requests WHERE key = ?1",
            params![&address.key().as_bytes()[..]],
        )?;
        Ok(())
    }

    /// Every contact, by name.
    pub fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, key FROM contacts ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.map(|row| {
            let (name, key) = row?;
            contact_from(name, key)
        })
        .collect()
    }

    /// The contact called `name`.
    pub fn contact(&self, name: &str) -> Result<Option<Contact>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .one(
                "SELECT name, key FROM contacts WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(n, k)| contact_from(n, k)).transpose()
    }

    /// The contact whose identity key is `key`.
    pub fn contact_by_key(&self, key: &[u8; 32]) -> Result<Option<Contact>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .one(
                "SELECT name, key FROM contacts WHERE key = ?1",
                params![&key[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(n, k)| contact_from(n, k)).transpose()
    }

    /// Records a message from an unknown address as a contact request.
    pub fn note_request(&self, key: &[u8; 32], now: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR IGNORE INTO requests (key, first_seen) VALUES (?1, ?2)",
            params![&key[..], now as i64],
        )?;
        Ok(())
    }

    /// Marks a contact request as ignored (its messages stay, hidden).
    pub fn ignore_request(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        self.exec(
            "UPDATE requests SET ignored = 1 WHERE key = ?1",
            params![&key[..]],
        )?;
        Ok(())
    }

    /// Identity keys with open (not ignored) contact requests.
    pub fn requests(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM requests WHERE ignored = 0 ORDER BY first_seen")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|k| key32(k?)).collect()
    }

    /// Whether `key` has an ignored request.
    pub fn is_ignored(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self
            .one(
                "SELECT 1 FROM requests WHERE key = ?1 AND ignored = 1",
                params![&key[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The sessions with `peer`, most recently used first.
    pub fn sessions(&self, peer: &[u8; 32]) -> Result<Vec<SessionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sid, state, start FROM sessions WHERE peer = ?1 ORDER BY used_at DESC, rowid DESC",
        )?;
        let rows = stmt.query_map(params![&peer[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (sid, state, start) = row?;
            Ok(SessionRow {
                sid: key32(sid)?,
                state: Zeroizing::new(state),
                start,
            })
        })
        .collect()
    }

    /// Saves a session; `used_at` orders them (the newest is the one to send with). At most
    /// three sessions per peer are kept.
    pub fn save_session(
        &self,
        peer: &[u8; 32],
        row: &SessionRow,
        used_at: u64,
    ) -> Result<(), StoreError> {
        let values = params![
            &peer[..],
            &row.sid[..],
            &row.state[..],
            row.start,
            used_at as i64
        ];
        // A session already kept (every message after a session's first) is updated in
        // place: the peer's sessions stay as many as they were, so none is to be dropped.
        let updated = self.exec(
            "UPDATE sessions SET state = ?3, start = ?4, used_at = MAX(used_at, ?5)
             WHERE peer = ?1 AND sid = ?2",
            values,
        )?;
        if updated > 0 {
            return Ok(());
        }
        self.exec(
            "INSERT INTO sessions (peer, sid, state, start, used_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            values,
        )?;
        self.exec(
            "DELETE FROM sessions WHERE peer = ?1 AND sid NOT IN
             (SELECT sid FROM sessions WHERE peer = ?1 ORDER BY used_at DESC, rowid DESC LIMIT 3)",
            params![&peer[..]],
        )?;
        Ok(())
    }

    /// Every signed prekey still held.
    pub fn prekeys(&self) -> Result<Vec<SignedPrekey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT body FROM prekeys ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|b| {
            let b = Zeroizing::new(b?);
            SignedPrekey::from_bytes(&b).map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect()
    }

    /// Keeps a signed prekey until `keep_until`.
    pub fn add_prekey(&self, prekey: &SignedPrekey, keep_until: u64) -> Result<(), StoreError> {
        let body = prekey.to_bytes();
        self.exec(
            "INSERT OR REPLACE INTO prekeys (id, body, expires_at) VALUES (?1, ?2, ?3)",
            params![i64::from(prekey.id()), &body[..], keep_until as i64],
        )?;
        Ok(())
    }

    /// Deletes prekeys kept past their time.
    pub fn drop_old_prekeys(&self, now: u64) -> Result<(), StoreError> {
        // In a transaction of its own, so the log is truncated after it; inside another
        // (the messenger's group commit), with that one, whose runner truncates the log once
        // it goes idle (`group::SCRUB_IDLE`, at most `group::SCRUB_MAX` after the commit).
        self.atomically(|s| {
            s.exec(
                "DELETE FROM prekeys WHERE expires_at <= ?1",
                params![now as i64],
            )?;
            Ok(())
        })
    }

    /// Records an outgoing message as sending.
    pub fn insert_outgoing(
        &self,
        id: &MessageId,
        peer: &[u8; 32],
        text: &str,
        sent_at: u64,
        expires_at: u64,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO messages (id, peer, outgoing, text, sent_at, state, expires_at, next_attempt_at)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?4)",
            params![&id.as_bytes()[..], &peer[..], text, sent_at as i64, ST_SENDING, expires_at as i64],
        )?;
        Ok(())
    }

    /// Records an incoming message; false if it was already recorded (a duplicate).
    pub fn insert_incoming(
        &self,
        id: &MessageId,
        peer: &[u8; 32],
        text: &str,
        sent_at: u64,
        received_at: u64,
    ) -> Result<bool, StoreError> {
        let n = self.exec(
            "INSERT OR IGNORE INTO messages (id, peer, outgoing, text, sent_at, received_at, state)
             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
            params![
                &id.as_bytes()[..],
                &peer[..],
                text,
                sent_at as i64,
                received_at as i64,
                ST_RECEIVED
            ],
        )?;
        Ok(n == 1)
    }

    /// Updates an outgoing message after a delivery attempt: its state, and when to try again
    /// (`None`: no more attempts). Returns false, changing nothing, if the message was
    /// delivered meanwhile.
    pub fn update_outgoing(
        &self,
        id: &MessageId,
        state: &OutState,
        next_attempt_at: Option<u64>,
    ) -> Result<bool, StoreError> {
        let (code, copies, failure) = match state {
            OutState::Sending => (ST_SENDING, 0, None),
            OutState::Stored(k) => (ST_STORED, i64::from(*k), None),
            OutState::Delivered => (ST_DELIVERED, 0, None),
            OutState::Failed(reason) => (ST_FAILED, 0, Some(reason.as_str())),
        };
        Ok(self.exec(
            "UPDATE messages SET state = ?2, copies = MAX(copies, ?3), failure = ?4,
             attempts = attempts + 1, next_attempt_at = ?5 WHERE id = ?1 AND outgoing = 1 AND state != ?6",
            params![&id.as_bytes()[..], code, copies, failure, next_attempt_at.map(|t| t as i64), ST_DELIVERED],
        )? == 1)
    }

    /// Marks outgoing messages to `peer` as delivered; returns the ids that changed.
    pub fn mark_delivered(
        &self,
        peer: &[u8; 32],
        ids: &[MessageId],
    ) -> Result<Vec<MessageId>, StoreError> {
        let mut changed = Vec::new();
        for id in ids {
            let n = self.exec(
                "UPDATE messages SET state = ?3, failure = NULL, next_attempt_at = NULL
                 WHERE id = ?1 AND peer = ?2 AND outgoing = 1 AND state != ?3",
                params![&id.as_bytes()[..], &peer[..], ST_DELIVERED],
            )?;
            if n == 1 {
                changed.push(*id);
            }
        }
        Ok(changed)
    }

    /// Outgoing messages due for (re)transmission at `now`, or past their expiry, oldest
    /// first, with their attempts so far and expiry.
    pub fn due_outgoing(&self, now: u64) -> Result<Vec<(StoredMessage, u32, u64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, attempts, expires_at FROM messages
             WHERE outgoing = 1 AND state IN (?1, ?2)
             AND ((next_attempt_at IS NOT NULL AND next_attempt_at <= ?3) OR expires_at <= ?3)
             ORDER BY sent_at",
        )?;
        let rows = stmt.query_map(params![ST_SENDING, ST_STORED, now as i64], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, attempts, expires) = row?;
            if let Some(m) = self.message(&id16(id)?)? {
                out.push((m, attempts as u32, expires as u64));
            }
        }
        Ok(out)
    }

    fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
        Ok(MessageRow {
            id: r.get(0)?,
            peer: r.get(1)?,
            outgoing: r.get(2)?,
            text: r.get(3)?,
            sent_at: r.get(4)?,
            received_at: r.get(5)?,
            state: r.get(6)?,
            copies: r.get(7)?,
            failure: r.get(8)?,
        })
    }

    fn build_message(row: MessageRow) -> Result<StoredMessage, StoreError> {
        let outgoing = row.outgoing == 1;
        let state = outgoing.then(|| match row.state {
            ST_STORED => OutState::Stored(row.copies.clamp(0, 255) as u8),
            ST_DELIVERED => OutState::Delivered,
            ST_FAILED => OutState::Failed(row.failure.unwrap_or_default()),
            _ => OutState::Sending,
        });
        Ok(StoredMessage {
            id: id16(row.id)?,
            peer: key32(row.peer)?,
            outgoing,
            text: row.text,
            sent_at: row.sent_at as u64,
            received_at: row.received_at.map(|t| t as u64),
            state,
        })
    }

    const MESSAGE_COLUMNS: &'static str =
        "id, peer, outgoing, text, sent_at, received_at, state, copies, failure";

    /// One message by id.
    pub fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {} FROM messages WHERE id = ?1",
            Self::MESSAGE_COLUMNS
        );
        let row = self
            .one(&sql, params![&id.as_bytes()[..]], Self::row_to_message)
            .optional()?;
        row.map(Self::build_message).transpose()
    }

    /// Every message, in the order this device recorded them.
    pub fn history(&self) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {} FROM messages ORDER BY rowid",
            Self::MESSAGE_COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], Self::row_to_message)?;
        rows.map(|r| Self::build_message(r?)).collect()
    }

    /// Incoming messages not yet reported by `inbox`, oldest first; marks them reported.
    pub fn take_unreported(&self) -> Result<Vec<StoredMessage>, StoreError> {
        let sql = format!(
            "SELECT {} FROM messages WHERE outgoing = 0 AND reported = 0 ORDER BY received_at, rowid",
            Self::MESSAGE_COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], Self::row_to_message)?;
        let msgs: Vec<StoredMessage> = rows
            .map(|r| Self::build_message(r?))
            .collect::<Result<_, _>>()?;
        for m in &msgs {
            self.exec(
                "UPDATE messages SET reported = 1 WHERE id = ?1",
                params![&m.id.as_bytes()[..]],
            )?;
        }
        Ok(msgs)
    }

    /// Whether any incoming message has not been reported by `inbox` yet.
    pub fn has_unreported(&self) -> Result<bool, StoreError> {
        Ok(self
            .one(
                "SELECT 1 FROM messages WHERE outgoing = 0 AND reported = 0 LIMIT 1",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Calls `hook` at each commit of this store's connection (tests: on which thread a
    /// commit ran). Returning true would roll the commit back.
    #[cfg(test)]
    pub(crate) fn on_commit(&self, hook: impl FnMut() -> bool + Send + 'static) {
        self.conn.commit_hook(Some(hook));
    }

    /// Records an envelope id; false if it was seen before.
    pub fn first_sight_of_envelope(&self, id: &EnvelopeId, now: u64) -> Result<bool, StoreError> {
        Ok(self.exec(
            "INSERT OR IGNORE INTO seen_envelopes (id, seen_at) VALUES (?1, ?2)",
            params![&id.as_bytes()[..], now as i64],
        )? == 1)
    }

    /// Records a session start's ephemeral key; false if it was seen before (a replay).
    pub fn first_sight_of_start(&self, ephemeral: &[u8; 32], now: u64) -> Result<bool, StoreError> {
        Ok(self.exec(
            "INSERT OR IGNORE INTO seen_starts (ephemeral, seen_at) VALUES (?1, ?2)",
            params![&ephemeral[..], now as i64],
        )? == 1)
    }

    /// Forgets envelope ids and session starts seen before `before` (the mailboxes have
    /// expired the envelopes, and the starts' prekeys are gone).
    pub fn forget_seen_before(&self, before: u64) -> Result<(), StoreError> {
        for table in ["seen_envelopes", "seen_starts"] {
            self.exec(
                &format!("DELETE FROM {table} WHERE seen_at < ?1"),
                params![before as i64],
            )?;
        }
        Ok(())
    }

    /// Queues an end-to-end acknowledgement of `id` to `peer`.
    pub fn queue_ack(&self, peer: &[u8; 32], id: &MessageId) -> Result<(), StoreError> {
        self.exec(
            "INSERT OR IGNORE INTO pending_acks (peer, id) VALUES (?1, ?2)",
            params![&peer[..], &id.as_bytes()[..]],
        )?;
        Ok(())
    }

    /// Acknowledgements waiting to be sent, by peer.
    pub fn pending_acks(&self) -> Result<Vec<PeerAcks>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT peer, id FROM pending_acks ORDER BY peer")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out: Vec<PeerAcks> = Vec::new();
        for row in rows {
            let (peer, id) = row?;
            let (peer, id) = (key32(peer)?, id16(id)?);
            match out.last_mut() {
                Some((p, ids)) if *p == peer => ids.push(id),
                _ => out.push((peer, vec![id])),
            }
        }
        Ok(out)
    }

    /// Drops acknowledgements once sent.
    pub fn acks_sent(&self, peer: &[u8; 32], ids: &[MessageId]) -> Result<(), StoreError> {
        for id in ids {
            self.exec(
                "DELETE FROM pending_acks WHERE peer = ?1 AND id = ?2",
                params![&peer[..], &id.as_bytes()[..]],
            )?;
        }
        Ok(())
    }

    /// A small named value (guards, last drained epoch, …).
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .one("SELECT value FROM kv WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Sets a small named value.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let dir = shallot_rt::scratch::path("client-store");
        Store::open(&dir).unwrap()
    }

    #[test]
    fn identity_is_created_once() {
        let s = store();
        assert!(matches!(s.identity(), Err(StoreError::NoIdentity(_))));
        let id = s.create_identity(Some("me"), 1).unwrap();
        assert_eq!(s.identity().unwrap().public(), id.public());
        assert!(matches!(
            s.create_identity(None, 2),
            Err(StoreError::IdentityExists(_))
        ));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir().join("shallot.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn contacts_and_requests() {
        let s = store();
        let me = s.create_identity(None, 1).unwrap();
        let bob = Address::new(IdentityKeypair::generate(&mut rand::thread_rng()).public());
        s.note_request(bob.key().as_bytes(), 5).unwrap();
        assert_eq!(s.requests().unwrap().len(), 1);
        s.add_contact("bob", &bob, 6).unwrap();
        assert!(
            s.requests().unwrap().is_empty(),
            "adding the contact answers the request"
        );
        assert!(matches!(
            s.add_contact(
                "bob",
                &Address::new(IdentityKeypair::generate(&mut rand::thread_rng()).public()),
                7
            ),
            Err(StoreError::NameTaken(_))
        ));
        assert!(matches!(
            s.add_contact("robert", &bob, 7),
            Err(StoreError::AlreadyContact(_))
        ));
        assert!(matches!(
            s.add_contact("me", &Address::new(me.public()), 7),
            Err(StoreError::OwnAddress)
        ));
        assert!(matches!(
            s.add_contact("", &bob, 7),
            Err(StoreError::BadName)
        ));
        assert_eq!(s.contact("bob").unwrap().unwrap().address, bob);
        assert_eq!(
            s.contact_by_key(bob.key().as_bytes())
                .unwrap()
                .unwrap()
                .name,
            "bob"
        );
    }

    #[test]
    fn messages_flow_through_states() {
        let s = store();
        s.create_identity(None, 1).unwrap();
        let peer = [7u8; 32];
        s.insert_outgoing(&MessageId([1; 16]), &peer, "hi", 10, 1000)
            .unwrap();
        assert_eq!(s.due_outgoing(10).unwrap().len(), 1);
        assert!(s
            .update_outgoing(&MessageId([1; 16]), &OutState::Stored(2), Some(100))
            .unwrap());
        assert!(s.due_outgoing(50).unwrap().is_empty());
        assert_eq!(s.due_outgoing(100).unwrap()[0].1, 1);
        assert_eq!(
            s.mark_delivered(&peer, &[MessageId([1; 16])]).unwrap(),
            vec![MessageId([1; 16])]
        );
        assert_eq!(
            s.mark_delivered(&peer, &[MessageId([1; 16])]).unwrap(),
            Vec::<MessageId>::new()
        );
        assert_eq!(
            s.message(&MessageId([1; 16])).unwrap().unwrap().state,
            Some(OutState::Delivered)
        );
        // A late attempt result never undoes delivery, and says it changed nothing.
        assert!(!s
            .update_outgoing(&MessageId([1; 16]), &OutState::Stored(3), None)
            .unwrap());
        assert_eq!(
            s.message(&MessageId([1; 16])).unwrap().unwrap().state,
            Some(OutState::Delivered)
        );

        assert!(s
            .insert_incoming(&MessageId([2; 16]), &peer, "yo", 11, 12)
            .unwrap());
        assert!(
            !s.insert_incoming(&MessageId([2; 16]), &peer, "yo", 11, 13)
                .unwrap(),
            "duplicate"
        );
        assert_eq!(s.take_unreported().unwrap().len(), 1);
        assert!(s.take_unreported().unwrap().is_empty());
    }

    #[test]
    fn sessions_keep_the_three_newest() {
        let s = store();
        let peer = [3u8; 32];
        for i in 0..5u8 {
            let row = SessionRow {
                sid: [i; 32],
                state: Zeroizing::new(vec![i]),
                start: None,
            };
            s.save_session(&peer, &row, u64::from(i)).unwrap();
        }
        let rows = s.sessions(&peer).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.sid[0]).collect::<Vec<_>>(),
            vec![4, 3, 2]
        );
        // A kept session saved again is updated in place: its state and start replaced,
        // its time only ever moved forward, and no other session dropped for it.
        let again = |state: u8, start: Option<Vec<u8>>, at: u64| {
            let row = SessionRow {
                sid: [2; 32],
                state: Zeroizing::new(vec![state]),
                start,
            };
            s.save_session(&peer, &row, at).unwrap();
            s.sessions(&peer).unwrap()
        };
        let rows = again(20, Some(vec![9]), 9);
        assert_eq!(
            rows.iter().map(|r| r.sid[0]).collect::<Vec<_>>(),
            vec![2, 4, 3]
        );
        assert_eq!(
            (&rows[0].state[..], rows[0].start.as_deref()),
            (&[20u8][..], Some(&[9u8][..]))
        );
        let rows = again(21, None, 1);
        assert_eq!(
            rows.iter().map(|r| r.sid[0]).collect::<Vec<_>>(),
            vec![2, 4, 3],
            "an older time does not move it back"
        );
        assert_eq!(
            (&rows[0].state[..], rows[0].start.as_deref()),
            (&[21u8][..], None)
        );
    }

    #[test]
    fn dedup_tables_and_acks() {
        let s = store();
        assert!(s.first_sight_of_envelope(&EnvelopeId([1; 16]), 1).unwrap());
        assert!(!s.first_sight_of_envelope(&EnvelopeId([1; 16]), 2).unwrap());
        assert!(s.first_sight_of_start(&[2; 32], 1).unwrap());
        assert!(!s.first_sight_of_start(&[2; 32], 1).unwrap());
        s.forget_seen_before(2).unwrap();
        assert!(
            s.first_sight_of_envelope(&EnvelopeId([1; 16]), 3).unwrap(),
            "forgotten"
        );
        assert!(s.first_sight_of_start(&[2; 32], 3).unwrap(), "forgotten");
        s.queue_ack(&[9; 32], &MessageId([1; 16])).unwrap();
        s.queue_ack(&[9; 32], &MessageId([2; 16])).unwrap();
        let acks = s.pending_acks().unwrap();
        assert_eq!(
            acks,
            vec![([9; 32], vec![MessageId([1; 16]), MessageId([2; 16])])]
        );
        s.acks_sent(&[9; 32], &[MessageId([1; 16]), MessageId([2; 16])])
            .unwrap();
        assert!(s.pending_acks().unwrap().is_empty());
    }
}
