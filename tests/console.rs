//! The web console in a real headless Chromium against the real binary: sign-in both ways, a
//! token of each access type created in the browser and used on the proxy, show-once, edit,
//! delete, organization tokens, members, what a member is not offered and is refused, CSRF and
//! Origin refusals, no CSP violation and no serious accessibility violation on any page.
//! Screenshots of every page go to target/screenshots/.

#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::Path;
use std::process::Command;

use browser::Browser;
use common::*;
use http::StatusCode;
use serde_json::Value;

/// A running binary with two protected deployments, a monitoring route, members ann (admin) and
/// bob, and ann's token (api + write_organization, all deployments, monitoring).
struct Setup {
    _dir: tempfile::TempDir,
    _gate: ProcessGroup,
    _upstream: Upstream,
    config: std::path::PathBuf,
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    base: String,
    ann_token: String,
}

fn cli(config: &Path, args: &[&str]) -> String {
    common::cli::cli_with(config, args)
}

async fn setup() -> Setup {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let up = upstream.addr;
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\n\
             log: {{format: json, access: false}}\nthrottle: {{failures_per_minute: 0}}\n\
             tokens: {{file: tokens.jsonl}}\ndeployments:\n\
             {}{}{}",
            deployment("alpha", up, "protected", "    path_prefix: /alpha\n"),
            deployment("beta", up, "protected", "    path_prefix: /beta\n"),
            deployment("watch", up, "monitoring", "    path_prefix: /watch\n"),
        ),
    )
    .unwrap();
    cli(&config, &["member", "add", "ann", "--admin"]);
    cli(&config, &["member", "add", "bob"]);
    let made = cli(
        &config,
        &[
            "token",
            "create",
            "ann-console",
            "--user",
            "ann",
            "--scope",
            "api",
            "--scope",
            "write_organization",
            "--all-deployments",
            "--monitoring",
            "-o",
            "json",
        ],
    );
    let ann_token = serde_json::from_str::<Value>(&made).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (gate, _lines, listening) = serve_binary(&config);
    let admin = listening["admin_addr"].as_str().unwrap().to_owned();
    let proxy = listening["proxy_addr"].as_str().unwrap().parse().unwrap();
    Setup {
        _dir: dir,
        _gate: gate,
        _upstream: upstream,
        config,
        proxy,
        admin: admin.parse().unwrap(),
        base: format!("http://{admin}"),
        ann_token,
    }
}

/// Checks a page the way every page is checked: no CSP violation reported, no serious or
/// critical axe-core violation, and a screenshot.
async fn checked(b: &Browser, name: &str) {
    b.assert_no_csp_violation(name).await;
    b.assert_accessible(name).await;
    b.screenshot(name).await;
}

/// Fills and submits the Create form; returns the value shown once.
async fn create_in_browser(
    b: &Browser,
    base: &str,
    tab: &str,
    name: &str,
    fill: impl AsyncFnOnce(&Browser),
) -> String {
    let new = if tab == "organization" {
        "/api_tokens/new?kind=organization"
    } else {
        "/api_tokens/new"
    };
    b.open(&format!("{base}{new}")).await;
    b.fill("#name", name).await;
    fill(b).await;
    b.submit("#submit").await;
    let value = b
        .find("#token-value")
        .await
        .prop("value")
        .await
        .unwrap()
        .expect("the value is shown");
    assert!(value.starts_with("bgt_"), "a token value is shown once");
    let command = b
        .find("#login-command")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        command,
        format!("bentoml cloud login --api-token {value} --endpoint {base}")
    );
    value
}

async fn proxy_status(s: &Setup, path: &str, token: &str) -> StatusCode {
    status(s.proxy, path, Some(token)).await
}

/// Sends a POST from the page itself (same origin, the session's cookie), with or without the
/// page's CSRF value; returns the status.
async fn post_from_page(b: &Browser, path: &str, fields: &str, with_csrf: bool) -> u64 {
    let script = format!(
        "const done = arguments[arguments.length - 1];
         const body = new URLSearchParams({fields});
         const csrf = document.querySelector('input[name=csrf]');
         if ({with_csrf} && csrf) body.set('csrf', csrf.value);
         fetch({path:?}, {{ method: 'POST', body, redirect: 'manual' }})
           .then(r => done(r.status)).catch(e => done(-1));"
    );
    b.client
        .execute_async(&script, vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_workflow_in_a_real_browser() {
    let s = setup().await;
    let b = Browser::start().await;
    let base = s.base.clone();

    // Sign in with a pasted token (wrong first: a page that says what to do).
    b.open(&format!("{base}/api_tokens")).await;
    assert!(
        b.url().await.contains("/login?next="),
        "not signed in: sent to sign in"
    );
    checked(&b, "sign-in").await;
    b.fill("#token", "bgt_not-a-real-token").await;
    b.submit("form[action='/login'] button[type=submit]").await;
    let page = b.source().await;
    assert!(page.contains("not a live token"), "{page}");
    b.sign_in_with_token(&base, &s.ann_token).await;
    assert!(b.url().await.ends_with("/api_tokens"));
    assert!(
        b.has("#create").await,
        "a member may create personal tokens"
    );
    checked(&b, "tokens-personal").await;

    // One token of each access type, used on the proxy.
    b.open(&format!("{base}/api_tokens/new")).await;
    checked(&b, "create").await;
    let alpha = create_in_browser(&b, &base, "personal", "alpha only", async |b| {
        b.click("#endpoint option[value=alpha]").await;
    })
    .await;
    checked(&b, "created").await;
    let all = create_in_browser(&b, &base, "personal", "everything", async |b| {
        b.click("#endpoint option[value='*']").await;
    })
    .await;
    let api = create_in_browser(&b, &base, "personal", "api only", async |b| {
        b.click("input[name=scope][value=api]").await;
    })
    .await;
    let watch = create_in_browser(&b, &base, "personal", "monitoring", async |b| {
        b.click("#monitoring").await;
        b.click("input[name=expiry][value=never]").await;
    })
    .await;
    assert_eq!(proxy_status(&s, "/alpha/x", &alpha).await, StatusCode::OK);
    assert_eq!(
        proxy_status(&s, "/beta/x", &alpha).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(proxy_status(&s, "/alpha/x", &all).await, StatusCode::OK);
    assert_eq!(proxy_status(&s, "/beta/x", &all).await, StatusCode::OK);
    assert_eq!(
        proxy_status(&s, "/alpha/x", &api).await,
        StatusCode::FORBIDDEN
    );
    let (code, _) = api_call(s.admin, "GET", "/api/v1/api_tokens", &api, Value::Null).await;
    assert_eq!(code, StatusCode::OK, "the api-scope token works on the API");
    assert_eq!(proxy_status(&s, "/watch/x", &watch).await, StatusCode::OK);
    assert_eq!(
        proxy_status(&s, "/alpha/x", &watch).await,
        StatusCode::FORBIDDEN
    );

    // No access at all is refused with a page that says why, keeping what was typed.
    b.open(&format!("{base}/api_tokens/new")).await;
    b.fill("#name", "nothing").await;
    b.submit("#submit").await;
    assert!(b
        .find("#form-error")
        .await
        .text()
        .await
        .unwrap()
        .contains("at least one kind of access"));
    assert_eq!(
        b.find("#name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("nothing")
    );
    checked(&b, "create-error").await;

    // The value is never shown again.
    b.open(&format!("{base}/api_tokens")).await;
    let listing = b.source().await;
    for v in [&alpha, &all, &api, &watch] {
        assert!(
            !listing.contains(v.as_str()),
            "a value shows again in the list"
        );
    }
    b.client.refresh().await.unwrap();
    assert!(!b.source().await.contains(alpha.as_str()));

    // Edit: name, description, expiry.
    b.submit("a[aria-label='Edit alpha only']").await;
    b.find("#edit-form").await;
    checked(&b, "edit").await;
    b.fill("#name", "alpha renamed").await;
    b.fill("#description", "used by the nightly job").await;
    b.click("input[name=expiry][value='90']").await;
    b.submit("#save").await;
    b.find("#tokens").await;
    let listing = b.source().await;
    assert!(listing.contains("alpha renamed") && listing.contains("used by the nightly job"));
    b.screenshot("tokens-list").await;
    assert_eq!(proxy_status(&s, "/alpha/x", &alpha).await, StatusCode::OK);

    // Delete, through the script's confirmation dialog.
    b.click("a[aria-label='Delete alpha renamed']").await;
    b.find("#confirm-dialog[open]").await;
    b.screenshot("delete-dialog").await;
    b.submit("#confirm-dialog button.danger").await;
    b.find("#tokens").await;
    assert!(!b.source().await.contains("alpha renamed"));
    assert_eq!(
        proxy_status(&s, "/alpha/x", &alpha).await,
        StatusCode::UNAUTHORIZED
    );
    // The page without the script's dialog works too.
    let uid = b
        .find("tr[data-uid]")
        .await
        .attr("data-uid")
        .await
        .unwrap()
        .unwrap();
    b.open(&format!("{base}/api_tokens/{uid}/delete")).await;
    checked(&b, "delete").await;
    b.open(&format!("{base}/api_tokens")).await;

    // Organization tokens: an admin creates one.
    b.open(&format!("{base}/api_tokens?tab=organization")).await;
    assert!(
        b.has("#create").await,
        "an admin may create organization tokens"
    );
    checked(&b, "tokens-organization").await;
    let org = create_in_browser(&b, &base, "organization", "org beta", async |b| {
        b.click("#endpoint option[value=beta]").await;
    })
    .await;
    assert_eq!(proxy_status(&s, "/beta/x", &org).await, StatusCode::OK);
    assert_eq!(
        proxy_status(&s, "/alpha/x", &org).await,
        StatusCode::FORBIDDEN
    );

    // Members: add, promote, deactivate, remove.
    b.open(&format!("{base}/members")).await;
    checked(&b, "members").await;
    b.fill("#member-name", "carol").await;
    b.fill("#member-email", "carol@example.com").await;
    b.submit("#add-member button[type=submit]").await;
    b.find("tr[data-member=carol]").await;
    b.submit("button[aria-label='Promote carol']").await;
    assert!(b
        .find("tr[data-member=carol]")
        .await
        .text()
        .await
        .unwrap()
        .contains("admin"));
    b.submit("button[aria-label='Deactivate carol']").await;
    assert!(b
        .find("tr[data-member=carol]")
        .await
        .text()
        .await
        .unwrap()
        .contains("deactivated"));
    b.submit("button[aria-label='Remove carol']").await;
    b.find("#members").await;
    assert!(!b.has("tr[data-member=carol]").await);
    let listed = cli(&s.config, &["member", "list", "-o", "json"]);
    assert!(!listed.contains("carol"), "the store has the change");

    // CSRF and Origin: a POST without the page's CSRF value is refused; so is one from
    // another origin, even with the right cookie and value.
    b.open(&format!("{base}/api_tokens")).await;
    let refused = post_from_page(
        &b,
        "/api_tokens",
        "{name: 'x', scope: 'api', expiry: '30'}",
        false,
    )
    .await;
    assert_eq!(refused, 403, "no CSRF value");
    let accepted = post_from_page(
        &b,
        "/api_tokens",
        "{name: 'same origin', scope: 'api', expiry: '30'}",
        true,
    )
    .await;
    assert_eq!(accepted, 200, "the same POST with the page's value works");
    let cookie = b.client.get_named_cookie("bg_session").await.unwrap();
    let csrf = b
        .find("input[name=csrf]")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let other = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Origin: http://evil.example"])
        .args(["-b", &format!("bg_session={}", cookie.value())])
        .args(["--data-urlencode", &format!("csrf={csrf}")])
        .args([
            "--data-urlencode",
            "name=x",
            "--data-urlencode",
            "scope=api",
        ])
        .arg(format!("{base}/api_tokens"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "403",
        "another origin"
    );

    // An error page is a page (and checked like one).
    b.open(&format!("{base}/api_tokens/0000000000000000dead/edit"))
        .await;
    assert!(b.source().await.contains("no token with uid"));
    checked(&b, "error").await;

    // Sign out; bob signs in through a one-time link.
    b.sign_out().await;
    let link = cli(&s.config, &["member", "login-link", "bob", "--url", &base]);
    let url = link.lines().next().unwrap().to_owned();
    b.open(&url).await;
    checked(&b, "sign-in-link").await;
    b.submit("form button[type=submit]").await;
    b.find("#tokens, #empty").await;
    assert!(b
        .source()
        .await
        .contains("Signed in as <strong>bob</strong> (sign-in link)"));
    // The link was used up.
    b.sign_out().await;
    b.open(&url).await;
    b.submit("form button[type=submit]").await;
    assert!(b.source().await.contains("This sign-in link does not work"));
    let link = cli(&s.config, &["member", "login-link", "bob", "--url", &base]);
    b.open(link.lines().next().unwrap()).await;
    b.submit("form button[type=submit]").await;
    b.find("main h1").await;

    // A member is not offered organization Create nor Members, and a forged POST is refused.
    b.open(&format!("{base}/api_tokens?tab=organization")).await;
    assert!(
        !b.has("#create").await,
        "no organization Create for a member"
    );
    assert!(
        !b.has("a[href='/members']").await,
        "no Members for a member"
    );
    assert!(
        b.source().await.contains("org beta"),
        "members see organization tokens"
    );
    assert!(
        !b.has("a[aria-label='Delete org beta']").await,
        "nor may she delete them"
    );
    let forged = post_from_page(
        &b,
        "/api_tokens",
        "{kind: 'organization', name: 'forged', scope: 'api', expiry: '30'}",
        true,
    )
    .await;
    assert_eq!(forged, 403, "a member's forged organization create");
    let forged_members = post_from_page(&b, "/members", "{name: 'mallory'}", true).await;
    assert_eq!(forged_members, 403, "a member's forged member add");
    // She creates her own personal token, with every access (she acts as herself).
    let bobs = create_in_browser(&b, &base, "personal", "bob all", async |b| {
        b.click("#endpoint option[value='*']").await;
    })
    .await;
    assert_eq!(proxy_status(&s, "/alpha/x", &bobs).await, StatusCode::OK);
    b.close().await;
}
