//! Admission: times and replays, the address rule, link keys and addresses bound to the relay
//! that proved them, and every flood limit hit.

use super::*;
use crate::state::Probe;
use shallot_crypto::keys::IdentityKeypair;

fn params() -> NetworkParams {
    NetworkParams {
        descriptor_max_age_secs: 1000,
        test_network: true,
        ..NetworkParams::default()
    }
}

fn descriptor(id: &IdentityKeypair, address: &str, link: [u8; 32], published: u64) -> String {
    RelayDescriptor {
        nickname: "r".into(),
        address: address.parse().unwrap(),
        identity: id.public(),
        ntor_key: [1; 32],
        link_key: link,
        bandwidth: 1000,
        family: vec![],
        mailbox: false,
        published,
    }
    .sign(id)
    .unwrap()
}

fn fresh() -> IdentityKeypair {
    IdentityKeypair::generate(&mut rand::thread_rng())
}

fn prove(s: &mut State, id: &RelayId, at: u64, ok: bool) {
    let d = s.descriptors[id].desc.clone();
    s.record_probe(
        id,
        Probe {
            at,
            ok,
            address: d.address,
            link_key: d.link_key,
            ntor_key: d.ntor_key,
        },
        None,
    );
}

const NOW: u64 = 10_000;

#[test]
fn admission_checks_time_and_replay() {
    let id = fresh();
    let p = params();
    let mut s = State::new(&p);
    let d = |published| descriptor(&id, "10.0.0.1:9000", [2; 32], published);
    assert!(matches!(
        s.admit(&d(NOW + 61), NOW, &p),
        Err(AdmitError::Future { .. })
    ));
    assert!(matches!(
        s.admit(&d(NOW - 1001), NOW, &p),
        Err(AdmitError::TooOld { .. })
    ));
    let first = s.admit(&d(NOW - 5), NOW, &p).unwrap();
    assert!(first.needs_probe);
    assert!(matches!(
        s.admit(&d(NOW - 5), NOW, &p),
        Err(AdmitError::NotNewer { .. })
    ));
    assert!(matches!(
        s.admit(&d(NOW - 6), NOW, &p),
        Err(AdmitError::NotNewer { .. })
    ));
    // Measured once, an hourly scanner would not measure it again within the hour.
    s.measurements.record(first.id, NOW, 1_000_000);
    assert!(!s.measurements.scan_due(&first.id, NOW + 3, 3600));
    let second = s.admit(&d(NOW), NOW, &p).unwrap();
    assert!(!second.needs_probe, "same address and keys");
    assert!(!s.measurements.scan_due(&first.id, NOW + 3, 3600));
    // A descriptor naming another address may be another machine: measured again at once.
    let moved = descriptor(&id, "10.0.0.2:9000", [2; 32], NOW + 1);
    assert!(s.admit(&moved, NOW + 1, &p).unwrap().needs_probe);
    assert!(s.measurements.scan_due(&first.id, NOW + 3, 3600));
    assert_eq!(
        s.expire(NOW + 1002, p.descriptor_max_age_secs),
        vec![first.id]
    );
    assert!(s.descriptors.is_empty() && s.relays.is_empty());
}

/// Review finding 5: descriptor addresses must be globally routable unless the network file
/// declares a test network.
#[test]
fn addresses_must_be_global_unless_the_network_is_a_test_network() {
    let mut p = params();
    p.test_network = false;
    let mut s = State::new(&p);
    for bad in [
        "127.0.0.1:9000",
        "10.1.2.3:9000",
        "192.168.0.1:1",
        "224.0.0.1:1",
        "[fe80::1]:9",
    ] {
        let err = s
            .admit(&descriptor(&fresh(), bad, [3; 32], NOW), NOW, &p)
            .unwrap_err();
        assert!(
            matches!(err, AdmitError::NotRoutable { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("not globally routable"), "{err}");
    }
    s.admit(&descriptor(&fresh(), "8.8.8.8:9001", [3; 32], NOW), NOW, &p)
        .unwrap();
    s.admit(
        &descriptor(&fresh(), "[2a01:4f8::1]:9001", [4; 32], NOW),
        NOW,
        &p,
    )
    .unwrap();
    p.test_network = true;
    s.admit(
        &descriptor(&fresh(), "127.0.0.1:9000", [5; 32], NOW),
        NOW,
        &p,
    )
    .unwrap();
}

/// Review finding 3: once a relay proved its link key and address, a second identity claiming
/// either is refused.
#[test]
fn a_proved_link_key_or_address_cannot_be_claimed_again() {
    let p = params();
    let mut s = State::new(&p);
    let victim = s
        .admit(
            &descriptor(&fresh(), "10.0.0.1:9000", [7; 32], NOW),
            NOW,
            &p,
        )
        .unwrap();
    // Before the victim proved anything, a copy is accepted (the probe will decide).
    let early = s
        .admit(
            &descriptor(&fresh(), "10.0.0.1:9000", [7; 32], NOW),
            NOW,
            &p,
        )
        .unwrap();
    prove(&mut s, &victim.id, NOW, true);
    prove(&mut s, &early.id, NOW, false);
    let copy = descriptor(&fresh(), "10.0.0.1:9000", [7; 32], NOW);
    assert_eq!(
        s.admit(&copy, NOW, &p),
        Err(AdmitError::LinkKeyTaken(victim.id))
    );
    let other_port = descriptor(&fresh(), "10.0.0.1:9999", [7; 32], NOW);
    assert_eq!(
        s.admit(&other_port, NOW, &p),
        Err(AdmitError::LinkKeyTaken(victim.id))
    );
    let same_addr = descriptor(&fresh(), "10.0.0.1:9000", [8; 32], NOW);
    assert_eq!(
        s.admit(&same_addr, NOW, &p),
        Err(AdmitError::AddressTaken(victim.id))
    );
    // The victim itself may update its descriptor.
    let victim_key = s.descriptors[&victim.id].desc.clone();
    assert_eq!(victim_key.link_key, [7; 32]);
}

#[test]
fn a_link_key_is_claimed_by_at_most_the_limit_until_probes_fail() {
    let p = NetworkParams {
        max_descriptors_per_link_key: 2,
        ..params()
    };
    let mut s = State::new(&p);
    let key = [9; 32];
    let a = s
        .admit(&descriptor(&fresh(), "10.0.0.1:1", key, NOW), NOW, &p)
        .unwrap();
    let b = s
        .admit(&descriptor(&fresh(), "10.0.0.2:1", key, NOW), NOW, &p)
        .unwrap();
    let third = descriptor(&fresh(), "10.0.0.3:1", key, NOW);
    assert_eq!(
        s.admit(&third, NOW, &p),
        Err(AdmitError::LinkKeyLimit { limit: 2 })
    );
    // Once one of them failed its probe, it makes room.
    prove(&mut s, &b.id, NOW, false);
    let c = s.admit(&third, NOW, &p).unwrap();
    assert_eq!(c.evicted, vec![b.id]);
    assert!(!s.descriptors.contains_key(&b.id));
    assert!(s.descriptors.contains_key(&a.id) && s.descriptors.contains_key(&c.id));
}

/// Review finding 5: descriptors per /16 and per /64.
#[test]
fn networks_hold_at_most_their_limit() {
    let p = NetworkParams {
        max_descriptors_per_ipv4_16: 3,
        max_descriptors_per_ipv6_64: 2,
        ..params()
    };
    let mut s = State::new(&p);
    let mut v4 = Vec::new();
    for i in 0..3u8 {
        let addr = format!("10.5.{i}.1:9000");
        v4.push(
            s.admit(&descriptor(&fresh(), &addr, [10 + i; 32], NOW), NOW, &p)
                .unwrap()
                .id,
        );
    }
    let err = s
        .admit(
            &descriptor(&fresh(), "10.5.200.9:1", [20; 32], NOW),
            NOW,
            &p,
        )
        .unwrap_err();
    assert_eq!(
        err,
        AdmitError::NetworkFull {
            network: "10.5.0.0/16".into(),
            limit: 3
        }
    );
    // Another /16 is not affected, and a relay already held may still update.
    s.admit(&descriptor(&fresh(), "10.6.0.1:1", [21; 32], NOW), NOW, &p)
        .unwrap();
    // IPv6: /64.
    for i in 0..2u8 {
        let addr = format!("[2001:a:b:c::{i}]:9000");
        s.admit(&descriptor(&fresh(), &addr, [30 + i; 32], NOW), NOW, &p)
            .unwrap();
    }
    let err = s
        .admit(
            &descriptor(&fresh(), "[2001:a:b:c:ffff::1]:9000", [40; 32], NOW),
            NOW,
            &p,
        )
        .unwrap_err();
    assert!(
        matches!(err, AdmitError::NetworkFull { limit: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("2001:a:b:c::/64"), "{err}");
    s.admit(
        &descriptor(&fresh(), "[2001:a:b:d::1]:9000", [41; 32], NOW),
        NOW,
        &p,
    )
    .unwrap();
    // Expiry frees the room.
    s.expire(NOW + 2000, p.descriptor_max_age_secs);
    s.admit(
        &descriptor(&fresh(), "10.5.200.9:1", [20; 32], NOW + 2000),
        NOW + 2000,
        &p,
    )
    .unwrap();
    assert_eq!(v4.len(), 3);
}

/// Review finding 5: 100,000 descriptors from everywhere: the authority keeps at most its
/// limit, the relays it held keep their place, and what it holds stays bounded.
#[test]
fn a_flood_of_100000_descriptors_stays_within_the_total_limit() {
    let p = NetworkParams {
        max_descriptors: 2_000,
        test_network: false,
        ..params()
    };
    let mut s = State::new(&p);
    let honest: Vec<(IdentityKeypair, RelayId)> = (0..10u8)
        .map(|i| {
            let id = fresh();
            let addr = format!("8.{i}.0.1:9000");
            let r = s
                .admit(&descriptor(&id, &addr, [i; 32], NOW - 100), NOW, &p)
                .unwrap()
                .id;
            prove(&mut s, &r, NOW, true);
            (id, r)
        })
        .collect();
    // Spread over many /16s of global addresses, so that only the total limit applies.
    let first_octets: Vec<u32> = (20..100).chain(101..121).collect();
    let mut refused = 0u32;
    for i in 0..100_000u32 {
        let b = i.to_be_bytes();
        let addr = format!(
            "{}.{}.{}.1:9000",
            first_octets[(i % 100) as usize],
            (i / 100) % 256,
            (i / 25_600) % 256
        );
        let mut link = [0u8; 32];
        link[..4].copy_from_slice(&b);
        link[4] = 0xff;
        let seed = {
            let mut x = [0u8; 32];
            x[..4].copy_from_slice(&b);
            x[31] = 1;
            x
        };
        let id = IdentityKeypair::from_secret_bytes(&seed);
        match s.admit(&descriptor(&id, &addr, link, NOW), NOW, &p) {
            Ok(_) => {}
            Err(AdmitError::Full { limit: 2_000 }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(s.descriptors.len(), 2_000);
    assert_eq!(refused, 100_000 - (2_000 - 10));
    assert!(s.relays.len() <= 2_000);
    let held: usize = s.descriptors.values().map(|a| a.text.len()).sum();
    assert!(held <= 2_000 * shallot_proto::dir::MAX_DESCRIPTOR_LEN);
    // The honest relays are still held and proven, and may update.
    for (key, id) in &honest {
        assert!(s.proven(id));
        let addr = s.descriptors[id].desc.address.to_string();
        let link = s.descriptors[id].desc.link_key;
        s.admit(&descriptor(key, &addr, link, NOW), NOW, &p)
            .unwrap();
    }
}

/// Issue 10, finding C: one failed probe does not let strangers claiming a relay's link key or
/// address evict the relay that proved them, nor wipe its history: it loses Running, not its
/// place.
#[test]
fn a_failed_probe_does_not_let_strangers_evict_a_proven_relay() {
    let p = params();
    let mut s = State::new(&p);
    let victim = s
        .admit(
            &descriptor(&fresh(), "10.0.0.1:9000", [7; 32], NOW - 100),
            NOW - 100,
            &p,
        )
        .unwrap()
        .id;
    prove(&mut s, &victim, NOW - 50, true);
    prove(&mut s, &victim, NOW - 10, false);
    for port in [9000, 9001] {
        let addr = format!("10.0.0.1:{port}");
        let copy = descriptor(&fresh(), &addr, [7; 32], NOW);
        assert_eq!(
            s.admit(&copy, NOW, &p),
            Err(AdmitError::LinkKeyTaken(victim)),
            "{addr}"
        );
    }
    let same_addr = descriptor(&fresh(), "10.0.0.1:9000", [8; 32], NOW);
    assert_eq!(
        s.admit(&same_addr, NOW, &p),
        Err(AdmitError::AddressTaken(victim))
    );
    assert!(s.descriptors.contains_key(&victim));
    assert_eq!(s.descriptors.len(), 1, "no claimant was taken");
    let rec = s.relays[&victim];
    assert_eq!(rec.history.running_since, None, "it lost Running");
    assert_eq!(rec.history.known_since, Some(NOW - 50), "not its age");
    // Nor does expiry take it while the failure is transient.
    assert!(s.expire(NOW, p.descriptor_max_age_secs).is_empty());
    assert_eq!(s.relays[&victim].history.known_since, Some(NOW - 50));
}

/// Issue 10, finding C: among claimants of one link key that none has proven, a newcomer
/// beyond the limit takes the place of the newest one whose probe failed, or is refused (it
/// is then the newest unproven one).
#[test]
fn among_unproven_claimants_the_newest_loses() {
    let p = params();
    let mut s = State::new(&p);
    let key = [12; 32];
    let older = s
        .admit(
            &descriptor(&fresh(), "10.0.0.1:1", key, NOW - 20),
            NOW - 20,
            &p,
        )
        .unwrap()
        .id;
    let newer = s
        .admit(
            &descriptor(&fresh(), "10.0.0.2:1", key, NOW - 10),
            NOW - 10,
            &p,
        )
        .unwrap()
        .id;
    let third = descriptor(&fresh(), "10.0.0.3:1", key, NOW);
    assert_eq!(
        s.admit(&third, NOW, &p),
        Err(AdmitError::LinkKeyLimit { limit: 2 }),
        "no claimant failed a probe yet: the newcomer loses"
    );
    prove(&mut s, &older, NOW, false);
    prove(&mut s, &newer, NOW, false);
    let c = s.admit(&third, NOW, &p).unwrap();
    assert_eq!(c.evicted, vec![newer], "the newest failed claimant goes");
    assert!(s.descriptors.contains_key(&older));
}

/// Issue 10, finding B: a relay no probe has proven is dropped `max_unproven_secs` after it
/// was accepted, or after its last successful probe; a proven relay that keeps passing probes
/// stays.
#[test]
fn unproven_relays_are_dropped_after_a_bounded_time() {
    let p = NetworkParams {
        max_unproven_secs: 300,
        ..params()
    };
    let mut s = State::new(&p);
    let never = s
        .admit(&descriptor(&fresh(), "10.0.0.1:1", [1; 32], NOW), NOW, &p)
        .unwrap()
        .id;
    let honest = s
        .admit(&descriptor(&fresh(), "10.0.0.2:1", [2; 32], NOW), NOW, &p)
        .unwrap()
        .id;
    let lapsed = s
        .admit(&descriptor(&fresh(), "10.0.0.3:1", [3; 32], NOW), NOW, &p)
        .unwrap()
        .id;
    prove(&mut s, &lapsed, NOW + 10, true);
    for at in [NOW + 10, NOW + 200, NOW + 400] {
        prove(&mut s, &honest, at, true);
    }
    prove(&mut s, &lapsed, NOW + 200, false);
    assert!(s.expire(NOW + 300, p.descriptor_max_age_secs).is_empty());
    assert_eq!(s.expire(NOW + 301, p.descriptor_max_age_secs), vec![never]);
    assert_eq!(s.expire(NOW + 311, p.descriptor_max_age_secs), vec![lapsed]);
    assert!(s.expire(NOW + 600, p.descriptor_max_age_secs).is_empty());
    assert_eq!(s.descriptors.keys().collect::<Vec<_>>(), vec![&honest]);
}

/// Issue 10, finding B: one uploader network (/24 or /64) holds at most
/// `max_unproven_per_uploader` descriptors of relays no probe has proven; a proof, or a drop,
/// makes room; other networks are not affected.
#[test]
fn unproven_descriptors_per_uploader_network_are_limited() {
    let p = NetworkParams {
        max_unproven_per_uploader: 2,
        ..params()
    };
    let mut s = State::new(&p);
    let key_a = fresh();
    let from = |s: &mut State, i: u8, uploader: &str| {
        let addr = format!("10.9.{i}.1:1");
        let other = fresh();
        let key = if i == 1 { &key_a } else { &other };
        s.admit_from(
            &descriptor(key, &addr, [100 + i; 32], NOW),
            NOW,
            &p,
            uploader.parse().unwrap(),
        )
    };
    let a = from(&mut s, 1, "192.0.2.1").unwrap().id;
    from(&mut s, 2, "192.0.2.200").unwrap();
    let err = from(&mut s, 3, "192.0.2.7").unwrap_err();
    assert_eq!(
        err,
        AdmitError::UploaderFull {
            network: "192.0.2.0/24".into(),
            limit: 2
        }
    );
    assert!(err.to_string().contains("no probe has proven"), "{err}");
    from(&mut s, 4, "192.0.3.1").unwrap();
    // A relay already held may update from the full network.
    let update = descriptor(&key_a, "10.9.1.1:1", [101; 32], NOW + 1);
    s.admit_from(&update, NOW + 1, &p, "192.0.2.9".parse().unwrap())
        .unwrap();
    // Once one is proven, there is room again.
    prove(&mut s, &a, NOW, true);
    from(&mut s, 5, "192.0.2.7").unwrap();
    assert!(matches!(
        from(&mut s, 6, "192.0.2.8"),
        Err(AdmitError::UploaderFull { .. })
    ));
    // IPv6: by /64.
    for i in 7..9 {
        from(&mut s, i, &format!("2001:db8:1:2::{i}")).unwrap();
    }
    let err = from(&mut s, 9, "2001:db8:1:2:ffff::1").unwrap_err();
    assert!(err.to_string().contains("2001:db8:1:2::/64"), "{err}");
}
