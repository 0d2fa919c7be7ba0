//! The web console on the admin listener: the API Tokens pages, sign-in, members, and the
//! `bentoml cloud login` browser flow.
//!
//! Owns the browser's side of the control plane: cookies, CSRF, the security headers, and the
//! forms. Every permission, every token it creates and every change goes through the same
//! [`crate::control::Store`] calls and audit lines as the token API; nothing here decides who may
//! do what, except what to *show* (buttons a member may not use are not drawn, and the server
//! refuses them anyway).
//!
//! Web rules kept here: every state-changing request is a POST carrying the session's CSRF value
//! and coming from this listener's own origin ([`Console::check_post`]); a strict
//! Content-Security-Policy with no inline script or style; `no-store` on every page (some show
//! a token value); assets are embedded.

mod assets;
mod cookies;
mod login;
mod members;
mod pages;
mod session;
mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use maud::Markup;

use crate::config::ConsoleConfig;
use crate::control::{Caller, ControlError, Store};
use crate::throttle::Throttle;
use crate::validator::Validator;
pub use cookies::CookiePolicy;

pub use login::CodeLimiter;
pub use session::create_link;

/// The policy of every console page: nothing from elsewhere, no inline code, never framed,
/// forms only to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// True for the paths the console serves on the admin listener.
pub fn serves(path: &str) -> bool {
    path == "/"
        || path == "/login"
        || path.starts_with("/login/")
        || path == "/logout"
        || path == "/api_tokens"
        || path.starts_with("/api_tokens/")
        || path == "/members"
        || path.starts_with("/members/")
        || path.starts_with("/assets/")
        || login::serves_api(path)
}

/// The console, shared by the admin listener's connections.
pub struct Console {
    store: Arc<Store>,
    validator: Arc<Validator>,
    config: ConsoleConfig,
    cookies: CookiePolicy,
    throttle: Option<Arc<Throttle>>,
    codes: CodeLimiter,
}

/// One console request, read off the wire: what the handlers need and nothing else.
pub(crate) struct Req {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
    origin: Option<String>,
    /// `Sec-Fetch-Site`, set by the browser itself.
    fetch_site: Option<String>,
    /// `http://host` or `https://host`, from the Host header: this listener as the browser
    /// reached it.
    this_origin: Option<String>,
    /// The client address (after trusted proxies).
    client: IpAddr,
}

impl Req {
    fn query(&self, key: &str) -> Option<&str> {
        pair(&self.query, key)
    }

    fn form(&self, key: &str) -> Option<&str> {
        pair(&self.form, key)
    }

    fn form_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.form
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn cookie(&self, key: &str) -> Option<&str> {
        pair(&self.cookies, key)
    }

    /// The path and query, for returning here after sign-in.
    fn here(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let q: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.query.iter())
            .finish();
        format!("{}?{q}", self.path)
    }
}

fn pair<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What a handler answers: a page, a redirect, or an asset; cookies to set; and, for the one
/// page that hands a token to an old CLI's loopback server, that server's origin (the only
/// place besides this console its form and script may send to).
pub(crate) struct Reply {
    status: StatusCode,
    body: Body,
    cookies: Vec<String>,
    form_target: Option<String>,
}

enum Body {
    Page(Markup),
    Redirect(String),
    Asset(&'static str, &'static [u8]),
    Json(serde_json::Value),
}

impl Reply {
    fn page(status: StatusCode, markup: Markup) -> Reply {
        Reply {
            status,
            body: Body::Page(markup),
            cookies: Vec::new(),
            form_target: None,
        }
    }

    fn ok(markup: Markup) -> Reply {
        Reply::page(StatusCode::OK, markup)
    }

    /// 303 to a path of this console.
    fn redirect(to: impl Into<String>) -> Reply {
        Reply {
            status: StatusCode::SEE_OTHER,
            body: Body::Redirect(to.into()),
            cookies: Vec::new(),
            form_target: None,
        }
    }

    fn json(status: StatusCode, value: serde_json::Value) -> Reply {
        Reply {
            status,
            body: Body::Json(value),
            cookies: Vec::new(),
            form_target: None,
        }
    }

    fn cookie(mut self, c: String) -> Reply {
        self.cookies.push(c);
        self
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let (content_type, bytes, location) = match self.body {
            Body::Page(m) => (
                "text/html; charset=utf-8",
                Bytes::from(m.into_string()),
                None,
            ),
            Body::Redirect(to) => ("text/plain; charset=utf-8", Bytes::new(), Some(to)),
            Body::Asset(ct, b) => (ct, Bytes::from_static(b), None),
            Body::Json(v) => ("application/json", Bytes::from(v.to_string()), None),
        };
        let mut res = Response::new(Full::new(bytes));
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(to) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            h.insert(LOCATION, to);
        }
        let csp = match &self.form_target {
            // The old CLI's loopback callback, for this one response: the script sends the
            // token there (connect-src), the form is the fallback (form-action).
            Some(target) => CSP
                .replace(
                    "form-action 'self'",
                    &format!("form-action 'self' {target}"),
                )
                .replace(
                    "connect-src 'self'",
                    &format!("connect-src 'self' {target}"),
                ),
            None => CSP.to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert("content-security-policy", v);
        }
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for c in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(SET_COOKIE, v);
            }
        }
        res
    }
}

/// Why a console request was not served as asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// Not signed in (or the session ended): go to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// A POST without this session's CSRF value or from another origin.
    #[error("{0}")]
    Forged(&'static str),
    /// The control plane refused or failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ConsoleError::Control(e.into())
    }
}

impl Console {
    /// The console over `store`; `validator` checks pasted tokens, `throttle` counts failed
    /// sign-ins against the same bucket as failed tokens anywhere else.
    pub fn new(
        store: Arc<Store>,
        validator: Arc<Validator>,
        config: ConsoleConfig,
        cookies: CookiePolicy,
        throttle: Option<Arc<Throttle>>,
    ) -> Console {
        Console {
            codes: CodeLimiter::new(config.codes_per_minute),
            store,
            validator,
            config,
            cookies,
            throttle,
        }
    }

    /// Serves one console request (`body` already read and bounded by the admin listener).
    pub async fn handle(
        self: &Arc<Self>,
        parts: &Parts,
        body: Bytes,
        peer: IpAddr,
    ) -> Response<Full<Bytes>> {
        let req = self.read(parts, &body, peer);
        if let Some(asset) = assets::serve(&req.path) {
            return asset.into_response();
        }
        if login::serves_api(&req.path) {
            let this = Arc::clone(self);
            return blocking(move || this.login_api(&req)).await.into_response();
        }
        // The one async step: a pasted token is checked by the validator (cache, source).
        if req.method == Method::POST && req.path == "/login" {
            return self.sign_in_with_token(req).await.into_response();
        }
        let this = Arc::clone(self);
        blocking(move || {
            // Judge the session against the records as they are now (a member removed by the
            // CLI a moment ago), not as of the last poll of the file.
            this.store.refresh();
            let outcome = this.serve(&req);
            this.finish(&req, outcome)
        })
        .await
        .into_response()
    }

    fn read(&self, parts: &Parts, body: &Bytes, peer: IpAddr) -> Req {
        let pairs = |s: &[u8]| -> Vec<(String, String)> {
            form_urlencoded::parse(s)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        };
        let form_body = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let cookies = parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let scheme = if self.cookies.secure() {
            "https"
        } else {
            "http"
        };
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()));
        let client = match &self.throttle {
            Some(t) => t.client(peer, &parts.headers),
            None => peer,
        };
        Req {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: pairs(parts.uri.query().unwrap_or("").as_bytes()),
            form: if form_body { pairs(body) } else { Vec::new() },
            cookies,
            origin: parts
                .headers
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            fetch_site: parts
                .headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            this_origin: host.map(|h| format!("{scheme}://{h}")),
            client,
        }
    }

    /// The routes behind a session (everything but sign-in, assets and the login-code API).
    fn serve(&self, req: &Req) -> Result<Reply, ConsoleError> {
        let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        match (&req.method, segments.as_slice()) {
            (&Method::GET, [""]) => Ok(Reply::redirect("/api_tokens")),
            (&Method::GET, ["login"]) => Ok(self.sign_in_page(req, None)),
            (&Method::GET, ["login", "link", secret]) => Ok(self.link_page(req, secret)),
            (&Method::POST, ["login", "link", secret]) => self.sign_in_with_link(req, secret),
            _ => {
                let (session, caller) = self.signed_in(req)?;
                let get = req.method == Method::GET || req.method == Method::HEAD;
                if !get {
                    self.check_post(req, Some(&session.csrf))?;
                }
                let ctx = pages::Ctx::new(&caller, &session.csrf);
                let served = match (get, segments.as_slice()) {
                    (false, ["logout"]) => self.sign_out(&session),
                    (true, ["api_tokens"]) => self.tokens_page(req, &ctx),
                    (false, ["api_tokens"]) => self.create(req, &ctx),
                    (true, ["api_tokens", "new"]) => self.new_token_page(req, &ctx),
                    (true, ["api_tokens", uid, "edit"]) => self.edit_page(&ctx, uid),
                    (false, ["api_tokens", uid, "edit"]) => self.edit(req, &ctx, uid),
                    (true, ["api_tokens", uid, "delete"]) => self.delete_page(&ctx, uid),
                    (false, ["api_tokens", uid, "delete"]) => self.delete(&ctx, uid),
                    (true, ["members"]) => self.members_page(&ctx, None),
                    (false, ["members"]) => self.add_member(req, &ctx),
                    (false, ["members", name, action]) => self.change_member(&ctx, name, action),
                    (false, ["login", "approve"]) => self.approve(req, &ctx),
                    (false, ["login", "deny"]) => self.deny(req, &ctx),
                    _ => Ok(Reply::page(
                        StatusCode::NOT_FOUND,
                        pages::error_page(
                            Some(&ctx),
                            "Page not found",
                            "There is no such console page.",
                        ),
                    )),
                };
                // A refusal inside the console is a page with the console around it.
                match served {
                    Err(ConsoleError::Control(e)) => Ok(Reply::page(
                        e.status(),
                        pages::error_page(Some(&ctx), "That did not work", &e.to_string()),
                    )),
                    other => other,
                }
            }
        }
    }

    /// Turns an error into the page a person can act on.
    fn finish(&self, req: &Req, outcome: Result<Reply, ConsoleError>) -> Reply {
        match outcome {
            Ok(reply) => reply,
            Err(ConsoleError::SignIn) => {
                let next = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &req.here())
                    .finish();
                Reply::redirect(format!("/login?{next}"))
                    .cookie(session::clear_cookie(self.cookies))
            }
            Err(ConsoleError::Forged(why)) => Reply::page(
                StatusCode::FORBIDDEN,
                pages::error_page(None, "Request refused", why),
            ),
            Err(ConsoleError::Control(e)) => Reply::page(
                e.status(),
                pages::error_page(None, "That did not work", &e.to_string()),
            ),
        }
    }

    /// The checks every POST passes: the request comes from this listener's own pages, and it
    /// carries the CSRF value. Same origin means an `Origin` equal to this listener's; or, since
    /// `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on a form POST, an
    /// `Origin` of `null` (or none) together with the browser's own `Sec-Fetch-Site:
    /// same-origin`, which a page elsewhere cannot make it send.
    fn check_post(&self, req: &Req, csrf: Option<&str>) -> Result<(), ConsoleError> {
        let same_site = req.fetch_site.as_deref() == Some("same-origin");
        match (req.origin.as_deref(), &req.this_origin) {
            (Some(o), Some(this)) if o.eq_ignore_ascii_case(this) => {}
            (None | Some("null"), _) if same_site => {}
            _ => {
                return Err(ConsoleError::Forged(
                    "this form was not sent from this console's own pages (Origin missing or different); reload the page and try again",
                ))
            }
        }
        let sent = req.form("csrf").unwrap_or("");
        match csrf {
            Some(expected) if !expected.is_empty() && session::same(sent, expected) => Ok(()),
            _ => Err(ConsoleError::Forged(
                "this form is out of date or was not made by this console (CSRF check failed); reload the page and try again",
            )),
        }
    }

    fn not_admin() -> ConsoleError {
        ConsoleError::Control(ControlError::Forbidden(
            "only admins (signed in with a token that has `write_organization`, or by a sign-in link) may do this".into(),
        ))
    }
}

/// Runs store work on the blocking pool (files are fsynced, the database is waited on).
async fn blocking(work: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Reply::page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error_page(
                None,
                "Internal error",
                "the console's task failed; try again",
            ),
        )
    })
}

/// Refuses a page or action that only admins may use (the control plane refuses the change
/// itself anyway; this keeps a member from a form she cannot submit).
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ConsoleError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Console::not_admin())
    }
}
