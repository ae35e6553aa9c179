//! Getting the period's votes and the descriptors they name (`docs/spec.md` §5.6):
//!
//! * [`exchange_votes`], until the exchange closes at `T − I/2`: fetch each peer's own vote
//!   from it (`GET /vote/<T>`) while it is not held, each peer on its own schedule;
//! * [`compare`], from then until `T − I/4`: fetch every peer's vote list
//!   (`GET /votes/<T>`), again and again, each peer on its own schedule; fetch and check each vote a peer lists that is not held here
//!   (`GET /votes/<T>/<digest>`, from that peer: a vote a peer got from an authority that did
//!   not send it here, or a second vote that proves an equivocation), and fetch each
//!   descriptor a majority of votes names that is not held here (`GET /descriptor/<digest>`),
//!   over and over, so that late evidence still arrives. In the second half of the comparison
//!   a vote is fetched only from a peer that is not its author: evidence an honest authority
//!   found still spreads to every other, but an author that reveals a second vote of its own
//!   only at the last moment, to some, is not believed by anyone. A vote fetched from its
//!   author must arrive by `T − 3I/8`, so the whole second half is left to pass it on. What a
//!   peer's list can make this authority fetch is bounded
//!   ([`shallot_directory::equivocation::missing`]: no author that is not configured, one
//!   vote per author per pass, no fetch twice), and at most [`MAX_VOTE_FETCHES`] run at
//!   once. The last lists fetched go to [`shallot_directory::equivocation::judge`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode};
use shallot_proto::dir::descriptor::descriptor_digest;
use shallot_proto::dir::{RelayDescriptor, Vote, MAX_DESCRIPTOR_LEN, MAX_VOTE_LEN};
use tokio::task::JoinSet;

use super::each_peer::until_each_gives;
use super::schedule::{now_ms, Schedule};
use super::state::{Accepted, VoteRecord};
use super::voting::{retry_delay, time_left};
use super::Shared;
use shallot_directory::compute::needed_descriptors;
use shallot_directory::equivocation::{
    missing, missing_from_others, Fetch, VoteList, MAX_VOTE_LIST_LEN,
};
use shallot_directory::fetch::http_request;
use shallot_directory::network::AuthorityInfo;
use shallot_rt::lock;

/// Votes (up to 32 MiB each) fetched at once during the comparison, whatever peers list.
pub const MAX_VOTE_FETCHES: usize = 4;

/// Fetches the votes of peers whose vote is not held yet, until all are or the exchange
/// closes; each peer is asked on its own schedule ([`until_each_gives`]).
pub(crate) async fn exchange_votes(shared: &Arc<Shared>, schedule: &Schedule, t: u64) {
    let deadline = schedule.freeze_at(t);
    let peers: Vec<AuthorityInfo> = shared.peers().cloned().collect();
    let (shared, schedule) = (shared.clone(), *schedule);
    let retry = retry_delay(&schedule, t);
    until_each_gives(peers, deadline, retry, move |peer| {
        let shared = shared.clone();
        async move { fetch_vote(&shared, &schedule, t, &peer, deadline).await }
    })
    .await;
}

/// Fetches `peer`'s own vote for `t` unless it is held; whether it is held now.
async fn fetch_vote(
    shared: &Shared,
    schedule: &Schedule,
    t: u64,
    peer: &AuthorityInfo,
    deadline: u64,
) -> bool {
    let held = |shared: &Shared| {
        let state = shared.state();
        state
            .votes
            .get(&t)
            .is_some_and(|h| h.contains_key(peer.key.as_bytes()))
    };
    if held(shared) {
        return true;
    }
    let limit = time_left(shared, deadline);
    let path = format!("/vote/{t}");
    match http_request(peer.address, Method::GET, &path, None, limit, MAX_VOTE_LEN).await {
        Ok(r) if r.status == StatusCode::OK => {
            match check_vote(shared, schedule, t, &r.body, Some(&peer.key)) {
                Ok(record) => {
                    let mut state = shared.state();
                    if !state.frozen.contains(&t) && !state.add_vote(t, record) {
                        tracing::warn!(
                            "{} served a vote that differs from the one it sent us",
                            peer.name
                        );
                    }
                }
                Err(e) => tracing::warn!("vote from {} refused: {e}", peer.name),
            }
        }
        Ok(r) => tracing::debug!("{} has no vote yet: {}", peer.name, r.text()),
        Err(e) => tracing::debug!("cannot fetch the vote of {}: {e}", peer.name),
    }
    held(shared)
}

/// Checks a vote for period `t`: it verifies, it is by a configured authority (`author` when
/// given), and its times are the period's.
pub(crate) fn check_vote(
    shared: &Shared,
    schedule: &Schedule,
    t: u64,
    body: &[u8],
    author: Option<&shallot_crypto::keys::VerifyingKey>,
) -> Result<VoteRecord, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())?;
    let vote = Vote::parse_and_verify(text).map_err(|e| e.to_string())?;
    if author.is_some_and(|a| *a != vote.authority)
        || shared.network.authority(&vote.authority).is_none()
    {
        return Err("signed by another key".into());
    }
    let p = schedule.period(t);
    if (vote.valid_after, vote.fresh_until, vote.valid_until)
        != (p.valid_after, p.fresh_until, p.valid_until)
    {
        return Err("for another period".into());
    }
    Ok(VoteRecord::new(vote, text.to_string()))
}

/// Compares views with the peers until compute time; returns the last vote list each peer
/// gave.
pub(crate) async fn compare(
    shared: &Arc<Shared>,
    schedule: &Schedule,
    t: u64,
) -> BTreeMap<[u8; 32], VoteList> {
    let deadline = schedule.compute_at(t);
    let authors_until = (schedule.freeze_at(t) + deadline) / 2;
    // Each peer's list is fetched again and again until the deadline (late evidence still
    // arrives), each peer on its own schedule: a silent peer holds up no other's list.
    let lists: Arc<Mutex<BTreeMap<[u8; 32], VoteList>>> = Arc::default();
    let listing = {
        let (shared, lists) = (shared.clone(), lists.clone());
        let peers: Vec<AuthorityInfo> = shared.peers().cloned().collect();
        until_each_gives(peers, deadline, retry_delay(schedule, t), move |peer| {
            let (shared, lists) = (shared.clone(), lists.clone());
            async move {
                if let Some(list) = fetch_list(&shared, deadline, t, &peer).await {
                    lock(&lists).insert(*peer.key.as_bytes(), list);
                }
                false
            }
        })
    };
    let fetching = async {
        let mut fetches = Fetches::default();
        loop {
            let from_authors = now_ms() < authors_until;
            // A vote fetched from its author must arrive before the second half begins, so
            // that every other authority has that half to fetch it from here.
            let votes_until = if from_authors {
                authors_until
            } else {
                deadline
            };
            let listed = lock(&lists).clone();
            fetch_listed_votes(
                shared,
                schedule,
                votes_until,
                t,
                &listed,
                from_authors,
                &mut fetches,
            )
            .await;
            fetch_descriptors(shared, deadline, t).await;
            let left = deadline.saturating_sub(now_ms());
            if left == 0 {
                return;
            }
            tokio::time::sleep(retry_delay(schedule, t).min(Duration::from_millis(left))).await;
        }
    };
    tokio::join!(listing, fetching);
    let lists = lock(&lists).clone();
    lists
}

/// What the comparison of one period has fetched of the listed votes, so that nothing is
/// fetched twice, and which peers were reported for listing strangers.
#[derive(Debug, Default)]
pub(crate) struct Fetches {
    tried: BTreeSet<Fetch>,
    reported: BTreeSet<[u8; 32]>,
}

/// `peer`'s list of the votes it holds for `t`, if it gives a valid one.
async fn fetch_list(
    shared: &Shared,
    deadline: u64,
    t: u64,
    peer: &AuthorityInfo,
) -> Option<VoteList> {
    let limit = time_left(shared, deadline);
    let path = format!("/votes/{t}");
    let r = http_request(
        peer.address,
        Method::GET,
        &path,
        None,
        limit,
        MAX_VOTE_LIST_LEN,
    )
    .await;
    match r {
        Ok(r) if r.status == StatusCode::OK => {
            let parsed = std::str::from_utf8(&r.body)
                .map_err(|_| "not UTF-8 text".to_string())
                .and_then(|s| VoteList::parse(s).map_err(|e| e.to_string()));
            match parsed {
                Ok(list) if list.valid_after == t => return Some(list),
                Ok(_) => tracing::warn!("{} listed the votes of another period", peer.name),
                Err(e) => tracing::warn!("vote list from {} refused: {e}", peer.name),
            }
        }
        Ok(r) => tracing::debug!("{} gave no vote list: {}", peer.name, r.text()),
        Err(e) => tracing::debug!("cannot fetch the vote list of {}: {e}", peer.name),
    }
    None
}

async fn fetch_listed_votes(
    shared: &Arc<Shared>,
    schedule: &Schedule,
    deadline: u64,
    t: u64,
    lists: &BTreeMap<[u8; 32], VoteList>,
    from_authors: bool,
    fetches: &mut Fetches,
) {
    let holdings = shared.state().holdings(t);
    let authorities: BTreeSet<[u8; 32]> = shared
        .network
        .authorities
        .iter()
        .map(|a| *a.key.as_bytes())
        .collect();
    let wanted = if from_authors {
        missing(&holdings, lists, &authorities, &fetches.tried)
    } else {
        missing_from_others(&holdings, lists, &authorities, &fetches.tried)
    };
    for (peer, count) in &wanted.strangers {
        if fetches.reported.insert(*peer) {
            let name = shared
                .network
                .authorities
                .iter()
                .find(|a| a.key.as_bytes() == peer)
                .map_or("a peer", |a| a.name.as_str());
            tracing::warn!(
                "{name} lists votes of {count} authorities that are not configured for period                  {t}: ignored"
            );
        }
    }
    fetches.tried.extend(wanted.fetch.iter().copied());
    let mut gets = JoinSet::new();
    let mut queue = wanted.fetch.into_iter();
    loop {
        while gets.len() < MAX_VOTE_FETCHES {
            let Some((peer, author, digest)) = queue.next() else {
                break;
            };
            let Some(info) = shared
                .network
                .authorities
                .iter()
                .find(|a| a.key.as_bytes() == &peer)
                .cloned()
            else {
                continue;
            };
            let limit = time_left(shared, deadline);
            gets.spawn(async move {
                let path = format!("/votes/{t}/{}", shallot_crypto::hex::encode(&digest));
                let r =
                    http_request(info.address, Method::GET, &path, None, limit, MAX_VOTE_LEN).await;
                (info, author, digest, r)
            });
        }
        let Some(joined) = gets.join_next().await else {
            break;
        };
        let Ok((peer, author, digest, r)) = joined else {
            continue;
        };
        let Ok(r) = r else { continue };
        if r.status != StatusCode::OK {
            tracing::info!("{} listed a vote it does not serve", peer.name);
            continue;
        }
        let author_key = shared
            .network
            .authorities
            .iter()
            .find(|a| a.key.as_bytes() == &author)
            .map(|a| a.key);
        match check_vote(shared, schedule, t, &r.body, author_key.as_ref()) {
            Ok(record) if record.digest == digest => {
                shared.state().add_vote(t, record);
            }
            Ok(_) => tracing::warn!("{} served a vote with another digest", peer.name),
            Err(e) => tracing::warn!("vote listed by {} refused: {e}", peer.name),
        }
    }
}

/// Fetches each descriptor a majority of the held votes names that is not held here, from
/// the peers whose votes name it.
async fn fetch_descriptors(shared: &Arc<Shared>, deadline: u64, t: u64) {
    let n = shared.network.authorities.len();
    let wanted: Vec<([u8; 32], Vec<AuthorityInfo>)> = {
        let state = shared.state();
        let Some(held) = state.votes.get(&t) else {
            return;
        };
        let votes: Vec<Vote> = held.values().map(|r| r.vote.clone()).collect();
        needed_descriptors(&votes, n)
            .into_iter()
            .filter(|d| !state.by_digest.contains_key(d))
            .map(|d| {
                let sources = votes
                    .iter()
                    .filter(|v| v.authority != shared.me)
                    .filter(|v| v.relays.iter().any(|e| e.descriptor == d))
                    .filter_map(|v| shared.network.authority(&v.authority).cloned())
                    .collect();
                (d, sources)
            })
            .collect()
    };
    let mut gets = JoinSet::new();
    for (digest, sources) in wanted {
        let limit = time_left(shared, deadline);
        gets.spawn(async move {
            for peer in sources {
                let path = format!("/descriptor/{}", shallot_crypto::hex::encode(&digest));
                let Ok(r) = http_request(
                    peer.address,
                    Method::GET,
                    &path,
                    None,
                    limit,
                    MAX_DESCRIPTOR_LEN,
                )
                .await
                else {
                    continue;
                };
                let found = (r.status == StatusCode::OK)
                    .then(|| String::from_utf8(r.body).ok())
                    .flatten()
                    .filter(|text| descriptor_digest(text) == digest)
                    .and_then(|text| {
                        RelayDescriptor::parse_and_verify(&text)
                            .ok()
                            .map(|d| Accepted::new(d, text))
                    });
                match found {
                    Some(a) => return Some(a),
                    None => tracing::info!(
                        "{} did not serve a valid descriptor for a digest its vote names",
                        peer.name
                    ),
                }
            }
            None
        });
    }
    while let Some(Ok(found)) = gets.join_next().await {
        if let Some(a) = found {
            shared.state().keep_by_digest(Arc::new(a), t);
        }
    }
}
