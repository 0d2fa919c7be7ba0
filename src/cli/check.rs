//! `bentogate check`: validates a configuration the way `serve` would, without serving.
//!
//! Reads the config and the token file (if the source is a file), loads every listener's
//! certificates and every outbound hop's CA and client certificate, and says what it found: a
//! summary line, then each hop's TLS state (a certificate expiring within 14 days is a
//! `warning:` line), then the listeners, routes and policies `serve` would run. Never contacts a database or a control plane, and never prints a secret (a
//! database URL is shown by its database name only).

use std::path::Path;

use std::fmt::Write;

use super::{load_config, CliError};
use crate::config::{Config, Policy};
use crate::store::TokenFile;

/// Checks the configuration at `path` (or the embedded default) and returns the summary line.
pub fn check(path: Option<&Path>) -> Result<String, CliError> {
    let config = load_config(path)?;
    let tokens = if let Some(pg) = &config.tokens.postgres {
        format!(
            "tokens in PostgreSQL database {:?} (not contacted by check)",
            pg.settings.get_dbname().unwrap_or_default()
        )
    } else if let Some(remote) = &config.tokens.introspect {
        format!("tokens from {}", remote.url)
    } else {
        let file = &config.tokens.file;
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let f = TokenFile::parse(&text, file)?;
                format!("{} tokens in {}", f.tokens.len(), file.display())
            }
            Err(_) => format!(
                "{} does not exist yet; serve creates it empty",
                file.display()
            ),
        }
    };
    for l in &config.listeners {
        if let Some(pairs) = &l.tls {
            crate::tls::SniResolver::load(pairs)
                .map_err(|e| CliError::Usage(format!("listener {}: {e}", l.address)))?;
        }
    }
    if let Some(t) = &config.admin_tls {
        crate::tls::SniResolver::load_with_client_ca(&t.certificates, t.client_ca.as_deref())
            .map_err(|e| CliError::Usage(format!("admin.tls: {e}")))?;
    }
    let hops = hops(&config)?;
    let mut out = format!(
        "{}: OK ({} deployments, {} listeners; {tokens})\n",
        config.origin,
        config.deployments.len(),
        config.listeners.len()
    );
    out.push_str(&hops);
    describe(&config, &mut out);
    Ok(out.trim_end().to_owned())
}

/// Each hop's TLS state, its files loaded as `serve` would; certificate expiries, with a
/// `warning:` line for one expiring within 14 days.
fn hops(config: &Config) -> Result<String, CliError> {
    use crate::config::SslMode;
    use crate::tls::client::{self, Verify};
    let now = crate::clock::now();
    let mut out = String::from("TLS on each hop:\n");
    let mut warnings = String::new();
    let mut certs = |out: &mut String, pairs: &[crate::config::CertificatePair]| {
        for p in pairs {
            let cert = p.cert.display();
            match crate::tls::expiry::file_not_after(&p.cert) {
                Some(at) => {
                    let when = crate::tls::expiry::describe(at, now);
                    let _ = writeln!(out, "    {cert}: {when}");
                    if at - now < crate::tls::expiry::WARN_BEFORE_SECS {
                        let _ = writeln!(warnings, "warning: {cert} {when}; renew it");
                    }
                }
                None => {
                    let _ = writeln!(out, "    {cert}: expiry unreadable");
                }
            }
        }
    };
    for l in &config.listeners {
        match &l.tls {
            Some(pairs) => {
                let _ = writeln!(out, "  proxy {}: TLS", l.address);
                certs(&mut out, pairs);
            }
            None => {
                let _ = writeln!(out, "  proxy {}: plain HTTP", l.address);
            }
        }
    }
    match &config.admin_tls {
        Some(t) => {
            let mtls = t.client_ca.as_ref().map_or(String::new(), |ca| {
                format!(", client certificates from {}", ca.display())
            });
            let _ = writeln!(
                out,
                "  admin {}: TLS{mtls}; console cookies Secure, __Host-",
                config.admin
            );
            certs(&mut out, &t.certificates);
        }
        None => {
            let _ = writeln!(
                out,
                "  admin {}: plain HTTP (token values and API tokens in clear: keep it on loopback or a private network, or set admin.tls)",
                config.admin
            );
        }
    }
    if let Some(pg) = &config.tokens.postgres {
        let t = &pg.tls;
        let verify = match (t.mode, &t.root) {
            (SslMode::VerifyFull, Some(ca)) => Some(Verify::Full(ca)),
            (SslMode::VerifyCa, Some(ca)) => Some(Verify::Chain(ca)),
            (SslMode::Require | SslMode::Prefer, _) => Some(Verify::Nothing),
            _ => None,
        };
        if let Some(v) = verify {
            client::config(v, t.identity.as_ref(), &[])
                .map_err(|e| CliError::Usage(format!("tokens.postgres.url: {e}")))?;
        }
        let state = match t.mode {
            SslMode::Disable => "plain (sslmode=disable)".to_owned(),
            SslMode::Prefer => {
                "TLS if the server offers it, certificate unchecked (sslmode=prefer, the default)"
                    .to_owned()
            }
            SslMode::Require => "TLS, certificate unchecked (sslmode=require)".to_owned(),
            SslMode::VerifyCa => format!(
                "TLS, chain checked against {} (sslmode=verify-ca)",
                t.root.as_ref().map_or("?".into(), ToString::to_string)
            ),
            SslMode::VerifyFull => format!(
                "TLS, chain and host name checked against {} (sslmode=verify-full)",
                t.root.as_ref().map_or("?".into(), ToString::to_string)
            ),
        };
        let client = if t.identity.is_some() {
            ", client certificate"
        } else {
            ""
        };
        let _ = writeln!(out, "  postgres: {state}{client}");
        if let Some(pair) = &t.identity {
            certs(&mut out, std::slice::from_ref(pair));
        }
    }
    if let Some(i) = &config.tokens.introspect {
        if i.url.scheme_str() == Some("https") {
            client::config(Verify::Full(&i.ca), i.identity.as_ref(), &[])
                .map_err(|e| CliError::Usage(format!("tokens.introspect: {e}")))?;
            let client = if i.identity.is_some() {
                ", client certificate"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  introspect {}: TLS, chain and host name checked against {}{client}",
                i.url, i.ca
            );
            if let Some(pair) = &i.identity {
                certs(&mut out, std::slice::from_ref(pair));
            }
        } else {
            let _ = writeln!(
                out,
                "  introspect {}: plain HTTP (this gateway's token in clear)",
                i.url
            );
        }
    }
    out.push_str(&warnings);
    Ok(out)
}

/// What `serve` would run: listeners with what each serves, routes with their policies.
fn describe(config: &Config, out: &mut String) {
    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let kind = if l.tls.is_some() { "TLS" } else { "plain" };
        let _ = writeln!(out, "  proxy   {} ({kind}, HTTP/1.1 and HTTP/2)", l.address);
    }
    let store = config.tokens.introspect.is_none();
    let console = if config.console.enabled && store {
        "web console, browser login, "
    } else {
        ""
    };
    let admin_serves = if config.probes.is_some() {
        format!("{console}token API, /v1/introspect")
    } else {
        format!("{console}token API, /v1/introspect, /healthz, /readyz, /metrics")
    };
    let _ = writeln!(out, "  admin   {} ({admin_serves})", config.admin);
    if let Some(p) = config.probes {
        let _ = writeln!(out, "  probes  {p} (/healthz, /readyz, /metrics)");
    }
    let _ = writeln!(out, "routes (matched by host, then longest path prefix):");
    for d in &config.deployments {
        let hosts = if d.hosts.is_empty() {
            "*".to_owned()
        } else {
            d.hosts.join(",")
        };
        let policy = match &d.policy {
            Policy::Public => "public".to_owned(),
            Policy::Protected => "protected".to_owned(),
            Policy::Monitoring => "monitoring".to_owned(),
            Policy::Developer(scopes) => format!("developer {scopes:?}"),
        };
        let _ = write!(
            out,
            "  {}  host {hosts}  prefix {}  -> {}://{}  policy {policy}",
            d.name, d.path_prefix, d.upstream.scheme, d.upstream.authority
        );
        if !d.public_paths.is_empty() {
            let _ = write!(out, "  public paths {}", d.public_paths.join(", "));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "shutdown: /readyz 503 and still accepting for {:?}, then up to {:?} to drain",
        config.shutdown.delay, config.shutdown.timeout
    );
}
