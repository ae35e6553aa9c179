//! Asking every peer authority for the same thing until each has given it or a deadline
//! passes (`docs/spec.md` §5.6: votes until the exchange closes, signatures until `T + I/2`),
//! each peer on a retry schedule of its own. A peer that never answers (on a real network a
//! host gone silent costs a connect timeout, not a quick refusal) does not hold up the
//! retries to the others: waiting for a whole round of answers before retrying once made a
//! silent third authority keep the other two from exchanging their signatures in time, so
//! that they served a consensus only one had signed.

use std::future::Future;
use std::time::Duration;

use shallot_directory::schedule::now_ms;
use tokio::task::JoinSet;

/// Calls `ask(peer)` for each peer, again every `retry` for each peer whose last answer was
/// `false` (not given yet), until each has answered `true` or `deadline` (unix ms) passes.
/// Each peer's asks run one after another and beside the other peers'.
pub(crate) async fn until_each_gives<P, F, Fut>(
    peers: Vec<P>,
    deadline: u64,
    retry: Duration,
    ask: F,
) where
    P: Clone + Send + 'static,
    F: Fn(P) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let mut each = JoinSet::new();
    for peer in peers {
        let ask = ask.clone();
        each.spawn(async move {
            while now_ms() < deadline {
                if ask(peer.clone()).await {
                    return;
                }
                let left = Duration::from_millis(deadline.saturating_sub(now_ms()));
                tokio::time::sleep(retry.min(left)).await;
            }
        });
    }
    while each.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// Peer 0 answers only once peer 1 has given what it was asked for; peer 1 gives it at
    /// its second ask. Asked in rounds (all answers before any retry), peer 1's second ask
    /// would wait for peer 0 until the deadline, and never come.
    #[tokio::test]
    async fn a_silent_peer_does_not_hold_up_the_retries_to_another() {
        let asks = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let given = Arc::new(Notify::new());
        let deadline = now_ms() + 10_000;
        let (a, g) = (asks.clone(), given.clone());
        until_each_gives(
            vec![0usize, 1],
            deadline,
            Duration::from_millis(50),
            move |peer| {
                let (asks, given) = (a.clone(), g.clone());
                async move {
                    let n = asks[peer].fetch_add(1, Ordering::SeqCst) + 1;
                    match peer {
                        0 => {
                            // Silent until peer 1 is done (or nearly the deadline).
                            let _ = tokio::time::timeout(Duration::from_secs(9), given.notified())
                                .await;
                            true
                        }
                        _ if n == 2 => {
                            given.notify_one();
                            true
                        }
                        _ => false,
                    }
                }
            },
        )
        .await;
        assert_eq!(asks[1].load(Ordering::SeqCst), 2, "peer 1 was asked again");
        assert_eq!(asks[0].load(Ordering::SeqCst), 1);
        assert!(
            now_ms() < deadline - 5_000,
            "peer 0 was released by peer 1, not its timeout"
        );
    }

    #[tokio::test]
    async fn asking_stops_at_the_deadline() {
        let asks = Arc::new(AtomicU32::new(0));
        let a = asks.clone();
        let deadline = now_ms() + 1000;
        until_each_gives(vec![()], deadline, Duration::from_millis(100), move |()| {
            let a = a.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                false
            }
        })
        .await;
        assert!(now_ms() >= deadline);
        let n = asks.load(Ordering::SeqCst);
        assert!(
            (2..=11).contains(&n),
            "asked {n} times in 1 s, every 100 ms"
        );
    }
}
