//! YAML configuration, read once into validated types.
//!
//! Two layers: raw serde structs that mirror the file ([`raw`]: `deny_unknown_fields`, so a typo is
//! an error, never a silently ignored key), converted once by [`resolve`] into [`Config`], whose
//! values are already parsed (addresses, durations, header names, upstream URLs). Errors name the
//! file, the line, the key and what to do ([`ConfigError`]). The YAML itself is read through
//! [`crate::yaml`], like every other YAML in bentogate.
//!
//! Files: this one holds the validated types and the entry points; `raw.rs` the serde shapes;
//! `resolve.rs` the raw -> validated conversion and error locating, with `tokens.rs` and
//! `deployments.rs` for its two largest sections; `defaults.rs` every `DEFAULT_*`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::HeaderName;
use serde::Deserialize;

use crate::token::Scopes;
use crate::yaml;

mod defaults;
mod deployments;
mod pg_tls;
mod raw;
mod resolve;
mod tokens;

pub use defaults::*;

/// The example configuration, embedded so `bentogate serve` runs with no file at all.
pub const EXAMPLE: &str = include_str!("../../config.example.yaml");
/// Name shown in errors about the embedded configuration.
pub const EXAMPLE_NAME: &str = "<embedded config.example.yaml>";

/// A configuration that could not be used: which file, which line, which key, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config {path}: {source}; check the path given to --config (or in BENTOGATE_CONFIG)")]
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

/// A validated configuration: everything parsed, nothing left to fail at request time.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub origin: String,
    /// Client-facing listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener: the token API, introspection and, unless `probes` is set, health,
    /// readiness and metrics.
    pub admin: SocketAddr,
    /// TLS on the admin listener (`admin.tls`); plain HTTP when absent.
    pub admin_tls: Option<AdminTls>,
    /// The probe listener (`admin.probes`): only `/healthz`, `/readyz` and `/metrics`, so a port
    /// opened to the kubelet and to Prometheus never exposes the token API.
    pub probes: Option<SocketAddr>,
    /// The web console (`admin.console`).
    pub console: ConsoleConfig,
    /// What SIGTERM does, in time (`shutdown`).
    pub shutdown: ShutdownConfig,
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

/// The web console on the admin listener (`admin.console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Serve the pages and the browser login (default true).
    pub enabled: bool,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_lifetime: Duration,
    /// Most browser-login codes waiting at once.
    pub pending_codes: usize,
    /// Browser-login codes one client address may ask for per minute.
    pub codes_per_minute: u32,
}

/// The graceful stop's two periods, so a pod leaves a Service without refusing a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// After SIGTERM, `/readyz` answers 503 at once but the listeners keep accepting this long,
    /// while endpoints and load balancers stop sending here.
    pub delay: Duration,
    /// Then the listeners close and in-flight requests get this long to finish.
    pub timeout: Duration,
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
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
    /// How often last-use times are flushed (file source: to `last_used_file`).
    pub usage_flush: Duration,
    /// Where the file source keeps last-use times (`<file>.last-used` by default, so a token
    /// file on a read-only Secret mount can point it at a writable volume); `None` when
    /// `tokens.last_used_file: off`.
    pub last_used_file: Option<PathBuf>,
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
    /// TLS to the server, from the connection string's `ssl*` keys (libpq's meaning).
    pub tls: PgTls,
}

/// The TLS settings of the PostgreSQL connection, read from the libpq connection string; every
/// connection (the pool, LISTEN, reconnects) uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct PgTls {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: the anchors for `verify-ca`/`verify-full`.
    pub root: Option<CaSource>,
    /// `sslcert` and `sslkey`: the client certificate, when the server asks for one.
    pub identity: Option<CertificatePair>,
}

/// libpq's `sslmode`, minus `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, unverified; plain text otherwise (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is not checked.
    Require,
    /// TLS; the chain must lead to `sslrootcert`; any name.
    VerifyCa,
    /// TLS; the chain must lead to `sslrootcert` and name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// As written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where a TLS client finds the certificates it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The platform's roots (rustls-native-certs).
    System,
    /// Only the certificates in this PEM file (a private CA).
    File(PathBuf),
}

impl std::fmt::Display for CaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaSource::System => f.write_str("system roots"),
            CaSource::File(p) => write!(f, "{}", p.display()),
        }
    }
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
    /// The endpoint, `http://` or `https://host:port/v1/introspect`.
    pub url: http::Uri,
    /// This gateway's own token (with `read_cluster`) for calling it, as read at start.
    pub token: std::sync::Arc<crate::token::Secret>,
    /// The file the token came from, re-read when it changes (a rotated Secret); none when the
    /// token is written in the configuration.
    pub token_file: Option<PathBuf>,
    /// For `https://`: the anchors the endpoint's certificate must chain to (`ca_file`, else
    /// the platform's roots). The host name is always checked.
    pub ca: CaSource,
    /// For `https://`: this gateway's client certificate, if the endpoint asks for one.
    pub identity: Option<CertificatePair>,
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

/// TLS on the admin listener (`admin.tls`): the token API, the console, /metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTls {
    /// Certificates chosen by SNI, the first the default, as on the data plane.
    pub certificates: Vec<CertificatePair>,
    /// When set, every client must present a certificate signed by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
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
    /// Time in-flight requests get after SIGTERM (the same as `shutdown.timeout`, kept for the
    /// older key `limits.drain_timeout`).
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

/// Who may pass a route (docs/design.md, Policies).
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
        // Tracked, so an error names its exact key (`forwarding.timeouts.connect`).
        let raw: raw::RawConfig =
            yaml::from_str_tracked(text).map_err(|e| resolve::yaml_error(origin, &e))?;
        resolve::Resolver { text, origin }.resolve(raw, base)
    }
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

/// What the unit tests of this module's files share.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::{Config, ConfigError};

    /// The smallest valid configuration: one protected deployment.
    pub(super) const MINIMAL: &str =
        "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n";

    /// Parses `text` as `test.yaml` in `/etc/bentogate`.
    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.yaml", Path::new("/etc/bentogate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid() {
        let c = Config::embedded().unwrap();
        assert!(!c.deployments.is_empty());
    }

    #[test]
    fn the_container_config_is_valid() {
        let text = include_str!("../../deploy/container.yaml");
        let c = Config::parse(text, "deploy/container.yaml", Path::new("/")).unwrap();
        assert_eq!(c.tokens.file, Path::new("/var/lib/bentogate/tokens.yaml"));
        // The token API stays on loopback; the port opened to the kubelet serves probes only.
        assert!(c.admin.ip().is_loopback(), "{}", c.admin);
        assert_eq!(c.probes.map(|p| p.port()), Some(9902));
        assert!(c.listeners[0].address.ip().is_unspecified());
    }
}
