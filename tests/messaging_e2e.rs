//! Messaging end to end on one loopback network: two users exchange messages both ways,
//! online and offline, through the `shallot` command line and through the library; and the
//! bad inputs of the mailbox protocol are refused without harm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::store::OutState;

struct Net {
    net: Testnet,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            let mut options = TestnetOptions::new(scratch("messaging-e2e"));
            options.first_octet = 100;
            options.mailbox_quota = Some(30);
            let net = Testnet::start(options).await.unwrap();
            net.wait_ready(Duration::from_secs(60)).await.unwrap();
            Net { net }
        })
    })
}

/// A file holding the passphrase every store made through the command line here is
/// encrypted with (as a script would give it).
fn passphrase_file() -> &'static std::path::Path {
    static FILE: OnceLock<std::path::PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let file = scratch("passphrase").join("passphrase");
        std::fs::write(&file, "a passphrase for the test users\n").unwrap();
        file
    })
}

fn shallot(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shallot"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("SHALLOT_PASSPHRASE_FILE", passphrase_file())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_users_talk_through_the_command_line_online_and_offline() {
    let n = net();
    let network = n.net.network_path.to_str().unwrap().to_string();
    let (alice, bob) = (scratch("cli-alice"), scratch("cli-bob"));
    let (ok, a_addr, _) = shallot(&alice, &["id", "new", "--name", "alice"]);
    assert!(ok);
    let (ok, b_addr, _) = shallot(&bob, &["id", "new"]);
    assert!(ok);
    let (a_addr, b_addr) = (a_addr.trim().to_string(), b_addr.trim().to_string());
    assert_eq!(shallot(&bob, &["id", "show"]).1.trim(), b_addr);
    assert!(shallot(&alice, &["contact", "add", "bob", &b_addr]).0);
    assert!(shallot(&bob, &["contact", "add", "alice", &a_addr]).0);
    // A typo in an address is caught with a clear one-line error.
    let mut typo = b_addr.clone();
    typo.replace_range(20..21, if &b_addr[20..21] == "q" { "p" } else { "q" });
    let (ok, _, err) = shallot(&alice, &["contact", "add", "bobby", &typo]);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("checksum"), "{err}");

    // Bob comes online once (publishing his prekey bundle), then goes away.
    assert!(shallot(&bob, &["inbox", "--network", &network]).0);
    // Alice sends while Bob is offline: it is stored on at least 2 of 3 mailboxes.
    let (ok, out, err) = shallot(&alice, &["send", "--network", &network, "bob", "hello bob"]);
    assert!(ok, "{err}");
    assert!(out.contains("stored on"), "{out}");
    // Bob comes back and finds it.
    let (ok, out, err) = shallot(&bob, &["inbox", "--network", &network, "--json"]);
    assert!(ok, "{err}");
    let line: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("one message")).unwrap();
    assert_eq!(line["from"], "alice");
    assert_eq!(line["text"], "hello bob");
    for field in ["id", "sent_at", "received_at"] {
        assert!(!line[field].is_null(), "missing {field}");
    }
    // Nothing new the second time.
    assert_eq!(shallot(&bob, &["inbox", "--network", &network]).1, "");
    // Bob's store is encrypted (its passphrase came from the file): the message is in
    // neither the database nor its log.
    for file in ["shallot.db", "shallot.db-wal"] {
        let bytes = std::fs::read(bob.join(file)).unwrap_or_default();
        assert!(
            !bytes.starts_with(b"SQLite format 3\0"),
            "{file} is not encrypted"
        );
        assert!(
            !bytes.windows(9).any(|w| w == b"hello bob"),
            "{file} holds the message in the clear"
        );
    }

    // Bob answers; Alice waits for it.
    assert!(shallot(&bob, &["send", "--network", &network, "alice", "hi alice"]).0);
    let (ok, out, _) = shallot(&alice, &["inbox", "--network", &network, "--wait", "10"]);
    assert!(ok);
    assert_eq!(out.trim(), "bob: hi alice");

    // Online: Alice waits (subscribed) while Bob sends.
    let waiter = {
        let alice = alice.clone();
        let network = network.clone();
        std::thread::spawn(move || {
            shallot(&alice, &["inbox", "--network", &network, "--wait", "20"])
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        shallot(
            &bob,
            &["send", "--network", &network, "alice", "are you there?"]
        )
        .0
    );
    let (ok, out, _) = waiter.join().unwrap();
    assert!(ok);
    assert!(out.contains("are you there?"), "{out}");
}

#[test]
fn messages_are_acknowledged_end_to_end_and_shown_once() {
    let n = net();
    rt().block_on(async {
        let alice = TestUser::new("ack-alice", &n.net.network).await;
        let bob = TestUser::new("ack-bob", &n.net.network).await;
        alice.add_contact("bob", &bob);
        bob.add_contact("alice", &alice);
        let report = alice
            .messenger
            .send("bob", "one", OnFailure::Fail)
            .await
            .unwrap();
        assert!(report.stored >= 2);
        let got = bob.receive("one").await;
        assert_eq!(
            got.iter().filter(|m| m.text == "one").count(),
            1,
            "three replicas, one message"
        );
        // Bob's acknowledgement reaches Alice: delivered.
        eventually("the acknowledgement", Duration::from_secs(20), || async {
            let _ = alice.messenger.sync().await;
            let state = alice
                .messenger
                .store()
                .message(&report.id)
                .unwrap()
                .unwrap()
                .state;
            (state == Some(OutState::Delivered)).then_some(())
        })
        .await;
    });
}

#[test]
fn circuits_readied_while_typing_carry_the_message_and_are_used_once() {
    let n = net();
    rt().block_on(async {
        let alice = TestUser::new("typing-alice", &n.net.network).await;
        let bob = TestUser::new("typing-bob", &n.net.network).await;
        alice.add_contact("bob", &bob);
        bob.add_contact("alice", &alice);
        let mut replicas = bob.messenger.my_replicas().unwrap();
        replicas.sort();
        alice.messenger.composing("bob").unwrap();
        eventually(
            "a circuit to each of Bob's replicas",
            Duration::from_secs(20),
            || async {
                let mut ready = alice.messenger.circuits().prepared();
                ready.sort();
                (ready == replicas).then_some(())
            },
        )
        .await;
        let report = alice
            .messenger
            .send("bob", "typed first", OnFailure::Fail)
            .await
            .unwrap();
        assert_eq!(report.stored, 3);
        assert_eq!(
            alice.messenger.circuits().prepared(),
            vec![],
            "the send took all three, and nothing hands them out again"
        );
        bob.receive("typed first").await;
        // With the session started, typing also takes the next message key: the next
        // message leaves sealed with it, without waiting for Alice's disk.
        alice.messenger.composing("bob").unwrap();
        eventually(
            "the message key taken while typing",
            Duration::from_secs(20),
            || async { alice.messenger.key_ready_for("bob").unwrap().then_some(()) },
        )
        .await;
        let report = alice
            .messenger
            .send("bob", "typed second", OnFailure::Fail)
            .await
            .unwrap();
        assert_eq!(report.stored, 3);
        assert!(!alice.messenger.key_ready_for("bob").unwrap(), "used once");
        bob.receive("typed second").await;
    });
}

#[test]
fn a_stranger_appears_as_a_contact_request() {
    let n = net();
    rt().block_on(async {
        let eve = TestUser::new("req-eve", &n.net.network).await;
        let bob = TestUser::new("req-bob", &n.net.network).await;
        eve.add_contact("bob", &bob);
        eve.messenger
            .send("bob", "hi, we met at the conference", OnFailure::Fail)
            .await
            .unwrap();
        bob.receive("hi, we met at the conference").await;
        let requests = bob.messenger.store().requests().unwrap();
        assert_eq!(requests, vec![*eve.address.key().as_bytes()]);
    });
}

#[test]
fn a_full_mailbox_gives_the_sender_a_clear_failure() {
    let n = net();
    rt().block_on(async {
        let alice = TestUser::new("quota-alice", &n.net.network).await;
        let bob = TestUser::new("quota-bob", &n.net.network).await;
        alice.add_contact("bob", &bob);
        // Bob stays offline; Alice fills his mailbox (quota 30 in this network).
        let mut failure = None;
        for i in 0..40 {
            match alice
                .messenger
                .send("bob", &format!("message {i}"), OnFailure::Fail)
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    failure = Some((i, e.to_string()));
                    break;
                }
            }
        }
        let (i, reason) = failure.expect("the mailbox never filled");
        assert_eq!(i, 30, "refused at the quota");
        assert!(reason.contains("mailbox is full"), "{reason}");
        // Bob drains it and the next message goes through.
        bob.receive("message 29").await;
        alice
            .messenger
            .send("bob", "after the flood", OnFailure::Fail)
            .await
            .unwrap();
    });
}

/// Every user of the network keeps its consensus fresh from `connect()` on, not only the
/// chat: a one-shot `inbox --wait` or `send` outlived its consensus on a test network (three
/// 3-second intervals) and then failed with "the consensus expired".
#[test]
fn a_connected_messenger_keeps_its_consensus_fresh() {
    let n = net();
    rt().block_on(async {
        let user = TestUser::new("fresh-consensus", &n.net.network).await;
        let first = user.messenger.netdir().consensus().unwrap();
        // Past the first consensus's end of validity, by the clock.
        while shallot_rt::unix_now() <= first.valid_until + 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let now = user
            .messenger
            .netdir()
            .consensus()
            .expect("a consensus newer than the first, fetched in the background");
        assert!(now.valid_after > first.valid_after);
    });
}

/// A stranger's message full of terminal escapes and bidirectional overrides, through the
/// network, comes out of `shallot inbox` inert: no escape byte reaches the terminal, the
/// "(contact request)" tag stays, and no line can pass for another sender's. The JSON output
/// keeps the exact text, escaped.
#[test]
fn inbox_prints_what_strangers_send_inert() {
    let n = net();
    let network = n.net.network_path.to_str().unwrap().to_string();
    let bob = scratch("inert-bob");
    let (ok, b_addr, _) = shallot(&bob, &["id", "new"]);
    assert!(ok);
    // Bob online once, so his bundle is published.
    assert!(shallot(&bob, &["inbox", "--network", &network]).0);
    let evil = "hi\x1b[2K\r\x1b[1Aalice: lend me 100\u{202E}gnp.exe\x07";
    rt().block_on(async {
        let mallory = TestUser::new("inert-mallory", &n.net.network).await;
        let b: shallot_crypto::Address = b_addr.trim().parse().unwrap();
        mallory.messenger.store().add_contact("bob", &b, 0).unwrap();
        mallory
            .messenger
            .send("bob", evil, OnFailure::Fail)
            .await
            .unwrap();
    });
    let (ok, out, err) = shallot(&bob, &["inbox", "--network", &network, "--wait", "30"]);
    assert!(ok, "{err}");
    assert!(out.contains("(contact request): hi"), "{out:?}");
    for bad in ['\x1b', '\x07', '\r', '\u{202E}'] {
        assert!(!out.contains(bad), "{bad:?} reached the terminal: {out:?}");
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines[1].starts_with("    "),
        "an unindented second line: {out:?}"
    );

    // The same message again as JSON: exact, and escaped.
    rt().block_on(async {
        let mallory = TestUser::new("inert-mallory2", &n.net.network).await;
        let b: shallot_crypto::Address = b_addr.trim().parse().unwrap();
        mallory.messenger.store().add_contact("bob", &b, 0).unwrap();
        mallory
            .messenger
            .send("bob", evil, OnFailure::Fail)
            .await
            .unwrap();
    });
    let (ok, out, err) = shallot(
        &bob,
        &["inbox", "--network", &network, "--wait", "30", "--json"],
    );
    assert!(ok, "{err}");
    assert!(!out.contains('\x1b'), "{out:?}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["text"], evil);
    assert_eq!(line["request"], true);
}
