//! Which relay addresses a real network accepts (`docs/spec.md` §5.2): globally routable
//! unicast only, so that a descriptor cannot point clients or probes at loopback, private,
//! link-local, multicast, documentation or reserved addresses; and the networks (/16 and /24 of
//! IPv4, /64 of IPv6) that the flood limits count by. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not globally routable, in a few words; `None` when it is.
pub fn not_global(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => not_global_v4(v4),
        IpAddr::V6(v6) => not_global_v6(v6),
    }
}

fn not_global_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let reason = match o {
        [0, ..] => "in 0.0.0.0/8 (this network)",
        [10, ..] => "private (10.0.0.0/8)",
        [100, b, ..] if (64..128).contains(&b) => "shared address space (100.64.0.0/10)",
        [127, ..] => "loopback",
        [169, 254, ..] => "link-local",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [192, 88, 99, _] => "deprecated 6to4 relay anycast",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved or broadcast",
        _ => return None,
    };
    Some(reason)
}

fn not_global_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.to_ipv4_mapped().is_some() {
        return Some("IPv4-mapped (give the IPv4 address itself)");
    }
    let s = ip.segments();
    let reason = if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique local (fc00::/7)"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation (2001:db8::/32)"
    } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        "discard-only (100::/64)"
    } else if s[0] == 0x0064 && s[1] == 0xff9b {
        "IPv4/IPv6 translation (64:ff9b::/96)"
    } else if s[0] & 0xe000 != 0x2000 {
        "outside global unicast (2000::/3)"
    } else {
        return None;
    };
    Some(reason)
}

/// The network an address is counted in for the descriptor limits: the /16 of an IPv4 address
/// or the /64 of an IPv6 one, tagged with the family.
pub fn descriptor_network(ip: IpAddr) -> [u8; 9] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], 0, 0, 0, 0, 0, 0]
        }
        IpAddr::V6(v6) => prefix64(v6),
    }
}

/// The network a client address is counted in for connection and upload limits: the /24 of an
/// IPv4 address or the /64 of an IPv6 one (an IPv4-mapped IPv6 address counts as IPv4).
pub fn client_network(ip: IpAddr) -> [u8; 9] {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], o[2], 0, 0, 0, 0, 0]
        }
        IpAddr::V6(v6) => prefix64(v6),
    }
}

fn prefix64(v6: Ipv6Addr) -> [u8; 9] {
    let o = v6.octets();
    let mut out = [6u8; 9];
    out[1..].copy_from_slice(&o[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_global_unicast_passes() {
        for bad in [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.9.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "fc12::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::1.2.3.4",
            "100::1",
            "4000::1",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(not_global(ip).is_some(), "{bad} passed");
        }
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2a01:4f8::1",
            "2600::1",
        ] {
            let ip: IpAddr = good.parse().unwrap();
            assert_eq!(not_global(ip), None, "{good} refused");
        }
    }

    #[test]
    fn networks_group_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            descriptor_network(ip("8.8.1.1")),
            descriptor_network(ip("8.8.200.9"))
        );
        assert_ne!(
            descriptor_network(ip("8.8.1.1")),
            descriptor_network(ip("8.9.1.1"))
        );
        assert_eq!(
            descriptor_network(ip("2a01:4f8:1:2::1")),
            descriptor_network(ip("2a01:4f8:1:2:ffff::9"))
        );
        assert_ne!(
            descriptor_network(ip("2a01:4f8:1:2::1")),
            descriptor_network(ip("2a01:4f8:1:3::1"))
        );
        assert_eq!(
            client_network(ip("8.8.1.1")),
            client_network(ip("8.8.1.200"))
        );
        assert_ne!(client_network(ip("8.8.1.1")), client_network(ip("8.8.2.1")));
        assert_eq!(
            client_network(ip("::ffff:8.8.1.1")),
            client_network(ip("8.8.1.7"))
        );
        assert_ne!(
            client_network(ip("::8.8.1.1")),
            client_network(ip("8.8.1.1"))
        );
    }
}
