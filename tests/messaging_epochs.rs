//! Mailboxes across epochs: a session starts with a prekey bundle published ahead, while the
//! recipient is offline, and the recipient drains the earlier epochs' mailboxes when it
//! returns. The network's epoch is 8 seconds here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_rt::unix_now;

async fn next_epoch(epoch_secs: u64) {
    let now = unix_now();
    let next = (now / epoch_secs + 1) * epoch_secs;
    tokio::time::sleep(Duration::from_secs(next - now) + Duration::from_millis(300)).await;
}

#[test]
fn messages_cross_epochs_while_the_recipient_is_offline() {
    rt().block_on(async {
        let epoch = 8;
        let mut options = TestnetOptions::new(scratch("epochs"));
        options.first_octet = 175;
        options.epoch_secs = epoch;
        let net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();
        let alice = TestUser::new("epoch-alice", &net.network).await;
        // Bob is online once, publishing his bundle for the epochs ahead, then leaves.
        let bob = TestUser::new("epoch-bob", &net.network).await;
        alice.add_contact("bob", &bob);
        bob.add_contact("alice", &alice);
        bob.messenger.sync().await.unwrap();
        let bob_epoch = unix_now() / epoch;

        // In a later epoch, Alice starts a session from the bundle published ahead.
        next_epoch(epoch).await;
        assert!(unix_now() / epoch > bob_epoch);
        alice.messenger.netdir().refresh().await.ok();
        alice
            .messenger
            .send("bob", "from a later epoch", OnFailure::Fail)
            .await
            .unwrap();
        let sent_epoch = unix_now() / epoch;

        // Bob returns in a later epoch still, and drains the one it was left in.
        next_epoch(epoch).await;
        assert!(unix_now() / epoch > sent_epoch);
        bob.messenger.netdir().refresh().await.ok();
        bob.receive("from a later epoch").await;
        net.stop().await;
    });
}
