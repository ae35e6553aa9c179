//! Messaging figures (`README.md`, "Performance"): latency from send to arrival at a
//! subscribed recipient (p50, p99) and messages per second sustained, beside the limits under
//! them measured in the same run: a 3-hop circuit round trip, a durable store commit, and the
//! crypto bound of the sustained rate (the circuit crypto each message needs, on this
//! machine's cores).

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

use super::sched::WakeProbe;
use super::trace::Traced;
use super::{ms, quantile, BenchError, Figure};
use crate::testnet::Testnet;

/// One-shot circuits one message takes: one to each mailbox relay keeping the recipient's
/// mailbox (`docs/spec.md` §9.2, §9.3).
pub const CIRCUITS_PER_MESSAGE: usize = shallot_proto::placement::REPLICAS;

/// Complete ntor handshakes (client and relay side) one 3-hop circuit takes.
pub const NTOR_PER_CIRCUIT: usize = 3;

/// Onion-layer operations (a layer added or removed, by the client or a relay) one one-shot
/// 3-hop circuit takes to be built and to carry one request of `request_cells` cells and its
/// one-cell answer: EXTEND and EXTENDED for hop 2 (2 each way), for hop 3 (4 each way), then
/// 6 a cell to hop 3 and back.
pub fn layer_ops_per_circuit(request_cells: usize) -> usize {
    2 * 2 + 2 * 4 + 6 * (request_cells + 1)
}

/// Messages a second the circuit crypto allows on `cores` cores doing nothing else: each
/// message takes [`CIRCUITS_PER_MESSAGE`] circuits, each [`NTOR_PER_CIRCUIT`] complete ntor
/// handshakes (at `ntor_per_cpu_sec` a core) and [`layer_ops_per_circuit`] layer operations
/// (at `layers_per_cpu_sec` a core). Link encryption is not counted.
pub fn crypto_bound(
    ntor_per_cpu_sec: f64,
    layers_per_cpu_sec: f64,
    request_cells: usize,
    cores: f64,
) -> f64 {
    let per_circuit = NTOR_PER_CIRCUIT as f64 / ntor_per_cpu_sec
        + layer_ops_per_circuit(request_cells) as f64 / layers_per_cpu_sec;
    cores / (CIRCUITS_PER_MESSAGE as f64 * per_circuit)
}

/// Cells a deposit of a short text message's envelope takes to its mailbox relay, the third
/// hop.
pub fn deposit_cells() -> Result<usize, BenchError> {
    let msg = RelayMsg::Mailbox(shallot_proto::mailbox::MailboxMsg::Deposit {
        req: 1,
        mailbox: MailboxId([0; 32]),
        envelope: vec![0; super::deposits::TEXT_ENVELOPE_LEN],
        pow: None,
    });
    let bytes = msg.encode().map_err(BenchError::other)?;
    let cells = shallot_proto::relay_msg::fragment(&bytes, shallot_crypto::onion::body_len(3))
        .map_err(BenchError::other)?;
    Ok(cells.len())
}

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

/// As the chat does when the user starts typing: asks for the message's circuits and its
/// message key, and waits (a few seconds at most) for them, as a user's typing would. Typing
/// takes a person a second or more, time in which the client also refills the circuits it
/// keeps built ahead (those the message's circuits were made from): Enter is pressed once they
/// are back too, so that no build from before Enter competes with the message.
async fn type_to_bob(alice: &Messenger) -> Result<(), BenchError> {
    alice.composing("bob").map_err(BenchError::other)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alice.circuits().prepared().len() < CIRCUITS_PER_MESSAGE
        || !alice.key_ready_for("bob").map_err(BenchError::other)?)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    settle(alice).await;
    Ok(())
}

/// One message's time from send to arrival, and the CPU time this whole process (every node
/// of the test network) used meanwhile, where the process's CPU clock can be read.
struct Sent {
    latency: Duration,
    cpu: Option<Duration>,
}

impl Sent {
    /// The cores the process kept busy on average from send to arrival.
    fn cores(&self) -> Option<f64> {
        let cpu = self.cpu?;
        Some(cpu.as_secs_f64() / self.latency.as_secs_f64().max(1e-9))
    }
}

/// The median CPU time and the median of the cores kept busy over `sent`, as words for a
/// figure's note (empty when the process's CPU clock could not be read).
fn cpu_meanwhile(sent: &[Sent]) -> String {
    let mut cpu: Vec<Duration> = sent.iter().filter_map(|s| s.cpu).collect();
    let mut cores: Vec<f64> = sent.iter().filter_map(Sent::cores).collect();
    if cpu.is_empty() {
        return String::new();
    }
    cores.sort_by(f64::total_cmp);
    let machine = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "; from send to arrival this process, every node of the test network, used p50 \
         {:.2} ms of CPU: {:.2} of the machine's {machine} cores busy (p50)",
        ms(quantile(&mut cpu, 0.5)),
        cores[(cores.len() - 1) / 2]
    )
}

/// Sends one message from Alice to Bob now and waits for it: the time from send (the Enter
/// key, when it was typed first) to arrival, and the CPU the process used meanwhile.
async fn one_message(pair: &mut Pair, text: &str) -> Result<Sent, BenchError> {
    let cpu_before = super::cpu::process_cpu();
    let start = Instant::now();
    let sender = {
        let alice = pair.alice.clone();
        let text = text.to_string();
        tokio::spawn(async move { alice.send("bob", &text, OnFailure::Fail).await })
    };
    let at = arrival(&mut pair.events, text).await?;
    let cpu = super::cpu::process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
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
    Ok(Sent {
        latency: at - start,
        cpu,
    })
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

/// `shallot bench --trace`: sends `count` messages one at a time, each on a network at rest
/// and typed first (as from the chat), recording each one's steps; returns the latencies and
/// the paths of the median and the slowest message.
pub async fn trace(
    net: &Testnet,
    scratch: &Path,
    recorder: &super::trace::Recorder,
    names: &std::collections::HashMap<String, String>,
    count: usize,
) -> Result<(Traced, String), BenchError> {
    let mut pair = pair(net, scratch).await?;
    let mut runs = Vec::with_capacity(count);
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        type_to_bob(&pair.alice).await?;
        let start = Instant::now();
        recorder.start();
        let one = one_message(&mut pair, &format!("traced {i}")).await;
        let steps = recorder.stop();
        let one = one?;
        runs.push((one.latency, start, steps));
        sent.push(one);
    }
    Ok((Traced::of(runs, names), cpu_meanwhile(&sent)))
}

/// The figures.
pub async fn run(net: &Testnet, scratch: &Path, count: usize) -> Result<Vec<Figure>, BenchError> {
    let mut pair = pair(net, scratch).await?;
    let alice = pair.alice.clone();
    let mut typed = Vec::with_capacity(count);
    let mut cold = Vec::with_capacity(count);
    let probe = WakeProbe::start()?;
    for i in 0..count {
        // As from the chat, typed first; then as from the command line, with nothing ready.
        type_to_bob(&pair.alice).await?;
        typed.push(one_message(&mut pair, &format!("latency {i}")).await?);
        cold.push(one_message(&mut pair, &format!("cold {i}")).await?.latency);
    }
    let wakes = probe.finish().await?;
    let typed_cpu = cpu_meanwhile(&typed);
    let mut typed: Vec<Duration> = typed.iter().map(|s| s.latency).collect();
    let p50 = quantile(&mut typed, 0.5);
    let p99 = quantile(&mut typed, 0.99);
    let cold50 = quantile(&mut cold, 0.5);
    let cold99 = quantile(&mut cold, 0.99);

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

    // The crypto bound of that rate, from this run's handshake and layer rates.
    let (ntor, layers) = tokio::task::spawn_blocking(|| {
        let ntor = super::circuits::ntor_pairs_per_second(Duration::from_secs(1));
        super::circuits::layers_per_second(Duration::from_millis(500)).map(|l| (ntor, l))
    })
    .await
    .map_err(BenchError::other)??;
    let cells = deposit_cells()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bound = crypto_bound(ntor, layers, cells, cores as f64);

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
    let (commit, commit99) = first_of_commits(&scratch.join("commit"), 1).await?;
    let (shared, shared99) = first_of_commits(&scratch.join("commit"), 3).await?;
    Ok(vec![
        Figure::new(
            "message latency, send to arrival at a subscribed recipient, p50",
            ms(p50),
            "ms",
        )
        .note(format!("aim ≤ 1 ms; typed in the chat, which gets its 3 circuits and its message key ready meanwhile (and refills the circuits it keeps built ahead, as a second of typing allows), then timed from Enter: sealing, 3 hops out, a mailbox admitting it (pushed at once, before its store has it: the sender's answer waits for the durable commit, below, the recipient's copy does not), 3 hops back, opening; the sender's own commit runs beside the deposits{typed_cpu}")),
        Figure::new("message latency, send to arrival, p99", ms(p99), "ms").note(format!(
            "aim ≤ 5 ms; no durable commit on its path (the mailboxes push before their commits \
             end), while the 3 mailboxes, the recipient and the sender's record and bookkeeping \
             commit beside it on the same disk; one durable deposit by itself, p99: {:.2} ms; the authorities \
             measure each relay through a circuit once an hour, as on a production network \
             (not every 3-s period, which would put about a thousand times a production \
             relay's measurement traffic beside the sends); during the sends, {}",
            ms(commit99),
            wakes.describe()
        )),
        Figure::new(
            "message latency, sent with nothing ready (command line), p50",
            ms(cold50),
            "ms",
        )
        .note("as above, but each of the 3 circuits is finished (one EXTEND) after Enter, and the sender's session is saved to its disk before the message leaves"),
        Figure::new(
            "message latency, sent with nothing ready (command line), p99",
            ms(cold99),
            "ms",
        ),
        Figure::new(
            "messages per second sustained (8 senders, one recipient)",
            per_sec,
            "messages/s",
        )
        .note(format!(
            "{received} of {total} delivered; {:.0} % of the crypto bound of this run, {bound:.0}/s",
            100.0 * per_sec / bound.max(1e-9)
        )),
        Figure::new(
            "crypto bound of messages per second (circuit crypto only)",
            bound,
            "messages/s",
        )
        .note(format!(
            "on {cores} cores: a message takes {CIRCUITS_PER_MESSAGE} one-shot 3-hop circuits, each {NTOR_PER_CIRCUIT} ntor handshakes \
             (client and relay side, {ntor:.0}/CPU-s) and {} onion-layer operations ({layers:.0}/CPU-s; \
             a deposit is {cells} cells); link encryption, sealing and the stores not counted",
            layer_ops_per_circuit(cells)
        )),
        Figure::new("3-hop circuit round trip, 100 bytes, p50", ms(rtt50), "ms"),
        Figure::new("3-hop circuit round trip, 100 bytes, p99", ms(rtt99), "ms"),
        Figure::new(
            "mailbox store: one durable deposit (commit with fsync), p50",
            ms(commit),
            "ms",
        ),
        Figure::new(
            "mailbox store: one durable deposit (commit with fsync), p99",
            ms(commit99),
            "ms",
        )
        .note("one at a time, the test network at rest"),
        Figure::new(
            "deposit answer floor: one durable commit + one 3-hop round trip",
            ms(commit + rtt50),
            "ms",
        )
        .note(
            "the durable deposit above: a mailbox answers the sender (the message stored) only \
             once its copy is on its disk. The recipient's copy does not wait for that disk: \
             the mailbox pushes it as soon as it admits the deposit, beside the commit, so a \
             message's own floor is the 3-hop round trip above, plus sealing and opening. The \
             sender's session went to its disk while the user typed (its message key taken \
             ahead); sent with nothing ready, the message waits for that commit too, before \
             the envelope leaves",
        ),
        Figure::new(
            "mailbox stores: 3 durable deposits at once on this one disk, the first done, p50",
            ms(shared),
            "ms",
        )
        .note(format!(
            "p99 {:.2} ms; a message's 3 replicas commit at once, and here they share one \
             disk (on separate hosts each has its own: the single deposit above)",
            ms(shared99)
        )),
        Figure::new(
            "deposit answer floor on one disk: first of 3 concurrent commits + one 3-hop round trip",
            ms(shared + rtt50),
            "ms",
        )
        .note("the answer's floor above, with the replicas' commits sharing the disk as they do in this test network"),
    ])
}

/// The time until the first of `stores` relay stores, each in its own file on `dir`'s disk
/// and given one deposit at the same moment, has it on disk (its commit with fsync): p50 and
/// p99 of 200 rounds. With 1, one deposit's commit by itself; with 3, this is what a message's first mailbox waits for when its 3 replicas share one disk,
/// as in the test network here (on separate hosts each has its own).
async fn first_of_commits(dir: &Path, stores: usize) -> Result<(Duration, Duration), BenchError> {
    shallot_crypto::keyfile::ensure_private_dir(dir).map_err(BenchError::other)?;
    let stores = (0..stores)
        .map(|k| {
            shallot_relay::mailbox::store::Store::open(
                &dir.join(format!("m{k}-{stores}.db")),
                Default::default(),
            )
            .map_err(BenchError::other)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut times = Vec::new();
    for i in 0..200u32 {
        let start = Instant::now();
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let mut deposits = tokio::task::JoinSet::new();
        for store in &stores {
            let store = store.clone();
            deposits.spawn(async move {
                store
                    .deposit(MailboxId([1; 32]), EnvelopeId(id), vec![0; 600], 1)
                    .await
            });
        }
        let mut first = true;
        // The others finish before the next round begins.
        while let Some(done) = deposits.join_next().await {
            done.map_err(BenchError::other)?
                .map_err(BenchError::other)?;
            if first {
                times.push(start.elapsed());
                first = false;
            }
        }
    }
    Ok((quantile(&mut times, 0.5), quantile(&mut times, 0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_operations_of_a_circuit() {
        // 4 for hop 2, 8 for hop 3, then a one-cell request and its answer, 6 each.
        assert_eq!(layer_ops_per_circuit(1), 24);
        assert_eq!(layer_ops_per_circuit(2), 30);
    }

    #[test]
    fn crypto_bound_arithmetic() {
        // 3 circuits × (3 handshakes at 1,000/s + 24 layers at 24,000/s) = 12 ms a message
        // of one core: 2 cores send 166.7 a second.
        let bound = crypto_bound(1_000.0, 24_000.0, 1, 2.0);
        assert!((bound - 2.0 / 0.012).abs() < 1e-6, "{bound}");
        // Twice the cores, twice the bound; free layers leave the handshakes.
        assert!((crypto_bound(1_000.0, 24_000.0, 1, 4.0) - 2.0 * bound).abs() < 1e-6);
        assert!((crypto_bound(1_000.0, f64::INFINITY, 1, 1.0) - 1_000.0 / 9.0).abs() < 1e-6);
    }

    #[test]
    fn a_text_message_deposit_fits_in_two_cells() {
        let cells = deposit_cells().unwrap();
        assert!((1..=2).contains(&cells), "{cells}");
    }
}
