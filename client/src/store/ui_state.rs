//! What the chat UI keeps in the store beside the messages (`docs/spec.md` §10.7): how far
//! each conversation has been read, so that unread counts survive a restart, and the
//! contact-list edits the UI offers (rename, remove, block) and the list of ignored
//! addresses.
//!
//! Read state is one row per peer in `read_marks`: the local record position (SQLite
//! `rowid`) of the last message read. A message is unread when it is incoming and recorded
//! after that mark (or, with no mark, at all). [`migrate`] adds the table to a store made
//! before it existed and marks that store's history read, which is what its user last saw.

use rusqlite::{params, Connection, OptionalExtension};

use super::{check_name, key32, Store, StoreError};

/// Adds `read_marks` if the store lacks it: one small, additive step, run on every open.
pub(super) fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'read_marks'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE read_marks (peer BLOB PRIMARY KEY, upto INTEGER NOT NULL);
             INSERT INTO read_marks (peer, upto) SELECT peer, MAX(rowid) FROM messages GROUP BY peer;
             COMMIT;",
        )?;
    }
    Ok(())
}

impl Store {
    /// Marks every message recorded so far with `peer` read.
    pub fn mark_read(&self, peer: &[u8; 32]) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO read_marks (peer, upto)
             SELECT ?1, COALESCE(MAX(rowid), 0) FROM messages WHERE peer = ?1
             ON CONFLICT (peer) DO UPDATE SET upto = MAX(upto, excluded.upto)",
            params![&peer[..]],
        )?;
        Ok(())
    }

    /// Incoming messages recorded after each peer's read mark, for every peer that has any.
    pub fn unread_counts(&self) -> Result<Vec<([u8; 32], usize)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.peer, COUNT(*) FROM messages m LEFT JOIN read_marks r ON r.peer = m.peer
             WHERE m.outgoing = 0 AND m.rowid > COALESCE(r.upto, -1)
             GROUP BY m.peer",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|row| {
            let (peer, n) = row?;
            Ok((key32(peer)?, usize::try_from(n).unwrap_or(0)))
        })
        .collect()
    }

    /// Gives the contact `from` the name `to`.
    pub fn rename_contact(&self, from: &str, to: &str) -> Result<(), StoreError> {
        check_name(to)?;
        if from != to && self.contact(to)?.is_some() {
            return Err(StoreError::NameTaken(to.to_string()));
        }
        let n = self.exec(
            "UPDATE contacts SET name = ?2 WHERE name = ?1",
            params![from, to],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchContact(from.to_string()));
        }
        Ok(())
    }

    /// Removes the contact `name` with the messages exchanged with them and their read
    /// mark; returns their identity key. Should they write again, they are a stranger.
    pub fn remove_contact(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let contact = self
            .contact(name)?
            .ok_or_else(|| StoreError::NoSuchContact(name.to_string()))?;
        let key = *contact.address.key().as_bytes();
        self.atomically(|s| {
            s.exec("DELETE FROM contacts WHERE name = ?1", params![name])?;
            s.exec("DELETE FROM messages WHERE peer = ?1", params![&key[..]])?;
            s.exec("DELETE FROM read_marks WHERE peer = ?1", params![&key[..]])?;
            Ok::<_, StoreError>(())
        })?;
        Ok(key)
    }

    /// Ignores `key` from now on, whether or not it has written before: its messages never
    /// open a contact request.
    pub fn ignore_key(&self, key: &[u8; 32], now: u64) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO requests (key, first_seen, ignored) VALUES (?1, ?2, 1)
             ON CONFLICT (key) DO UPDATE SET ignored = 1",
            params![&key[..], now as i64],
        )?;
        Ok(())
    }

    /// Every ignored identity key, oldest first.
    pub fn ignored(&self) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM requests WHERE ignored = 1 ORDER BY first_seen")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|k| key32(k?)).collect()
    }
}

#[cfg(test)]
mod tests {
    use shallot_crypto::address::Address;
    use shallot_crypto::keys::IdentityKeypair;

    use super::*;
    use crate::ids::MessageId;

    fn dir() -> std::path::PathBuf {
        shallot_rt::scratch::path("ui-state")
    }

    fn someone() -> Address {
        Address::new(IdentityKeypair::generate(&mut rand::thread_rng()).public())
    }

    fn incoming(s: &Store, peer: &[u8; 32], n: u8) {
        let id = MessageId([n; 16]);
        assert!(s.insert_incoming(&id, peer, "hi", 10, 10).unwrap());
    }

    /// Read marks survive closing and reopening the store; only messages recorded after
    /// the mark count, and my own messages never do.
    #[test]
    fn unread_counts_survive_a_restart() {
        let dir = dir();
        let (bob, carol) = (someone(), someone());
        let (b, c) = (*bob.key().as_bytes(), *carol.key().as_bytes());
        {
            let s = Store::open(&dir).unwrap();
            s.create_identity(None, 1).unwrap();
            incoming(&s, &b, 1);
            incoming(&s, &b, 2);
            incoming(&s, &c, 3);
            s.insert_outgoing(&MessageId([9; 16]), &b, "mine", 11, 99)
                .unwrap();
            let mut counts = s.unread_counts().unwrap();
            counts.sort();
            let mut want = vec![(b, 2), (c, 1)];
            want.sort();
            assert_eq!(counts, want);
            s.mark_read(&b).unwrap();
            assert_eq!(s.unread_counts().unwrap(), vec![(c, 1)]);
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.unread_counts().unwrap(), vec![(c, 1)]);
        incoming(&s, &b, 4);
        let mut counts = s.unread_counts().unwrap();
        counts.sort();
        let mut want = vec![(b, 1), (c, 1)];
        want.sort();
        assert_eq!(counts, want);
        s.mark_read(&c).unwrap();
        s.mark_read(&b).unwrap();
        assert!(s.unread_counts().unwrap().is_empty());
        // Marking a conversation with nothing in it is harmless.
        s.mark_read(&[7; 32]).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store from before read marks: its history counts as read once upgraded, and what
    /// arrives afterwards does not.
    #[test]
    fn an_older_store_starts_with_its_history_read() {
        let dir = dir();
        let b = *someone().key().as_bytes();
        {
            let s = Store::open(&dir).unwrap();
            s.create_identity(None, 1).unwrap();
            incoming(&s, &b, 1);
            s.conn.execute_batch("DROP TABLE read_marks").unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert!(s.unread_counts().unwrap().is_empty());
        incoming(&s, &b, 2);
        assert_eq!(s.unread_counts().unwrap(), vec![(b, 1)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn contacts_are_renamed_removed_and_blocked() {
        let dir = dir();
        let s = Store::open(&dir).unwrap();
        s.create_identity(None, 1).unwrap();
        let (bob, carol) = (someone(), someone());
        s.add_contact("bob", &bob, 1).unwrap();
        s.add_contact("carol", &carol, 1).unwrap();
        assert!(matches!(
            s.rename_contact("bob", "carol"),
            Err(StoreError::NameTaken(_))
        ));
        assert!(matches!(
            s.rename_contact("nobody", "x"),
            Err(StoreError::NoSuchContact(_))
        ));
        assert!(matches!(
            s.rename_contact("bob", " "),
            Err(StoreError::BadName)
        ));
        s.rename_contact("bob", "robert").unwrap();
        assert_eq!(s.contact("robert").unwrap().map(|c| c.address), Some(bob));
        let b = *bob.key().as_bytes();
        incoming(&s, &b, 1);
        assert_eq!(s.remove_contact("robert").unwrap(), b);
        assert!(s.contact("robert").unwrap().is_none());
        assert!(s.history().unwrap().is_empty());
        assert!(s.ignored().unwrap().is_empty());
        s.ignore_key(&b, 5).unwrap();
        s.ignore_key(&b, 6).unwrap();
        assert!(s.is_ignored(&b).unwrap());
        assert_eq!(s.ignored().unwrap(), vec![b]);
        // An ignored stranger's next message does not reopen the request.
        s.note_request(&b, 7).unwrap();
        assert!(s.requests().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
