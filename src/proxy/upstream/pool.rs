//! The connections to one upstream: a stack of idle HTTP/1.1 connections, the shared HTTP/2
//! one, the checkin that returns a connection when its response is complete, and the reaper
//! that closes connections idle past the timeout.
//!
//! Must never make a connection or send a request: that is `UpstreamClient`'s, in `mod.rs`.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use crate::config::{Deployment, ForwardingConfig, UpstreamProtocol};
use crate::metrics::PoolMetrics;

/// The connections to one upstream.
pub(super) struct HostPool<B> {
    scheme: Scheme,
    authority: Authority,
    pub(super) protocol: UpstreamProtocol,
    /// `scheme://authority/`, what the connector is asked for.
    pub(super) target: Uri,
    /// The authority as a `Host` value, for HTTP/1.1 requests that arrived without one.
    pub(super) host: Option<HeaderValue>,
    /// Ready HTTP/1.1 connections, most recently used last, with the time each went idle.
    idle: Mutex<Vec<(http1::SendRequest<B>, Instant)>>,
    max_idle: usize,
    pub(super) idle_timeout: Duration,
    /// The shared HTTP/2 connection (`h2` upstreams, or TLS upstreams that chose h2 by ALPN).
    pub(super) h2: Mutex<Option<http2::SendRequest<B>>>,
    pub(super) h2_connecting: tokio::sync::Mutex<()>,
    /// Set once an `http1` upstream's TLS handshake chose h2.
    pub(super) alpn_h2: std::sync::atomic::AtomicBool,
    /// Connect time, connections opened, idle connections; none in benches.
    pub(super) metrics: Option<PoolMetrics>,
}

impl<B> HostPool<B> {
    pub(super) fn new(
        d: &Deployment,
        forwarding: &ForwardingConfig,
        metrics: Option<PoolMetrics>,
    ) -> Self {
        let upstream = &d.upstream;
        let target = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        HostPool {
            scheme: upstream.scheme.clone(),
            authority: upstream.authority.clone(),
            protocol: upstream.protocol,
            target,
            host: HeaderValue::from_str(upstream.authority.as_str()).ok(),
            idle: Mutex::new(Vec::new()),
            max_idle: forwarding.max_idle_per_upstream,
            idle_timeout: forwarding.idle_timeout,
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            alpn_h2: std::sync::atomic::AtomicBool::new(false),
            metrics,
        }
    }

    /// The upstream's `host:port`, for log lines about it.
    pub(super) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Publishes the idle count (one relaxed store, under the lock the caller holds anyway).
    #[inline]
    fn count_idle(&self, idle: usize) {
        if let Some(m) = &self.metrics {
            m.idle.set(idle as i64);
        }
    }

    /// True when `d`'s upstream is this pool's.
    pub(super) fn serves(&self, d: &Deployment) -> bool {
        self.scheme == d.upstream.scheme
            && self.authority == d.upstream.authority
            && self.protocol == d.upstream.protocol
    }

    pub(super) fn negotiated_h2(&self) -> bool {
        self.alpn_h2.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn absolute(&self, path: http::uri::PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// The most recently used ready connection. Closed ones are dropped on the way; busy ones
    /// (still finishing a response whose reader went away) stay for a later request.
    pub(super) fn take_idle(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].0.is_ready() {
                let sender = idle.swap_remove(i).0;
                self.count_idle(idle.len());
                return Some(sender);
            }
            if idle[i].0.is_closed() {
                idle.swap_remove(i);
            }
        }
        None
    }

    /// Keeps a connection for a later request, unless the pool is full.
    fn put(&self, sender: http1::SendRequest<B>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
            self.count_idle(idle.len());
        }
    }

    /// Drops connections idle since before `now - idle_timeout`, and closed ones.
    fn reap(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(sender, since)| {
            !sender.is_closed() && now.duration_since(*since) < self.idle_timeout
        });
        self.count_idle(idle.len());
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if h2.as_ref().is_some_and(http2::SendRequest::is_closed) {
            *h2 = None;
        }
    }

    pub(super) fn h2_sender(&self) -> Option<http2::SendRequest<B>> {
        let h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Forgets the shared connection if it is still `old` (it was found closed).
    pub(super) fn forget_h2(&self, old: &http2::SendRequest<B>) {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if h2
            .as_ref()
            .is_some_and(|s| s.is_closed() || old.is_closed())
        {
            *h2 = None;
        }
    }
}

/// Closes idle connections past the idle timeout, a few times per timeout, until the client
/// that owns the pools is gone.
pub(super) async fn reap<B>(pools: Weak<[Arc<HostPool<B>>]>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pools) = pools.upgrade() else {
            return;
        };
        let now = Instant::now();
        for pool in pools.iter() {
            pool.reap(now);
        }
    }
}

/// An HTTP/1.1 connection on its way back to its pool once its response is complete.
pub struct Checkin<B> {
    pub(super) sender: Option<http1::SendRequest<B>>,
    pub(super) pool: Arc<HostPool<B>>,
}

impl<B> Checkin<B> {
    /// Returns the connection now if it is ready for another request (none left to do).
    pub(super) fn now_if_ready(mut self) -> Option<Self> {
        match self.sender.take() {
            Some(s) if s.is_ready() => {
                self.pool.put(s);
                None
            }
            other => {
                self.sender = other;
                Some(self)
            }
        }
    }
}

impl<B> Drop for Checkin<B> {
    fn drop(&mut self) {
        // Ready: the next request takes it. Still finishing its response (the reader went away
        // early): kept too, and taken once hyper has read the rest. Closed: dropped.
        if let Some(sender) = self.sender.take().filter(|s| !s.is_closed()) {
            self.pool.put(sender);
        }
    }
}
