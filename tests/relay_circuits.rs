//! End-to-end tests of relays carrying circuits over real loopback links: building,
//! forwarding, echo, flow control, and refusals of bad extends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use shallot_net::HopNum;
use shallot_net::{build, NetError};
use shallot_proto::cell::DestroyReason;
use shallot_proto::relay_msg::RelayMsg;

const HOP: Duration = Duration::from_secs(5);

struct Net {
    relays: Vec<TestRelay>,
}

fn net() -> &'static Net {
    static NET: OnceLock<Net> = OnceLock::new();
    NET.get_or_init(|| {
        rt().block_on(async {
            Net {
                relays: relay_net("r", 30, 5).await,
            }
        })
    })
}

#[test]
fn three_hops_carry_data_both_ways() {
    let net = net();
    rt().block_on(async {
        let r = &net.relays;
        let circ = build(
            r[0].channel().await,
            &[r[0].hop(), r[1].hop(), r[2].hop()],
            HOP,
        )
        .await
        .unwrap();
        assert_eq!(circ.len(), 3);
        for hop in [HopNum::FIRST, HopNum::SECOND, HopNum::THIRD] {
            let data = format!("hello hop {hop}").into_bytes();
            circ.send(hop, &RelayMsg::Data(data.clone())).await.unwrap();
            let (from, msg) = circ.recv().await.unwrap();
            assert_eq!((from, msg), (hop, RelayMsg::Data(data)));
        }
        // A message spanning many cells.
        let big: Vec<u8> = (0..20_000).map(|i| (i % 251) as u8).collect();
        circ.send(HopNum::THIRD, &RelayMsg::Data(big.clone()))
            .await
            .unwrap();
        assert_eq!(
            circ.recv().await.unwrap(),
            (HopNum::THIRD, RelayMsg::Data(big))
        );
    });
}

#[test]
fn flow_control_keeps_a_long_stream_moving() {
    let net = net();
    rt().block_on(async {
        let r = &net.relays;
        let circ = build(
            r[1].channel().await,
            &[r[1].hop(), r[3].hop(), r[4].hop()],
            HOP,
        )
        .await
        .unwrap();
        // 3,000 cells each way: six times the window, so SENDMEs must flow both ways.
        let sender = async {
            for i in 0..3000u32 {
                circ.send(HopNum::THIRD, &RelayMsg::Data(i.to_be_bytes().to_vec()))
                    .await
                    .unwrap();
            }
        };
        let receiver = async {
            for i in 0..3000u32 {
                let (_, msg) = circ.recv().await.unwrap();
                assert_eq!(msg, RelayMsg::Data(i.to_be_bytes().to_vec()));
            }
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            tokio::join!(sender, receiver)
        })
        .await
        .expect("stream stalled");
    });
}

async fn destroyed_reason(err: NetError) -> DestroyReason {
    match err {
        NetError::Destroyed(reason) => reason,
        other => panic!("expected a destroy, got {other}"),
    }
}

#[test]
fn bad_extends_are_refused() {
    let net = net();
    rt().block_on(async {
        let r = &net.relays;
        // To a relay that is not listed.
        let circ = build(r[2].channel().await, &[r[2].hop()], HOP)
            .await
            .unwrap();
        let mut ghost = r[3].hop();
        ghost.id = shallot_crypto::keys::RelayId([9u8; 20]);
        let err = circ.extend(&ghost, HOP).await.unwrap_err();
        assert_eq!(destroyed_reason(err).await, DestroyReason::ConnectFailed);

        // To itself.
        let circ = build(r[2].channel().await, &[r[2].hop()], HOP)
            .await
            .unwrap();
        let err = circ.extend(&r[2].hop(), HOP).await.unwrap_err();
        assert_eq!(destroyed_reason(err).await, DestroyReason::Protocol);

        // Back along the circuit: r3 -> r4 -> r3.
        let circ = build(r[3].channel().await, &[r[3].hop(), r[4].hop()], HOP)
            .await
            .unwrap();
        let err = circ.extend(&r[3].hop(), HOP).await.unwrap_err();
        assert_eq!(destroyed_reason(err).await, DestroyReason::Protocol);

        // The relays keep serving.
        let circ = build(r[2].channel().await, &[r[2].hop(), r[0].hop()], HOP)
            .await
            .unwrap();
        circ.send(HopNum::SECOND, &RelayMsg::Data(b"still here".to_vec()))
            .await
            .unwrap();
        assert_eq!(
            circ.recv().await.unwrap().1,
            RelayMsg::Data(b"still here".to_vec())
        );
    });
}
