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
    // 2: operations at the grain of one record. `created_at` orders the listing (newest first,
    // ties by uid) through indexes, one per visibility; `search` is what a search matches (a
    // trigram index on it is added when pg_trgm is available, see `SEARCH_INDEX`); token counts
    // per owner ('' for the organization) are kept by statement triggers (once per statement, not
    // per row: an import of a million rows must not update one counter a million times), so a
    // page's total is not a count of every row; a token's owner never changes after insert. The
    // organization records its creation time.
    "ALTER TABLE bentogate_tokens ADD COLUMN created_at bigint;
     UPDATE bentogate_tokens
        SET created_at = extract(epoch FROM (record->>'created_at')::timestamptz)::bigint;
     ALTER TABLE bentogate_tokens ALTER COLUMN created_at SET NOT NULL;
     ALTER TABLE bentogate_tokens ADD COLUMN search text GENERATED ALWAYS AS (
        lower(coalesce(record->>'name', '') || E'\\n' || uid || E'\\n'
              || coalesce(record->>'description', ''))) STORED;
     CREATE INDEX bentogate_tokens_newest ON bentogate_tokens (created_at DESC, uid);
     CREATE INDEX bentogate_tokens_org_newest ON bentogate_tokens (created_at DESC, uid)
        WHERE owner IS NULL;
     CREATE INDEX bentogate_tokens_owner_newest ON bentogate_tokens (owner, created_at DESC, uid)
        WHERE owner IS NOT NULL;
     DROP INDEX bentogate_tokens_owner;
     CREATE TABLE bentogate_token_counts (owner text PRIMARY KEY, n bigint NOT NULL);
     INSERT INTO bentogate_token_counts
        SELECT coalesce(owner, ''), count(*) FROM bentogate_tokens GROUP BY 1;
     CREATE FUNCTION bentogate_count_added() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        INSERT INTO bentogate_token_counts (owner, n)
            SELECT coalesce(owner, ''), count(*) FROM added GROUP BY 1
        ON CONFLICT (owner) DO UPDATE SET n = bentogate_token_counts.n + excluded.n;
        RETURN NULL;
     END $$;
     CREATE FUNCTION bentogate_count_removed() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        UPDATE bentogate_token_counts c SET n = c.n - r.n
          FROM (SELECT coalesce(owner, '') AS owner, count(*) AS n FROM removed GROUP BY 1) r
         WHERE c.owner = r.owner;
        RETURN NULL;
     END $$;
     CREATE TRIGGER bentogate_tokens_added AFTER INSERT ON bentogate_tokens
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION bentogate_count_added();
     CREATE TRIGGER bentogate_tokens_removed AFTER DELETE ON bentogate_tokens
        REFERENCING OLD TABLE AS removed FOR EACH STATEMENT
        EXECUTE FUNCTION bentogate_count_removed();
     ALTER TABLE bentogate_organization ADD COLUMN created_at bigint;
     INSERT INTO bentogate_organization (id, name) VALUES (true, 'default') ON CONFLICT DO NOTHING;
     UPDATE bentogate_organization SET created_at = coalesce(
        (SELECT min(created_at) FROM bentogate_tokens), extract(epoch FROM now())::bigint);",
    // 3: the web console's state, shared by every replica (store/console.rs): sessions by the
    // digest of their cookie, sign-in links by the digest of their secret, browser-login codes
    // by the digest of the code with the approved token value sealed under the code.
    "CREATE TABLE bentogate_console_sessions (
        id bytea PRIMARY KEY CHECK (length(id) = 32),
        token_uid text,
        member text,
        csrf text NOT NULL,
        created_at bigint NOT NULL,
        seen_at bigint NOT NULL,
        CHECK ((token_uid IS NULL) <> (member IS NULL))
     );
     CREATE INDEX bentogate_console_sessions_created ON bentogate_console_sessions (created_at);
     CREATE TABLE bentogate_login_links (
        id text PRIMARY KEY,
        member text NOT NULL,
        expires_at bigint NOT NULL
     );
     CREATE TABLE bentogate_login_codes (
        id bytea PRIMARY KEY CHECK (length(id) = 32),
        created_at bigint NOT NULL,
        requested_by text NOT NULL,
        sealed bytea
     );
     CREATE INDEX bentogate_login_codes_created ON bentogate_login_codes (created_at);",
];

/// The search index: trigrams make a substring search an index lookup. pg_trgm ships with
/// PostgreSQL (contrib) and is a trusted extension, but a server without it still works: then a
/// search reads every token (see the README).
const SEARCH_INDEX: &str = "CREATE EXTENSION IF NOT EXISTS pg_trgm;
     CREATE INDEX IF NOT EXISTS bentogate_tokens_search
        ON bentogate_tokens USING gin (search gin_trgm_ops);";

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
            // Savepoint: a server without pg_trgm must not undo the migrations.
            tx.batch_execute("SAVEPOINT search_index").await?;
            if let Err(e) = tx.batch_execute(SEARCH_INDEX).await {
                tx.batch_execute("ROLLBACK TO SAVEPOINT search_index").await?;
                tracing::warn!(error = %PgError::from(e), "no trigram index for token search (pg_trgm unavailable): searches read every token; `CREATE EXTENSION pg_trgm` as a superuser to add it");
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}
