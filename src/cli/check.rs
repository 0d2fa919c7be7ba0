//! `bentogate check`: validates a configuration the way `serve` would, without serving.
//!
//! Reads the config and the token file (if the source is a file), loads every listener's
//! certificates, and says what it found in one line. Never contacts a database or a control
//! plane, and never prints a secret (a database URL is shown by its database name only).

use std::path::Path;

use super::{load_config, CliError};
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
    Ok(format!(
        "{}: OK ({} deployments, {} listeners; {tokens})",
        config.origin,
        config.deployments.len(),
        config.listeners.len()
    ))
}
