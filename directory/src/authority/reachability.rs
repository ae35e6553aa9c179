//! Reachability: before listing a relay as Running, the authority connects to its link
//! address and runs the link handshake against the link key its descriptor publishes
//! (`docs/spec.md` §5.7).
//!
//! A relay is probed when its descriptor is first accepted or its address or link key
//! changes, and every voting interval after that, at most [`MAX_CONCURRENT_PROBES`] at a
//! time.

use std::sync::Arc;
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::schedule::now_secs;
use super::state::Probe;
use super::Shared;

/// Probes running at once.
pub const MAX_CONCURRENT_PROBES: usize = 16;
/// Relays waiting for a first probe; beyond this, they wait for the next round.
pub const QUEUE_LEN: usize = 1024;

/// Probes relays as they are accepted and every voting interval, until aborted.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<RelayId>) {
    let interval = Duration::from_secs(shared.network.params.voting_interval_secs);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
    let mut probes = JoinSet::new();
    let spawn = |probes: &mut JoinSet<()>, id: RelayId| {
        let shared = shared.clone();
        let permits = permits.clone();
        probes.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            probe_one(&shared, id).await;
        });
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let ids: Vec<RelayId> = shared.state().descriptors.keys().copied().collect();
                for id in ids {
                    spawn(&mut probes, id);
                }
            }
            Some(id) = queue.recv() => spawn(&mut probes, id),
            Some(_) = probes.join_next(), if !probes.is_empty() => {}
        }
    }
}

/// Probes one relay at the address and key of its current descriptor and records the result.
async fn probe_one(shared: &Shared, id: RelayId) {
    let Some((address, link_key)) = shared
        .state()
        .descriptors
        .get(&id)
        .map(|a| (a.desc.address, a.desc.link_key))
    else {
        return;
    };
    let limit = Duration::from_secs(shared.network.params.reachability_timeout_secs);
    let result = shallot_link::probe(address, &link_key, limit).await;
    if let Err(e) = &result {
        tracing::info!("relay {id} at {address} is not reachable: {e}");
    } else {
        tracing::debug!("relay {id} at {address} is reachable");
    }
    shared.state().record_probe(
        &id,
        Probe {
            at: now_secs(),
            ok: result.is_ok(),
            address,
            link_key,
        },
    );
}
