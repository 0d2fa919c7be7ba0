//! The web console's state in the database (schema version 3), so every replica honours the
//! same session and answers the same login code ([`ConsoleStore`]). Each call is one statement
//! (a take is one `DELETE ... RETURNING`, so two replicas cannot both hand out one value).

use tokio_postgres::Row;

use super::{PgError, PgSource};
use crate::clock::UnixSeconds;
use crate::store::console::{
    Actor, CodeState, ConsoleStore, LoginCode, LoginLink, Session, ONE_TIME_LIFE,
};
use crate::store::{wait, StoreError};
use crate::token::Digest;

fn session_from_row(r: &Row) -> Result<Session, PgError> {
    let id: &[u8] = r.get(0);
    let id = id
        .try_into()
        .map(Digest)
        .map_err(|_| PgError::Database("a stored session id is not 32 bytes".into()))?;
    let actor = match (r.get::<_, Option<String>>(1), r.get::<_, Option<String>>(2)) {
        (Some(uid), None) => Actor::Token(uid),
        (None, Some(member)) => Actor::Member(member),
        _ => return Err(PgError::Database("a stored session has no actor".into())),
    };
    Ok(Session {
        id,
        actor,
        csrf: r.get(3),
        created_at: r.get(4),
        seen_at: r.get(5),
    })
}

impl PgSource {
    async fn console_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, StoreError> {
        Ok(self.deadline(call).await?)
    }
}

impl ConsoleStore for PgSource {
    fn open_session(&self, s: &Session, oldest: UnixSeconds) -> Result<(), StoreError> {
        let (uid, member) = match &s.actor {
            Actor::Token(uid) => (Some(uid.as_str()), None),
            Actor::Member(m) => (None, Some(m.as_str())),
        };
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "DELETE FROM bentogate_console_sessions WHERE created_at < $1",
                    &[&oldest],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO bentogate_console_sessions
                        (id, token_uid, member, csrf, created_at, seen_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &&s.id.0[..],
                        &uid,
                        &member,
                        &s.csrf,
                        &s.created_at,
                        &s.seen_at,
                    ],
                )
                .await?;
            Ok(())
        }))?
    }

    fn session(&self, id: &Digest) -> Result<Option<Session>, StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT id, token_uid, member, csrf, created_at, seen_at
                       FROM bentogate_console_sessions WHERE id = $1",
                    &[&&id.0[..]],
                )
                .await?;
            row.as_ref().map(session_from_row).transpose()
        }))?
    }

    fn touch_session(&self, id: &Digest, at: UnixSeconds) -> Result<(), StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE bentogate_console_sessions SET seen_at = $2 WHERE id = $1",
                    &[&&id.0[..], &at],
                )
                .await?;
            Ok(())
        }))?
    }

    fn end_session(&self, id: &Digest) -> Result<(), StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "DELETE FROM bentogate_console_sessions WHERE id = $1",
                    &[&&id.0[..]],
                )
                .await?;
            Ok(())
        }))?
    }

    fn put_link(&self, link: &LoginLink) -> Result<(), StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "DELETE FROM bentogate_login_links WHERE expires_at <= $1",
                    &[&crate::clock::now()],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO bentogate_login_links (id, member, expires_at) VALUES ($1, $2, $3)",
                    &[&link.id, &link.member, &link.expires_at],
                )
                .await?;
            Ok(())
        }))?
    }

    fn take_link(&self, id: &str, now: UnixSeconds) -> Result<Option<LoginLink>, StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "DELETE FROM bentogate_login_links WHERE id = $1
                     RETURNING id, member, expires_at",
                    &[&id],
                )
                .await?;
            Ok(row
                .map(|r| LoginLink {
                    id: r.get(0),
                    member: r.get(1),
                    expires_at: r.get(2),
                })
                .filter(|l| now < l.expires_at))
        }))?
    }

    fn add_code(
        &self,
        id: &Digest,
        from: &str,
        now: UnixSeconds,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        let max = i64::try_from(max_pending).unwrap_or(i64::MAX);
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "DELETE FROM bentogate_login_codes WHERE created_at <= $1",
                    &[&(now - ONE_TIME_LIFE)],
                )
                .await?;
            // One statement: the count and the insert see the same rows.
            let added = client
                .execute(
                    "INSERT INTO bentogate_login_codes (id, created_at, requested_by)
                     SELECT $1, $2, $4 WHERE (SELECT count(*) FROM bentogate_login_codes) < $3",
                    &[&&id.0[..], &now, &max, &from],
                )
                .await?;
            Ok(added == 1)
        }))?
    }

    fn code(&self, id: &Digest, now: UnixSeconds) -> Result<Option<LoginCode>, StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT sealed, created_at, requested_by FROM bentogate_login_codes
                      WHERE id = $1 AND created_at > $2",
                    &[&&id.0[..], &(now - ONE_TIME_LIFE)],
                )
                .await?;
            Ok(row.map(|r| LoginCode {
                state: match r.get::<_, Option<Vec<u8>>>(0) {
                    Some(v) => CodeState::Approved(v),
                    None => CodeState::Pending,
                },
                created_at: r.get(1),
                from: r.get(2),
            }))
        }))?
    }

    fn settle_code(
        &self,
        id: &Digest,
        sealed: Option<Vec<u8>>,
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            let oldest = now - ONE_TIME_LIFE;
            let n = match sealed {
                Some(v) => {
                    client
                        .execute(
                            "UPDATE bentogate_login_codes SET sealed = $2
                              WHERE id = $1 AND sealed IS NULL AND created_at > $3",
                            &[&&id.0[..], &v, &oldest],
                        )
                        .await?
                }
                None => {
                    client
                        .execute(
                            "DELETE FROM bentogate_login_codes
                              WHERE id = $1 AND sealed IS NULL AND created_at > $2",
                            &[&&id.0[..], &oldest],
                        )
                        .await?
                }
            };
            Ok(n == 1)
        }))?
    }

    fn take_code(&self, id: &Digest, now: UnixSeconds) -> Result<Option<Vec<u8>>, StoreError> {
        wait(self.console_call(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt(
                    "DELETE FROM bentogate_login_codes
                      WHERE id = $1 AND sealed IS NOT NULL AND created_at > $2
                     RETURNING sealed",
                    &[&&id.0[..], &(now - ONE_TIME_LIFE)],
                )
                .await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        }))?
    }
}
