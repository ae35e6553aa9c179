//! Bad input and faults against one real authority on loopback: every refusal has its HTTP
//! status and one-line reason, and the authority keeps serving good requests afterwards.
//!
//! The tests share one authority (a one-authority network with a 2 s voting interval and a
//! 1 s request timeout). Each test talks from its own loopback network (a /24 of its own), so
//! that the per-network limits one test hits do not touch the others.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use shallot_authority::{Authority, AuthorityHandle};
use shallot_crypto::hex;
use shallot_crypto::keys::IdentityKeypair;
use shallot_directory::NetworkFile;
use shallot_proto::dir::{signed_bytes, Vote, MAX_DESCRIPTOR_LEN};
use tokio::io::AsyncWriteExt;

struct Fixture {
    addr: SocketAddr,
    network: NetworkFile,
    _handle: AuthorityHandle,
    _runtime: tokio::runtime::Runtime,
}

/// The one authority of this file, running on its own runtime so that it outlives each
/// test's runtime.
fn authority() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (mut configs, network) = authorities(1, 21, test_params(2));
            let handle = runtime
                .block_on(Authority::start(configs.remove(0)))
                .unwrap();
            Fixture {
                addr: handle.local_addr(),
                network,
                _handle: handle,
                _runtime: runtime,
            }
        })
        .join()
        .unwrap()
    })
}

async fn upload(source: [u8; 4], text: &str) -> (u16, String) {
    raw_request(source, authority().addr, "POST", "/descriptor", text).await
}

/// The authority still accepts a good descriptor from `source`.
async fn still_serves(source: [u8; 4]) {
    let (_, good) = any_descriptor(now());
    let (status, body) = upload(source, &good).await;
    assert_eq!((status, body.as_str()), (200, "accepted\n"));
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let src = [127, 22, 1, 1];
    let (_, text) = any_descriptor(now());
    let forger = IdentityKeypair::generate(&mut rand::thread_rng());
    let body = &text[..text.find("signature ").unwrap()];
    let forged_sig = forger.sign(&signed_bytes(body));
    let forged = format!("{body}signature {}\n", hex::encode(&forged_sig.to_bytes()));
    let (status, reason) = upload(src, &forged).await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "the signature does not verify\n")
    );
    still_serves(src).await;
}

#[tokio::test]
async fn missing_signature_is_refused() {
    let src = [127, 22, 2, 1];
    let (_, text) = any_descriptor(now());
    let unsigned = &text[..text.find("signature ").unwrap()];
    let (status, reason) = upload(src, unsigned).await;
    assert_eq!(status, 400);
    assert!(
        reason.contains("expected a `signature` line, found the end"),
        "{reason}"
    );
    still_serves(src).await;
}

#[tokio::test]
async fn malformed_documents_are_refused_with_the_line() {
    let src = [127, 22, 3, 1];
    let (_, text) = any_descriptor(now());
    for (bad, want) in [
        (text.replace("bandwidth 1000", "bandwidth 01000"), "line 7"),
        (text.replace("mailbox no", "mailbox maybe"), "line 9"),
        (text.replace('\n', "\r\n"), "line 1"),
        (
            "hello\n".to_string(),
            "expected a `shallot-descriptor` line",
        ),
        ("\u{0}\u{1}binary".to_string(), "malformed"),
        ("caf\u{e9}\n".to_string(), "not printable ASCII"),
    ] {
        let (status, reason) = upload(src, &bad).await;
        assert_eq!(status, 400, "{reason}");
        assert!(reason.contains(want), "{reason} should mention {want}");
        assert_eq!(reason.matches('\n').count(), 1, "{reason:?} is one line");
    }
    still_serves(src).await;
}

#[tokio::test]
async fn descriptors_from_the_future_or_too_old_are_refused() {
    let src = [127, 22, 4, 1];
    let (_, future) = any_descriptor(now() + 3600);
    let (status, reason) = upload(src, &future).await;
    assert_eq!(status, 400);
    assert!(reason.contains("in the future"), "{reason}");
    let (_, old) = any_descriptor(now() - 3601 - 5);
    let (status, reason) = upload(src, &old).await;
    assert_eq!(status, 400);
    assert!(reason.contains("too old"), "{reason}");
    still_serves(src).await;
}

#[tokio::test]
async fn replayed_or_older_descriptors_are_refused() {
    let src = [127, 22, 5, 1];
    let relay = TestRelay::start([127, 22, 50, 1]).await;
    let t = now();
    assert_eq!(upload(src, &relay.signed(t - 10)).await.0, 200);
    let (status, reason) = upload(src, &relay.signed(t - 10)).await;
    assert_eq!(status, 409);
    assert!(reason.contains("already held"), "{reason}");
    assert_eq!(upload(src, &relay.signed(t - 20)).await.0, 409);
    // Through the relays' client library, the reason comes back as the error.
    let err = shallot_directory::upload_descriptor(
        authority().addr,
        &relay.signed(t - 30),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already held"), "{err}");
    assert_eq!(upload(src, &relay.signed(t - 5)).await.0, 200);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let src = [127, 22, 6, 1];
    let (_, text) = any_descriptor(now());
    let huge = format!("{text}{}", "x".repeat(MAX_DESCRIPTOR_LEN));
    let (status, reason) = upload(src, &huge).await;
    assert_eq!(status, 413);
    assert!(
        reason.contains("exceeds the limit of 8192 bytes"),
        "{reason}"
    );

    // A chunked body with no declared length that never ends is cut off at the cap.
    let stream = connect_from(src, authority().addr).await;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(
        b"POST /descriptor HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let writer = tokio::spawn(async move {
        let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if wr.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let _ = rd.read_to_end(&mut buf).await;
    })
    .await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text:?}");
    still_serves(src).await;
}

#[tokio::test]
async fn slow_and_endless_bodies_time_out() {
    let src = [127, 22, 7, 1];
    // A body that stops halfway.
    let mut s = connect_from(src, authority().addr).await;
    s.write_all(b"POST /descriptor HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let start = Instant::now();
    let (status, reason) = read_response(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status, 408);
    assert!(reason.contains("not received within 1 s"), "{reason}");
    assert!(start.elapsed() < Duration::from_secs(5));

    // A body that trickles forever.
    let stream = connect_from(src, authority().addr).await;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(b"POST /descriptor HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        loop {
            if wr.write_all(b"1\r\na\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf))
            .await
            .expect("the authority never gave up on the endless body")
            .ok();
    }
    writer.abort();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    // Headers that never come: the connection is closed.
    let mut silent = connect_from(src, authority().addr).await;
    let mut buf = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf))
            .await
            .expect("a silent connection was kept open")
            .ok();
    }
    still_serves(src).await;
}

#[tokio::test]
async fn a_flood_of_uploads_from_one_address_is_limited() {
    let src = [127, 22, 8, 1];
    let limit = authority().network.params.max_uploads_per_minute;
    for _ in 0..limit {
        let (_, text) = any_descriptor(now());
        assert_eq!(upload(src, &text).await.0, 200);
    }
    let (_, text) = any_descriptor(now());
    let (status, reason) = upload(src, &text).await;
    assert_eq!(status, 429);
    assert!(
        reason.contains("upload limit of 10 descriptors per minute"),
        "{reason}"
    );
    // Other addresses are not affected, and the flooder can still read the consensus.
    still_serves([127, 22, 9, 1]).await;
    let (status, _) = raw_request(src, authority().addr, "GET", "/consensus", "").await;
    assert!(status == 200 || status == 404, "{status}");
}

#[tokio::test]
async fn connections_per_network_are_capped() {
    let src = [127, 22, 10, 1];
    let addr = authority().addr;
    let mut idle = Vec::new();
    for _ in 0..authority().network.params.max_connections_per_network {
        idle.push(connect_from(src, addr).await);
    }
    // One more, with a complete request: the authority closes it without an answer.
    let mut extra = connect_from(src, addr).await;
    extra
        .write_all(b"GET /consensus HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    }
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    drop(idle);
    // Once they are closed, the address is served again.
    let start = Instant::now();
    loop {
        let mut s = connect_from(src, addr).await;
        s.write_all(b"GET /consensus HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 ") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn votes_from_unknown_keys_and_bad_votes_are_refused() {
    let src = [127, 22, 11, 1];
    let stranger = IdentityKeypair::generate(&mut rand::thread_rng());
    let t = now() / 2 * 2 + 2;
    let vote = Vote {
        authority: stranger.public(),
        valid_after: t,
        fresh_until: t + 2,
        valid_until: t + 6,
        commit: [1; 32],
        reveal: None,
        relays: vec![],
    };
    let text = vote.sign(&stranger).unwrap();
    let (status, reason) = raw_request(src, authority().addr, "POST", "/vote", &text).await;
    assert_eq!(status, 403);
    assert!(reason.contains("not a configured peer"), "{reason}");
    let (status, reason) =
        raw_request(src, authority().addr, "POST", "/vote", "shallot-vote 1\n").await;
    assert_eq!(status, 400);
    assert!(reason.contains("malformed"), "{reason}");
    let (status, reason) = raw_request(src, authority().addr, "GET", "/vote/abc", "").await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "the period is not an integer\n")
    );
    let (status, reason) = raw_request(src, authority().addr, "GET", "/nothing", "").await;
    assert_eq!((status, reason.as_str()), (404, "no such resource\n"));
    let (status, reason) = raw_request(src, authority().addr, "GET", "/descriptor", "").await;
    assert_eq!(
        (status, reason.as_str()),
        (405, "method not allowed here\n")
    );
    let (status, reason) = raw_request(src, authority().addr, "GET", "/descriptor/zz", "").await;
    assert_eq!(
        (status, reason.as_str()),
        (400, "the digest is not 64 hex digits\n")
    );
    let nothing = hex::encode(&[0x5a; 32]);
    let (status, _) = raw_request(
        src,
        authority().addr,
        "GET",
        &format!("/descriptor/{nothing}"),
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = raw_request(
        src,
        authority().addr,
        "GET",
        &format!("/votes/{t}/{nothing}"),
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = raw_request(
        src,
        authority().addr,
        "GET",
        &format!("/vote/{t}/{nothing}"),
        "",
    )
    .await;
    assert_eq!(status, 404);
    // The list of votes held is served only once the exchange has closed.
    let far = t + 1000;
    let (status, reason) =
        raw_request(src, authority().addr, "GET", &format!("/votes/{far}"), "").await;
    assert_eq!(status, 425, "{reason}");
    still_serves(src).await;
}

#[tokio::test]
async fn serves_a_consensus_clients_accept() {
    let fixture = authority();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = shallot_directory::fetch_consensus(
            &fixture.network,
            None,
            now(),
            Duration::from_secs(5),
        )
        .await;
        match r {
            Ok((c, text)) => {
                assert_eq!(c.signatures.len(), 1);
                assert_eq!(c.fresh_until - c.valid_after, 2);
                assert_eq!(c.encode().unwrap(), text);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no consensus: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn vote_bodies_read_at_once_are_limited() {
    let src = [127, 22, 12, 1];
    let addr = authority().addr;
    for _attempt in 0..5 {
        // Four uploads that stall halfway through their body hold every reading slot (for
        // up to the 1 s body timeout).
        let mut holders = Vec::new();
        for _ in 0..shallot_authority::api::MAX_VOTE_UPLOADS {
            let mut s = connect_from(src, addr).await;
            s.write_all(
                b"POST /vote HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nshallot-vote 1\n",
            )
            .await
            .unwrap();
            holders.push(s);
        }
        for _ in 0..10 {
            let (status, reason) = raw_request(src, addr, "POST", "/vote", "x\n").await;
            if status == 503 {
                assert!(reason.contains("too many votes"), "{reason}");
                drop(holders);
                still_serves(src).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("a fifth vote upload was never refused");
}
