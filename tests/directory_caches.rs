//! Relays as directory caches (`docs/spec.md` §5.13), end to end on loopback: 3 authorities
//! and 4 relays. A client that has bootstrapped from the authorities fetches its next
//! consensus from its guard and not from any authority; a guard that serves a forged, a
//! stale, a truncated, an oversized or no consensus is refused with a clear reason, and the
//! client falls back to the authorities and keeps working. A client started again after its
//! cached consensus expired is sent a diff from it by its guard, and no authority sees it.
//!
//! The authorities' view of the client is measured where they would see it: the client's
//! network file points at a counting TCP forwarder in front of each authority, so every
//! HTTP request the client makes to an authority is one connection counted there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_directory::fetch::{http_request, Method};
use shallot_directory::network::NetworkFile;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_net::HopNum;
use shallot_proto::dir::Consensus;
use shallot_proto::relay_msg::RelayMsg;
use shallot_relay::misbehave::Misbehaviour;
use shallot_rt::unix_now;
use tokio::net::{TcpListener, TcpStream};

struct Net {
    net: Testnet,
    /// The network file with each authority behind a counting forwarder.
    counted: NetworkFile,
    /// Connections the forwarders took: the client's requests to authorities.
    requests: Arc<AtomicU64>,
    /// One test at a time changes how the relays behave.
    serial: tokio::sync::Mutex<()>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("dir-caches"));
            options.relays = 4;
            options.first_octet = 240;
            let net = Testnet::start(options).await.unwrap();
            net.wait_ready(Duration::from_secs(60)).await.unwrap();
            let requests = Arc::new(AtomicU64::new(0));
            let mut counted = net.network.clone();
            for auth in &mut counted.authorities {
                auth.address = forwarder(auth.address, requests.clone()).await;
            }
            Net {
                net,
                counted,
                requests,
                serial: tokio::sync::Mutex::new(()),
            }
        })
    })
}

/// A TCP forwarder to `target` on an ephemeral loopback port, counting connections.
async fn forwarder(target: std::net::SocketAddr, count: Arc<AtomicU64>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// A client bootstrapped from the authorities (through the forwarders), with its circuit
/// manager, which makes its guards its directory caches.
async fn client(n: &Net, name: &str) -> (Arc<NetDir>, Arc<CircuitManager>) {
    let data = scratch(name);
    let dir = Arc::new(NetDir::new(n.counted.clone(), &data));
    let before = n.requests.load(Ordering::SeqCst);
    dir.bootstrap().await.unwrap();
    assert!(
        n.requests.load(Ordering::SeqCst) > before,
        "the first bootstrap goes to the authorities"
    );
    let mgr = CircuitManager::new(dir.clone(), data, CircuitConfig::default());
    (dir, mgr)
}

/// Waits until every relay's directory cache serves a consensus newer than `after`.
async fn caches_newer_than(n: &Net, after: u64) {
    eventually(
        "every relay's cache to hold a newer consensus",
        Duration::from_secs(60),
        || async {
            (0..n.net.relay_count())
                .all(|i| n.net.relay(i).unwrap().stats().dir_cache_valid_after > after)
                .then_some(())
        },
    )
    .await;
}

fn answers(n: &Net) -> (u64, u64) {
    (0..n.net.relay_count()).fold((0, 0), |(full, diff), i| {
        let s = n.net.relay(i).unwrap().stats();
        (full + s.dir_answers_full, diff + s.dir_answers_diff)
    })
}

#[test]
fn a_bootstrapped_client_fetches_its_next_consensus_from_its_guard_not_an_authority() {
    let n = net();
    rt().block_on(async {
        let _one = n.serial.lock().await;
        let (dir, _mgr) = client(n, "dir-caches-honest").await;
        let held = dir.consensus().unwrap().valid_after;
        caches_newer_than(n, held).await;
        let (full_before, diff_before) = answers(n);
        let before = n.requests.load(Ordering::SeqCst);
        let next = dir.refresh().await.unwrap();
        assert!(next.valid_after > held, "a newer consensus");
        assert_eq!(
            n.requests.load(Ordering::SeqCst),
            before,
            "no authority was asked"
        );
        assert_eq!(dir.cache_stats().from_guards.load(Ordering::SeqCst), 1);
        // The guard's answer is counted in bytes (`shallot bench --many` reports them).
        assert!(dir.cache_stats().bytes.load(Ordering::SeqCst) > 0);
        assert_eq!(dir.last_guard_failure(), None);
        let (full, diff) = answers(n);
        assert_eq!(
            (full - full_before) + (diff - diff_before),
            1,
            "one relay answered"
        );
        println!(
            "guard answered with {}",
            if diff > diff_before {
                "a diff"
            } else {
                "the whole consensus"
            }
        );
    });
}

/// A client started again after its cached consensus expired holds it as the base for a
/// diff and still asks its guard (the consensus is less than a day old): the guard answers
/// with the diff from it, computed from its bases of the last day, and no authority sees the
/// client come back. The same for the real binary: `shallot inbox` run again after its
/// consensus expired asks no authority.
#[test]
fn a_client_back_after_its_consensus_expired_gets_a_diff_from_its_guard() {
    let n = net();
    rt().block_on(async {
        let _one = n.serial.lock().await;
        let data = scratch("dir-caches-back-later");
        let first = Arc::new(NetDir::new(n.counted.clone(), &data));
        let mgr = CircuitManager::new(first.clone(), data.clone(), CircuitConfig::default());
        let held = first.bootstrap().await.unwrap();
        // Its guards are chosen and saved with its first circuit.
        mgr.build(None).await.unwrap();
        drop((first, mgr));
        // The binary, as a user runs it, through the same counting forwarders.
        let user = scratch("dir-caches-back-later-cli");
        let network_file = user.join("network.toml");
        std::fs::write(&network_file, n.counted.to_toml()).unwrap();
        assert!(shallot_cli(&user, &["id", "new"]).await.0);
        let before = n.requests.load(Ordering::SeqCst);
        let (ok, _, err) = shallot_cli(&user, &["inbox", "--network", path(&network_file)]).await;
        assert!(ok, "{err}");
        assert!(n.requests.load(Ordering::SeqCst) > before, "bootstrapped");
        let cli_held = std::fs::read_to_string(user.join("consensus.txt")).unwrap();
        let cli_held = Consensus::parse(&cli_held).unwrap();
        // Both expired, and two periods more: older than every consensus a cache keeps whole.
        let interval = n.net.network.params.voting_interval_secs;
        let expires = held.valid_until.max(cli_held.valid_until);
        let wait = expires.saturating_sub(unix_now()) + 2 * interval + 1;
        assert!(wait < 40, "the consensus is valid for {wait} s more");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        caches_newer_than(n, held.valid_until).await;

        let again = Arc::new(NetDir::new(n.counted.clone(), &data));
        let _mgr = CircuitManager::new(again.clone(), data, CircuitConfig::default());
        let before = n.requests.load(Ordering::SeqCst);
        let (_, diff_before) = answers(n);
        let now = again.bootstrap().await.unwrap();
        assert!(now.valid_after > held.valid_until);
        assert_eq!(
            n.requests.load(Ordering::SeqCst),
            before,
            "no authority was asked; guard stats {:?}, last guard failure {:?}",
            again.cache_stats(),
            again.last_guard_failure()
        );
        let stats = again.cache_stats();
        assert_eq!(stats.from_guards.load(Ordering::SeqCst), 1);
        assert_eq!(stats.diffs.load(Ordering::SeqCst), 1, "a diff");
        assert_eq!(
            answers(n).1,
            diff_before + 1,
            "a guard answered with a diff"
        );
        let whole = http_request(
            n.net.network.authorities[0].address,
            Method::GET,
            "/consensus.z",
            None,
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .unwrap();
        let got = stats.bytes.load(Ordering::SeqCst);
        println!(
            "diff {got} bytes, whole consensus {} bytes",
            whole.body.len()
        );
        assert!(got < whole.body.len() as u64);

        let before = n.requests.load(Ordering::SeqCst);
        let (_, diff_before) = answers(n);
        let (ok, _, err) = shallot_cli(&user, &["inbox", "--network", path(&network_file)]).await;
        assert!(ok, "{err}");
        assert_eq!(
            n.requests.load(Ordering::SeqCst),
            before,
            "the binary asked an authority"
        );
        assert!(
            answers(n).1 > diff_before,
            "a guard answered it with a diff"
        );
        let now_held = std::fs::read_to_string(user.join("consensus.txt")).unwrap();
        assert!(Consensus::parse(&now_held).unwrap().valid_after > cli_held.valid_until);
    });
}

/// `path` as the `&str` an argument list takes.
fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the `shallot` binary on the data directory `dir` with `args` (its store encrypted
/// with a passphrase from a file, as a script runs it): whether it succeeded, its standard
/// output and its standard error.
async fn shallot_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let passphrase = dir.join("passphrase");
    std::fs::write(&passphrase, "a passphrase for the test user\n").unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shallot"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("SHALLOT_PASSPHRASE_FILE", &passphrase);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_hostile_guard_is_refused_and_the_client_falls_back_to_the_authorities() {
    let n = net();
    rt().block_on(async {
        let _one = n.serial.lock().await;
        let cases = [
            (Misbehaviour::DirForged, &["does not verify"][..]),
            (Misbehaviour::DirStale, &["not newer", "older"][..]),
            (Misbehaviour::DirTruncated, &["no whole answer"][..]),
            (Misbehaviour::DirOversized, &["over the limit"][..]),
            (Misbehaviour::DirWithheld, &["no consensus to give"][..]),
        ];
        for (how, reasons) in cases {
            let (dir, mgr) = client(n, "dir-caches-hostile").await;
            let held = dir.consensus().unwrap().valid_after;
            caches_newer_than(n, held).await;
            for i in 0..n.net.relay_count() {
                n.net.relay(i).unwrap().set_misbehaviour(Some(how));
            }
            let before = n.requests.load(Ordering::SeqCst);
            let got = dir.refresh().await;
            for i in 0..n.net.relay_count() {
                n.net.relay(i).unwrap().set_misbehaviour(None);
            }
            let got = got.unwrap_or_else(|e| panic!("{how:?}: no consensus: {e}"));
            assert!(got.valid_after >= held, "{how:?}");
            assert!(
                n.requests.load(Ordering::SeqCst) > before,
                "{how:?}: the authorities were asked"
            );
            assert_eq!(dir.cache_stats().from_guards.load(Ordering::SeqCst), 0);
            assert!(dir.cache_stats().refused.load(Ordering::SeqCst) >= 1);
            let why = dir.last_guard_failure().expect("a reason");
            assert!(reasons.iter().any(|r| why.contains(r)), "{how:?}: {why}");
            // The client keeps working: a circuit through three relays echoes.
            let c = mgr.build(None).await.unwrap();
            c.circuit
                .send(HopNum::THIRD, &RelayMsg::Data(b"still here".to_vec()))
                .await
                .unwrap();
            assert_eq!(
                c.circuit.recv().await.unwrap(),
                (HopNum::THIRD, RelayMsg::Data(b"still here".to_vec()))
            );
        }
    });
}

/// Review finding: a DIR_GET reaching a cache through another relay (hop 2 or 3 of a
/// circuit) took a slot without counting against any client's network, so one client could
/// fill every slot through an honest middle. Only requests on a circuit straight from a
/// client's link are answered; this one is answered "unavailable", and the circuit goes on.
#[test]
fn a_directory_request_through_another_relay_is_answered_unavailable() {
    use shallot_proto::dir_cache::{AnswerForm, DirMsg};
    let n = net();
    rt().block_on(async {
        let _one = n.serial.lock().await;
        let (_dir, mgr) = client(n, "dir-caches-relayed").await;
        let built = mgr.build(None).await.unwrap();
        let get = RelayMsg::Dir(DirMsg::Get { base: None });
        for hop in [HopNum::SECOND, HopNum::THIRD] {
            built.circuit.send(hop, &get).await.unwrap();
            let (from, answer) =
                tokio::time::timeout(Duration::from_secs(10), built.circuit.recv())
                    .await
                    .expect("an answer within 10 s")
                    .unwrap();
            assert_eq!(from, hop);
            assert_eq!(
                answer,
                RelayMsg::Dir(DirMsg::Answer {
                    form: AnswerForm::Unavailable,
                    len: 0
                })
            );
        }
    });
}
