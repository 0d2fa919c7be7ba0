//! Console sessions and the browser-login codes over plain HTTP against a real server: idle and
//! absolute timeouts, a session ending with its member or its token, login codes answered once
//! (unknown and pending codes 404, denied codes dead), the pending-code limit and the per-client
//! rate, the CSRF and Origin checks, and the cookie and security headers.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bentogate::config::Config;
use bentogate::server::Running;
use bentogate::store::MemberChange;
use bentogate::token::Scope;
use common::web::Web;
use common::*;
use http::StatusCode;
use serde_json::Value;

/// A running gateway whose admin listener has `console` as its `admin.console` section.
async fn console_gate(console: &str) -> (Running, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\", console: {{{console}}}}}\n\
         log: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\n\
         deployments:\n  - {{name: alpha, upstream: \"http://127.0.0.1:9\", policy: protected}}\n"
    );
    let config = Config::parse(&text, "test.yaml", dir.path()).unwrap();
    let tokens = config.tokens.file.clone();
    add_member_to(&tokens, "ann", None, true);
    add_member_to(&tokens, "bob", Some("bob@example.com".into()), false);
    let running = Running::start(config).await.unwrap();
    (running, dir, tokens)
}

fn api_token(
    tokens: &std::path::Path,
    user: &'static str,
    expired_at: Option<i64>,
) -> (String, String) {
    add_token(
        tokens,
        Grant {
            scopes: vec![Scope::Api],
            user: Some(user),
            expired_at,
            ..Grant::default()
        },
    )
}

/// Waits until the clock has passed `seconds` from `from` (the behaviour under test is time
/// passing: the wait is on the clock, with no request that would refresh the session).
async fn wait_past(from: i64, seconds: i64) {
    let until = from + seconds;
    while bentogate::clock::now() <= until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_when_idle_or_old() {
    let (running, _dir, tokens) = console_gate("session_idle: 2s, session_lifetime: 5s").await;
    let (_, bob) = api_token(&tokens, "bob", None);

    // Idle: nothing for longer than 2 s ends it.
    let mut web = Web::new(running.admin_addr);
    assert_eq!(web.sign_in(&bob).await.status, StatusCode::SEE_OTHER);
    assert!(web.signed_in().await);
    wait_past(bentogate::clock::now(), 2).await;
    let a = web.get("/api_tokens").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "idle session ended");
    assert!(a.headers["location"]
        .to_str()
        .unwrap()
        .starts_with("/login?next="));

    // Absolute: used every half second, it still ends 5 s after sign-in.
    let mut web = Web::new(running.admin_addr);
    web.sign_in(&bob).await;
    let signed_in_at = Instant::now();
    let deadline = signed_in_at + Duration::from_secs(15);
    while web.signed_in().await {
        assert!(
            Instant::now() < deadline,
            "the session outlived its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lived = signed_in_at.elapsed();
    assert!(lived >= Duration::from_secs(3), "ended early: {lived:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_with_its_member_or_its_token() {
    let (running, _dir, tokens) = console_gate("").await;
    let store = file_store(&tokens);
    use bentogate::store::TokenStore;

    // A token session ends when the token is deleted.
    let (uid, value) = api_token(&tokens, "bob", None);
    let mut web = Web::new(running.admin_addr);
    web.sign_in(&value).await;
    assert!(web.signed_in().await);
    store.delete(&uid).unwrap();
    assert!(!web.signed_in().await, "the token was deleted");

    // ... and when it expires.
    let expiry = bentogate::clock::now() + 2;
    let (_, value) = api_token(&tokens, "bob", Some(expiry));
    let mut web = Web::new(running.admin_addr);
    web.sign_in(&value).await;
    assert!(web.signed_in().await);
    wait_past(expiry, 0).await;
    assert!(!web.signed_in().await, "the token expired");

    // A token without the api scope cannot sign in at all.
    let (_, plain) = add_token(
        &tokens,
        Grant {
            user: Some("bob"),
            all: true,
            ..Grant::default()
        },
    );
    let mut web = Web::new(running.admin_addr);
    let a = web.sign_in(&plain).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("no `api` scope"), "{}", a.body);
    assert!(!a.body.contains(&plain), "the value is not echoed");

    // A member session (one-time link) ends when she is deactivated, or removed.
    for change in ["deactivate", "remove"] {
        let name = format!("m-{change}");
        add_member_to(&tokens, &name, None, false);
        let secret = bentogate::console::create_link(store.console(), &name).unwrap();
        // The server's own store holds the link file: both read `<tokens>.login-links`.
        let mut web = Web::new(running.admin_addr);
        let a = web.sign_in_link(&format!("/login/link/{secret}")).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        assert!(web.signed_in().await);
        let change = match change {
            "deactivate" => MemberChange::Deactivate { name },
            _ => MemberChange::Remove { name },
        };
        store.change_member(&change).unwrap();
        assert!(!web.signed_in().await, "{change:?} ends her session");
    }

    // Signing out ends it too, and the old cookie does not come back.
    let (_, value) = api_token(&tokens, "bob", None);
    let mut web = Web::new(running.admin_addr);
    web.sign_in(&value).await;
    let cookie = web.jar.clone();
    let csrf = web.csrf("/api_tokens").await;
    assert_eq!(
        web.post("/logout", &[("csrf", &csrf)]).await.status,
        StatusCode::SEE_OTHER
    );
    web.jar = cookie;
    assert!(!web.signed_in().await, "the session was ended server-side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_codes_are_answered_once_and_bounded() {
    let (running, _dir, tokens) = console_gate("pending_codes: 3, codes_per_minute: 100").await;
    let admin = running.admin_addr;
    let (_, bob) = api_token(&tokens, "bob", None);
    let poll = |code: String| async move {
        let a = send(
            &client(),
            admin,
            &format!("/api/v1/auth/token?code={code}"),
            &[],
        )
        .await;
        (
            a.status,
            serde_json::from_str::<Value>(&a.body).unwrap_or(Value::Null),
        )
    };
    let new_code = || async {
        let a = send(&client(), admin, "/api/v1/auth/code", &[]).await;
        let v: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
        (a.status, v["code"].as_str().unwrap_or("").to_owned())
    };

    // Unknown and pending codes: 404.
    assert_eq!(
        poll("0123456789abcdef0123456789abcdef".into()).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(poll(String::new()).await.0, StatusCode::NOT_FOUND);
    let (s, code) = new_code().await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(code.len(), 32, "128 random bits, hex");
    assert_eq!(poll(code.clone()).await.0, StatusCode::NOT_FOUND, "pending");

    // Approved by a signed-in member: the token once, then 404.
    let mut web = Web::new(admin);
    web.sign_in(&bob).await;
    let panel = web.get(&format!("/api_tokens?code={code}")).await;
    assert!(
        panel.body.contains("Approve a bentoml CLI login?"),
        "{}",
        panel.body
    );
    assert!(
        panel.body.contains("127.0.0.1"),
        "the panel names where the login came from"
    );
    let csrf = common::web::csrf_in(&panel.body).unwrap();
    let a = web
        .post(
            "/login/approve",
            &[("csrf", &csrf), ("code", &code), ("name", "bob laptop")],
        )
        .await;
    assert!(a.body.contains("Login approved"), "{}", a.body);
    let (s, v) = poll(code.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let value = v["token"].as_str().unwrap().to_owned();
    let (s, me) = api_call(admin, "GET", "/api/v1/auth/current", &value, Value::Null).await;
    assert_eq!((s, me["name"].as_str()), (StatusCode::OK, Some("bob")));
    let (_, list) = api_call(admin, "GET", "/api/v1/api_tokens", &value, Value::Null).await;
    let made = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bob laptop")
        .unwrap();
    assert_eq!(
        made["scopes"],
        serde_json::json!(["api"]),
        "an api-scope personal token"
    );
    assert_eq!(
        poll(code.clone()).await.0,
        StatusCode::NOT_FOUND,
        "answered once"
    );
    let again = web
        .post("/login/approve", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert!(
        again.body.contains("does not work"),
        "a used code cannot be approved again"
    );

    // Denied: dead.
    let (_, denied) = new_code().await;
    let a = web
        .post("/login/deny", &[("csrf", &csrf), ("code", &denied)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(poll(denied.clone()).await.0, StatusCode::NOT_FOUND);
    let late = web
        .post("/login/approve", &[("csrf", &csrf), ("code", &denied)])
        .await;
    assert!(late.body.contains("does not work"));
    assert!(web
        .get(&format!("/api_tokens?code={denied}"))
        .await
        .body
        .contains("does not work"));

    // At most 3 codes wait at once.
    for _ in 0..3 {
        assert_eq!(new_code().await.0, StatusCode::OK);
    }
    let (s, _) = new_code().await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "the pending-code limit");

    // Asking for a code needs no token; an unauthenticated caller gets nothing else.
    let a = send(&client(), admin, "/api_tokens", &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_codes_are_rate_limited_per_client() {
    let (running, _dir, _tokens) = console_gate("codes_per_minute: 2").await;
    let admin = running.admin_addr;
    // Three asks within one clock minute: the third is refused (retried once if the minute
    // turned over in between).
    for attempt in 0..2 {
        let minute = bentogate::clock::now() / 60;
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                send(&client(), admin, "/api/v1/auth/code", &[])
                    .await
                    .status,
            );
        }
        if bentogate::clock::now() / 60 != minute && attempt == 0 {
            continue;
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_need_the_csrf_value_and_this_origin() {
    let (running, _dir, tokens) = console_gate("").await;
    let (_, bob) = api_token(&tokens, "bob", None);
    let mut web = Web::new(running.admin_addr);

    // Sign-in itself: no CSRF value, or another origin, is refused.
    let csrf = web.csrf("/login").await;
    let a = web.post("/login", &[("token", &bob)]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = web
        .post_from(
            "http://evil.example",
            "/login",
            &[("csrf", &csrf), ("token", &bob)],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = web
        .post_from("null", "/login", &[("csrf", &csrf), ("token", &bob)])
        .await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "Origin: null without Sec-Fetch-Site"
    );
    assert_eq!(web.sign_in(&bob).await.status, StatusCode::SEE_OTHER);

    // Signed in: the same rules on every change.
    let csrf = web.csrf("/api_tokens").await;
    let create = [("name", "x"), ("scope", "api"), ("expiry", "30")];
    assert_eq!(
        web.post("/api_tokens", &create).await.status,
        StatusCode::FORBIDDEN
    );
    let mut with = create.to_vec();
    with.push(("csrf", "0000000000000000000000000000000f"));
    assert_eq!(
        web.post("/api_tokens", &with).await.status,
        StatusCode::FORBIDDEN
    );
    with.pop();
    with.push(("csrf", &csrf));
    let other = web
        .post_from("http://evil.example", "/api_tokens", &with)
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let ok = web.post("/api_tokens", &with).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.contains("you will not see it again"));

    // Headers: every page is no-store, nosniff, no-referrer, never framed, strict CSP.
    for page in ["/login", "/api_tokens", "/api_tokens/new"] {
        let a = web.get(page).await;
        let h = |k: &str| {
            a.headers
                .get(k)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(h("cache-control"), "no-store", "{page}");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "no-referrer");
        let csp = h("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{page}: {csp}");
        }
        assert!(
            !a.body.contains("<script>") && !a.body.contains(" style="),
            "no inline code"
        );
    }
    // The session cookie over plain HTTP: HttpOnly, SameSite=Strict, no Domain.
    let mut fresh = Web::new(running.admin_addr);
    let csrf = fresh.csrf("/login").await;
    let a = fresh
        .post("/login", &[("csrf", &csrf), ("token", &bob)])
        .await;
    let set: Vec<String> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session = set.iter().find(|c| c.starts_with("bg_session=")).unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains("Domain"), "{session}");

    // The old client's callback must be a loopback address.
    let a = web
        .get("/api_tokens?callback=http%3A%2F%2Fevil.example%3A80")
        .await;
    assert!(a.body.contains("not a loopback address") && !a.body.contains("id=\"approve\""));
    let a = web
        .get("/api_tokens?callback=http%3A%2F%2Flocalhost%3A41234")
        .await;
    assert!(a.body.contains("id=\"approve\""));
    let csrf = common::web::csrf_in(&a.body).unwrap();
    let handoff = web
        .post(
            "/login/approve",
            &[("csrf", &csrf), ("callback", "http://localhost:41234")],
        )
        .await;
    let csp = handoff.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("form-action 'self' http://localhost:41234;"),
        "{csp}"
    );
    assert!(
        csp.contains("connect-src 'self' http://localhost:41234;"),
        "{csp}"
    );
    assert!(csp.ends_with("base-uri 'none'"), "{csp}");
    let page = web.get("/api_tokens").await;
    assert!(
        !page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("localhost"),
        "widened for that one response only"
    );
    let refused = web
        .post(
            "/login/approve",
            &[("csrf", &csrf), ("callback", "http://evil.example:80")],
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "no token for another host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_cookies_are_secure_and_host_prefixed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path(), "console-ca");
    let leaf = pki.leaf("admin", &["localhost"]);
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\", tls: {{certificates: [{{cert: \"{}\", key: \"{}\"}}]}}}}\n\
         log: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\n\
         deployments:\n  - {{name: alpha, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    let config = Config::parse(&text, "test.yaml", dir.path()).unwrap();
    let tokens = config.tokens.file.clone();
    add_member_to(&tokens, "bob", None, false);
    let (_, bob) = api_token(&tokens, "bob", None);
    let running = Running::start(config).await.unwrap();
    let base = format!("https://localhost:{}", running.admin_addr.port());
    let jar = dir.path().join("jar");
    let curl = |args: Vec<String>| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i", "--cacert"])
            .arg(pki.ca_file())
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", running.admin_addr.port()))
            .arg("-c")
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let page = tokio::task::block_in_place(|| curl(vec![format!("{base}/login")]));
    let set = page
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __host-bg_signin=")
        })
        .unwrap_or_else(|| panic!("no __Host- sign-in cookie: {page}"));
    assert!(set.contains("; Secure") && set.contains("Path=/") && !set.contains("Domain"));
    let csrf = common::web::csrf_in(&page).unwrap();
    let signed = tokio::task::block_in_place(|| {
        curl(vec![
            "-H".into(),
            format!("Origin: {base}"),
            "--data-urlencode".into(),
            format!("csrf={csrf}"),
            "--data-urlencode".into(),
            format!("token={bob}"),
            format!("{base}/login"),
        ])
    });
    let session = signed
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: __host-bg_session=")
        })
        .unwrap_or_else(|| panic!("no __Host- session cookie: {signed}"));
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );
    let list = tokio::task::block_in_place(|| curl(vec![format!("{base}/api_tokens")]));
    assert!(
        list.starts_with("HTTP/1.1 200") || list.starts_with("HTTP/2 200"),
        "{list}"
    );
}
