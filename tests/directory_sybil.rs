//! Review finding 3, end to end: two fresh identities copy an honest relay's address and link
//! key (claiming a huge bandwidth); then two new relays of their own start on the relay's IP
//! address. Authorities and relays run as their own processes. The copies are refused, the
//! honest relay keeps Running (the two-per-IP rule keeps the longest known, not the highest
//! bandwidth), and a client keeps it as a guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod integrity;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use integrity::{params, ProcNet};
use shallot_crypto::keys::IdentityKeypair;
use shallot_directory::upload_descriptor;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::dir::{Flags, RelayDescriptor};
use shallot_rt::unix_now;

#[test]
fn copies_of_a_relay_cannot_push_it_out() {
    rt().block_on(async {
        let mut net = ProcNet::layout("sybil", 3, 211, params(4));
        for i in 0..3 {
            net.spawn_authority(i);
        }
        for octet in [215, 216, 217] {
            net.spawn_relay(octet, &[]);
        }
        let victim = net.relays[0].id;
        let ids: Vec<_> = net.relays.iter().map(|r| r.id).collect();
        let all_guards = |c: &shallot_proto::dir::Consensus| {
            ids.iter().all(|id| {
                c.relay(id)
                    .is_some_and(|e| e.flags.contains(Flags::RUNNING | Flags::GUARD))
            })
        };
        net.consensus_where(Duration::from_secs(90), "three running guards", all_guards)
            .await;

        // A client: with three unrelated guards in the network, all three are its guards.
        let client_dir = scratch("sybil-client");
        let dir = Arc::new(NetDir::new(net.network.clone(), &client_dir));
        dir.bootstrap().await.unwrap();
        let config = CircuitConfig {
            per_hop_timeout: Duration::from_secs(3),
            hops: 2,
            ..Default::default()
        };
        let circuits = CircuitManager::new(dir.clone(), client_dir.clone(), config);
        circuits.build(None).await.unwrap().circuit.close();
        let guards_before = circuits.guards();
        assert!(guards_before.contains(&victim), "{guards_before:?}");

        // Two fresh identities copy the victim's address and link key, with a huge bandwidth.
        let v = &net.relays[0];
        for _ in 0..2 {
            let thief = IdentityKeypair::generate(&mut rand::thread_rng());
            let text = RelayDescriptor {
                nickname: "copy".into(),
                address: v.address,
                identity: thief.public(),
                ntor_key: v.ntor_key,
                link_key: v.link_key,
                bandwidth: u64::MAX,
                family: vec![],
                mailbox: true,
                published: unix_now(),
            }
            .sign(&thief)
            .unwrap();
            for auth in &net.network.authorities {
                let err = upload_descriptor(auth.address, &text, Duration::from_secs(3))
                    .await
                    .unwrap_err();
                assert!(
                    err.to_string().contains("link key already listed"),
                    "{}: {err}",
                    auth.name
                );
            }
        }

        // Two new relays of their own on the victim's IP address, declaring far more.
        let max = u64::MAX.to_string();
        net.spawn_relay(215, &["--bandwidth", &max]);
        net.spawn_relay(215, &["--bandwidth", &max]);
        let newcomers = [net.relays[3].id, net.relays[4].id];
        // Once every authority has probed both newcomers (each vote gives both Running), the
        // consensus still lists the victim as Running, and only one of the newcomers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut after = unix_now();
        let c = loop {
            let c = net
                .consensus_where(Duration::from_secs(60), "a new consensus", |c| {
                    c.valid_after > after
                })
                .await;
            after = c.valid_after;
            let mut all_probed = true;
            for i in 0..3 {
                let probed = net.vote_of(i, c.valid_after).await.is_some_and(|v| {
                    newcomers.iter().all(|n| {
                        v.relays
                            .iter()
                            .any(|e| e.id == *n && e.flags.contains(Flags::RUNNING))
                    })
                });
                all_probed &= probed;
            }
            if all_probed {
                break c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "newcomers never probed"
            );
        };
        let running = |id| {
            c.relay(id)
                .is_some_and(|e| e.flags.contains(Flags::RUNNING))
        };
        assert!(running(&victim), "{:?}", c.relay(&victim));
        assert!(c.relay(&victim).unwrap().flags.contains(Flags::GUARD));
        assert_eq!(newcomers.iter().filter(|n| running(n)).count(), 1);
        // The weights are measured, not declared: no newcomer outweighs the victim by much.
        let weight = |id| c.relay(id).unwrap().bandwidth;
        assert!(newcomers.iter().all(|n| weight(n) < u64::MAX / 2));

        // The client, on the new consensus, keeps its guards.
        dir.refresh().await.unwrap();
        circuits.build(None).await.unwrap().circuit.close();
        assert_eq!(circuits.guards(), guards_before);
        net.stop().await;
    });
}
