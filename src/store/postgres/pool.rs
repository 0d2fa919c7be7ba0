//! Connecting to the database: the deadpool pool, deadlines on every call, and the replica's
//! view of whether the database is reachable.
//!
//! Must never run a query of its own beyond connecting: what is read and written lives in
//! `queries`, the schema in `schema`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{PgError, PgSource};
use crate::config::PostgresConfig;
use crate::metrics::Metrics;

impl PgSource {
    /// Connects, creates or migrates the schema, and returns the source. Fails when the
    /// database cannot be reached within the timeout: a replica that cannot see its store at
    /// start has nothing to serve.
    pub async fn connect(
        config: PostgresConfig,
        metrics: Arc<Metrics>,
    ) -> Result<PgSource, PgError> {
        let mut settings = config.settings.clone();
        settings.connect_timeout(config.timeout);
        if settings.get_application_name().is_none() {
            settings.application_name("bentogate");
        }
        let tls = super::tls::MakeRustls::new(&config.tls)
            .map_err(|e| PgError::Database(format!("tokens.postgres.url TLS settings: {e}")))?;
        let manager = Manager::from_config(
            settings,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.timeout))
            .create_timeout(Some(config.timeout))
            .recycle_timeout(Some(config.timeout))
            .build()
            .map_err(|e| PgError::Database(e.to_string()))?;
        let source = PgSource {
            config,
            pool,
            generation: AtomicU64::new(1),
            reachable: AtomicBool::new(true),
            last_error: Mutex::new(None),
            evictor: OnceLock::new(),
            flushed: Mutex::new(HashMap::new()),
            metrics,
        };
        source
            .migrate()
            .await
            .map_err(|e| hint(e, source.config.tls.mode))?;
        Ok(source)
    }

    /// Runs `call` under the configured deadline.
    pub(super) async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or(Err(PgError::Timeout(self.config.timeout)))
    }

    /// False while the listening connection is down: revocations could be missed, so unknown
    /// tokens fail closed and /readyz answers 503.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// Why the database is unreachable, while it is.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The database as operators know it (host and name; never the password).
    pub fn describe(&self) -> String {
        let s = &self.config.settings;
        let host = s
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        format!("{host}/{}", s.get_dbname().unwrap_or(""))
    }

    pub(super) fn set_reachable(&self, up: bool, error: Option<String>) {
        if self.reachable.swap(up, Ordering::AcqRel) != up {
            self.metrics.token_source_up.set(i64::from(up));
            match &error {
                Some(e) => {
                    tracing::error!(database = %self.describe(), error = %e, "token database unreachable: cached tokens keep passing, unknown ones are refused; reconnecting")
                }
                None => {
                    tracing::info!(database = %self.describe(), "token database reachable again; listening for revocations")
                }
            }
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// Adds what to set when a server that takes TCP connections only over TLS refused a plain one
/// (its pg_hba.conf has `hostssl` lines only): libpq users know the message, not the key.
fn hint(e: PgError, mode: crate::config::SslMode) -> PgError {
    match e {
        PgError::Database(m) if mode == crate::config::SslMode::Disable && m.contains("no encryption") => {
            PgError::Database(format!(
                "{m} (the server accepts only TLS: set sslmode=require, or verify-full with sslrootcert, in tokens.postgres.url)"
            ))
        }
        other => other,
    }
}
