//! Throttling of failed authorization per client address: a token bucket each.
//!
//! Owns the buckets and who the client is. A failure (a 401: no, malformed, unknown or expired
//! token) takes one token from the client's bucket, which refills at `failures_per_minute` up to
//! `burst`. A client whose bucket is empty gets 429 with `Retry-After` before any source lookup.
//! The buckets live in a bounded moka cache (`max_clients`): a flood of distinct addresses evicts
//! old buckets instead of growing memory, and an evicted bucket is simply full again. Requests
//! with a live cached token never touch the buckets, so successful requests are never throttled.
//! The client is the connection's peer, or the last `X-Forwarded-For` entry when the peer is a
//! trusted proxy.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;
use moka::sync::Cache;

use crate::config::ThrottleConfig;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The failure buckets of every recent client.
pub struct Throttle {
    buckets: Cache<IpAddr, Arc<Mutex<Bucket>>, foldhash::fast::RandomState>,
    per_second: f64,
    burst: f64,
    trusted: Vec<IpNet>,
}

impl Throttle {
    /// Buckets as configured; none when `failures_per_minute` is 0 (throttling off).
    pub fn new(config: &ThrottleConfig) -> Option<Throttle> {
        if config.failures_per_minute == 0 {
            return None;
        }
        let per_second = f64::from(config.failures_per_minute) / 60.0;
        let burst = f64::from(config.burst);
        // A bucket untouched for this long is full again: forgetting it changes nothing.
        let refill = Duration::from_secs_f64(burst / per_second);
        Some(Throttle {
            buckets: Cache::builder()
                .max_capacity(config.max_clients)
                .time_to_idle(refill)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            per_second,
            burst,
            trusted: config.trusted_proxies.clone(),
        })
    }

    /// The client's address: the peer, or the last `X-Forwarded-For` entry when the peer is a
    /// trusted proxy (the entry that proxy appended).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted.iter().any(|n| n.contains(&peer)) {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok())
            .unwrap_or(peer)
    }

    /// When the client's bucket is empty, how long until it may fail again.
    pub fn blocked(&self, client: IpAddr) -> Option<Duration> {
        let bucket = self.buckets.get(&client)?;
        let Ok(mut b) = bucket.lock() else {
            return None;
        };
        self.refill(&mut b);
        (b.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - b.tokens) / self.per_second))
    }

    /// Counts one failed authorization against the client.
    pub fn failed(&self, client: IpAddr) {
        let bucket = self.buckets.get_with(client, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                at: Instant::now(),
            }))
        });
        let Ok(mut b) = bucket.lock() else {
            return;
        };
        self.refill(&mut b);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    /// Clients currently tracked (approximate; for /metrics).
    pub fn tracked(&self) -> u64 {
        self.buckets.entry_count()
    }

    fn refill(&self, b: &mut Bucket) {
        let now = Instant::now();
        let gained = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + gained).min(self.burst);
        b.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_minute: u32, burst: u32, trusted: &[&str]) -> Throttle {
        Throttle::new(&ThrottleConfig {
            failures_per_minute: per_minute,
            burst,
            max_clients: 100,
            trusted_proxies: trusted
                .iter()
                .map(|t| t.parse::<IpNet>().unwrap())
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn a_burst_of_failures_empties_the_bucket_and_it_refills() {
        let t = throttle(60, 3, &[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(t.blocked(ip).is_none(), "an unseen client is not blocked");
        for _ in 0..3 {
            assert!(t.blocked(ip).is_none());
            t.failed(ip);
        }
        let wait = t.blocked(ip).expect("blocked after the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(t.blocked(other).is_none(), "buckets are per address");
    }

    #[test]
    fn only_trusted_proxies_may_name_the_client() {
        let t = throttle(60, 3, &["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.5, 198.51.100.7".parse().unwrap(),
        );
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(
            t.client(proxy, &h),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(t.client(stranger, &h), stranger);
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(t.client(proxy, &h), proxy);
    }

    #[test]
    fn ranges_match_by_prefix() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(&"10.255.0.1".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"11.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!n.contains(&"::1".parse::<IpAddr>().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"8.8.8.8".parse::<IpAddr>().unwrap()));
    }
}
