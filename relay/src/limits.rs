//! Per-address admission limits: open connections and circuit creations per IP address
//! (`docs/spec.md` §6.6), an IPv6 address counted with the rest of its /64. Pure bookkeeping;
//! the caller supplies the time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

/// The key an address is limited under: an IPv4 address itself (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address its /64. One host is normally given a whole /64,
/// so keying on the full IPv6 address would give it 2^64 separate allowances.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Rate limits circuit creations per IP address.
#[derive(Debug)]
pub struct CreateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl CreateLimiter {
    /// A limiter allowing `rate` creations a second per address, in bursts of up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        CreateLimiter {
            rate,
            burst,
            buckets: HashMap::new(),
        }
    }

    /// Whether `ip` (with the rest of its [`limit_key`]) may create a circuit at `now`; takes a
    /// token if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = limit_key(ip);
        if self.buckets.len() > 100_000 {
            // Forget addresses whose buckets have refilled: they are indistinguishable from
            // new ones. This bounds the table under address-spraying.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts open connections per IP address (by [`limit_key`]) and in total, and of those the
/// links anonymous clients hold.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
    clients: usize,
}

impl ConnectionCounts {
    /// Admits a connection from `ip` if neither limit is reached.
    pub fn admit(&mut self, ip: IpAddr, per_ip: usize, total: usize) -> bool {
        let ip = limit_key(ip);
        let n = self.per_ip.get(&ip).copied().unwrap_or(0);
        if n >= per_ip || self.total >= total {
            return false;
        }
        self.per_ip.insert(ip, n + 1);
        self.total += 1;
        true
    }

    /// A connection from `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = limit_key(ip);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            self.total -= 1;
        }
    }

    /// Open connections in total.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Admits an admitted connection, its handshake done, as a client link if fewer than
    /// `limit` are open.
    pub fn admit_client(&mut self, limit: usize) -> bool {
        if self.clients >= limit {
            return false;
        }
        self.clients += 1;
        true
    }

    /// A client link closed.
    pub fn release_client(&mut self) {
        self.clients = self.clients.saturating_sub(1);
    }

    /// Client links open.
    pub fn clients(&self) -> usize {
        self.clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut l = CreateLimiter::new(2.0, 5.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.allow(ip, t0));
        }
        assert!(!l.allow(ip, t0));
        assert!(l.allow(ip, t0 + Duration::from_millis(500)));
        assert!(!l.allow(ip, t0 + Duration::from_millis(500)));
        // Another address has its own bucket.
        assert!(l.allow("10.0.0.2".parse().unwrap(), t0));
    }

    #[test]
    fn ipv6_addresses_are_limited_by_their_64() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let key = limit_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        assert_eq!(key, ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2::1")), key);
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), key);
        assert_eq!(limit_key(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(limit_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        // Connections: one /64 under many addresses shares one allowance; another /64 has its own.
        let mut c = ConnectionCounts::default();
        for host in 1..=3 {
            assert!(c.admit(ip(&format!("2001:db8:1:2::{host}")), 3, 100));
        }
        assert!(
            !c.admit(ip("2001:db8:1:2:ffff::9"), 3, 100),
            "fourth from the /64"
        );
        assert!(c.admit(ip("2001:db8:1:3::1"), 3, 100));
        c.release(ip("2001:db8:1:2::77"));
        assert!(c.admit(ip("2001:db8:1:2::5"), 3, 100));
        assert_eq!(c.total(), 4);
        // Creations: a burst from one /64, spread over addresses, is still one burst.
        let mut l = CreateLimiter::new(0.001, 4.0);
        let t0 = Instant::now();
        for host in 0..4 {
            assert!(l.allow(ip(&format!("2001:db8:7:7::{host:x}")), t0));
        }
        assert!(!l.allow(ip("2001:db8:7:7:1234::1"), t0));
        assert!(l.allow(ip("2001:db8:7:8::1"), t0));
    }

    #[test]
    fn connection_counts_enforce_both_limits() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut c = ConnectionCounts::default();
        assert!(c.admit(a, 2, 3));
        assert!(c.admit(a, 2, 3));
        assert!(!c.admit(a, 2, 3));
        assert!(c.admit(b, 2, 3));
        assert!(!c.admit(b, 2, 3), "total limit");
        c.release(a);
        assert!(c.admit(b, 2, 3));
        assert_eq!(c.total(), 3);
        // Client links have a share of their own within the total.
        assert!(c.admit_client(2));
        assert!(c.admit_client(2));
        assert!(!c.admit_client(2));
        c.release_client();
        assert_eq!(c.clients(), 1);
        assert!(c.admit_client(2));
    }
}
