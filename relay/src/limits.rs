//! Per-address admission limits: open connections and circuit creations per IP address
//! (`docs/spec.md` §6.6). Pure bookkeeping; the caller supplies the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

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

    /// Whether `ip` may create a circuit at `now`; takes a token if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
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

/// Counts open connections per IP address and in total.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl ConnectionCounts {
    /// Admits a connection from `ip` if neither limit is reached.
    pub fn admit(&mut self, ip: IpAddr, per_ip: usize, total: usize) -> bool {
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
    }
}
