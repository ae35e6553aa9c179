//! A relay depositing envelopes at another relay, for repair and anti-entropy
//! (`docs/spec.md` §9.6, §9.7): as an honest client does, under the same limits.
//!
//! Repair pushes are ordinary deposits: the receiving relay admits them by the same rate
//! limits as anyone's, so a flood cannot pass itself off as repair. A large mailbox exceeds
//! the per-mailbox burst, so the pusher does what an honest client does when asked: it solves
//! the puzzle the receiver names (hashcash of a few thousand hashes at the usual difficulty)
//! and sends the deposit again with the solution, and it waits and resends when its circuit's
//! own limits answer Busy. A whole mailbox then moves in one round instead of a burst per
//! round. It keeps at most [`WINDOW`] deposits in flight, under the per-circuit limit.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_net::{Circuit, HopNum, NetError};
use shallot_proto::mailbox::{kind, MailboxId, MailboxMsg, Status};
use shallot_proto::pow::{self, Pow, MAX_CLIENT_DIFFICULTY};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::unix_now;

/// Deposits in flight at once on one push circuit: half the default per-circuit limit.
pub(crate) const WINDOW: usize = 16;

/// Times one envelope is sent again with a fresh solution (the difficulty may rise between
/// the ask and the answer), as a client does.
const PUZZLE_TRIES: u8 = 3;

/// Times one envelope is sent again after its circuit's limits answered Busy.
const BUSY_TRIES: u8 = 50;

/// The wait before sending again after Busy (the default circuit rate refills a token in
/// 50 ms).
const BUSY_WAIT: Duration = Duration::from_millis(100);

struct Item {
    envelope: Vec<u8>,
    pow: Option<Pow>,
    puzzles: u8,
    busy: u8,
}

/// What one push achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Envelopes the receiver answered Ok to (stored, or held already).
    pub(crate) taken: usize,
    /// Envelopes newly stored there (RESULT count 1).
    pub(crate) stored: usize,
    /// Puzzles solved to get them in.
    pub(crate) solved: usize,
}

/// Deposits `envelopes` of `mailbox` at relay `to`, the first hop of `circ`: requests
/// numbered from `first_req`, at most [`WINDOW`] in flight, each puzzle asked for solved (up
/// to [`MAX_CLIENT_DIFFICULTY`] bits) and each Busy waited out. Envelopes refused for good
/// (full, too large, a puzzle too hard, a solution stamped outside the receiver's window)
/// are given up. The caller bounds the time.
pub(crate) async fn deposit_all(
    circ: &Circuit,
    to: RelayId,
    mailbox: MailboxId,
    envelopes: Vec<Vec<u8>>,
    first_req: u32,
) -> Result<Pushed, NetError> {
    let mut items: Vec<Item> = envelopes
        .into_iter()
        .map(|envelope| Item {
            envelope,
            pow: None,
            puzzles: 0,
            busy: 0,
        })
        .collect();
    let mut queue: VecDeque<usize> = (0..items.len()).collect();
    let mut in_flight: HashMap<u32, usize> = HashMap::new();
    let mut next_req = first_req;
    let mut done = Pushed::default();
    loop {
        while in_flight.len() < WINDOW {
            let Some(i) = queue.pop_front() else { break };
            let item = &items[i];
            let msg = RelayMsg::Mailbox(MailboxMsg::Deposit {
                req: next_req,
                mailbox,
                envelope: item.envelope.clone(),
                pow: item.pow,
            });
            circ.send(HopNum::FIRST, &msg).await?;
            in_flight.insert(next_req, i);
            next_req = next_req.wrapping_add(1);
        }
        if in_flight.is_empty() {
            return Ok(done);
        }
        let (req, status, count) = match circ.recv().await? {
            (
                _,
                RelayMsg::Mailbox(MailboxMsg::Result {
                    req, status, count, ..
                }),
            ) => (req, status, count),
            _ => continue,
        };
        let Some(i) = in_flight.remove(&req) else {
            continue;
        };
        let item = &mut items[i];
        match status {
            Status::Ok => {
                done.taken += 1;
                if count > 0 {
                    done.stored += 1;
                }
            }
            Status::PuzzleRequired if item.puzzles < PUZZLE_TRIES => {
                let Some(bits) = u8::try_from(count)
                    .ok()
                    .filter(|b| *b <= MAX_CLIENT_DIFFICULTY)
                else {
                    continue;
                };
                item.puzzles += 1;
                item.pow = Some(solve(to, mailbox, item.envelope.clone(), bits).await);
                done.solved += 1;
                queue.push_back(i);
            }
            Status::Busy if item.busy < BUSY_TRIES => {
                item.busy += 1;
                tokio::time::sleep(BUSY_WAIT).await;
                queue.push_back(i);
            }
            _ => {}
        }
    }
}

/// Solves relay `to`'s puzzle of `bits` for depositing `body` into `mailbox`, off the event
/// loop.
async fn solve(to: RelayId, mailbox: MailboxId, body: Vec<u8>, bits: u8) -> Pow {
    let salt: [u8; 8] = rand::random();
    let now = unix_now();
    let fallback = Pow {
        timestamp: now,
        nonce: [0; 16],
    };
    tokio::task::spawn_blocking(move || {
        pow::solve(&to, kind::DEPOSIT, &mailbox.0, &body, bits, now, salt)
    })
    .await
    .unwrap_or(fallback)
}
