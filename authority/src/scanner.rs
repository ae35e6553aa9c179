//! The bandwidth scanner (`docs/spec.md` §5.7), after Tor's sbws: this authority measures each
//! relay by pulling data through a two-hop circuit, helper then relay, built as any client
//! builds one, and records the rate in [`crate::bandwidth::Measurements`], whence it is voted.
//!
//! The circuit's first hop is a helper: the heaviest other Running relay of the consensus
//! this authority serves, unrelated to the measured one ([`pick_helper`]). The measured relay
//! therefore sees a circuit extended to it by another relay, not a connection from an
//! authority's address, and cannot serve its measurement faster than its clients by the
//! address it comes from. The data are `DATA` messages the measured relay echoes
//! (`docs/spec.md` §6.4); the rate is the echoed bytes over the time from the first message
//! sent to the last echo received, circuit building not counted. A transfer that does not end
//! within [`TRANSFER_LIMIT`] counts what arrived by then, so a relay cannot avoid a low figure
//! by being too slow to finish.
//!
//! What the relay can still see: that the last hop of a circuit gets echoed `DATA`, which
//! clients' circuits (for mailboxes) do not carry; see `docs/threat-model.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_net::channel::ClientChannel;
use shallot_net::circuit::{build, HopNum, HopSpec};
use shallot_net::path::related;
use shallot_net::NetError;
use shallot_proto::dir::{Consensus, Flags, RelayEntry};
use shallot_proto::relay_msg::RelayMsg;
use thiserror::Error;

use crate::schedule::now_secs;
use crate::Shared;

/// Bytes of each `DATA` message sent (one cell at the second hop).
pub const CHUNK: usize = 400;
/// The longest one transfer may take; what arrived by then is what counts.
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(30);
/// The bytes a measurement moves for each block of the probe's timed transfer
/// (`probe_transfer_blocks`, whose size the scan reuses).
pub const BLOCK: u64 = 514;

/// Why a relay could not be measured.
#[derive(Debug, Error)]
pub enum ScanError {
    /// The link to the helper, the circuit, or the transfer failed.
    #[error("measurement circuit through {helper} failed: {source}")]
    Circuit {
        /// The helper's nickname.
        helper: String,
        /// Why.
        #[source]
        source: NetError,
    },
    /// The circuit was built but no echo came back in time.
    #[error("no data came back through {helper} within {limit:?}")]
    NothingReceived {
        /// The helper's nickname.
        helper: String,
        /// The time allowed.
        limit: Duration,
    },
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Echoed bytes received.
    pub bytes: u64,
    /// From the first byte sent to the last echo received (or to the time limit).
    pub elapsed: Duration,
    /// Whether every byte sent came back within the limit.
    pub complete: bool,
}

impl Measured {
    /// The rate, bytes per second (an elapsed time under a millisecond counts as one).
    pub fn bytes_per_sec(&self) -> u64 {
        let ms = u64::try_from(self.elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.bytes.saturating_mul(1000) / ms
    }
}

/// The helper to measure `target` through: the Running relay of `consensus` with the highest
/// weight, other than `target` and unrelated to it (ties: the first listed).
pub fn pick_helper<'a>(consensus: &'a Consensus, target: &RelayEntry) -> Option<&'a RelayEntry> {
    consensus
        .relays
        .iter()
        .filter(|r| r.flags.contains(Flags::RUNNING) && !related(r, target))
        .fold(None, |best: Option<&RelayEntry>, r| match best {
            Some(b) if b.bandwidth >= r.bandwidth => Some(b),
            _ => Some(r),
        })
}

/// Measures `target` through a circuit `helper` → `target`: connects to the helper (each hop
/// within `per_hop`), then sends `bytes` (rounded up to whole [`CHUNK`]s) to `target` and
/// times their echo, within `limit`.
pub async fn measure(
    helper: &RelayEntry,
    target: &RelayEntry,
    bytes: u64,
    per_hop: Duration,
    limit: Duration,
) -> Result<Measured, ScanError> {
    let failed = |source: NetError| ScanError::Circuit {
        helper: helper.nickname.clone(),
        source,
    };
    let chan = ClientChannel::connect(helper.address, &helper.link_key, per_hop)
        .await
        .map_err(|e| failed(e.into()))?;
    let path = [HopSpec::from(helper), HopSpec::from(target)];
    let circ = Arc::new(build(chan.clone(), &path, per_hop).await.map_err(failed)?);
    let chunk = CHUNK as u64;
    let chunks = bytes.div_ceil(chunk).max(1);
    let started = Instant::now();
    let sender = {
        let circ = circ.clone();
        tokio::spawn(async move {
            for _ in 0..chunks {
                let msg = RelayMsg::Data(vec![0x5a; CHUNK]);
                if circ.send(HopNum::SECOND, &msg).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut received = 0u64;
    let receive = async {
        while received < chunks * chunk {
            match circ.recv().await {
                Ok((HopNum::SECOND, RelayMsg::Data(d))) => received += d.len() as u64,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(limit, receive).await;
    let elapsed = started.elapsed().min(limit);
    sender.abort();
    circ.close();
    chan.close();
    let complete = match outcome {
        Ok(Ok(())) => true,
        Ok(Err(e)) if received == 0 => return Err(failed(e)),
        Ok(Err(_)) | Err(_) => false,
    };
    if received == 0 {
        return Err(ScanError::NothingReceived {
            helper: helper.nickname.clone(),
            limit,
        });
    }
    Ok(Measured {
        bytes: received,
        elapsed,
        complete,
    })
}

/// Measures the Running relays of the consensus this authority serves, one at a time, in
/// rounds that start every voting interval (a round that takes longer is followed at once by
/// the next), each relay once every `scan_interval_secs` (by default every round), and
/// records each rate. Does nothing when `probe_transfer_blocks` is 0.
pub(crate) async fn run(shared: Arc<Shared>) {
    let params = &shared.network.params;
    let bytes = params.probe_transfer_blocks.saturating_mul(BLOCK);
    if bytes == 0 {
        return;
    }
    let interval = Duration::from_secs(params.voting_interval_secs.max(1));
    let per_hop = Duration::from_secs(params.reachability_timeout_secs.max(1));
    let every = params.scan_interval();
    // Scanned every round (the default), every relay is due: no clock is consulted.
    let paced = every > params.voting_interval_secs;
    loop {
        let started = tokio::time::Instant::now();
        let ends = now_secs().saturating_add(params.voting_interval_secs);
        let consensus = shared
            .state()
            .serving(now_secs(), shared.network.majority())
            .map(|r| r.consensus.clone());
        if let Some(c) = consensus {
            scan_round(&shared, &c, bytes, per_hop, paced.then_some((ends, every))).await;
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// One pass over the Running relays of `c` this authority holds a descriptor for; when
/// `paced` is `(ends, every)`, only those whose measurement is due in a round ending at `ends`
/// when each is measured every `every` seconds ([`crate::bandwidth::Measurements::scan_due`]).
async fn scan_round(
    shared: &Shared,
    c: &Consensus,
    bytes: u64,
    per_hop: Duration,
    paced: Option<(u64, u64)>,
) {
    for target in c.relays.iter().filter(|r| r.flags.contains(Flags::RUNNING)) {
        {
            let state = shared.state();
            let due = paced
                .is_none_or(|(ends, every)| state.measurements.scan_due(&target.id, ends, every));
            if !state.descriptors.contains_key(&target.id) || !due {
                continue;
            }
        }
        let Some(helper) = pick_helper(c, target) else {
            tracing::debug!("no helper to measure {} through", target.nickname);
            continue;
        };
        match measure(helper, target, bytes, per_hop, TRANSFER_LIMIT).await {
            Ok(m) => {
                let rate = m.bytes_per_sec();
                let mut state = shared.state();
                let probe = state.measurements.probe_figure(&target.id);
                tracing::debug!(
                    "relay {} measured at {rate} B/s through {} ({} bytes in {:?}{}; its probe said {probe:?})",
                    target.id,
                    helper.nickname,
                    m.bytes,
                    m.elapsed,
                    if m.complete { "" } else { ", cut off" },
                );
                state.measurements.record(target.id, now_secs(), rate);
            }
            Err(e) => tracing::info!("cannot measure relay {}: {e}", target.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(octet: u8, bandwidth: u64, flags: Flags) -> RelayEntry {
        let mut rng = rand::thread_rng();
        let identity = shallot_crypto::keys::IdentityKeypair::generate(&mut rng).public();
        RelayEntry {
            id: shallot_crypto::keys::RelayId::of(&identity),
            nickname: format!("r{octet}"),
            address: std::net::SocketAddr::from(([10, octet, 0, 1], 9000)),
            bandwidth,
            ntor_key: [0; 32],
            link_key: [0; 32],
            flags,
            family: Vec::new(),
        }
    }

    #[test]
    fn the_helper_is_the_heaviest_running_relay_unrelated_to_the_target() {
        let running = Flags::RUNNING | Flags::VALID;
        let target = entry(1, 500_000, running);
        let mut same_net = entry(1, 900_000, running);
        same_net.address = std::net::SocketAddr::from(([10, 1, 9, 9], 9000));
        let down = entry(2, 800_000, Flags::VALID);
        let heavy = entry(3, 700_000, running);
        let light = entry(4, 100, running);
        let mut c = shallot_proto::dir::Consensus {
            valid_after: 0,
            fresh_until: 1,
            valid_until: 2,
            params: shallot_proto::dir::ConsensusParams {
                epoch_secs: 1,
                max_share_ppm: 1_000_000,
            },
            shared_rand: Default::default(),
            relays: vec![
                target.clone(),
                same_net.clone(),
                down,
                heavy.clone(),
                light.clone(),
            ],
            signatures: Vec::new(),
        };
        assert_eq!(pick_helper(&c, &target).map(|r| r.id), Some(heavy.id));
        // Another relay is measured through the heaviest unrelated to it.
        assert_eq!(pick_helper(&c, &heavy).map(|r| r.id), Some(same_net.id));
        c.relays.retain(|r| r.id == target.id);
        assert_eq!(pick_helper(&c, &target), None, "no other relay, no helper");
    }

    #[test]
    fn the_rate_is_bytes_over_elapsed_time() {
        let m = |bytes, ms| Measured {
            bytes,
            elapsed: Duration::from_millis(ms),
            complete: true,
        };
        assert_eq!(m(131_600, 500).bytes_per_sec(), 263_200);
        assert_eq!(
            m(400, 0).bytes_per_sec(),
            400_000,
            "under 1 ms counts as 1 ms"
        );
        assert_eq!(m(u64::MAX, 1).bytes_per_sec(), u64::MAX, "saturates");
    }
}
