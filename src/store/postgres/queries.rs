//! What the data plane asks the database: lookups by digest and last-use batches, and how a
//! row reads back as a token or a member (shared with [`super::records`]).

use std::collections::HashSet;
use std::sync::Arc;

use tokio_postgres::Row;

use super::{PgError, PgSource};
use crate::store::format::{Member, Role};
use crate::store::StoreError;
use crate::token::{Digest, Token};

/// Columns of a token row as read back: the record and its last use.
pub(super) const TOKEN_COLUMNS: &str = "record::text, last_used_at";

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
}

pub(super) fn member_from_row(r: &Row) -> Result<Member, PgError> {
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

pub(super) fn token_from_row(r: &Row, record: usize, last_used: usize) -> Result<Token, PgError> {
    // Read as text: parsing straight into the record is faster than through a JSON value,
    // which matters for pages and the export.
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
pub(super) fn record_json(t: &Token) -> Result<serde_json::Value, StoreError> {
    let mut t = t.clone();
    t.last_used_at = None;
    serde_json::to_value(&t).map_err(|e| StoreError::Database(e.to_string()))
}

pub(super) fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Member => "member",
    }
}
