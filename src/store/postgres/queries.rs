//! What the database is asked: lookups by digest for the data plane, whole-organization reads
//! and writes for the control plane and the CLI, imports, and last-use batches.
//!
//! Every write that may change a token's standing names it in a NOTIFY in the same transaction;
//! must never commit a change without one, or another replica keeps serving a revoked token.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::notify::payloads;
use super::{Eviction, PgError, PgSource, CHANNEL};
use crate::store::format::{Member, Organization, Role, TokenFile};
use crate::store::StoreError;
use crate::token::{Digest, OwnerKind, Token};

/// Advisory lock key serializing control-plane writes, so none loses another's change.
const WRITE_LOCK: i64 = 0x6265_6e74_6f67_7772;

/// Beyond this many changed tokens one write asks for a whole-cache flush instead.
const MAX_NAMED_EVICTIONS: usize = 2_000;

/// Whole-organization reads and writes get this many lookup timeouts (30 s by default): they
/// touch every record, yet must not hang on a dead database either.
const WRITE_DEADLINE_FACTOR: u32 = 15;

const LOOKUP: &str = "SELECT t.record::text, t.last_used_at FROM bentogate_tokens t
     WHERE t.digest = $1
       AND (t.owner IS NULL OR EXISTS
            (SELECT 1 FROM bentogate_members m WHERE m.name = t.owner AND m.active))";

impl PgSource {
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
