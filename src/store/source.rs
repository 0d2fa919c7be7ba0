//! The one seam between bentogate and where tokens live: the [`TokenSource`] trait, its three
//! implementations, and [`open`], the one place a configuration picks a source.
//!
//! The validator, the server, the admin listener and the CLI see only the trait: a fourth source
//! is one more `impl TokenSource` and one more arm in [`open`]. What a source must never do: block
//! a request thread (lookups that wait are async; file parsing runs on the blocking pool), or
//! report itself reachable while it could miss a revocation.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::introspect::IntrospectSource;
use super::postgres::{PgError, PgSource, Session};
use super::records::TokenStore;
use super::{FileSource, StoreError};
use crate::clock::UnixSeconds;
use crate::config::TokensConfig;
use crate::metrics::Metrics;
use crate::token::{Digest, Token};

pub use super::postgres::{Eviction, Evictor};

/// How often a gateway on the `introspect` source checks that its control plane answers.
pub const INTROSPECT_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The remote source could not answer (it counts and logs the failure itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("token source unavailable")]
pub struct Unavailable;

/// A lookup that may wait on the network.
pub type Lookup<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Arc<Token>>, Unavailable>> + Send + 'a>>;

/// A unit of background work, boxed so sources can differ.
pub type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The tokens the data plane let through, with their last use (what a shared source writes).
pub type UsedTokens = Arc<dyn Fn() -> Vec<(String, UnixSeconds)> + Send + Sync>;

/// What `/readyz` says about the source.
pub struct Readiness {
    /// False when unknown tokens fail closed or revocations could be missed: the load balancer
    /// should send new callers elsewhere.
    pub ready: bool,
    /// Degraded but serving (a rejected token file: the last good set stays).
    pub degraded: bool,
    /// The source's own report, shown as `token_source`.
    pub detail: Value,
}

/// Where the validator looks on a cache miss, and everything the server runs for it.
pub trait TokenSource: Send + Sync {
    /// `file`, `postgres` or `introspect`: for readiness and messages.
    fn kind(&self) -> &'static str;

    /// Cache generation: entries read under an older one are misses (a reload, a reconnect).
    fn generation(&self) -> u64;

    /// True when every token is held in memory: misses are answered inline by
    /// [`TokenSource::lookup_now`], without a future.
    fn in_memory(&self) -> bool {
        false
    }

    /// For a source held in memory, the answer now (no I/O); `None` when the source must be
    /// asked with [`TokenSource::lookup`].
    fn lookup_now(&self, _digest: &Digest) -> Option<Option<Arc<Token>>> {
        None
    }

    /// Asks the source; `value` is the presented token (introspection forwards it).
    fn lookup<'a>(&'a self, value: &'a [u8], digest: Digest) -> Lookup<'a>;

    /// How long cached positives keep passing while the source is unreachable.
    fn stale_if_error(&self) -> Duration {
        Duration::ZERO
    }

    /// False while the source is known to be away (the last call, probe or listening
    /// connection failed): misses then fail closed at once instead of waiting for a timeout.
    fn is_reachable(&self) -> bool {
        true
    }

    /// The `/readyz` report.
    fn readiness(&self) -> Readiness;

    /// Starts the source's background work (watching, probing, listening, flushing last
    /// uses every `flush_every`), each task ending when `stop` changes.
    fn start(
        self: Arc<Self>,
        used: UsedTokens,
        flush_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>>;

    /// Writes the last uses once more, after draining (no request can record one any more).
    fn flush_usage(self: Arc<Self>, used: UsedTokens) -> Work;

    /// Installs the cache's eviction hook, for sources that announce revocations.
    fn on_evict(&self, _evictor: Evictor) {}

    /// The records the control plane changes, if this gateway holds them (not on the
    /// `introspect` source: its tokens are managed on its control plane).
    fn store(self: Arc<Self>) -> Option<Arc<dyn TokenStore>> {
        None
    }

    /// Picks up changes others made before a control-plane request is judged (the file).
    fn refresh(&self) {}

    /// Where the tokens are, for `check` and the start-up line (never a secret).
    fn describe(&self) -> String;
}

/// Why no source could be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The token file could not be loaded.
    #[error("token file: {0}")]
    File(#[from] StoreError),
    /// The token database could not be reached or migrated.
    #[error("token database: {0}; check tokens.postgres.url and that the server is up")]
    Database(#[from] PgError),
    /// The introspection endpoint's CA or client certificate could not be loaded.
    #[error("tokens.introspect: {0}")]
    Introspect(#[from] crate::tls::TlsError),
}

/// The one place a configuration picks its token source. A database source is listening for
/// revocations before this returns, so nothing is ever cached that a revocation could miss.
pub async fn open(
    config: &TokensConfig,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn TokenSource>, OpenError> {
    if let Some(remote) = &config.introspect {
        return Ok(Arc::new(IntrospectSource::new(
            remote.clone(),
            Arc::clone(metrics),
        )?));
    }
    if let Some(pg) = &config.postgres {
        let db = Arc::new(PgSource::connect(pg.clone(), Arc::clone(metrics)).await?);
        let session = db.subscribe().await?;
        return Ok(Arc::new(Database {
            db,
            session: Mutex::new(Some(session)),
        }));
    }
    Ok(Arc::new(FileSource::open_with(
        &config.file,
        config.last_used_file.clone(),
        Arc::clone(metrics),
    )?))
}

/// The records the local CLI changes for a configuration, picked here like [`open`] picks the
/// data plane's source: the token file (read once, not watched), or the database (connected
/// and migrated, not listening). A configuration on the `introspect` source has none: its
/// tokens are managed on its control plane.
pub async fn open_store(
    config: &TokensConfig,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<dyn TokenStore>>, OpenError> {
    if config.introspect.is_some() {
        return Ok(None);
    }
    if let Some(pg) = &config.postgres {
        let db = PgSource::connect(pg.clone(), Arc::clone(metrics)).await?;
        return Ok(Some(Arc::new(db)));
    }
    Ok(Some(Arc::new(FileSource::open_with(
        &config.file,
        config.last_used_file.clone(),
        Arc::clone(metrics),
    )?)))
}

impl TokenSource for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn generation(&self) -> u64 {
        FileSource::generation(self)
    }

    fn in_memory(&self) -> bool {
        true
    }

    #[inline]
    fn lookup_now(&self, digest: &Digest) -> Option<Option<Arc<Token>>> {
        Some(FileSource::lookup(self, digest))
    }

    fn lookup<'a>(&'a self, _value: &'a [u8], digest: Digest) -> Lookup<'a> {
        Box::pin(async move { Ok(FileSource::lookup(self, &digest)) })
    }

    fn readiness(&self) -> Readiness {
        let last_error = self.last_error();
        Readiness {
            ready: true,
            degraded: last_error.is_some(),
            detail: json!({
                "kind": "file",
                "path": self.path().display().to_string(),
                "tokens": self.token_count(),
                "last_error": last_error,
            }),
        }
    }

    fn start(
        self: Arc<Self>,
        _used: UsedTokens,
        flush_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(Arc::clone(&self).watch(stop.clone())),
            tokio::spawn(self.flush_usage_every(flush_every, stop)),
        ]
    }

    fn flush_usage(self: Arc<Self>, _used: UsedTokens) -> Work {
        Box::pin(self.flush_usage_logged())
    }

    fn store(self: Arc<Self>) -> Option<Arc<dyn TokenStore>> {
        Some(self)
    }

    fn refresh(&self) {
        self.reload_if_changed();
    }

    fn describe(&self) -> String {
        format!("tokens in {}", self.path().display())
    }
}

impl TokenSource for IntrospectSource {
    fn kind(&self) -> &'static str {
        "introspect"
    }

    fn generation(&self) -> u64 {
        0
    }

    fn lookup<'a>(&'a self, value: &'a [u8], digest: Digest) -> Lookup<'a> {
        Box::pin(async move {
            IntrospectSource::lookup(self, value, digest)
                .await
                .map_err(|_| Unavailable)
        })
    }

    fn stale_if_error(&self) -> Duration {
        IntrospectSource::stale_if_error(self)
    }

    fn is_reachable(&self) -> bool {
        IntrospectSource::is_reachable(self)
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.is_reachable(),
            degraded: false,
            detail: json!({
                "kind": "introspect",
                "url": self.url().to_string(),
                "last_error": self.last_error(),
            }),
        }
    }

    fn start(
        self: Arc<Self>,
        _used: UsedTokens,
        _flush_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(Arc::clone(&self).watch_token_file(stop.clone())),
            tokio::spawn(self.probe_every(INTROSPECT_PROBE_INTERVAL, stop)),
        ]
    }

    fn flush_usage(self: Arc<Self>, _used: UsedTokens) -> Work {
        // The control plane records a use each time it is asked about a token.
        Box::pin(async {})
    }

    fn describe(&self) -> String {
        format!("tokens from {}", self.url())
    }
}

/// The shared database, with the listening connection opened by [`open`] until the server
/// starts listening on it.
struct Database {
    db: Arc<PgSource>,
    session: Mutex<Option<Session>>,
}

impl TokenSource for Database {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn generation(&self) -> u64 {
        self.db.generation()
    }

    fn lookup<'a>(&'a self, _value: &'a [u8], digest: Digest) -> Lookup<'a> {
        Box::pin(async move { self.db.lookup(&digest).await.map_err(|_| Unavailable) })
    }

    fn stale_if_error(&self) -> Duration {
        self.db.stale_if_error()
    }

    fn is_reachable(&self) -> bool {
        self.db.is_reachable()
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.db.is_reachable(),
            degraded: false,
            detail: json!({
                "kind": "postgres",
                "database": self.db.describe(),
                "last_error": self.db.last_error(),
            }),
        }
    }

    fn start(
        self: Arc<Self>,
        used: UsedTokens,
        flush_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let first = self.session.lock().ok().and_then(|mut s| s.take());
        let db = Arc::clone(&self.db);
        vec![
            tokio::spawn(Arc::clone(&self.db).listen(first, stop.clone())),
            tokio::spawn(crate::periodic::after_every(flush_every, stop, move || {
                flush_database_usage(Arc::clone(&db), Arc::clone(&used))
            })),
        ]
    }

    fn flush_usage(self: Arc<Self>, used: UsedTokens) -> Work {
        Box::pin(flush_database_usage(Arc::clone(&self.db), used))
    }

    fn on_evict(&self, evictor: Evictor) {
        self.db.set_evictor(evictor);
    }

    fn store(self: Arc<Self>) -> Option<Arc<dyn TokenStore>> {
        Some(Arc::clone(&self.db) as Arc<dyn TokenStore>)
    }

    fn describe(&self) -> String {
        format!("tokens in PostgreSQL {}", self.db.describe())
    }
}

/// Writes the last uses the data plane saw to the database in one statement.
async fn flush_database_usage(db: Arc<PgSource>, used: UsedTokens) {
    match db.flush_usage(used()).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(tokens = n, "last-use times written"),
        Err(e) => tracing::warn!(error = %e, "could not write last-use times; will retry"),
    }
}
