//! YAML configuration, read once into validated types.
//!
//! Two layers: raw serde structs that mirror the file (`deny_unknown_fields`, so a typo is an error,
//! never a silently ignored key), converted once into [`Config`], whose values are already parsed
//! (addresses, durations, header names, upstream URLs). Every YAML call of the configuration lives
//! here. Errors name the file, the line, the key and what to do ([`ConfigError`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Uri};
use serde::Deserialize;

use crate::token::{Scope, Scopes};

/// The example configuration, embedded so `bentogate serve` runs with no file at all.
pub const EXAMPLE: &str = include_str!("../config.example.yaml");
/// Name shown in errors about the embedded configuration.
pub const EXAMPLE_NAME: &str = "<embedded config.example.yaml>";

/// Default plain listener when `listeners` is omitted.
pub const DEFAULT_LISTENER: &str = "127.0.0.1:8080";
/// Default admin listener: loopback, since it serves metrics and (later) the control plane.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";
/// Default token file, relative to the configuration file's folder.
pub const DEFAULT_TOKEN_FILE: &str = "tokens.yaml";
/// Default bound on cached token lookups.
pub const DEFAULT_CACHE_CAPACITY: u64 = 100_000;
/// Default life of a cached positive lookup (expiry and revocation are still enforced sooner).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default life of a cached "unknown token" answer.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How often last-use times are written to the token file (SPEC: at most a few seconds late).
pub const DEFAULT_USAGE_FLUSH: Duration = Duration::from_secs(5);
/// Connections per replica to the `postgres` source.
pub const DEFAULT_PG_POOL_SIZE: usize = 4;
/// How long cached tokens keep passing while a remote token source is unreachable.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(300);
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wait for the upstream's response headers.
pub const DEFAULT_RESPONSE_HEADERS_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest silence on an upstream body, and idle life of a pooled connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default limit on a request's header block.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default time a client has to send its whole header block (slowloris guard).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit on open client connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default refill of each client's failure bucket.
pub const DEFAULT_THROTTLE_PER_MINUTE: u32 = 30;
/// Default failures a client may make at once.
pub const DEFAULT_THROTTLE_BURST: u32 = 10;
/// Default most client addresses tracked by the throttle.
pub const DEFAULT_THROTTLE_CLIENTS: u64 = 100_000;
/// Default life of an idle keep-alive client connection.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default concurrent streams per HTTP/2 client connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Default idle upstream connections kept per upstream.
pub const DEFAULT_MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Default requests in flight per upstream.
pub const DEFAULT_MAX_CONNECTIONS_PER_UPSTREAM: usize = 1024;
/// Default identity header carrying the caller's token uid.
pub const DEFAULT_UID_HEADER: &str = "x-bentogate-token-uid";
/// Default identity header carrying the caller's token name.
pub const DEFAULT_NAME_HEADER: &str = "x-bentogate-token-name";
/// Default identity header carrying the caller's owner (organization, or the user's name).
pub const DEFAULT_OWNER_HEADER: &str = "x-bentogate-token-owner";

/// A configuration that could not be used: which file, which line, which key, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config {path}: {source}; check the path given to --config")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file was read but a key or value is wrong.
    #[error("{path}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line, where it is known.
        line: Option<usize>,
        /// The key, as a path (`deployments[1].policy`).
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Durations written as humantime strings (`250ms`, `30s`, `5m`).
#[derive(Debug, Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write it like 250ms, 30s or 5m"
            ))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listeners: Option<Vec<RawListener>>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    forwarding: RawForwarding,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    deployments: Vec<RawDeployment>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    throttle: RawThrottle,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    failures_per_minute: Option<u32>,
    burst: Option<u32>,
    max_clients: Option<u64>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: SocketAddr,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: SocketAddr,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: SocketAddr::from_str(DEFAULT_ADMIN).unwrap_or(([127, 0, 0, 1], 9901).into()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTokens {
    #[serde(default)]
    source: RawSourceKind,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    usage_flush: Option<Dur>,
    #[serde(default)]
    introspect: Option<RawIntrospect>,
    #[serde(default)]
    postgres: Option<RawPostgres>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    url: String,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    pool_size: Option<usize>,
    #[serde(default)]
    timeout: Option<Dur>,
    #[serde(default)]
    stale_if_error: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrospect {
    url: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    stale_if_error: Option<Dur>,
    #[serde(default)]
    timeout: Option<Dur>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawSourceKind {
    #[default]
    File,
    Postgres,
    Introspect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    capacity: Option<u64>,
    ttl: Option<Dur>,
    negative_ttl: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawForwarding {
    strip_authorization: Option<bool>,
    merge_slashes: Option<bool>,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pool: RawPool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPool {
    max_idle_per_upstream: Option<usize>,
    max_connections_per_upstream: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeaders {
    token_uid: Option<String>,
    token_name: Option<String>,
    token_owner: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Dur>,
    response_headers: Option<Dur>,
    idle: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<usize>,
    header_read_timeout: Option<Dur>,
    keepalive_timeout: Option<Dur>,
    max_connections: Option<usize>,
    max_concurrent_streams: Option<u32>,
    drain_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    upstream: String,
    #[serde(default)]
    upstream_protocol: UpstreamProtocol,
    policy: RawPolicy,
    #[serde(default)]
    scopes: Vec<Scope>,
    #[serde(default)]
    public_paths: Vec<String>,
    websocket: Option<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawPolicy {
    Public,
    Protected,
    Monitoring,
    Developer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
    level: Option<String>,
    access: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    #[serde(default)]
    worker_threads: usize,
}

/// A validated configuration: everything parsed, nothing left to fail at request time.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub origin: String,
    /// Client-facing listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (health, readiness, metrics).
    pub admin: SocketAddr,
    /// Token source and cache.
    pub tokens: TokensConfig,
    /// What forwarding does to requests.
    pub forwarding: ForwardingConfig,
    /// Protective limits.
    pub limits: Limits,
    /// Routes, in file order.
    pub deployments: Vec<Deployment>,
    /// Logging.
    pub log: LogConfig,
    /// Tokio worker threads; 0 means one per core.
    pub worker_threads: usize,
    /// Throttling of failed authorization per client address.
    pub throttle: ThrottleConfig,
}

/// Throttling of failed authorization per client address (a token bucket each).
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Refill rate of each bucket; 0 turns throttling off.
    pub failures_per_minute: u32,
    /// Bucket size: failures allowed at once before the rate applies.
    pub burst: u32,
    /// Most client addresses tracked; beyond, the least recently failing are forgotten.
    pub max_clients: u64,
    /// Peers whose `X-Forwarded-For` names the client (its last entry).
    pub trusted_proxies: Vec<IpNet>,
}

/// An address range (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The network address.
    pub addr: std::net::IpAddr,
    /// Leading bits that must match.
    pub prefix: u8,
}

impl IpNet {
    /// Reads `a.b.c.d/n`, `x::y/n` or a bare address.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    /// True when `ip` is inside the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let (net, ip, bits): (u128, u128, u32) = match (self.addr, ip) {
            (V4(n), V4(i)) => (u32::from(n).into(), u32::from(i).into(), 32),
            (V6(n), V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let keep = u32::from(self.prefix);
        if keep == 0 {
            return true;
        }
        let shift = bits - keep;
        (net >> shift) == (ip >> shift)
    }
}

/// Where tokens come from and how lookups are cached.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// The token file (the only source in this build), resolved against the config's folder.
    pub file: PathBuf,
    /// Bound on cached lookups.
    pub cache_capacity: u64,
    /// Life of a cached positive lookup.
    pub cache_ttl: Duration,
    /// Life of a cached negative lookup.
    pub negative_ttl: Duration,
    /// How often last-use times are flushed to the token file.
    pub usage_flush: Duration,
    /// With `source: introspect`, where to ask; none for the file source.
    pub introspect: Option<IntrospectConfig>,
    /// With `source: postgres`, the shared database; none otherwise.
    pub postgres: Option<PostgresConfig>,
}

/// The `postgres` source: one database shared by every replica.
#[derive(Clone)]
pub struct PostgresConfig {
    /// The connection string as written (may hold a password: never logged).
    pub url: String,
    /// The parsed connection settings.
    pub settings: tokio_postgres::Config,
    /// Connections each replica keeps for lookups and control-plane writes.
    pub pool_size: usize,
    /// Deadline for connecting and for one lookup: no request waits longer on the database.
    pub timeout: Duration,
    /// How long cached tokens keep passing while the database is unreachable.
    pub stale_if_error: Duration,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("hosts", &self.settings.get_hosts())
            .field("dbname", &self.settings.get_dbname())
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// The `introspect` source: another bentogate's `/v1/introspect`.
#[derive(Clone)]
pub struct IntrospectConfig {
    /// The endpoint, `http://host:port/v1/introspect`.
    pub url: http::Uri,
    /// This gateway's own token (with `read_cluster`) for calling it.
    pub token: std::sync::Arc<crate::token::Secret>,
    /// How long cached positives keep passing while the endpoint is unreachable.
    pub stale_if_error: Duration,
    /// Deadline for one introspection call.
    pub timeout: Duration,
}

impl std::fmt::Debug for IntrospectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectConfig")
            .field("url", &self.url)
            .field("stale_if_error", &self.stale_if_error)
            .finish_non_exhaustive()
    }
}

/// One client-facing listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Where it listens.
    pub address: SocketAddr,
    /// With certificates, a TLS listener (SNI picks among them; the first is the default).
    pub tls: Option<Vec<CertificatePair>>,
}

/// A certificate chain and its private key, PEM files resolved against the config's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePair {
    /// Leaf first, then intermediates.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Request rewriting and upstream timeouts.
#[derive(Debug, Clone)]
pub struct ForwardingConfig {
    /// Remove `Authorization` and `X-YATAI-API-TOKEN` before forwarding (the default).
    pub strip_authorization: bool,
    /// Merge runs of `/` in request paths into one before routing (the default, as nginx).
    pub merge_slashes: bool,
    /// Identity headers, each optional (an empty string in the file turns one off).
    pub identity: IdentityHeaders,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Wait for the upstream's response headers.
    pub response_headers_timeout: Duration,
    /// Longest silence on an upstream body; idle life of pooled connections.
    pub idle_timeout: Duration,
    /// Trust only this PEM bundle for https upstreams; none: the platform's roots.
    pub upstream_ca: Option<PathBuf>,
    /// Idle keep-alive connections kept per upstream.
    pub max_idle_per_upstream: usize,
    /// Requests in flight per deployment's upstream (so connections per upstream are bounded);
    /// beyond it, requests wait up to the response-headers timeout.
    pub max_connections_per_upstream: usize,
}

/// Header names that tell the upstream who called.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Carries the token uid.
    pub token_uid: Option<HeaderName>,
    /// Carries the token name.
    pub token_name: Option<HeaderName>,
    /// Carries the owner: `organization` or the user's name.
    pub token_owner: Option<HeaderName>,
}

/// Protective limits on clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request header block accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Time a client has to send its header block.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection (no request in flight) stays open.
    pub keepalive_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Open connections per listener; beyond, new ones wait in the backlog.
    pub max_connections: usize,
    /// Time in-flight requests get after SIGTERM.
    pub drain_timeout: Duration,
}

/// One deployment: how requests are matched, where they go, and who may pass.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Unique name; what tokens name in their deployments list.
    pub name: String,
    /// Lower-case host names without port; empty means any host.
    pub hosts: Vec<String>,
    /// Path prefix, matched on segment boundaries; `/` matches everything.
    pub path_prefix: String,
    /// Where requests go.
    pub upstream: Upstream,
    /// Who passes.
    pub policy: Policy,
    /// Exact paths that pass without a token (probes), in normalized form.
    pub public_paths: Vec<String>,
    /// Tunnel WebSocket upgrades to this deployment (on unless `websocket: false`).
    pub websocket: bool,
}

/// An upstream origin: scheme and authority, no path.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port.
    pub authority: Authority,
    /// HTTP/1.1 or HTTP/2 prior knowledge (h2c).
    pub protocol: UpstreamProtocol,
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive (the default).
    #[default]
    Http1,
    /// HTTP/2; over plain http this is prior knowledge (h2c).
    H2,
}

/// Who may pass a route (section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Everyone; the Authorization header is not read.
    Public,
    /// Tokens with Protected Endpoint Access to this deployment or to All Deployments.
    Protected,
    /// Monitoring tokens.
    Monitoring,
    /// Tokens holding all of these Developer Operations scopes.
    Developer(Scopes),
}

/// Log output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Pretty or JSON lines.
    pub format: LogFormat,
    /// A tracing filter (`info`, `bentogate=debug`).
    pub level: String,
    /// One access-log line per request.
    pub access: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// The embedded example configuration; its token file is relative to the working directory.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse(EXAMPLE, EXAMPLE_NAME, Path::new("."))
    }

    /// Validates configuration text; relative paths in it are resolved against `base`.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        // serde_path_to_error keeps the whole key path (`forwarding.timeouts.connect`), which
        // serde_yaml alone loses for errors raised inside a value's own deserializer.
        let raw: RawConfig =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| yaml_error(origin, &e))?;
        Validator { text, origin }.validate(raw, base)
    }
}

fn yaml_error(origin: &str, e: &serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let inner = e.inner();
    let full = inner.to_string();
    // serde_yaml says "path.to.key: what is wrong at line L column C"; keep only what is wrong.
    let without_location = match full.rfind(" at line ") {
        Some(at) => &full[..at],
        None => full.as_str(),
    };
    let message = match without_location.split_once(": ") {
        Some((key, message)) if !key.contains(' ') => message,
        _ => without_location,
    };
    // The tracked path names the exact key; `.` alone means the document itself.
    let path = e.path().to_string();
    let key = if path == "." || path.is_empty() {
        "(document)".to_owned()
    } else {
        path
    };
    ConfigError::Invalid {
        path: origin.to_owned(),
        line: inner.location().map(|l| l.line()),
        key,
        message: format!("{message} (config.example.yaml documents every key)"),
    }
}

/// Turns raw structs into a [`Config`], locating semantic errors in the text.
struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Validator<'_> {
    fn error(
        &self,
        key: impl Into<String>,
        near: &[&str],
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_owned(),
            line: find_line(self.text, near),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate(&self, raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let listeners = match raw.listeners {
            None => vec![ListenerConfig {
                address: SocketAddr::from_str(DEFAULT_LISTENER)
                    .map_err(|e| self.error("listeners", &[], e.to_string()))?,
                tls: None,
            }],
            Some(l) if l.is_empty() => {
                return Err(self.error(
                    "listeners",
                    &["listeners:"],
                    "at least one listener is needed; add `- address: 0.0.0.0:8080`",
                ))
            }
            Some(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, l)| self.listener(i, l, base))
                .collect::<Result<_, _>>()?,
        };
        let tokens = self.tokens(raw.tokens, base)?;
        let forwarding = self.forwarding(raw.forwarding, base)?;
        let limits = self.limits(raw.limits)?;
        let deployments = self.deployments(raw.deployments, forwarding.merge_slashes)?;
        let log = LogConfig {
            format: raw.log.format,
            level: raw.log.level.unwrap_or_else(|| "info".to_owned()),
            access: raw.log.access.unwrap_or(true),
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            return Err(self.error(
                "log.level",
                &["level:"],
                format!(
                    "`{}` is not a log filter; use error, warn, info, debug or trace",
                    log.level
                ),
            ));
        }
        Ok(Config {
            origin: self.origin.to_owned(),
            listeners,
            admin: raw.admin.address,
            tokens,
            forwarding,
            limits,
            deployments,
            log,
            worker_threads: raw.runtime.worker_threads,
            throttle: self.throttle(raw.throttle)?,
        })
    }

    fn throttle(&self, raw: RawThrottle) -> Result<ThrottleConfig, ConfigError> {
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|t| {
                IpNet::parse(t).ok_or_else(|| {
                    self.error(
                        "throttle.trusted_proxies",
                        &["trusted_proxies:"],
                        format!("`{t}` is not an address or range; write 10.0.0.0/8 or 127.0.0.1"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let burst = raw.burst.unwrap_or(DEFAULT_THROTTLE_BURST);
        let max_clients = raw.max_clients.unwrap_or(DEFAULT_THROTTLE_CLIENTS);
        if burst == 0 || max_clients == 0 {
            return Err(self.error(
                "throttle",
                &["throttle:"],
                "burst and max_clients must be at least 1 (failures_per_minute: 0 turns throttling off)",
            ));
        }
        Ok(ThrottleConfig {
            failures_per_minute: raw
                .failures_per_minute
                .unwrap_or(DEFAULT_THROTTLE_PER_MINUTE),
            burst,
            max_clients,
            trusted_proxies,
        })
    }

    fn tokens(&self, raw: RawTokens, base: &Path) -> Result<TokensConfig, ConfigError> {
        if raw.postgres.is_some() && raw.source != RawSourceKind::Postgres {
            return Err(self.error(
                "tokens.postgres",
                &["postgres:"],
                "`postgres:` is read only with `source: postgres`; set the source or remove the section",
            ));
        }
        let postgres = match (raw.source, raw.postgres) {
            (RawSourceKind::Postgres, Some(p)) => Some(self.postgres(p, base)?),
            (RawSourceKind::Postgres, None) => return Err(self.error(
                "tokens.postgres",
                &["source:"],
                "`source: postgres` needs `postgres: { url: \"postgres://USER@HOST:5432/DB\" }`",
            )),
            _ => None,
        };
        let introspect = match (raw.source, raw.introspect) {
            (RawSourceKind::File | RawSourceKind::Postgres, None) => None,
            (RawSourceKind::File | RawSourceKind::Postgres, Some(_)) => {
                return Err(self.error(
                    "tokens.introspect",
                    &["introspect:"],
                    "`introspect:` is read only with `source: introspect`; set the source or remove the section",
                ))
            }
            (RawSourceKind::Introspect, None) => {
                return Err(self.error(
                    "tokens.introspect",
                    &["source:"],
                    "`source: introspect` needs `introspect: { url: http://HOST:9901/v1/introspect, token_file: PATH }`",
                ))
            }
            (RawSourceKind::Introspect, Some(i)) => Some(self.introspect(i, base)?),
        };
        let file = base.join(
            raw.file
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE)),
        );
        let cache_capacity = raw.cache.capacity.unwrap_or(DEFAULT_CACHE_CAPACITY);
        if cache_capacity == 0 {
            return Err(self.error(
                "tokens.cache.capacity",
                &["capacity:"],
                "must be at least 1; the default is 100000",
            ));
        }
        let cache_ttl = raw.cache.ttl.map_or(DEFAULT_CACHE_TTL, |d| d.0);
        let negative_ttl = raw.cache.negative_ttl.map_or(DEFAULT_NEGATIVE_TTL, |d| d.0);
        if cache_ttl.is_zero() || negative_ttl.is_zero() {
            return Err(self.error(
                "tokens.cache",
                &["ttl:"],
                "ttl and negative_ttl must be longer than zero",
            ));
        }
        let usage_flush = raw.usage_flush.map_or(DEFAULT_USAGE_FLUSH, |d| d.0);
        if usage_flush.is_zero() {
            return Err(self.error(
                "tokens.usage_flush",
                &["usage_flush:"],
                "must be longer than zero; the default is 5s",
            ));
        }
        Ok(TokensConfig {
            file,
            cache_capacity,
            cache_ttl,
            negative_ttl,
            usage_flush,
            introspect,
            postgres,
        })
    }

    /// A duration that must be longer than zero, or `default`.
    fn positive(
        &self,
        key: &str,
        d: Option<Dur>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = d.map_or(default, |d| d.0);
        if d.is_zero() {
            return Err(self.error(key, &[], "must be longer than zero"));
        }
        Ok(d)
    }

    fn postgres(&self, raw: RawPostgres, base: &Path) -> Result<PostgresConfig, ConfigError> {
        let mut settings = tokio_postgres::Config::from_str(&raw.url).map_err(|e| {
            self.error(
                "tokens.postgres.url",
                &["url:"],
                // The error text never quotes the URL: it may hold a password.
                format!("not a PostgreSQL connection string ({e}); write it like postgres://bentogate@db:5432/bentogate"),
            )
        })?;
        if settings.get_hosts().is_empty() {
            return Err(self.error(
                "tokens.postgres.url",
                &["url:"],
                "the connection string names no host; write it like postgres://bentogate@db:5432/bentogate",
            ));
        }
        if settings.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(self.error(
                "tokens.postgres.url",
                &["url:"],
                "sslmode=require: TLS to PostgreSQL is not supported in this build; connect over a private network or a local TLS tunnel and drop sslmode",
            ));
        }
        if let Some(path) = raw.password_file {
            let path = base.join(path);
            let password = std::fs::read_to_string(&path).map_err(|e| {
                self.error(
                    "tokens.postgres.password_file",
                    &["password_file:"],
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            settings.password(password.trim_end_matches(['\r', '\n']));
        }
        let pool_size = raw.pool_size.unwrap_or(DEFAULT_PG_POOL_SIZE);
        if pool_size == 0 {
            return Err(self.error(
                "tokens.postgres.pool_size",
                &["pool_size:"],
                "must be at least 1; the default is 4",
            ));
        }
        Ok(PostgresConfig {
            url: raw.url,
            settings,
            pool_size,
            timeout: self.positive(
                "tokens.postgres.timeout",
                raw.timeout,
                Duration::from_secs(2),
            )?,
            stale_if_error: self.positive(
                "tokens.postgres.stale_if_error",
                raw.stale_if_error,
                DEFAULT_STALE_IF_ERROR,
            )?,
        })
    }

    fn introspect(&self, raw: RawIntrospect, base: &Path) -> Result<IntrospectConfig, ConfigError> {
        let url = http::Uri::from_str(&raw.url)
            .ok()
            .filter(|u| u.scheme_str() == Some("http") && u.authority().is_some())
            .ok_or_else(|| {
                self.error(
                    "tokens.introspect.url",
                    &["url:"],
                    format!("`{}` is not an http:// URL with a host (https is not supported in this build yet); write it like http://control-plane:9901/v1/introspect", raw.url),
                )
            })?;
        let token = match (raw.token, raw.token_file) {
            (Some(t), None) => t,
            (None, Some(path)) => {
                let path = base.join(path);
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        self.error(
                            "tokens.introspect.token_file",
                            &["token_file:"],
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
            }
            _ => {
                return Err(self.error(
                    "tokens.introspect",
                    &["introspect:"],
                    "give exactly one of `token` or `token_file`: a token with the read_cluster scope on the control plane",
                ))
            }
        };
        if crate::token::check(token.as_bytes()).is_err() {
            return Err(self.error(
                "tokens.introspect.token",
                &["token:", "token_file:"],
                "the introspection token is not a token; create one on the control plane with `bentogate token create NAME --scope read_cluster`",
            ));
        }
        Ok(IntrospectConfig {
            url,
            token: std::sync::Arc::new(crate::token::Secret::new(token)),
            stale_if_error: self.positive(
                "tokens.introspect.stale_if_error",
                raw.stale_if_error,
                DEFAULT_STALE_IF_ERROR,
            )?,
            timeout: self.positive(
                "tokens.introspect.timeout",
                raw.timeout,
                Duration::from_secs(2),
            )?,
        })
    }

    fn forwarding(&self, raw: RawForwarding, base: &Path) -> Result<ForwardingConfig, ConfigError> {
        let header = |key: &str,
                      value: Option<String>,
                      default: &str|
         -> Result<Option<HeaderName>, ConfigError> {
            let value = value.unwrap_or_else(|| default.to_owned());
            if value.is_empty() {
                return Ok(None);
            }
            let name = HeaderName::from_str(&value).map_err(|_| {
                self.error(
                    format!("forwarding.identity_headers.{key}"),
                    &[key],
                    format!("`{value}` is not a header name; use letters, digits and dashes"),
                )
            })?;
            if name == http::header::AUTHORIZATION
                || name == http::header::HOST
                || is_hop_by_hop(&name)
            {
                return Err(self.error(
                    format!("forwarding.identity_headers.{key}"),
                    &[key],
                    format!("`{value}` is reserved; pick a name such as x-bentogate-{key}"),
                ));
            }
            Ok(Some(name))
        };
        let identity = IdentityHeaders {
            token_uid: header(
                "token_uid",
                raw.identity_headers.token_uid,
                DEFAULT_UID_HEADER,
            )?,
            token_name: header(
                "token_name",
                raw.identity_headers.token_name,
                DEFAULT_NAME_HEADER,
            )?,
            token_owner: header(
                "token_owner",
                raw.identity_headers.token_owner,
                DEFAULT_OWNER_HEADER,
            )?,
        };
        let t = raw.timeouts;
        let timeouts = [
            (
                "connect",
                t.connect.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            ),
            (
                "response_headers",
                t.response_headers
                    .map_or(DEFAULT_RESPONSE_HEADERS_TIMEOUT, |d| d.0),
            ),
            ("idle", t.idle.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0)),
        ];
        for (key, d) in timeouts {
            if d.is_zero() {
                return Err(self.error(
                    format!("forwarding.timeouts.{key}"),
                    &[key],
                    "must be longer than zero",
                ));
            }
        }
        let max_connections_per_upstream = raw
            .pool
            .max_connections_per_upstream
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_UPSTREAM);
        if max_connections_per_upstream == 0 {
            return Err(self.error(
                "forwarding.pool.max_connections_per_upstream",
                &["max_connections_per_upstream:"],
                "must be at least 1; the default is 1024",
            ));
        }
        Ok(ForwardingConfig {
            strip_authorization: raw.strip_authorization.unwrap_or(true),
            merge_slashes: raw.merge_slashes.unwrap_or(true),
            identity,
            connect_timeout: timeouts[0].1,
            response_headers_timeout: timeouts[1].1,
            idle_timeout: timeouts[2].1,
            upstream_ca: raw.upstream_ca.map(|p| base.join(p)),
            max_idle_per_upstream: raw
                .pool
                .max_idle_per_upstream
                .unwrap_or(DEFAULT_MAX_IDLE_PER_UPSTREAM),
            max_connections_per_upstream,
        })
    }

    fn listener(
        &self,
        index: usize,
        raw: RawListener,
        base: &Path,
    ) -> Result<ListenerConfig, ConfigError> {
        let tls = match raw.tls {
            None => None,
            Some(t) if t.certificates.is_empty() => {
                return Err(self.error(
                    format!("listeners[{index}].tls.certificates"),
                    &["certificates:"],
                    "a TLS listener needs at least one `{ cert: FILE, key: FILE }`",
                ))
            }
            Some(t) => Some(
                t.certificates
                    .into_iter()
                    .map(|c| CertificatePair {
                        cert: base.join(c.cert),
                        key: base.join(c.key),
                    })
                    .collect(),
            ),
        };
        Ok(ListenerConfig {
            address: raw.address,
            tls,
        })
    }

    fn limits(&self, raw: RawLimits) -> Result<Limits, ConfigError> {
        let max_header_bytes = raw.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            return Err(self.error(
                "limits.max_header_bytes",
                &["max_header_bytes:"],
                "must be between 1024 and 1048576; the default is 16384",
            ));
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(self.error(
                "limits.max_connections",
                &["max_connections:"],
                "must be at least 1; the default is 10000",
            ));
        }
        let header_read_timeout = raw
            .header_read_timeout
            .map_or(DEFAULT_HEADER_READ_TIMEOUT, |d| d.0);
        if header_read_timeout.is_zero() {
            return Err(self.error(
                "limits.header_read_timeout",
                &["header_read_timeout:"],
                "must be longer than zero; the default is 10s",
            ));
        }
        let keepalive_timeout = raw
            .keepalive_timeout
            .map_or(DEFAULT_KEEPALIVE_TIMEOUT, |d| d.0);
        if keepalive_timeout.is_zero() {
            return Err(self.error(
                "limits.keepalive_timeout",
                &["keepalive_timeout:"],
                "must be longer than zero; the default is 60s",
            ));
        }
        let max_concurrent_streams = raw
            .max_concurrent_streams
            .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS);
        if max_concurrent_streams == 0 {
            return Err(self.error(
                "limits.max_concurrent_streams",
                &["max_concurrent_streams:"],
                "must be at least 1; the default is 100",
            ));
        }
        Ok(Limits {
            max_header_bytes,
            header_read_timeout,
            keepalive_timeout,
            max_concurrent_streams,
            max_connections,
            drain_timeout: raw.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
        })
    }

    fn deployments(
        &self,
        raw: Vec<RawDeployment>,
        merge_slashes: bool,
    ) -> Result<Vec<Deployment>, ConfigError> {
        if raw.is_empty() {
            return Err(self.error(
                "deployments",
                &["deployments:"],
                "at least one deployment is needed; see config.example.yaml",
            ));
        }
        let mut out: Vec<Deployment> = Vec::with_capacity(raw.len());
        for (i, d) in raw.into_iter().enumerate() {
            let name_line = format!("name: {}", d.name);
            let at = |field: &str| -> Vec<String> { vec![name_line.clone(), format!("{field}:")] };
            let err = |field: &str, message: String| {
                let near = at(field);
                let near: Vec<&str> = near.iter().map(String::as_str).collect();
                let mut e = self.error(format!("deployments[{i}].{field}"), &near, message);
                // An omitted key has no line of its own: point at the deployment's name.
                if let ConfigError::Invalid {
                    line: line @ None, ..
                } = &mut e
                {
                    *line = find_line(self.text, &near[..1]);
                }
                e
            };
            if d.name.is_empty()
                || !d
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(err(
                    "name",
                    format!(
                        "`{}` is not a deployment name; use letters, digits, `-`, `_` and `.`",
                        d.name
                    ),
                ));
            }
            if out.iter().any(|o| o.name == d.name) {
                return Err(err(
                    "name",
                    format!(
                        "`{}` is used twice; deployment names must be unique",
                        d.name
                    ),
                ));
            }
            let mut hosts = Vec::with_capacity(d.hosts.len());
            for h in &d.hosts {
                let h = h.to_ascii_lowercase();
                if h.is_empty() || h.contains(['/', ' ', ':']) {
                    return Err(err(
                        "hosts",
                        format!("`{h}` is not a host name; write it without scheme, port or path"),
                    ));
                }
                hosts.push(h);
            }
            let path_prefix = normalize_prefix(d.path_prefix.as_deref().unwrap_or("/"))
                .ok_or_else(|| err("path_prefix", "must start with `/`".to_owned()))?;
            // Requests are matched after normalization: a prefix in another spelling would
            // never match, or match what it did not mean to.
            if let Some(fixed) = not_normalized(&path_prefix, merge_slashes) {
                return Err(err("path_prefix", fixed));
            }
            for o in &out {
                let same_hosts = (o.hosts.is_empty() && hosts.is_empty())
                    || o.hosts.iter().any(|h| hosts.contains(h));
                if same_hosts && o.path_prefix == path_prefix {
                    return Err(err(
                        "path_prefix",
                        format!("deployment `{}` already matches the same host and prefix `{path_prefix}`; give one a different path_prefix or hosts", o.name),
                    ));
                }
            }
            let upstream =
                parse_upstream(&d.upstream, d.upstream_protocol).map_err(|m| err("upstream", m))?;
            let policy = match (d.policy, d.scopes.is_empty()) {
                (RawPolicy::Developer, true) => {
                    return Err(err("scopes", "policy `developer` needs the scopes it requires, e.g. `scopes: [read_cluster]`".to_owned()))
                }
                (RawPolicy::Developer, false) => Policy::Developer(Scopes::from_slice(&d.scopes)),
                (_, false) => {
                    return Err(err("scopes", "scopes apply only to policy `developer`; remove them or change the policy".to_owned()))
                }
                (RawPolicy::Public, true) => Policy::Public,
                (RawPolicy::Protected, true) => Policy::Protected,
                (RawPolicy::Monitoring, true) => Policy::Monitoring,
            };
            for p in &d.public_paths {
                if !p.starts_with('/') || p.contains(['?', '#']) {
                    return Err(err(
                        "public_paths",
                        format!("`{p}` must be an exact path starting with `/`, without query"),
                    ));
                }
                if let Some(fixed) = not_normalized(p, merge_slashes) {
                    return Err(err("public_paths", fixed));
                }
            }
            out.push(Deployment {
                name: d.name,
                hosts,
                path_prefix,
                upstream,
                policy,
                public_paths: d.public_paths,
                websocket: d.websocket.unwrap_or(true),
            });
        }
        Ok(out)
    }
}

/// Why a configured path would never be seen in a request (requests are normalized first), with
/// the spelling to write instead; none when it is already normalized.
fn not_normalized(path: &str, merge_slashes: bool) -> Option<String> {
    match crate::path::normalize(path, merge_slashes) {
        Ok(p) if p == path => None,
        Ok(p) => Some(format!(
            "`{path}` is not in normalized form, so no request would match it; write `{p}`"
        )),
        Err(e) => Some(format!("`{path}` could never be requested: {e}")),
    }
}

/// `/api/` and `/api` are the same prefix; `/` stays `/`.
fn normalize_prefix(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let trimmed = p.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn parse_upstream(text: &str, protocol: UpstreamProtocol) -> Result<Upstream, String> {
    let uri = Uri::from_str(text)
        .map_err(|e| format!("`{text}` is not a URL ({e}); write it like http://127.0.0.1:3000"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("`{text}` needs the scheme http:// or https://")),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{text}` has no host; write it like http://127.0.0.1:3000"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the upstream URL are not supported; remove `user@`".to_owned());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{text}` must have no path or query; requests keep their own path"
        ));
    }
    Ok(Upstream {
        scheme,
        authority,
        protocol,
    })
}

/// The hop-by-hop headers of RFC 9110 section 7.6.1 (plus the two legacy names every proxy
/// drops), which a proxy must not forward.
pub const HOP_BY_HOP: [HeaderName; 10] = [
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TRAILER,
    http::header::PROXY_AUTHORIZATION,
    http::header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    // Only meaningful with `Upgrade: h2c` (RFC 7540 section 3.2), which is never forwarded.
    HeaderName::from_static("http2-settings"),
];

/// True for a hop-by-hop header ([`HOP_BY_HOP`]).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// The 1-based line of the first `needles[last]` found after `needles[..last]` in order.
fn find_line(text: &str, needles: &[&str]) -> Option<usize> {
    let mut lines = text.lines().enumerate();
    let mut found = None;
    for needle in needles {
        found = None;
        for (i, line) in lines.by_ref() {
            let content = line.split('#').next().unwrap_or("");
            if content.contains(needle) {
                found = Some(i + 1);
                break;
            }
        }
        found?;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.yaml", Path::new("/etc/bentogate"))
    }

    const MINIMAL: &str =
        "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n";

    #[test]
    fn the_example_is_valid() {
        let c = Config::embedded().unwrap();
        assert!(!c.deployments.is_empty());
    }

    #[test]
    fn the_container_config_is_valid() {
        let text = include_str!("../deploy/container.yaml");
        let c = Config::parse(text, "deploy/container.yaml", Path::new("/")).unwrap();
        assert_eq!(c.tokens.file, Path::new("/var/lib/bentogate/tokens.yaml"));
    }

    #[test]
    fn defaults_fill_what_is_omitted() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.listeners,
            vec![ListenerConfig {
                address: SocketAddr::from_str(DEFAULT_LISTENER).unwrap(),
                tls: None
            }]
        );
        assert_eq!(c.tokens.file, Path::new("/etc/bentogate/tokens.yaml"));
        assert_eq!(c.tokens.cache_ttl, DEFAULT_CACHE_TTL);
        assert_eq!(c.limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert!(c.forwarding.strip_authorization);
        assert_eq!(c.deployments[0].path_prefix, "/");
        assert_eq!(c.deployments[0].policy, Policy::Protected);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    polcy: protected\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.starts_with("test.yaml:4:"), "{e}");
        assert!(e.contains("deployments[0]"), "{e}");
        assert!(e.contains("unknown field `polcy`"), "{e}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let text = format!("{MINIMAL}limits:\n  drain_timeout: soon\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("test.yaml:6"), "{e}");
        assert!(e.contains("30s"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_deployment() {
        let text = "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n  - name: b\n    upstream: http://127.0.0.1:3000\n    policy: developer\n    path_prefix: /b\n";
        let e = parse(text).unwrap_err().to_string();
        assert_eq!(
            e,
            "test.yaml:5: deployments[1].scopes: policy `developer` needs the scopes it requires, e.g. `scopes: [read_cluster]`"
        );
        let dup = "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n  - name: b\n    upstream: http://127.0.0.1:3000\n    policy: public\n";
        let e = parse(dup).unwrap_err().to_string();
        assert!(
            e.starts_with("test.yaml:5: deployments[1].path_prefix:"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_upstreams() {
        for (u, want) in [
            ("ftp://x", "http://"),
            ("http://127.0.0.1:3000/base", "no path"),
            ("not a url", "not a URL"),
            ("https://u@x", "credentials"),
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:3000", u);
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains("deployments[0].upstream") && e.contains(want),
                "{u}: {e}"
            );
        }
    }

    #[test]
    fn https_upstreams_and_tls_listeners_are_read() {
        let text = format!(
            "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: a.crt, key: a.key }}\n{}",
            MINIMAL.replace("http://127.0.0.1:3000", "https://models.example.com")
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.deployments[0].upstream.scheme, http::uri::Scheme::HTTPS);
        let pairs = c.listeners[0].tls.as_ref().unwrap();
        assert!(pairs[0].cert.ends_with("a.crt") && pairs[0].key.is_absolute());
        let empty = format!(
            "listeners:\n  - address: 127.0.0.1:0\n    tls: {{ certificates: [] }}\n{MINIMAL}"
        );
        let e = parse(&empty).unwrap_err().to_string();
        assert!(e.contains("listeners[0].tls.certificates"), "{e}");
    }

    #[test]
    fn rejects_duplicate_routes_and_names() {
        let dup_name = format!("{MINIMAL}  - name: a\n    upstream: http://127.0.0.1:3001\n    policy: public\n    path_prefix: /x\n");
        assert!(parse(&dup_name)
            .unwrap_err()
            .to_string()
            .contains("used twice"));
        let dup_route = format!("{MINIMAL}  - name: b\n    upstream: http://127.0.0.1:3001\n    policy: public\n    path_prefix: /\n");
        assert!(parse(&dup_route)
            .unwrap_err()
            .to_string()
            .contains("same host and prefix"));
    }

    #[test]
    fn a_bad_value_names_its_exact_key() {
        for (yaml, key, line) in [
            (
                "forwarding:\n  timeouts:\n    connect: 5 parsecs\n",
                "forwarding.timeouts.connect",
                7,
            ),
            ("tokens:\n  cache:\n    ttl: soon\n", "tokens.cache.ttl", 7),
            (
                "limits:\n  drain_timeout: 3 fortnights\n",
                "limits.drain_timeout",
                6,
            ),
        ] {
            let e = Config::parse(&format!("{MINIMAL}{yaml}"), "t.yaml", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("t.yaml:{line}: {key}: ")), "{e}");
        }
    }

    #[test]
    fn configured_paths_must_be_in_normalized_form() {
        for (extra, fix) in [
            ("    path_prefix: /%6detrics\n", "write `/metrics`"),
            ("    public_paths: [/a/../healthz]\n", "write `/healthz`"),
            ("    public_paths: [//healthz]\n", "write `/healthz`"),
            (
                "    public_paths: [\"/a%2fb\"]\n",
                "could never be requested",
            ),
        ] {
            let text = format!(
                "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n{extra}"
            );
            let e = Config::parse(&text, "t.yaml", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(fix), "{e}");
        }
    }

    #[test]
    fn reserved_identity_header_is_refused() {
        let text =
            format!("{MINIMAL}forwarding:\n  identity_headers:\n    token_uid: authorization\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn postgres_source_needs_a_url_and_never_echoes_it() {
        let missing = format!("{MINIMAL}tokens:\n  source: postgres\n");
        let e = parse(&missing).unwrap_err().to_string();
        assert!(e.contains("test.yaml:6: tokens.postgres"), "{e}");
        let ok = format!("{MINIMAL}tokens:\n  source: postgres\n  postgres: {{ url: \"postgres://bg:s3cret@db:5432/tokens\", pool_size: 2, timeout: 500ms }}\n");
        let c = parse(&ok).unwrap();
        let pg = c.tokens.postgres.unwrap();
        assert_eq!((pg.pool_size, pg.timeout), (2, Duration::from_millis(500)));
        assert!(!format!("{pg:?}").contains("s3cret"));
        let bad = format!("{MINIMAL}tokens:\n  source: postgres\n  postgres: {{ url: \"postgres://bg:s3cret@db:notaport/x\" }}\n");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("tokens.postgres.url") && !e.contains("s3cret"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let with_file = format!("{MINIMAL}tokens:\n  source: postgres\n  postgres: {{ url: \"postgres://bg@db/x\", password_file: pw }}\n");
        let c = Config::parse(&with_file, "test.yaml", dir.path()).unwrap();
        let pg = c.tokens.postgres.unwrap();
        assert_eq!(pg.settings.get_password(), Some(&b"hunter2"[..]));
        let missing = with_file.replace("password_file: pw", "password_file: nope");
        let e = Config::parse(&missing, "test.yaml", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokens.postgres.password_file") && e.contains("nope"),
            "{e}"
        );
        let stray = format!("{MINIMAL}tokens:\n  postgres: {{ url: \"postgres://db/x\" }}\n");
        assert!(parse(&stray)
            .unwrap_err()
            .to_string()
            .contains("tokens.postgres"));
    }

    #[test]
    fn introspect_source_needs_a_url_and_one_token() {
        let tok = "bgt_000000000000000000000000000000000000";
        let ok = format!("{MINIMAL}tokens:\n  source: introspect\n  introspect: {{ url: \"http://cp:9901/v1/introspect\", token: \"0123456789abcdefXYZ\" }}\n");
        let c = parse(&ok).unwrap();
        let i = c.tokens.introspect.unwrap();
        assert_eq!(i.url.path(), "/v1/introspect");
        assert_eq!(i.stale_if_error, DEFAULT_STALE_IF_ERROR);
        assert!(
            !format!("{i:?}").contains("0123456789"),
            "Debug must not show the token"
        );
        let missing = format!("{MINIMAL}tokens:\n  source: introspect\n");
        let e = parse(&missing).unwrap_err().to_string();
        assert!(e.contains("tokens.introspect") && e.contains("url"), "{e}");
        let https = format!("{MINIMAL}tokens:\n  source: introspect\n  introspect: {{ url: \"https://cp/v1/introspect\", token: \"{tok}\" }}\n");
        assert!(parse(&https)
            .unwrap_err()
            .to_string()
            .contains("tokens.introspect.url"));
        let both = format!("{MINIMAL}tokens:\n  source: introspect\n  introspect: {{ url: \"http://cp/v1/introspect\", token: \"{tok}\", token_file: t }}\n");
        assert!(parse(&both)
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        let stray = format!("{MINIMAL}tokens:\n  introspect: {{ url: \"http://cp/v1/introspect\", token: \"{tok}\" }}\n");
        assert!(parse(&stray)
            .unwrap_err()
            .to_string()
            .contains("source: introspect"));
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix("/api/").as_deref(), Some("/api"));
        assert_eq!(normalize_prefix("/").as_deref(), Some("/"));
        assert_eq!(normalize_prefix("api"), None);
    }
}
