//! The voting loop (`docs/spec.md` §5.6): for each period `T`, vote at `T − 3I/4` and
//! exchange votes with the peers until `T − I/2`, when the exchange closes; then compare what
//! every authority holds ([`super::exchange`]) until `T − I/4`; then compute and sign the
//! consensus from the confirmed votes if they are a majority of all authorities, and collect
//! the peers' signatures over the same body until `T + I/2`. The consensus is served from `T`
//! (see [`super::state::State::serving`]). An authority that started without a valid
//! consensus first votes in the schedule's initial phase, in rounds of the initial interval
//! ([`Schedule::starting`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use rand::RngCore;
use shallot_crypto::hex;
use shallot_proto::dir::srv::commitment;
use shallot_proto::dir::{Consensus, DetachedSignature, Vote, MAX_VOTE_LEN};
use tokio::task::JoinSet;

use super::each_peer::until_each_gives;
use super::exchange::{compare, exchange_votes};
use super::schedule::{now_ms, now_secs, sleep_until_ms, Schedule};
use super::state::{ConsensusRecord, VoteRecord};
use super::vote_builder::{SrvFields, VoteSpec};
use super::Shared;
use shallot_directory::compute::{
    compute_consensus, needed_descriptors, ComputeParams, Descriptors,
};
use shallot_directory::equivocation::{judge, VoteList};
use shallot_directory::fetch::{fetch_consensus, http_request};
use shallot_directory::network::AuthorityInfo;
use shallot_directory::shared_random::{self, Base};

/// Runs the schedule until aborted.
pub(crate) async fn run(shared: Arc<Shared>) {
    let schedule = shared.schedule;
    let mut t = schedule.next_period(now_ms());
    if let Some((first, regular)) = schedule.initial_phase() {
        tracing::info!(
            "no valid consensus held: voting every {} s from the period of {} until the \
             regular schedule (every {} s) begins with the period of {}",
            schedule.round_ms(first) / 1000,
            shallot_directory::network::clock_utc(first),
            schedule.interval_secs(),
            shallot_directory::network::clock_utc(regular),
        );
    } else if shared
        .state()
        .serving(now_secs(), shared.network.majority())
        .is_none()
    {
        tracing::info!(
            "no consensus yet: the first is due at {} (votes every {} s)",
            shallot_directory::network::clock_utc(t),
            schedule.interval_secs()
        );
    }
    // Signature collection for a period runs past the next period's vote (a peer that never
    // answers holds it to its deadline, half an interval after the period starts), so it runs
    // beside the schedule, never in its way: a round that waited for a dead peer would vote
    // late, at the moment the others close their exchange, and no consensus would be made.
    // Dropping the set (when this task is aborted) stops the collections still running.
    let mut collecting = JoinSet::new();
    // A consensus saved before a restart while its signatures were still being collected:
    // collected again until its deadline, as if this authority had never stopped.
    let majority = shared.network.majority();
    let unsigned: Vec<u64> = shared
        .state()
        .consensuses
        .iter()
        .filter(|(p, r)| {
            r.consensus.signatures.len() < majority && now_ms() < schedule.signatures_until(**p)
        })
        .map(|(p, _)| *p)
        .collect();
    for p in unsigned {
        tracing::info!("collecting the peers' signatures for period {p} again");
        let shared = shared.clone();
        collecting.spawn(async move { collect_signatures(&shared, &schedule, p).await });
    }
    loop {
        while collecting.try_join_next().is_some() {}
        sleep_until_ms(schedule.vote_at(t)).await;
        // Sending this authority's vote and fetching the peers' run side by side: a peer
        // that never answers holds up neither until the exchange closes.
        let (voted, ()) = tokio::join!(
            vote(&shared, &schedule, t),
            exchange_votes(&shared, &schedule, t)
        );
        if let Err(e) = voted {
            tracing::error!("cannot vote for period {t}: {e}");
        }
        sleep_until_ms(schedule.freeze_at(t)).await;
        shared.state().frozen.insert(t);
        let lists = compare(&shared, &schedule, t).await;
        sleep_until_ms(schedule.compute_at(t)).await;
        if compute(&shared, &schedule, t, &lists).await {
            let shared = shared.clone();
            collecting.spawn(async move { collect_signatures(&shared, &schedule, t).await });
        }
        // If this round overran (a suspended machine, a slow disk), skip to a period there
        // is still time for.
        t = schedule.after(t).max(schedule.next_period(now_ms()));
    }
}

/// The wait between retries of peers that have not answered yet in the round for `t`.
pub(crate) fn retry_delay(schedule: &Schedule, t: u64) -> Duration {
    Duration::from_millis((schedule.round_ms(t) / 20).clamp(100, 5000))
}

/// The time left before `deadline` (unix ms), capped at the request timeout.
pub(crate) fn time_left(shared: &Shared, deadline: u64) -> Duration {
    let cap = Duration::from_secs(shared.network.params.request_timeout_secs);
    Duration::from_millis(deadline.saturating_sub(now_ms()).max(1)).min(cap)
}

/// Builds, signs and stores this authority's vote for `t`, with a fresh shared-random
/// commitment and the reveal of its last one; expires old descriptors and saves the relay
/// history on the way; then sends the vote to every peer.
async fn vote(shared: &Arc<Shared>, schedule: &Schedule, t: u64) -> Result<(), String> {
    let params = shared.network.params;
    let now = now_secs();
    // The reveal this vote commits to is on disk before the vote exists, so a restart
    // cannot lose it: the next vote reveals it. A vote for the same period again (after a
    // restart inside the round) commits to the same reveal.
    let (reveal, reveals) = {
        let mut state = shared.state();
        let reveal = *state.reveals.entry(t).or_insert_with(|| {
            let mut r = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut r);
            r
        });
        let keep = t.saturating_sub(2 * schedule.interval_secs());
        (
            reveal,
            state.reveals.range(keep..).map(|(k, v)| (*k, *v)).collect(),
        )
    };
    shared
        .persist("shared-random reveals", move |store| {
            store.save_reveals(&reveals)
        })
        .await;
    let (vote, text, expired, history) = {
        let _serial = shared.descriptor_lock.lock().await;
        let mut state = shared.state();
        let expired = state.expire(now, params.descriptor_max_age_secs);
        let srv = SrvFields {
            commit: commitment(&shared.me, t, &reveal),
            reveal: state.reveals.get(&schedule.previous(t)).copied(),
        };
        let spec = VoteSpec {
            me: shared.me,
            period: schedule.period(t),
            now,
            srv,
            max_len: MAX_VOTE_LEN,
        };
        let built = state.build_vote(&spec, &params, &state.measurements);
        #[allow(unused_mut)]
        let mut vote = built.vote;
        #[cfg(feature = "misbehave")]
        if let Some(m) = &shared.misbehaviour {
            m.adjust_vote(&mut vote);
        }
        if built.dropped > 0 {
            tracing::warn!(
                "vote for period {t} would exceed {MAX_VOTE_LEN} bytes: left out the {} newest \
                 unproven relays",
                built.dropped
            );
        }
        let text = vote.sign(&shared.key).map_err(|e| e.to_string())?;
        tracing::info!("voting for period {t}: {} relays", vote.relays.len());
        for e in &vote.relays {
            if let Some(a) = state.descriptors.get(&e.id).cloned() {
                if a.digest == e.descriptor {
                    state.keep_by_digest(a, t);
                }
            }
        }
        state.add_vote(t, VoteRecord::new(vote.clone(), text.clone()));
        state.prune(t.saturating_sub(2 * schedule.interval_secs()));
        let history = state.history();
        for id in &expired {
            shared.store.remove_descriptor(id);
        }
        (vote, text, expired, history)
    };
    if !expired.is_empty() {
        tracing::info!("dropped {} expired descriptors", expired.len());
    }
    shared
        .persist("relay history", move |store| store.save_relays(&history))
        .await;
    push_vote(shared, schedule, t, &vote, text).await;
    Ok(())
}

/// Sends this authority's vote to every peer, each within the time left before the exchange
/// closes.
async fn push_vote(shared: &Arc<Shared>, schedule: &Schedule, t: u64, vote: &Vote, text: String) {
    let deadline = schedule.freeze_at(t);
    let mut posts = JoinSet::new();
    // The index is used only by the test-only `misbehave` feature (zip, not enumerate, so
    // that clippy accepts it unused).
    for (_i, peer) in (0usize..).zip(shared.peers().cloned()) {
        #[allow(unused_mut)]
        let mut text = text.clone();
        #[cfg(feature = "misbehave")]
        if let Some(variant) = shared
            .misbehaviour
            .as_ref()
            .and_then(|m| m.variant_for_peer(vote, _i))
        {
            match variant.sign(&shared.key) {
                Ok(v) => text = v,
                Err(e) => tracing::error!("misbehave: {e}"),
            }
        }
        let _ = vote;
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

/// Judges the views, then computes and signs the consensus for `t` from the confirmed votes
/// if they are a majority of all authorities; returns whether it did.
async fn compute(
    shared: &Arc<Shared>,
    schedule: &Schedule,
    t: u64,
    lists: &BTreeMap<[u8; 32], VoteList>,
) -> bool {
    let network = &shared.network;
    let n = network.authorities.len();
    let (votes, descriptors) = {
        let mut state = shared.state();
        let verdict = judge(n, shared.me.as_bytes(), &state.holdings(t), lists);
        for author in &verdict.equivocators {
            let Some(info) = network
                .authorities
                .iter()
                .find(|a| a.key.as_bytes() == author)
            else {
                continue;
            };
            if state.note_equivocation(t, info.key) {
                tracing::warn!(
                    "authority {} ({}) showed different votes for period {t}: its vote is left \
                     out",
                    info.name,
                    hex::encode(author)
                );
            }
        }
        let held = state.votes.get(&t);
        let votes: Vec<Vote> = verdict
            .confirmed
            .iter()
            .filter_map(|(author, digest)| {
                held.and_then(|h| h.get(author))
                    .filter(|r| r.digest == *digest)
                    .map(|r| r.vote.clone())
            })
            .collect();
        let mut descriptors = Descriptors::new();
        for d in needed_descriptors(&votes, n) {
            match state.by_digest.get(&d) {
                Some((a, _)) => {
                    descriptors.insert(d, a.desc.clone());
                }
                None => tracing::info!(
                    "period {t}: descriptor {} named by a majority is not held; its relay is \
                     left out",
                    hex::encode(&d)
                ),
            }
        }
        (votes, descriptors)
    };
    if votes.len() < network.majority() {
        tracing::warn!(
            "no consensus for period {t}: {} of {} votes confirmed, {} needed",
            votes.len(),
            n,
            network.majority()
        );
        return false;
    }
    let base = chain_base(shared, schedule, t).await;
    let params = &network.params;
    // The previous round is the previous period of the schedule, whatever its length.
    let shared_rand = shared_random::compute(
        t,
        t - schedule.previous(t),
        params.epoch_secs,
        n,
        &votes,
        base.as_ref().map(|c| Base {
            valid_after: c.valid_after,
            shared_rand: &c.shared_rand,
        }),
    );
    let compute_params = ComputeParams {
        consensus: params.consensus_params(),
        unmeasured_weight_cap: params.unmeasured_weight_cap,
        descriptor_max_age_secs: params.descriptor_max_age_secs,
    };
    let signed = compute_consensus(
        &votes,
        n,
        schedule.period(t),
        &compute_params,
        &descriptors,
        shared_rand,
        base.as_ref(),
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
    shared.state().add_consensus(t, record);
    shared.save_consensus(t).await;
    true
}

/// The consensus the shared random values continue from: the newest before `t` that a
/// majority of authorities signed. If this authority's own one for the previous period lacks
/// a majority (it computed another body, or none), the one the peers serve is adopted.
async fn chain_base(shared: &Arc<Shared>, schedule: &Schedule, t: u64) -> Option<Consensus> {
    let keys = shared.network.keys();
    let majority = shared.network.majority();
    let previous = schedule.previous(t);
    let local: Vec<Consensus> = shared
        .state()
        .consensuses
        .range(..t)
        .rev()
        .map(|(_, r)| r.consensus.clone())
        .collect();
    let local = local
        .into_iter()
        .find(|c| c.valid_signers(&keys).is_ok_and(|s| s.len() >= majority));
    if local.as_ref().is_some_and(|c| c.valid_after == previous) {
        return local;
    }
    let limit = Duration::from_secs(shared.network.params.request_timeout_secs)
        .min(time_left(shared, schedule.compute_at(t) + 1000));
    match fetch_consensus(&shared.network, local.as_ref(), now_secs(), limit).await {
        Ok((c, _)) if c.valid_after < t => {
            let c = c.into_inner();
            tracing::info!(
                "adopting the consensus for period {} the peers signed",
                c.valid_after
            );
            if let Ok(record) = ConsensusRecord::new(c.clone()) {
                shared.state().consensuses.insert(c.valid_after, record);
                // Saved like one computed here, so that a restart serves it too.
                shared.save_consensus(c.valid_after).await;
            }
            Some(c)
        }
        _ => local,
    }
}

/// Fetches peers' signatures over this authority's consensus body for `t`, until every
/// peer signed or `T + I/2`; each peer is asked on its own schedule ([`until_each_gives`]).
async fn collect_signatures(shared: &Arc<Shared>, schedule: &Schedule, t: u64) {
    let deadline = schedule.signatures_until(t);
    let peers: Vec<AuthorityInfo> = shared.peers().cloned().collect();
    let shared = shared.clone();
    until_each_gives(peers, deadline, retry_delay(schedule, t), move |peer| {
        let shared = shared.clone();
        async move { fetch_signature(&shared, t, &peer, deadline).await }
    })
    .await;
}

/// Fetches `peer`'s signature over this authority's consensus body for `t` unless it is
/// held, and saves the consensus with it; whether no more is to be asked of `peer` (its
/// signature is held, or there is no consensus for `t` any more).
async fn fetch_signature(
    shared: &Arc<Shared>,
    t: u64,
    peer: &AuthorityInfo,
    deadline: u64,
) -> bool {
    let done = |shared: &Shared| {
        let state = shared.state();
        state
            .consensuses
            .get(&t)
            .is_none_or(|r| r.consensus.signatures.iter().any(|(k, _)| *k == peer.key))
    };
    if done(shared) {
        return true;
    }
    let limit = time_left(shared, deadline);
    let path = format!("/signature/{t}");
    match http_request(peer.address, Method::GET, &path, None, limit, 1024).await {
        Ok(r) if r.status == StatusCode::OK => match add_signature(shared, peer, t, &r.body) {
            Ok(()) => shared.save_consensus(t).await,
            Err(e) => tracing::warn!("signature from {} not used: {e}", peer.name),
        },
        Ok(r) => tracing::debug!("{} has no signature yet: {}", peer.name, r.text()),
        Err(e) => tracing::debug!("cannot fetch the signature of {}: {e}", peer.name),
    }
    done(shared)
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
    record.refresh_text().map_err(|e| e.to_string())?;
    tracing::info!("period {t}: signature from {}", peer.name);
    Ok(())
}
