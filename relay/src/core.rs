//! The state every task of a relay shares: configuration, keys, the channel registry, the
//! queue budget and the admission limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_proto::cell::{DestroyReason, CELL_LEN};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::channel::{lock, Channel};
use crate::config::RelayConfig;
use crate::keys::{OnionKeys, RelayKeys};
use crate::limits::{ConnectionCounts, CreateLimiter};
use crate::netview::NetView;
use crate::queue::QueueBudget;
use crate::stats::Stats;

/// Open channels, by id and by the relay at the other end.
#[derive(Default)]
pub(crate) struct Registry {
    by_id: HashMap<u64, Arc<Channel>>,
    writers: HashMap<u64, AbortHandle>,
    by_relay: HashMap<RelayId, Vec<u64>>,
}

/// Shared relay state.
pub(crate) struct Core {
    pub config: RelayConfig,
    pub keys: RelayKeys,
    pub onion: RwLock<OnionKeys>,
    pub netview: RwLock<Arc<NetView>>,
    pub budget: QueueBudget,
    pub oom: Notify,
    /// Signalled when the descriptor must be published again (after an onion key rotation).
    pub republish: Notify,
    /// Signalled to fetch the consensus now (an extend named a relay we do not know).
    pub refetch: Notify,
    /// Signalled whenever a new view of the network is installed.
    pub netview_changed: Notify,
    pub creates: Mutex<CreateLimiter>,
    pub conns: Mutex<ConnectionCounts>,
    pub stats: Stats,
    pub registry: Mutex<Registry>,
    pub connect_locks: Mutex<HashMap<RelayId, Arc<tokio::sync::Mutex<()>>>>,
    pub shutting_down: AtomicBool,
    /// The mailbox service, on relays that offer one.
    pub mailbox: Option<crate::mailbox::MailboxService>,
    relieving: AtomicBool,
    next_channel: AtomicU64,
}

impl Core {
    pub(crate) fn new(
        config: RelayConfig,
        keys: RelayKeys,
        onion: OnionKeys,
        mailbox: Option<crate::mailbox::MailboxService>,
    ) -> Self {
        let creates = CreateLimiter::new(
            config.limits.creates_per_sec_per_ip,
            config.limits.create_burst_per_ip,
        );
        Core {
            config,
            keys,
            onion: RwLock::new(onion),
            netview: RwLock::new(Arc::new(NetView::default())),
            budget: QueueBudget::default(),
            oom: Notify::new(),
            republish: Notify::new(),
            refetch: Notify::new(),
            netview_changed: Notify::new(),
            creates: Mutex::new(creates),
            conns: Mutex::new(ConnectionCounts::default()),
            stats: Stats::default(),
            registry: Mutex::new(Registry::default()),
            connect_locks: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            mailbox,
            relieving: AtomicBool::new(false),
            next_channel: AtomicU64::new(1),
        }
    }

    /// The queued-cell count beyond which the out-of-memory handler runs.
    pub fn queue_cap_cells(&self) -> usize {
        self.config.limits.queue_memory_bytes / CELL_LEN
    }

    pub fn next_channel_id(&self) -> u64 {
        self.next_channel.fetch_add(1, Ordering::Relaxed)
    }

    /// The current view of the network.
    pub fn netview(&self) -> Arc<NetView> {
        match self.netview.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The onion keys accepted now.
    pub fn onion_keys(&self) -> OnionKeys {
        match self.onion.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Adds a channel to the registry and starts its reader and writer.
    pub fn start_channel(
        self: &Arc<Self>,
        chan: Channel,
        reader: shallot_link::LinkReader,
        writer: shallot_link::LinkWriter,
    ) -> Arc<Channel> {
        let chan = Arc::new(chan);
        Stats::bump(&self.stats.links_opened);
        let w = tokio::spawn(crate::channel::write_loop(
            self.clone(),
            chan.clone(),
            writer,
        ));
        {
            let mut reg = lock(&self.registry);
            reg.by_id.insert(chan.id, chan.clone());
            reg.writers.insert(chan.id, w.abort_handle());
            if let Some(relay) = chan.peer_relay {
                reg.by_relay.entry(relay).or_default().push(chan.id);
            }
        }
        tokio::spawn(crate::channel::read_loop(
            self.clone(),
            chan.clone(),
            reader,
        ));
        chan
    }

    /// An open channel to relay `id`, if there is one.
    pub fn channel_to(&self, id: &RelayId) -> Option<Arc<Channel>> {
        let reg = lock(&self.registry);
        reg.by_relay
            .get(id)?
            .iter()
            .filter_map(|c| reg.by_id.get(c))
            .find(|c| !c.is_closed())
            .cloned()
    }

    /// Every open channel.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        lock(&self.registry).by_id.values().cloned().collect()
    }

    /// Closes a channel: destroys its circuits (telling the other side of each), forgets it,
    /// and gives its writer a moment to flush before stopping it.
    pub fn close_channel(self: &Arc<Self>, chan: &Arc<Channel>) {
        chan.begin_close();
        let removed = {
            let mut reg = lock(&self.registry);
            let removed = reg.by_id.remove(&chan.id).is_some();
            let writer = reg.writers.remove(&chan.id);
            if let Some(relay) = chan.peer_relay {
                if let Some(list) = reg.by_relay.get_mut(&relay) {
                    list.retain(|c| *c != chan.id);
                    if list.is_empty() {
                        reg.by_relay.remove(&relay);
                    }
                }
            }
            if let Some(w) = writer {
                let (core, chan) = (self.clone(), chan.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    w.abort();
                    chan.drop_queued(&core);
                });
            }
            removed
        };
        if !removed {
            return;
        }
        let circuits: Vec<_> = lock(&chan.circuits).drain().collect();
        for (_, r) in circuits {
            r.circ
                .destroy(self, DestroyReason::LinkClosed, Some(r.side));
        }
        if chan.counted {
            lock(&self.conns).release(chan.peer_ip);
        }
    }

    /// Drops every channel at once, sending nothing more on any of them.
    pub fn abort_all_channels(&self) {
        let (channels, writers): (Vec<_>, Vec<_>) = {
            let mut reg = lock(&self.registry);
            reg.by_relay.clear();
            (
                reg.by_id.drain().map(|(_, c)| c).collect(),
                reg.writers.drain().map(|(_, w)| w).collect(),
            )
        };
        for w in writers {
            w.abort();
        }
        for chan in channels {
            chan.begin_close();
            lock(&chan.circuits).clear();
            chan.drop_queued(self);
        }
    }

    /// Whether circuit creation from `ip` is within its rate.
    pub fn allow_create(&self, ip: IpAddr) -> bool {
        lock(&self.creates).allow(ip, std::time::Instant::now())
    }

    /// Destroys the circuits holding the oldest queued cells until the queues are back under
    /// 90% of the memory cap (`docs/spec.md` §6.6).
    pub fn relieve_memory_pressure(self: &Arc<Self>) {
        let cap = self.queue_cap_cells();
        if self.budget.queued() <= cap || self.relieving.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut candidates = Vec::new();
        for chan in self.channels() {
            for (t, id) in chan.oldest_cells() {
                candidates.push((t, chan.clone(), id));
            }
            // Replies waiting for a client's window hold memory too.
            let ends: Vec<_> = lock(&chan.circuits)
                .iter()
                .filter(|(_, r)| r.side == crate::channel::Side::Prev)
                .map(|(id, r)| (*id, r.circ.clone()))
                .collect();
            for (id, circ) in ends {
                if let Some(t) = circ.oldest_waiting() {
                    candidates.push((t, chan.clone(), id));
                }
            }
        }
        candidates.sort_by_key(|(t, _, _)| *t);
        let target = cap / 10 * 9;
        for (_, chan, id) in candidates {
            if self.budget.queued() <= target {
                break;
            }
            match chan.circuit(id) {
                Some(r) => {
                    if r.circ
                        .destroy_if_alive(self, DestroyReason::ResourceLimit, None)
                    {
                        Stats::bump(&self.stats.circuits_destroyed_for_memory);
                    }
                }
                None => chan.forget_circuit(self, id),
            }
        }
        tracing::warn!(
            queued_cells = self.budget.queued(),
            "queue memory over its cap: destroyed the circuits with the oldest queued cells"
        );
        self.relieving.store(false, Ordering::Release);
    }
}
