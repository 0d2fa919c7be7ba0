//! The `tokens:` section: which source tokens come from and how lookups are cached.
//!
//! Part of the [`Resolver`]: checks that exactly the chosen source has its settings, that a
//! PostgreSQL URL parses (never quoting it: it may hold a password) and that an introspection
//! token is a token.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::defaults::*;
use super::raw::{RawIntrospect, RawPostgres, RawSourceKind, RawTokens};
use super::resolve::Resolver;
use super::{
    pg_tls, CaSource, CertificatePair, ConfigError, IntrospectConfig, PostgresConfig, SslMode,
    TokensConfig,
};

impl Resolver<'_> {
    pub(super) fn tokens(&self, raw: RawTokens, base: &Path) -> Result<TokensConfig, ConfigError> {
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
        let last_used_file = match raw.last_used_file {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) if p.as_os_str().is_empty() => {
                return Err(self.error(
                    "tokens.last_used_file",
                    &["last_used_file:"],
                    "give a writable path, or `off` to keep last-use times in memory only",
                ))
            }
            Some(p) => Some(base.join(p)),
            None => Some(default_last_used_file(&file)),
        };
        Ok(TokensConfig {
            file,
            cache_capacity,
            cache_ttl,
            negative_ttl,
            usage_flush,
            last_used_file,
            introspect,
            postgres,
        })
    }

    fn postgres(&self, raw: RawPostgres, base: &Path) -> Result<PostgresConfig, ConfigError> {
        // The URL in the file, or in a file of its own (a mounted Kubernetes Secret), never both.
        let url = match (raw.url, raw.url_file) {
            (Some(url), None) => url,
            (None, Some(path)) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.error(
                        "tokens.postgres.url_file",
                        &["url_file:"],
                        format!("cannot read {}: {e}; mount the Secret holding the connection URL there", path.display()),
                    )
                })?;
                text.trim().to_owned()
            }
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "tokens.postgres.url_file",
                    &["url_file:"],
                    "give the connection URL once: either url or url_file, not both",
                ))
            }
            (None, None) => {
                return Err(self.error(
                    "tokens.postgres.url",
                    &["postgres:"],
                    "missing: write url: postgres://bentogate@db:5432/bentogate, or url_file: a file holding it",
                ))
            }
        };
        // The TLS keys are read here with libpq's meaning; tokio-postgres parses the rest.
        let split = pg_tls::split(&url);
        let tls = pg_tls::resolve(&split, base).map_err(|message| {
            self.error(
                "tokens.postgres.url",
                &["url:", "url_file:"],
                // Never the URL itself: it may hold a password.
                message,
            )
        })?;
        let mut settings = tokio_postgres::Config::from_str(&split.rest).map_err(|e| {
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
        settings.ssl_mode(match tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
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
            url,
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
            tls,
        })
    }

    fn introspect(&self, raw: RawIntrospect, base: &Path) -> Result<IntrospectConfig, ConfigError> {
        let url = http::Uri::from_str(&raw.url)
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            })
            .ok_or_else(|| {
                self.error(
                    "tokens.introspect.url",
                    &["url:"],
                    format!("`{}` is not an http:// or https:// URL with a host; write it like https://control-plane:9901/v1/introspect", raw.url),
                )
            })?;
        let https = url.scheme_str() == Some("https");
        if !https && (raw.ca_file.is_some() || raw.client_cert.is_some()) {
            return Err(self.error(
                "tokens.introspect.ca_file",
                &["ca_file:", "client_cert:"],
                "ca_file and client_cert are used only with an https:// url; write the url with https://",
            ));
        }
        let ca = match raw.ca_file {
            Some(p) => CaSource::File(base.join(p)),
            None => CaSource::System,
        };
        let identity = raw.client_cert.map(|c| CertificatePair {
            cert: base.join(c.cert),
            key: base.join(c.key),
        });
        let mut token_file = None;
        let token = match (raw.token, raw.token_file) {
            (Some(t), None) => t,
            (None, Some(path)) => {
                let path = base.join(path);
                let token = std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        self.error(
                            "tokens.introspect.token_file",
                            &["token_file:"],
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                token_file = Some(path);
                token
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
            token_file,
            ca,
            identity,
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{parse, MINIMAL};
    use super::super::{Config, DEFAULT_STALE_IF_ERROR};

    #[test]
    fn last_uses_go_beside_the_token_file_or_where_configured_or_nowhere() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.tokens.last_used_file.as_deref(),
            Some(std::path::Path::new("/etc/bentogate/tokens.yaml.last-used"))
        );
        let elsewhere = format!("{MINIMAL}tokens:\n  last_used_file: state/used.json\n");
        assert_eq!(
            parse(&elsewhere).unwrap().tokens.last_used_file.as_deref(),
            Some(std::path::Path::new("/etc/bentogate/state/used.json"))
        );
        let off = format!("{MINIMAL}tokens:\n  last_used_file: off\n");
        assert_eq!(parse(&off).unwrap().tokens.last_used_file, None);
        let empty = format!("{MINIMAL}tokens:\n  last_used_file: \"\"\n");
        let e = parse(&empty).unwrap_err().to_string();
        assert!(
            e.contains("tokens.last_used_file") && e.contains("`off`"),
            "{e}"
        );
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
        // The URL from a file of its own (a mounted Secret), trimmed; not beside `url`.
        std::fs::write(
            dir.path().join("pg-url"),
            "postgres://bg:s3cret@db:5432/tokens\n",
        )
        .unwrap();
        let from_file =
            format!("{MINIMAL}tokens:\n  source: postgres\n  postgres: {{ url_file: pg-url }}\n");
        let c = Config::parse(&from_file, "test.yaml", dir.path()).unwrap();
        assert_eq!(
            c.tokens.postgres.unwrap().settings.get_dbname(),
            Some("tokens")
        );
        let both = from_file.replace(
            "url_file: pg-url",
            "url_file: pg-url, url: \"postgres://db/x\"",
        );
        let e = Config::parse(&both, "test.yaml", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokens.postgres.url_file: give the connection URL once"),
            "{e}"
        );
        let neither = from_file.replace("url_file: pg-url", "pool_size: 2");
        let e = Config::parse(&neither, "test.yaml", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokens.postgres.url: missing"), "{e}");
        let absent = from_file.replace("url_file: pg-url", "url_file: nope");
        let e = Config::parse(&absent, "test.yaml", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokens.postgres.url_file: cannot read") && !e.contains("s3cret"),
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
        let https = format!("{MINIMAL}tokens:\n  source: introspect\n  introspect: {{ url: \"https://cp/v1/introspect\", token: \"0123456789abcdefXYZ\", ca_file: /ca.pem }}\n");
        let i = parse(&https).unwrap().tokens.introspect.unwrap();
        assert_eq!(i.ca, super::super::CaSource::File("/ca.pem".into()));
        let plain_with_ca = https.replace("https://", "http://");
        assert!(parse(&plain_with_ca)
            .unwrap_err()
            .to_string()
            .contains("tokens.introspect.ca_file"));
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
}
