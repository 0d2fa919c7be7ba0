//! Prometheus metrics on an explicit registry.
//!
//! Owns every metric bentogate exports. Label handles for routes are resolved once, when the route
//! table is built ([`RouteMetrics`]), so the request path increments plain counters and never looks
//! a label up or formats a string. Upstream pools get theirs once too ([`PoolMetrics`]); the
//! `process_*` family is read from `/proc` at scrape time ([`process`]), never per request.

mod process;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Why a forwarded request got no response from its upstream, the `kind` label of
/// `bentogate_upstream_errors_total`: what an operator needs to tell a dead upstream (refused)
/// from a slow one (timeouts) from a busy gateway (pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The upstream refused the connection (nothing listens there).
    ConnectRefused,
    /// The connection was not made within `forwarding.timeouts.connect`.
    ConnectTimeout,
    /// Another connect failure: name resolution, TLS, unreachable network.
    Connect,
    /// The upstream did not send response headers within `forwarding.timeouts.response_headers`.
    Timeout,
    /// No slot of `forwarding.pool.max_connections_per_upstream` came free in time.
    PoolTimeout,
    /// The connection was reset or closed before the response.
    Reset,
    /// The upstream spoke something that is not HTTP, or switched protocols unasked.
    Protocol,
}

impl UpstreamErrorKind {
    /// Every kind, in label-array order.
    pub const ALL: [UpstreamErrorKind; 7] = [
        UpstreamErrorKind::ConnectRefused,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::PoolTimeout,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Protocol,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::ConnectRefused => "connect_refused",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::PoolTimeout => "pool_timeout",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Protocol => "protocol",
        }
    }
}

/// How a request ended, the `outcome` label of `bentogate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A token passed the route's policy and the request was forwarded.
    Allowed,
    /// A public route or public path: forwarded without reading a token.
    Public,
    /// 401: no, malformed, unknown, expired or revoked credentials.
    Unauthorized,
    /// 403: a live token without access to this deployment.
    Forbidden,
    /// 404: no route matched.
    NotFound,
    /// 400: bad framing or a duplicated Authorization header.
    BadRequest,
    /// 431: header block over the limit.
    HeadersTooLarge,
    /// 401: the remote token source was unreachable and the token not cached (fail closed).
    SourceUnavailable,
    /// 429: too many failed authorizations from the client's address.
    Throttled,
    /// 502: upstream refused, reset or spoke nonsense.
    UpstreamError,
    /// 504: upstream too slow.
    UpstreamTimeout,
}

impl Outcome {
    /// Every outcome, in label-array order.
    pub const ALL: [Outcome; 11] = [
        Outcome::Allowed,
        Outcome::Public,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::NotFound,
        Outcome::BadRequest,
        Outcome::HeadersTooLarge,
        Outcome::SourceUnavailable,
        Outcome::Throttled,
        Outcome::UpstreamError,
        Outcome::UpstreamTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Public => "public",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest => "bad_request",
            Outcome::HeadersTooLarge => "headers_too_large",
            Outcome::SourceUnavailable => "source_unavailable",
            Outcome::Throttled => "throttled",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
        }
    }
}

/// All of bentogate's metrics. Cheap to share behind an `Arc`.
pub struct Metrics {
    /// The registry `/metrics` gathers; explicit, so tests can run several servers in one process.
    pub registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Validator cache hits (positive or negative).
    pub cache_hits: IntCounter,
    /// Validator cache misses (a source lookup follows, shared by concurrent callers).
    pub cache_misses: IntCounter,
    /// Entries in the validator cache, refreshed at scrape time.
    pub cache_entries: IntGauge,
    /// Lookups the token source answered.
    pub source_lookups: IntCounter,
    /// Lookups the token source failed.
    pub source_failures: IntCounter,
    /// Requests let through on a cached token while the remote source was unreachable.
    pub source_stale_hits: IntCounter,
    /// Failed authorizations counted against client buckets.
    pub throttle_failures: IntCounter,
    /// Client addresses with a failure bucket (updated on each /metrics scrape).
    pub throttle_clients: IntGauge,
    /// Token-file reloads by result (`success`, `error`).
    pub token_file_reloads: IntCounterVec,
    /// 1 when the last token-file read succeeded, 0 while an older set is being kept.
    pub token_file_healthy: IntGauge,
    /// Tokens in the current set (valid records, all owners).
    pub tokens_loaded: IntGauge,
    /// 1 while the remote token source (database or control plane) is reachable; 1 for a file.
    pub token_source_up: IntGauge,
    /// Cache entries evicted because another replica (or this one) changed the token.
    pub revocations_received: IntCounter,
    /// Whole-cache flushes (after the database connection was lost and regained).
    pub cache_flushes: IntCounter,
    /// Configuration reloads (SIGHUP or API) by outcome: `success` (applied) or `failure`
    /// (refused; the running configuration stays). Both series exist from start at 0.
    pub config_reloads: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_errors: IntCounterVec,
    upstream_connect: HistogramVec,
    upstream_connections: IntCounterVec,
    upstream_idle: IntGaugeVec,
    /// `notAfter` (Unix seconds) of every certificate a listener serves, by listener and file:
    /// alert on `bentogate_tls_certificate_expiry_seconds - time() < 14 * 86400`.
    pub tls_certificate_expiry: IntGaugeVec,
}

/// Pre-resolved handles for one upstream's connection pool, labelled by its address.
#[derive(Clone)]
pub struct PoolMetrics {
    /// Time to open a new connection (TCP, and TLS for https upstreams).
    pub connect_seconds: Histogram,
    /// New connections opened.
    pub connections_opened: IntCounter,
    /// Idle keep-alive connections kept for the next request.
    pub idle: IntGauge,
}

/// Pre-resolved handles for one deployment.
#[derive(Clone)]
pub struct RouteMetrics {
    outcomes: [IntCounter; Outcome::ALL.len()],
    latency: Histogram,
    upstream_requests: IntCounter,
    upstream_errors: [IntCounter; UpstreamErrorKind::ALL.len()],
}

impl RouteMetrics {
    /// Counts one finished request.
    #[inline]
    pub fn record(&self, outcome: Outcome, seconds: f64) {
        self.outcomes[outcome as usize].inc();
        self.latency.observe(seconds);
    }

    /// Counts one request sent to the upstream.
    #[inline]
    pub fn upstream_request(&self) {
        self.upstream_requests.inc();
    }

    /// Counts one upstream failure by kind.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors[kind as usize].inc();
    }
}

impl Metrics {
    /// Creates the metrics on a new registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "bentogate_requests_total",
                "Requests by deployment and outcome",
            ),
            &["deployment", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "bentogate_request_duration_seconds",
                "Time from request headers to response headers, by deployment",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["deployment"],
        )?;
        let cache_hits =
            IntCounter::new("bentogate_token_cache_hits_total", "Validator cache hits")?;
        let cache_misses = IntCounter::new(
            "bentogate_token_cache_misses_total",
            "Validator cache misses",
        )?;
        let cache_entries = IntGauge::new(
            "bentogate_token_cache_entries",
            "Entries in the validator cache",
        )?;
        let source_lookups = IntCounter::new(
            "bentogate_token_source_lookups_total",
            "Token source lookups",
        )?;
        let source_failures = IntCounter::new(
            "bentogate_token_source_failures_total",
            "Token source lookups that failed",
        )?;
        let source_stale_hits = IntCounter::new(
            "bentogate_token_source_stale_hits_total",
            "Tokens accepted from cache while the remote token source was unreachable",
        )?;
        let throttle_failures = IntCounter::new(
            "bentogate_throttle_failures_total",
            "Failed authorizations counted against per-address buckets",
        )?;
        let throttle_clients = IntGauge::new(
            "bentogate_throttle_clients",
            "Client addresses with a failure bucket",
        )?;
        let token_file_reloads = IntCounterVec::new(
            Opts::new(
                "bentogate_token_file_reloads_total",
                "Token file reads by result",
            ),
            &["result"],
        )?;
        let token_file_healthy = IntGauge::new(
            "bentogate_token_file_healthy",
            "1 when the last token file read succeeded; 0 while the last good set is kept",
        )?;
        let tokens_loaded = IntGauge::new("bentogate_tokens_loaded", "Tokens in the current set")?;
        let token_source_up = IntGauge::new(
            "bentogate_token_source_up",
            "1 while the token source is reachable; 0 while unknown tokens fail closed",
        )?;
        token_source_up.set(1);
        let revocations_received = IntCounter::new(
            "bentogate_token_revocations_received_total",
            "Cache entries evicted on a change notification from the token database",
        )?;
        let cache_flushes = IntCounter::new(
            "bentogate_token_cache_flushes_total",
            "Whole-cache flushes after the token database connection was regained",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "bentogate_config_reloads_total",
                "Configuration reloads by outcome (success: applied; failure: refused, the running configuration stays)",
            ),
            &["outcome"],
        )?;
        for outcome in ["success", "failure"] {
            config_reloads.with_label_values(&[outcome]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new("bentogate_build_info", "Build information; always 1"),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(cache_entries.clone()))?;
        registry.register(Box::new(source_lookups.clone()))?;
        registry.register(Box::new(source_failures.clone()))?;
        registry.register(Box::new(source_stale_hits.clone()))?;
        registry.register(Box::new(token_source_up.clone()))?;
        registry.register(Box::new(revocations_received.clone()))?;
        registry.register(Box::new(cache_flushes.clone()))?;
        registry.register(Box::new(throttle_failures.clone()))?;
        registry.register(Box::new(throttle_clients.clone()))?;
        registry.register(Box::new(token_file_reloads.clone()))?;
        registry.register(Box::new(token_file_healthy.clone()))?;
        registry.register(Box::new(tokens_loaded.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(build_info))?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "bentogate_upstream_requests_total",
                "Requests sent to the upstream, by deployment",
            ),
            &["deployment"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "bentogate_upstream_errors_total",
                "Requests that got no response from the upstream, by deployment and kind",
            ),
            &["deployment", "kind"],
        )?;
        let upstream_connect = HistogramVec::new(
            HistogramOpts::new(
                "bentogate_upstream_connect_duration_seconds",
                "Time to open a new upstream connection (TCP, and TLS for https), by upstream address",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["upstream"],
        )?;
        let upstream_connections = IntCounterVec::new(
            Opts::new(
                "bentogate_upstream_connections_opened_total",
                "New upstream connections, by upstream address",
            ),
            &["upstream"],
        )?;
        let upstream_idle = IntGaugeVec::new(
            Opts::new(
                "bentogate_upstream_idle_connections",
                "Idle keep-alive connections pooled for the next request, by upstream address",
            ),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_requests.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_connect.clone()))?;
        registry.register(Box::new(upstream_connections.clone()))?;
        registry.register(Box::new(upstream_idle.clone()))?;
        let tls_certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "bentogate_tls_certificate_expiry_seconds",
                "When each served certificate expires (notAfter, Unix seconds), by listener and certificate file",
            ),
            &["listener", "cert"],
        )?;
        registry.register(Box::new(tls_certificate_expiry.clone()))?;
        registry.register(Box::new(process::ProcessCollector::new()?))?;
        Ok(Metrics {
            tls_certificate_expiry,
            upstream_requests,
            upstream_errors,
            upstream_connect,
            upstream_connections,
            upstream_idle,
            registry,
            requests,
            latency,
            cache_hits,
            cache_misses,
            cache_entries,
            source_lookups,
            source_failures,
            source_stale_hits,
            throttle_failures,
            throttle_clients,
            token_file_reloads,
            token_file_healthy,
            tokens_loaded,
            token_source_up,
            revocations_received,
            cache_flushes,
            config_reloads,
        })
    }

    /// Resolves the handles of one deployment; `""` is used for requests that matched no route.
    pub fn for_route(&self, deployment: &str) -> RouteMetrics {
        RouteMetrics {
            outcomes: Outcome::ALL
                .map(|o| self.requests.with_label_values(&[deployment, o.as_str()])),
            latency: self.latency.with_label_values(&[deployment]),
            upstream_requests: self.upstream_requests.with_label_values(&[deployment]),
            upstream_errors: UpstreamErrorKind::ALL.map(|k| {
                self.upstream_errors
                    .with_label_values(&[deployment, k.as_str()])
            }),
        }
    }

    /// Resolves the handles of one upstream pool (`host:port`).
    pub fn for_pool(&self, upstream: &str) -> PoolMetrics {
        PoolMetrics {
            connect_seconds: self.upstream_connect.with_label_values(&[upstream]),
            connections_opened: self.upstream_connections.with_label_values(&[upstream]),
            idle: self.upstream_idle.with_label_values(&[upstream]),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}
