//! The schema: one migration per version, applied in order under an advisory lock so replicas
//! starting together do not race.
//!
//! Must never change a migration already released: databases in the field have applied it.
//! A new version is a new entry at the end of [`MIGRATIONS`].

use super::{PgError, PgSource};

/// Advisory lock key for migrations ("bentogat" in ASCII): several replicas may start at once.
const MIGRATION_LOCK: i64 = 0x6265_6e74_6f67_6174;

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

impl PgSource {
    /// Brings the schema to the newest version. Idempotent; replicas starting together queue
    /// on an advisory lock and all but the first find nothing to do.
    pub(super) async fn migrate(&self) -> Result<(), PgError> {
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
}
