//! The token and member commands against a remote control plane (`--endpoint`).
//!
//! Owns the HTTP calls to the control-plane API and turning its JSON back into the records the
//! local mode prints, so both modes share flags and output. The caller's token comes from
//! `BENTO_CLOUD_API_KEY` (never a flag: command lines show up in `ps`) and travels in
//! `X-YATAI-API-TOKEN`, as the bentoml client sends it.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::{output, CliError, CreateArgs, MemberCommand, Output, TokenCommand};
use crate::clock;
use crate::store::Member;
use crate::token::{Digest, OwnerKind, Scopes, Secret, Token};

/// The environment variable holding the caller's token, as the bentoml client names it.
pub const API_KEY_ENV: &str = "BENTO_CLOUD_API_KEY";
/// The environment variable naming the control plane, as the bentoml client names it.
pub const ENDPOINT_ENV: &str = "BENTO_CLOUD_API_ENDPOINT";
const TIMEOUT: Duration = Duration::from_secs(30);

/// A control plane and the token to call it with.
pub struct Remote {
    base: String,
    key: Secret,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    /// Checks the endpoint and reads the key from the environment; for `https://`, trusts
    /// `ca_file` (else the platform's roots) and always checks the host name.
    pub fn new(endpoint: &str, ca_file: Option<&std::path::Path>) -> Result<Remote, CliError> {
        let base = endpoint.trim_end_matches('/').to_owned();
        let scheme = base
            .parse::<Uri>()
            .ok()
            .filter(|u| u.authority().is_some())
            .and_then(|u| u.scheme_str().map(str::to_owned));
        let https = match scheme.as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(CliError::Usage(format!(
                    "--endpoint `{endpoint}` is not an http:// or https:// URL with a host; give the admin listener, like https://control-plane:9901"
                )))
            }
        };
        if !https && ca_file.is_some() {
            return Err(CliError::Usage(
                "--ca-file is for an https:// --endpoint; the endpoint given is http://".into(),
            ));
        }
        let ca = match ca_file {
            Some(p) => crate::config::CaSource::File(p.to_owned()),
            None => crate::config::CaSource::System,
        };
        let tls = if https {
            crate::tls::client::config(crate::tls::client::Verify::Full(&ca), None, &[])
                .map_err(|e| CliError::Usage(format!("--ca-file: {e}")))?
        } else {
            crate::tls::client::empty()
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let key = std::env::var(API_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "set {API_KEY_ENV} to a token with the `api` scope to use --endpoint"
                ))
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Io(format!("cannot start the async runtime: {e}")))?;
        Ok(Remote {
            base,
            key: Secret::new(key.trim().to_owned()),
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
        })
    }

    /// One API call; a non-200 answer becomes the error the API explained.
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut key = HeaderValue::from_str(self.key.expose())
            .map_err(|_| CliError::Usage(format!("{API_KEY_ENV} is not a token")))?;
        key.set_sensitive(true);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .header(crate::auth::TOKEN_HEADER, key);
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| CliError::Usage(format!("{url}: {e}")))?;
        let unreachable = |e: String| {
            let hint = if e.contains("certificate") {
                "the endpoint's certificate must chain to --ca-file (else the platform's roots) and name the endpoint's host"
            } else {
                "is bentogate's admin listener there?"
            };
            CliError::Io(format!("{}: {e}; {hint}", self.base))
        };
        let (status, bytes) = self.runtime.block_on(async {
            let exchange = async {
                let res = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| unreachable(crate::tls::client::chain(&e)))?;
                let status = res.status();
                let bytes = Limited::new(res.into_body(), 64 * 1024 * 1024)
                    .collect()
                    .await
                    .map_err(|e| unreachable(e.to_string()))?
                    .to_bytes();
                Ok::<_, CliError>((status, bytes))
            };
            tokio::time::timeout(TIMEOUT, exchange)
                .await
                .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))?
        })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let said = value["error"]
            .as_str()
            .unwrap_or("no explanation")
            .to_owned();
        match status {
            StatusCode::OK => Ok(value),
            StatusCode::NOT_FOUND => Err(CliError::NotFound(said)),
            StatusCode::BAD_REQUEST => Err(CliError::Usage(said)),
            StatusCode::CONFLICT => Err(CliError::Conflict(format!("{}: 409: {said}", self.base))),
            StatusCode::UNAUTHORIZED => Err(CliError::Remote(format!(
                "{}: 401: {said}; check {API_KEY_ENV}",
                self.base
            ))),
            s => Err(CliError::Remote(format!(
                "{}: {}: {said}",
                self.base,
                s.as_u16()
            ))),
        }
    }

    /// Runs a token command against the control plane.
    pub fn token(
        &self,
        command: TokenCommand,
        format: Output,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let now = clock::now();
        match command {
            TokenCommand::Create(args) => {
                let body = self.create_body(args, now)?;
                let created = self.call(Method::POST, "/api/v1/api_tokens", Some(body))?;
                let secret = Secret::new(created["token"].as_str().unwrap_or_default().to_owned());
                output::created(out, format, &record(&created)?, &secret)?;
            }
            TokenCommand::List { search } => {
                let mut all = Vec::new();
                loop {
                    let mut path = format!("/api/v1/api_tokens?start={}&count=1000", all.len());
                    if let Some(s) = &search {
                        path.push_str("&search=");
                        path.extend(form_urlencoded::byte_serialize(s.as_bytes()));
                    }
                    let page = self.call(Method::GET, &path, None)?;
                    let items = page["items"].as_array().cloned().unwrap_or_default();
                    let total = page["total"].as_u64().unwrap_or(0) as usize;
                    let empty = items.is_empty();
                    for item in &items {
                        all.push(record(item)?);
                    }
                    if empty || all.len() >= total {
                        break;
                    }
                }
                let refs: Vec<&Token> = all.iter().collect();
                output::tokens(out, format, &refs, now)?;
            }
            TokenCommand::Get { uid } => {
                let t = self.call(Method::GET, &format!("/api/v1/api_tokens/{}", segment(&uid)), None)?;
                output::token(out, format, &record(&t)?, now)?;
            }
            TokenCommand::Delete { uid } => {
                let t = self.call(Method::DELETE, &format!("/api/v1/api_tokens/{}", segment(&uid)), None)?;
                let t = record(&t)?;
                output::message(out, format, &format!("deleted token {} ({})", t.uid, t.name))?;
            }
            TokenCommand::Import { .. } => {
                return Err(CliError::Usage(
                    "token import works on the local token file only; run it with --config on the control plane's host".into(),
                ))
            }
        }
        Ok(())
    }

    fn create_body(&self, args: CreateArgs, now: clock::UnixSeconds) -> Result<Value, CliError> {
        let expired_at = super::expiry(args.expires.as_deref(), now)?;
        let organization = if args.org {
            Some(true)
        } else if let Some(user) = &args.user {
            let me = self.call(Method::GET, "/api/v1/auth/current", None)?;
            if me["name"].as_str() != Some(user.as_str()) {
                return Err(CliError::Usage(format!(
                    "remotely, a personal token belongs to the calling token's user; --user {user} needs that user's own token"
                )));
            }
            Some(false)
        } else {
            None
        };
        Ok(json!({
            "name": args.name,
            "description": args.description,
            "scopes": args.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "expired_at": expired_at.map(clock::format),
            "deployments": args.deployments,
            "all_deployments": args.all_deployments,
            "is_organization_token": organization,
            "monitoring": args.monitoring,
        }))
    }

    /// Runs a member command against the control plane.
    pub fn member(
        &self,
        command: MemberCommand,
        format: Output,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        let said = match command {
            MemberCommand::Add { name, email, admin } => {
                self.call(
                    Method::POST,
                    "/api/v1/members",
                    Some(json!({ "name": name, "email": email, "admin": admin })),
                )?;
                format!("added member {name}")
            }
            MemberCommand::Remove { name } => {
                let r = self.call(
                    Method::DELETE,
                    &format!("/api/v1/members/{}", segment(&name)),
                    None,
                )?;
                let killed = r["deleted_tokens"].as_u64().unwrap_or(0);
                format!("removed member {name} and deleted {killed} personal tokens")
            }
            MemberCommand::Promote { name } => {
                self.call(
                    Method::POST,
                    &format!("/api/v1/members/{}/promote", segment(&name)),
                    None,
                )?;
                format!("{name} is now an admin")
            }
            MemberCommand::Deactivate { name } => {
                let r = self.call(
                    Method::POST,
                    &format!("/api/v1/members/{}/deactivate", segment(&name)),
                    None,
                )?;
                let off = r["disabled_tokens"].as_u64().unwrap_or(0);
                format!("deactivated member {name}; her {off} personal tokens no longer work")
            }
            MemberCommand::LoginLink { .. } => {
                return Err(CliError::Usage(
                    "member login-link runs where the token store is, not through --endpoint"
                        .into(),
                ))
            }
            MemberCommand::List => {
                let r = self.call(Method::GET, "/api/v1/members", None)?;
                let members: Vec<Member> =
                    serde_json::from_value(r["items"].clone()).map_err(|e| {
                        CliError::Remote(format!("{}: unreadable member list: {e}", self.base))
                    })?;
                output::members(out, format, &members)?;
                return Ok(());
            }
        };
        output::message(out, format, &said)?;
        Ok(())
    }
}

/// A path segment with everything but unreserved characters escaped.
fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The API's token JSON as the record the local mode prints (no digest: none is ever sent).
fn record(v: &Value) -> Result<Token, CliError> {
    let bad = |k: &str| CliError::Remote(format!("the control plane's answer lacks `{k}`"));
    let text = |k: &str| v[k].as_str().ok_or_else(|| bad(k)).map(str::to_owned);
    let time = |k: &str| -> Result<Option<clock::UnixSeconds>, CliError> {
        match v[k].as_str() {
            None => Ok(None),
            Some(s) => clock::parse_absolute(s)
                .map(Some)
                .map_err(|e| CliError::Remote(format!("`{k}`: {e}"))),
        }
    };
    let created_at = time("created_at")?.ok_or_else(|| bad("created_at"))?;
    let scopes = Scopes::parse(
        v["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
    .map_err(CliError::Remote)?;
    let mut t = Token {
        description: v["description"]
            .as_str()
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
        expired_at: time("expired_at")?,
        last_used_at: time("last_used_at")?,
        updated_at: time("updated_at")?.unwrap_or(created_at),
        scopes,
        deployments: v["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect(),
        all_deployments: v["all_deployments"].as_bool().unwrap_or(false),
        monitoring: v["monitoring"].as_bool().unwrap_or(false),
        ..Token::new(
            text("uid")?,
            text("name")?,
            Digest([0; 32]),
            None,
            created_at,
        )
    };
    t.user = v["user"]["name"].as_str().unwrap_or_default().to_owned();
    if v["is_organization_token"] == false {
        t.kind = OwnerKind::Personal;
    }
    Ok(t)
}
