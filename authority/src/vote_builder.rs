//! What an authority votes (`docs/spec.md` §5.7): for each descriptor it holds and verified
//! whose relay a probe has proven at some time, its digest, when the relay was first proven
//! (its age: a descriptor that was never proven does not age), this authority's measurement,
//! and the flags it earns; kept under the vote size limit by leaving out the newest relays
//! that are not Running first. Pure, over [`State`].

use shallot_crypto::keys::{RelayId, VerifyingKey};
use shallot_proto::dir::{Flags, RelayDescriptor, Vote, VoteEntry};

use super::bandwidth::MeasurementSource;
use super::state::{RelayRecord, State};
use shallot_directory::compute::{rounded_measurement, Period};
use shallot_directory::network::NetworkParams;

/// The shared-random fields of a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrvFields {
    /// The commitment to this round's reveal.
    pub commit: [u8; 32],
    /// The reveal of last round's commitment, if this authority made one.
    pub reveal: Option<[u8; 32]>,
}

/// What a vote is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteSpec {
    /// The voting authority.
    pub me: VerifyingKey,
    /// The period voted on.
    pub period: Period,
    /// The time of voting, unix seconds.
    pub now: u64,
    /// The shared-random fields.
    pub srv: SrvFields,
    /// The largest signed vote, bytes.
    pub max_len: usize,
}

/// A vote, and how many relays it left out to stay under the size limit.
#[derive(Debug, Clone)]
pub struct BuiltVote {
    /// The vote.
    pub vote: Vote,
    /// Relays left out.
    pub dropped: usize,
}

impl State {
    /// This authority's vote as `spec` says, at most `spec.max_len` bytes once signed.
    pub fn build_vote(
        &self,
        spec: &VoteSpec,
        params: &NetworkParams,
        source: &dyn MeasurementSource,
    ) -> BuiltVote {
        let VoteSpec {
            me,
            period,
            now,
            srv,
            max_len,
        } = *spec;
        let oldest = period
            .valid_after
            .saturating_sub(params.descriptor_max_age_secs);
        let mut relays: Vec<(VoteEntry, (bool, u64))> = self
            .descriptors
            .iter()
            .filter(|(_, a)| a.desc.published <= period.valid_after && a.desc.published >= oldest)
            .filter_map(|(id, a)| {
                let rec = self.relays.get(id)?;
                let known_since = rec.history.known_since?;
                let e = entry_for(id, &a.desc, a.digest, rec, known_since, now, params, source);
                let priority = (!e.flags.contains(Flags::RUNNING), e.known_since);
                Some((e, priority))
            })
            .collect();
        let mut vote = Vote {
            authority: me,
            valid_after: period.valid_after,
            fresh_until: period.fresh_until,
            valid_until: period.valid_until,
            commit: srv.commit,
            reveal: srv.reveal,
            relays: Vec::new(),
        };
        let mut total = vote.overhead_len();
        let all: usize = relays.iter().map(|(e, _)| e.line().len() + 1).sum();
        let mut dropped = 0;
        if total + all > max_len {
            // Running relays first, then the longest known; the rest do not fit.
            relays.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.id.cmp(&b.0.id)));
            let before = relays.len();
            relays.retain(|(e, _)| {
                let len = e.line().len() + 1;
                if total + len <= max_len {
                    total += len;
                    true
                } else {
                    false
                }
            });
            dropped = before - relays.len();
            relays.sort_by_key(|(e, _)| e.id);
        }
        vote.relays = relays.into_iter().map(|(e, _)| e).collect();
        BuiltVote { vote, dropped }
    }
}

/// One relay's entry in this authority's vote; `known_since` is when a probe first proved it.
#[allow(clippy::too_many_arguments)]
fn entry_for(
    id: &RelayId,
    d: &RelayDescriptor,
    digest: [u8; 32],
    rec: &RelayRecord,
    known_since: u64,
    now: u64,
    p: &NetworkParams,
    source: &dyn MeasurementSource,
) -> VoteEntry {
    let running = rec.last_probe.is_some_and(|probe| {
        probe.proves(d) && probe.at.saturating_add(2 * p.voting_interval_secs) >= now
    });
    let measured = if running {
        source.measured(id, now)
    } else {
        None
    };
    // Flags go by the measurement when there is one (as measured: rounding it cannot carry a
    // relay over a threshold): a relay cannot declare its way to them.
    let bandwidth = measured.map_or(d.bandwidth, |m| m.min(d.bandwidth));
    let known = now.saturating_sub(known_since);
    let fast = bandwidth >= p.fast_min_bandwidth;
    let stable = running
        && rec
            .history
            .running_since
            .is_some_and(|since| now.saturating_sub(since) >= p.stable_min_uptime_secs);
    let guard =
        fast && stable && bandwidth >= p.guard_min_bandwidth && known >= p.guard_min_known_secs;
    let mut flags = Flags::VALID;
    flags.set(Flags::RUNNING, running);
    flags.set(Flags::FAST, fast);
    flags.set(Flags::STABLE, stable);
    flags.set(Flags::GUARD, guard);
    flags.set(
        Flags::MAILBOX,
        d.mailbox && running && known >= p.mailbox_min_known_secs,
    );
    VoteEntry {
        id: *id,
        descriptor: digest,
        known_since,
        // Voted rounded: the digits past the second are measurement noise (§5.7).
        measured: measured.map(rounded_measurement),
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bandwidth::Measurements;
    use crate::state::Probe;
    use shallot_crypto::keys::IdentityKeypair;
    use shallot_proto::dir::MAX_VOTE_LEN;

    fn params() -> NetworkParams {
        NetworkParams {
            voting_interval_secs: 10,
            descriptor_max_age_secs: 1000,
            stable_min_uptime_secs: 50,
            guard_min_known_secs: 100,
            mailbox_min_known_secs: 10,
            fast_min_bandwidth: 100,
            guard_min_bandwidth: 200,
            test_network: true,
            ..NetworkParams::default()
        }
    }

    fn descriptor(id: &IdentityKeypair, octet: u8, published: u64, bandwidth: u64) -> String {
        RelayDescriptor {
            nickname: "r".into(),
            address: format!("10.{octet}.0.1:9000").parse().unwrap(),
            identity: id.public(),
            ntor_key: [1; 32],
            link_key: [octet; 32],
            bandwidth,
            family: vec![],
            mailbox: true,
            published,
        }
        .sign(id)
        .unwrap()
    }

    fn period(t: u64) -> Period {
        Period {
            valid_after: t,
            fresh_until: t + 10,
            valid_until: t + 30,
        }
    }

    fn spec(me: VerifyingKey, t: u64, now: u64, max_len: usize) -> VoteSpec {
        VoteSpec {
            me,
            period: period(t),
            now,
            srv: SrvFields {
                commit: [7; 32],
                reveal: None,
            },
            max_len,
        }
    }

    fn probe(s: &State, id: &RelayId, at: u64, ok: bool) -> Probe {
        let d = &s.descriptors[id].desc;
        Probe {
            at,
            ok,
            address: d.address,
            link_key: d.link_key,
            ntor_key: d.ntor_key,
        }
    }

    #[test]
    fn flags_follow_the_thresholds_and_the_measurement() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let p = params();
        let mut s = State::new(&p);
        let t0 = 10_000;
        let a = s.admit(&descriptor(&id, 1, t0, 250), t0, &p).unwrap();
        let none = Measurements::new(100);
        let vote = |s: &State, now, m: &dyn MeasurementSource| {
            s.build_vote(&spec(id.public(), now, now, MAX_VOTE_LEN), &p, m)
                .vote
                .relays[0]
                .clone()
        };
        // Not voted until a probe proved it.
        let spec0 = spec(id.public(), t0, t0, MAX_VOTE_LEN);
        assert!(s.build_vote(&spec0, &p, &none).vote.relays.is_empty());
        let pr = probe(&s, &a.id, t0, true);
        s.record_probe(&a.id, pr, None);
        let e = vote(&s, t0, &none);
        assert_eq!(e.flags, Flags::VALID | Flags::FAST | Flags::RUNNING);
        assert_eq!(e.descriptor, s.descriptors[&a.id].digest);
        assert_eq!((e.known_since, e.measured), (t0, None));
        // Mailbox once known long enough (a key ground against a known shared random value
        // comes too late); a probe older than two intervals no longer counts.
        assert!(vote(&s, t0 + 20, &none).flags.contains(Flags::MAILBOX));
        assert!(!vote(&s, t0 + 21, &none).flags.contains(Flags::RUNNING));
        let pr = probe(&s, &a.id, t0 + 60, true);
        s.record_probe(&a.id, pr, None);
        assert!(vote(&s, t0 + 60, &none).flags.contains(Flags::STABLE));
        assert!(!vote(&s, t0 + 60, &none).flags.contains(Flags::GUARD));
        let pr = probe(&s, &a.id, t0 + 100, true);
        s.record_probe(&a.id, pr, None);
        assert!(vote(&s, t0 + 100, &none).flags.contains(Flags::GUARD));
        // A measurement below the thresholds takes Fast and Guard away, whatever is declared.
        let mut slow = Measurements::new(100);
        slow.record(a.id, t0 + 100, 50);
        let e = vote(&s, t0 + 100, &slow);
        assert_eq!(e.measured, Some(50));
        assert!(!e.flags.contains(Flags::FAST) && !e.flags.contains(Flags::GUARD));
        // The vote carries a measurement to two significant figures; the flags go by the
        // figure measured, so rounding neither gives nor takes one.
        let mut noisy = Measurements::new(100);
        noisy.record(a.id, t0 + 100, 1_234_567);
        assert_eq!(vote(&s, t0 + 100, &noisy).measured, Some(1_200_000));
        let mut edge = Measurements::new(100);
        edge.record(a.id, t0 + 100, p.guard_min_bandwidth - 5);
        let e = vote(&s, t0 + 100, &edge);
        assert_eq!(
            e.measured,
            Some(p.guard_min_bandwidth),
            "rounded up to the threshold"
        );
        assert!(e.flags.contains(Flags::FAST) && !e.flags.contains(Flags::GUARD));
        let pr = probe(&s, &a.id, t0 + 101, false);
        s.record_probe(&a.id, pr, None);
        assert_eq!(vote(&s, t0 + 101, &none).flags, Flags::VALID | Flags::FAST);
        assert_eq!(s.relays[&a.id].history.running_since, None);
        assert_eq!(
            s.relays[&a.id].history.known_since,
            Some(t0),
            "a failed probe keeps the age"
        );
        // A probe of other keys than the descriptor's proves nothing.
        let mut other = probe(&s, &a.id, t0 + 102, true);
        other.ntor_key = [9; 32];
        s.record_probe(&a.id, other, None);
        assert!(!vote(&s, t0 + 102, &none).flags.contains(Flags::RUNNING));
    }

    #[test]
    fn descriptors_published_after_valid_after_are_not_voted() {
        let id = IdentityKeypair::generate(&mut rand::thread_rng());
        let p = params();
        let mut s = State::new(&p);
        let a = s
            .admit(&descriptor(&id, 1, 10_050, 250), 10_000, &p)
            .unwrap();
        let pr = probe(&s, &a.id, 10_000, true);
        s.record_probe(&a.id, pr, None);
        let none = Measurements::new(100);
        let built = s.build_vote(&spec(id.public(), 10_040, 10_000, MAX_VOTE_LEN), &p, &none);
        assert!(built.vote.relays.is_empty());
        let built = s.build_vote(&spec(id.public(), 10_050, 10_000, MAX_VOTE_LEN), &p, &none);
        assert_eq!(built.vote.relays.len(), 1);
    }

    /// Issue 10, finding B (ring grinding): descriptors uploaded for identities that never
    /// ran do not age. Until a probe proves a relay it is not voted at all; when it comes up,
    /// its age starts at that probe, so a pre-aged identity gets neither Mailbox nor Guard
    /// then, only once it has been proven for as long as an honest newcomer.
    #[test]
    fn pre_aged_never_proven_identities_get_neither_guard_nor_mailbox() {
        let p = params();
        let mut s = State::new(&p);
        let none = Measurements::new(100);
        let me = IdentityKeypair::generate(&mut rand::thread_rng());
        let t0 = 10_000;
        let mut ids = Vec::new();
        for octet in 1..=20u8 {
            let id = IdentityKeypair::generate(&mut rand::thread_rng());
            ids.push(
                s.admit(&descriptor(&id, octet, t0, 250), t0, &p)
                    .unwrap()
                    .id,
            );
        }
        // Long after (kept fresh by uploads, here simply within the age limit), never proven:
        // nothing is voted.
        let t = t0 + 500;
        let vote = |s: &State, now| {
            s.build_vote(&spec(me.public(), now, now, MAX_VOTE_LEN), &p, &none)
                .vote
        };
        assert!(
            vote(&s, t).relays.is_empty(),
            "never-proven relays are not voted"
        );
        // The attacker brings up the one whose ring position suits it.
        let chosen = ids[7];
        let pr = probe(&s, &chosen, t, true);
        s.record_probe(&chosen, pr, None);
        let v = vote(&s, t);
        assert_eq!(v.relays.len(), 1);
        let e = &v.relays[0];
        assert_eq!(
            (e.id, e.known_since),
            (chosen, t),
            "known since its first proof"
        );
        assert!(e.flags.contains(Flags::RUNNING));
        assert!(!e.flags.contains(Flags::MAILBOX), "{:?}", e.flags);
        assert!(!e.flags.contains(Flags::GUARD), "{:?}", e.flags);
        // It earns them like any newcomer: Mailbox after mailbox_min_known_secs of being known,
        // Guard after guard_min_known_secs.
        for at in [t + 10, t + 60, t + 100] {
            let pr = probe(&s, &chosen, at, true);
            s.record_probe(&chosen, pr, None);
        }
        assert!(vote(&s, t + 10).relays[0].flags.contains(Flags::MAILBOX));
        assert!(!vote(&s, t + 99).relays[0].flags.contains(Flags::GUARD));
        assert!(vote(&s, t + 100).relays[0].flags.contains(Flags::GUARD));
    }

    /// Review finding 5: a vote that would exceed its size limit leaves out the newest
    /// relays that are not Running instead of failing.
    #[test]
    fn an_oversized_vote_drops_the_newest_unknown_relays() {
        let p = params();
        let me = IdentityKeypair::generate(&mut rand::thread_rng());
        let mut s = State::new(&p);
        let none = Measurements::new(100);
        let t = 50_000;
        let mut running = Vec::new();
        let mut newcomers = Vec::new();
        for i in 0..30u64 {
            let id = IdentityKeypair::generate(&mut rand::thread_rng());
            let octet = u8::try_from(i + 1).unwrap();
            // The first ten are old and proven; the rest arrive one second apart.
            let seen = if i < 10 { t - 1000 } else { t - 100 + i };
            let a = s
                .admit(&descriptor(&id, octet, seen, 250), seen, &p)
                .unwrap();
            if i < 10 {
                let pr = probe(&s, &a.id, t, true);
                s.record_probe(&a.id, pr, None);
                running.push(a.id);
            } else {
                // Proven once when they came, down now.
                for (at, ok) in [(seen, true), (t, false)] {
                    let pr = probe(&s, &a.id, at, ok);
                    s.record_probe(&a.id, pr, None);
                }
                newcomers.push((seen, a.id));
            }
        }
        let full = s.build_vote(&spec(me.public(), t, t, MAX_VOTE_LEN), &p, &none);
        assert_eq!((full.vote.relays.len(), full.dropped), (30, 0));
        newcomers.sort();
        let expected: Vec<RelayId> = running
            .iter()
            .chain(newcomers.iter().take(5).map(|(_, id)| id))
            .copied()
            .collect();
        let len_of = |id: &RelayId| {
            full.vote
                .relays
                .iter()
                .find(|e| e.id == *id)
                .unwrap()
                .line()
                .len()
                + 1
        };
        let limit = full.vote.overhead_len() + expected.iter().map(len_of).sum::<usize>() + 5;
        let cut = s.build_vote(&spec(me.public(), t, t, limit), &p, &none);
        assert_eq!((cut.vote.relays.len(), cut.dropped), (15, 15));
        assert!(cut.vote.sign(&me).unwrap().len() <= limit);
        let kept: Vec<RelayId> = cut.vote.relays.iter().map(|e| e.id).collect();
        assert!(
            running.iter().all(|r| kept.contains(r)),
            "proven relays are kept"
        );
        for (i, (_, id)) in newcomers.iter().enumerate() {
            assert_eq!(
                kept.contains(id),
                i < 5,
                "the five oldest newcomers are kept"
            );
        }
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "still sorted");
    }
}
