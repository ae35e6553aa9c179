//! Review finding 5, connection slots, against one real authority on loopback: slots are
//! counted per /24, and when the shared pool is full of idle connections from many networks,
//! the slots kept for consensus fetches still serve `GET /consensus` (and nothing else), the
//! slots kept for the other authorities still take their requests, and (issue 10, finding H)
//! the slots kept for proven relays still take their descriptor uploads.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use shallot_authority::Authority;
use shallot_directory::NetworkParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` on `s` and returns the status (0 if the connection was closed unanswered).
async fn ask(mut s: TcpStream, request: &str) -> (u16, String) {
    if s.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (status, text)
}

const FETCH: &str = "GET /consensus HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
const UPLOAD: &str =
    "POST /descriptor HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n\r\nx\n";
const VOTE: &str =
    "POST /vote HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n\r\nx\n";

/// Opens a connection from `source` and waits until the authority has taken it (a served
/// probe request on another connection would race it otherwise).
async fn hold(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = connect_from(source, to).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_slots_keep_fetches_and_authorities_served() {
    let params = NetworkParams {
        max_connections: 12,
        max_connections_per_network: 4,
        reserved_authority_connections: 2,
        reserved_fetch_connections: 3,
        reserved_relay_connections: 0,
        request_timeout_secs: 20,
        ..test_params(4)
    };
    // Two authorities; only the first runs. The second's address is a peer's.
    let (mut configs, network) = authorities(2, 51, params);
    let peer_ip = match network.authorities[1].address.ip() {
        std::net::IpAddr::V4(v4) => v4.octets(),
        _ => unreachable!(),
    };
    let auth = Authority::start(configs.remove(0)).await.unwrap();
    let addr = auth.local_addr();

    // Per /24: the fifth connection from one network is closed unanswered.
    let mut idle = Vec::new();
    for host in 1..=4 {
        idle.push(hold([127, 54, 1, host], addr).await);
    }
    assert_eq!(
        ask(connect_from([127, 54, 1, 9], addr).await, FETCH)
            .await
            .0,
        0
    );
    // The shared pool is 12 − 2 − 3 = 7: three more idle connections from another network.
    for host in 1..=3 {
        idle.push(hold([127, 54, 2, host], addr).await);
    }
    // A new network now gets a fetch slot: it may fetch the consensus, and nothing else.
    let (status, text) = ask(connect_from([127, 54, 3, 1], addr).await, UPLOAD).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("only consensus fetches"), "{text}");
    let (status, text) = ask(connect_from([127, 54, 3, 2], addr).await, FETCH).await;
    assert!(status == 200 || status == 404, "{text}");
    // The other authority gets one of its own slots, and its vote request is read.
    let (status, text) = ask(connect_from(peer_ip, addr).await, VOTE).await;
    assert_eq!(status, 400, "{text}");
    // With the fetch slots full too, a stranger is closed unanswered; the peer still gets in.
    for host in 1..=3 {
        idle.push(hold([127, 54, 4, host], addr).await);
    }
    assert_eq!(
        ask(connect_from([127, 54, 5, 1], addr).await, FETCH)
            .await
            .0,
        0
    );
    assert_eq!(ask(connect_from(peer_ip, addr).await, VOTE).await.0, 400);
    // Once the idle connections go, everyone is served again.
    drop(idle);
    let start = Instant::now();
    loop {
        let (status, _) = ask(connect_from([127, 54, 6, 1], addr).await, UPLOAD).await;
        if status == 400 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    auth.shutdown().await;
}

/// Issue 10, finding H: a flood of idle connections from many networks holds every shared and
/// fetch slot. A relay the authority has proven still uploads its descriptor, from its own
/// address, in the slots kept for relays (and may do nothing else there), so its entry does
/// not expire for want of uploads; a stranger is turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_relay_still_uploads_when_the_shared_slots_are_full() {
    let params = NetworkParams {
        max_connections: 12,
        max_connections_per_network: 4,
        reserved_authority_connections: 1,
        reserved_fetch_connections: 2,
        reserved_relay_connections: 2,
        request_timeout_secs: 20,
        ..test_params(3)
    };
    let (mut configs, _network) = authorities(1, 61, params);
    let params = _network.params;
    let auth = Authority::start(configs.remove(0)).await.unwrap();
    let addr = auth.local_addr();
    let relay_ip = [127, 63, 0, 1];
    let relay = TestRelay::start(relay_ip).await;
    let id = relay.identity.relay_id();
    let first = relay.signed(now() - 5);
    let (status, body) = raw_request(relay_ip, addr, "POST", "/descriptor", &first).await;
    assert_eq!(status, 200, "{body}");
    poll(Duration::from_secs(30), "the relay proven", || {
        auth.reachable_relays().contains(&id).then_some(())
    })
    .await;

    // The shared pool is 12 − 1 − 2 − 2 = 7, the fetch pool 2: nine idle connections from
    // three other networks hold both.
    let strangers = params.max_connections
        - params.reserved_authority_connections
        - params.reserved_relay_connections;
    let mut idle = Vec::new();
    for i in 0..strangers as u8 {
        idle.push(hold([127, 64, 1 + i / 3, 1 + i % 3], addr).await);
    }
    assert_eq!(
        ask(connect_from([127, 64, 9, 1], addr).await, FETCH)
            .await
            .0,
        0,
        "a stranger is turned away"
    );
    // The relay's newer descriptor is taken.
    let newer = relay.signed(now());
    let upload = format!(
        "POST /descriptor HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{newer}",
        newer.len()
    );
    let (status, text) = ask(connect_from(relay_ip, addr).await, &upload).await;
    assert_eq!(status, 200, "the relay's upload: {text}");
    // In the relays' slots, only uploads and consensus fetches are served.
    let (status, text) = ask(connect_from(relay_ip, addr).await, VOTE).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("only descriptor uploads"), "{text}");
    let (status, text) = ask(connect_from(relay_ip, addr).await, FETCH).await;
    assert!(status == 200 || status == 404, "{text}");
    drop(idle);
    auth.shutdown().await;
}
