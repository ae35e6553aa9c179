//! Finding D of issue 10, end to end: peers whose vote lists name 1,000 authorities that are
//! not configured, and two votes for each configured one, make a real authority fetch
//! nothing for the strangers and at most `MAX_VOTE_FETCHES` votes at once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use shallot_authority::exchange::MAX_VOTE_FETCHES;
use shallot_authority::Authority;
use shallot_crypto::hex;
use shallot_directory::equivocation::{Holdings, VoteList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct Seen {
    in_flight: usize,
    max_in_flight: usize,
    digests: Vec<[u8; 32]>,
}

const STRANGER: [u8; 32] = [0xee; 32];

fn hostile(t: u64, configured: &[[u8; 32]]) -> String {
    let mut votes = Holdings::new();
    for i in 0..1000u32 {
        let mut author = [0x77; 32];
        author[..4].copy_from_slice(&i.to_be_bytes());
        votes.insert(author, [STRANGER].into());
    }
    for a in configured {
        votes.insert(*a, [rand::random(), rand::random()].into());
    }
    VoteList {
        valid_after: t,
        votes,
    }
    .encode()
}

/// A fake peer: serves the hostile list, and holds each vote fetch for 300 ms (less if the
/// fetch is given up), then 404.
async fn fake_peer(listener: TcpListener, configured: Vec<[u8; 32]>, seen: Arc<Mutex<Seen>>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let (configured, seen) = (configured.clone(), seen.clone());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (status, body) = match parts.as_slice() {
                ["votes", t] => ("200 OK", hostile(t.parse().unwrap_or(0), &configured)),
                ["votes", _, d] => {
                    let digest: [u8; 32] = hex::decode(d).unwrap().try_into().unwrap();
                    {
                        let mut g = seen.lock().unwrap();
                        g.in_flight += 1;
                        g.max_in_flight = g.max_in_flight.max(g.in_flight);
                        g.digests.push(digest);
                    }
                    // Held 300 ms, or until the authority gives the fetch up (its pass
                    // ended) and closes the connection: from then on the fetch is no longer
                    // one of the authority's at once, though this task would still be holding.
                    let mut rest = [0u8; 64];
                    let closed = async {
                        while let Ok(n) = s.read(&mut rest).await {
                            if n == 0 {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                        _ = closed => {}
                    }
                    seen.lock().unwrap().in_flight -= 1;
                    ("404 Not Found", "none\n".to_string())
                }
                _ => ("404 Not Found", "none\n".to_string()),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_vote_lists_fetch_nothing_for_strangers_and_little_at_once() {
    let (mut configs, network) = authorities(6, 41, test_params(8));
    let configured: Vec<[u8; 32]> = network
        .authorities
        .iter()
        .map(|a| *a.key.as_bytes())
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    for info in &network.authorities[1..] {
        let listener = TcpListener::bind(info.address).await.unwrap();
        tokio::spawn(fake_peer(listener, configured.clone(), seen.clone()));
    }
    let auth = Authority::start(configs.remove(0)).await.unwrap();
    // Two passes' worth: one vote per configured author per pass.
    poll(Duration::from_secs(60), "vote fetches", || {
        (seen.lock().unwrap().digests.len() >= 2 * configured.len()).then_some(())
    })
    .await;
    let (digests, max_in_flight) = {
        let g = seen.lock().unwrap();
        (g.digests.clone(), g.max_in_flight)
    };
    assert!(!digests.contains(&STRANGER), "fetched a stranger's vote");
    assert_eq!(max_in_flight, MAX_VOTE_FETCHES, "vote fetches at once");
    // No vote is fetched twice in a period.
    let unique: BTreeSet<_> = digests.iter().collect();
    assert_eq!(unique.len(), digests.len());
    auth.shutdown().await;
}
