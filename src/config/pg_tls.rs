//! The TLS parameters of a libpq connection string: `sslmode`, `sslrootcert`, `sslcert`,
//! `sslkey`, read with libpq's meaning and taken out of the string before tokio-postgres parses
//! the rest (it knows only `disable|prefer|require` and no file parameters).
//!
//! Must never quote the connection string in an error: it may hold a password.

use std::path::{Path, PathBuf};

use super::{CaSource, CertificatePair, PgTls, SslMode};

/// The TLS keys this module takes out of the connection string.
const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The string without the TLS keys, and their values as written.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Split {
    /// What tokio-postgres parses.
    pub(super) rest: String,
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
    pub(super) sslcert: Option<String>,
    pub(super) sslkey: Option<String>,
}

impl Split {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            "sslcert" => self.sslcert = Some(value),
            _ => self.sslkey = Some(value),
        }
    }
}

/// Takes the TLS keys out of a URL (`postgres://...?sslmode=...`) or key/value string
/// (`host=db sslmode=...`).
pub(super) fn split(url: &str) -> Split {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)
    } else {
        split_key_value(url)
    }
}

fn split_url(url: &str) -> Split {
    let Some((head, query)) = url.split_once('?') else {
        return Split {
            rest: url.to_owned(),
            ..Split::default()
        };
    };
    let mut out = Split::default();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if KEYS.contains(&key) {
            let value = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            out.set(key, value);
        } else {
            kept.push(pair);
        }
    }
    out.rest = if kept.is_empty() {
        head.to_owned()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    out
}

/// libpq's key/value form: `key = value` pairs separated by spaces; a value may be single
/// quoted, with `\'` and `\\` escapes.
fn split_key_value(text: &str) -> Split {
    let mut out = Split::default();
    let mut rest = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        chars.next_if(|(_, c)| *c == '=');
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        if KEYS.contains(&key.as_str()) {
            out.set(&key, value);
        } else {
            rest.push_str(&text[start..end]);
            rest.push(' ');
        }
    }
    out.rest = rest.trim_end().to_owned();
    out
}

/// libpq's meaning of the four keys; `Err` says what to write instead.
///
/// - `sslmode` defaults to `prefer`, as in libpq. `allow` is not offered (it tries plain text
///   first).
/// - `require` with a root certificate file checks the chain, as libpq does (like `verify-ca`).
/// - `verify-ca`/`verify-full` need anchors: `sslrootcert=FILE`, `sslrootcert=system`, or
///   libpq's default `~/.postgresql/root.crt` when it exists.
/// - `sslcert`/`sslkey` come together (no `~/.postgresql/postgresql.crt` default).
pub(super) fn resolve(split: &Split, base: &Path) -> Result<PgTls, String> {
    let mode = match split.sslmode.as_deref() {
        None | Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some("require") => SslMode::Require,
        Some("verify-ca") => SslMode::VerifyCa,
        Some("verify-full") => SslMode::VerifyFull,
        Some("allow") => return Err("sslmode=allow is not offered (it tries plain text first); use prefer, require, verify-ca or verify-full".into()),
        Some(_) => return Err("sslmode must be one of disable, prefer, require, verify-ca, verify-full (the default is prefer)".into()),
    };
    let root = match split.sslrootcert.as_deref() {
        Some("system") => Some(CaSource::System),
        Some("") => None,
        Some(path) => Some(CaSource::File(base.join(path))),
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
            .filter(|p| p.is_file())
            .map(CaSource::File),
    };
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root.is_none() {
        return Err(format!(
            "sslmode={} needs sslrootcert=FILE (the PEM CA that signed the server's certificate) or sslrootcert=system (the platform's roots)",
            mode.as_str()
        ));
    }
    if let Some(CaSource::File(path)) = &root {
        if !path.is_file() {
            return Err(format!(
                "sslrootcert: {} is not a readable file; give the PEM CA that signed the server's certificate",
                path.display()
            ));
        }
    }
    let identity = match (&split.sslcert, &split.sslkey) {
        (Some(cert), Some(key)) => Some(CertificatePair {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None) => None,
        _ => {
            return Err(
                "sslcert and sslkey come together: the client certificate and its private key"
                    .into(),
            )
        }
    };
    if mode == SslMode::Disable && identity.is_some() {
        return Err(
            "sslcert/sslkey are sent only over TLS; drop them or drop sslmode=disable".into(),
        );
    }
    // libpq: `require` with a root certificate verifies the chain, like verify-ca.
    let mode = match (mode, &root) {
        (SslMode::Require, Some(CaSource::File(_))) if split.sslrootcert.is_some() => {
            SslMode::VerifyCa
        }
        (m, _) => m,
    };
    Ok(PgTls {
        mode,
        root,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_keys_leave_a_url_and_the_rest_stays() {
        let s = split("postgres://u:p%40w@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fca.pem&connect_timeout=3");
        assert_eq!(
            s.rest,
            "postgres://u:p%40w@db:5432/x?application_name=a&connect_timeout=3"
        );
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/ca.pem"));
        let s = split("postgresql://db/x?sslmode=require");
        assert_eq!(
            (s.rest.as_str(), s.sslmode.as_deref()),
            ("postgresql://db/x", Some("require"))
        );
        assert_eq!(split("postgres://db/x").rest, "postgres://db/x");
    }

    #[test]
    fn the_tls_keys_leave_a_key_value_string() {
        let s = split(
            "host=db  sslmode = verify-ca password='it\\'s x' sslcert='/a b.crt' sslkey=k dbname=x",
        );
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslcert.as_deref(), Some("/a b.crt"));
        assert_eq!(s.sslkey.as_deref(), Some("k"));
        assert!(s.rest.starts_with("host=db "), "{}", s.rest);
        assert!(s.rest.ends_with("dbname=x"), "{}", s.rest);
        assert!(!s.rest.contains("ssl"), "{}", s.rest);
    }

    #[test]
    fn modes_mean_what_they_mean_in_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let with = |mode: &str, root: Option<&str>| Split {
            sslmode: Some(mode.into()),
            sslrootcert: root.map(str::to_owned),
            ..Split::default()
        };
        let none = Split::default();
        assert_eq!(resolve(&none, dir.path()).unwrap().mode, SslMode::Prefer);
        assert_eq!(
            resolve(&with("require", None), dir.path()).unwrap().mode,
            SslMode::Require
        );
        assert_eq!(
            resolve(&with("require", Some("ca.pem")), dir.path())
                .unwrap()
                .mode,
            SslMode::VerifyCa
        );
        let full = resolve(&with("verify-full", Some("ca.pem")), dir.path()).unwrap();
        assert_eq!(
            (full.mode, full.root),
            (SslMode::VerifyFull, Some(CaSource::File(ca)))
        );
        assert_eq!(
            resolve(&with("verify-full", Some("system")), dir.path())
                .unwrap()
                .root,
            Some(CaSource::System)
        );
        let e = resolve(&with("verify-full", Some("nope.pem")), dir.path()).unwrap_err();
        assert!(e.contains("sslrootcert") && e.contains("nope.pem"), "{e}");
        for bad in ["allow", "verify_full"] {
            assert!(resolve(&with(bad, None), dir.path())
                .unwrap_err()
                .contains("sslmode"));
        }
        let half = Split {
            sslcert: Some("c".into()),
            ..Split::default()
        };
        assert!(resolve(&half, dir.path()).unwrap_err().contains("sslkey"));
    }
}
