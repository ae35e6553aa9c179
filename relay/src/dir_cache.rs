//! The relay as a directory cache (`docs/spec.md` §5.13): it keeps the consensus it follows
//! serialized and zstd-compressed, with the compressed diffs to it from the last few it
//! followed, and answers a client's `DIR_GET` on a circuit ending here with the diff from the
//! consensus the client named when it has one, else the whole consensus, streamed in
//! `DIR_CHUNK`s under the circuit's flow control. A client back after its consensus expired
//! names an older one: if it is among the last day's ([`DayBases`]), the diff from it is
//! computed on that first request, one at a time, and kept until the next consensus.
//!
//! [`Served`] is what is served, made without I/O from the consensuses followed; [`serve`] is
//! the service: it follows the relay's consensus and answers requests on circuits that came
//! straight from a client (a one-hop circuit on the client's link), at most
//! [`MAX_ANSWERS_AT_ONCE`] at a time and [`MAX_ANSWERS_PER_NETWORK`] to one client network
//! ([`AnswerSlots`]), each within [`ANSWER_LIMIT`]; any other request is answered
//! "unavailable", and the client asks elsewhere. So one client stalling its answers cannot
//! take the cache from the others. A relay cannot forge anything it serves: clients verify
//! the authorities' signatures on what they rebuild. It can withhold or serve an old one,
//! which clients refuse and go elsewhere.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_directory::compress::{compress, compress_diff};
use shallot_directory::day_bases::{DayBase, DayBases};
use shallot_directory::diff_queue::DiffQueue;
use shallot_proto::dir::diff::{consensus_diff, text_body_digest};
use shallot_proto::dir::Consensus;
use shallot_proto::dir_cache::{AnswerForm, DirMsg};
use shallot_proto::relay_msg::RelayMsg;
use shallot_rt::lock;
use tokio::sync::mpsc;
use tracing::debug;

use crate::core::Core;
use crate::shell::{Circuit, DirRequest};
use crate::stats::Stats;

/// Consensuses kept as bases for diffs, the newest among them.
pub(crate) const KEPT: usize = 4;

/// Answers being streamed at once; further requests are answered "unavailable".
pub(crate) const MAX_ANSWERS_AT_ONCE: usize = 32;

/// Answers being streamed at once to circuits from one client network (an IPv4 address or an
/// IPv6 /64). A client asks for one consensus at a time; a few more leave room for clients
/// behind one address translator.
pub(crate) const MAX_ANSWERS_PER_NETWORK: usize = 4;

/// How long one answer may take in all, however the client paces its window.
pub(crate) const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// The answers being sent: how many in all and to each client network (§5.13). Pure: no I/O.
#[derive(Debug, Default)]
pub(crate) struct AnswerSlots {
    total: usize,
    per_network: HashMap<IpAddr, usize>,
}

impl AnswerSlots {
    /// Takes a slot for an answer to a client in `network`; `false` when the total or that
    /// network is at its limit.
    pub(crate) fn take(&mut self, network: IpAddr) -> bool {
        if self.total >= MAX_ANSWERS_AT_ONCE {
            return false;
        }
        let n = self.per_network.entry(network).or_default();
        if *n >= MAX_ANSWERS_PER_NETWORK {
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }

    /// Gives back a slot taken for `network`.
    pub(crate) fn give_back(&mut self, network: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_network.get_mut(&network) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_network.remove(&network);
            }
        }
    }
}

/// A slot of [`AnswerSlots`], given back when dropped.
struct AnswerSlot {
    slots: Arc<Mutex<AnswerSlots>>,
    network: IpAddr,
}

impl AnswerSlot {
    /// A slot for a request from a client in `network` (`None`: the request came through
    /// another relay, which gets no answer).
    fn take(slots: &Arc<Mutex<AnswerSlots>>, network: Option<IpAddr>) -> Option<AnswerSlot> {
        let network = network?;
        lock(slots).take(network).then(|| AnswerSlot {
            slots: slots.clone(),
            network,
        })
    }
}

impl Drop for AnswerSlot {
    fn drop(&mut self) {
        lock(&self.slots).give_back(self.network);
    }
}

/// How long one message of an answer may wait for the circuit's window.
const SEND_LIMIT: Duration = Duration::from_secs(30);

/// A diff computed on request from one of the day's older consensuses, by the base's body
/// digest; `None` where none was worth sending.
type OlderDiff = ([u8; 32], Option<Arc<Vec<u8>>>);

/// What the cache serves: the newest consensus compressed, and the compressed diffs to it from
/// the ones before it, each under its body digest.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// The consensuses kept, oldest first, with their body digests.
    kept: VecDeque<([u8; 32], Arc<Consensus>)>,
    /// The newest, compressed.
    full: Arc<Vec<u8>>,
    /// Diffs to the newest from each consensus kept (the newest too: an empty diff).
    diffs: Vec<([u8; 32], Arc<Vec<u8>>)>,
    /// The last day's consensuses followed, compressed, the newest too.
    day: DayBases,
    /// Diffs to the newest computed on request from the day's older ones, by the base's body
    /// digest; `None` where none was worth sending.
    older: Mutex<Vec<OlderDiff>>,
}

impl Served {
    /// What is served once `next` is followed: it becomes the newest (a consensus already
    /// newest, or not newer than it, changes nothing and gives `None`).
    pub(crate) fn follow(&self, next: Arc<Consensus>) -> Option<Served> {
        let text = next.encode().ok()?;
        let digest = text_body_digest(&text);
        if let Some((d, newest)) = self.kept.back() {
            if *d == digest || newest.valid_after >= next.valid_after {
                return None;
            }
        }
        let mut kept = self.kept.clone();
        kept.push_back((digest, next.clone()));
        while kept.len() > KEPT {
            kept.pop_front();
        }
        let diffs = kept
            .iter()
            .filter_map(|(d, base)| {
                let diff = consensus_diff(base, &next).ok()?;
                Some((*d, Arc::new(compress_diff(&diff))))
            })
            .collect();
        let full = Arc::new(compress(text.as_bytes()));
        let mut day = self.day.clone();
        day.keep(DayBase::from_compressed(
            digest,
            next.valid_after,
            full.clone(),
        ));
        Some(Served {
            kept,
            full,
            diffs,
            day,
            older: Mutex::default(),
        })
    }

    /// The answer to a client holding the consensus with body digest `base`; `None` when
    /// that is one of the day's older consensuses whose diff is not computed yet
    /// ([`Served::answer_older`] computes it).
    pub(crate) fn answer(&self, base: Option<[u8; 32]>) -> Option<(AnswerForm, Arc<Vec<u8>>)> {
        if self.kept.is_empty() {
            return Some((AnswerForm::Unavailable, Arc::default()));
        }
        let full = || Some((AnswerForm::Full, self.full.clone()));
        let Some(base) = base else { return full() };
        if let Some((_, diff)) = self.diffs.iter().find(|(d, _)| *d == base) {
            return Some((AnswerForm::Diff, diff.clone()));
        }
        if let Some((_, older)) = lock(&self.older).iter().find(|(d, _)| *d == base) {
            return match older {
                Some(diff) => Some((AnswerForm::Diff, diff.clone())),
                None => full(),
            };
        }
        if self.day.holds(&base) {
            return None;
        }
        full()
    }

    /// The answer to a client holding the day's older consensus with body digest `base`:
    /// the diff from it, computed now and kept, or the whole consensus if none is worth
    /// sending (no smaller than it). Slow for a large consensus: off the async threads.
    pub(crate) fn answer_older(&self, base: [u8; 32]) -> (AnswerForm, Arc<Vec<u8>>) {
        if let Some(ready) = self.answer(Some(base)) {
            return ready;
        }
        let newest = self.kept.back().map(|(_, c)| c.clone());
        let diff = self
            .day
            .get(&base)
            .zip(newest)
            .and_then(|(old, newest)| old.diff_to(&newest, self.full.len()))
            .map(|d| Arc::new(d.compressed));
        lock(&self.older).push((base, diff.clone()));
        match diff {
            Some(diff) => (AnswerForm::Diff, diff),
            None => (AnswerForm::Full, self.full.clone()),
        }
    }

    /// The oldest consensus kept, compressed whole: what a cache serving stale answers sends.
    #[cfg(feature = "misbehave")]
    fn oldest(&self) -> Option<Vec<u8>> {
        let text = self.kept.front()?.1.encode().ok()?;
        Some(compress(text.as_bytes()))
    }
}

/// Follows the relay's consensus into the cache and answers `requests` until the relay stops.
pub(crate) async fn serve(core: Arc<Core>, mut requests: mpsc::UnboundedReceiver<DirRequest>) {
    let served = Arc::new(Mutex::new(Arc::new(Served::default())));
    let follower = {
        let served = served.clone();
        let core = core.clone();
        let mut consensus = core.consensus.subscribe();
        shallot_rt::AbortOnDrop::new(tokio::spawn(async move {
            loop {
                let next = consensus.borrow_and_update().clone();
                if let Some(next) = next {
                    let valid_after = next.valid_after;
                    let current = lock(&served).clone();
                    // Compressing and diffing a large consensus takes a while: off the
                    // runtime's threads.
                    let made = tokio::task::spawn_blocking(move || current.follow(next)).await;
                    if let Ok(Some(made)) = made {
                        debug!("directory cache follows a new consensus");
                        *lock(&served) = Arc::new(made);
                        core.stats()
                            .dir_cache_valid_after
                            .store(valid_after, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if consensus.changed().await.is_err() {
                    return;
                }
            }
        }))
    };
    let slots: Arc<Mutex<AnswerSlots>> = Arc::default();
    // One diff from the day's older consensuses is computed at a time.
    let computing = DiffQueue::default();
    while let Some(request) = requests.recv().await {
        let snapshot = lock(&served).clone();
        let permit = AnswerSlot::take(&slots, request.circ.client_network());
        let Some(permit) = permit else {
            // One message, sent only if the window is open now: a refused request holds
            // nothing, not even a task.
            Stats::bump(&core.stats().dir_answers_unavailable);
            let unavailable = RelayMsg::Dir(DirMsg::Answer {
                form: AnswerForm::Unavailable,
                len: 0,
            });
            let _ = request.circ.send_if_open(&core.env, unavailable);
            continue;
        };
        let core = core.clone();
        let computing = computing.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = async {
                let started = &core.stats().dir_older_diffs;
                let (form, bytes) = answer(&snapshot, request.base, &computing, started).await;
                stream(&core, &request.circ, form, &bytes, &snapshot).await;
            };
            if tokio::time::timeout(ANSWER_LIMIT, answer).await.is_err() {
                debug!("directory answer not sent within {ANSWER_LIMIT:?}");
            }
        });
    }
    drop(follower);
}

/// The answer to a client holding the consensus with body digest `base`: ready, or, for one
/// of the day's older consensuses, the diff from it computed now in `computing`'s turn
/// (counted in `started`); a request whose turn does not come within [`OLDER_WAIT`](shallot_directory::day_bases::OLDER_WAIT) is sent
/// the whole consensus.
async fn answer(
    snapshot: &Arc<Served>,
    base: Option<[u8; 32]>,
    computing: &DiffQueue,
    started: &std::sync::atomic::AtomicU64,
) -> (AnswerForm, Arc<Vec<u8>>) {
    if let Some(ready) = snapshot.answer(base) {
        return ready;
    }
    let whole = (AnswerForm::Full, snapshot.full.clone());
    // Not ready: `base` names one of the day's older consensuses.
    let Some(base) = base else { return whole };
    let s = snapshot.clone();
    let ready = || snapshot.answer(Some(base));
    let job = move || s.answer_older(base);
    computing.run(started, ready, job).await.unwrap_or(whole)
}

/// Sends one answer on `circ`, message by message as its window allows.
async fn stream(core: &Core, circ: &Arc<Circuit>, form: AnswerForm, bytes: &[u8], s: &Served) {
    let stats = core.stats();
    Stats::bump(match form {
        AnswerForm::Full => &stats.dir_answers_full,
        AnswerForm::Diff => &stats.dir_answers_diff,
        AnswerForm::Unavailable => &stats.dir_answers_unavailable,
    });
    #[cfg(feature = "misbehave")]
    if let Some(msgs) = misbehave(core, form, bytes, s) {
        for msg in msgs {
            if !circ.send_when_open(&core.env, msg, SEND_LIMIT).await {
                return;
            }
        }
        return;
    }
    let _ = s;
    for msg in DirMsg::answer(form, bytes) {
        if !circ
            .send_when_open(&core.env, RelayMsg::Dir(msg), SEND_LIMIT)
            .await
        {
            debug!("directory answer not sent: the circuit closed or stayed full");
            return;
        }
    }
}

/// The answer a misbehaving cache sends instead, if it misbehaves that way.
#[cfg(feature = "misbehave")]
fn misbehave(core: &Core, form: AnswerForm, bytes: &[u8], s: &Served) -> Option<Vec<RelayMsg>> {
    use crate::misbehave::Misbehaviour;
    use shallot_proto::dir_cache::MAX_DIR_CHUNK;
    let dir = |msgs: Vec<DirMsg>| Some(msgs.into_iter().map(RelayMsg::Dir).collect());
    match core.env.misbehaviour.get()? {
        Misbehaviour::DirForged => {
            // The newest consensus with one relay's bandwidth changed, signatures kept.
            let (_, newest) = s.kept.back()?;
            let mut forged = (**newest).clone();
            let first = forged.relays.first_mut()?;
            first.bandwidth = first.bandwidth.wrapping_add(1_000_000);
            let text = forged.encode().ok()?;
            dir(DirMsg::answer(AnswerForm::Full, &compress(text.as_bytes())))
        }
        Misbehaviour::DirStale => dir(DirMsg::answer(AnswerForm::Full, &s.oldest()?)),
        Misbehaviour::DirTruncated => {
            // Announces the whole answer, sends half of it, then stops.
            let mut msgs = DirMsg::answer(form, bytes);
            let half = bytes.len() / 2;
            msgs.truncate(1);
            if half > 0 {
                msgs.push(DirMsg::Chunk(bytes[..half.min(MAX_DIR_CHUNK)].to_vec()));
            }
            dir(msgs)
        }
        Misbehaviour::DirOversized => dir(vec![DirMsg::Answer {
            form: AnswerForm::Full,
            len: u32::MAX,
        }]),
        Misbehaviour::DirWithheld => dir(DirMsg::answer(AnswerForm::Unavailable, &[])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shallot_directory::compress::decompress_capped;
    use shallot_proto::dir::diff::apply_diff;

    fn consensus(valid_after: u64, relays: u8) -> Arc<Consensus> {
        let relays = shallot_net::testing::relays(relays);
        let mut c = shallot_net::testing::consensus(
            relays,
            valid_after,
            valid_after + 60,
            valid_after + 180,
        );
        let key = shallot_crypto::keys::IdentityKeypair::generate(&mut rand::thread_rng());
        let sig = c.sign_body(&key).unwrap();
        c.add_signature(key.public(), sig);
        Arc::new(c)
    }

    #[test]
    fn the_newest_is_served_whole_or_as_a_diff_from_a_kept_one() {
        let empty = Served::default();
        assert_eq!(empty.answer(None).unwrap().0, AnswerForm::Unavailable);
        let first = consensus(1000, 3);
        let s = empty.follow(first.clone()).unwrap();
        let second = consensus(1060, 4);
        let s = s.follow(second.clone()).unwrap();
        // Not newer: nothing changes.
        assert!(s.follow(first.clone()).is_none());
        assert!(s.follow(second.clone()).is_none());
        let text2 = second.encode().unwrap();
        let (form, bytes) = s.answer(None).unwrap();
        assert_eq!(form, AnswerForm::Full);
        assert_eq!(
            decompress_capped(&bytes, 1 << 20).unwrap(),
            text2.as_bytes()
        );
        let text1 = first.encode().unwrap();
        let (form, bytes) = s.answer(Some(text_body_digest(&text1))).unwrap();
        assert_eq!(form, AnswerForm::Diff);
        let diff = decompress_capped(&bytes, 1 << 20).unwrap();
        assert_eq!(apply_diff(&text1, &diff).unwrap(), text2);
        // A base it does not keep gets the whole consensus.
        assert_eq!(s.answer(Some([9; 32])).unwrap().0, AnswerForm::Full);
        // Only the last few are kept as bases.
        let mut s = s;
        for i in 2..10 {
            s = s.follow(consensus(1000 + 60 * i, 3)).unwrap();
        }
        assert_eq!(s.kept.len(), KEPT);
        // An older one of the day: its diff is computed on request, then kept.
        let digest1 = text_body_digest(&text1);
        assert!(s.answer(Some(digest1)).is_none(), "not computed ahead");
        let (form, bytes) = s.answer_older(digest1);
        assert_eq!(form, AnswerForm::Diff);
        let newest = s.kept.back().unwrap().1.encode().unwrap();
        let diff = decompress_capped(&bytes, 1 << 20).unwrap();
        assert_eq!(apply_diff(&text1, &diff).unwrap(), newest);
        assert!(bytes.len() < s.full.len());
        let (form, again) = s.answer(Some(digest1)).unwrap();
        assert_eq!(form, AnswerForm::Diff);
        assert!(Arc::ptr_eq(&bytes, &again), "kept, not computed again");
        // A digest of no consensus followed: the whole one, nothing computed.
        assert_eq!(s.answer(Some([7; 32])).unwrap().0, AnswerForm::Full);
        assert_eq!(lock(&s.older).len(), 1);
    }

    /// What a cache serves after following six consensuses, and the first one's text (no
    /// longer among those kept whole).
    fn six_followed() -> (Arc<Served>, String) {
        let first = consensus(1000, 3);
        let text1 = first.encode().unwrap();
        let mut s = Served::default().follow(first).unwrap();
        for i in 1..6 {
            s = s.follow(consensus(1000 + 60 * i, 3)).unwrap();
        }
        (Arc::new(s), text1)
    }

    /// Clients naming an older base of the day and hanging up at once (the answer dropped as
    /// soon as it started the work) make the diff computed once, not once each; the next
    /// client waits for it and is sent it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_dropped_mid_work_compute_a_diff_once() {
        let (s, text1) = six_followed();
        let digest1 = Some(text_body_digest(&text1));
        let computing = DiffQueue::default();
        let started = std::sync::atomic::AtomicU64::new(0);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..200 {
            let mut asked = std::pin::pin!(answer(&s, digest1, &computing, &started));
            let _ = std::future::Future::poll(asked.as_mut(), &mut cx);
        }
        assert_eq!(started.load(std::sync::atomic::Ordering::Relaxed), 1);
        let (form, _) = answer(&s, digest1, &computing, &started).await;
        assert_eq!(form, AnswerForm::Diff);
        assert_eq!(started.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(lock(&s.older).len(), 1);
        // A digest of no consensus followed computes nothing.
        let (form, _) = answer(&s, Some([5; 32]), &computing, &started).await;
        assert_eq!(form, AnswerForm::Full);
        assert_eq!(started.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// One client that stalls its answers (never opening the circuit's window) holds at most
    /// a few of the cache's slots: other clients are still answered, and the slots come back
    /// as its answers end.
    #[test]
    fn one_network_cannot_take_every_answer_slot() {
        let slots: Arc<Mutex<AnswerSlots>> = Arc::default();
        let greedy: IpAddr = [203, 0, 113, 7].into();
        let held: Vec<AnswerSlot> = (0..MAX_ANSWERS_PER_NETWORK)
            .map(|_| AnswerSlot::take(&slots, Some(greedy)).unwrap())
            .collect();
        assert!(AnswerSlot::take(&slots, Some(greedy)).is_none());
        let other: IpAddr = [198, 51, 100, 1].into();
        assert!(AnswerSlot::take(&slots, Some(other)).is_some());
        drop(held);
        assert!(AnswerSlot::take(&slots, Some(greedy)).is_some());
        assert_eq!(lock(&slots).total, 0, "every slot given back");
        assert!(lock(&slots).per_network.is_empty());
    }

    /// Many networks fill the total, and then everyone is answered "unavailable" until a slot
    /// comes back; a request that came through another relay gets no slot at all.
    #[test]
    fn the_total_is_a_limit_too_and_relayed_requests_get_nothing() {
        let slots: Arc<Mutex<AnswerSlots>> = Arc::default();
        assert!(AnswerSlot::take(&slots, None).is_none());
        let mut held = Vec::new();
        for i in 0..MAX_ANSWERS_AT_ONCE {
            let client = IpAddr::from([10, 0, (i / 256) as u8, i as u8]);
            held.push(AnswerSlot::take(&slots, Some(client)).unwrap());
        }
        assert!(AnswerSlot::take(&slots, Some([10, 9, 9, 9].into())).is_none());
        held.pop();
        assert!(AnswerSlot::take(&slots, Some([10, 9, 9, 9].into())).is_some());
    }
}
