//! The authorization boundary: the upstream serves exactly what bentogate authorized.
//!
//! A differential test against a real Starlette app on uvicorn (tests/boundary/reporter.py),
//! which reports the route, path, raw path and Host it routed on: for a corpus of hostile
//! targets (percent-encoded letters in either case, encoded and double-encoded dot-segments,
//! overlong UTF-8, `;` parameters, doubled slashes, backslashes, control bytes, absolute-form
//! targets, Host tricks), sent raw over HTTP/1.1 and through an HTTP/2 client, every request that
//! reaches the upstream was sent with a credential that the policy of the upstream's own reading
//! of the request admits. A real `bentoml serve` does the same for its `/metrics`. Plus: an h2c
//! upgrade never reaches the upstream as one, an upstream's unrequested 101 is a 502, CONNECT is
//! 405, and WebSocket can be turned off per route.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Who a request speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    Anonymous,
    /// Protected Endpoint Access to `app` only.
    App,
    /// Monitoring only.
    Monitoring,
    /// Protected Endpoint Access to `secret` only.
    Secret,
    /// Protected Endpoint Access to `internal` (the host-routed deployment) only.
    Internal,
}

const CREDS: [Cred; 5] = [
    Cred::Anonymous,
    Cred::App,
    Cred::Monitoring,
    Cred::Secret,
    Cred::Internal,
];

/// What the test's own reading of the configuration below requires for a host and a decoded
/// path, written independently of bentogate's route table.
fn admits(cred: Cred, host: &str, path: &str) -> bool {
    let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
    let under = |prefix: &str| {
        path == prefix
            || path.starts_with(&format!("{prefix}/"))
            || path.starts_with(&format!("{prefix};"))
    };
    let needed = if host == "internal.test" {
        Cred::Internal
    } else if under("/metrics") {
        Cred::Monitoring
    } else if under("/public") || path == "/healthz" {
        return true;
    } else if under("/secret") {
        Cred::Secret
    } else {
        Cred::App
    };
    cred == needed
}

const CONFIG: &str = "    public_paths: [/healthz]\n";

fn config(upstream: SocketAddr) -> String {
    format!(
        "deployments:\n{}{}{}{}{}",
        deployment(
            "internal",
            upstream,
            "protected",
            "    hosts: [internal.test]\n"
        ),
        deployment("mon", upstream, "monitoring", "    path_prefix: /metrics\n"),
        deployment("open", upstream, "public", "    path_prefix: /public\n"),
        deployment(
            "secret",
            upstream,
            "protected",
            "    path_prefix: /secret\n"
        ),
        deployment("app", upstream, "protected", CONFIG),
    )
}

/// A uvicorn process serving the reporter app; gone (with its group) when dropped.
struct Reporter {
    addr: SocketAddr,
    _process: ProcessGroup,
}

async fn reporter() -> Reporter {
    let port = free_port();
    let process = ProcessGroup::spawn(
        Command::new(bentoml_python())
            .args(["-m", "uvicorn", "reporter:app", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--log-level", "warning"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boundary"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "uvicorn did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Reporter {
        addr,
        _process: process,
    }
}

/// The hostile spellings of one path word.
fn spellings(word: &str) -> Vec<String> {
    let enc = |c: char, upper: bool| {
        if upper {
            format!("%{:02X}", c as u32)
        } else {
            format!("%{:02x}", c as u32)
        }
    };
    let mut out = vec![word.to_owned()];
    for upper in [true, false] {
        out.push(word.chars().map(|c| enc(c, upper)).collect());
        let mut first = word.chars();
        if let Some(c) = first.next() {
            out.push(format!("{}{}", enc(c, upper), first.as_str()));
            // Double encoding: `%25` is a literal percent sign, never decoded twice.
            out.push(format!("%25{:02x}{}", c as u32, first.as_str()));
        }
    }
    // Mixed-case escapes.
    out.push(
        word.chars()
            .enumerate()
            .map(|(i, c)| enc(c, i % 2 == 0))
            .collect(),
    );
    out
}

/// Every hostile target aimed at the protected paths from the public ones.
fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    for word in ["metrics", "secret", "healthz", "public", "app"] {
        for s in spellings(word) {
            out.push(format!("/{s}"));
            out.push(format!("/{s}/x"));
            out.push(format!("/{s};x=1"));
            out.push(format!("//{s}"));
            out.push(format!("/./{s}"));
        }
    }
    let dots = [
        "..",
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "%c0%ae%c0%ae",
        "%e0%80%ae%e0%80%ae",
        "..;",
        "%2e%2e;x",
        "..%3b",
        ".",
        "%2e",
    ];
    let seps = ["/", "%2f", "%2F", "\\", "%5c", "%5C", "//", "/./"];
    for anchor in ["/public/a", "/healthz", "/public"] {
        for dot in dots {
            for sep in seps {
                for target in ["metrics", "secret", "app", "%6detrics"] {
                    out.push(format!("{anchor}{sep}{dot}{sep}{target}"));
                    out.push(format!("{anchor}/{dot}{sep}{target}"));
                }
            }
        }
    }
    for extra in [
        "/metrics%00",
        "/metrics%0a",
        "/metrics%7f",
        "/public%00/../metrics",
        "/public/%0d%0a/../../metrics",
        "/public/caf%C3%A9/../../metrics",
        "/public/caf\u{e9}/../../metrics",
        "/public/%ff/../../metrics",
        "/public/a/../../../metrics",
        "/..",
        "/../metrics",
        "/healthz/",
        "/healthz;x",
        "/healthz/.",
        "/public;/../metrics",
        "/public/a/..//metrics",
        "/public//..//metrics",
        "/metrics/",
        "/METRICS",
        "/public/%",
        "/public/%2",
        "/public/%zz/../../metrics",
    ] {
        out.push(extra.to_owned());
    }
    out
}

struct Tokens {
    app: String,
    monitoring: String,
    secret: String,
    internal: String,
}

impl Tokens {
    /// Adds the four tokens and waits until the gateway has loaded them (before any is used, so
    /// no lookup can cache one as unknown).
    async fn add(g: &Gate) -> Tokens {
        let tokens = Tokens::write(&g.tokens);
        loaded(g, 4).await;
        tokens
    }

    fn write(file: &Path) -> Tokens {
        let (_, app) = add_token(file, Grant::to(&["app"]));
        let (_, monitoring) = add_token(
            file,
            Grant {
                monitoring: true,
                ..Grant::default()
            },
        );
        let (_, secret) = add_token(file, Grant::to(&["secret"]));
        let (_, internal) = add_token(file, Grant::to(&["internal"]));
        Tokens {
            app,
            monitoring,
            secret,
            internal,
        }
    }

    fn header(&self, cred: Cred) -> String {
        let value = match cred {
            Cred::Anonymous => return String::new(),
            Cred::App => &self.app,
            Cred::Monitoring => &self.monitoring,
            Cred::Secret => &self.secret,
            Cred::Internal => &self.internal,
        };
        format!("authorization: Bearer {value}\r\n")
    }
}

/// Waits until the gateway's token file holds `n` tokens.
async fn loaded(g: &Gate, n: usize) {
    eventually(Duration::from_secs(5), || async {
        metric(&metrics(g.admin).await, "bentogate_tokens_loaded") >= n as f64
    })
    .await;
}

/// What the upstream reported, when the request reached it.
struct Reached {
    path: String,
    raw_path: String,
    host: String,
    headers: Vec<(String, String)>,
}

fn reached(status: u16, body: &str) -> Option<Reached> {
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    v.get("route")?;
    Some(Reached {
        path: v["path"].as_str()?.to_owned(),
        raw_path: v["raw_path"].as_str()?.to_owned(),
        host: v["host"].as_str().unwrap_or("").to_owned(),
        headers: v["headers"]
            .as_array()?
            .iter()
            .filter_map(|h| Some((h[0].as_str()?.to_owned(), h[1].as_str()?.to_owned())))
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_request_is_admitted_by_the_upstreams_own_reading() {
    let up = reporter().await;
    let g = gate(&config(up.addr)).await;
    let tokens = Tokens::add(&g).await;

    let corpus = corpus();
    let (mut forwarded, mut refused_400) = (0, 0);
    for target in &corpus {
        for cred in CREDS {
            let request = format!(
                "GET {target} HTTP/1.1\r\nhost: gw.test\r\n{}connection: close\r\n\r\n",
                tokens.header(cred)
            );
            let (status, body) = raw_exchange(g.addr, request.as_bytes()).await;
            assert!(status != 0, "{target}: no HTTP answer");
            if status == 400 {
                refused_400 += 1;
            }
            let Some(r) = reached(status, &body) else {
                continue;
            };
            forwarded += 1;
            assert!(
                admits(cred, &r.host, &r.path),
                "BYPASS: {target} with {cred:?} reached the upstream as {} (host {})",
                r.path,
                r.host
            );
            // Exactly the normalized path went upstream: the upstream cannot read another.
            let normalized = bentogate::path::normalize(target, true).unwrap();
            assert_eq!(r.raw_path, normalized, "{target}");
        }
    }
    // The corpus exercised both sides: many forwarded requests, many refused paths.
    assert!(forwarded >= 300, "only {forwarded} requests were forwarded");
    assert!(refused_400 >= 500, "only {refused_400} paths were refused");

    // The same corpus through an HTTP/2 client (h2c prior knowledge), where the URI is valid.
    let h2 = h2c_client();
    let mut h2_forwarded = 0;
    for target in &corpus {
        let Ok(uri) = format!("http://gw.test{target}").parse::<http::Uri>() else {
            continue;
        };
        for cred in CREDS {
            let mut req = http::Request::get(uri.clone());
            let auth = tokens.header(cred);
            if let Some(value) = auth.strip_prefix("authorization: ") {
                req = req.header("authorization", value.trim_end());
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            // The client connects to the gateway; the URI's authority is `:authority`.
            let res = send_to(&h2, g.addr, req).await;
            let Some(r) = reached(res.0, &res.1) else {
                continue;
            };
            h2_forwarded += 1;
            assert!(
                admits(cred, &r.host, &r.path),
                "BYPASS (HTTP/2): {target} with {cred:?} reached {}",
                r.path
            );
        }
    }
    assert!(
        h2_forwarded >= 300,
        "only {h2_forwarded} HTTP/2 requests forwarded"
    );
}

/// Sends `req` to `addr` whatever authority its URI names, and reads status and body.
async fn send_to(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    addr: SocketAddr,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let (mut parts, body) = req.into_parts();
    // The gateway's address becomes `:authority` (a differing `host` header would be a 400).
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{addr}{path}").parse().unwrap();
    let res = client
        .request(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_sees_the_host_bentogate_routed_on() {
    let up = reporter().await;
    let g = gate(&config(up.addr)).await;
    let tokens = Tokens::add(&g).await;
    let app = tokens.header(Cred::App);
    let internal = tokens.header(Cred::Internal);
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        // No Host, two Hosts, userinfo, a space, a bad port: refused.
        ("GET /x HTTP/1.1\r\n".into(), 400, None),
        (
            "GET /x HTTP/1.1\r\nhost: gw.test\r\nhost: internal.test\r\n".into(),
            400,
            None,
        ),
        (
            "GET /x HTTP/1.1\r\nhost: internal.test@gw.test\r\n".into(),
            400,
            None,
        ),
        (
            "GET /x HTTP/1.1\r\nhost: gw.test:99999\r\n".into(),
            400,
            None,
        ),
        ("GET /x HTTP/1.1\r\nhost: gw.test:8x\r\n".into(), 400, None),
        // Absolute form: its authority is the host, whatever Host says.
        (
            format!("GET http://internal.test/x HTTP/1.1\r\nhost: gw.test\r\n{app}"),
            403,
            None,
        ),
        (
            format!("GET http://internal.test/x HTTP/1.1\r\nhost: gw.test\r\n{internal}"),
            200,
            Some("internal.test"),
        ),
        (
            format!("GET http://gw.test/x HTTP/1.1\r\nhost: internal.test\r\n{app}"),
            200,
            Some("gw.test"),
        ),
        (
            format!("GET /x HTTP/1.1\r\nhost: INTERNAL.test.\r\n{app}"),
            403,
            None,
        ),
        // HTTP/1.0 without Host is routed on the any-host routes and sent no other host.
        (format!("GET /x HTTP/1.0\r\n{app}"), 200, None),
    ];
    for (head, want, host) in cases {
        let request = format!("{head}connection: close\r\n\r\n");
        let (status, body) = raw_exchange(g.addr, request.as_bytes()).await;
        assert_eq!(status, want, "{head:?}: {body}");
        if let Some(r) = reached(status, &body) {
            match host {
                Some(h) => assert_eq!(r.host, h, "{head:?}"),
                // Without a client host the upstream gets its own authority, never a guess.
                None => assert_eq!(r.host, up.addr.to_string(), "{head:?}"),
            }
        }
    }

    // HTTP/2: a `host` header that differs from `:authority` is refused.
    let tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let auth = format!("Bearer {}", tokens.internal);
    for (host, want) in [("gw.test", 400), ("internal.test", 200)] {
        let req = http::Request::get("http://internal.test/x")
            .header("host", host)
            .header("authorization", &auth)
            .body(())
            .unwrap();
        let (res, _) = h2.send_request(req, true).unwrap();
        let res = res.await.unwrap();
        assert_eq!(res.status().as_u16(), want, "host {host}");
    }

    // CONNECT is never forwarded.
    let (status, _) = raw_exchange(
        g.addr,
        format!(
            "CONNECT {0} HTTP/1.1\r\nhost: {0}\r\n{app}connection: close\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_reaches_the_upstream_as_a_plain_request() {
    let up = reporter().await;
    let extra = deployment(
        "nows",
        up.addr,
        "public",
        "    path_prefix: /nows\n    websocket: false\n",
    );
    let g = gate(&format!("{}{extra}", config(up.addr))).await;
    for (target, upgrade) in [
        ("/public/x", "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        ("/public/x", "Upgrade: websocket, h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        ("/public/x", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        ("/nows/x", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nhost: gw.test\r\n{upgrade}\r\n");
        // No `connection: close` (it would cancel the upgrade): the gateway keeps the
        // connection, so read only the first answer.
        let (status, body) = first_answer(g.addr, request.as_bytes()).await;
        assert_eq!(status, 200, "{upgrade:?}");
        let r = reached(status, &body).expect("the upstream answered");
        for (name, _) in &r.headers {
            assert!(
                !matches!(name.as_str(), "upgrade" | "http2-settings" | "connection"),
                "{name} reached the upstream for {upgrade:?}"
            );
        }
    }
}

/// Sends `request` on a new connection and reads one answer without waiting for the
/// connection to close.
async fn first_answer(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (status, _head, body) = common::raw::read_answer(&mut stream).await;
    (status, body)
}

#[tokio::test]
async fn an_upstream_that_switches_protocols_unasked_gets_a_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that answers every request with 101 and then raw bytes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\nRAW-UPSTREAM-BYTES")
                    .await;
            });
        }
    });
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("open", upstream, "public", "")
    ))
    .await;
    let (status, body) = first_answer(
        g.addr,
        b"GET / HTTP/1.1\r\nhost: gw.test\r\nupgrade: h2c\r\nconnection: upgrade, http2-settings\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains("RAW-UPSTREAM-BYTES"));
}

/// A real `bentoml serve` and its `/metrics`: no spelling of it is served without a monitoring
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bentoml_metrics_are_served_only_to_monitoring_tokens() {
    let bento = bento_service().await;
    let service = bento.addr;
    let g = gate(&format!(
        "deployments:\n{}{}",
        deployment("mon", service, "monitoring", "    path_prefix: /metrics\n"),
        deployment(
            "echo",
            service,
            "protected",
            "    public_paths: [/readyz, /livez, /healthz]\n"
        ),
    ))
    .await;
    let (_, app) = add_token(&g.tokens, Grant::to(&["echo"]));
    let (_, mon) = add_token(
        &g.tokens,
        Grant {
            monitoring: true,
            ..Grant::default()
        },
    );
    loaded(&g, 2).await;
    let is_metrics = |body: &str| body.contains("# TYPE") || body.contains("bentoml_");
    // Positive control: the monitoring token reads them.
    let request = format!(
        "GET /metrics HTTP/1.1\r\nhost: gw.test\r\nauthorization: Bearer {mon}\r\nconnection: close\r\n\r\n"
    );
    let (status, body) = raw_exchange(g.addr, request.as_bytes()).await;
    assert_eq!(status, 200);
    assert!(is_metrics(&body), "{body}");

    let targets: Vec<String> = corpus()
        .into_iter()
        .filter(|t| t.to_ascii_lowercase().contains("metrics") || t.contains("%6d"))
        .collect();
    assert!(targets.len() > 100);
    for target in &targets {
        for auth in [String::new(), format!("authorization: Bearer {app}\r\n")] {
            let request = format!(
                "GET {target} HTTP/1.1\r\nhost: gw.test\r\n{auth}connection: close\r\n\r\n"
            );
            let (status, body) = raw_exchange(g.addr, request.as_bytes()).await;
            assert!(
                !(status == 200 && is_metrics(&body)),
                "BYPASS: {target} served bentoml's metrics without a monitoring token"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_credential_and_forwarding_headers_never_reach_the_upstream() {
    let up = reporter().await;
    let g = gate(&config(up.addr)).await;
    let tokens = Tokens::add(&g).await;
    let forged = "x_bentogate_token_uid: FORGED\r\nX-Bentogate-Token_Owner: FORGED\r\nx_bentogate_token_name: FORGED\r\nx_forwarded_for: 203.0.113.66\r\nx-forwarded-for: 203.0.113.66\r\nforwarded: for=203.0.113.66\r\nx-real-ip: 203.0.113.66\r\nx_real_ip: 203.0.113.66\r\nx-yatai-api-token: FORGED\r\nx_yatai_api_token: FORGED\r\n";
    for (target, cred) in [("/x", Cred::App), ("/public/x", Cred::Anonymous)] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nhost: gw.test\r\n{forged}{}connection: close\r\n\r\n",
            tokens.header(cred)
        );
        let (status, body) = raw_exchange(g.addr, request.as_bytes()).await;
        let r = reached(status, &body).expect("forwarded");
        for (name, value) in &r.headers {
            assert!(
                !value.contains("FORGED") && !value.contains("203.0.113.66"),
                "{name}: {value} reached the upstream"
            );
            assert!(
                !matches!(name.as_str(), "authorization" | "x-yatai-api-token"),
                "a credential reached the upstream"
            );
        }
        let seen = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(seen("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            seen("x-bentogate-token-owner").is_some(),
            cred == Cred::App,
            "{target}"
        );
    }
}
