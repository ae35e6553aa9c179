//! Anti-entropy between the holders of a mailbox, on the wire (`docs/spec.md` §9.6): the
//! I/O around [`shallot_proto::repair::reconcile`]'s rule.
//!
//! A holder sends each other holder, over a one-hop circuit of its own per mailbox, a SYNC
//! naming the envelope ids it holds there; the peer answers WANT with those it lacks (would
//! store if deposited) and has not seen its owner acknowledge; the holder then deposits those
//! on the same circuit. Every holder does this with every other, so each direction is
//! covered by the holder that has the envelopes. The peer learns only ids of a mailbox it
//! holds; the sender learns only which of its own envelopes the peer lacks, which a deposit
//! of each would tell it too. Nobody learns an owner.
//!
//! The answering side keeps in memory the ids its owners acknowledged ([`super::tombstones`]), so
//! that an acknowledged envelope still held elsewhere (a spare, which owners do not read, or a
//! replica whose acknowledgement was lost) does not come back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_net::{Circuit, ClientChannel, HopNum, HopSpec, NetError};
use shallot_proto::dir::RelayEntry;
use shallot_proto::mailbox::{EnvelopeId, MailboxId, MailboxMsg, MAX_SYNC_IDS};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::unix_now;

use super::push;
use super::store::Store;
use crate::stats::Stats;

/// What one anti-entropy round may still spend, in bytes, shared by its tasks.
pub(crate) struct Budget(AtomicU64);

impl Budget {
    /// A budget of `bytes`.
    pub(crate) fn new(bytes: u64) -> Self {
        Budget(AtomicU64::new(bytes))
    }

    /// Takes `n` bytes if that many are left.
    pub(crate) fn take(&self, n: u64) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// The bytes a SYNC naming `n` ids takes: type, req, mailbox, count, ids.
pub(crate) fn sync_bytes(n: usize) -> u64 {
    (1 + 4 + 32 + 2 + 16 * n) as u64
}

/// The ids one SYNC for a mailbox holding `ids` names: all of them if they fit, else a
/// window of [`MAX_SYNC_IDS`] starting at `start` (taken round), so that successive rounds
/// cover a large mailbox.
pub(crate) fn window(ids: &[EnvelopeId], start: usize) -> Vec<EnvelopeId> {
    if ids.len() <= MAX_SYNC_IDS {
        return ids.to_vec();
    }
    let start = start % ids.len();
    ids.iter()
        .cycle()
        .skip(start)
        .take(MAX_SYNC_IDS)
        .copied()
        .collect()
}

/// How long one exchange with one peer (link, circuits, summaries, pushes) may take.
pub(crate) const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// Runs the exchange for each of `list` (a mailbox and the ids to offer) with the relay
/// `entry`, one circuit per mailbox over one link. Returns how many envelopes it pushed.
pub(crate) async fn sync_with(
    store: &Store,
    stats: &Stats,
    entry: &RelayEntry,
    list: &[(MailboxId, Vec<EnvelopeId>)],
    budget: &Budget,
) -> Result<usize, NetError> {
    let chan = ClientChannel::connect(entry.address, &entry.link_key, SYNC_LIMIT)
        .await
        .map_err(NetError::from)?;
    let hop = HopSpec::from(entry);
    let mut pushed = 0;
    for (mailbox, ids) in list {
        if !budget.take(sync_bytes(ids.len())) {
            break;
        }
        match sync_mailbox(store, stats, &chan, &hop, *mailbox, ids, budget).await {
            Ok(n) => pushed += n,
            Err(e) => {
                tracing::debug!(to = %entry.id, "anti-entropy exchange failed: {e}");
                if chan.is_closed() {
                    break;
                }
            }
        }
    }
    chan.close();
    Ok(pushed)
}

/// One mailbox's exchange over a circuit of its own: SYNC, WANT, then the deposits.
async fn sync_mailbox(
    store: &Store,
    stats: &Stats,
    chan: &Arc<ClientChannel>,
    hop: &HopSpec,
    mailbox: MailboxId,
    ids: &[EnvelopeId],
    budget: &Budget,
) -> Result<usize, NetError> {
    let circ = Circuit::create(chan.clone(), hop, SYNC_LIMIT).await?;
    let result = exchange(store, stats, &circ, hop.id, mailbox, ids, budget).await;
    circ.close();
    result
}

async fn exchange(
    store: &Store,
    stats: &Stats,
    circ: &Circuit,
    to: RelayId,
    mailbox: MailboxId,
    ids: &[EnvelopeId],
    budget: &Budget,
) -> Result<usize, NetError> {
    let sync = MailboxMsg::Sync {
        req: 1,
        mailbox,
        ids: ids.to_vec(),
    };
    circ.send(HopNum::FIRST, &RelayMsg::Mailbox(sync)).await?;
    Stats::bump(&stats.mailbox_sync_sent);
    let want = loop {
        match circ.recv().await? {
            (_, RelayMsg::Mailbox(MailboxMsg::Want { req: 1, ids: want })) => break want,
            // Refused (no mailbox service, busy): nothing to push.
            (_, RelayMsg::Mailbox(MailboxMsg::Result { req: 1, .. })) => return Ok(0),
            _ => {}
        }
    };
    // Only ids this relay offered: a peer cannot make it send others.
    let want: Vec<EnvelopeId> = want.into_iter().filter(|id| ids.contains(id)).collect();
    if want.is_empty() {
        return Ok(0);
    }
    let bodies = store
        .bodies(mailbox, want, unix_now())
        .await
        .unwrap_or_default();
    let mut envelopes = Vec::new();
    for (_, envelope) in bodies {
        if !budget.take(envelope.len() as u64) {
            break;
        }
        envelopes.push(envelope);
    }
    // As a client would: puzzles solved when the peer's per-mailbox limit asks (§9.7).
    let pushed = push::deposit_all(circ, to, mailbox, envelopes, 2).await?;
    for _ in 0..pushed.taken {
        Stats::bump(&stats.mailbox_sync_pushed);
    }
    for _ in 0..pushed.solved {
        Stats::bump(&stats.mailbox_push_puzzles_solved);
    }
    Ok(pushed.taken)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn eid(i: u16) -> EnvelopeId {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&i.to_be_bytes());
        EnvelopeId(b)
    }

    #[test]
    fn windows_cover_a_large_mailbox_round_by_round() {
        let small: Vec<EnvelopeId> = (0..10).map(eid).collect();
        assert_eq!(window(&small, 7), small);
        let big: Vec<EnvelopeId> = (0..600).map(eid).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut start = 0;
        for _ in 0..3 {
            let w = window(&big, start);
            assert_eq!(w.len(), MAX_SYNC_IDS);
            seen.extend(w);
            start += MAX_SYNC_IDS;
        }
        assert_eq!(seen.len(), 600);
    }

    #[test]
    fn a_budget_is_never_overspent() {
        let b = Budget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41));
        assert!(b.take(40));
        assert!(!b.take(1));
        assert_eq!(sync_bytes(0), 39);
        assert_eq!(sync_bytes(MAX_SYNC_IDS), 39 + 4096);
    }
}
