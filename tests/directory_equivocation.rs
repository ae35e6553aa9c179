//! Review finding 2, end to end: a rogue authority sends a different vote to each peer (and
//! keeps a third as its own). The two honest authorities run as processes; the rogue runs in
//! this process with the test-only `misbehave` feature. Both honest authorities publish the
//! same consensus, signed by both, without the rogue's vote, and each logs the equivocation
//! at WARN naming the rogue.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod integrity;

use std::time::Duration;

use common::*;
use integrity::{params, ProcNet};
use shallot_authority::misbehave::Misbehaviour;
use shallot_proto::dir::Flags;

#[test]
fn an_equivocating_authority_is_caught_and_left_out() {
    rt().block_on(async {
        let mut net = ProcNet::layout("equivocation", 3, 201, params(4));
        net.spawn_authority(0);
        net.spawn_authority(1);
        net.spawn_relay(205, &[]);
        net.spawn_relay(206, &[]);
        net.start_rogue(
            2,
            Misbehaviour {
                forge: None,
                equivocate: true,
            },
        )
        .await;
        let honest = [
            net.network.authorities[0].key,
            net.network.authorities[1].key,
        ];
        let rogue = net.network.authorities[2].key;
        let relays: Vec<_> = net.relays.iter().map(|r| r.id).collect();
        let c = net
            .consensus_where(
                Duration::from_secs(90),
                "a consensus both honest signed",
                |c| {
                    c.valid_signers(&honest).is_ok_and(|s| s.len() == 2)
                        && relays.iter().all(|id| {
                            c.relay(id)
                                .is_some_and(|e| e.flags.contains(Flags::RUNNING))
                        })
                },
            )
            .await;
        // Without the rogue's vote: its commitment is not among the votes counted, while both
        // honest authorities' are.
        let commits: Vec<_> = c.shared_rand.commits.iter().map(|(k, _)| *k).collect();
        assert!(!commits.contains(&rogue), "the rogue's vote was counted");
        assert!(honest.iter().all(|k| commits.contains(k)));
        // The rogue did show different votes: its own differs from what it pushed (each honest
        // authority holds a vote from it that it does not serve as its own).
        let own = net
            .vote_of(2, c.valid_after)
            .await
            .expect("the rogue's own vote");
        assert!(c.shared_rand.commits.iter().all(|(_, v)| *v != own.commit));

        // Both honest authorities serve the very same consensus body. The two are asked one
        // after the other, so a period may turn between them: compare one period's.
        let (first, second) = eventually(
            "both honest authorities to serve the same period's consensus",
            Duration::from_secs(30),
            || async {
                match &net.served(&[0, 1]).await[..] {
                    [Some(a), Some(b)] if a.valid_after == b.valid_after => {
                        Some((a.encode_body().unwrap(), b.encode_body().unwrap()))
                    }
                    _ => None,
                }
            },
        )
        .await;
        assert_eq!(first, second);

        // And each logged the equivocation, naming the rogue.
        for name in ["auth0", "auth1"] {
            let log = net.log(name);
            let line = log
                .lines()
                .find(|l| l.contains("showed different votes"))
                .unwrap_or_else(|| panic!("{name} did not log the equivocation:\n{log}"));
            assert!(line.contains("WARN") && line.contains("auth2"), "{line}");
        }
        net.stop().await;
    });
}
