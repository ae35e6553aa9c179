//! Messaging figures (`README.md`, "Performance"): latency from send to arrival at a
//! subscribed recipient (p50, p99) and messages per second sustained, beside the limits under
//! them measured in the same run: a 3-hop circuit round trip, and a durable store commit.

use shallot_net::HopNum;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerConfig, MessengerEvent};
use shallot_client::store::Store;
use shallot_proto::mailbox::{EnvelopeId, MailboxId};
use shallot_proto::relay_msg::RelayMsg;
use tokio::sync::mpsc;

use super::{ms, quantile, BenchError, Figure};
use crate::testnet::Testnet;

/// Deposit rate limits too high to be reached, for measuring what the network can carry.
pub fn unlimited_deposits() -> shallot_relay::mailbox::admission::AdmissionLimits {
    shallot_relay::mailbox::admission::AdmissionLimits {
        deposits: (1e9, 1e9),
        mailbox_deposits: (1e9, 1e9),
        new_mailboxes: (1e9, 1e9),
        bundle_puts: (1e9, 1e9),
        ..Default::default()
    }
}

async fn user(dir: &Path, net: &Testnet) -> Result<Arc<Messenger>, BenchError> {
    let store = Store::open(dir).map_err(BenchError::other)?;
    store.create_identity(None, 0).map_err(BenchError::other)?;
    drop(store);
    let m = Messenger::open(dir, net.network.clone(), MessengerConfig::default())
        .map_err(BenchError::other)?;
    m.connect().await.map_err(BenchError::other)?;
    Ok(m)
}

/// Waits for the incoming message whose text is `text`.
async fn arrival(
    events: &mut mpsc::UnboundedReceiver<MessengerEvent>,
    text: &str,
) -> Result<Instant, BenchError> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(MessengerEvent::Message(m))) if !m.outgoing && m.text == text => {
                return Ok(Instant::now())
            }
            Ok(Some(_)) => {}
            _ => return Err(BenchError::other(format!("{text:?} never arrived"))),
        }
    }
}

/// Alice and Bob, contacts of each other, Bob subscribed to his mailboxes, and their session
/// warmed up by a few messages; each keeps circuits built ahead, as the chat does.
struct Pair {
    alice: Arc<Messenger>,
    bob: Arc<Messenger>,
    /// Both users' circuit pools kept full while this lives.
    _ahead: [shallot_rt::AbortOnDrop<()>; 2],
    /// Bob's events.
    events: mpsc::UnboundedReceiver<MessengerEvent>,
    /// Bob's subscriptions, kept while this lives.
    _receiver: shallot_rt::AbortOnDrop<()>,
}

async fn pair(net: &Testnet, scratch: &Path) -> Result<Pair, BenchError> {
    let alice = user(&scratch.join("alice"), net).await?;
    let bob = user(&scratch.join("bob"), net).await?;
    alice
        .store()
        .add_contact("bob", &bob.address(), 0)
        .map_err(BenchError::other)?;
    bob.store()
        .add_contact("alice", &alice.address(), 0)
        .map_err(BenchError::other)?;
    let ahead = [
        alice.circuits().spawn_maintenance(),
        bob.circuits().spawn_maintenance(),
    ];
    let (tx, mut events) = mpsc::unbounded_channel();
    bob.set_events(tx);
    let receiver = bob.spawn_receiver();
    // Wait for Bob's subscriptions, then warm up the session and circuits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while bob.open_links().await < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..5 {
        let text = format!("warm-up {i}");
        alice
            .send("bob", &text, OnFailure::Fail)
            .await
            .map_err(BenchError::other)?;
        arrival(&mut events, &text).await?;
    }
    Ok(Pair {
        alice,
        bob,
        _ahead: ahead,
        events,
        _receiver: receiver,
    })
}

/// Sends one message from Alice to Bob and waits for it: the time from send to arrival.
async fn one_message(pair: &mut Pair, text: &str) -> Result<Duration, BenchError> {
    let start = Instant::now();
    let sender = {
        let alice = pair.alice.clone();
        let text = text.to_string();
        tokio::spawn(async move { alice.send("bob", &text, OnFailure::Fail).await })
    };
    let at = arrival(&mut pair.events, text).await?;
    sender
        .await
        .map_err(BenchError::other)?
        .map_err(BenchError::other)?;
    // What follows a message (Bob's acknowledgement deposited for Alice, both stores
    // scrubbing their logs) is let end before the next is sent, so that each is measured on a network
    // at rest rather than beside the last one's aftermath.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let owed = pair.bob.store().pending_acks().map(|a| a.is_empty());
        if owed.unwrap_or(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(shallot_client::store::group::SCRUB_IDLE * 2).await;
    Ok(at - start)
}

/// Waits (within a few seconds) until Alice's circuit manager has its circuits built ahead
/// of need, as it has on a network at rest.
async fn settle(alice: &Messenger) {
    let want = alice.circuits().config().preemptive;
    let deadline = Instant::now() + Duration::from_secs(5);
    while alice.circuits().ready() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `shallot bench --trace`: sends `count` messages one at a time, each on a network at rest,
/// recording each one's steps; returns the latencies and the trace of the median message.
pub async fn trace(
    net: &Testnet,
    scratch: &Path,
    recorder: &super::trace::Recorder,
    names: &std::collections::HashMap<String, String>,
    count: usize,
) -> Result<(Vec<Duration>, Vec<String>), BenchError> {
    let mut pair = pair(net, scratch).await?;
    let mut runs = Vec::with_capacity(count);
    for i in 0..count {
        settle(&pair.alice).await;
        let start = Instant::now();
        recorder.start();
        let latency = one_message(&mut pair, &format!("traced {i}")).await;
        let steps = recorder.stop();
        runs.push((latency?, start, steps));
    }
    runs.sort_by_key(|(latency, _, _)| *latency);
    let latencies = runs.iter().map(|(l, _, _)| *l).collect();
    let lines = match runs.get(count / 2) {
        Some((_, start, steps)) => super::trace::render(*start, steps, names),
        None => Vec::new(),
    };
    Ok((latencies, lines))
}

/// The figures.
pub async fn run(net: &Testnet, scratch: &Path, count: usize) -> Result<Vec<Figure>, BenchError> {
    let mut pair = pair(net, scratch).await?;
    let alice = pair.alice.clone();
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        latencies.push(one_message(&mut pair, &format!("latency {i}")).await?);
    }
    let p50 = quantile(&mut latencies, 0.5);
    let p99 = quantile(&mut latencies, 0.99);

    // Throughput: many messages in flight at once.
    let total = count * 2;
    let started = Instant::now();
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let alice = alice.clone();
            tokio::spawn(async move {
                for i in (t..total).step_by(8) {
                    let _ = alice
                        .send("bob", &format!("bulk {i}"), OnFailure::Fail)
                        .await;
                }
            })
        })
        .collect();
    let mut received = 0;
    while received < total {
        match tokio::time::timeout(Duration::from_secs(30), pair.events.recv()).await {
            Ok(Some(MessengerEvent::Message(m))) if !m.outgoing && m.text.starts_with("bulk ") => {
                received += 1
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let per_sec = received as f64 / started.elapsed().as_secs_f64();
    for s in senders {
        let _ = s.await;
    }
    drop(pair);

    // The limits under them: a 3-hop round trip on this network, and a durable commit.
    let circ = alice
        .circuits()
        .build(None)
        .await
        .map_err(BenchError::other)?;
    let mut rtts = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        circ.circuit
            .send(HopNum::THIRD, &RelayMsg::Data(vec![0; 100]))
            .await
            .map_err(BenchError::other)?;
        circ.circuit.recv().await.map_err(BenchError::other)?;
        rtts.push(start.elapsed());
    }
    let rtt50 = quantile(&mut rtts, 0.5);
    let rtt99 = quantile(&mut rtts, 0.99);
    let commit = commit_time(&scratch.join("commit")).await?;
    Ok(vec![
        Figure::new(
            "message latency, send to arrival at a subscribed recipient, p50",
            ms(p50),
            "ms",
        )
        .note("aim < 5 ms; each message: 3 hops out, a durable commit on 3 mailboxes, 3 hops back"),
        Figure::new("message latency, send to arrival, p99", ms(p99), "ms").note("aim < 50 ms"),
        Figure::new(
            "messages per second sustained (8 senders, one recipient)",
            per_sec,
            "messages/s",
        )
        .note(format!("{received} of {total} delivered")),
        Figure::new("3-hop circuit round trip, 100 bytes, p50", ms(rtt50), "ms"),
        Figure::new("3-hop circuit round trip, 100 bytes, p99", ms(rtt99), "ms"),
        Figure::new(
            "mailbox store: one durable deposit (commit with fsync), p50",
            ms(commit),
            "ms",
        ),
        Figure::new(
            "message latency floor: two durable commits in a row + one 3-hop round trip",
            ms(commit * 2 + rtt50),
            "ms",
        )
        .note(
            "the durable deposit above, twice: the sender's session must be on its disk \
             before the envelope leaves, the mailbox's copy on its disk before it is pushed; \
             out to the mailbox and back to the recipient is one round trip",
        ),
    ])
}

/// The time one deposit takes in the relay's store, including its commit to disk.
async fn commit_time(dir: &Path) -> Result<Duration, BenchError> {
    shallot_crypto::keyfile::ensure_private_dir(dir).map_err(BenchError::other)?;
    let store = shallot_relay::mailbox::store::Store::open(&dir.join("m.db"), Default::default())
        .map_err(BenchError::other)?;
    let mut times = Vec::new();
    for i in 0..200u32 {
        let start = Instant::now();
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        store
            .deposit(MailboxId([1; 32]), EnvelopeId(id), vec![0; 600], 1)
            .await
            .map_err(BenchError::other)?;
        times.push(start.elapsed());
    }
    Ok(quantile(&mut times, 0.5))
}
