//! The `postgres` token source: one database shared by every gateway replica.
//!
//! Owns the schema and its migrations, lookups by digest for the data plane, transactional
//! writes for the control plane and the CLI, last-use batches, and revocation: every write that
//! removes or changes a token sends `NOTIFY bentogate_tokens` with the affected digests in the
//! same transaction, and every replica `LISTEN`s on a connection of its own and evicts them from
//! its cache as soon as the commit is delivered.
//!
//! Faults: the listening connection is the replica's view of the database. While it is down the
//! source reports itself unreachable (the validator then serves cached tokens and fails closed
//! for the rest, /readyz answers 503), it reconnects with backoff, and once it listens again it
//! drops every cached entry, since notifications sent meanwhile were lost. Every database call
//! runs under a deadline, so no request waits on a dead database.
//!
//! Control-plane operations work at the grain of one record ([`crate::store::TokenStore`]): each
//! is one or a few indexed statements in one transaction, so they cost the same with a million
//! tokens as with a thousand. Member changes and imports serialize on an advisory lock; a personal
//! token's insert locks its owner's member row, so it and the owner's removal never interleave.
//!
//! # Layout
//!
//! ```text
//! mod.rs      PgSource, its errors and eviction types, accessors of plain fields
//! pool.rs     connecting, the pool, deadlines, reachability and how the database is named
//! schema.rs   the migrations, schema versions and the migration lock
//! queries.rs  lookups by digest, last-use flushes, how rows read back
//! records.rs  the per-record operations (TokenStore): get, insert, delete, edit, pages,
//!             members, imports, the export, each in one transaction with its NOTIFY
//! page.rs     the SQL of one page of the listing and of its total
//! notify.rs   LISTEN/NOTIFY: the subscription, reconnects with backoff, evictions, payloads
//! tls.rs      TLS for every connection (rustls), from the connection string's ssl* keys
//! ```
//!
//! Only `notify` acts on a notification; only `records` writes members and tokens and sends NOTIFY.

mod console;
mod notify;
mod page;
mod pool;
mod queries;
mod records;
mod schema;
mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::StoreError;
use crate::config::PostgresConfig;
use crate::metrics::Metrics;
use crate::token::Digest;

pub use notify::{parse_payload, payloads, Session};

/// The channel every replica listens on.
pub const CHANNEL: &str = "bentogate_tokens";

/// Why a database call failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No connection could be had or kept, or the server refused a statement.
    #[error("database: {0}")]
    Database(String),
    /// The call did not finish within `tokens.postgres.timeout`.
    #[error("database: no answer within {0:?}")]
    Timeout(Duration),
    /// A stored record does not read back as a token.
    #[error("database: token {uid}: {message}")]
    Corrupt {
        /// The record's uid.
        uid: String,
        /// What is wrong.
        message: String,
    },
    /// The database's schema is newer than this build knows.
    #[error("database schema version {found} is newer than this bentogate knows ({known}); upgrade bentogate before pointing it at this database")]
    TooNew {
        /// Version in the database.
        found: i32,
        /// Newest version this build has.
        known: usize,
    },
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        // `Display` of a server error is only its severity; the detail is in the source.
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| {
                let mut s = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    s = format!("{s}: {c}");
                    cause = c.source();
                }
                s
            });
        PgError::Database(detail)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => PgError::Database(other.to_string()),
        }
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// What a notification asks a replica to drop.
#[derive(Debug, PartialEq, Eq)]
pub enum Eviction {
    /// These tokens changed or died.
    Tokens(Vec<Digest>),
    /// Everything (a change too large to name).
    All,
}

/// Drops evicted tokens from a replica's cache; installed by the validator's owner.
pub type Evictor = Box<dyn Fn(&Eviction) + Send + Sync>;

/// The shared database as a token source and store.
pub struct PgSource {
    config: PostgresConfig,
    pool: Pool,
    /// Bumped when the whole cache must be dropped; cached entries record the one they saw.
    generation: AtomicU64,
    /// True while the listening connection is up (or, before it first connects, since the
    /// migrations reached the database).
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
    evictor: OnceLock<Evictor>,
    /// Last-use times already written, so a flush sends only newer ones.
    flushed: Mutex<HashMap<String, i64>>,
    metrics: Arc<Metrics>,
}

impl PgSource {
    /// Installs what drops evicted tokens from this replica's cache (once).
    pub fn set_evictor(&self, evictor: Evictor) {
        let _ = self.evictor.set(evictor);
    }

    /// Changes when the whole cache must be dropped.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How long cached positives keep passing while the database is unreachable.
    pub fn stale_if_error(&self) -> Duration {
        self.config.stale_if_error
    }
}
