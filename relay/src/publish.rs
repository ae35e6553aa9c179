//! The relay's side of the directory (`docs/spec.md` §5.2, §5.7, §6.7): publish a signed
//! descriptor to every authority at start, periodically, and after each onion key rotation;
//! answer the authorities' reachability probes; and fetch the consensus to know which relays
//! circuits may be extended to.

use std::sync::Arc;
use std::time::Duration;

use shallot_directory::fetch::{fetch_consensus, upload_descriptor, UploadError};
use shallot_directory::network::{NetworkFile, NetworkParams};
use shallot_directory::schedule::{brings_nothing_new, failure_backoff};
use shallot_directory::AuthorityInfo;
use shallot_net::netdir::cache_fetch_delay_ms;
use shallot_proto::dir::descriptor::RelayDescriptor;
use shallot_proto::dir::{Consensus, Flags};
use shallot_rt::{unix_now, AbortOnDrop};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::core::Core;
use crate::netview::{NetView, PeerInfo};
use crate::stats::Stats;

/// How long the relay waits, at `now_ms`, before it fetches the consensus again, holding
/// `held` after as many failed (or fruitless) fetches in a row: at most `refresh`, whatever a
/// consensus names; otherwise, with a fresh consensus and no failure, until a random delay
/// after its fresh-until (`docs/spec.md` §6.7: it counts in milliseconds from fresh-until
/// itself, and spreads the network's relays); while no fresh one can be had, a back-off from
/// 1 s to 32 s; with none at all, until the schedule says the first is served, if sooner (a
/// new network's relays then hold it within moments, not a back-off later).
fn next_fetch_wait(
    (held, failures): (Option<&Consensus>, u32),
    now_ms: u64,
    params: &NetworkParams,
    refresh: Duration,
) -> Duration {
    let wait = match held {
        Some(c) if now_ms / 1000 < c.fresh_until && failures == 0 => {
            let span = c.fresh_until.saturating_sub(c.valid_after).max(1);
            let at_ms = c
                .fresh_until
                .saturating_mul(1000)
                .saturating_add(cache_fetch_delay_ms(span, rand::random()));
            Duration::from_millis(at_ms.saturating_sub(now_ms))
        }
        Some(_) => failure_backoff(failures, 5),
        None => {
            let due_ms = params.next_first_consensus_at_ms(now_ms);
            let until_due = due_ms.saturating_sub(now_ms).saturating_add(50);
            failure_backoff(failures, 5).min(Duration::from_millis(until_due))
        }
    };
    refresh.min(wait)
}

/// How long after an accepted upload the relay uploads its descriptor again: the publish
/// interval less a random part of up to a quarter of it (`r` drawn uniformly), so that relays
/// that started together (a test network, or many restarted at once after an outage) do not go
/// on uploading, and the authorities storing, all in the same moment every interval; and no
/// descriptor waits longer than the interval to be renewed. Never less than a second (or the
/// interval, if shorter): a descriptor signed in the same second as the last is not newer, and
/// the authorities would refuse it.
fn republish_wait(interval: Duration, r: u32) -> Duration {
    less_random_part(interval, 4, r).max(interval.min(Duration::from_secs(1)))
}

/// `d` less a random part of up to `d / share` (`r` drawn uniformly over `u32`).
fn less_random_part(d: Duration, share: u32, r: u32) -> Duration {
    let part = d.as_nanos() / u128::from(share.max(1)) * u128::from(r) / u128::from(u32::MAX);
    d.saturating_sub(Duration::from_nanos(
        u64::try_from(part).unwrap_or(u64::MAX),
    ))
}

/// This relay's descriptor as of now, signed.
pub(crate) fn signed_descriptor(core: &Core, address: std::net::SocketAddr) -> Option<String> {
    let mut family = core.config.family.clone();
    family.sort();
    family.dedup();
    let desc = RelayDescriptor {
        nickname: core.config.nickname.clone(),
        address,
        identity: core.keys.identity.public(),
        ntor_key: core.onion_keys().current.public().to_bytes(),
        link_key: core.keys.link.public().to_bytes(),
        bandwidth: core.config.bandwidth,
        family,
        mailbox: core.config.mailbox,
        published: unix_now(),
    };
    match desc.sign(&core.keys.identity) {
        Ok(text) => Some(text),
        Err(e) => {
            warn!("cannot sign our descriptor: {e}");
            None
        }
    }
}

/// Answers an authority's probe on an accepted probe link (`docs/spec.md` §5.7): proves the
/// onion key under this relay's fingerprint and signs the link's handshake hash with the
/// identity key, then sends the blocks asked for. Probes count against the same per-IP rate
/// as circuit creation, since each costs a handshake and a signature.
pub(crate) async fn answer_probe(
    core: &Core,
    acc: shallot_link::Accepted,
    peer: std::net::SocketAddr,
) {
    if !core
        .admission
        .allow_create(peer.ip(), std::time::Instant::now())
    {
        debug!("probe from {peer} refused: over its rate");
        return;
    }
    let onion = core.onion_keys();
    let keys = shallot_directory::probe::RelayProbeKeys {
        identity: &core.keys.identity,
        onion: onion.accepted(std::time::SystemTime::now()),
    };
    let limit = core.config.limits.handshake_timeout;
    match shallot_directory::probe::respond(
        &keys,
        &acc.handshake_hash,
        acc.reader,
        acc.writer,
        limit,
    )
    .await
    {
        Ok(()) => debug!("answered a reachability probe from {peer}"),
        Err(e) => debug!("reachability probe from {peer} not answered: {e}"),
    }
}

/// The longest wait between two attempts to send a descriptor to the authorities that could
/// not be reached.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait before the next attempt to send a descriptor to the authorities that could not be
/// reached, after `attempts` attempts so far (the first upload included): 1 s, 2 s, 4 s, ...
/// ([`failure_backoff`]) up to a minute, less a random part of up to half (`r` drawn uniformly), so that relays
/// that failed together (an authority back after an outage) do not all come back together.
fn retry_wait(attempts: u32, r: u32) -> Duration {
    let full = failure_backoff(attempts.saturating_sub(1), 6).min(RETRY_MAX);
    less_random_part(full, 2, r)
}

/// Whether an upload that failed with `e` may succeed if sent again unchanged: the authority
/// could not be reached or did not answer in time. An answer, even a refusal that might not
/// last (429 for an upload rate, 503 when full), is not asked again before the next
/// publication: those limits are shared with the uploader's network, and the relay would spend
/// them.
fn worth_retrying(e: &UploadError) -> bool {
    matches!(e, UploadError::Http(_))
}

/// Sends `text` again to the authorities `to` that could not be reached when it was
/// published (an authority down when the relay started, say), after waits of [`retry_wait`],
/// until each has answered. Runs beside the directory loop, which aborts it when it publishes
/// the next descriptor (or stops): so no older descriptor can reach an authority after a
/// newer one was sent, and a hanging authority holds up none of the loop's consensus fetches.
/// The same text, so that every authority holds the same descriptor: the consensus takes a
/// relay's entry from the descriptor a majority of votes name (`docs/spec.md` §5.4).
async fn resend(core: Arc<Core>, text: String, mut to: Vec<AuthorityInfo>, limit: Duration) {
    let mut attempts = 0u32;
    loop {
        attempts = attempts.saturating_add(1);
        tokio::time::sleep(retry_wait(attempts, rand::random())).await;
        let (accepted, again) = upload(&core, &text, &to, limit).await;
        if accepted > 0 {
            info!(accepted, "descriptor taken on a later attempt");
        }
        if again.is_empty() {
            return;
        }
        to = again;
    }
}

/// Uploads `text` to `authorities` at once: how many accepted it, and those worth asking
/// again ([`worth_retrying`]).
async fn upload(
    core: &Core,
    text: &str,
    authorities: &[AuthorityInfo],
    limit: Duration,
) -> (usize, Vec<AuthorityInfo>) {
    let uploads: Vec<_> = authorities
        .iter()
        .map(|auth| {
            let (text, auth) = (text.to_string(), auth.clone());
            tokio::spawn(async move {
                let result = upload_descriptor(auth.address, &text, limit).await;
                if let Err(e) = &result {
                    info!(authority = %auth.name, "descriptor upload failed: {e}");
                }
                (auth, result)
            })
        })
        .collect();
    let (mut accepted, mut again) = (0, Vec::new());
    let stats = core.stats();
    for upload in uploads {
        match upload.await {
            Ok((_, Ok(()))) => {
                Stats::bump(&stats.descriptor_uploads_accepted);
                accepted += 1;
            }
            Ok((auth, Err(e))) => {
                Stats::bump(&stats.descriptor_uploads_failed);
                if worth_retrying(&e) {
                    again.push(auth);
                }
            }
            Err(_) => Stats::bump(&stats.descriptor_uploads_failed),
        }
    }
    debug!(accepted, "published descriptor");
    (accepted, again)
}

/// The relays a consensus lets this relay extend to.
pub(crate) fn netview_of(consensus: &Consensus) -> NetView {
    NetView::new(
        consensus
            .relays
            .iter()
            .filter(|r| r.flags.contains(Flags::RUNNING))
            .map(|r| PeerInfo {
                id: r.id,
                address: r.address,
                link_key: r.link_key,
            }),
    )
}

/// Publishes and follows the consensus until the relay stops.
pub(crate) async fn directory_loop(
    core: Arc<Core>,
    network: NetworkFile,
    address: std::net::SocketAddr,
    mut stopped: watch::Receiver<bool>,
) {
    let timing = core.config.timing.clone();
    let limit = Duration::from_secs(network.params.request_timeout_secs);
    let mut consensus: Option<Consensus> = None;
    let mut next_publish = tokio::time::Instant::now();
    // Resending the last descriptor to authorities that could not be reached; replaced (and
    // so aborted) by the next publication.
    let mut _resending: Option<AbortOnDrop<()>> = None;
    let mut next_fetch = tokio::time::Instant::now();
    let mut last_fetch = next_fetch;
    let mut failures = 0u32;
    loop {
        let now = tokio::time::Instant::now();
        if now >= next_publish {
            let text = signed_descriptor(&core, address);
            let (accepted, again) = match &text {
                Some(text) => upload(&core, text, &network.authorities, limit).await,
                None => (0, Vec::new()),
            };
            // If none took it, a new descriptor soon; otherwise the next within the publish
            // interval, and this one again meanwhile to those that could not be reached.
            let wait = match accepted {
                0 => timing.consensus_refresh.min(Duration::from_secs(10)),
                _ => republish_wait(timing.publish_interval, rand::random()),
            };
            next_publish = tokio::time::Instant::now() + wait;
            _resending = text
                .filter(|_| accepted > 0 && !again.is_empty())
                .map(|text| {
                    AbortOnDrop::new(tokio::spawn(resend(core.clone(), text, again, limit)))
                });
        }
        if now >= next_fetch {
            last_fetch = now;
            match fetch_consensus(&network, consensus.as_ref(), unix_now(), limit).await {
                // The held one again, no longer fresh: the authorities have no newer one with
                // enough signatures yet (`docs/spec.md` §5.6). Asked again after a back-off,
                // as after a failure, not every second for as long as that lasts.
                Ok((c, _))
                    if brings_nothing_new(
                        &c,
                        consensus.as_ref().map(|h| h.valid_after),
                        unix_now(),
                    ) =>
                {
                    debug!("consensus fetch: no newer consensus served yet");
                    failures += 1;
                }
                Ok((c, _)) => {
                    let view = netview_of(&c);
                    if consensus.is_none() {
                        info!(
                            relays = view.len(),
                            "consensus received: circuits can extend"
                        );
                    }
                    debug!(relays = view.len(), "new consensus");
                    match core.netview.write() {
                        Ok(mut v) => *v = Arc::new(view),
                        Err(p) => *p.into_inner() = Arc::new(view),
                    }
                    core.netview_changed.notify_waiters();
                    let c = c.into_inner();
                    core.stats()
                        .consensus_valid_after
                        .store(c.valid_after, std::sync::atomic::Ordering::Relaxed);
                    core.consensus.send_replace(Some(Arc::new(c.clone())));
                    consensus = Some(c);
                    failures = 0;
                }
                Err(e) => {
                    debug!("consensus fetch: {e}");
                    if consensus.is_none() && failures == 0 {
                        let due = network
                            .params
                            .next_first_consensus_at_ms(unix_now().saturating_mul(1000));
                        info!(
                            "no consensus yet; one may be served at {} (votes every {} s); \
                             retrying until then",
                            shallot_directory::network::clock_utc(due / 1000),
                            network.params.voting_interval_secs
                        );
                    }
                    failures += 1;
                }
            }
            let now_ms = shallot_directory::schedule::now_ms();
            let held = (consensus.as_ref(), failures);
            let wait = next_fetch_wait(held, now_ms, &network.params, timing.consensus_refresh);
            next_fetch = tokio::time::Instant::now() + wait;
        }
        let wake = next_publish.min(next_fetch);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = core.republish.notified() => next_publish = tokio::time::Instant::now(),
            // At most one fetch on demand a second: an unknown relay may be brand new.
            _ = core.refetch.notified() => {
                next_fetch = next_fetch.min(last_fetch + Duration::from_secs(1));
            }
            _ = stopped.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_net::netdir::cache_spread_ms;

    /// A consensus valid from `valid_after` and fresh until `fresh_until`.
    fn consensus(valid_after: u64, fresh_until: u64) -> Consensus {
        shallot_net::testing::consensus(Vec::new(), valid_after, fresh_until, u64::MAX)
    }

    #[test]
    fn the_next_fetch_is_soon_after_fresh_until_and_never_past_the_refresh() {
        let params = NetworkParams::default();
        let hour = Duration::from_secs(3600);
        let held = consensus(1_000, 4_600);
        // 1,000 s before fresh-until: 0.2 s to 15.2 s after it.
        for _ in 0..50 {
            let wait = next_fetch_wait((Some(&held), 0), 3_600_000, &params, hour);
            let ms = u64::try_from(wait.as_millis()).unwrap();
            assert!(
                (1_000_200..=1_000_200 + cache_spread_ms(3600)).contains(&ms),
                "{ms}"
            );
        }
        // The refresh bounds it.
        let minute = Duration::from_secs(60);
        assert_eq!(
            next_fetch_wait((Some(&held), 0), 3_600_000, &params, minute),
            minute
        );
        // After failures, or once it is no longer fresh: the back-off, 2^f s up to 32 s.
        assert_eq!(
            next_fetch_wait((Some(&held), 3), 3_600_000, &params, hour),
            Duration::from_secs(8)
        );
        assert_eq!(
            next_fetch_wait((Some(&held), 0), 4_600_000, &params, hour),
            Duration::from_secs(1)
        );
        assert_eq!(
            next_fetch_wait((Some(&held), 40), 4_600_000, &params, hour),
            Duration::from_secs(32)
        );
    }

    /// A consensus naming a fresh-until as far off as there is (it would need a majority of
    /// the authorities' signatures) does not stop the relay fetching: the refresh still bounds
    /// the wait, and nothing overflows, at any time now.
    #[test]
    fn a_far_future_fresh_until_waits_only_the_refresh() {
        let params = NetworkParams::default();
        let refresh = Duration::from_secs(300);
        for (valid_after, fresh_until) in [(0, u64::MAX), (1_000, u64::MAX / 1000 + 1), (1, 2)] {
            let held = consensus(valid_after, fresh_until);
            for now_ms in [0, 1_500, u64::MAX / 2, u64::MAX] {
                let wait = next_fetch_wait((Some(&held), 0), now_ms, &params, refresh);
                assert!(wait <= refresh, "{fresh_until} {now_ms}: {wait:?}");
            }
        }
        // With none held: no later than the back-off.
        for now_ms in [0, 1_796_095_800_000] {
            assert!(next_fetch_wait((None, 0), now_ms, &params, refresh) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn republishing_waits_three_quarters_to_the_whole_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(republish_wait(hour, 0), hour);
        assert_eq!(republish_wait(hour, u32::MAX), Duration::from_secs(2700));
        let half = republish_wait(hour, u32::MAX / 2).as_millis();
        assert!((3_149_999..=3_150_001).contains(&half), "{half}");
        // Relays started together draw different waits.
        let waits: std::collections::HashSet<Duration> = (0..20)
            .map(|_| republish_wait(Duration::from_secs(60), rand::random()))
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
        assert!(waits
            .iter()
            .all(|w| (Duration::from_secs(45)..=Duration::from_secs(60)).contains(w)));
        // Whatever a configuration names, nothing overflows.
        assert_eq!(republish_wait(Duration::MAX, 0), Duration::MAX);
        assert!(republish_wait(Duration::MAX, u32::MAX) < Duration::MAX);
        assert_eq!(republish_wait(Duration::ZERO, u32::MAX), Duration::ZERO);
        // The shortest interval a relay may be given, 1 s, is kept whole: a second
        // descriptor in the same second would be refused as not newer.
        let second = Duration::from_secs(1);
        assert_eq!(republish_wait(second, u32::MAX), second);
        assert_eq!(
            republish_wait(Duration::from_millis(1200), u32::MAX),
            second
        );
    }

    #[test]
    fn a_descriptor_goes_again_after_doubling_waits_up_to_a_minute_less_up_to_half() {
        let secs = |r| {
            (1..=9)
                .map(|n| retry_wait(n, r).as_secs_f64())
                .collect::<Vec<_>>()
        };
        assert_eq!(secs(0), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]);
        assert_eq!(
            secs(u32::MAX),
            [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
        );
        assert_eq!(retry_wait(u32::MAX, 0), RETRY_MAX);
        assert_eq!(retry_wait(0, 0), Duration::from_secs(1));
    }

    /// An authority that could not be reached or did not answer in time is asked again; one
    /// that answered, even with a refusal that might not last, is not.
    #[test]
    fn only_an_authority_that_did_not_answer_is_asked_again() {
        use shallot_directory::fetch::StatusCode;
        use shallot_directory::HttpError;
        let refused = |code: u16| UploadError::Refused {
            status: StatusCode::from_u16(code).unwrap(),
            reason: String::new(),
        };
        let down = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(worth_retrying(&UploadError::Http(HttpError::Connect(down))));
        assert!(worth_retrying(&UploadError::Http(HttpError::Timeout(
            Duration::from_secs(5)
        ))));
        for code in [400, 408, 409, 413, 429, 503] {
            assert!(!worth_retrying(&refused(code)), "{code}");
        }
    }
}
