//! Raw configuration -> validated [`Config`], once, with errors that point at the exact key.
//!
//! The [`Resolver`] checks what serde cannot (ranges, uniqueness, header names, files that must be
//! readable) and fills omitted keys from [`super::defaults`]. Every error names the key as a path
//! (`forwarding.timeouts.connect`) and, where it can be found in the text, its line. The `tokens:`
//! and `deployments:` sections are resolved in `tokens.rs` and `deployments.rs`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use super::defaults::*;
use super::raw::{Dur, RawConfig, RawForwarding, RawLimits, RawListener, RawShutdown, RawThrottle};
use super::{
    is_hop_by_hop, AdminTls, CertificatePair, Config, ConfigError, ConsoleConfig, ForwardingConfig,
    IdentityHeaders, Limits, ListenerConfig, LogConfig, ShutdownConfig, ThrottleConfig,
};
use crate::yaml;

/// A file the raw shapes could not read, as a [`ConfigError`] naming the exact key and line.
pub(super) fn yaml_error(origin: &str, e: &yaml::Error) -> ConfigError {
    ConfigError::Invalid {
        path: origin.to_owned(),
        line: e.line(),
        key: e.path().unwrap_or("(document)").to_owned(),
        message: format!("{} (config.example.yaml documents every key)", e.message()),
    }
}

/// Turns raw structs into a [`Config`], locating semantic errors in the text.
pub(super) struct Resolver<'a> {
    /// The configuration text, to find lines in.
    pub(super) text: &'a str,
    /// Where the text came from, for messages.
    pub(super) origin: &'a str,
}

impl Resolver<'_> {
    pub(super) fn error(
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

    pub(super) fn resolve(&self, raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
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
        let drain_timeout_set = raw.limits.drain_timeout.is_some();
        let mut limits = self.limits(raw.limits)?;
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
        let shutdown = self.shutdown(&raw.shutdown, &limits, drain_timeout_set)?;
        limits.drain_timeout = shutdown.timeout;
        let probes = raw.admin.probes;
        if probes.is_some_and(|p| p == raw.admin.address && p.port() != 0) {
            return Err(self.error(
                "admin.probes",
                &["probes:"],
                "must differ from admin.address: the probe listener exists to keep the token API off the probe port; pick another port, e.g. 0.0.0.0:9902",
            ));
        }
        let admin_tls = match raw.admin.tls {
            None => None,
            Some(t) if t.certificates.is_empty() => {
                return Err(self.error(
                    "admin.tls.certificates",
                    &["certificates:"],
                    "a TLS admin listener needs at least one `{ cert: FILE, key: FILE }`",
                ))
            }
            Some(t) => Some(AdminTls {
                certificates: t
                    .certificates
                    .into_iter()
                    .map(|c| CertificatePair {
                        cert: base.join(c.cert),
                        key: base.join(c.key),
                    })
                    .collect(),
                client_ca: t.client_ca.map(|p| base.join(p)),
            }),
        };
        let c = &raw.admin.console;
        let console = ConsoleConfig {
            enabled: c.enabled.unwrap_or(true),
            session_idle: c
                .session_idle
                .as_ref()
                .map_or(DEFAULT_SESSION_IDLE, |d| d.0),
            session_lifetime: c
                .session_lifetime
                .as_ref()
                .map_or(DEFAULT_SESSION_LIFETIME, |d| d.0),
            pending_codes: c.pending_codes.unwrap_or(DEFAULT_PENDING_CODES),
            codes_per_minute: c.codes_per_minute.unwrap_or(DEFAULT_CODES_PER_MINUTE),
        };
        if console.session_idle.is_zero() || console.session_lifetime.is_zero() {
            return Err(self.error(
                "admin.console",
                &["console:"],
                "session_idle and session_lifetime must be longer than 0s, e.g. 30m and 12h",
            ));
        }
        Ok(Config {
            console,
            origin: self.origin.to_owned(),
            listeners,
            admin: raw.admin.address,
            admin_tls,
            probes,
            shutdown,
            tokens,
            forwarding,
            limits,
            deployments,
            log,
            worker_threads: raw.runtime.worker_threads,
            throttle: self.throttle(raw.throttle)?,
        })
    }

    /// `shutdown.delay` and `shutdown.timeout`; the older `limits.drain_timeout` still sets the
    /// timeout, but not together with `shutdown.timeout`.
    fn shutdown(
        &self,
        raw: &RawShutdown,
        limits: &Limits,
        drain_timeout_set: bool,
    ) -> Result<ShutdownConfig, ConfigError> {
        let timeout = match (raw.timeout, drain_timeout_set) {
            (Some(_), true) => {
                return Err(self.error(
                    "shutdown.timeout",
                    &["shutdown:", "timeout:"],
                    "limits.drain_timeout is the older name of the same setting; keep only shutdown.timeout",
                ))
            }
            (Some(t), false) => t.0,
            (None, _) => limits.drain_timeout,
        };
        Ok(ShutdownConfig {
            delay: raw.delay.map_or(DEFAULT_SHUTDOWN_DELAY, |d| d.0),
            timeout,
        })
    }

    fn throttle(&self, raw: RawThrottle) -> Result<ThrottleConfig, ConfigError> {
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .map(|t| {
                ip_range(t).ok_or_else(|| {
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

    /// A duration that must be longer than zero, or `default`.
    pub(super) fn positive(
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
}

/// Reads `a.b.c.d/n`, `x::y/n`, or a bare address as a single host (/32, /128): `ipnet` alone
/// needs the prefix. Space around the address is allowed, as it always was.
fn ip_range(text: &str) -> Option<IpNet> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().ok()?;
    match prefix {
        Some(prefix) => IpNet::new(addr, prefix).ok(),
        None => Some(IpNet::from(addr)),
    }
}

/// The 1-based line of the first `needles[last]` found after `needles[..last]` in order.
pub(super) fn find_line(text: &str, needles: &[&str]) -> Option<usize> {
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
    use std::path::Path;
    use std::str::FromStr;

    use super::super::test_support::{parse, MINIMAL};
    use super::super::{
        Config, ListenerConfig, Policy, DEFAULT_CACHE_TTL, DEFAULT_LISTENER,
        DEFAULT_MAX_HEADER_BYTES,
    };
    use std::net::SocketAddr;

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
    fn reserved_identity_header_is_refused() {
        let text =
            format!("{MINIMAL}forwarding:\n  identity_headers:\n    token_uid: authorization\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn shutdown_and_probes_are_read() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.shutdown.delay, super::DEFAULT_SHUTDOWN_DELAY);
        assert_eq!(c.shutdown.timeout, super::DEFAULT_DRAIN_TIMEOUT);
        assert_eq!(c.probes, None);
        let c = parse(&format!(
            "{MINIMAL}admin: {{address: 127.0.0.1:9901, probes: 0.0.0.0:9902}}\nshutdown: {{delay: 0s, timeout: 7s}}\n"
        ))
        .unwrap();
        assert_eq!(c.probes, Some(SocketAddr::from(([0, 0, 0, 0], 9902))));
        assert_eq!(c.shutdown.delay, std::time::Duration::ZERO);
        assert_eq!(c.limits.drain_timeout, std::time::Duration::from_secs(7));
        // The older key still sets the timeout, but not beside the new one.
        let c = parse(&format!("{MINIMAL}limits: {{drain_timeout: 9s}}\n")).unwrap();
        assert_eq!(c.shutdown.timeout, std::time::Duration::from_secs(9));
        let e = parse(&format!(
            "{MINIMAL}limits: {{drain_timeout: 9s}}\nshutdown:\n  timeout: 3s\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("test.yaml:7: shutdown.timeout: "), "{e}");
        let e = parse(&format!(
            "{MINIMAL}admin:\n  address: 0.0.0.0:9901\n  probes: 0.0.0.0:9901\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("test.yaml:7: admin.probes: must differ"),
            "{e}"
        );
    }

    #[test]
    fn trusted_proxies_are_ranges_or_bare_addresses() {
        let text = format!(
            "{MINIMAL}throttle:\n  trusted_proxies: [10.0.0.0/8, 127.0.0.1, \"::1\", \" 192.0.2.1 \"]\n"
        );
        let c = parse(&text).unwrap();
        let got: Vec<String> = c
            .throttle
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "192.0.2.1/32"]
        );
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "10.0.0.0/",
            "example.com",
            "10.0.0.0/8/8",
        ] {
            let text = format!("{MINIMAL}throttle:\n  trusted_proxies: [\"{bad}\"]\n");
            let e = parse(&text).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("test.yaml:6: throttle.trusted_proxies: `{bad}` is not an address or range; write 10.0.0.0/8 or 127.0.0.1"),
            );
        }
    }
}
