//! `bentogate check`: validates a configuration the way `serve` would, without serving.
//!
//! Reads the config and the token file (if the source is a file), loads every listener's
//! certificates, and says what it found: a summary line, then the listeners, routes and policies
//! `serve` would run. Never contacts a database or a control plane, and never prints a secret (a
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
    let mut out = format!(
        "{}: OK ({} deployments, {} listeners; {tokens})\n",
        config.origin,
        config.deployments.len(),
        config.listeners.len()
    );
    describe(&config, &mut out);
    Ok(out.trim_end().to_owned())
}

/// What `serve` would run: listeners with what each serves, routes with their policies.
fn describe(config: &Config, out: &mut String) {
    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let kind = if l.tls.is_some() { "TLS" } else { "plain" };
        let _ = writeln!(out, "  proxy   {} ({kind}, HTTP/1.1 and HTTP/2)", l.address);
    }
    let admin_serves = if config.probes.is_some() {
        "token API, /v1/introspect"
    } else {
        "token API, /v1/introspect, /healthz, /readyz, /metrics"
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
