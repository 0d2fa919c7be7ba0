//! The control plane's operations on the database, one record at a time ([`TokenStore`]): each
//! is one or a few indexed statements in one transaction.
//!
//! Every write that may change a token's standing names it in a NOTIFY in the same transaction;
//! must never commit a change without one, or another replica keeps serving a revoked token.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::notify::payloads;
use super::page::{page_sql, refs};
use super::queries::{member_from_row, record_json, role_name, token_from_row, TOKEN_COLUMNS};
use super::{Eviction, PgError, PgSource, CHANNEL};
use crate::clock;
use crate::store::format::{Member, Organization, TokenFile};
use crate::store::members::{self, MemberChange};
use crate::store::records::{Page, PageQuery, PageStart, TokenEdit, TokenStore};
use crate::store::{wait, StoreError};
use crate::token::{Digest, OwnerKind, Token};

/// Advisory lock key serializing member changes and imports (token inserts and deletes lock
/// only their rows, and a personal insert its owner's member row).
const WRITE_LOCK: i64 = 0x6265_6e74_6f67_7772;

/// Beyond this many changed tokens one write asks for a whole-cache flush instead.
const MAX_NAMED_EVICTIONS: usize = 2_000;

/// Exports and imports get this many lookup timeouts (30 s by default): they touch every
/// record they move, yet must not hang on a dead database either.
const BULK_DEADLINE_FACTOR: u32 = 15;

/// Imported tokens are inserted this many per statement.
const IMPORT_CHUNK: usize = 5_000;

/// Sends the NOTIFYs for `eviction` inside `tx`: replicas drop those tokens once it commits.
async fn announce(tx: &Transaction<'_>, eviction: &Eviction) -> Result<(), PgError> {
    for payload in payloads(eviction) {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await?;
    }
    Ok(())
}

/// The eviction for tokens whose standing changed: named, or everything when too many.
fn eviction_of(digests: Vec<Digest>) -> Eviction {
    if digests.len() > MAX_NAMED_EVICTIONS {
        Eviction::All
    } else {
        Eviction::Tokens(digests)
    }
}

fn digest_of(r: &Row, i: usize) -> Result<Digest, PgError> {
    let bytes: &[u8] = r.get(i);
    bytes
        .try_into()
        .map(Digest)
        .map_err(|_| PgError::Database("a stored digest is not 32 bytes".into()))
}

impl PgSource {
    /// Runs `work` (one transaction) under `factor` lookup timeouts.
    async fn bounded<T>(
        &self,
        factor: u32,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let limit = self.config.timeout * factor;
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(PgError::Timeout(limit).into()))
    }

    /// Announces `eviction` in `tx`, commits, then evicts it from this replica's cache (its own
    /// notification comes too, but the caller must not hear "deleted" while this replica could
    /// still let the token through).
    async fn commit(
        &self,
        tx: Transaction<'_>,
        eviction: Option<Eviction>,
    ) -> Result<(), StoreError> {
        if let Some(e) = &eviction {
            announce(&tx, e).await?;
        }
        tx.commit().await.map_err(PgError::from)?;
        if let Some(e) = &eviction {
            self.evict(e);
        }
        Ok(())
    }

    async fn read<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, StoreError> {
        Ok(self.deadline(call).await?)
    }

    async fn organization_now(&self) -> Result<Organization, StoreError> {
        self.read(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt("SELECT name, created_at FROM bentogate_organization", &[])
                .await?;
            Ok(row
                .map(|r| Organization {
                    name: r.get(0),
                    created_at: r.get(1),
                })
                .unwrap_or_default())
        })
        .await
    }

    async fn get_token(&self, uid: &str) -> Result<Option<Token>, StoreError> {
        self.read(async {
            let client = self.pool.get().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM bentogate_tokens WHERE uid = $1"
                ))
                .await?;
            let row = client.query_opt(&stmt, &[&uid]).await?;
            row.map(|r| token_from_row(&r, 0, 1)).transpose()
        })
        .await
    }

    async fn insert_token(&self, t: Token) -> Result<(), StoreError> {
        let record = record_json(&t)?;
        self.bounded(1, async move {
            let mut client = self.pool.get().await.map_err(PgError::from)?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            let work: TxResult<_> = async {
                if t.kind == OwnerKind::Personal {
                    // FOR SHARE: a removal or deactivation of the owner waits for this insert,
                    // or this insert sees it.
                    let active: Option<bool> = tx
                        .query_opt(
                            "SELECT active FROM bentogate_members WHERE name = $1 FOR SHARE",
                            &[&t.user],
                        )
                        .await
                        .map_err(PgError::from)?
                        .map(|r| r.get(0));
                    if active != Some(true) {
                        return Err(StoreError::NotActiveMember(t.user.clone()));
                    }
                }
                let owner = (t.kind == OwnerKind::Personal).then_some(t.user.as_str());
                let inserted = tx
                    .execute(
                        "INSERT INTO bentogate_tokens
                            (uid, digest, owner, expired_at, last_used_at, record, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                        &[
                            &t.uid,
                            &t.digest.0.as_slice(),
                            &owner,
                            &t.expired_at,
                            &t.last_used_at,
                            &record,
                            &t.created_at,
                        ],
                    )
                    .await
                    .map_err(PgError::from)?;
                if inserted == 0 {
                    return Err(StoreError::Duplicate);
                }
                // Named so replicas drop a cached "unknown" for it.
                Ok(((), Some(Eviction::Tokens(vec![t.digest]))))
            }
            .await;
            let (out, eviction) = work?;
            self.commit(tx, eviction).await?;
            Ok(out)
        })
        .await
    }

    async fn delete_token(&self, uid: String) -> Result<Option<Token>, StoreError> {
        self.bounded(1, async move {
            let mut client = self.pool.get().await.map_err(PgError::from)?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            let work: TxResult<_> = async {
                let row = tx
                    .query_opt(
                        &format!(
                            "DELETE FROM bentogate_tokens WHERE uid = $1 RETURNING {TOKEN_COLUMNS}"
                        ),
                        &[&uid],
                    )
                    .await
                    .map_err(PgError::from)?;
                let Some(row) = row else {
                    return Ok((None, None));
                };
                let t = token_from_row(&row, 0, 1)?;
                let eviction = Eviction::Tokens(vec![t.digest]);
                Ok((Some(t), Some(eviction)))
            }
            .await;
            let (out, eviction) = work?;
            self.commit(tx, eviction).await?;
            Ok(out)
        })
        .await
    }

    async fn edit_token(&self, uid: String, edit: TokenEdit) -> Result<Option<Token>, StoreError> {
        self.bounded(1, async move {
            let mut client = self.pool.get().await.map_err(PgError::from)?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            let work: TxResult<_> = async {
                let row = tx
                    .query_opt(
                        &format!(
                            "SELECT {TOKEN_COLUMNS} FROM bentogate_tokens WHERE uid = $1 FOR UPDATE"
                        ),
                        &[&uid],
                    )
                    .await
                    .map_err(PgError::from)?;
                let Some(row) = row else {
                    return Ok((None, None));
                };
                let mut t = token_from_row(&row, 0, 1)?;
                edit.apply(&mut t, clock::now());
                tx.execute(
                    "UPDATE bentogate_tokens SET record = $2, expired_at = $3 WHERE uid = $1",
                    &[&uid, &record_json(&t)?, &t.expired_at],
                )
                .await
                .map_err(PgError::from)?;
                let eviction = Eviction::Tokens(vec![t.digest]);
                Ok((Some(t), Some(eviction)))
            }
            .await;
            let (out, eviction) = work?;
            self.commit(tx, eviction).await?;
            Ok(out)
        })
        .await
    }

    async fn page_now(&self, q: &PageQuery) -> Result<Page, StoreError> {
        let sql = page_sql(q);
        let (rows, total) = self
            .read(async {
                let mut client = self.pool.get().await?;
                let tx = client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let rows = tx.query(&sql.items, &refs(&sql.params)).await?;
                let total: i64 = match rows.first() {
                    Some(row) if sql.windowed => row.get(2),
                    _ => tx
                        .query_one(&sql.total, &refs(&sql.total_params))
                        .await?
                        .get(0),
                };
                tx.commit().await?;
                Ok((rows, total))
            })
            .await?;
        let items = rows
            .iter()
            .map(|r| token_from_row(r, 0, 1))
            .collect::<Result<Vec<_>, _>>()?;
        let query = PageQuery {
            start: PageStart::Offset(0),
            ..q.clone()
        };
        Ok(Page::cut(items, u64::try_from(total).unwrap_or(0), &query))
    }

    async fn member_now(&self, name: &str) -> Result<Option<Member>, StoreError> {
        self.read(async {
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

    async fn members_now(&self) -> Result<Vec<Member>, StoreError> {
        self.read(async {
            let client = self.pool.get().await?;
            client
                .query(
                    "SELECT name, email, role, active FROM bentogate_members ORDER BY name",
                    &[],
                )
                .await?
                .iter()
                .map(member_from_row)
                .collect()
        })
        .await
    }

    async fn change_member_now(&self, change: MemberChange) -> Result<usize, StoreError> {
        self.bounded(1, async move {
            let mut client = self.pool.get().await.map_err(PgError::from)?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            let work: TxResult<_> = async {
                let db = |e: tokio_postgres::Error| StoreError::from(PgError::from(e));
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                    .await
                    .map_err(db)?;
                let current = tx
                    .query(
                        "SELECT name, email, role, active FROM bentogate_members FOR UPDATE",
                        &[],
                    )
                    .await
                    .map_err(db)?
                    .iter()
                    .map(member_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                members::check(&current, &change)?;
                let name = change.name();
                let owned = match &change {
                    MemberChange::Add { .. } => {
                        if let Some(m) = change.new_member() {
                            tx.execute(
                                "INSERT INTO bentogate_members (name, email, role, active)
                                 VALUES ($1, $2, $3, $4)",
                                &[&m.name, &m.email, &role_name(m.role), &m.active],
                            )
                            .await
                            .map_err(db)?;
                        }
                        Vec::new()
                    }
                    MemberChange::Promote { .. } => {
                        tx.execute(
                            "UPDATE bentogate_members SET role = 'admin' WHERE name = $1",
                            &[&name],
                        )
                        .await
                        .map_err(db)?;
                        Vec::new()
                    }
                    MemberChange::Remove { .. } => {
                        tx.execute("DELETE FROM bentogate_members WHERE name = $1", &[&name])
                            .await
                            .map_err(db)?;
                        tx.query(
                            "DELETE FROM bentogate_tokens WHERE owner = $1 RETURNING digest",
                            &[&name],
                        )
                        .await
                        .map_err(db)?
                    }
                    MemberChange::Deactivate { .. } => {
                        tx.execute(
                            "UPDATE bentogate_members SET active = false WHERE name = $1",
                            &[&name],
                        )
                        .await
                        .map_err(db)?;
                        tx.query(
                            "SELECT digest FROM bentogate_tokens WHERE owner = $1",
                            &[&name],
                        )
                        .await
                        .map_err(db)?
                    }
                };
                let digests = owned
                    .iter()
                    .map(|r| digest_of(r, 0))
                    .collect::<Result<Vec<_>, _>>()?;
                let n = digests.len();
                let eviction = (n > 0).then(|| eviction_of(digests));
                Ok((n, eviction))
            }
            .await;
            let (out, eviction) = work?;
            self.commit(tx, eviction).await?;
            Ok(out)
        })
        .await
    }

    /// Adds the members and tokens of `file` that are not there yet (by name, uid and
    /// digest), in one transaction, `IMPORT_CHUNK` tokens per statement.
    pub async fn import(&self, file: TokenFile) -> Result<(usize, usize), StoreError> {
        file.validate().map_err(|message| StoreError::Corrupt {
            path: "the imported records".into(),
            line: None,
            message,
        })?;
        // The deadline grows with the import: each chunk gets the bulk allowance.
        let chunks = u32::try_from(file.tokens.len() / IMPORT_CHUNK).unwrap_or(u32::MAX);
        let factor = BULK_DEADLINE_FACTOR.saturating_mul(chunks.saturating_add(1));
        self.bounded(factor, async move {
            let mut client = self.pool.get().await.map_err(PgError::from)?;
            let tx = client.transaction().await.map_err(PgError::from)?;
            let work: TxResult<_> = async {
                let db = |e: tokio_postgres::Error| StoreError::from(PgError::from(e));
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
                    .await
                    .map_err(db)?;
                let empty: bool = tx
                    .query_one(
                        "SELECT NOT EXISTS (SELECT 1 FROM bentogate_members)
                            AND NOT EXISTS (SELECT 1 FROM bentogate_tokens)",
                        &[],
                    )
                    .await
                    .map_err(db)?
                    .get(0);
                if empty {
                    let org = &file.organization;
                    tx.execute(
                        "INSERT INTO bentogate_organization (id, name, created_at)
                         VALUES (true, $1, coalesce($2, extract(epoch FROM now())::bigint))
                         ON CONFLICT (id) DO UPDATE
                         SET name = excluded.name,
                             created_at = coalesce($2, bentogate_organization.created_at)",
                        &[&org.name, &org.created_at],
                    )
                    .await
                    .map_err(db)?;
                }
                let mut members = 0;
                for m in &file.members {
                    members += tx
                        .execute(
                            "INSERT INTO bentogate_members (name, email, role, active)
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            &[&m.name, &m.email, &role_name(m.role), &m.active],
                        )
                        .await
                        .map_err(db)? as usize;
                }
                let mut added = Vec::new();
                for chunk in file.tokens.chunks(IMPORT_CHUNK) {
                    let mut uids = Vec::with_capacity(chunk.len());
                    let mut digests: Vec<&[u8]> = Vec::with_capacity(chunk.len());
                    let mut owners: Vec<Option<&str>> = Vec::with_capacity(chunk.len());
                    let mut expiries = Vec::with_capacity(chunk.len());
                    let mut used = Vec::with_capacity(chunk.len());
                    let mut records = Vec::with_capacity(chunk.len());
                    let mut created = Vec::with_capacity(chunk.len());
                    for t in chunk {
                        uids.push(t.uid.as_str());
                        digests.push(t.digest.0.as_slice());
                        owners.push((t.kind == OwnerKind::Personal).then_some(t.user.as_str()));
                        expiries.push(t.expired_at);
                        used.push(t.last_used_at);
                        records.push(record_json(t)?);
                        created.push(t.created_at);
                    }
                    let rows = tx
                        .query(
                            "INSERT INTO bentogate_tokens
                                (uid, digest, owner, expired_at, last_used_at, record, created_at)
                             SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::int8[],
                                                  $5::int8[], $6::jsonb[], $7::int8[])
                             ON CONFLICT DO NOTHING RETURNING digest",
                            &[
                                &uids, &digests, &owners, &expiries, &used, &records, &created,
                            ],
                        )
                        .await
                        .map_err(db)?;
                    for r in &rows {
                        added.push(digest_of(r, 0)?);
                    }
                }
                let tokens = added.len();
                let eviction = (tokens > 0).then(|| eviction_of(added));
                Ok(((members, tokens), eviction))
            }
            .await;
            let (out, eviction) = work?;
            self.commit(tx, eviction).await?;
            Ok(out)
        })
        .await
    }

    /// The whole organization, as one consistent snapshot (`migrate --to-file`).
    async fn export_now(&self) -> Result<TokenFile, StoreError> {
        let limit = self.config.timeout * BULK_DEADLINE_FACTOR;
        let run = async {
            let mut client = self.pool.get().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let organization = tx
                .query_opt("SELECT name, created_at FROM bentogate_organization", &[])
                .await?
                .map(|r| Organization {
                    name: r.get(0),
                    created_at: r.get(1),
                })
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
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM bentogate_tokens ORDER BY created_at, uid"
                    ),
                    &[],
                )
                .await?
                .iter()
                .map(|r| token_from_row(r, 0, 1))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit().await?;
            Ok::<_, PgError>(TokenFile {
                organization,
                members,
                tokens,
            })
        };
        Ok(tokio::time::timeout(limit, run)
            .await
            .unwrap_or(Err(PgError::Timeout(limit)))?)
    }
}

/// The work of one transaction: a result, and what replicas must evict once it commits.
type TxResult<T> = Result<(T, Option<Eviction>), StoreError>;

impl TokenStore for PgSource {
    fn console(&self) -> &dyn crate::store::console::ConsoleStore {
        self
    }

    fn organization(&self) -> Result<Organization, StoreError> {
        wait(self.organization_now())?
    }

    fn get(&self, uid: &str) -> Result<Option<Token>, StoreError> {
        wait(self.get_token(uid))?
    }

    fn insert(&self, token: Token) -> Result<(), StoreError> {
        if !token.has_access() {
            return Err(StoreError::NoAccess);
        }
        wait(self.insert_token(token))?
    }

    fn delete(&self, uid: &str) -> Result<Option<Token>, StoreError> {
        wait(self.delete_token(uid.to_owned()))?
    }

    fn edit(&self, uid: &str, edit: &TokenEdit) -> Result<Option<Token>, StoreError> {
        wait(self.edit_token(uid.to_owned(), edit.clone()))?
    }

    fn page(&self, query: &PageQuery) -> Result<Page, StoreError> {
        wait(self.page_now(query))?
    }

    fn member(&self, name: &str) -> Result<Option<Member>, StoreError> {
        wait(self.member_now(name))?
    }

    fn members(&self) -> Result<Vec<Member>, StoreError> {
        wait(self.members_now())?
    }

    fn change_member(&self, change: &MemberChange) -> Result<usize, StoreError> {
        wait(self.change_member_now(change.clone()))?
    }

    fn import(&self, file: TokenFile) -> Result<(usize, usize), StoreError> {
        wait(PgSource::import(self, file))?
    }

    fn export(&self) -> Result<TokenFile, StoreError> {
        wait(self.export_now())?
    }

    fn describe(&self) -> String {
        format!("postgres {}", PgSource::describe(self))
    }
}
