//! The real `bentoml` client (1.4.40 from PyPI, installed by tests/bentoml/venv.sh into a
//! cached virtualenv) against a running bentogate: its SDK and CLI manage tokens, and
//! `SyncHTTPClient` calls a real `bentoml serve` service through a protected route.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bentogate::token::Scope;
use common::*;
use http::StatusCode;
use serde_json::Value;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bentoml")
}

/// The virtualenv's python, installing the pinned client on first use.
fn python() -> PathBuf {
    bentoml_python()
}

/// Runs tests/bentoml/client.py in `mode` against `g`'s admin listener as `key`; returns the
/// JSON line it printed.
async fn client_py(
    g: &Gate,
    key: &str,
    home: &Path,
    args: &[&str],
    call_token: Option<&str>,
) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(here().join("client.py"))
        .args(args)
        .env("BENTO_CLOUD_API_ENDPOINT", format!("http://{}", g.admin))
        .env("BENTO_CLOUD_API_KEY", key)
        .env("BENTOML_HOME", home)
        .env("BENTOML_DO_NOT_TRACK", "True")
        .env_remove("CALL_TOKEN");
    if let Some(t) = call_token {
        cmd.env("CALL_TOKEN", t);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "client.py {args:?} failed:\n{stdout}\n{stderr}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("client.py printed {stdout}"))
}

/// An organization admin token holding everything the tests delegate with it: the scopes the
/// clients ask for (`api`, `read_cluster`) and All Deployments. It lacks `write_cluster`, which
/// client.py asks for to see the refusal.
fn admin_token(g: &Gate) -> String {
    add_token(
        &g.tokens,
        Grant {
            scopes: vec![
                Scope::Api,
                Scope::ReadOrganization,
                Scope::WriteOrganization,
                Scope::ReadCluster,
            ],
            all: true,
            ..Grant::default()
        },
    )
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bentoml_sdk_and_cli_manage_bentogate_tokens() {
    let u = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let key = admin_token(&g);
    let home = tempfile::tempdir().unwrap();

    let sdk = client_py(&g, &key, home.path(), &["sdk"], None).await;
    assert_eq!(sdk["listed"], 1, "the SDK listed the admin token: {sdk}");
    let cli = client_py(&g, &key, home.path(), &["cli"], None).await;
    assert_eq!(cli["login"], "ok");

    // Both clients' tokens were really created and deleted in the token file.
    let text = std::fs::read_to_string(&g.tokens).unwrap();
    for made in [&sdk["created_uid"], &cli["created_uid"]] {
        assert!(
            !text.contains(made.as_str().unwrap()),
            "{made} still stored"
        );
    }
    // `bentoml cloud login` wrote the endpoint where the client keeps its contexts.
    let contexts = std::fs::read_to_string(home.path().join(".yatai.yaml"))
        .unwrap_or_else(|e| panic!("`bentoml cloud login` wrote no .yatai.yaml: {e}"));
    assert!(contexts.contains(&g.admin.to_string()), "{contexts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_bento_service_is_called_through_the_gateway() {
    let home = tempfile::tempdir().unwrap();
    // `bentoml serve` is a supervisor that forks its API workers: the whole process group
    // (and the workers that left it) ends when `bento` drops.
    let bento = bento_service().await;
    let service = bento.addr;

    let g = gate(&format!(
        "deployments:\n{}",
        deployment(
            "echo",
            service,
            "protected",
            "    public_paths: [/readyz]\n"
        )
    ))
    .await;
    let key = admin_token(&g);
    // The bentoml client cannot ask for Protected Endpoint Access; the API's extension can.
    let created = request(
        &client(),
        "POST",
        g.admin,
        "/api/v1/api_tokens",
        &[("x-yatai-api-token", &key)],
        r#"{"name": "caller", "deployments": ["echo"]}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::OK);
    let created: Value = serde_json::from_str(&created.body).unwrap();
    let value = created["token"].as_str().unwrap();
    let uid = created["uid"].as_str().unwrap();
    let url = format!("http://{}", g.addr);

    let with = client_py(&g, &key, home.path(), &["call", &url], Some(value)).await;
    assert_eq!(with["result"], "hi", "{with}");
    let without = client_py(&g, &key, home.path(), &["call", &url], None).await;
    assert!(
        without.get("error").is_some(),
        "no token must not pass: {without}"
    );

    client_py(&g, &key, home.path(), &["delete", uid], None).await;
    let after = client_py(&g, &key, home.path(), &["call", &url], Some(value)).await;
    assert!(
        after.get("error").is_some(),
        "a deleted token must not pass: {after}"
    );
    // The gateway, not the service, refused both: 401s counted on the route.
    let m = metrics(g.admin).await;
    assert!(
        metric(
            &m,
            "bentogate_requests_total{deployment=\"echo\",outcome=\"unauthorized\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "bentogate_requests_total{deployment=\"echo\",outcome=\"allowed\"}"
        ) >= 1.0
    );
}
