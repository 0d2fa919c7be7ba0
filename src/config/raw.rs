//! The serde shapes of the configuration file, mirroring it key for key.
//!
//! `deny_unknown_fields` everywhere, so a typo is an error, never a silently ignored key. Nothing
//! here is validated beyond what serde checks: [`super::resolve`] turns these into [`super::Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::defaults::DEFAULT_ADMIN;
use super::{LogFormat, UpstreamProtocol};
use crate::token::Scope;

/// Durations written as humantime strings (`250ms`, `30s`, `5m`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

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
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) listeners: Option<Vec<RawListener>>,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) tokens: RawTokens,
    #[serde(default)]
    pub(super) forwarding: RawForwarding,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) deployments: Vec<RawDeployment>,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) runtime: RawRuntime,
    #[serde(default)]
    pub(super) throttle: RawThrottle,
    #[serde(default)]
    pub(super) shutdown: RawShutdown,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    pub(super) delay: Option<Dur>,
    pub(super) timeout: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThrottle {
    pub(super) failures_per_minute: Option<u32>,
    pub(super) burst: Option<u32>,
    pub(super) max_clients: Option<u64>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) address: SocketAddr,
    #[serde(default)]
    pub(super) tls: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default = "default_admin")]
    pub(super) address: SocketAddr,
    #[serde(default)]
    pub(super) probes: Option<SocketAddr>,
    #[serde(default)]
    pub(super) tls: Option<RawAdminTls>,
    #[serde(default)]
    pub(super) console: RawConsole,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    pub(super) enabled: Option<bool>,
    pub(super) session_idle: Option<Dur>,
    pub(super) session_lifetime: Option<Dur>,
    pub(super) pending_codes: Option<usize>,
    pub(super) codes_per_minute: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdminTls {
    pub(super) certificates: Vec<RawCertificate>,
    #[serde(default)]
    pub(super) client_ca: Option<PathBuf>,
}

fn default_admin() -> SocketAddr {
    SocketAddr::from_str(DEFAULT_ADMIN).unwrap_or(([127, 0, 0, 1], 9901).into())
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            address: default_admin(),
            probes: None,
            tls: None,
            console: RawConsole::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokens {
    #[serde(default)]
    pub(super) source: RawSourceKind,
    #[serde(default)]
    pub(super) file: Option<PathBuf>,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) usage_flush: Option<Dur>,
    #[serde(default)]
    pub(super) last_used_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) introspect: Option<RawIntrospect>,
    #[serde(default)]
    pub(super) postgres: Option<RawPostgres>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) url_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) password_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) pool_size: Option<usize>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) stale_if_error: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIntrospect {
    pub(super) url: String,
    #[serde(default)]
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) token_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) client_cert: Option<RawCertificate>,
    #[serde(default)]
    pub(super) stale_if_error: Option<Dur>,
    #[serde(default)]
    pub(super) timeout: Option<Dur>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawSourceKind {
    #[default]
    File,
    Postgres,
    Introspect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) capacity: Option<u64>,
    pub(super) ttl: Option<Dur>,
    pub(super) negative_ttl: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForwarding {
    pub(super) strip_authorization: Option<bool>,
    pub(super) merge_slashes: Option<bool>,
    #[serde(default)]
    pub(super) identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pub(super) pool: RawPool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) max_idle_per_upstream: Option<usize>,
    pub(super) max_connections_per_upstream: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityHeaders {
    pub(super) token_uid: Option<String>,
    pub(super) token_name: Option<String>,
    pub(super) token_owner: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<Dur>,
    pub(super) response_headers: Option<Dur>,
    pub(super) idle: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_header_bytes: Option<usize>,
    pub(super) header_read_timeout: Option<Dur>,
    pub(super) keepalive_timeout: Option<Dur>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) drain_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeployment {
    pub(super) name: String,
    #[serde(default)]
    pub(super) hosts: Vec<String>,
    #[serde(default)]
    pub(super) path_prefix: Option<String>,
    pub(super) upstream: String,
    #[serde(default)]
    pub(super) upstream_protocol: UpstreamProtocol,
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) scopes: Vec<Scope>,
    #[serde(default)]
    pub(super) public_paths: Vec<String>,
    pub(super) websocket: Option<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawPolicy {
    Public,
    Protected,
    Monitoring,
    Developer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default)]
    pub(super) format: LogFormat,
    pub(super) level: Option<String>,
    pub(super) access: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    #[serde(default)]
    pub(super) worker_threads: usize,
}
