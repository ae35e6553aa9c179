//! The voting loop (`docs/spec.md` §5.6): for each period `T`, vote at `T − I/2` and
//! exchange votes with the peers until `T − I/4`; then compute and sign the consensus if a
//! majority of all authorities' votes are held, and collect the peers' signatures over the
//! same body until `T + I/2`. The consensus is served from `T` (see [`super::state::State::serving`]).

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use shallot_crypto::hex;
use shallot_proto::dir::{DetachedSignature, Vote, MAX_VOTE_LEN};
use tokio::task::JoinSet;

use super::schedule::{now_ms, now_secs, sleep_until_ms, Schedule};
use super::state::{ConsensusRecord, VoteRecord};
use super::Shared;
use crate::compute::compute_consensus;
use crate::fetch::http_request;
use crate::network::AuthorityInfo;

/// Runs the schedule until aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let schedule = Schedule::new(shared.network.params.voting_interval_secs);
    let mut t = schedule.next_period(now_ms());
    loop {
        sleep_until_ms(schedule.vote_at(t)).await;
        if let Err(e) = vote(&shared, &schedule, t).await {
            tracing::error!("cannot vote for period {t}: {e}");
        }
        exchange_votes(&shared, &schedule, t).await;
        sleep_until_ms(schedule.compute_at(t)).await;
        if compute(&shared, &schedule, t).await {
            collect_signatures(&shared, &schedule, t).await;
        }
        // If this round overran (a suspended machine, a slow disk), skip to a period there
        // is still time for.
        t = (t + schedule.interval_secs()).max(schedule.next_period(now_ms()));
    }
}

/// The wait between retries of peers that have not answered yet.
fn retry_delay(schedule: &Schedule) -> Duration {
    Duration::from_millis((schedule.interval_secs() * 1000 / 20).clamp(100, 5000))
}

/// Builds, signs and stores this authority's vote for `t`; expires old descriptors and
/// saves the relay history on the way.
async fn vote(shared: &Arc<Shared>, schedule: &Schedule, t: u64) -> Result<(), String> {
    let params = shared.network.params;
    let now = now_secs();
    let (text, expired, history) = {
        let _serial = shared.descriptor_lock.lock().await;
        let mut state = shared.state();
        let expired = state.expire(now, params.descriptor_max_age_secs);
        let vote = state.build_vote(shared.me, schedule.period(t), now, &params);
        let text = vote.sign(&shared.key).map_err(|e| e.to_string())?;
        tracing::info!("voting for period {t}: {} relays", vote.relays.len());
        state.votes.entry(t).or_default().insert(
            *shared.me.as_bytes(),
            Arc::new(VoteRecord {
                vote,
                text: text.clone().into(),
            }),
        );
        state.prune(t.saturating_sub(2 * schedule.interval_secs()));
        let history = state.history();
        for id in &expired {
            shared.store.remove_descriptor(id);
        }
        (text, expired, history)
    };
    if !expired.is_empty() {
        tracing::info!("dropped {} expired descriptors", expired.len());
    }
    shared
        .persist("relay history", move |store| store.save_relays(&history))
        .await;
    push_vote(shared, schedule, t, text).await;
    Ok(())
}

/// Sends this authority's vote to every peer, each within the time left before compute.
async fn push_vote(shared: &Arc<Shared>, schedule: &Schedule, t: u64, text: String) {
    let deadline = schedule.compute_at(t);
    let mut posts = JoinSet::new();
    for peer in shared.peers().cloned() {
        let text = text.clone();
        let limit = time_left(shared, deadline);
        posts.spawn(async move {
            let r =
                http_request(peer.address, Method::POST, "/vote", Some(text), limit, 4096).await;
            match r {
                Ok(r) if r.status == StatusCode::OK => {}
                Ok(r) => tracing::warn!("{} refused our vote: {}", peer.name, r.text()),
                Err(e) => tracing::debug!("cannot send our vote to {}: {e}", peer.name),
            }
        });
    }
    while posts.join_next().await.is_some() {}
}

/// The time left before `deadline` (unix ms), capped at the request timeout.
fn time_left(shared: &Shared, deadline: u64) -> Duration {
    let cap = Duration::from_secs(shared.network.params.request_timeout_secs);
    Duration::from_millis(deadline.saturating_sub(now_ms()).max(1)).min(cap)
}

/// Fetches the votes of peers whose vote is not held yet, until all are or compute time.
async fn exchange_votes(shared: &Arc<Shared>, schedule: &Schedule, t: u64) {
    let deadline = schedule.compute_at(t);
    while now_ms() < deadline {
        let missing: Vec<AuthorityInfo> = {
            let state = shared.state();
            let held = state.votes.get(&t);
            shared
                .peers()
                .filter(|p| !held.is_some_and(|h| h.contains_key(p.key.as_bytes())))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut gets = JoinSet::new();
        for peer in missing {
            let limit = time_left(shared, deadline);
            gets.spawn(async move {
                let path = format!("/vote/{t}");
                let r =
                    http_request(peer.address, Method::GET, &path, None, limit, MAX_VOTE_LEN).await;
                (peer, r)
            });
        }
        while let Some(Ok((peer, r))) = gets.join_next().await {
            match r {
                Ok(r) if r.status == StatusCode::OK => {
                    if let Err(e) = accept_peer_vote(shared, &peer, t, r.body) {
                        tracing::warn!("vote from {} refused: {e}", peer.name);
                    }
                }
                Ok(r) => tracing::debug!("{} has no vote yet: {}", peer.name, r.text()),
                Err(e) => tracing::debug!("cannot fetch the vote of {}: {e}", peer.name),
            }
        }
        let wait =
            retry_delay(schedule).min(Duration::from_millis(deadline.saturating_sub(now_ms())));
        tokio::time::sleep(wait).await;
    }
}

/// Checks a vote fetched from `peer` for period `t` and keeps it.
fn accept_peer_vote(
    shared: &Shared,
    peer: &AuthorityInfo,
    t: u64,
    body: Vec<u8>,
) -> Result<(), String> {
    let text = String::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())?;
    let vote = Vote::parse_and_verify(&text).map_err(|e| e.to_string())?;
    if vote.authority != peer.key {
        return Err("signed by another key".into());
    }
    let schedule = Schedule::new(shared.network.params.voting_interval_secs);
    if vote.valid_after != t
        || (vote.fresh_until, vote.valid_until)
            != (
                schedule.period(t).fresh_until,
                schedule.period(t).valid_until,
            )
    {
        return Err("for another period".into());
    }
    shared
        .state()
        .votes
        .entry(t)
        .or_default()
        .entry(*peer.key.as_bytes())
        .or_insert_with(|| {
            Arc::new(VoteRecord {
                vote,
                text: text.into(),
            })
        });
    Ok(())
}

/// Computes and signs the consensus for `t` if a majority of votes are held; returns
/// whether it did.
async fn compute(shared: &Arc<Shared>, schedule: &Schedule, t: u64) -> bool {
    let network = &shared.network;
    let votes: Vec<Vote> = {
        let state = shared.state();
        state
            .votes
            .get(&t)
            .map(|h| h.values().map(|r| r.vote.clone()).collect())
            .unwrap_or_default()
    };
    if votes.len() < network.majority() {
        tracing::warn!(
            "no consensus for period {t}: {} of {} votes held, {} needed",
            votes.len(),
            network.authorities.len(),
            network.majority()
        );
        return false;
    }
    let signed = compute_consensus(
        &votes,
        network.authorities.len(),
        schedule.period(t),
        network.params.consensus_params(),
    )
    .map_err(|e| e.to_string())
    .and_then(|mut c| {
        let sig = c.sign_body(&shared.key).map_err(|e| e.to_string())?;
        c.add_signature(shared.me, sig);
        ConsensusRecord::new(c).map_err(|e| e.to_string())
    });
    let record = match signed {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot compute the consensus for period {t}: {e}");
            return false;
        }
    };
    tracing::info!(
        "computed consensus for period {t} from {} votes: {} relays, digest {}",
        votes.len(),
        record.consensus.relays.len(),
        hex::encode(&record.digest)
    );
    let text = record.text.clone();
    shared.state().consensuses.insert(t, record);
    shared
        .persist("consensus", move |store| store.save_consensus(&text))
        .await;
    true
}

/// Fetches peers' signatures over this authority's consensus body for `t`, until every
/// peer signed or `T + I/2`.
async fn collect_signatures(shared: &Arc<Shared>, schedule: &Schedule, t: u64) {
    let deadline = schedule.signatures_until(t);
    while now_ms() < deadline {
        let missing: Vec<AuthorityInfo> = {
            let state = shared.state();
            let Some(record) = state.consensuses.get(&t) else {
                return;
            };
            shared
                .peers()
                .filter(|p| !record.consensus.signatures.iter().any(|(k, _)| *k == p.key))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut gets = JoinSet::new();
        for peer in missing {
            let limit = time_left(shared, deadline);
            gets.spawn(async move {
                let path = format!("/signature/{t}");
                let r = http_request(peer.address, Method::GET, &path, None, limit, 1024).await;
                (peer, r)
            });
        }
        let mut added = false;
        while let Some(Ok((peer, r))) = gets.join_next().await {
            match r {
                Ok(r) if r.status == StatusCode::OK => {
                    match add_signature(shared, &peer, t, &r.body) {
                        Ok(()) => added = true,
                        Err(e) => tracing::warn!("signature from {} not used: {e}", peer.name),
                    }
                }
                Ok(r) => tracing::debug!("{} has no signature yet: {}", peer.name, r.text()),
                Err(e) => tracing::debug!("cannot fetch the signature of {}: {e}", peer.name),
            }
        }
        if added {
            let text = shared.state().consensuses.get(&t).map(|r| r.text.clone());
            if let Some(text) = text {
                shared
                    .persist("consensus", move |store| store.save_consensus(&text))
                    .await;
            }
        }
        let wait =
            retry_delay(schedule).min(Duration::from_millis(deadline.saturating_sub(now_ms())));
        tokio::time::sleep(wait).await;
    }
}

/// Checks a detached signature from `peer` against this authority's body for `t` and adds it.
fn add_signature(shared: &Shared, peer: &AuthorityInfo, t: u64, body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())?;
    let d = DetachedSignature::parse(text).map_err(|e| e.to_string())?;
    if d.authority != peer.key {
        return Err("signed by another key".into());
    }
    let mut state = shared.state();
    let record = state
        .consensuses
        .get_mut(&t)
        .ok_or_else(|| "no consensus for that period".to_string())?;
    if d.digest != record.digest {
        return Err(format!(
            "it signed a different body (digest {}, ours {})",
            hex::encode(&d.digest),
            hex::encode(&record.digest)
        ));
    }
    peer.key
        .verify_strict(
            &shallot_proto::dir::signed_bytes(&record.body),
            &d.signature,
        )
        .map_err(|_| "the signature does not verify".to_string())?;
    record.consensus.add_signature(peer.key, d.signature);
    record.text = record.consensus.encode().map_err(|e| e.to_string())?.into();
    tracing::info!("period {t}: signature from {}", peer.name);
    Ok(())
}
