//! Console sessions: signing in (a pasted token with the `api` scope, or a one-time link that
//! makes the session act as a member), the cookie, the timeouts, and the caller behind each
//! request.
//!
//! A session is re-judged on every request: it ends when it is idle or old past the configured
//! limits, when its token is deleted or expires, or when its member is removed or deactivated.
//! Before sign-in, the form's CSRF value is a random cookie of its own (`bg_signin`), checked
//! against the form (double submit) together with the Origin.

use std::sync::Arc;

use http::StatusCode;

use super::CookiePolicy;
use super::{pages, Console, ConsoleError, Reply, Req};
use crate::clock::{self, UnixSeconds};
use crate::control::{audit, Caller, ControlError};
use crate::store::console::{digest_of, Actor, LoginLink, Session, ONE_TIME_LIFE};
use crate::store::Member;
use crate::token::{OwnerKind, Scope, Scopes, Token};
use crate::validator::Verdict;

/// The session cookie's base name (`__Host-bg_session` over TLS).
const SESSION: &str = "bg_session";
/// The pre-sign-in CSRF cookie's base name.
const SIGN_IN: &str = "bg_signin";

/// 128 random bits as hex: session ids, CSRF values, link secrets, login codes.
pub(crate) fn random_hex() -> Result<String, ControlError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ControlError::Unavailable(format!("no randomness from the OS: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn set_cookie(policy: CookiePolicy, base: &str, value: &str, max_age: Option<u64>) -> String {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    format!("{}={value}{}{age}", policy.name(base), policy.attributes())
}

/// The header that removes the session cookie.
pub(crate) fn clear_cookie(policy: CookiePolicy) -> String {
    set_cookie(policy, SESSION, "", Some(0))
}

/// The caller a member session acts as: the member herself, with every scope her role allows,
/// every deployment and monitoring. The grant rule then limits her as it would any token of
/// hers; organization tokens still need her to be an admin.
fn member_caller(member: Member, now: UnixSeconds) -> Caller {
    let mut scopes = vec![
        Scope::Api,
        Scope::ReadOrganization,
        Scope::ReadCluster,
        Scope::WriteCluster,
    ];
    if member.role == crate::store::Role::Admin {
        scopes.push(Scope::WriteOrganization);
    }
    let mut t = Token::new(
        "console".into(),
        "console session".into(),
        crate::token::Digest([0; 32]),
        Some(member.name.clone()),
        now,
    );
    t.scopes = Scopes::from_slice(&scopes);
    t.all_deployments = true;
    t.monitoring = true;
    Caller {
        token: Arc::new(t),
        member: Some(member),
    }
}

impl Console {
    /// The session and its caller, or [`ConsoleError::SignIn`] (the session is ended when it
    /// is found stale).
    pub(crate) fn signed_in(&self, req: &Req) -> Result<(Session, Caller), ConsoleError> {
        let name = self.cookies.name(SESSION);
        let Some(value) = req.cookie(&name).filter(|v| !v.is_empty()) else {
            return Err(ConsoleError::SignIn);
        };
        let id = digest_of(value);
        let console = self.store.console();
        let Some(session) = console.session(&id)? else {
            return Err(ConsoleError::SignIn);
        };
        let now = clock::now();
        let idle = self.config.session_idle.as_secs() as i64;
        let life = self.config.session_lifetime.as_secs() as i64;
        let caller = if now >= session.created_at + life || now >= session.seen_at + idle {
            None
        } else {
            self.caller_of(&session.actor, now)?
        };
        let Some(caller) = caller else {
            console.end_session(&id)?;
            return Err(ConsoleError::SignIn);
        };
        // At most one write a minute (or per half idle period, if shorter): the idle clock
        // does not need every request.
        if now - session.seen_at >= (idle / 2).clamp(1, 60) {
            console.touch_session(&id, now)?;
        }
        Ok((session, caller))
    }

    /// The caller an actor stands for now, or `None` if it no longer may act.
    fn caller_of(&self, actor: &Actor, now: UnixSeconds) -> Result<Option<Caller>, ConsoleError> {
        match actor {
            Actor::Token(uid) => {
                let Some(t) = self.store.records().get(uid)? else {
                    return Ok(None);
                };
                if t.is_expired(now) {
                    return Ok(None);
                }
                match self.store.caller(Arc::new(t)) {
                    Ok(c) if c.is_member() => Ok(Some(c)),
                    Ok(_) | Err(ControlError::Forbidden(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Actor::Member(name) => Ok(self
                .store
                .member(name)?
                .filter(|m| m.active)
                .map(|m| member_caller(m, now))),
        }
    }

    fn open_session(&self, actor: Actor, next: &str) -> Result<Reply, ConsoleError> {
        let value = super::session::random_hex()?;
        let now = clock::now();
        let session = Session {
            id: digest_of(&value),
            actor,
            csrf: random_hex()?,
            created_at: now,
            seen_at: now,
        };
        let oldest = now - self.config.session_lifetime.as_secs() as i64;
        self.store.console().open_session(&session, oldest)?;
        Ok(Reply::redirect(safe_next(next))
            .cookie(set_cookie(self.cookies, SESSION, &value, None))
            .cookie(set_cookie(self.cookies, SIGN_IN, "", Some(0))))
    }

    /// The sign-in page, with a fresh pre-sign-in CSRF cookie.
    pub(crate) fn sign_in_page(&self, req: &Req, error: Option<&str>) -> Reply {
        let Ok(csrf) = random_hex() else {
            return Reply::page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error_page(None, "Try again", "no randomness from the OS"),
            );
        };
        let next = req
            .query("next")
            .or(req.form("next"))
            .unwrap_or("/api_tokens");
        let status = if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        Reply::page(status, pages::sign_in(&csrf, safe_next(next), error)).cookie(set_cookie(
            self.cookies,
            SIGN_IN,
            &csrf,
            Some(ONE_TIME_LIFE as u64),
        ))
    }

    fn check_sign_in_form(&self, req: &Req) -> Result<(), ConsoleError> {
        let expected = req.cookie(&self.cookies.name(SIGN_IN)).map(str::to_owned);
        self.check_post(req, expected.as_deref())
    }

    /// POST /login with a pasted token: it must be live and hold the `api` scope; the session
    /// can then do no more than it.
    pub(crate) async fn sign_in_with_token(self: &Arc<Self>, req: Req) -> Reply {
        if let Err(e) = self.check_sign_in_form(&req) {
            return self.finish(&req, Err(e));
        }
        if let Some(wait) = self.throttle.as_ref().and_then(|t| t.blocked(req.client)) {
            let msg = format!(
                "Too many failed sign-ins from this address; wait {} seconds.",
                wait.as_secs().max(1)
            );
            return Reply::page(
                StatusCode::TOO_MANY_REQUESTS,
                pages::sign_in("", "/api_tokens", Some(&msg)),
            );
        }
        let value = req.form("token").unwrap_or("").trim().to_owned();
        let refused = |why: &str| {
            audit::denied("console.sign_in", Some(("POST", "/login")), None, &why);
            if let Some(t) = &self.throttle {
                t.failed(req.client);
            }
            self.sign_in_page(&req, Some(why))
        };
        let token = match self
            .validator
            .validate(value.as_bytes(), clock::now())
            .await
        {
            Verdict::Valid(t) => t,
            Verdict::Unavailable => {
                return Reply::page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::sign_in(
                        "",
                        "/api_tokens",
                        Some("The token store cannot be reached right now; try again shortly."),
                    ),
                )
            }
            Verdict::Expired => return refused("That token has expired."),
            Verdict::Malformed | Verdict::Unknown => {
                return refused("That is not a live token. Paste the whole value (bgt_...).")
            }
        };
        let this = Arc::clone(self);
        super::blocking(move || {
            let caller = match this.store.caller(Arc::clone(&token)) {
                Ok(c) if c.is_member() => c,
                Ok(_) => return refused_page(&this, &req, "That token's member is not active."),
                Err(ControlError::Forbidden(_)) => {
                    return refused_page(
                        &this,
                        &req,
                        "That token has no `api` scope, so it cannot manage tokens. Use a token created with the api scope (Developer Operations Access).",
                    )
                }
                Err(e) => return this.finish(&req, Err(e.into())),
            };
            let kind = match caller.token.kind {
                OwnerKind::Organization => "organization token",
                OwnerKind::Personal => "personal token",
            };
            tracing::info!(target: "bentogate::audit", action = "console.sign_in", actor = caller.user(), actor_uid = %caller.token.uid, subject = kind, outcome = "done", "control-plane change");
            let next = req.form("next").unwrap_or("/api_tokens").to_owned();
            let outcome = this.open_session(Actor::Token(caller.token.uid.clone()), &next);
            this.finish(&req, outcome)
        })
        .await
    }

    /// GET /login/link/SECRET: a button that signs in (a GET never uses the link up, so a link
    /// preview or scanner cannot spend it).
    pub(crate) fn link_page(&self, req: &Req, secret: &str) -> Reply {
        let mut page = self.sign_in_page(req, None);
        if let Some(cookie) = page.cookies.first().cloned() {
            let csrf = cookie
                .split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default();
            page = Reply::ok(pages::link_sign_in(&csrf, secret)).cookie(cookie);
        }
        page
    }

    /// POST /login/link/SECRET: uses the link up and opens a session acting as its member.
    pub(crate) fn sign_in_with_link(&self, req: &Req, secret: &str) -> Result<Reply, ConsoleError> {
        self.check_sign_in_form(req)?;
        let now = clock::now();
        let id = hex::encode(digest_of(secret).0);
        let link = self.store.console().take_link(&id, now)?;
        let member = match link {
            Some(LoginLink { member, .. }) => self.store.member(&member)?.filter(|m| m.active),
            None => None,
        };
        let Some(member) = member else {
            audit::denied(
                "console.sign_in",
                Some(("POST", "/login/link/{secret}")),
                None,
                &"not a live sign-in link",
            );
            if let Some(t) = &self.throttle {
                t.failed(req.client);
            }
            return Ok(Reply::page(
                StatusCode::BAD_REQUEST,
                pages::error_page(
                    None,
                    "This sign-in link does not work",
                    "It was used already, it expired (links live 10 minutes), or it was copied incompletely. Ask an admin for a new one: bentogate member login-link NAME.",
                ),
            ));
        };
        tracing::info!(target: "bentogate::audit", action = "console.sign_in", actor = %member.name, actor_uid = "console", subject = "login link", outcome = "done", "control-plane change");
        self.open_session(Actor::Member(member.name), "/api_tokens")
    }

    /// POST /logout.
    pub(crate) fn sign_out(&self, session: &Session) -> Result<Reply, ConsoleError> {
        self.store.console().end_session(&session.id)?;
        Ok(Reply::redirect("/login").cookie(clear_cookie(self.cookies)))
    }
}

fn refused_page(console: &Console, req: &Req, why: &str) -> Reply {
    audit::denied("console.sign_in", Some(("POST", "/login")), None, &why);
    console.sign_in_page(req, Some(why))
}

/// Creates a one-time sign-in link for `member` (the `bentogate member login-link` command):
/// returns the secret to put in the URL; only its digest is stored.
pub fn create_link(
    console: &dyn crate::store::console::ConsoleStore,
    member: &str,
) -> Result<String, ControlError> {
    let secret = random_hex()?;
    let link = LoginLink {
        id: hex::encode(digest_of(&secret).0),
        member: member.to_owned(),
        expires_at: clock::now() + ONE_TIME_LIFE,
    };
    console.put_link(&link).map_err(ControlError::from)?;
    Ok(secret)
}

/// Where to go after sign-in: only a path of this console (`/x`, not `//host` or a URL), so a
/// crafted link cannot send the member elsewhere.
pub(crate) fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local {
        next
    } else {
        "/api_tokens"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_console() {
        assert_eq!(safe_next("/api_tokens?code=ab"), "/api_tokens?code=ab");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "x",
            "/a\nb",
        ] {
            assert_eq!(safe_next(bad), "/api_tokens", "{bad:?}");
        }
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
