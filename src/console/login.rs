//! `bentoml cloud login` "with a web browser": both ways the client does it.
//!
//! bentoml 1.4.20 and later: `GET /api/v1/auth/code` gives a code (unauthenticated, limited per
//! client address and in how many wait at once); the client opens `/api_tokens?code=CODE`,
//! where a signed-in member approves or denies; it polls `GET /api/v1/auth/token?code=CODE`,
//! answered 404 while pending or unknown and `{"token"}` exactly once. Codes live 10 minutes.
//!
//! Older releases (1.3.x to 1.4.1x): the client listens on a loopback port and opens
//! `/api_tokens?callback=http://localhost:PORT`; on approval the page posts `code=<value>` to
//! that callback. Only a loopback `http://localhost:PORT` or `http://127.0.0.1:PORT` is
//! accepted (no open redirect, no value sent off the machine), and only that one response's
//! CSP lets a form go there.
//!
//! Either way the approved token is a personal `api`-scope token made by the one issuance
//! function, audited like any other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use http::{Method, StatusCode};
use serde_json::json;

use super::pages::{self, Approval, Ctx};
use super::session::random_hex;
use super::{Console, ConsoleError, Reply, Req};
use crate::clock::{self, UnixSeconds};
use crate::control::{audit, ControlError, NewToken};
use crate::store::console::{digest_of, seal, unseal, CodeState};
use crate::token::{Scope, Scopes};

/// True for the browser-login API paths the console answers (without a session).
pub fn serves_api(path: &str) -> bool {
    matches!(path, "/api/v1/auth/code" | "/api/v1/auth/token")
}

/// Codes asked for per client address per minute: an anonymous caller must not fill the
/// pending-code table, nor learn how full it is, at will.
pub struct CodeLimiter {
    per_minute: u32,
    seen: Mutex<HashMap<IpAddr, (UnixSeconds, u32)>>,
}

/// Addresses remembered at once; past this the oldest minute's entries are dropped.
const MAX_TRACKED: usize = 10_000;

impl CodeLimiter {
    /// A limiter allowing `per_minute` codes per address per minute.
    pub fn new(per_minute: u32) -> CodeLimiter {
        CodeLimiter {
            per_minute,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one code for `client`; false when its minute's allowance is spent.
    fn allow(&self, client: IpAddr, now: UnixSeconds) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let minute = now / 60;
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (m, _)| *m == minute);
        }
        let entry = seen.entry(client).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }
}

/// The callback an old client gave, if it is one this console may post a token to: `http`,
/// host `localhost` or `127.0.0.1`, an explicit port, nothing else but an optional `/`.
/// Returns the origin (`http://localhost:PORT`).
pub(crate) fn loopback_callback(callback: &str) -> Option<String> {
    let rest = callback.strip_prefix("http://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':')?;
    if !matches!(host, "localhost" | "127.0.0.1") {
        return None;
    }
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(format!("http://{host}:{port}"))
}

/// The default name of a token a browser login makes: `bentoml-cli-<date>`.
fn default_name(now: UnixSeconds) -> String {
    let date = clock::format(now);
    format!("bentoml-cli-{}", date.get(..10).unwrap_or(&date))
}

impl Console {
    /// `GET /api/v1/auth/code` and `GET /api/v1/auth/token?code=CODE`.
    pub(crate) fn login_api(&self, req: &Req) -> Reply {
        match self.login_api_inner(req) {
            Ok(reply) => reply,
            Err(e) => Reply::json(e.status(), json!({ "error": e.to_string() })),
        }
    }

    fn login_api_inner(&self, req: &Req) -> Result<Reply, ControlError> {
        if req.method != Method::GET {
            return Err(ControlError::Invalid("use GET".into()));
        }
        let now = clock::now();
        let console = self.store.console();
        if req.path == "/api/v1/auth/code" {
            if !self.codes.allow(req.client, now) {
                return Ok(Reply::json(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "error": "too many login codes asked for from this address; wait a minute" }),
                ));
            }
            let code = random_hex()?;
            let from = req.client.to_string();
            if !console.add_code(&digest_of(&code), &from, now, self.config.pending_codes)? {
                return Ok(Reply::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "too many browser logins are waiting; try again in a few minutes" }),
                ));
            }
            return Ok(Reply::json(StatusCode::OK, json!({ "code": code })));
        }
        let code = req.query("code").unwrap_or("");
        let not_yet = || {
            Reply::json(
                StatusCode::NOT_FOUND,
                json!({ "error": "no approved login for this code (yet)" }),
            )
        };
        if code.is_empty() || code.len() > 64 {
            return Ok(not_yet());
        }
        match console.take_code(&digest_of(code), now)? {
            Some(sealed) => match unseal(code, &sealed) {
                Some(value) => Ok(Reply::json(StatusCode::OK, json!({ "token": value }))),
                None => Ok(not_yet()),
            },
            None => Ok(not_yet()),
        }
    }

    /// The approval panel for `/api_tokens?code=` or `?callback=`, if the request has either.
    pub(crate) fn approval_panel(
        &self,
        req: &Req,
        _ctx: &Ctx,
    ) -> Result<Option<Approval>, ConsoleError> {
        let now = clock::now();
        if let Some(code) = req.query("code") {
            let live = if code.is_empty() || code.len() > 64 {
                None
            } else {
                self.store.console().code(&digest_of(code), now)?
            };
            return Ok(Some(match live {
                Some(c) if c.state == CodeState::Pending => Approval::Code {
                    code: code.to_owned(),
                    from: c.from,
                    asked_at: c.created_at,
                    name: default_name(now),
                },
                _ => Approval::Dead,
            }));
        }
        if let Some(callback) = req.query("callback") {
            return Ok(Some(match loopback_callback(callback) {
                Some(origin) => Approval::Callback {
                    callback: origin,
                    name: default_name(now),
                },
                None => Approval::BadCallback,
            }));
        }
        Ok(None)
    }

    /// Makes the CLI's token: personal, `api` scope, expiring no later than a pasted token
    /// the session stands on (the grant rule would refuse otherwise).
    fn cli_token(&self, req: &Req, ctx: &Ctx) -> Result<(String, String), ControlError> {
        let now = clock::now();
        let name = req
            .form("name")
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| default_name(now));
        let request = NewToken {
            name,
            description: Some("created by a browser login of the bentoml CLI".into()),
            scopes: Scopes::from_slice(&[Scope::Api]),
            expired_at: ctx.caller.token.expired_at,
            organization: Some(false),
            ..NewToken::default()
        };
        let outcome = self.store.create(&ctx.caller, request);
        let (secret, record) = match outcome {
            Ok(made) => made,
            Err(e) => {
                return Err(audit::failure(
                    &ctx.caller,
                    "token.create",
                    "(new token)",
                    e,
                ))
            }
        };
        audit::change(&ctx.caller, "token.create", &record.uid, Ok(()))?;
        Ok((secret.expose().to_owned(), record.uid))
    }

    /// POST /login/approve: approves a code (the value waits, sealed, for the CLI's poll) or
    /// hands the value to an old CLI's loopback callback.
    pub(crate) fn approve(&self, req: &Req, ctx: &Ctx) -> Result<Reply, ConsoleError> {
        let now = clock::now();
        if let Some(code) = req.form("code").filter(|c| !c.is_empty() && c.len() <= 64) {
            let id = digest_of(code);
            let pending = self
                .store
                .console()
                .code(&id, now)?
                .is_some_and(|c| c.state == CodeState::Pending);
            if !pending {
                return Ok(Reply::ok(pages::login_result(ctx, false)));
            }
            let (value, uid) = self.cli_token(req, ctx)?;
            if !self
                .store
                .console()
                .settle_code(&id, Some(seal(code, &value)), now)?
            {
                // Expired or settled in between: the token must not outlive its purpose.
                let _ = self.store.delete(&ctx.caller, &uid);
                return Ok(Reply::ok(pages::login_result(ctx, false)));
            }
            tracing::info!(target: "bentogate::audit", action = "login.approve", actor = ctx.caller.user(), actor_uid = %ctx.caller.token.uid, subject = %uid, outcome = "done", "control-plane change");
            return Ok(Reply::ok(pages::login_result(ctx, true)));
        }
        if let Some(origin) = req.form("callback").and_then(loopback_callback) {
            let (value, uid) = self.cli_token(req, ctx)?;
            tracing::info!(target: "bentogate::audit", action = "login.approve", actor = ctx.caller.user(), actor_uid = %ctx.caller.token.uid, subject = %uid, outcome = "done", "control-plane change");
            let mut reply = Reply::ok(pages::callback_handoff(ctx, &origin, &value));
            reply.form_target = Some(origin);
            return Ok(reply);
        }
        Err(ControlError::Invalid(
            "nothing to approve: open the link your bentoml CLI printed".into(),
        )
        .into())
    }

    /// POST /login/deny: the code is dead.
    pub(crate) fn deny(&self, req: &Req, ctx: &Ctx) -> Result<Reply, ConsoleError> {
        if let Some(code) = req.form("code").filter(|c| !c.is_empty() && c.len() <= 64) {
            self.store
                .console()
                .settle_code(&digest_of(code), None, clock::now())?;
        }
        tracing::info!(target: "bentogate::audit", action = "login.deny", actor = ctx.caller.user(), actor_uid = %ctx.caller.token.uid, subject = "(login code)", outcome = "done", "control-plane change");
        Ok(Reply::redirect("/api_tokens"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_callbacks_are_accepted() {
        assert_eq!(
            loopback_callback("http://localhost:51234").as_deref(),
            Some("http://localhost:51234")
        );
        assert_eq!(
            loopback_callback("http://127.0.0.1:8080/").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        for bad in [
            "https://localhost:1234",
            "http://localhost",
            "http://localhost:0",
            "http://localhost:99999",
            "http://evil.example:80",
            "http://localhost.evil.example:80",
            "http://user@localhost:80",
            "http://localhost:80/path",
            "http://localhost:80?x=1",
            "http://[::1]:80",
            "http://127.0.0.2:80",
            "javascript:alert(1)",
            "//localhost:80",
        ] {
            assert_eq!(loopback_callback(bad), None, "{bad}");
        }
    }

    #[test]
    fn codes_are_limited_per_address_per_minute() {
        let l = CodeLimiter::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(l.allow(a, 600) && l.allow(a, 601));
        assert!(!l.allow(a, 602));
        assert!(l.allow(b, 602), "another address has its own allowance");
        assert!(l.allow(a, 660), "a new minute");
    }

    #[test]
    fn the_default_name_has_the_date() {
        assert_eq!(default_name(1_800_000_000), "bentoml-cli-2027-01-15");
    }
}
