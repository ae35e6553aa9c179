//! What strangers may make the store hold (`docs/spec.md` §10.7). Anyone who knows a user's
//! address can write to them: each unknown identity becomes a contact request with its
//! messages and a ratchet session. Without bounds a flood of new identities fills the disk.
//! Here strangers (identities that are not contacts) are bounded in number, and their
//! messages in count and bytes; past a bound the oldest go first, and the number dropped is
//! kept for the user to be told. Contacts' messages and sessions are never touched.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// Bounds on what strangers may make the store hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrangerLimits {
    /// Strangers kept (open or ignored contact requests); past it the one first seen longest
    /// ago is dropped with its messages and sessions.
    pub max_strangers: usize,
    /// Messages from strangers kept, all strangers together; past it the oldest are dropped.
    pub max_messages: usize,
    /// Bytes of text from strangers kept, all strangers together; past it the oldest
    /// messages are dropped.
    pub max_bytes: usize,
}

impl Default for StrangerLimits {
    /// 100 strangers, 1,000 of their messages, 1 MiB of their text.
    fn default() -> Self {
        StrangerLimits {
            max_strangers: 100,
            max_messages: 1_000,
            max_bytes: 1 << 20,
        }
    }
}

/// The `kv` key counting what was dropped and not yet told.
const DROPPED_KEY: &str = "strangers_dropped";

/// Identities that are not contacts, as an SQL condition on a `peer` or `key` column.
const NOT_CONTACT: &str = "NOT IN (SELECT key FROM contacts)";

impl Store {
    /// Brings what strangers have made the store hold back within `limits`: drops the
    /// strangers seen longest ago, then the oldest of their messages, and the sessions of
    /// strangers without a request (whose messages were all acknowledgements). Returns how
    /// many messages were dropped, which are also added to the count
    /// [`Store::take_dropped_from_strangers`] reports.
    pub fn limit_strangers(&self, limits: &StrangerLimits) -> Result<u64, StoreError> {
        self.atomically(|s| {
            let mut dropped = 0u64;
            let strangers: Vec<Vec<u8>> = {
                let mut stmt = s.conn.prepare_cached(&format!(
                    "SELECT key FROM requests WHERE key {NOT_CONTACT}
                     ORDER BY first_seen DESC, rowid DESC"
                ))?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for key in strangers.iter().skip(limits.max_strangers) {
                dropped += s.exec(
                    "DELETE FROM messages WHERE peer = ?1 AND outgoing = 0",
                    params![key],
                )? as u64;
                for table in [
                    "requests WHERE key",
                    "sessions WHERE peer",
                    "pending_acks WHERE peer",
                ] {
                    s.exec(&format!("DELETE FROM {table} = ?1"), params![key])?;
                }
            }
            let messages: Vec<(i64, Vec<u8>, Vec<u8>, i64)> = {
                let mut stmt = s.conn.prepare_cached(&format!(
                    "SELECT rowid, id, peer, length(CAST(text AS BLOB)) FROM messages
                     WHERE outgoing = 0 AND peer {NOT_CONTACT}
                     ORDER BY received_at DESC, rowid DESC"
                ))?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let (mut count, mut bytes) = (0usize, 0usize);
            for (rowid, id, peer, len) in messages {
                count += 1;
                bytes = bytes.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                if count > limits.max_messages || bytes > limits.max_bytes {
                    s.exec("DELETE FROM messages WHERE rowid = ?1", params![rowid])?;
                    s.exec(
                        "DELETE FROM pending_acks WHERE peer = ?1 AND id = ?2",
                        params![peer, id],
                    )?;
                    dropped += 1;
                }
            }
            s.exec(
                &format!(
                    "DELETE FROM sessions WHERE peer {NOT_CONTACT}
                     AND peer NOT IN (SELECT key FROM requests)"
                ),
                [],
            )?;
            if dropped > 0 {
                let before = s.dropped_from_strangers()?;
                s.set(DROPPED_KEY, &before.saturating_add(dropped).to_le_bytes())?;
            }
            Ok(dropped)
        })
    }

    fn dropped_from_strangers(&self) -> Result<u64, StoreError> {
        let v: Option<Vec<u8>> = self
            .one(
                "SELECT value FROM kv WHERE key = ?1",
                params![DROPPED_KEY],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map_or(0, u64::from_le_bytes))
    }

    /// How many messages from strangers were dropped since the last call (for `inbox` to
    /// tell the user), and resets the count.
    pub fn take_dropped_from_strangers(&self) -> Result<u64, StoreError> {
        self.atomically(|s| {
            let n = s.dropped_from_strangers()?;
            if n > 0 {
                s.exec("DELETE FROM kv WHERE key = ?1", params![DROPPED_KEY])?;
            }
            Ok(n)
        })
    }
}

/// The notice shown when messages from strangers were dropped.
pub fn dropped_notice(n: u64) -> String {
    format!(
        "{n} message{} from people who are not your contacts {} dropped: too many strangers wrote to you (the oldest go first)",
        if n == 1 { "" } else { "s" },
        if n == 1 { "was" } else { "were" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;
    use crate::store::SessionRow;
    use shallot_crypto::address::Address;
    use shallot_crypto::keys::IdentityKeypair;
    use zeroize::Zeroizing;

    fn store() -> Store {
        let dir = shallot_rt::scratch::path("strangers");
        let s = Store::open(&dir).unwrap();
        s.create_identity(None, 1).unwrap();
        s
    }

    fn session(s: &Store, peer: &[u8; 32], t: u64) {
        let row = SessionRow {
            sid: [t as u8; 32],
            state: Zeroizing::new(vec![1; 100]),
            start: None,
        };
        s.save_session(peer, &row, t).unwrap();
    }

    fn count(s: &Store, sql: &str) -> i64 {
        s.one(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_stranger_flood_stays_within_the_limits_and_spares_contacts() {
        let s = store();
        let limits = StrangerLimits {
            max_strangers: 5,
            max_messages: 20,
            max_bytes: 20 * 100,
        };
        let friend = Address::new(IdentityKeypair::generate(&mut rand::thread_rng()).public());
        s.add_contact("friend", &friend, 1).unwrap();
        let fk = *friend.key().as_bytes();
        for i in 0..50u64 {
            s.insert_incoming(
                &MessageId([0xF0, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
                &fk,
                "from a friend",
                1,
                i,
            )
            .unwrap();
        }
        session(&s, &fk, 1);
        // 40 strangers, each with a session and 3 messages of 90 bytes.
        let mut dropped = 0;
        for i in 0..40u64 {
            let peer = [i as u8 + 1; 32];
            s.note_request(&peer, 100 + i).unwrap();
            session(&s, &peer, 100 + i);
            for j in 0..3u8 {
                let id = MessageId([i as u8, j, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                s.insert_incoming(&id, &peer, &"x".repeat(90), 100, 100 + i)
                    .unwrap();
                s.queue_ack(&peer, &id).unwrap();
            }
            dropped += s.limit_strangers(&limits).unwrap();
        }
        let strangers = format!("FROM messages WHERE peer {NOT_CONTACT}");
        assert_eq!(count(&s, "SELECT count(*) FROM requests"), 5);
        assert!(count(&s, &format!("SELECT count(*) {strangers}")) <= 15);
        assert!(count(&s, &format!("SELECT sum(length(text)) {strangers}")) <= 2000);
        assert_eq!(
            count(&s, "SELECT count(*) FROM sessions"),
            6,
            "the five strangers kept and the friend"
        );
        assert_eq!(count(&s, "SELECT count(*) FROM pending_acks"), 15);
        // The newest strangers are the ones kept.
        let kept = s.requests().unwrap();
        assert_eq!(kept.first(), Some(&[36u8; 32]));
        assert_eq!(kept.last(), Some(&[40u8; 32]));
        // The friend's messages are all there.
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM messages WHERE text = 'from a friend'"
            ),
            50
        );
        assert_eq!(dropped, 40 * 3 - 15);
        assert_eq!(s.take_dropped_from_strangers().unwrap(), dropped);
        assert_eq!(s.take_dropped_from_strangers().unwrap(), 0, "told once");
    }

    #[test]
    fn bytes_bound_messages_even_under_the_count() {
        let s = store();
        let limits = StrangerLimits {
            max_strangers: 10,
            max_messages: 100,
            max_bytes: 1000,
        };
        let peer = [9u8; 32];
        s.note_request(&peer, 1).unwrap();
        for i in 0..10u8 {
            s.insert_incoming(
                &MessageId([i; 16]),
                &peer,
                &"y".repeat(300),
                1,
                u64::from(i),
            )
            .unwrap();
        }
        assert_eq!(s.limit_strangers(&limits).unwrap(), 7);
        let left: Vec<_> = s.history().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(
            left,
            vec![MessageId([7; 16]), MessageId([8; 16]), MessageId([9; 16])]
        );
    }

    #[test]
    fn sessions_of_strangers_without_requests_go() {
        let s = store();
        session(&s, &[5; 32], 1);
        assert_eq!(s.limit_strangers(&StrangerLimits::default()).unwrap(), 0);
        assert_eq!(count(&s, "SELECT count(*) FROM sessions"), 0);
        assert_eq!(s.take_dropped_from_strangers().unwrap(), 0);
    }

    #[test]
    fn the_notice_reads_well() {
        assert!(dropped_notice(1).starts_with("1 message from"));
        assert!(dropped_notice(3)
            .contains("3 messages from people who are not your contacts were dropped"));
    }
}
