//! The real interactive `bentoml cloud login` "with a web browser", end to end, for both
//! client generations: the CLI runs in a pseudo-terminal (tests/bentoml/login.py, pexpect),
//! its `BROWSER` hands the URL it opens to a real headless Chromium, where bob approves the
//! login on the console of the real binary; the CLI must say it logged in, and the token it
//! saved must work (`bentoml api-token list`, the token API).
//!
//! - bentoml 1.4.40: `GET /api/v1/auth/code`, `/api_tokens?code=CODE`, polling
//!   `/api/v1/auth/token?code=CODE` (404 while pending, the token once, 404 after).
//! - bentoml 1.4.10: a loopback server, `/api_tokens?callback=http://localhost:PORT`, and the
//!   console's hand-off page posting the token to it; a non-loopback callback is refused and an
//!   unknown code is shown as not working.
//!
//! Token values are asserted on, never printed. Every child runs in its own process group.

#![allow(clippy::unwrap_used)]

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use http::StatusCode;
use serde_json::Value;

/// The two tests share a 2-core machine with others: each drives a Chromium and a bentoml
/// client, so they take turns rather than starve each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bentoml CLI's context name in the test's own BENTOML_HOME.
const CONTEXT: &str = "bentogate-login";

/// How long the CLI may take to start and open its URL (bentoml imports slowly on a loaded
/// 2-core machine), and to log in once approved.
const CLI_START: Duration = Duration::from_secs(180);
const CLI_FINISH: Duration = Duration::from_secs(90);

/// A running binary with one protected deployment, members ann (admin) and bob, and bob's
/// token with the `api` scope.
struct Setup {
    _dir: tempfile::TempDir,
    _gate: ProcessGroup,
    _upstream: Upstream,
    config: PathBuf,
    admin: std::net::SocketAddr,
    base: String,
    bob_token: String,
}

fn cli(config: &Path, args: &[&str]) -> String {
    common::cli::cli_with(config, args)
}

async fn setup() -> Setup {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\n\
             log: {{format: json, access: false}}\nthrottle: {{failures_per_minute: 0}}\n\
             tokens: {{file: tokens.jsonl}}\ndeployments:\n{}",
            deployment(
                "alpha",
                upstream.addr,
                "protected",
                "    path_prefix: /alpha\n"
            ),
        ),
    )
    .unwrap();
    cli(&config, &["member", "add", "ann", "--admin"]);
    cli(
        &config,
        &["member", "add", "bob", "--email", "bob@example.com"],
    );
    let made = cli(
        &config,
        &[
            "token",
            "create",
            "bob-console",
            "--user",
            "bob",
            "--scope",
            "api",
            "-o",
            "json",
        ],
    );
    let bob_token = serde_json::from_str::<Value>(&made).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (gate, _lines, listening) = serve_binary(&config);
    let admin = listening["admin_addr"].as_str().unwrap().to_owned();
    Setup {
        _dir: dir,
        _gate: gate,
        _upstream: upstream,
        config,
        admin: admin.parse().unwrap(),
        base: format!("http://{admin}"),
        bob_token,
    }
}

/// Hides anything that looks like a token value (`bgt_...`) in text about to be printed.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("bgt_") {
        out.push_str(&rest[..at]);
        out.push_str("bgt_<redacted>");
        rest = rest[at + 4..]
            .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    }
    out.push_str(rest);
    out
}

/// The python of the bentoml venv of `version` (installed by tests/bentoml/venv.sh on first
/// use); 1.4.40 is `common::bentoml_python()`.
fn python(version: &str) -> PathBuf {
    if version == "1.4.40" {
        return bentoml_python();
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bentoml/venv.sh");
    let out = Command::new("bash")
        .arg(here)
        .arg(version)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs tests/bentoml/venv.sh");
    assert!(
        out.status.success(),
        "tests/bentoml/venv.sh {version} could not install bentoml (PyPI reachable?)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn login_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bentoml/login.py")
}

/// tests/bentoml/login.py running in its own process group (it and the bentoml CLI it drives
/// are killed when this drops), its output collected by two threads.
struct Driver {
    group: ProcessGroup,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Driver {
    fn spawn(python: &Path, args: &[&str]) -> Driver {
        let mut group = ProcessGroup::spawn(
            Command::new(python)
                .arg(login_py())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let mut readers = Vec::new();
        let mut collect = |mut from: Box<dyn Read + Send>| {
            let into = Arc::new(Mutex::new(String::new()));
            let to = Arc::clone(&into);
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    to.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
            into
        };
        let out = collect(Box::new(group.0.stdout.take().unwrap()));
        let err = collect(Box::new(group.0.stderr.take().unwrap()));
        Driver {
            group,
            out,
            err,
            readers,
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.group.0.try_wait().unwrap()
    }

    /// What it said, token-like values hidden, for a failure message.
    fn said(&self) -> String {
        redact(&format!(
            "stdout: {}\nstderr: {}",
            self.out.lock().unwrap(),
            self.err.lock().unwrap()
        ))
    }

    /// Its JSON line (the one it prints on success), once it exited and all it wrote has
    /// been read; a failure fails the test with what it said.
    fn facts(&mut self) -> Option<Value> {
        let status = self.exited()?;
        if !self.readers.iter().all(|r| r.is_finished()) {
            return None;
        }
        assert!(
            status.success(),
            "login.py failed ({status}):\n{}",
            self.said()
        );
        let line = self
            .out
            .lock()
            .unwrap()
            .lines()
            .rev()
            .find(|l| l.starts_with('{') || l.starts_with('['))
            .map(str::to_owned)?;
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("login.py printed {}: {e}", redact(&line))),
        )
    }
}

/// Polls `check` every 100 ms until it gives a value, for at most `limit`; `what` names the
/// awaited condition in the failure, with `context()`.
async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the URL the CLI's `BROWSER` wrote (the driver failing meanwhile fails the test).
async fn opened_url(driver: &mut Driver, url_file: &Path) -> String {
    let driver = std::cell::RefCell::new(driver);
    wait_for(
        "the bentoml CLI opens its URL in the browser",
        CLI_START,
        || {
            let mut d = driver.borrow_mut();
            if let Some(status) = d.exited() {
                panic!(
                    "login.py ended before opening a URL ({status}):\n{}",
                    d.said()
                );
            }
            std::fs::read_to_string(url_file).ok()
        },
        || driver.borrow().said(),
    )
    .await
    .trim()
    .to_owned()
}

/// Waits for the CLI to log in and exit; returns login.py's facts.
async fn logged_in(driver: &mut Driver) -> Value {
    let driver = std::cell::RefCell::new(driver);
    wait_for(
        "the bentoml CLI logs in and exits",
        CLI_FINISH,
        || driver.borrow_mut().facts(),
        || driver.borrow().said(),
    )
    .await
}

/// Checks a page the way every console page is checked: no CSP violation reported, no serious
/// or critical axe-core violation, and a screenshot.
async fn checked(b: &Browser, name: &str) {
    b.assert_no_csp_violation(name).await;
    b.assert_accessible(name).await;
    b.screenshot(name).await;
}

/// The token the CLI saved in `home` under its context, and the context's endpoint.
fn saved_context(home: &Path) -> (String, String) {
    let text = std::fs::read_to_string(home.join(".yatai.yaml"))
        .unwrap_or_else(|e| panic!("`bentoml cloud login` wrote no .yatai.yaml: {e}"));
    let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let ctx = config["contexts"]
        .as_sequence()
        .and_then(|all| all.iter().find(|c| c["name"].as_str() == Some(CONTEXT)))
        .unwrap_or_else(|| panic!("no context {CONTEXT} saved"));
    (
        ctx["api_token"]
            .as_str()
            .expect("the context has a token")
            .to_owned(),
        ctx["endpoint"].as_str().unwrap().to_owned(),
    )
}

/// What the CLI logged in with, checked the same way for both clients: the saved context's
/// token is a new personal `api`-only token of bob's (not the one bob signed in with) with no
/// deployment, made by the browser login; it works on the token API; and `bentoml api-token
/// list` (1.4.40, with the same BENTOML_HOME and context) lists it. `names` are the names of
/// the tokens bob's approvals made (one per approval, as the panel had them). Returns their
/// uids.
async fn check_saved_login(s: &Setup, home: &Path, facts: &Value, names: &[&str]) -> Vec<String> {
    assert_eq!(facts["configured_context"], CONTEXT, "{facts}");
    assert_eq!(facts["email"], "bob@example.com", "{facts}");
    assert!(
        facts["logged_in_line"]
            .as_str()
            .unwrap()
            .starts_with("Logged in as bob@example.com at "),
        "{facts}"
    );
    let (token, endpoint) = saved_context(home);
    assert_eq!(endpoint, s.base, "the context keeps the endpoint");
    assert!(
        token.starts_with("bgt_"),
        "the saved token is a bentogate token"
    );
    // (assert_ne! would print both values on failure)
    assert!(
        token != s.bob_token,
        "a new token, not the one bob signed in with"
    );

    // The token API: it acts as bob and holds `api`.
    let (code, me) = api_call(s.admin, "GET", "/api/v1/auth/current", &token, Value::Null).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(me["name"], "bob");
    let (code, listed) = api_call(s.admin, "GET", "/api/v1/api_tokens", &token, Value::Null).await;
    assert_eq!(code, StatusCode::OK, "the CLI's token has the api scope");
    let made: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["description"] == "created by a browser login of the bentoml CLI")
        .collect();
    let mut got: Vec<&str> = made.iter().map(|t| t["name"].as_str().unwrap()).collect();
    let mut want = names.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "one token per approval, named as approved: {listed}"
    );
    let mut uids = Vec::new();
    for t in made {
        assert_eq!(
            t["scopes"],
            serde_json::json!(["api"]),
            "api scope only: {t}"
        );
        assert_eq!(t["user"]["name"], "bob", "{t}");
        assert_eq!(t["is_organization_token"], false, "personal: {t}");
        assert_eq!(t["all_deployments"], false, "{t}");
        assert_eq!(t["deployments"], serde_json::json!([]), "{t}");
        uids.push(t["uid"].as_str().unwrap().to_owned());
    }

    // The real client, with the context the login saved.
    let mut list = Driver::spawn(
        &bentoml_python(),
        &["list", home.to_str().unwrap(), CONTEXT],
    );
    let listed = logged_in_list(&mut list).await;
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["uid"].as_str().unwrap()))
        .collect();
    for uid in &uids {
        assert!(
            listed.iter().any(|(_, u)| u == uid),
            "`bentoml api-token list` lists the CLI's token {uid}: {listed:?}"
        );
    }
    assert!(
        listed.iter().any(|(n, _)| *n == "bob-console"),
        "and bob's others: {listed:?}"
    );
    uids
}

async fn logged_in_list(driver: &mut Driver) -> Value {
    let driver = std::cell::RefCell::new(driver);
    wait_for(
        "`bentoml api-token list` answers",
        CLI_START,
        || driver.borrow_mut().facts(),
        || driver.borrow().said(),
    )
    .await
}

/// The browser's console messages, gathered across calls (reading them drains the log).
struct Log(Vec<String>);

impl Log {
    async fn read(&mut self, b: &Browser) -> &[String] {
        self.0.extend(b.console_log().await);
        &self.0
    }
}

/// The browser's messages about the Content-Security-Policy: violations ("... violates the
/// following Content Security Policy directive", "Refused to ...") and a malformed policy
/// ("The Content-Security-Policy directive ...").
fn csp_messages(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|m| {
            m.contains("Content Security Policy")
                || m.contains("Content-Security-Policy")
                || m.contains("Refused to")
        })
        .cloned()
        .collect()
}

/// After Approve on a callback login: waits until the CLI has logged in (its facts; then the
/// browser must have reported nothing about the CSP), or the browser reports that it blocked
/// something (every CSP message so far), or fails at the deadline.
async fn handed_off(
    b: &Browser,
    driver: &mut Driver,
    log: &mut Log,
    callback: &str,
) -> Result<Value, Vec<String>> {
    let start = Instant::now();
    loop {
        if let Some(facts) = driver.facts() {
            let csp = csp_messages(log.read(b).await);
            assert!(csp.is_empty(), "CSP messages on the hand-off page: {csp:?}");
            return Ok(facts);
        }
        let csp = csp_messages(log.read(b).await);
        if csp
            .iter()
            .any(|m| m.contains("violates") || m.contains("Refused to"))
        {
            log.0.clear();
            return Err(csp);
        }
        assert!(
            start.elapsed() < CLI_FINISH,
            "the CLI did not log in after the hand-off to {callback}:\n{}",
            driver.said()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bentoml_1_4_40_logs_in_with_a_browser_by_code() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let python = python("1.4.40");
    let s = setup().await;
    let b = Browser::start().await;
    let base = s.base.clone();
    let home = tempfile::tempdir().unwrap();
    let url_file = home.path().join("opened-url");

    let mut driver = Driver::spawn(
        &python,
        &[
            "login",
            &base,
            home.path().to_str().unwrap(),
            url_file.to_str().unwrap(),
            CONTEXT,
        ],
    );
    let url = opened_url(&mut driver, &url_file).await;
    let code = url
        .strip_prefix(&format!("{base}/api_tokens?code="))
        .unwrap_or_else(|| panic!("the CLI opened {url}"))
        .to_owned();
    assert!(
        code.len() == 32 && code.bytes().all(|c| c.is_ascii_hexdigit()),
        "a 128-bit hex code: {code}"
    );
    let poll = format!("/api/v1/auth/token?code={code}");
    let pending = send(&client(), s.admin, &poll, &[]).await;
    assert_eq!(pending.status, StatusCode::NOT_FOUND, "pending: 404");

    // Not signed in yet: the link leads through sign-in (bob pastes his api token) and back.
    b.open(&url).await;
    assert!(
        b.url().await.contains("/login?next="),
        "sent to sign in first"
    );
    b.fill("#token", &s.bob_token).await;
    b.submit("form[action='/login'] button[type=submit]").await;
    let panel = b.find("#approval").await.text().await.unwrap();
    assert!(b.url().await.ends_with(&format!("/api_tokens?code={code}")));
    assert!(panel.contains("Approve a bentoml CLI login?"), "{panel}");
    assert!(
        panel.contains("Approve only a login you started on your own terminal"),
        "{panel}"
    );
    assert!(
        panel.contains(&code[..8]),
        "the panel names the code: {panel}"
    );
    assert!(
        panel.contains("127.0.0.1"),
        "and where it was asked from: {panel}"
    );
    assert!(b.has("#deny").await, "it may be denied");
    let name = b
        .find("#cli-name")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    let date = name.strip_prefix("bentoml-cli-").unwrap_or("");
    assert!(
        date.len() == 10
            && date.bytes().enumerate().all(|(i, c)| match i {
                4 | 7 => c == b'-',
                _ => c.is_ascii_digit(),
            }),
        "the default name is bentoml-cli-<date>: {name}"
    );
    checked(&b, "approval").await;

    b.submit("#approve").await;
    b.find("#login-approved").await;
    checked(&b, "login-approved").await;
    let facts = logged_in(&mut driver).await;
    assert!(facts["opened_line"].as_bool().unwrap(), "{facts}");

    // The code was good once: the CLI took the token; now it is dead, on the API and in
    // the browser.
    let after = send(&client(), s.admin, &poll, &[]).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "single use: 404 after");
    assert!(!after.body.contains("bgt_"));
    b.open(&url).await;
    let panel = b.find("#approval").await.text().await.unwrap();
    assert!(panel.contains("This login code does not work"), "{panel}");
    assert!(!b.has("#approve").await, "a used code has no Approve");

    // Polling a code that was never given: 404, the same as pending.
    let unknown = send(
        &client(),
        s.admin,
        "/api/v1/auth/token?code=00000000000000000000000000000000",
        &[],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "unknown code: 404");

    // A denied code is dead and makes no token (counted below: one bentoml-cli token).
    let asked = send(&client(), s.admin, "/api/v1/auth/code", &[]).await;
    assert_eq!(asked.status, StatusCode::OK);
    let denied = serde_json::from_str::<Value>(&asked.body).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    b.open(&format!("{base}/api_tokens?code={denied}")).await;
    b.submit("#deny").await;
    b.find("#tokens").await;
    let poll_denied = format!("/api/v1/auth/token?code={denied}");
    let answer = send(&client(), s.admin, &poll_denied, &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "denied: 404");
    b.open(&format!("{base}/api_tokens?code={denied}")).await;
    let panel = b.find("#approval").await.text().await.unwrap();
    assert!(panel.contains("This login code does not work"), "{panel}");
    assert!(!b.has("#approve").await, "a denied code has no Approve");

    let uid = check_saved_login(&s, home.path(), &facts, &[&name])
        .await
        .remove(0);
    // bob's console lists it, without its value.
    b.open(&format!("{base}/api_tokens")).await;
    b.find(&format!("tr[data-uid='{uid}']")).await;
    let (token, _) = saved_context(home.path());
    assert!(
        !b.source().await.contains(token.as_str()),
        "the value is never shown"
    );
    b.close().await;
    drop(driver);
    eprintln!("bentoml 1.4.40 browser login: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bentoml_1_4_10_logs_in_with_a_browser_by_callback() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let python = python("1.4.10");
    bentoml_python(); // `bentoml api-token list` is 1.4.40's (1.4.10 has no such command)
    let s = setup().await;
    let b = Browser::start().await;
    let base = s.base.clone();

    // bob signs in with a one-time link from an admin.
    let link = cli(&s.config, &["member", "login-link", "bob", "--url", &base]);
    b.open(link.lines().next().unwrap()).await;
    b.submit("form button[type=submit]").await;
    b.find("#tokens, #empty").await;

    // Refused: a callback that is not loopback; an unknown code.
    b.open(&format!(
        "{base}/api_tokens?callback=http%3A%2F%2Fevil.example%3A80"
    ))
    .await;
    let panel = b.find("#approval").await.text().await.unwrap();
    assert!(panel.contains("This login link is refused"), "{panel}");
    assert!(
        !b.has("#approve").await,
        "no Approve for a non-loopback callback"
    );
    checked(&b, "approval-refused").await;
    b.open(&format!("{base}/api_tokens?code={}", "0".repeat(32)))
        .await;
    let panel = b.find("#approval").await.text().await.unwrap();
    assert!(panel.contains("This login code does not work"), "{panel}");
    assert!(!b.has("#approve").await, "no Approve for an unknown code");
    checked(&b, "approval-dead").await;

    let home = tempfile::tempdir().unwrap();
    let url_file = home.path().join("opened-url");
    let mut driver = Driver::spawn(
        &python,
        &[
            "login",
            &base,
            home.path().to_str().unwrap(),
            url_file.to_str().unwrap(),
            CONTEXT,
        ],
    );
    let url = opened_url(&mut driver, &url_file).await;
    let port = url
        .strip_prefix(&format!("{base}/api_tokens?callback=http%3A//localhost%3A"))
        .unwrap_or_else(|| panic!("the CLI opened {url}"));
    let port: u16 = port.parse().unwrap_or_else(|_| panic!("a port: {url}"));
    let callback = format!("http://localhost:{port}");

    b.open(&url).await;
    let panel = b.find("#approval").await.text().await.unwrap();
    assert!(panel.contains("Approve a bentoml CLI login?"), "{panel}");
    assert!(
        panel.contains(&callback),
        "the panel names the callback: {panel}"
    );
    assert!(
        !b.has("#deny").await,
        "a callback login has Cancel, not Deny"
    );
    checked(&b, "approval-callback").await;

    // The token's name is editable.
    const NAME: &str = "bobs-laptop-cli";
    b.fill("#cli-name", NAME).await;
    b.click("#approve").await;
    // The hand-off page posts the value to the CLI's loopback server at once.
    let mut log = Log(Vec::new());
    let facts = handed_off(&b, &mut driver, &mut log, &callback)
        .await
        .unwrap_or_else(|blocked| panic!("the hand-off page was blocked: {blocked:?}"));
    let approved = vec![NAME];
    // The script sent it (the page stays, and says so), not the fallback form.
    let done = b.find("#handoff-done").await;
    assert!(
        done.text()
            .await
            .unwrap()
            .contains("Return to your terminal"),
        "the hand-off page says the token went to the CLI"
    );
    assert!(b.url().await.starts_with(&base), "still on the console");
    checked(&b, "login-handoff").await;
    check_saved_login(&s, home.path(), &facts, &approved).await;
    b.close().await;
    drop(driver);
    eprintln!("bentoml 1.4.10 browser login: {:?}", started.elapsed());
}
