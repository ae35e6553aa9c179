//! Relay configuration: identity of the daemon, its limits and its timers
//! (`docs/spec.md` §6.6, §6.7, §9.3–9.4). Every limit, the mailbox service's and its store's
//! included, has a production default chosen here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shallot_crypto::keys::RelayId;
use shallot_proto::flow::WINDOW_START;

use crate::queue::HELD_CELL_BYTES;

/// Resource limits. Each one is documented in `docs/spec.md` §6.6 and has a test that hits it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a peer has to complete the link handshake after connecting.
    pub handshake_timeout: Duration,
    /// Open connections accepted from one IP address.
    pub connections_per_ip: usize,
    /// Open connections in total; the memory budget may lower it (see
    /// [`Limits::max_links`]).
    pub max_connections: usize,
    /// Circuits open on one link.
    pub circuits_per_link: usize,
    /// Circuit creations per second allowed from one IP address (sustained rate).
    pub creates_per_sec_per_ip: f64,
    /// Circuit creations one IP address may make in a burst.
    pub create_burst_per_ip: f64,
    /// Cells queued for one circuit toward one link before the circuit is destroyed.
    pub circuit_queue_cells: usize,
    /// The relay's memory budget, bytes, beyond its fixed baseline: half for cells held
    /// (queued on links, replies waiting for a window, unfinished messages being reassembled;
    /// beyond it the circuits holding the oldest are destroyed), a quarter for links (an
    /// eighth for their fixed state, [`Limits::max_links`], and an eighth for the buffers of
    /// busy links, [`Limits::link_buffer_bytes`]) and a quarter for circuits' fixed state
    /// ([`Limits::max_circuits`]).
    pub queue_memory_bytes: usize,
    /// Time to wait for the next hop's answer when extending.
    pub extend_timeout: Duration,
    /// Time a link may carry no circuit before it is closed (`docs/spec.md` §6.6): silent
    /// links would otherwise fill `max_connections` for good.
    pub link_idle_timeout: Duration,
    /// Time a circuit may pass no cell, in either direction, before it is destroyed with
    /// reason 6 (timeout). Longer than a client keeps a circuit in use (10 minutes).
    pub circuit_idle_timeout: Duration,
    /// Kernel send-buffer size for every link socket, bounding the kernel memory a stalled
    /// peer can hold; `None` leaves the operating system's (auto-tuned) default.
    pub socket_send_buffer: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            connections_per_ip: 32,
            max_connections: 8192,
            circuits_per_link: 4096,
            creates_per_sec_per_ip: 20.0,
            create_burst_per_ip: 200.0,
            // An honest end never has more than a window outstanding; allow some slack.
            circuit_queue_cells: WINDOW_START as usize + 100,
            queue_memory_bytes: 256 * 1024 * 1024,
            extend_timeout: Duration::from_secs(10),
            link_idle_timeout: Duration::from_secs(180),
            circuit_idle_timeout: Duration::from_secs(1200),
            socket_send_buffer: None,
        }
    }
}

/// What one open, quiet link costs this process, bytes: its state, its two tasks and the
/// allocator's bookkeeping (its buffers are freed while it is quiet). Measured with the soak
/// (`shallot bench --soak`, `docs/spec.md` §6.6) and rounded up.
pub const LINK_BYTES: usize = 8 * 1024;

/// Open links' fixed state may take at most 1/`LINK_SHARE` of the memory budget at
/// [`LINK_BYTES`] each.
pub const LINK_SHARE: usize = 8;

/// Busy links' buffers (records being read, sealed or written) may take 1/`LINK_BUFFER_SHARE`
/// of the memory budget; with their fixed state's share, links take a quarter of it.
pub const LINK_BUFFER_SHARE: usize = 8;

/// The least room for busy links' buffers, however small the memory budget: enough for a few
/// links moving full records at once (one busy link holds up to about 4 × 64 KiB).
pub const MIN_LINK_BUFFER_BYTES: usize = 2 * 1024 * 1024;

/// The fewest links a relay accepts, however small its memory budget.
pub const MIN_LINKS: usize = 8;

/// What one circuit's fixed state costs this process, bytes (its layer keys, state machine,
/// entries in its links' tables), its held cells and unfinished message aside: resident
/// memory per idle circuit measured at 815–893 bytes (`shallot bench`), rounded up.
pub const CIRCUIT_BYTES: usize = 1024;

/// Circuits may take at most 1/`CIRCUIT_SHARE` of the memory budget at [`CIRCUIT_BYTES`]
/// each.
pub const CIRCUIT_SHARE: usize = 4;

/// The fewest circuits a relay carries at once, however small its memory budget.
pub const MIN_CIRCUITS: usize = 64;

/// Held cells may take at most 1/`CELL_SHARE` of the memory budget: the rest is the links'
/// and the circuits' shares, so that the three together stay within the budget.
pub const CELL_SHARE: usize = 2;

impl Limits {
    /// Links open at once (accepted, handshaking included): `max_connections`, or fewer when
    /// that many would cost more than 1/[`LINK_SHARE`] of `queue_memory_bytes` at
    /// [`LINK_BYTES`] each (never fewer than [`MIN_LINKS`]).
    pub fn max_links(&self) -> usize {
        let affordable = self.queue_memory_bytes / LINK_SHARE / LINK_BYTES;
        self.max_connections.min(affordable.max(MIN_LINKS))
    }

    /// Bytes of buffer busy links may hold in all (their capacity, both directions): 1/
    /// [`LINK_BUFFER_SHARE`] of `queue_memory_bytes`, never less than
    /// [`MIN_LINK_BUFFER_BYTES`]. Beyond it the links stalled longest are closed.
    pub fn link_buffer_bytes(&self) -> usize {
        (self.queue_memory_bytes / LINK_BUFFER_SHARE).max(MIN_LINK_BUFFER_BYTES)
    }

    /// Of [`max_links`](Self::max_links), those anonymous clients may hold: an eighth (at
    /// least one) is kept for other relays and the authorities' probes, so clients filling
    /// their share cannot cut the relay off from the network or out of the consensus.
    pub fn max_client_links(&self) -> usize {
        let all = self.max_links();
        all.saturating_sub((all / 8).max(1))
    }

    /// Circuits alive at once, relay-wide: as many as 1/[`CIRCUIT_SHARE`] of
    /// `queue_memory_bytes` holds at [`CIRCUIT_BYTES`] each (never fewer than
    /// [`MIN_CIRCUITS`]). A CREATE beyond it is refused (reason 4).
    pub fn max_circuits(&self) -> usize {
        (self.queue_memory_bytes / CIRCUIT_SHARE / CIRCUIT_BYTES).max(MIN_CIRCUITS)
    }

    /// The relay-wide count of held cells (in [`HELD_CELL_BYTES`] units) beyond which the
    /// out-of-memory handler runs: 1/[`CELL_SHARE`] of `queue_memory_bytes`.
    pub fn queue_cap_cells(&self) -> usize {
        self.queue_memory_bytes / CELL_SHARE / HELD_CELL_BYTES
    }
}

/// Mailbox service limits, each with a production default (`docs/spec.md` §9.4).
#[derive(Debug, Clone)]
pub struct MailboxLimits {
    /// The store's limits.
    pub store: StoreLimits,
    /// Mailbox requests being handled at once, relay-wide; more are refused as busy.
    pub pending_requests: usize,
    /// Subscriptions one circuit may hold.
    pub subscriptions_per_circuit: usize,
    /// Subscriptions one mailbox may have (each new one beyond replaces the mailbox's
    /// oldest): each envelope deposited there is pushed to every one, each push taking one
    /// of the `pending_requests` places until it is sent.
    pub subscribers_per_mailbox: usize,
    /// Subscriptions the relay holds in all.
    pub subscriptions: usize,
    /// Request nonces remembered for replay protection.
    pub replay_cache: usize,
    /// How often expired envelopes are deleted.
    pub expiry_interval: Duration,
    /// Limits on each circuit's requests (`docs/spec.md` §9.7).
    pub circuit: crate::mailbox::admission::CircuitLimits,
    /// Rate limits on deposits, new mailbox ids and bundle puts, and the puzzle (§9.7).
    pub admission: crate::mailbox::admission::AdmissionLimits,
    /// Repair under churn (`docs/spec.md` §9.6).
    pub repair: RepairSettings,
}

/// How a mailbox relay repairs under churn (`docs/spec.md` §9.6), with production defaults.
#[derive(Debug, Clone)]
pub struct RepairSettings {
    /// Whether it repairs at all (pushes on ring change, hand-over on stop, anti-entropy).
    /// Off only in tests that show what is lost without repair (`--no-repair`).
    pub enabled: bool,
    /// The mean time between anti-entropy rounds; each wait is drawn uniformly from half to
    /// one and a half times it.
    pub sync_interval: Duration,
    /// The most mailboxes one anti-entropy round covers (the next round goes on from there).
    pub sync_mailboxes: usize,
    /// The most bytes one round sends: summaries and pushed envelopes.
    pub sync_bytes: u64,
}

impl Default for RepairSettings {
    fn default() -> Self {
        RepairSettings {
            enabled: true,
            sync_interval: Duration::from_secs(600),
            sync_mailboxes: 512,
            sync_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Default for MailboxLimits {
    fn default() -> Self {
        MailboxLimits {
            store: StoreLimits::default(),
            pending_requests: 4096,
            subscriptions_per_circuit: 8,
            subscribers_per_mailbox: 4,
            subscriptions: 100_000,
            replay_cache: 200_000,
            expiry_interval: Duration::from_secs(60),
            circuit: Default::default(),
            admission: Default::default(),
            repair: RepairSettings::default(),
        }
    }
}

/// Mailbox store limits, each with a production default (`docs/spec.md` §9.4).
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// How long an envelope is kept if never acknowledged, in seconds.
    pub expiry_secs: u64,
    /// Envelopes one mailbox may hold.
    pub envelopes_per_mailbox: u64,
    /// Bytes of envelopes one mailbox may hold.
    pub bytes_per_mailbox: u64,
    /// Bytes of envelopes the whole store may hold.
    pub total_bytes: u64,
    /// Prekey bundles the store may hold (each at most 1 KiB).
    pub bundles: u64,
    /// How long a request waits for the store thread before it is given up and answered
    /// Busy (`docs/spec.md` §9.4): what a request holds meanwhile (its place among the
    /// relay's requests in progress, its circuit's slot, its bytes) is never held longer,
    /// however far behind the store is. Well within a client's own limit for a request (15 s).
    pub answer_limit: Duration,
    /// Requests that may wait for the store thread at once; beyond, a request is answered
    /// Busy at once (the relay's own upkeep still goes in). Bounds what requests given up
    /// (`answer_limit`) but not yet skipped still hold while the store is stuck, outside the
    /// memory budget: each at most an envelope (20 KiB) or a list of ids, so with the batch
    /// the store thread has taken (512 more) about 50 MiB at most.
    pub queued_jobs: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            expiry_secs: 7 * 24 * 3600,
            envelopes_per_mailbox: 1000,
            bytes_per_mailbox: 4 * 1024 * 1024,
            total_bytes: 1024 * 1024 * 1024,
            bundles: 100_000,
            answer_limit: Duration::from_secs(10),
            queued_jobs: 2048,
        }
    }
}

/// Timers.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often the descriptor is re-published to every authority.
    pub publish_interval: Duration,
    /// How often a new ntor onion key is made.
    pub onion_key_rotation: Duration,
    /// How long the previous onion key is still accepted after a rotation.
    pub onion_key_grace: Duration,
    /// How often the consensus is fetched.
    pub consensus_refresh: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            publish_interval: Duration::from_secs(3600),
            onion_key_rotation: Duration::from_secs(7 * 24 * 3600),
            onion_key_grace: Duration::from_secs(24 * 3600),
            consensus_refresh: Duration::from_secs(300),
        }
    }
}

/// Everything a relay needs to run.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where its keys (and mailbox store) live.
    pub data_dir: PathBuf,
    /// Address to listen on for links.
    pub listen: SocketAddr,
    /// Address published in the descriptor, when it differs from `listen`.
    pub advertise: Option<SocketAddr>,
    /// Nickname in the descriptor.
    pub nickname: String,
    /// Declared bandwidth, bytes per second.
    pub bandwidth: u64,
    /// Declared family.
    pub family: Vec<RelayId>,
    /// Whether it offers a mailbox.
    pub mailbox: bool,
    /// Mailbox service limits (when `mailbox`).
    pub mailbox_limits: MailboxLimits,
    /// Resource limits.
    pub limits: Limits,
    /// Timers.
    pub timing: Timing,
    /// The authorities to publish to and take the consensus from (`None` runs without a
    /// directory, for tests that give the relay its view of the network directly).
    pub network: Option<shallot_directory::network::NetworkFile>,
}

impl RelayConfig {
    /// A configuration with default limits and timers.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        RelayConfig {
            data_dir,
            listen,
            advertise: None,
            nickname: "shallot".into(),
            bandwidth: 1024 * 1024,
            family: Vec::new(),
            mailbox: false,
            mailbox_limits: MailboxLimits::default(),
            limits: Limits::default(),
            timing: Timing::default(),
            network: None,
        }
    }

    /// The address other nodes reach this relay at.
    pub fn address(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }
}
