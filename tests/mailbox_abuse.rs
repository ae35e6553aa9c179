//! Floods against a mailbox relay (issue 12, item 4; `docs/spec.md` §9.7), each against a real
//! relay on loopback: deposits to random ids, bundle puts with throw-away keys, one known
//! user's mailbox filled, one circuit's request flood, and a fetch of a mailbox larger than
//! the relay's memory budget. In each, the flood is refused with a clear status, an honest
//! client's request still succeeds (solving the relay's puzzle when asked), and the cells the
//! relay counts in memory stay within its budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use shallot_client::mailbox::{MailboxError, MailboxLink};
use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::keys::IdentityKeypair;
use shallot_net::{Circuit, HopNum};
use shallot_proto::cell::CELL_LEN;
use shallot_proto::mailbox::{kind, MailboxId, MailboxMsg, Status, MAX_ENVELOPE_LEN};
use shallot_proto::relay_msg::RelayMsg;
use shallot_relay::mailbox::admission::{AdmissionLimits, CircuitLimits};
use shallot_relay::mailbox::PAGE_BYTES;
use shallot_relay::RelayConfig;

const WAIT: Duration = Duration::from_secs(30);
/// The relays' memory budget in these tests: 4 MiB (about 8,000 cells).
const BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// Small rate limits, so that a flood of a few hundred requests reaches them.
fn tune(c: &mut RelayConfig) {
    c.mailbox = true;
    c.limits.queue_memory_bytes = BUDGET_BYTES;
    c.mailbox_limits.admission = AdmissionLimits {
        deposits: (5.0, 60.0),
        // Slow refills keep the counts below exact whatever the machine's load.
        mailbox_deposits: (0.01, 30.0),
        new_mailboxes: (0.01, 20.0),
        bundle_puts: (0.01, 20.0),
        min_difficulty: 10,
        ..AdmissionLimits::default()
    };
}

fn key() -> BlindedKeypair {
    let id = IdentityKeypair::generate(&mut rand::thread_rng());
    BlindedKeypair::derive(&id, 1, 86_400).unwrap()
}

fn mailbox_of(k: &BlindedKeypair) -> MailboxId {
    MailboxId(k.public().to_bytes())
}

async fn link(relay: &TestRelay) -> Arc<MailboxLink> {
    let circ = Circuit::create(relay.channel().await, &relay.hop(), WAIT)
        .await
        .unwrap();
    MailboxLink::new(Arc::new(circ), relay.handle.id())
}

/// Runs `work` while sampling the cells the relay counts as held; returns its output and the
/// peak, checked against the budget.
async fn within_budget<T>(relay: &TestRelay, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut peak = 0;
    let out = loop {
        peak = peak.max(relay.handle.queued_cells());
        tokio::select! {
            out = &mut work => break out,
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
    };
    let cap = BUDGET_BYTES / CELL_LEN;
    assert!(peak <= cap, "{peak} cells held, over the budget of {cap}");
    out
}

/// Sends `msgs` over `circuits` circuits of their own (as many as a flooder likes), all at
/// once, and counts the answers' statuses.
async fn flood(relay: &TestRelay, circuits: usize, msgs: Vec<MailboxMsg>) -> HashMap<Status, u32> {
    let chan = relay.channel().await;
    let per = msgs.len().div_ceil(circuits);
    let mut tasks = Vec::new();
    let mut msgs = msgs.into_iter();
    for _ in 0..circuits {
        let batch: Vec<MailboxMsg> = msgs.by_ref().take(per).collect();
        let circ = Circuit::create(chan.clone(), &relay.hop(), WAIT)
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let n = batch.len();
            for m in batch {
                circ.send(HopNum::FIRST, &RelayMsg::Mailbox(m))
                    .await
                    .unwrap();
            }
            let mut statuses = HashMap::new();
            for _ in 0..n {
                match tokio::time::timeout(WAIT, circ.recv()).await {
                    Ok(Ok((_, RelayMsg::Mailbox(MailboxMsg::Result { status, .. })))) => {
                        *statuses.entry(status).or_insert(0u32) += 1
                    }
                    other => panic!("flood answer: {other:?}"),
                }
            }
            statuses
        }));
    }
    let mut all = HashMap::new();
    for t in tasks {
        for (s, n) in t.await.unwrap() {
            *all.entry(s).or_insert(0) += n;
        }
    }
    all
}

/// Stored, asked for a puzzle, refused as busy.
fn counts(statuses: &HashMap<Status, u32>) -> [u32; 3] {
    [Status::Ok, Status::PuzzleRequired, Status::Busy]
        .map(|s| statuses.get(&s).copied().unwrap_or(0))
}

fn deposit(req: u32, mailbox: MailboxId, len: usize) -> MailboxMsg {
    let mut envelope = vec![0u8; len];
    envelope[..8].copy_from_slice(&rand::random::<[u8; 8]>());
    MailboxMsg::Deposit {
        req,
        mailbox,
        envelope,
        pow: None,
    }
}

#[test]
fn a_flood_of_deposits_to_random_ids_asks_for_puzzles_and_honest_deposits_get_in() {
    rt().block_on(async {
        let relay = start_relay("abuse-ids", 221, tune).await;
        let msgs = (1..=400)
            .map(|i| deposit(i, MailboxId(rand::random()), 4096))
            .collect();
        let statuses = within_budget(&relay, flood(&relay, 10, msgs)).await;
        let [stored, asked, busy] = counts(&statuses);
        // 20 new ids in a burst, then hardly any.
        assert!(stored <= 21, "{statuses:?}");
        assert!(asked >= 300, "{statuses:?}");
        assert_eq!(
            stored + asked + busy,
            400,
            "every refusal is a clear status: {statuses:?}"
        );
        // An honest sender to a mailbox the relay has never seen is asked too, solves, and
        // its deposit is stored.
        let owner = key();
        let honest = link(&relay).await;
        let started = Instant::now();
        honest
            .deposit(mailbox_of(&owner), b"hello".to_vec(), WAIT)
            .await
            .unwrap();
        eprintln!("honest deposit with a puzzle: {:?}", started.elapsed());
        assert_eq!(relay.handle.stats().mailbox_puzzles_solved, 1);
        let got = link(&relay).await.fetch(&owner, WAIT).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"hello");
    });
}

#[test]
fn a_flood_of_bundle_puts_with_throwaway_keys_leaves_room_for_honest_owners() {
    rt().block_on(async {
        let relay = start_relay("abuse-bundles", 222, tune).await;
        let id = relay.handle.id();
        let msgs = (1..=300)
            .map(|req| {
                let k = key();
                let (expires, bundle) = (u64::MAX, vec![7u8; 1000]);
                let body = MailboxMsg::bundle_body(expires, &bundle);
                MailboxMsg::PutBundle {
                    req,
                    auth: shallot_client::mailbox::authorize(&k, &id, kind::PUT_BUNDLE, &body),
                    expires,
                    bundle,
                    pow: None,
                }
            })
            .collect();
        let statuses = within_budget(&relay, flood(&relay, 10, msgs)).await;
        let [stored, asked, busy] = counts(&statuses);
        assert!(stored <= 21, "{statuses:?}");
        assert!(asked >= 200, "{statuses:?}");
        assert_eq!(stored + asked + busy, 300, "{statuses:?}");
        // An honest owner publishes (solving the puzzle), and a sender finds the bundle.
        let owner = key();
        let expires = shallot_rt::unix_now() + 3600;
        link(&relay)
            .await
            .put_bundle(&owner, expires, b"my bundle".to_vec(), WAIT)
            .await
            .unwrap();
        let got = link(&relay)
            .await
            .get_bundle(mailbox_of(&owner), WAIT)
            .await
            .unwrap();
        assert_eq!(got.as_deref(), Some(&b"my bundle"[..]));
        assert_eq!(relay.handle.stats().mailbox_puzzles_solved, 1);
    });
}

#[test]
fn filling_a_known_users_mailbox_is_refused_and_honest_mail_still_arrives() {
    rt().block_on(async {
        let relay = start_relay("abuse-fill", 223, tune).await;
        let owner = key();
        let target = mailbox_of(&owner);
        let msgs = (1..=400).map(|i| deposit(i, target, 8192)).collect();
        let statuses = within_budget(&relay, flood(&relay, 10, msgs)).await;
        let [stored, asked, busy] = counts(&statuses);
        // 30 in a burst, then hardly any.
        assert!(stored <= 31, "{statuses:?}");
        assert!(asked >= 300, "{statuses:?}");
        assert_eq!(stored + asked + busy, 400, "{statuses:?}");
        let honest = link(&relay).await;
        honest
            .deposit(target, b"from a friend".to_vec(), WAIT)
            .await
            .unwrap();
        // The owner finds the flood's few and the honest one; the mailbox was never full.
        let got = link(&relay).await.fetch(&owner, WAIT).await.unwrap();
        assert_eq!(got.len() as u32, stored + 1);
        assert!(got.iter().any(|(_, e)| e == b"from a friend"));
        assert_eq!(relay.handle.stats().mailbox_puzzles_solved, 1);
    });
}

#[test]
fn one_circuit_cannot_take_every_place_and_others_are_served_meanwhile() {
    rt().block_on(async {
        let relay = start_relay("abuse-circ", 224, |c| {
            tune(c);
            c.mailbox_limits.circuit = CircuitLimits {
                in_flight: 8,
                rate: 5.0,
                burst: 40.0,
            };
        })
        .await;
        let msgs = (1..=200)
            .map(|req| MailboxMsg::GetBundle {
                req,
                mailbox: MailboxId(rand::random()),
            })
            .collect();
        let started = Instant::now();
        let statuses = flood(&relay, 1, msgs).await;
        let secs = started.elapsed().as_secs() as u32 + 1;
        let busy = statuses.get(&Status::Busy).copied().unwrap_or(0);
        let answered = statuses.get(&Status::NotFound).copied().unwrap_or(0);
        // A burst of 40, then 5 a second.
        assert!(answered <= 40 + 5 * secs, "{statuses:?} in {secs} s");
        assert!(busy >= 100, "{statuses:?}");
        assert_eq!(answered + busy, 200, "{statuses:?}");
        assert!(relay.handle.stats().mailbox_refused_busy >= u64::from(busy));
        // Another circuit is served at once; the flooding circuit again once its bucket
        // refills.
        let other = link(&relay).await;
        assert_eq!(
            other.get_bundle(MailboxId([1; 32]), WAIT).await.unwrap(),
            None
        );
    });
}

#[test]
fn a_fetch_of_a_mailbox_larger_than_the_budget_streams_within_it() {
    rt().block_on(async {
        let relay = start_relay("abuse-fetch", 225, |c| {
            tune(c);
            // Room for the mailbox: the flood tests above cover the limits.
            c.mailbox_limits.admission.mailbox_deposits = (100.0, 1000.0);
            c.mailbox_limits.admission.deposits = (100.0, 1000.0);
            c.mailbox_limits.circuit.rate = 1000.0;
            c.mailbox_limits.store.bytes_per_mailbox = 8 * 1024 * 1024;
        })
        .await;
        let owner = key();
        let target = mailbox_of(&owner);
        // 250 envelopes of 20 KiB: 5 MiB, more than the 4 MiB budget.
        let depositor = link(&relay).await;
        for _ in 0..250 {
            let mut envelope = vec![0u8; 20 * 1024];
            envelope[..16].copy_from_slice(&rand::random::<[u8; 16]>());
            depositor.deposit(target, envelope, WAIT).await.unwrap();
        }
        let before = relay.handle.stats();
        let fetcher = link(&relay).await;
        let got = within_budget(&relay, fetcher.fetch(&owner, WAIT * 4))
            .await
            .unwrap();
        assert_eq!(got.len(), 250);
        // What the relay loaded from its store at once: a page at a time, each within what
        // the budget counted for it, never the whole 5 MiB (which the budget above would not
        // see, as it counts only what is queued and the page held).
        let after = relay.handle.stats();
        let page_cap = (PAGE_BYTES + MAX_ENVELOPE_LEN) as u64;
        assert!(
            after.mailbox_fetch_page_peak <= page_cap,
            "{} bytes loaded at once, over a page of {page_cap}",
            after.mailbox_fetch_page_peak
        );
        let pages = after.mailbox_fetch_pages - before.mailbox_fetch_pages;
        let least = (250 * 20 * 1024u64).div_ceil(page_cap);
        assert!(
            pages >= least,
            "{pages} pages for 5 MiB, fewer than {least}"
        );
        // Each envelope came once, in full.
        let ids: std::collections::HashSet<_> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), 250);
        assert!(got.iter().all(|(_, e)| e.len() == 20 * 1024));
    });
}

/// A relay whose store stalls on its disk (here: another connection holds the database's
/// write lock, so each of the store's transactions waits for it, SQLite's 5 s, and fails)
/// while a flood of requests arrives. Each request is answered Busy once it has waited the
/// store's answer limit (1 s here), not when the stuck transaction ends: a request that waited
/// for it would be answered with the store's failure instead. Beyond the store's queue, a
/// request is refused at once. The relay keeps building circuits meanwhile, and once the
/// disk is back, the store serves again without waiting for the requests it gave up.
#[test]
fn a_store_stalled_on_its_disk_answers_busy_within_its_limit_and_recovers() {
    rt().block_on(async {
        let relay = start_relay("abuse-stall", 226, |c| {
            tune(c);
            c.mailbox_limits.store.answer_limit = Duration::from_secs(1);
            c.mailbox_limits.store.queued_jobs = 16;
        })
        .await;
        let owner = key();
        link(&relay)
            .await
            .deposit(mailbox_of(&owner), b"before".to_vec(), WAIT)
            .await
            .unwrap();

        let db = rusqlite::Connection::open(relay.dir.join("mailbox.db")).unwrap();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        let msgs = (1..=300)
            .map(|req| MailboxMsg::GetBundle {
                req,
                mailbox: MailboxId(rand::random()),
            })
            .collect();
        let statuses = within_budget(&relay, flood(&relay, 10, msgs)).await;
        assert_eq!(
            statuses.get(&Status::Busy).copied(),
            Some(300),
            "every request is answered Busy, none with the stuck transaction's failure: \
             {statuses:?}"
        );
        // An honest owner, on a circuit built now, is told the same.
        let stalled = link(&relay).await.fetch(&owner, WAIT).await;
        assert!(
            matches!(stalled, Err(MailboxError::Refused(Status::Busy))),
            "{stalled:?}"
        );

        db.execute_batch("ROLLBACK").unwrap();
        let got =
            eventually_served(|| async { link(&relay).await.fetch(&owner, WAIT).await }).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"before");
        link(&relay)
            .await
            .deposit(mailbox_of(&owner), b"after".to_vec(), WAIT)
            .await
            .unwrap();
        let got = link(&relay).await.fetch(&owner, WAIT).await.unwrap();
        assert_eq!(got.len(), 2, "both envelopes are held");
    });
}

/// Runs `request` until it is not refused as Busy (the store may still be working through
/// the transaction that waited for the disk), for at most [`WAIT`].
async fn eventually_served<T, F, Fut>(request: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, MailboxError>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match request().await {
            Ok(v) => return v,
            Err(MailboxError::Refused(Status::Busy)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    }
}
