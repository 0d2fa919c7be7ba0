//! The control plane on a running gateway: the BentoCloud-compatible token API and its
//! permission rules, RFC 7662 introspection, last-use times, and two gateways where a sidecar
//! on the `introspect` source asks a control plane holding the token file.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bentogate::token::Scope;
use common::*;
use http::StatusCode;
use serde_json::{json, Value};

const API: Scope = Scope::Api;
const WRITE_ORG: Scope = Scope::WriteOrganization;

async fn control_gate(extra_tokens: &str) -> (Upstream, Gate) {
    let u = upstream().await;
    // Tokens created through the API may name only routed deployments: `b` and `secret-deploy`
    // are routed under their own prefixes, `a` takes the rest.
    let g = gate(&format!(
        "tokens:\n  usage_flush: 200ms\n{extra_tokens}deployments:\n{}{}{}",
        deployment("a", u.addr, "protected", ""),
        deployment("b", u.addr, "protected", "    path_prefix: /b\n"),
        deployment(
            "secret-deploy",
            u.addr,
            "protected",
            "    path_prefix: /secret-deploy\n"
        )
    ))
    .await;
    (u, g)
}

fn add_member(g: &Gate, name: &str, admin: bool) {
    add_member_to(&g.tokens, name, Some(format!("{name}@example.com")), admin);
}

/// An API call with the token in the bentoml client's header; returns status and JSON.
async fn api(g: &Gate, method: &str, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    api_call(g.admin, method, path, token, body).await
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn tokens_are_created_listed_read_and_deleted_in_the_clients_shapes() {
    let (_u, g) = control_gate("").await;
    // It creates a token for deployment `a`, so it must reach `a` itself.
    let (admin_uid, admin) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![API, WRITE_ORG, Scope::ReadCluster],
            all: true,
            ..Grant::default()
        },
    );

    let (s, me) = api(&g, "GET", "/api/v1/auth/current", &admin, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    for k in ["name", "email", "first_name", "last_name"] {
        assert!(me[k].is_string(), "auth/current lacks {k}: {me}");
    }
    let (s, org) = api(&g, "GET", "/api/v1/current_org", &admin, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(org["name"], "default");
    assert!(org["created_at"].is_string() && org["uid"].is_string());

    // The body exactly as bentoml 1.4 sends it: naive local time with microseconds.
    let (s, created) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "ci", "description": null, "scopes": ["api"], "expired_at": "2099-01-02 03:04:05.000000",
               "deployments": ["a"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let value = created["token"].as_str().unwrap().to_owned();
    let uid = created["uid"].as_str().unwrap().to_owned();
    assert!(value.starts_with("bgt_"));
    assert_eq!(created["expired_at"], "2099-01-02T03:04:05Z");
    assert_eq!(created["is_organization_token"], true);
    assert_eq!(created["is_expired"], false);
    assert_eq!(created["deployments"], json!(["a"]));
    for k in [
        "created_at",
        "updated_at",
        "deleted_at",
        "resource_type",
        "labels",
        "description",
        "scopes",
        "user",
        "organization",
        "last_used_at",
        "is_global_access",
        "is_api_token",
    ] {
        assert!(created.get(k).is_some(), "create answer lacks {k}");
    }
    // The new token works on the data plane at once.
    assert_eq!(status(g.addr, "/", Some(&value)).await, StatusCode::OK);

    let (s, got) = api(
        &g,
        "GET",
        &format!("/api/v1/api_tokens/{uid}"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["name"], "ci");
    assert!(got.get("token").is_none(), "a value is shown only once");

    let (s, list) = api(
        &g,
        "GET",
        "/api/v1/api_tokens?start=0&count=100",
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(names(&list), ["ci", &format!("test-{admin_uid}")]);
    assert!(!list.to_string().contains(&value) && !list.to_string().contains("sha256"));
    let (_, found) = api(
        &g,
        "GET",
        "/api/v1/api_tokens?search=ci",
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(names(&found), ["ci"]);
    let (_, page) = api(
        &g,
        "GET",
        "/api/v1/api_tokens?start=1&count=1",
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(
        (
            page["start"].as_u64(),
            page["count"].as_u64(),
            page["total"].as_u64()
        ),
        (Some(1), Some(1), Some(2))
    );

    let (s, _) = api(
        &g,
        "DELETE",
        &format!("/api/v1/api_tokens/{uid}"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the client treats anything but 200 as failure"
    );
    // Deleted through the API: refused by this gateway before the API answered.
    assert_eq!(
        status(g.addr, "/", Some(&value)).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = api(
        &g,
        "GET",
        &format!("/api/v1/api_tokens/{uid}"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api(
        &g,
        "DELETE",
        &format!("/api/v1/api_tokens/{uid}"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // RFC 3339 too; a past time and an unknown scope are clear 400s.
    let (s, _) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "r", "scopes": ["api"], "expired_at": "2099-01-02T03:04:05+02:00"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "p", "scopes": ["api"], "expired_at": "2001-01-01 00:00:00.000000"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("past"), "{e}");
    let (s, _) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "x", "scopes": ["root"]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "none"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "a token with no access: {e}");
}

#[tokio::test]
async fn who_may_do_what_follows_the_scopes_and_roles() {
    let (_u, g) = control_gate("").await;
    add_member(&g, "ann", true);
    add_member(&g, "bob", false);
    let scoped = |user: &'static str, scopes: Vec<Scope>| Grant {
        scopes,
        user: Some(user),
        ..Grant::default()
    };
    let (_, ann) = add_token(
        &g.tokens,
        Grant {
            all: true,
            ..scoped("ann", vec![API, WRITE_ORG])
        },
    );
    let (_, ann_plain) = add_token(&g.tokens, scoped("ann", vec![API]));
    let (_, bob) = add_token(&g.tokens, scoped("bob", vec![API, WRITE_ORG]));
    let (_, endpoint_only) = add_token(&g.tokens, Grant::to(&["a"]));
    let (_, monitoring_only) = add_token(
        &g.tokens,
        Grant {
            monitoring: true,
            ..Grant::default()
        },
    );
    let (_, org_plain) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![API],
            ..Grant::default()
        },
    );

    // Unauthenticated and wrongly-scoped callers.
    let a = request(&client(), "GET", g.admin, "/api/v1/api_tokens", &[], "").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let (s, _) = api(
        &g,
        "GET",
        "/api/v1/api_tokens",
        "bgt_notarealtokenatallxxxxxxxxxxxxxxxxxx",
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = api(&g, "GET", "/api/v1/api_tokens", &endpoint_only, Value::Null).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a protected-endpoint token has no API access"
    );
    let (s, _) = api(
        &g,
        "GET",
        "/api/v1/api_tokens",
        &monitoring_only,
        Value::Null,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a monitoring token has no API access"
    );
    // Authorization: Bearer works as well as X-YATAI-API-TOKEN.
    let bearer = format!("Bearer {ann}");
    let a = request(
        &client(),
        "GET",
        g.admin,
        "/api/v1/auth/current",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.contains("ann@example.com"));

    // Bob (a member) makes a personal token; he may not make an organization token.
    let (s, mine) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &bob,
        json!({"name": "bobs", "scopes": ["api"]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["is_organization_token"], false);
    assert_eq!(mine["user"]["name"], "bob");
    let (s, _) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &bob,
        json!({"name": "o", "scopes": ["api"], "is_organization_token": true}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // An admin without write_organization on the presented token may not either.
    let (s, _) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &ann_plain,
        json!({"name": "o", "deployments": ["a"], "is_organization_token": true}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // No token may mint a scope it does not hold.
    let (s, _) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &ann_plain,
        json!({"name": "up", "scopes": ["api", "write_organization"]}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Ann (admin + write_organization) makes one.
    let (s, org) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &ann,
        json!({"name": "shared", "all_deployments": true, "is_organization_token": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(org["is_global_access"], true);
    let org_uid = org["uid"].as_str().unwrap().to_owned();

    // Bob sees his own personal tokens and every organization token, not Ann's personal ones.
    let (_, list) = api(&g, "GET", "/api/v1/api_tokens", &bob, Value::Null).await;
    let seen = names(&list);
    assert!(
        seen.contains(&"bobs".to_owned()) && seen.contains(&"shared".to_owned()),
        "{seen:?}"
    );
    for t in list["items"].as_array().unwrap() {
        assert!(
            t["is_organization_token"] == true || t["user"]["name"] == "bob",
            "bob must not see ann's personal tokens: {t}"
        );
    }
    // ...and may not delete an organization token.
    let (s, _) = api(
        &g,
        "DELETE",
        &format!("/api/v1/api_tokens/{org_uid}"),
        &bob,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api(
        &g,
        "DELETE",
        &format!("/api/v1/api_tokens/{org_uid}"),
        &org_plain,
        Value::Null,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "an organization token without write_organization"
    );
    let (s, _) = api(
        &g,
        "DELETE",
        &format!("/api/v1/api_tokens/{org_uid}"),
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // Bob deletes his own.
    let bobs = mine["uid"].as_str().unwrap();
    let (s, _) = api(
        &g,
        "DELETE",
        &format!("/api/v1/api_tokens/{bobs}"),
        &bob,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // Members: only admins change them; removing Bob kills his personal tokens at once.
    let (s, _) = api(&g, "POST", "/api/v1/members", &bob, json!({"name": "eve"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api(&g, "POST", "/api/v1/members", &ann, json!({"name": "eve"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, removed) = api(&g, "DELETE", "/api/v1/members/bob", &ann, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(removed["deleted_tokens"], 1);
    let (s, _) = api(&g, "GET", "/api/v1/api_tokens", &bob, Value::Null).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "bob's token died with his membership"
    );
}

#[tokio::test]
async fn introspection_answers_rfc_7662_to_read_cluster_callers() {
    let (_u, g) = control_gate("").await;
    let (_, reader) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::ReadCluster],
            ..Grant::default()
        },
    );
    let (uid, value) = add_token(
        &g.tokens,
        Grant {
            deployments: vec!["a", "b"],
            scopes: vec![API],
            expired_at: Some(4_000_000_000),
            ..Grant::default()
        },
    );
    let form = format!("token={value}");
    let ask = |caller: Option<String>, body: String| {
        let admin = g.admin;
        async move {
            let headers: Vec<(&str, &str)> = caller
                .iter()
                .map(|c| ("x-yatai-api-token", c.as_str()))
                .chain([("content-type", "application/x-www-form-urlencoded")])
                .collect();
            let a = request(&client(), "POST", admin, "/v1/introspect", &headers, &body).await;
            (a.status, serde_json::from_str::<Value>(&a.body).unwrap())
        }
    };
    let (s, _) = ask(None, form.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = ask(Some(value.clone()), form.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the caller needs read_cluster");
    let (s, a) = ask(Some(reader.clone()), form).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["active"], true);
    assert_eq!(a["client_id"], uid.as_str());
    assert_eq!(a["scope"], "api");
    assert_eq!(a["aud"], json!(["a", "b"]));
    assert_eq!(a["exp"], 4_000_000_000i64);
    assert_eq!(a["sub"], "admin");
    assert!(!a.to_string().contains(&value));
    let (s, a) = ask(
        Some(reader.clone()),
        "token=bgt_unknownunknownunknownunknownxxxxxxxxx".into(),
    )
    .await;
    assert_eq!((s, a), (StatusCode::OK, json!({"active": false})));
    let (s, _) = ask(Some(reader), "nothing=here".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn last_use_is_recorded_in_batches_and_flushed_on_shutdown() {
    let (_u, g) = control_gate("").await;
    let (uid, value) = add_token(
        &g.tokens,
        Grant {
            deployments: vec!["a"],
            scopes: vec![API],
            ..Grant::default()
        },
    );
    let (_, before) = api(
        &g,
        "GET",
        &format!("/api/v1/api_tokens/{uid}"),
        &value,
        Value::Null,
    )
    .await;
    assert_eq!(before["last_used_at"], Value::Null);
    for _ in 0..50 {
        assert_eq!(status(g.addr, "/", Some(&value)).await, StatusCode::OK);
    }
    // usage_flush is 200ms here: the API shows the use well within a second.
    eventually(Duration::from_secs(3), || async {
        let (_, t) = api(
            &g,
            "GET",
            &format!("/api/v1/api_tokens/{uid}"),
            &value,
            Value::Null,
        )
        .await;
        t["last_used_at"].is_string()
    })
    .await;
    // The CLI shows it too.
    let mut out = Vec::new();
    bentogate::cli::token(
        bentogate::cli::TokenCommand::Get { uid: uid.clone() },
        &file_store(&g.tokens),
        bentogate::cli::Output::Json,
        &mut out,
    )
    .unwrap();
    let shown: Value = serde_json::from_slice(&out).unwrap();
    assert!(shown["last_used_at"].is_string(), "{shown}");

    // A long interval: only the flush at shutdown can write the use.
    let u = upstream().await;
    let g = gate(&format!(
        "tokens:\n  usage_flush: 1h\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let (uid, value) = add_token(&g.tokens, Grant::to(&["a"]));
    until_status(g.addr, "/", Some(&value), StatusCode::OK).await;
    let file = g.tokens.clone();
    let last_used = |file: &std::path::Path| {
        let f = bentogate::store::usage::load_for_display(file).unwrap();
        f.tokens.iter().find(|t| t.uid == uid).unwrap().last_used_at
    };
    assert_eq!(last_used(&file), None, "no write per request");
    let token_file_before = std::fs::read(&file).unwrap();
    g.running.stop().await;
    assert!(
        last_used(&file).is_some(),
        "the shutdown flush wrote the last use"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        token_file_before,
        "recording uses never rewrites the token file"
    );
}

/// A sidecar on the `introspect` source in front of an upstream, asking a control plane that
/// holds the token file.
#[tokio::test]
async fn a_sidecar_asks_the_control_plane_and_fails_closed_without_it() {
    let (_u, cp) = control_gate("").await;
    let (_, admin) = add_token(
        &cp.tokens,
        Grant {
            scopes: vec![API, WRITE_ORG, Scope::ReadCluster],
            all: true,
            ..Grant::default()
        },
    );
    let (_, reader) = add_token(
        &cp.tokens,
        Grant {
            scopes: vec![Scope::ReadCluster],
            ..Grant::default()
        },
    );
    let u = upstream().await;
    let sidecar = gate(&format!(
        "tokens:\n  source: introspect\n  cache: {{ ttl: 1s, negative_ttl: 1s }}\n  introspect: {{ url: \"http://{}/v1/introspect\", token: \"{reader}\", stale_if_error: 60s }}\ndeployments:\n{}",
        cp.admin,
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    assert_eq!(status(sidecar.admin, "/readyz", None).await, StatusCode::OK);
    // The sidecar holds no store: its API says where tokens are managed.
    let (s, e) = api(&sidecar, "GET", "/api/v1/api_tokens", &admin, Value::Null).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(e["error"].as_str().unwrap().contains("introspect"));

    // Create on the control plane, use through the sidecar.
    let (_, created) = api(
        &cp,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "svc", "deployments": ["a"]}),
    )
    .await;
    let value = created["token"].as_str().unwrap().to_owned();
    let uid = created["uid"].as_str().unwrap().to_owned();
    let (_, other) = api(
        &cp,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "elsewhere", "deployments": ["b"]}),
    )
    .await;
    assert_eq!(
        status(sidecar.addr, "/", Some(&value)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(sidecar.addr, "/", Some(other["token"].as_str().unwrap())).await,
        StatusCode::FORBIDDEN,
        "the sidecar applies the deployments the control plane reported"
    );

    // Concurrent first uses of one token make one remote lookup.
    let (_, fresh) = api(
        &cp,
        "POST",
        "/api/v1/api_tokens",
        &admin,
        json!({"name": "burst", "deployments": ["a"]}),
    )
    .await;
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    let lookups = |m: &str| metric(m, "bentogate_token_source_lookups_total");
    let before = lookups(&metrics(sidecar.admin).await);
    let burst: Vec<_> = (0..16)
        .map(|_| {
            let (addr, v) = (sidecar.addr, fresh.clone());
            tokio::spawn(async move { status(addr, "/", Some(&v)).await })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.unwrap(), StatusCode::OK);
    }
    let after = lookups(&metrics(sidecar.admin).await);
    assert_eq!(after - before, 1.0, "16 concurrent misses, one lookup");

    // Delete on the control plane: the sidecar refuses it within its TTL (1 s).
    let (s, _) = api(
        &cp,
        "DELETE",
        &format!("/api/v1/api_tokens/{uid}"),
        &admin,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let took = until_status(sidecar.addr, "/", Some(&value), StatusCode::UNAUTHORIZED).await;
    assert!(
        took <= Duration::from_millis(1500),
        "revocation took {took:?}"
    );

    // Control plane down: the recently seen token keeps passing (stale-if-error), an unknown
    // one fails closed, /readyz says so, and metrics count it.
    assert_eq!(
        status(sidecar.addr, "/", Some(&fresh)).await,
        StatusCode::OK
    );
    cp.running.stop().await;
    // Once the 1 s TTL has lapsed the token can only pass as a stale entry: keep calling until
    // a stale hit is counted, every call answered 200.
    eventually(Duration::from_secs(5), || async {
        assert_eq!(
            status(sidecar.addr, "/", Some(&fresh)).await,
            StatusCode::OK
        );
        let m = metrics(sidecar.admin).await;
        metric(&m, "bentogate_token_source_stale_hits_total") >= 1.0
    })
    .await;
    let never_issued = bentogate::token::Secret::generate().unwrap();
    let unknown = never_issued.expose();
    let a = send(
        &client(),
        sidecar.addr,
        "/",
        &[("authorization", &format!("Bearer {unknown}"))],
    )
    .await;
    // The caller is blameless: 503 with Retry-After, not a 401 saying its token is bad.
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "2");
    assert!(a.body.contains("unreachable"), "{}", a.body);
    until_status(
        sidecar.admin,
        "/readyz",
        None,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    let m = metrics(sidecar.admin).await;
    assert!(
        metric(&m, "bentogate_token_source_stale_hits_total") >= 1.0,
        "{m}"
    );
    assert!(metric(&m, "bentogate_token_source_failures_total") >= 1.0);
    assert!(
        metric(
            &m,
            "bentogate_requests_total{deployment=\"a\",outcome=\"source_unavailable\"}"
        ) >= 1.0,
        "{m}"
    );
}

/// The sidecar's cache: a negative answer lasts the negative TTL (a token added on the control
/// plane passes soon after), and a cached positive never outlives the token's expiry.
#[tokio::test]
async fn a_sidecar_caches_negatives_briefly_and_never_past_expiry() {
    let (_u, cp) = control_gate("").await;
    let (_, reader) = add_token(
        &cp.tokens,
        Grant {
            scopes: vec![Scope::ReadCluster],
            ..Grant::default()
        },
    );
    let u = upstream().await;
    let sidecar = gate(&format!(
        "tokens:\n  source: introspect\n  cache: {{ ttl: 60s, negative_ttl: 1s }}\n  introspect: {{ url: \"http://{}/v1/introspect\", token: \"{reader}\" }}\ndeployments:\n{}",
        cp.admin,
        deployment("a", u.addr, "protected", "")
    ))
    .await;

    let late = bentogate::token::Secret::generate().unwrap();
    assert_eq!(
        status(sidecar.addr, "/", Some(late.expose())).await,
        StatusCode::UNAUTHORIZED
    );
    add_record(&cp.tokens, "late-uid", late.digest(), Grant::to(&["a"]));
    let took = until_status(sidecar.addr, "/", Some(late.expose()), StatusCode::OK).await;
    assert!(
        took <= Duration::from_millis(1500),
        "negative lasted {took:?}"
    );

    // Expires in 2 s; the 60 s TTL must not keep it alive.
    let (_, short) = add_token(
        &cp.tokens,
        Grant {
            deployments: vec!["a"],
            expired_at: Some(bentogate::clock::now() + 2),
            ..Grant::default()
        },
    );
    until_status(sidecar.addr, "/", Some(&short), StatusCode::OK).await;
    let took = until_status(sidecar.addr, "/", Some(&short), StatusCode::UNAUTHORIZED).await;
    assert!(took <= Duration::from_millis(2500), "expiry took {took:?}");
}

/// Every token list the admin can see, for before/after comparisons.
async fn all_tokens(g: &Gate, admin: &str) -> Value {
    let (s, list) = api(
        g,
        "GET",
        "/api/v1/api_tokens?start=0&count=1000",
        admin,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    list
}

/// The security rule: a token may create only a token no more powerful than itself. For each
/// kind of grant, a caller that lacks it is refused (403, nothing written, nothing from the
/// request repeated) and a caller that holds it succeeds with the very same request.
#[tokio::test]
async fn a_token_may_not_create_a_token_more_powerful_than_itself() {
    let (_u, g) = control_gate("").await;
    add_member(&g, "ann", true);
    add_member(&g, "bob", false);
    let (_, admin) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![API, WRITE_ORG],
            all: true,
            monitoring: true,
            user: Some("ann"),
            ..Grant::default()
        },
    );
    let now = bentogate::clock::now();
    let soon = now + 3_600;
    let later = now + 7_200;
    let at = |t: i64| bentogate::clock::format(t);
    // Bob's personal tokens, each lacking (weak) or holding (strong) one grant.
    let bob = |scopes: Vec<Scope>, deployments: Vec<&'static str>, edit: fn(&mut Grant)| {
        let mut grant = Grant {
            scopes,
            deployments,
            user: Some("bob"),
            ..Grant::default()
        };
        edit(&mut grant);
        add_token(&g.tokens, grant).1
    };
    let expiring_soon: fn(&mut Grant) = |g| g.expired_at = Some(bentogate::clock::now() + 3_600);
    let expiring_late: fn(&mut Grant) = |g| g.expired_at = Some(bentogate::clock::now() + 86_400);
    let cases: Vec<(&str, String, String, Value)> = vec![
        (
            "a scope the caller lacks",
            bob(vec![API], vec!["a"], |_| {}),
            bob(vec![API, Scope::ReadCluster], vec![], |_| {}),
            json!({"name": "secret-name-1", "scopes": ["api", "read_cluster"]}),
        ),
        (
            "All Deployments from a single-deployment token",
            bob(vec![API], vec!["a"], |_| {}),
            bob(vec![API], vec![], |g| g.all = true),
            json!({"name": "secret-name-2", "all_deployments": true}),
        ),
        (
            "a deployment the caller cannot reach",
            bob(vec![API], vec!["a"], |_| {}),
            bob(vec![API], vec!["a", "secret-deploy"], |_| {}),
            json!({"name": "secret-name-3", "deployments": ["a", "secret-deploy"]}),
        ),
        (
            "monitoring from a non-monitoring token",
            bob(vec![API], vec!["a"], |_| {}),
            bob(vec![API], vec![], |g| g.monitoring = true),
            json!({"name": "secret-name-4", "monitoring": true}),
        ),
        (
            "no expiry from an expiring token",
            bob(vec![API], vec![], expiring_soon),
            bob(vec![API], vec![], |_| {}),
            json!({"name": "secret-name-5", "scopes": ["api"]}),
        ),
        (
            "a later expiry than the caller's",
            bob(vec![API], vec![], expiring_soon),
            bob(vec![API], vec![], expiring_late),
            json!({"name": "secret-name-6", "scopes": ["api"], "expired_at": at(later)}),
        ),
    ];
    for (what, weak, strong, body) in &cases {
        let before = all_tokens(&g, &admin).await;
        let (s, e) = api(&g, "POST", "/api/v1/api_tokens", weak, body.clone()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{what}: {e}");
        let message = e["error"].as_str().unwrap();
        for echoed in ["secret-name", "secret-deploy", &at(later)] {
            assert!(
                !message.contains(echoed),
                "{what}: the refusal repeats the request: {message}"
            );
        }
        assert_eq!(
            all_tokens(&g, &admin).await,
            before,
            "{what}: a refused create wrote something"
        );
        let (s, made) = api(&g, "POST", "/api/v1/api_tokens", strong, body.clone()).await;
        assert_eq!(
            s,
            StatusCode::OK,
            "{what}, from a token that holds it: {made}"
        );
    }
    // An expiring caller may create a token that expires no later than itself.
    let expiring = &cases[4].1;
    let (s, made) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        expiring,
        json!({"name": "shorter", "scopes": ["api"], "expired_at": at(soon - 60)}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{made}");
    // Each refusal says which grant is too wide.
    let (_, e) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &cases[1].1,
        cases[1].3.clone(),
    )
    .await;
    assert!(
        e["error"].as_str().unwrap().contains("All Deployments"),
        "{e}"
    );
    let (_, e) = api(
        &g,
        "POST",
        "/api/v1/api_tokens",
        &cases[3].1,
        cases[3].3.clone(),
    )
    .await;
    assert!(e["error"].as_str().unwrap().contains("monitoring"), "{e}");
}

/// The organization always keeps an active admin: the last one cannot be removed or
/// deactivated (409), through the API or the local CLI. Deactivating a member kills her
/// personal tokens at once.
#[tokio::test]
async fn the_last_active_admin_cannot_be_removed_or_deactivated() {
    let (_u, g) = control_gate("").await;
    add_member(&g, "ann", true);
    add_member(&g, "bob", false);
    let personal = |user: &'static str, scopes: Vec<Scope>| Grant {
        scopes,
        deployments: vec!["a"],
        user: Some(user),
        ..Grant::default()
    };
    let (_, ann) = add_token(&g.tokens, personal("ann", vec![API, WRITE_ORG]));
    let (_, bob) = add_token(&g.tokens, personal("bob", vec![API]));

    for (method, path) in [
        ("DELETE", "/api/v1/members/ann"),
        ("POST", "/api/v1/members/ann/deactivate"),
    ] {
        let (s, e) = api(&g, method, path, &ann, Value::Null).await;
        assert_eq!(s, StatusCode::CONFLICT, "{method} {path}: {e}");
        assert!(
            e["error"].as_str().unwrap().contains("last active admin"),
            "{e}"
        );
    }
    // The local CLI shares the rule.
    for command in [
        bentogate::cli::MemberCommand::Remove { name: "ann".into() },
        bentogate::cli::MemberCommand::Deactivate { name: "ann".into() },
    ] {
        let mut out = Vec::new();
        let e = bentogate::cli::member(
            command,
            &file_store(&g.tokens),
            bentogate::cli::Output::Table,
            &mut out,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("last active admin"), "{e}");
    }
    let (s, _) = api(&g, "GET", "/api/v1/auth/current", &ann, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "ann is still an active admin");

    // Deactivating bob: listed still, his personal tokens refused on both planes at once.
    assert_eq!(status(g.addr, "/", Some(&bob)).await, StatusCode::OK);
    let (s, r) = api(
        &g,
        "POST",
        "/api/v1/members/bob/deactivate",
        &ann,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["disabled_tokens"], 1);
    assert_eq!(
        status(g.addr, "/", Some(&bob)).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = api(&g, "GET", "/api/v1/auth/current", &bob, Value::Null).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, members) = api(&g, "GET", "/api/v1/members", &ann, Value::Null).await;
    let bob_listed = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(bob_listed["active"], false, "{members}");

    // With a second active admin, the first may go.
    let (s, _) = api(
        &g,
        "POST",
        "/api/v1/members",
        &ann,
        json!({"name": "cy", "admin": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, r) = api(&g, "DELETE", "/api/v1/members/ann", &ann, Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        status(g.addr, "/", Some(&ann)).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Nothing a request sends comes back in an answer: refused creates and member changes carrying
/// a marker in every field answer without it.
#[tokio::test]
async fn answers_never_repeat_what_the_request_sent() {
    let (_u, g) = control_gate("").await;
    add_member(&g, "ann", true);
    let (_, admin) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![API, WRITE_ORG],
            deployments: vec!["a"],
            user: Some("ann"),
            ..Grant::default()
        },
    );
    const M: &str = "MARKER";
    let bodies = [
        r#"{"name":"MARKER","scopes":["MARKER"]}"#.to_owned(),
        r#"{"name":"MARKER","scopes":["api"],"expired_at":"MARKER"}"#.to_owned(),
        r#"{"name":"MARKER","deployments":"MARKER"}"#.to_owned(),
        r#"{"name":"MARKER","deployments":[{"MARKER":1}]}"#.to_owned(),
        r#"{"name":"MARKER","description":"MARKER","deployments":["MARKER"]}"#.to_owned(),
        r#"{"name":"MARKER","scopes":["api"],"all_deployments":true}"#.to_owned(),
        r#"{"MARKER":"MARKER"}"#.to_owned(),
        r#"{"name":MARKER}"#.to_owned(),
        "MARKER".to_owned(),
    ];
    let before = all_tokens(&g, &admin).await;
    for body in &bodies {
        let a = request(
            &client(),
            "POST",
            g.admin,
            "/api/v1/api_tokens",
            &[("x-yatai-api-token", &admin)],
            body,
        )
        .await;
        assert!(a.status.is_client_error(), "{body}: {}", a.status);
        assert!(!a.body.contains(M), "{body} came back: {}", a.body);
    }
    assert_eq!(all_tokens(&g, &admin).await, before);
    for (method, path, body) in [
        ("POST", "/api/v1/members", r#"{"name":"MARKER x"}"#),
        (
            "POST",
            "/api/v1/members",
            r#"{"name":"MARKER","admin":"MARKER"}"#,
        ),
        ("POST", "/api/v1/members", r#"{"MARKER":1}"#),
        ("DELETE", "/api/v1/members/MARKER%20x", ""),
        ("DELETE", "/api/v1/members/MARKER", ""),
        ("POST", "/api/v1/members/MARKER/promote", ""),
        ("POST", "/api/v1/members/MARKER%2F../deactivate", ""),
        ("MARKER", "/api/v1/api_tokens", ""),
        ("GET", "/api/v1/api_tokens?start=MARKER", ""),
    ] {
        let a = request(
            &client(),
            method,
            g.admin,
            path,
            &[("x-yatai-api-token", &admin)],
            body,
        )
        .await;
        assert!(a.status.is_client_error(), "{method} {path}: {}", a.status);
        assert!(!a.body.contains(M), "{method} {path} {body}: {}", a.body);
    }
}
