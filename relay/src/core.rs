//! The parts of a running relay and the life of its links (`docs/spec.md` §6.2–6.6): the
//! shared [`Core`] that owns them, starting a link's two loops, closing a link, and relieving
//! memory pressure. The relay's services (accepting, extending, the mailbox, the directory)
//! are built on it in `daemon`, `extend`, `mailbox` and `publish`; it knows none of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shallot_crypto::keys::RelayId;
use shallot_link::{BufferTotal, LinkKind, LinkReader, LinkWriter};
use shallot_rt::lock;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tracing::debug;

use crate::channel::{Channel, ChannelId, Peer};
use crate::circuit::{CircuitError, Input, Side};
use crate::config::RelayConfig;
use crate::create::Admission;
use crate::dispatch::handle_cell;
use crate::keys::{OnionKeys, RelayKeys};
use crate::limits::ConnectionCounts;
use crate::netview::NetView;
use crate::oom;
use crate::queue::QueueBudget;
use crate::shell::{DirRequest, Env, ExtendRequest, Link, MailboxDoor};
use crate::stats::Stats;

/// Open links, by channel and by the relay at the other end.
#[derive(Default)]
struct Registry {
    by_id: HashMap<ChannelId, Arc<Link>>,
    writers: HashMap<ChannelId, AbortHandle>,
    by_relay: HashMap<RelayId, Vec<ChannelId>>,
}

/// What every task of a relay shares.
pub(crate) struct Core {
    /// Its configuration.
    pub(crate) config: RelayConfig,
    /// Its fixed keys.
    pub(crate) keys: RelayKeys,
    /// What circuits act on.
    pub(crate) env: Arc<Env>,
    /// CREATE admission: onion keys and the create rate.
    pub(crate) admission: Admission,
    /// The relays it may extend to.
    pub(crate) netview: RwLock<Arc<NetView>>,
    /// Signalled when the descriptor must be published again (after an onion key rotation).
    pub(crate) republish: Notify,
    /// Signalled to fetch the consensus now (an extend named a relay we do not know).
    pub(crate) refetch: Notify,
    /// Signalled whenever a new view of the network is installed.
    pub(crate) netview_changed: Notify,
    /// Bytes of buffer every link holds, against the links' share of the memory budget for
    /// them (`Limits::link_buffer_bytes`).
    pub(crate) buffers: Arc<BufferTotal>,
    /// Accepted connections per address.
    pub(crate) conns: Mutex<ConnectionCounts>,
    /// One connection attempt at a time per relay.
    pub(crate) connect_locks: Mutex<HashMap<RelayId, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once the relay starts stopping.
    pub(crate) shutting_down: AtomicBool,
    /// The circuits it has extended, waiting for CREATED until their deadline.
    pub(crate) created_wait: Arc<crate::created_wait::CreatedWait>,
    /// The consensus it follows, for mailbox repair (`docs/spec.md` §9.6).
    pub(crate) consensus: tokio::sync::watch::Sender<Option<Arc<shallot_proto::dir::Consensus>>>,
    registry: Mutex<Registry>,
    relieving: AtomicBool,
    next_channel: AtomicU64,
}

impl Core {
    /// A relay's core, sending extend requests to `extends`, mailbox requests through
    /// `mailbox` and directory requests to `dir_requests`.
    pub(crate) fn new(
        config: RelayConfig,
        keys: RelayKeys,
        onion: OnionKeys,
        extends: mpsc::UnboundedSender<ExtendRequest>,
        mailbox: Option<MailboxDoor>,
        dir_requests: mpsc::UnboundedSender<DirRequest>,
    ) -> Self {
        let limits = &config.limits;
        let env = Arc::new(Env {
            me: keys.id,
            extend_timeout: limits.extend_timeout,
            budget: Arc::new(QueueBudget::default()),
            stats: Stats::default(),
            circuit_queue_cells: limits.circuit_queue_cells,
            queue_cap_cells: limits.queue_cap_cells(),
            oom: Notify::new(),
            extends,
            mailbox,
            dir_requests,
            #[cfg(feature = "misbehave")]
            misbehaviour: Default::default(),
        });
        let buffers = Arc::new(BufferTotal::new(limits.link_buffer_bytes()));
        Core {
            admission: Admission::new(onion, limits),
            env,
            keys,
            config,
            netview: RwLock::new(Arc::new(NetView::default())),
            republish: Notify::new(),
            refetch: Notify::new(),
            netview_changed: Notify::new(),
            buffers,
            conns: Mutex::new(ConnectionCounts::default()),
            connect_locks: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            consensus: tokio::sync::watch::Sender::new(None),
            created_wait: Default::default(),
            registry: Mutex::new(Registry::default()),
            relieving: AtomicBool::new(false),
            next_channel: AtomicU64::new(1),
        }
    }

    /// Its counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.env.stats
    }

    /// The current view of the network.
    pub(crate) fn netview(&self) -> Arc<NetView> {
        match self.netview.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Installs a new view of the network.
    pub(crate) fn set_netview(&self, view: NetView) {
        match self.netview.write() {
            Ok(mut v) => *v = Arc::new(view),
            Err(p) => *p.into_inner() = Arc::new(view),
        }
    }

    /// The onion keys accepted now.
    pub(crate) fn onion_keys(&self) -> OnionKeys {
        self.admission.onion_keys()
    }

    /// Starts a link whose handshake is done: records it and runs its two loops (the link
    /// crate's), handing each cell read to [`handle_cell`].
    pub(crate) fn start_channel(
        self: &Arc<Self>,
        peer: Peer,
        reader: LinkReader,
        writer: LinkWriter,
    ) -> Arc<Link> {
        let id = ChannelId(self.next_channel.fetch_add(1, Ordering::Relaxed));
        let chan =
            Channel::new(id, peer, self.env.budget.clone()).counting_buffers(self.buffers.clone());
        let link = Arc::new(Link::new(chan));
        Stats::bump(&self.stats().links_opened);
        let (core, l) = (self.clone(), link.clone());
        let w = tokio::spawn(async move {
            let stats = core.stats();
            let wrote = shallot_link::write_loop(writer, &l.chan.signals, &l.chan, |cells| {
                Stats::bump(&stats.records_written);
                stats
                    .cells_written
                    .fetch_add(cells as u64, Ordering::Relaxed);
            })
            .await;
            if let Err(e) = wrote {
                debug!(channel = l.chan.id.0, "write failed: {e}");
            }
            core.close_channel(&l);
        });
        {
            let mut reg = lock(&self.registry);
            reg.by_id.insert(id, link.clone());
            reg.writers.insert(id, w.abort_handle());
            if let Some(relay) = peer.relay {
                reg.by_relay.entry(relay).or_default().push(id);
            }
        }
        let (core, l) = (self.clone(), link.clone());
        tokio::spawn(async move {
            let end = shallot_link::read_loop(reader, &l.chan.signals, |cell| {
                handle_cell(&core.env, &core.admission, &l, cell);
                // Cells enter the relay here, so this is where memory pressure is relieved:
                // at once, with no lock held, before the next cell can add to it.
                if oom::over_cap(core.env.budget.queued(), core.env.queue_cap_cells) {
                    core.relieve_memory_pressure();
                }
                Ok::<(), Infallible>(())
            })
            .await;
            if end.is_violation() {
                if l.chan.peer.kind == LinkKind::Relay {
                    tracing::info!(channel = l.chan.id.0, "dropping relay link: {end}");
                } else {
                    debug!(channel = l.chan.id.0, "dropping client link: {end}");
                }
                Stats::bump(&core.stats().links_dropped_for_protocol);
            } else {
                debug!(channel = l.chan.id.0, "link closed: {end}");
            }
            core.close_channel(&l);
        });
        link
    }

    /// An open link to relay `id`, if there is one.
    pub(crate) fn link_to(&self, id: &RelayId) -> Option<Arc<Link>> {
        let reg = lock(&self.registry);
        reg.by_relay
            .get(id)?
            .iter()
            .filter_map(|c| reg.by_id.get(c))
            .find(|l| !l.chan.is_closed())
            .cloned()
    }

    /// Every open link.
    pub(crate) fn links(&self) -> Vec<Arc<Link>> {
        lock(&self.registry).by_id.values().cloned().collect()
    }

    /// Closes a link: destroys its circuits (telling the other side of each), forgets it,
    /// and gives its writer a moment to flush before stopping it.
    pub(crate) fn close_channel(&self, link: &Arc<Link>) {
        self.close_channel_with(link, Duration::from_secs(5));
    }

    /// Closes a link as [`Core::close_channel`] does, giving its writer `flush` to send what is
    /// queued before it is stopped.
    fn close_channel_with(&self, link: &Arc<Link>, flush: Duration) {
        link.chan.close();
        let id = link.chan.id;
        let (removed, writer) = {
            let mut reg = lock(&self.registry);
            let removed = reg.by_id.remove(&id).is_some();
            if let Some(relay) = link.chan.peer.relay {
                if let Some(list) = reg.by_relay.get_mut(&relay) {
                    list.retain(|c| *c != id);
                    if list.is_empty() {
                        reg.by_relay.remove(&relay);
                    }
                }
            }
            (removed, reg.writers.remove(&id))
        };
        if let Some(w) = writer {
            let link = link.clone();
            tokio::spawn(async move {
                tokio::time::sleep(flush).await;
                w.abort();
                link.chan.drop_queued();
            });
        }
        if !removed {
            return;
        }
        for (_, r) in link.take_all() {
            r.circ.input(&self.env, Input::LinkClosed(r.side));
        }
        if link.chan.peer.counted {
            let mut conns = lock(&self.conns);
            conns.release(link.chan.peer.ip);
            if link.chan.peer.kind == LinkKind::Client {
                conns.release_client();
            }
        }
    }

    /// Drops every link at once, sending nothing more on any of them.
    pub(crate) fn abort_all_channels(&self) {
        let (links, writers): (Vec<_>, Vec<_>) = {
            let mut reg = lock(&self.registry);
            reg.by_relay.clear();
            (
                reg.by_id.drain().map(|(_, l)| l).collect(),
                reg.writers.drain().map(|(_, w)| w).collect(),
            )
        };
        for w in writers {
            w.abort();
        }
        for link in links {
            link.chan.close();
            link.take_all();
            link.chan.drop_queued();
        }
    }

    /// Whether `ip` may open another connection; counts it if so.
    pub(crate) fn admit_connection(&self, ip: IpAddr) -> bool {
        let limits = &self.config.limits;
        lock(&self.conns).admit(ip, limits.connections_per_ip, limits.max_links())
    }

    /// Whether an admitted connection whose handshake made it a client link may stay: client
    /// links may not take the links kept for relays and probes; counts it if so.
    pub(crate) fn admit_client_link(&self) -> bool {
        lock(&self.conns).admit_client(self.config.limits.max_client_links())
    }

    /// Destroys the circuits holding the oldest queued cells until the queues are back under
    /// 90% of the memory cap (`docs/spec.md` §6.6).
    pub(crate) fn relieve_memory_pressure(&self) {
        let env = &self.env;
        if !oom::over_cap(env.budget.queued(), env.queue_cap_cells)
            || self.relieving.swap(true, Ordering::AcqRel)
        {
            return;
        }
        relieve_links(env, &self.links());
        tracing::warn!(
            queued_cells = env.budget.queued(),
            "queue memory over its cap: destroyed the circuits with the oldest queued cells"
        );
        self.relieving.store(false, Ordering::Release);
    }

    /// Closes the links stalled longest, holding buffers, until busy links' buffers are back
    /// under 90% of their share of the memory budget (`docs/spec.md` §6.6). A link closed
    /// here leaves the total at once and its writer is stopped without a flush: a peer that
    /// stalls a link gets nothing more from it.
    pub(crate) fn relieve_buffer_pressure(&self) {
        let total = &self.buffers;
        if !total.is_over() {
            return;
        }
        let candidates = self
            .links()
            .into_iter()
            .filter(|l| !l.chan.is_closed())
            .filter_map(|l| {
                let meter = l.chan.signals.buffers();
                Some((meter.stalled_since()?, meter.held(), l))
            })
            .collect();
        let closed = oom::relieve_buffers(candidates, total.bytes(), total.cap(), |link| {
            Stats::bump(&self.stats().links_closed_for_memory);
            link.chan.signals.buffers().detach();
            self.close_channel_with(&link, Duration::ZERO);
        });
        tracing::warn!(
            closed,
            buffer_bytes = total.bytes(),
            "link buffers over their share of the memory budget: closed the links stalled longest"
        );
    }

    /// Closes links that have carried no circuit for the link idle timeout and destroys
    /// circuits that have seen no cell for the circuit idle timeout (`docs/spec.md` §6.6).
    pub(crate) fn expire_idle(&self, now: Instant) {
        let limits = &self.config.limits;
        let idle = expire_idle(
            &self.env,
            &self.links(),
            now,
            limits.link_idle_timeout,
            limits.circuit_idle_timeout,
        );
        for link in idle {
            debug!(channel = link.chan.id.0, "closing an idle link");
            Stats::bump(&self.stats().links_closed_idle);
            self.close_channel(&link);
        }
    }
}

/// Destroys, among `links`' circuits, those holding the oldest cells (queued on a link,
/// replies waiting for a window, or an unfinished message being reassembled) until the cells
/// it can free ([`QueueBudget::freeable`](crate::queue::QueueBudget::freeable)) are back under
/// 90% of the cap.
pub(crate) fn relieve_links(env: &Env, links: &[Arc<Link>]) {
    let mut candidates = Vec::new();
    for link in links {
        for (t, id) in link.chan.oldest_cells() {
            candidates.push((t, (link.clone(), id)));
        }
        // Replies waiting for a client's window and unfinished messages hold memory too.
        for (id, r) in link.circuits() {
            if r.side == Side::Prev {
                if let Some(t) = r.circ.oldest_held() {
                    candidates.push((t, (link.clone(), id)));
                }
            }
        }
    }
    oom::relieve(
        candidates,
        env.queue_cap_cells,
        || env.budget.freeable(),
        |(link, id)| match link.circuit(id) {
            Some(r) => r.circ.input(env, Input::Kill(CircuitError::MemoryPressure)),
            None => link.chan.drop_circuit_cells(id),
        },
    );
}

/// Destroys the circuits among `links` idle for `circuit_timeout` at `now`, then returns the
/// links idle (no circuit) for `link_timeout`, for the caller to close.
pub(crate) fn expire_idle(
    env: &Env,
    links: &[Arc<Link>],
    now: Instant,
    link_timeout: Duration,
    circuit_timeout: Duration,
) -> Vec<Arc<Link>> {
    for link in links {
        for (_, r) in link.circuits() {
            // Each circuit once: from the link it was created on.
            if r.side == Side::Prev && r.circ.is_idle(now, circuit_timeout) {
                r.circ.input(env, Input::Kill(CircuitError::Idle));
            }
        }
    }
    links
        .iter()
        .filter(|l| l.is_idle(now, link_timeout))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::shell::testing::{self, CircuitMaker};

    /// The attack: 10,000 circuits, each holding an unfinished message. With a memory
    /// cap of 10,000 cells (about 5 MB) and a 2 KiB reassembly piece each, the circuits would
    /// hold four times the cap; the handler, run as a link's read loop runs it after each cell, keeps what is held
    /// within the cap, destroying the circuits whose unfinished messages are oldest.
    #[test]
    fn ten_thousand_unfinished_messages_stay_within_the_memory_budget() {
        const CIRCUITS: usize = 10_000;
        const CAP: usize = 10_000;
        let (env, _extends) = testing::env(CAP, None);
        let maker = CircuitMaker::new();
        let links: Vec<Arc<Link>> = (1..=4).map(|n| testing::link(&env, n)).collect();
        let mut circuits = Vec::new();
        let now = Instant::now();
        for i in 0..CIRCUITS {
            let link = &links[i % links.len()];
            circuits.push(maker.circuit(link, 0x8000_0000 | (i as u32 + 1), now));
        }
        let body = testing::unfinished_fragment();
        let mut peak = 0;
        for round in 0..2 {
            for (i, (circ, client)) in circuits.iter_mut().enumerate() {
                testing::send_body(&env, circ, client, &body);
                peak = peak.max(env.budget.queued());
                if oom::over_cap(env.budget.queued(), CAP) {
                    relieve_links(&env, &links);
                    // The links' writers send the DESTROYs.
                    for link in &links {
                        let mut out = Vec::new();
                        while shallot_link::CellQueue::drain_into(&link.chan, 127, &mut out) > 0 {
                            out.clear();
                        }
                    }
                }
                assert!(
                    env.budget.queued() <= CAP,
                    "round {round}, circuit {i}: {} cells held",
                    env.budget.queued()
                );
            }
        }
        // Each circuit's unfinished message takes one reassembly piece.
        let per_circuit = circuits[CIRCUITS - 1].0.held_cells();
        assert!(per_circuit > 0);
        assert!(peak <= CAP + per_circuit, "peak {peak}");
        let destroyed = env.stats.snapshot().circuits_destroyed_for_memory;
        assert!(destroyed > 0, "the handler never ran");
        // What the budget counts is what the circuits hold, plus the DESTROY cells queued.
        let held: usize = circuits.iter().map(|(c, _)| c.held_cells()).sum();
        let queued: usize = links.iter().map(|l| l.chan.oldest_cells().len()).sum();
        assert_eq!(queued, 0, "no relay cells were queued");
        assert!(held <= CAP);
        assert!(held > 0);
        assert_eq!(
            circuits.iter().filter(|(c, _)| c.is_destroyed()).count() as u64,
            destroyed
        );
        // The circuits that kept their messages are the ones that were filled last.
        assert!(circuits[0].0.is_destroyed());
        assert!(!circuits[CIRCUITS - 1].0.is_destroyed());
    }

    /// Idle timeouts under a fake clock: a circuit that passes no cell is destroyed with
    /// reason 6, one that does survives; a link with no circuit left is closed only once it
    /// has had none for the link timeout.
    #[test]
    fn idle_circuits_are_destroyed_and_idle_links_found() {
        let (env, _extends) = testing::env(1_000_000, None);
        let maker = CircuitMaker::new();
        let quiet = testing::link(&env, 1);
        let busy = testing::link(&env, 2);
        let empty = testing::link(&env, 3);
        let links = vec![quiet.clone(), busy.clone(), empty.clone()];
        let t0 = Instant::now();
        let (q, _) = maker.circuit(&quiet, 0x8000_0001, t0);
        let (b, mut b_client) = maker.circuit(&busy, 0x8000_0002, t0);
        let (link_t, circ_t) = (Duration::from_secs(60), Duration::from_secs(600));
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Before either timeout nothing happens (links with circuits are never idle).
        assert!(expire_idle(&env, &links, at(59), link_t, circ_t).is_empty());
        // The empty link has had no circuit for the link timeout.
        let idle = expire_idle(&env, &links, at(61), link_t, circ_t);
        assert_eq!(idle.len(), 1);
        assert!(Arc::ptr_eq(&idle[0], &empty));
        // The busy circuit passes a cell (the shell stamps it with the real clock, after t0).
        testing::send_body(&env, &b, &mut b_client, &testing::unfinished_fragment());
        assert!(!q.is_idle(at(599), circ_t));
        assert!(q.is_idle(at(600), circ_t));
        assert!(!b.is_idle(at(600), circ_t));
        expire_idle(&env, &links, at(600), link_t, circ_t);
        assert!(q.is_destroyed());
        assert!(!b.is_destroyed());
        assert_eq!(env.stats.snapshot().circuits_destroyed_idle, 1);
        let mut cells = Vec::new();
        while shallot_link::CellQueue::drain_into(&quiet.chan, 127, &mut cells) > 0 {}
        let cell = shallot_proto::cell::Cell::decode(&cells).unwrap().unwrap();
        assert_eq!(
            cell.msg,
            shallot_proto::cell::ChanMsg::Destroy(shallot_proto::cell::DestroyReason::Timeout)
        );
        // The quiet link lost its circuit just now: idle only a link timeout from now.
        let now = Instant::now();
        let idle = expire_idle(&env, &links, now + Duration::from_secs(30), link_t, circ_t);
        assert!(!idle.iter().any(|l| Arc::ptr_eq(l, &quiet)));
        let idle = expire_idle(&env, &links, now + Duration::from_secs(61), link_t, circ_t);
        assert!(idle.iter().any(|l| Arc::ptr_eq(l, &quiet)));
        assert!(!idle.iter().any(|l| Arc::ptr_eq(l, &busy)));
    }
}
