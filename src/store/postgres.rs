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
//! Writes reuse the file store's model: the whole organization is read inside a transaction that
//! holds an advisory lock, changed by the same closures the file store runs, and the difference
//! is written back. Control-plane writes therefore cost one read of every record, as they do for
//! the file store.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::format::{Member, Organization, Role, TokenFile};
use super::StoreError;
use crate::config::PostgresConfig;
use crate::metrics::Metrics;
use crate::token::{Digest, OwnerKind, Token};

/// The channel every replica listens on.
pub const CHANNEL: &str = "bentogate_tokens";

/// Payload that asks every replica to drop its whole cache.
const FLUSH_ALL: &str = "*";

/// Advisory lock key for migrations ("bentogat" in ASCII): several replicas may start at once.
const MIGRATION_LOCK: i64 = 0x6265_6e74_6f67_6174;

/// Advisory lock key serializing control-plane writes, so none loses another's change.
const WRITE_LOCK: i64 = 0x6265_6e74_6f67_7772;

/// Digests per NOTIFY payload (65 bytes each; PostgreSQL caps a payload below 8,000 bytes).
const DIGESTS_PER_NOTIFY: usize = 100;

/// Beyond this many changed tokens one write asks for a whole-cache flush instead.
const MAX_NAMED_EVICTIONS: usize = 2_000;

/// Whole-organization reads and writes get this many lookup timeouts (30 s by default): they
/// touch every record, yet must not hang on a dead database either.
const WRITE_DEADLINE_FACTOR: u32 = 15;

/// How often the listening connection proves it is alive when no notification comes.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The schema, one entry per version; applied in order, each once, under [`MIGRATION_LOCK`].
const MIGRATIONS: &[&str] = &[
    // 1: organization, members, tokens. A token's full record is kept as JSON (the token file's
    // own shape); the columns are what lookups, revocation and last-use batches need.
    "CREATE TABLE bentogate_organization (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        name text NOT NULL
     );
     CREATE TABLE bentogate_members (
        name text PRIMARY KEY,
        email text,
        role text NOT NULL CHECK (role IN ('member', 'admin')),
        active boolean NOT NULL DEFAULT true
     );
     CREATE TABLE bentogate_tokens (
        uid text PRIMARY KEY,
        digest bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
        owner text,
        expired_at bigint,
        last_used_at bigint,
        record jsonb NOT NULL
     );
     CREATE INDEX bentogate_tokens_owner ON bentogate_tokens (owner) WHERE owner IS NOT NULL;",
];

const LOOKUP: &str = "SELECT t.record::text, t.last_used_at FROM bentogate_tokens t
     WHERE t.digest = $1
       AND (t.owner IS NULL OR EXISTS
            (SELECT 1 FROM bentogate_members m WHERE m.name = t.owner AND m.active))";

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
        let manager = Manager::from_config(
            settings,
            NoTls,
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
        source.migrate().await?;
        Ok(source)
    }

    /// Brings the schema to the newest version. Idempotent; replicas starting together queue
    /// on an advisory lock and all but the first find nothing to do.
    async fn migrate(&self) -> Result<(), PgError> {
        self.deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS bentogate_schema (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
            let found: i32 = tx
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM bentogate_schema",
                    &[],
                )
                .await?
                .get(0);
            let known = MIGRATIONS.len();
            let start = usize::try_from(found).unwrap_or(0);
            if start > known {
                return Err(PgError::TooNew { found, known });
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
                tx.batch_execute(sql).await?;
                let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
                tx.execute(
                    "INSERT INTO bentogate_schema (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                tracing::info!(version, "token database migrated");
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Runs `call` under the configured deadline.
    async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or(Err(PgError::Timeout(self.config.timeout)))
    }

    /// Installs what drops evicted tokens from this replica's cache (once).
    pub fn set_evictor(&self, evictor: Evictor) {
        let _ = self.evictor.set(evictor);
    }

    /// Changes when the whole cache must be dropped.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
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

    /// How long cached positives keep passing while the database is unreachable.
    pub fn stale_if_error(&self) -> Duration {
        self.config.stale_if_error
    }

    /// The live record for a digest: none if unknown, deleted, or its owner is not an active
    /// member. Bounded by the timeout.
    pub async fn lookup(&self, digest: &Digest) -> Result<Option<Arc<Token>>, PgError> {
        let found = self
            .deadline(async {
                let client = self.pool.get().await?;
                let stmt = client.prepare_cached(LOOKUP).await?;
                let row = client.query_opt(&stmt, &[&digest.0.as_slice()]).await?;
                row.map(|r| token_from_row(&r, 0, 1)).transpose()
            })
            .await;
        if found.is_err() {
            self.metrics.source_failures.inc();
        }
        Ok(found?.map(Arc::new))
    }

    /// The whole organization, as one consistent snapshot.
    pub async fn read(&self) -> Result<TokenFile, PgError> {
        let limit = self.config.timeout * WRITE_DEADLINE_FACTOR;
        tokio::time::timeout(limit, self.read_snapshot())
            .await
            .unwrap_or(Err(PgError::Timeout(limit)))
    }

    async fn read_snapshot(&self) -> Result<TokenFile, PgError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let file = load(&tx).await?;
        tx.commit().await?;
        Ok(file)
    }

    /// One member, for authorizing a control-plane caller without reading every token.
    pub async fn member(&self, name: &str) -> Result<Option<Member>, PgError> {
        self.deadline(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT name, email, role, active FROM bentogate_members WHERE name = $1",
                    &[&name],
                )
                .await?;
            row.map(|r| member_from_row(&r)).transpose()
        })
        .await
    }

    /// Reads the organization, lets `change` edit it, and writes the difference back in one
    /// transaction under [`WRITE_LOCK`], with a NOTIFY for every token that changed or died.
    /// Evicts those tokens from this replica's cache before returning.
    /// Bounded by `timeout` x [`WRITE_DEADLINE_FACTOR`]: a write reads every record.
    pub async fn update<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let limit = self.config.timeout * WRITE_DEADLINE_FACTOR;
        tokio::time::timeout(limit, self.update_in_transaction(change))
            .await
            .unwrap_or_else(|_| Err(PgError::Timeout(limit).into()))
    }

    async fn update_in_transaction<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.pool.get().await.map_err(PgError::from)?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
            .await
            .map_err(PgError::from)?;
        let before = load(&tx).await?;
        let mut after = before.clone();
        let out = change(&mut after)?;
        after.validate().map_err(|message| StoreError::Corrupt {
            path: self.describe(),
            line: None,
            message,
        })?;
        let touched = write_difference(&tx, &before, &after).await?;
        let eviction = if touched.len() > MAX_NAMED_EVICTIONS {
            Eviction::All
        } else {
            Eviction::Tokens(touched)
        };
        for payload in payloads(&eviction) {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map_err(PgError::from)?;
        }
        tx.commit().await.map_err(PgError::from)?;
        // Our own notification will come too; evicting now makes this replica refuse a deleted
        // token before the caller hears the delete succeeded.
        self.evict(&eviction);
        Ok(out)
    }

    /// Writes last-use times in one statement; only times newer than the stored ones win.
    pub async fn flush_usage(&self, used: Vec<(String, i64)>) -> Result<usize, PgError> {
        let fresh: Vec<(String, i64)> = {
            let Ok(flushed) = self.flushed.lock() else {
                return Ok(0);
            };
            used.into_iter()
                .filter(|(uid, at)| flushed.get(uid).is_none_or(|was| was < at))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        let (uids, times): (Vec<&str>, Vec<i64>) =
            fresh.iter().map(|(u, t)| (u.as_str(), *t)).unzip();
        self.deadline(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE bentogate_tokens t SET last_used_at = v.at
                       FROM unnest($1::text[], $2::int8[]) AS v(uid, at)
                      WHERE t.uid = v.uid AND (t.last_used_at IS NULL OR t.last_used_at < v.at)",
                    &[&uids, &times],
                )
                .await?;
            Ok(())
        })
        .await?;
        if let Ok(mut flushed) = self.flushed.lock() {
            // Bounded by the tokens in use: forget what was not used in this window.
            let keep: HashSet<&str> = uids.iter().copied().collect();
            flushed.retain(|uid, _| keep.contains(uid.as_str()));
            flushed.extend(fresh.iter().cloned());
        }
        Ok(fresh.len())
    }

    /// Applies an eviction to this replica's cache.
    fn evict(&self, eviction: &Eviction) {
        match eviction {
            Eviction::All => self.flush_cache(),
            Eviction::Tokens(digests) => {
                if let Some(evict) = self.evictor.get() {
                    evict(eviction);
                }
                self.metrics
                    .revocations_received
                    .inc_by(digests.len() as u64);
            }
        }
    }

    fn flush_cache(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(evict) = self.evictor.get() {
            evict(&Eviction::All);
        }
        self.metrics.cache_flushes.inc();
    }

    fn set_reachable(&self, up: bool, error: Option<String>) {
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

    /// Opens the listening connection and subscribes. The server does this before it serves,
    /// so no token is ever cached by a replica that could miss its revocation.
    pub async fn subscribe(&self) -> Result<Session, PgError> {
        let mut settings = self.config.settings.clone();
        settings.connect_timeout(self.config.timeout);
        let (client, mut connection) =
            match tokio::time::timeout(self.config.timeout, settings.connect(NoTls)).await {
                Ok(connected) => connected?,
                Err(_) => return Err(PgError::Timeout(self.config.timeout)),
            };
        let (tx, notes) = tokio::sync::mpsc::unbounded_channel::<String>();
        // The connection delivers notifications only while it is polled.
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return String::from("listener stopped");
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return PgError::from(e).to_string(),
                    None => return String::from("connection closed"),
                }
            }
        });
        let listen = format!("LISTEN {CHANNEL}");
        match tokio::time::timeout(self.config.timeout, client.batch_execute(&listen)).await {
            Ok(Ok(())) => Ok(Session {
                client,
                notes,
                driver,
            }),
            Ok(Err(e)) => {
                driver.abort();
                Err(e.into())
            }
            Err(_) => {
                driver.abort();
                Err(PgError::Timeout(self.config.timeout))
            }
        }
    }

    /// Keeps a listening connection until `shutdown`, starting with `first` (from
    /// [`PgSource::subscribe`]): applies notifications, reconnects with backoff when the
    /// connection is lost, and drops the whole cache on every reconnect, since notifications
    /// sent meanwhile were lost.
    pub async fn listen(
        self: Arc<Self>,
        first: Option<Session>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF_MIN;
        let mut next = first;
        loop {
            let session = match next.take() {
                Some(s) => s,
                None => {
                    let subscribed = tokio::select! {
                        s = self.subscribe() => s,
                        _ = shutdown.changed() => return,
                    };
                    match subscribed {
                        Ok(s) => {
                            self.evict(&Eviction::All);
                            self.set_reachable(true, None);
                            backoff = BACKOFF_MIN;
                            s
                        }
                        Err(e) => {
                            self.set_reachable(false, Some(e.to_string()));
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => return,
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            continue;
                        }
                    }
                }
            };
            let error = tokio::select! {
                e = self.run(session) => e,
                _ = shutdown.changed() => return,
            };
            self.set_reachable(false, Some(error));
        }
    }

    /// Applies a session's notifications and proves it alive; returns why it ended.
    async fn run(&self, mut session: Session) -> String {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let error = loop {
            tokio::select! {
                note = session.notes.recv() => match note {
                    Some(payload) => self.evict(&parse_payload(&payload)),
                    None => break String::from("connection closed"),
                },
                _ = heartbeat.tick() => {
                    let alive = tokio::time::timeout(
                        self.config.timeout,
                        session.client.simple_query("SELECT 1"),
                    )
                    .await;
                    match alive {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break PgError::from(e).to_string(),
                        Err(_) => break PgError::Timeout(self.config.timeout).to_string(),
                    }
                }
            }
        };
        session.driver.abort();
        error
    }

    /// Writes every member and token of `file` into the database (uids, digests, expiries and
    /// memberships kept); records whose uid is already there are left alone. Returns how many
    /// members and tokens were added.
    pub async fn import(&self, file: TokenFile) -> Result<(usize, usize), StoreError> {
        self.update(move |db| {
            let members_before = db.members.len();
            let tokens_before = db.tokens.len();
            if db.members.is_empty() && db.tokens.is_empty() {
                db.organization = file.organization;
            }
            for m in file.members {
                if db.member(&m.name).is_none() {
                    db.members.push(m);
                }
            }
            let uids: HashSet<String> = db.tokens.iter().map(|t| t.uid.clone()).collect();
            db.tokens
                .extend(file.tokens.into_iter().filter(|t| !uids.contains(&t.uid)));
            Ok((
                db.members.len() - members_before,
                db.tokens.len() - tokens_before,
            ))
        })
        .await
    }
}

/// A listening connection: the client (for heartbeats), its notifications, and the task that
/// drives it.
pub struct Session {
    client: tokio_postgres::Client,
    notes: tokio::sync::mpsc::UnboundedReceiver<String>,
    driver: tokio::task::JoinHandle<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Reads the whole organization inside `tx`.
async fn load(tx: &impl GenericClient) -> Result<TokenFile, PgError> {
    let organization = tx
        .query_opt("SELECT name FROM bentogate_organization", &[])
        .await?
        .map(|r| Organization { name: r.get(0) })
        .unwrap_or_default();
    let members = tx
        .query(
            "SELECT name, email, role, active FROM bentogate_members ORDER BY name",
            &[],
        )
        .await?
        .iter()
        .map(member_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = tx
        .query(
            "SELECT record::text, last_used_at FROM bentogate_tokens ORDER BY uid",
            &[],
        )
        .await?
        .iter()
        .map(|r| token_from_row(r, 0, 1))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TokenFile {
        organization,
        members,
        tokens,
    })
}

fn member_from_row(r: &Row) -> Result<Member, PgError> {
    let role: String = r.get(2);
    Ok(Member {
        name: r.get(0),
        email: r.get(1),
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::Member
        },
        active: r.get(3),
    })
}

fn token_from_row(r: &Row, record: usize, last_used: usize) -> Result<Token, PgError> {
    // Read as text: parsing straight into the record is faster than through a JSON value,
    // which matters when a write reads every record.
    let text: &str = r.get(record);
    let mut token: Token = serde_json::from_str(text).map_err(|e| PgError::Corrupt {
        uid: serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("uid").and_then(|u| u.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".to_owned()),
        message: e.to_string(),
    })?;
    token.last_used_at = r.get(last_used);
    Ok(token)
}

/// The stored form of a record: last use lives in its own column, written by batches.
fn record_json(t: &Token) -> Result<serde_json::Value, StoreError> {
    let mut t = t.clone();
    t.last_used_at = None;
    serde_json::to_value(&t).map_err(|e| StoreError::Database(e.to_string()))
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}

/// Writes what differs between `before` and `after`; returns the digests of every token whose
/// standing may have changed (deleted, edited, created, or owned by a member who left or was
/// deactivated). New tokens are named too, so replicas drop a cached "unknown" for them.
async fn write_difference(
    tx: &impl GenericClient,
    before: &TokenFile,
    after: &TokenFile,
) -> Result<Vec<Digest>, StoreError> {
    let db = |e: tokio_postgres::Error| StoreError::from(PgError::from(e));
    if before.organization.name != after.organization.name {
        tx.execute(
            "INSERT INTO bentogate_organization (id, name) VALUES (true, $1)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            &[&after.organization.name],
        )
        .await
        .map_err(db)?;
    }

    let mut touched: HashSet<Digest> = HashSet::new();
    let old_members: HashMap<&str, &Member> = before
        .members
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let new_members: HashMap<&str, &Member> =
        after.members.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut standing_changed: HashSet<&str> = HashSet::new();
    let gone: Vec<&str> = old_members
        .keys()
        .filter(|n| !new_members.contains_key(*n))
        .copied()
        .collect();
    standing_changed.extend(gone.iter().copied());
    if !gone.is_empty() {
        tx.execute(
            "DELETE FROM bentogate_members WHERE name = ANY($1)",
            &[&gone],
        )
        .await
        .map_err(db)?;
    }
    for m in &after.members {
        let old = old_members.get(m.name.as_str());
        if old.is_some_and(|o| *o == m) {
            continue;
        }
        if old.is_none_or(|o| o.active != m.active) {
            standing_changed.insert(m.name.as_str());
        }
        tx.execute(
            "INSERT INTO bentogate_members (name, email, role, active) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE
             SET email = excluded.email, role = excluded.role, active = excluded.active",
            &[&m.name, &m.email, &role_name(m.role), &m.active],
        )
        .await
        .map_err(db)?;
    }

    let old_tokens: HashMap<&str, &Token> =
        before.tokens.iter().map(|t| (t.uid.as_str(), t)).collect();
    let new_uids: HashSet<&str> = after.tokens.iter().map(|t| t.uid.as_str()).collect();
    let deleted: Vec<&str> = before
        .tokens
        .iter()
        .filter(|t| !new_uids.contains(t.uid.as_str()))
        .map(|t| {
            touched.insert(t.digest);
            t.uid.as_str()
        })
        .collect();
    if !deleted.is_empty() {
        tx.execute(
            "DELETE FROM bentogate_tokens WHERE uid = ANY($1)",
            &[&deleted],
        )
        .await
        .map_err(db)?;
    }
    let mut uids = Vec::new();
    let mut digests: Vec<&[u8]> = Vec::new();
    let mut owners: Vec<Option<&str>> = Vec::new();
    let mut expiries: Vec<Option<i64>> = Vec::new();
    let mut used: Vec<Option<i64>> = Vec::new();
    let mut records = Vec::new();
    for t in &after.tokens {
        if let Some(o) = old_tokens.get(t.uid.as_str()) {
            // Last use is bookkeeping (its own column): a record differing only there is the same.
            let same = if o.last_used_at == t.last_used_at {
                *o == t
            } else {
                let mut o = (*o).clone();
                o.last_used_at = t.last_used_at;
                o == *t
            };
            if same {
                continue;
            }
            touched.insert(o.digest);
        }
        touched.insert(t.digest);
        uids.push(t.uid.as_str());
        digests.push(t.digest.0.as_slice());
        owners.push((t.kind == OwnerKind::Personal).then_some(t.user.as_str()));
        expiries.push(t.expired_at);
        used.push(t.last_used_at);
        records.push(record_json(t)?);
    }
    if !uids.is_empty() {
        tx.execute(
            "INSERT INTO bentogate_tokens (uid, digest, owner, expired_at, last_used_at, record)
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::int8[], $5::int8[], $6::jsonb[])
             ON CONFLICT (uid) DO UPDATE
             SET digest = excluded.digest, owner = excluded.owner,
                 expired_at = excluded.expired_at, record = excluded.record",
            &[&uids, &digests, &owners, &expiries, &used, &records],
        )
        .await
        .map_err(db)?;
    }
    // A member who left or was deactivated takes her personal tokens with her.
    for t in before.tokens.iter().chain(&after.tokens) {
        if t.kind == OwnerKind::Personal && standing_changed.contains(t.user.as_str()) {
            touched.insert(t.digest);
        }
    }
    Ok(touched.into_iter().collect())
}

/// The NOTIFY payloads for an eviction: comma-separated hex digests, or `*`.
pub fn payloads(eviction: &Eviction) -> Vec<String> {
    match eviction {
        Eviction::All => vec![FLUSH_ALL.to_owned()],
        Eviction::Tokens(digests) => digests
            .chunks(DIGESTS_PER_NOTIFY)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|d| hex::encode(d.0))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect(),
    }
}

/// Reads a NOTIFY payload. Anything unreadable asks for a whole flush: dropping too much costs
/// lookups, keeping a revoked token costs safety.
pub fn parse_payload(payload: &str) -> Eviction {
    if payload == FLUSH_ALL {
        return Eviction::All;
    }
    let mut digests = Vec::new();
    for part in payload.split(',') {
        match Digest::parse(part) {
            Some(d) => digests.push(d),
            None => return Eviction::All,
        }
    }
    Eviction::Tokens(digests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_stay_under_the_notify_limit() {
        let digests: Vec<Digest> = (0..250u32)
            .map(|i| Digest::of(format!("token-{i}").as_bytes()))
            .collect();
        let payloads = payloads(&Eviction::Tokens(digests.clone()));
        assert_eq!(payloads.len(), 3);
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() < 8000, "{} bytes", p.len());
            match parse_payload(p) {
                Eviction::Tokens(d) => back.extend(d),
                Eviction::All => panic!("a well-formed payload read as a flush"),
            }
        }
        assert_eq!(back, digests);
        assert_eq!(parse_payload("*"), Eviction::All);
        assert_eq!(parse_payload("not-a-digest"), Eviction::All);
    }
}
