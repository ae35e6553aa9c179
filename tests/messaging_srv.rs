//! Mailbox placement by the shared random value (`docs/spec.md` §5.10, §9.2), end to end: on a
//! network whose epochs are 2 seconds long, once the consensus carries a real shared value for
//! the current epoch (not the fixed fallback), a sender and a recipient that placed the
//! recipient's bundle and mailboxes from their own consensuses still meet: the message is
//! delivered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_proto::dir::srv::fallback_value;
use shallot_rt::unix_now;

#[test]
fn sender_and_owner_agree_on_the_ring_of_a_shared_random_epoch() {
    rt().block_on(async {
        let epoch = 2;
        let mut options = TestnetOptions::new(scratch("srv-epochs"));
        options.first_octet = 120;
        options.epoch_secs = epoch;
        options.voting_interval_secs = 2;
        let net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();
        // Wait for a consensus whose current epoch, and the next few, have real values, each
        // different.
        let c = eventually(
            "a real shared value for the current epoch",
            Duration::from_secs(60),
            || async {
                let c = newest_consensus(&net.network).await?;
                let e = unix_now() / epoch;
                let real = (e..e + 3).all(|x| c.srv_for_epoch(x) != fallback_value(x));
                real.then_some(c)
            },
        )
        .await;
        let e = unix_now() / epoch;
        assert_ne!(c.srv_for_epoch(e), c.srv_for_epoch(e + 1));
        assert_ne!(c.shared_rand.current, [0; 32]);

        let alice = TestUser::new("srv-alice", &net.network).await;
        let bob = TestUser::new("srv-bob", &net.network).await;
        alice.add_contact("bob", &bob);
        bob.add_contact("alice", &alice);
        bob.messenger.sync().await.unwrap();
        alice.messenger.netdir().refresh().await.ok();
        alice
            .messenger
            .send("bob", "placed by the shared random value", OnFailure::Fail)
            .await
            .unwrap();
        bob.messenger.netdir().refresh().await.ok();
        bob.receive("placed by the shared random value").await;
        net.stop().await;
    });
}
