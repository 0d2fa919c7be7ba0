//! The BentoCloud-compatible token API on the admin listener (`/api/v1/...`).
//!
//! Owns the wire: paths, query and body parsing, and the JSON shapes the `bentoml` client's
//! schemas require (ApiTokenSchema, ApiTokenListSchema, UserSchema, OrganizationSchema; see
//! `bentoml/_internal/cloud/schemas/schemasv1.py`). Success is always 200, which the client
//! demands, delete included. The caller's token comes in `X-YATAI-API-TOKEN` or
//! `Authorization: Bearer`. Every change and every refused authorization writes one audit line
//! (target `bentogate::audit`): who, what, which uid; never a value.
//!
//! Members are managed through extension paths the client does not know (`/api/v1/members`),
//! used by `bentogate member ... --endpoint`.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::view::{self, ApiView};
use super::{audit, Caller, ControlError, MemberChange, NewToken, Store};
use crate::clock;
use crate::store::records::{Cursor, PageStart, TokenEdit};
use crate::token::{Scopes, Token};
use crate::validator::{Validator, Verdict};

/// Largest list page served at once.
const MAX_PAGE: usize = 1000;

/// An API answer: status and JSON body.
pub type Answer = (StatusCode, Value);

/// The token API over a writable store, or the refusal of a gateway that holds none.
pub struct Api {
    validator: Arc<Validator>,
    store: Option<Arc<Store>>,
}

impl Api {
    /// The API for this gateway; without a store (the `introspect` source) every path answers
    /// 503 with where tokens are managed instead.
    pub fn new(validator: Arc<Validator>, store: Option<Arc<Store>>) -> Api {
        Api { validator, store }
    }

    /// Serves one `/api/v1/...` request.
    pub async fn handle(&self, parts: &Parts, body: Bytes) -> Answer {
        match self.serve(parts, body).await {
            Ok(answer) => answer,
            Err(e) => (e.status(), json!({ "error": e.to_string() })),
        }
    }

    async fn serve(&self, parts: &Parts, body: Bytes) -> Result<Answer, ControlError> {
        let (method, path, query, headers) = (
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
        );
        let Some(store) = self.store.clone() else {
            return Err(ControlError::Unavailable(
                "this bentogate holds no token store (tokens.source: introspect); manage tokens on its control plane".into(),
            ));
        };
        let caller = self.authenticate(&store, method, path, headers).await?;
        let route: Vec<&str> = path
            .trim_start_matches("/api/v1/")
            .trim_end_matches('/')
            .split('/')
            .collect();
        let blocking = |job: StoreJob| on_store(Arc::clone(&store), job);
        match (method.clone(), route.as_slice()) {
            (Method::GET, ["auth", "current"]) => {
                let c = caller.clone();
                blocking(Box::new(move |s| {
                    let me = s.member(c.user())?;
                    Ok((StatusCode::OK, view::user_value(c.user(), me.as_ref())))
                }))
                .await
            }
            (Method::GET, ["current_org"]) => {
                blocking(Box::new(move |s| {
                    Ok((StatusCode::OK, view::org_json(&s.organization()?)))
                }))
                .await
            }
            (Method::GET, ["api_tokens"]) => {
                let q = ListQuery::parse(query)?;
                blocking(Box::new(move |s| {
                    let page = s.list(&caller, q.search.as_deref(), q.start.clone(), q.count)?;
                    let view = api_view(s, &page.items)?;
                    let now = clock::now();
                    let items: Vec<Value> = page.items.iter().map(|t| view.token(t, now)).collect();
                    let start = match q.start {
                        PageStart::Offset(n) => n,
                        PageStart::After(_) => 0,
                    };
                    Ok((
                        StatusCode::OK,
                        json!({
                            "start": start,
                            "count": items.len(),
                            "total": page.total,
                            "items": items,
                            "next": page.next.map(|c| c.to_string()),
                        }),
                    ))
                }))
                .await
            }
            (Method::POST, ["api_tokens"]) => {
                let req = match parse_create(&body) {
                    Ok(req) => req,
                    Err(e) => return Err(audit::failure(&caller, "token.create", NEW_TOKEN, e)),
                };
                blocking(Box::new(move |s| {
                    let (secret, record) = match s.create(&caller, req) {
                        Ok(created) => created,
                        Err(e) => {
                            return Err(audit::failure(&caller, "token.create", NEW_TOKEN, e))
                        }
                    };
                    // The subject is the new uid; the name the request chose is not logged.
                    audit::change(&caller, "token.create", &record.uid, Ok(()))?;
                    let mut body =
                        api_view(s, std::slice::from_ref(&record))?.token(&record, clock::now());
                    body["token"] = Value::String(secret.expose().to_owned());
                    Ok((StatusCode::OK, body))
                }))
                .await
            }
            (Method::GET, ["api_tokens", uid]) => {
                let uid = (*uid).to_owned();
                blocking(Box::new(move |s| {
                    let t = s.get(&caller, &uid)?;
                    let view = api_view(s, std::slice::from_ref(&t))?;
                    Ok((StatusCode::OK, view.token(&t, clock::now())))
                }))
                .await
            }
            (Method::PATCH, ["api_tokens", uid]) => {
                let uid = (*uid).to_owned();
                let edit = match parse_edit(&body) {
                    Ok(edit) => edit,
                    Err(e) => {
                        return Err(audit::failure(
                            &caller,
                            "token.edit",
                            super::shown_uid(&uid),
                            e,
                        ))
                    }
                };
                blocking(Box::new(move |s| {
                    let outcome = s.edit(&caller, &uid, &edit);
                    let t = audit::change(&caller, "token.edit", super::shown_uid(&uid), outcome)?;
                    let view = api_view(s, std::slice::from_ref(&t))?;
                    Ok((StatusCode::OK, view.token(&t, clock::now())))
                }))
                .await
            }
            (Method::DELETE, ["api_tokens", uid]) => {
                let uid = (*uid).to_owned();
                blocking(Box::new(move |s| {
                    let outcome = s.delete(&caller, &uid);
                    let t =
                        audit::change(&caller, "token.delete", super::shown_uid(&uid), outcome)?;
                    let view = api_view(s, std::slice::from_ref(&t))?;
                    Ok((StatusCode::OK, view.token(&t, clock::now())))
                }))
                .await
            }
            (Method::GET, ["members"]) => {
                blocking(Box::new(move |s| {
                    let members = s.members(&caller)?;
                    Ok((StatusCode::OK, json!({ "items": members })))
                }))
                .await
            }
            (Method::POST, ["members"]) => {
                let m: NewMember = match serde_json::from_slice(&body) {
                    Ok(m) => m,
                    Err(e) => {
                        let e = ControlError::Invalid(json_error(
                            "the member body",
                            &e,
                            "send JSON with `name` and optionally `email` and `admin`",
                        ));
                        return Err(audit::failure(&caller, "member.add", NOT_A_MEMBER, e));
                    }
                };
                let change = MemberChange::Add {
                    name: m.name,
                    email: m.email,
                    admin: m.admin,
                };
                member_change(blocking, caller, change, "member.add").await
            }
            (Method::DELETE, ["members", name]) => {
                let change = MemberChange::Remove {
                    name: (*name).to_owned(),
                };
                member_change(blocking, caller, change, "member.remove").await
            }
            (Method::POST, ["members", name, "promote"]) => {
                let change = MemberChange::Promote {
                    name: (*name).to_owned(),
                };
                member_change(blocking, caller, change, "member.promote").await
            }
            (Method::POST, ["members", name, "deactivate"]) => {
                let change = MemberChange::Deactivate {
                    name: (*name).to_owned(),
                };
                member_change(blocking, caller, change, "member.deactivate").await
            }
            _ => Err(ControlError::NotFound(format!(
                "no API route {} {}; see the README's API reference",
                method_label(method),
                route_label(path)
            ))),
        }
    }

    /// The caller behind the request's token, or the refusal (audited).
    async fn authenticate(
        &self,
        store: &Arc<Store>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, ControlError> {
        let route = route_label(path);
        let request = Some((method_label(method), route.as_str()));
        let refused = |e: ControlError| {
            audit::denied("authorize", request, None, &e);
            e
        };
        let Some(value) = crate::auth::presented_token(headers) else {
            return Err(refused(ControlError::Unauthenticated(
                "no token: send it in X-YATAI-API-TOKEN or Authorization: Bearer",
            )));
        };
        let token = match self.validator.validate(value, clock::now()).await {
            Verdict::Valid(t) => t,
            Verdict::Expired => {
                return Err(refused(ControlError::Unauthenticated(
                    "Bad credentials: the token has expired",
                )))
            }
            // Not the caller's fault: 503, and no failure counted against its address.
            Verdict::Unavailable => return Err(ControlError::Unavailable(
                "the token could not be checked: the token source is unreachable; retry shortly"
                    .into(),
            )),
            Verdict::Malformed | Verdict::Unknown => {
                return Err(refused(ControlError::Unauthenticated(
                    "Bad credentials: not a live token",
                )))
            }
        };
        let store = Arc::clone(store);
        let uid = token.uid.clone();
        let caller = tokio::task::spawn_blocking(move || store.caller(token))
            .await
            .map_err(|_| ControlError::Unavailable("the store task failed".into()))?;
        caller.inspect_err(|e| audit::denied("authorize", request, Some(&uid), e))
    }
}

/// Store work runs on the blocking pool: it reads and fsyncs files.
type StoreJob = Box<dyn FnOnce(&Store) -> Result<Answer, ControlError> + Send>;

async fn on_store(store: Arc<Store>, job: StoreJob) -> Result<Answer, ControlError> {
    tokio::task::spawn_blocking(move || job(&store))
        .await
        .map_err(|_| ControlError::Unavailable("the store task failed".into()))?
}

async fn member_change<Fut>(
    blocking: impl FnOnce(StoreJob) -> Fut,
    caller: Caller,
    change: MemberChange,
    action: &'static str,
) -> Result<Answer, ControlError>
where
    Fut: std::future::Future<Output = Result<Answer, ControlError>>,
{
    blocking(Box::new(move |s| {
        let name = change.name().to_owned();
        let deactivation = matches!(change, MemberChange::Deactivate { .. });
        let outcome = s.change_member(&caller, change);
        // `apply_member_change` refuses a name that breaks the rule, so one that reaches the
        // answer below has passed it; the audit line shows it only if it does.
        let count = audit::change(&caller, action, super::shown_member(&name), outcome)?;
        let body = if deactivation {
            json!({ "member": name, "deleted_tokens": 0, "disabled_tokens": count })
        } else {
            json!({ "member": name, "deleted_tokens": count })
        };
        Ok((StatusCode::OK, body))
    }))
    .await
}

/// A method as audit lines and errors may show it: the standard ones by name, any other (a
/// request may send any token there) as a fixed placeholder.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "(other method)",
    }
}

/// A path as audit lines and errors may show it: the route's shape, never the caller's segments
/// (a token pasted into the path must not reach the log).
fn route_label(path: &str) -> String {
    let rest = path.strip_prefix("/api/v1/").unwrap_or("");
    let mut parts = rest.trim_end_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("api_tokens"), Some(_), _) => "/api/v1/api_tokens/{uid}".into(),
        (Some("members"), Some(_), Some("promote")) => "/api/v1/members/{name}/promote".into(),
        (Some("members"), Some(_), Some("deactivate")) => {
            "/api/v1/members/{name}/deactivate".into()
        }
        (Some("members"), Some(_), _) => "/api/v1/members/{name}".into(),
        (Some(first @ ("api_tokens" | "members" | "current_org")), None, _) => {
            format!("/api/v1/{first}")
        }
        (Some("auth"), Some("current"), None) => "/api/v1/auth/current".into(),
        _ => "/api/v1/(unknown)".into(),
    }
}

struct ListQuery {
    start: PageStart,
    count: usize,
    search: Option<String>,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Result<ListQuery, ControlError> {
        let mut q = ListQuery {
            start: PageStart::Offset(0),
            count: 100,
            search: None,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let number = |v: &str| {
                v.parse::<usize>().map_err(|_| {
                    ControlError::Invalid(format!("`{k}` must be a non-negative integer"))
                })
            };
            match k.as_ref() {
                "start" => q.start = PageStart::Offset(number(&v)?),
                // bentogate's extension: the `next` of the previous page, stable while tokens
                // are created and deleted.
                "after" => {
                    q.start = PageStart::After(Cursor::parse(&v).ok_or_else(|| {
                        ControlError::Invalid(
                            "`after` is not a cursor: pass the `next` of the previous page".into(),
                        )
                    })?)
                }
                "count" => q.count = number(&v)?.min(MAX_PAGE),
                "search" if !v.is_empty() => q.search = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The create body: the client's CreateApiTokenSchema plus bentogate's optional extensions.
#[derive(Deserialize)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    expired_at: Option<String>,
    #[serde(default)]
    deployments: Option<Vec<String>>,
    #[serde(default, alias = "is_global_access")]
    all_deployments: Option<bool>,
    #[serde(default)]
    is_organization_token: Option<bool>,
    #[serde(default)]
    monitoring: Option<bool>,
}

#[derive(Deserialize)]
struct NewMember {
    name: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// The audit subject of a create that failed: the name the request chose is never logged.
const NEW_TOKEN: &str = "(new token)";
/// The audit subject of a member request whose body could not be read.
const NOT_A_MEMBER: &str = "(not a member name)";

/// Describes a body that is not the JSON expected without quoting it: serde's own messages
/// repeat values and field names from the request, so only its category and position are kept.
fn json_error(what: &str, e: &serde_json::Error, fix: &str) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "could not be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Eof => "ends too early",
        serde_json::error::Category::Data => "has a missing field or a value of the wrong type",
    };
    format!(
        "{what} {kind} (line {}, column {}); {fix}",
        e.line(),
        e.column()
    )
}

fn parse_create(body: &[u8]) -> Result<NewToken, ControlError> {
    let b: CreateBody = serde_json::from_slice(body).map_err(|e| {
        ControlError::Invalid(json_error(
            "the create body",
            &e,
            "send JSON with at least `name` (a string); `scopes` and `deployments` are lists of strings",
        ))
    })?;
    let scopes = Scopes::parse(b.scopes.iter().flatten().map(String::as_str))
        .map_err(ControlError::Invalid)?;
    let expired_at = b
        .expired_at
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(clock::parse_absolute)
        .transpose()
        .map_err(|_| {
            ControlError::Invalid(
                "`expired_at` is not a time: use RFC 3339 (2026-12-31T23:59:59Z) or `2026-12-31 23:59:59.000000`".into(),
            )
        })?;
    Ok(NewToken {
        name: b.name,
        description: b.description,
        scopes,
        expired_at,
        deployments: b.deployments.unwrap_or_default(),
        all_deployments: b.all_deployments.unwrap_or(false),
        organization: b.is_organization_token,
        monitoring: b.monitoring.unwrap_or(false),
    })
}

/// The view for `tokens`, with the members they name (one lookup per distinct user).
fn api_view(s: &Store, tokens: &[Token]) -> Result<ApiView, ControlError> {
    let mut users: Vec<&str> = tokens.iter().map(|t| t.user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let mut members = Vec::with_capacity(users.len());
    for user in users {
        members.extend(s.member(user)?);
    }
    Ok(ApiView::new(&s.organization()?, members))
}

/// The edit body: any of `name`, `description`, `expired_at` (null: never).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    expired_at: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one not sent (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn parse_edit(body: &[u8]) -> Result<TokenEdit, ControlError> {
    let b: EditBody = serde_json::from_slice(body).map_err(|e| {
        ControlError::Invalid(json_error(
            "the edit body",
            &e,
            "send JSON with any of `name`, `description` and `expired_at`",
        ))
    })?;
    let expired_at = match b.expired_at {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) if text.is_empty() => Some(None),
        Some(Some(text)) => Some(Some(clock::parse_absolute(&text).map_err(|_| {
            ControlError::Invalid(
                "`expired_at` is not a time: use RFC 3339 (2026-12-31T23:59:59Z) or null for never"
                    .into(),
            )
        })?)),
    };
    Ok(TokenEdit {
        name: b.name,
        description: b.description.map(|d| d.filter(|d| !d.is_empty())),
        expired_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_reads_the_clients_time_format_and_extensions() {
        let b = br#"{"name":"n","description":null,"scopes":["api","read_cluster"],"expired_at":"2030-01-02 03:04:05.000000","deployments":["a"],"is_organization_token":false}"#;
        let t = parse_create(b).unwrap();
        assert_eq!(
            t.expired_at,
            Some(clock::parse_absolute("2030-01-02T03:04:05Z").unwrap())
        );
        assert_eq!(t.scopes.iter().count(), 2);
        assert_eq!(t.deployments, ["a"]);
        assert_eq!(t.organization, Some(false));
        let rfc =
            parse_create(br#"{"name":"n","expired_at":"2030-01-02T03:04:05+01:00"}"#).unwrap();
        assert_eq!(
            rfc.expired_at,
            Some(clock::parse_absolute("2030-01-02T02:04:05Z").unwrap())
        );
        // An unknown scope is refused without repeating it; the valid ones are listed.
        assert!(matches!(
            parse_create(br#"{"name":"n","scopes":["root"]}"#),
            Err(ControlError::Invalid(m)) if !m.contains("root") && m.contains("read_cluster")
        ));
        assert!(parse_create(b"not json").is_err());
    }

    #[test]
    fn create_errors_never_repeat_the_request() {
        let m = "MARKER";
        for body in [
            r#"{"name":"MARKER","scopes":["MARKER"]}"#,
            r#"{"name":"MARKER","expired_at":"MARKER"}"#,
            r#"{"name":"MARKER","deployments":"MARKER"}"#,
            r#"{"name":"MARKER","deployments":[{"MARKER":"MARKER"}]}"#,
            r#"{"name":"MARKER","all_deployments":"MARKER"}"#,
            r#"{"name":"MARKER","is_organization_token":"MARKER"}"#,
            r#"{"name":["MARKER"]}"#,
            r#"{"MARKER":"MARKER"}"#,
            r#"{"name":MARKER}"#,
            r#"{"name":"MARKER","#,
            "MARKER",
        ] {
            let e = parse_create(body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            assert!(!e.to_string().contains(m), "{body}: {e}");
        }
        let e = parse_create(br#"{"name":"n","deployments":"x"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "the create body has a missing field or a value of the wrong type (line 1, column"
            ),
            "{e}"
        );
        assert!(method_label(&Method::from_bytes(b"MARKER").unwrap()) == "(other method)");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }

    #[test]
    fn logged_paths_never_carry_the_callers_segments() {
        let t = "bgt_abcdefghijabcdefghijabcdefghij012345";
        for p in [
            format!("/api/v1/api_tokens/{t}"),
            format!("/api/v1/members/{t}/promote"),
            format!("/api/v1/{t}"),
            format!("/api/v1/auth/{t}"),
        ] {
            assert!(!route_label(&p).contains(t), "{p}");
        }
        assert_eq!(route_label("/api/v1/api_tokens"), "/api/v1/api_tokens");
        assert_eq!(super::super::shown_uid(t), "(not a uid)");
        assert_eq!(
            super::super::shown_uid("0123456789abcdef0123"),
            "0123456789abcdef0123"
        );
    }

    #[test]
    fn list_query_caps_the_page_and_decodes_search() {
        let q = ListQuery::parse(Some("start=5&count=5000&search=my%20tok")).unwrap();
        assert_eq!((q.start, q.count), (PageStart::Offset(5), MAX_PAGE));
        let after = ListQuery::parse(Some("after=42.0123456789abcdef0123")).unwrap();
        assert!(matches!(after.start, PageStart::After(c) if c.created_at == 42));
        assert!(ListQuery::parse(Some("after=MARKER"))
            .is_err_and(|e| !e.to_string().contains("MARKER")));
        assert_eq!(q.search.as_deref(), Some("my tok"));
        assert!(ListQuery::parse(Some("count=-1")).is_err());
    }
}
