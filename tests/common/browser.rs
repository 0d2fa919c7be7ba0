//! A real headless Chromium driven over WebDriver (Debian's chromium and chromium-driver,
//! installed by tests/console/setup.sh), for the console's tests: sign-in helpers, axe-core
//! accessibility checks, the browser's console log (CSP violations), and screenshots into
//! `target/screenshots/`.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::common::{free_port, ProcessGroup};

/// A chromedriver (in its own process group, gone when this is dropped) and one browser
/// session on it.
pub struct Browser {
    pub client: Client,
    driver_port: u16,
    axe: String,
    _driver: ProcessGroup,
}

/// Runs tests/console/setup.sh and returns axe-core's source.
fn setup() -> String {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/setup.sh");
    let out = Command::new("bash")
        .arg(here)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs tests/console/setup.sh");
    assert!(
        out.status.success(),
        "tests/console/setup.sh could not install chromium, chromedriver or axe-core"
    );
    let path = String::from_utf8(out.stdout).unwrap();
    std::fs::read_to_string(path.trim()).expect("axe.min.js is readable")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start() -> Browser {
        let axe = setup();
        // fantoccini's TLS stack brings a second crypto provider; pick the crate's own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let driver = ProcessGroup::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--password-store=basic"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = loop {
            let attempt = ClientBuilder::rustls()
                .expect("rustls roots")
                .capabilities(caps.clone())
                .connect(&url)
                .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        Browser {
            client,
            driver_port: port,
            axe,
            _driver: driver,
        }
    }

    /// Opens `url` and waits for its document.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    /// The element matching `css`, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        tokio::time::timeout(
            Duration::from_secs(10),
            self.client.wait().for_element(Locator::Css(css)),
        )
        .await
        .unwrap_or_else(|_| panic!("no element {css} within 10 s"))
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// True when an element matches `css` now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
            .is_empty()
    }

    /// Types into the field `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks `css`, which loads a new page (a form's submit button, a link), and waits until
    /// the new document has replaced the old one and finished loading: a click returns before
    /// the navigation it starts, and an element found in between belongs to the old page.
    pub async fn submit(&self, css: &str) {
        self.client
            .execute("window.__bentogateOldPage = true;", vec![])
            .await
            .expect("mark the page");
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self
                .client
                .execute(
                    "return window.__bentogateOldPage === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(state, Ok(Value::Bool(true))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} loaded no new page within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's HTML now.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("url").to_string()
    }

    /// Signs in on `base`'s sign-in page with a pasted token.
    pub async fn sign_in_with_token(&self, base: &str, token: &str) {
        self.open(&format!("{base}/login")).await;
        self.fill("#token", token).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
        self.find("h1").await;
    }

    /// Signs out through the profile menu.
    pub async fn sign_out(&self) {
        self.click("details.profile summary").await;
        self.submit("form[action='/logout'] button").await;
    }

    /// Saves a PNG of the page as `target/screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs axe-core on the page and panics on any serious or critical violation.
    pub async fn assert_accessible(&self, page: &str) {
        self.client
            .execute(&self.axe, vec![])
            .await
            .expect("axe-core loads");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document).then(r => done(r.violations.map(v =>
                     ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length }))))
                   .catch(e => done([{ id: 'axe-error', impact: 'critical', help: String(e) }]));",
                vec![],
            )
            .await
            .expect("axe-core runs");
        let bad: Vec<&Value> = result
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            bad.is_empty(),
            "axe-core: serious or critical violations on {page}: {bad:?}"
        );
    }

    /// The browser's console log since the last call (chromedriver's `se/log`).
    pub async fn console_log(&self) -> Vec<String> {
        let id = self
            .client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a session id");
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-H", "Content-Type: application/json"])
            .args(["-d", r#"{"type":"browser"}"#])
            .arg(format!(
                "http://127.0.0.1:{}/session/{id}/se/log",
                self.driver_port
            ))
            .output()
            .expect("curl runs");
        let v: Value = serde_json::from_slice(&out.stdout).expect("se/log answers JSON");
        v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["message"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Panics if the browser reported a Content-Security-Policy violation.
    pub async fn assert_no_csp_violation(&self, page: &str) {
        let csp: Vec<String> = self
            .console_log()
            .await
            .into_iter()
            .filter(|m| m.contains("Content Security Policy") || m.contains("Refused to"))
            .collect();
        assert!(csp.is_empty(), "CSP violations on {page}: {csp:?}");
    }

    /// Ends the session (the driver dies with this value).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// `target/screenshots/`.
pub fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}
