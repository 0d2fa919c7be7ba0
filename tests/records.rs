//! The file store at the grain of one record: the shared store suite, a change that is never
//! parsed back, and the CLI and the server writing one token file at the same time.
#![allow(clippy::unwrap_used)]

mod common;

use bentogate::token::Scope;
use common::*;
use http::StatusCode;
use serde_json::{json, Value};

#[test]
fn the_file_store_keeps_console_state_by_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir.path().join("tokens.yaml"));
    console_suite::conformance(&store);
}

#[test]
fn the_file_store_passes_the_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir.path().join("tokens.yaml"));
    store_suite::conformance(&store);
    // What it wrote reads back as the same records.
    let again = file_store(&dir.path().join("tokens.yaml"));
    use bentogate::store::TokenStore;
    let (a, b) = (store.export().unwrap(), again.export().unwrap());
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.members, b.members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_server_write_one_token_file_at_once_and_nothing_is_lost() {
    let u = upstream().await;
    let body = format!(
        "tokens: {{file: tokens.yaml}}\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    );
    let dir = tempfile::tempdir().unwrap();
    // The CLI reads the same configuration file the server was started from.
    let config_path = dir.path().join("bentogate.yaml");
    std::fs::write(
        &config_path,
        format!("listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\n{body}"),
    )
    .unwrap();
    let g = gate_in(dir, &body).await;
    let (_, root) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::Api, Scope::WriteOrganization],
            all: true,
            ..Grant::default()
        },
    );
    let reloads = |text: &str| {
        metric_or_zero(
            text,
            "bentogate_token_file_reloads_total{outcome=\"success\"}",
        )
    };
    // Let the watcher see the fixture, then count reloads from here.
    until_status(g.addr, "/a/x", Some(&root), StatusCode::OK).await;
    let reloads_before = reloads(&metrics(g.admin).await);

    const EACH: usize = 25;
    let bin = env!("CARGO_BIN_EXE_bentogate");
    let config = config_path.clone();
    let cli = tokio::task::spawn_blocking(move || {
        let mut uids = Vec::new();
        for i in 0..EACH {
            let out = std::process::Command::new(bin)
                .args([
                    "token",
                    "create",
                    &format!("cli-{i}"),
                    "--deployment",
                    "a",
                    "-o",
                    "json",
                ])
                .arg("--config")
                .arg(&config)
                .env_remove("BENTOGATE_CONFIG")
                .env_remove("BENTO_CLOUD_API_ENDPOINT")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            uids.push(v["uid"].as_str().unwrap().to_owned());
        }
        uids
    });
    let mut api_uids = Vec::new();
    for i in 0..EACH {
        let (s, v) = api_call(
            g.admin,
            "POST",
            "/api/v1/api_tokens",
            &root,
            json!({"name": format!("api-{i}"), "deployments": ["a"]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        api_uids.push(v["uid"].as_str().unwrap().to_owned());
    }
    let cli_uids = cli.await.unwrap();

    // Every token from both writers is in the file and served; none twice.
    let file =
        bentogate::store::TokenFile::parse(&std::fs::read_to_string(&g.tokens).unwrap(), &g.tokens)
            .unwrap();
    for uid in api_uids.iter().chain(&cli_uids) {
        assert_eq!(
            file.tokens.iter().filter(|t| &t.uid == uid).count(),
            1,
            "{uid}"
        );
    }
    assert_eq!(file.tokens.len(), 1 + 2 * EACH);
    let (s, list) = api_call(
        g.admin,
        "GET",
        "/api/v1/api_tokens?count=1000",
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["total"], 1 + 2 * EACH, "{list}");

    // The server never parsed back its own writes: only the CLI's changes were reloads (the
    // watcher may fold several CLI writes into one reload).
    let after = reloads(&metrics(g.admin).await);
    assert!(
        after - reloads_before <= EACH as f64,
        "{} reloads for {EACH} CLI writes and {EACH} API writes",
        after - reloads_before
    );
}

/// An unwritable last-use location (a read-only Secret mount's folder) is reported once, and
/// once more when it works again; never on every flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_last_use_location_is_warned_about_once_not_per_flush() {
    use std::time::{Duration, Instant};
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let (uid, value) = add_token(&tokens, Grant::to(&["a"]));
    let config = dir.path().join("bentogate.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\n\
             admin: {{address: \"127.0.0.1:0\"}}\n\
             shutdown: {{delay: 0s}}\n\
             log: {{format: json, access: false}}\n\
             tokens: {{file: tokens.yaml, usage_flush: 100ms, last_used_file: state/last-used.json}}\n\
             deployments:\n{}",
            deployment("a", u.addr, "protected", "")
        ),
    )
    .unwrap();
    let (_child, raw, listening) = serve_binary(&config);
    let (tx, lines) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in raw {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut seen = Vec::new();
    // Reads log lines into `seen` until one matches `want` (true) or `limit` passes (false).
    fn next(
        lines: &std::sync::mpsc::Receiver<serde_json::Value>,
        seen: &mut Vec<serde_json::Value>,
        want: &dyn Fn(&serde_json::Value) -> bool,
        limit: Duration,
    ) -> bool {
        let deadline = Instant::now() + limit;
        while let Ok(v) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let hit = want(&v);
            seen.push(v);
            if hit {
                return true;
            }
        }
        false
    }
    let proxy: std::net::SocketAddr = listening["proxy_addr"].as_str().unwrap().parse().unwrap();
    // Uses in four different seconds: at least three flushes with a newer use, all failing.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3_500) {
        assert_eq!(status(proxy, "/a/x", Some(&value)).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warned = |v: &serde_json::Value| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("could not write last-use times"))
    };
    next(&lines, &mut seen, &|_| false, Duration::from_millis(300));
    assert_eq!(seen.iter().filter(|v| warned(v)).count(), 1, "{seen:?}");
    // The location becomes writable: one line says so, and the uses are there.
    std::fs::create_dir(dir.path().join("state")).unwrap();
    assert_eq!(status(proxy, "/a/x", Some(&value)).await, StatusCode::OK);
    assert!(next(
        &lines,
        &mut seen,
        &|v| v["message"] == "last-use times written again",
        Duration::from_secs(5)
    ));
    let written = std::fs::read_to_string(dir.path().join("state/last-used.json")).unwrap();
    assert!(written.contains(&uid), "{written}");
    assert_eq!(seen.iter().filter(|v| warned(v)).count(), 1);
    assert!(!dir.path().join("tokens.yaml.last-used").exists());
}

/// `PATCH /api/v1/api_tokens/{uid}`: the name, description and expiry change under the rule
/// that governs deleting the token; what it grants never does; bad bodies are refused unechoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_edited_by_whoever_may_delete_it() {
    let u = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let (_, root) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::Api, Scope::WriteOrganization],
            all: true,
            ..Grant::default()
        },
    );
    add_member_to(&g.tokens, "ann", None, false);
    let (_, ann) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::Api],
            deployments: vec!["a"],
            user: Some("ann"),
            ..Grant::default()
        },
    );
    until_status(g.addr, "/a/x", Some(&ann), StatusCode::OK).await;
    let create = |who: String, name: &'static str| {
        let admin = g.admin;
        async move {
            let (s, v) = api_call(
                admin,
                "POST",
                "/api/v1/api_tokens",
                &who,
                json!({"name": name, "deployments": ["a"]}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            (
                v["uid"].as_str().unwrap().to_owned(),
                v["token"].as_str().unwrap().to_owned(),
            )
        }
    };
    let patch = |who: String, uid: String, body: Value| {
        let admin = g.admin;
        async move {
            api_call(
                admin,
                "PATCH",
                &format!("/api/v1/api_tokens/{uid}"),
                &who,
                body,
            )
            .await
        }
    };
    let (org_uid, org_value) = create(root.clone(), "shared").await;
    let (s, v) = patch(
        root.clone(),
        org_uid.clone(),
        json!({"name": "renamed", "description": "nightly", "expired_at": "2030-01-02T03:04:05Z"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["name"], &v["description"], &v["expired_at"]),
        (
            &json!("renamed"),
            &json!("nightly"),
            &json!("2030-01-02T03:04:05Z")
        )
    );
    assert_eq!(v["deployments"], json!(["a"]));
    assert!(v.get("token").is_none(), "an edit never shows a value");
    let (_, got) = api_call(
        g.admin,
        "GET",
        &format!("/api/v1/api_tokens/{org_uid}"),
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(got["name"], "renamed");
    // The token still works: an edit never changes what it is.
    assert_eq!(
        status(g.addr, "/a/x", Some(&org_value)).await,
        StatusCode::OK
    );
    // A member may not edit an organization token, but may edit her own.
    let (s, _) = patch(ann.clone(), org_uid.clone(), json!({"name": "mine"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (own_uid, _) = create(ann.clone(), "ann's").await;
    let (s, v) = patch(ann.clone(), own_uid.clone(), json!({"description": null})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Bad edits: 400 without the request's content; unknown tokens 404.
    for body in [
        json!({"name": ""}),
        json!({"expired_at": "2001-01-01T00:00:00Z"}),
        json!({"MARKER": 1}),
        json!({"expired_at": "MARKER"}),
    ] {
        let (s, v) = patch(root.clone(), org_uid.clone(), body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(!v.to_string().contains("MARKER"), "{v}");
    }
    let (s, _) = patch(
        root.clone(),
        "0123456789abcdef0123".into(),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A token created through the API may name only deployments the routes serve; the list follows
/// a reload. The refusal lists the deployments that exist, never the name asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_deployment_no_route_serves_and_follows_reloads() {
    let u = upstream().await;
    let routes = |names: &[&str]| {
        names
            .iter()
            .map(|n| deployment(n, u.addr, "protected", &format!("    path_prefix: /{n}\n")))
            .collect::<String>()
    };
    let g = gate(&format!("deployments:\n{}", routes(&["a"]))).await;
    let (_, root) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::Api, Scope::WriteOrganization],
            all: true,
            ..Grant::default()
        },
    );
    let create = |deployments: Value| {
        let (admin, root) = (g.admin, root.clone());
        async move {
            api_call(
                admin,
                "POST",
                "/api/v1/api_tokens",
                &root,
                json!({"name": "t", "deployments": deployments}),
            )
            .await
        }
    };
    let (s, v) = create(json!(["a", "MARKER"])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let message = v["error"].as_str().unwrap();
    assert!(
        message.contains("the deployments are: a") && !message.contains("MARKER"),
        "{v}"
    );
    assert_eq!(create(json!(["a"])).await.0, StatusCode::OK);
    // After a reload that adds `b`, `b` is accepted.
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\ndeployments:\n{}",
        routes(&["a", "b"])
    );
    let config = bentogate::config::Config::parse(&text, "test.yaml", g.dir.path()).unwrap();
    g.running.reloader.reload(config).unwrap();
    let (s, v) = create(json!(["b"])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
