//! Shared test helpers: a real upstream, a real gateway on 127.0.0.1:0, a real client, tokens.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bentogate::config::Config;
use bentogate::server::Running;
pub mod cli;
pub mod console_suite;
pub mod pki;
pub mod raw;
pub mod remote_file;
pub mod store_suite;
pub mod web;

use bentogate::store::file::update;
use bentogate::token::{Digest, Scope, Scopes, Secret, Token};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub version: Version,
    pub body_len: usize,
}

/// A real HTTP/1.1 + h2c upstream with a few behaviours chosen by path:
/// `/stream` sends `first` then waits for `release` before `last`; `/stall` sends `first` and
/// then nothing; `/hang` never answers (and counts its cancellation); anything else answers
/// `200 ok` after reading the whole body.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub release: Arc<Notify>,
    pub cancelled: Arc<AtomicUsize>,
}

struct CountOnDrop(Arc<AtomicUsize>);
impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes())).boxed()
}

pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(Notify::new());
    let cancelled = Arc::new(AtomicUsize::new(0));
    let (s, r, c) = (seen.clone(), release.clone(), cancelled.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (s, r, c) = (s.clone(), r.clone(), c.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (s, r, c) = (s.clone(), r.clone(), c.clone());
                    async move { Ok::<_, Infallible>(respond(req, s, r, c).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        seen,
        release,
        cancelled,
    }
}

async fn respond(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    cancelled: Arc<AtomicUsize>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let record = |body_len| Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        version: parts.version,
        body_len,
    };
    match path.as_str() {
        "/big" => {
            // 16 MiB in 64 KiB frames, for clients that never read.
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let frames = futures_util::stream::iter(
                (0..256).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
            );
            Response::new(http_body_util::StreamBody::new(frames).boxed())
        }
        "/hang" => {
            seen.lock().unwrap().push(record(0));
            let _guard = CountOnDrop(cancelled);
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/stream" | "/stall" => {
            seen.lock().unwrap().push(record(0));
            let stall = path == "/stall";
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first\n"))))
                    .await;
                if stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                release.notified().await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"last\n"))))
                    .await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("connection", "x-upstream-hop")
                .header("x-upstream-hop", "must-not-reach-client")
                .body(ChannelBody(rx).boxed())
                .unwrap()
        }
        _ => {
            let n = body
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            seen.lock().unwrap().push(record(n));
            Response::builder()
                .header("x-upstream", "yes")
                .body(full("ok"))
                .unwrap()
        }
    }
}

/// A response body fed frame by frame from a channel, as a streaming upstream writes.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}

/// A gateway started in process from YAML, with its own folder and token file.
pub struct Gate {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub tokens: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

/// Starts a gateway; `body` is appended to a config that listens on port 0 and logs no access.
pub async fn gate(body: &str) -> Gate {
    let dir = tempfile::tempdir().unwrap();
    gate_in(dir, body).await
}

pub async fn gate_in(dir: tempfile::TempDir, body: &str) -> Gate {
    // Tests poll failing requests; only tests that say `throttle:` get the throttle.
    let throttle = if body.contains("throttle:") {
        ""
    } else {
        "throttle: {failures_per_minute: 0}\n"
    };
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\n{throttle}{body}"
    );
    let config = Config::parse(&text, "test.yaml", dir.path()).unwrap();
    let tokens = config.tokens.file.clone();
    let running = Running::start(config).await.unwrap();
    let addr = running.proxy_addrs[0];
    let admin = running.admin_addr;
    Gate {
        running,
        dir,
        tokens,
        addr,
        admin,
    }
}

/// One deployment block for a gateway config.
pub fn deployment(name: &str, upstream: SocketAddr, policy: &str, extra: &str) -> String {
    format!("  - name: {name}\n    upstream: \"http://{upstream}\"\n    policy: {policy}\n{extra}")
}

/// What a new test token grants.
#[derive(Default, Clone)]
pub struct Grant {
    pub deployments: Vec<&'static str>,
    pub all: bool,
    pub scopes: Vec<Scope>,
    pub monitoring: bool,
    pub expired_at: Option<i64>,
    pub user: Option<&'static str>,
}

impl Grant {
    pub fn to(deployments: &[&'static str]) -> Grant {
        Grant {
            deployments: deployments.to_vec(),
            ..Grant::default()
        }
    }
}

/// Adds a token to the file and returns (uid, value).
pub fn add_token(file: &Path, grant: Grant) -> (String, String) {
    let secret = Secret::generate().unwrap();
    let uid = bentogate::token::new_uid().unwrap();
    add_record(file, &uid, secret.digest(), grant);
    (uid, secret.expose().to_owned())
}

pub fn add_record(file: &Path, uid: &str, digest: Digest, grant: Grant) {
    let now = bentogate::clock::now();
    let owner = grant.user.map(str::to_owned);
    let record = Token {
        expired_at: grant.expired_at,
        scopes: Scopes::from_slice(&grant.scopes),
        deployments: grant.deployments.iter().map(|d| d.to_string()).collect(),
        all_deployments: grant.all,
        monitoring: grant.monitoring,
        ..Token::new(uid.to_owned(), format!("test-{uid}"), digest, owner, now)
    };
    update(file, |f| {
        f.tokens.push(record);
        Ok(())
    })
    .unwrap();
}

pub fn delete_token(file: &Path, uid: &str) {
    update(file, |f| {
        f.tokens.retain(|t| t.uid != uid);
        Ok(())
    })
    .unwrap();
}

/// `bentogate serve --config CONFIG` (a config with `log: {format: json}`), its stderr lines on
/// a channel, and its "listening" line (with `proxy_addr`, `admin_addr`, `probes_addr`), read
/// within 10 s.
pub fn serve_binary(
    config: &Path,
) -> (
    ProcessGroup,
    std::sync::mpsc::Receiver<String>,
    serde_json::Value,
) {
    use std::process::{Command, Stdio};
    let mut child = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_bentogate"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let err = child.0.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no listening line");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["message"] == "listening" {
                return (child, lines, v);
            }
        }
    }
}

/// The token file at `path` as the CLI opens it (a store of its own, not watched).
pub fn file_store(path: &Path) -> bentogate::store::FileSource {
    let metrics = std::sync::Arc::new(bentogate::metrics::Metrics::new().unwrap());
    bentogate::store::FileSource::open(path, metrics).unwrap()
}

/// Adds a member to the token file at `path`.
pub fn add_member_to(path: &Path, name: &str, email: Option<String>, admin: bool) {
    bentogate::store::file::update(path, |f| {
        let change = bentogate::store::MemberChange::Add {
            name: name.into(),
            email,
            admin,
        };
        bentogate::store::members::change_file(f, &change).unwrap();
        Ok(())
    })
    .unwrap();
}

/// A plain HTTP/1.1 client with a keep-alive pool.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends a GET and reads the whole answer.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    request(client, "GET", addr, path, headers, "").await
}

/// Sends any request with a body and reads the whole answer.
pub async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A control-plane API call with the token in the bentoml client's header; returns the status and
/// the JSON body (null when it is not JSON).
pub async fn api_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let a = request(
        &client(),
        method,
        admin,
        path,
        &[("x-yatai-api-token", token)],
        &body,
    )
    .await;
    let v = serde_json::from_str(&a.body).unwrap_or(serde_json::Value::Null);
    (a.status, v)
}

/// GET with an optional bearer token; returns the status.
pub async fn status(addr: SocketAddr, path: &str, token: Option<&str>) -> StatusCode {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(&client(), addr, path, &headers).await.status
}

/// Waits until `check` is true, polling, for at most `limit`; returns how long it took.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the admin listener's /metrics.
pub async fn metrics(admin: SocketAddr) -> String {
    send(&client(), admin, "/metrics", &[]).await.body
}

/// The value of one metric line (`name{labels}`), or `None` when the scrape has no such series.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let line = text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
    })?;
    Some(line.trim().parse().unwrap_or_else(|_| {
        panic!("series {series} has an unparseable value {line:?} in:\n{text}")
    }))
}

/// The value of one metric line (`name{labels}`). A missing series fails the test with the
/// scrape: a renamed or unregistered metric must not read as a silent 0.
pub fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series)
        .unwrap_or_else(|| panic!("no series {series} in the scrape:\n{text}"))
}

/// The value of a labelled series that the registry only creates on its first increment, so
/// that "not yet there" legitimately means 0. Use only where a test expects absence or counts
/// from zero; everywhere else use `metric`, which fails on a missing series.
pub fn metric_or_zero(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or(0.0)
}

/// Polls until a GET answers `want` (within 3 s); returns how long it took.
pub async fn until_status(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    want: StatusCode,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = status(addr, path, token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{path} still answers {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a raw connection that sends `GET /hang` and returns once the upstream holds it.
pub async fn hanging_request(gate: SocketAddr, upstream: &Upstream) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let before = upstream.seen.lock().unwrap().len();
    let mut stream = tokio::net::TcpStream::connect(gate).await.unwrap();
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(3), || async {
        upstream.seen.lock().unwrap().len() > before
    })
    .await;
    stream
}

/// A child process started in its own process group; the whole group, and every descendant
/// that left it, is killed when this is dropped, so no process of the suite outlives its test.
/// (`bentoml serve` workers call `setsid`: they are in a group of their own, so killing the
/// group alone left one behind on every run.)
pub struct ProcessGroup(pub std::process::Child);

/// Every live descendant of `root`, read from /proc (parent pids), children before their own.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue; // not a process directory
            };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses: split after
            // the last ')'.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue; // exited while we looked
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut std::process::Command) -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        ProcessGroup(cmd.process_group(0).spawn().expect("child process starts"))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // The group id is the leader's pid; `kill -- -PGID` reaches every member, and the
        // descendants found before it are killed by pid (a worker that made its own session is
        // no longer in the group). Processes that already ended make `kill` complain: silenced.
        let leader = self.0.id();
        let mut targets = vec![format!("-{leader}")];
        targets.extend(descendants(leader).iter().map(u32::to_string));
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(&targets)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// The pinned bentoml virtualenv's python (it has uvicorn and Starlette too), installing it on
/// first use through tests/bentoml/venv.sh.
pub fn bentoml_python() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bentoml/venv.sh");
    let out = std::process::Command::new("bash")
        .arg(here)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs tests/bentoml/venv.sh");
    assert!(
        out.status.success(),
        "tests/bentoml/venv.sh could not install bentoml (PyPI reachable?)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A free port on 127.0.0.1 for a child process to bind (it is released before the child binds).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends raw request bytes on a new connection and reads until the server closes it (or 10 s):
/// the status (0 when nothing parseable came back) and the body text after the header block.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete answer within 10 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A real `bentoml serve` of tests/bentoml/service.py (the `Echo` service) on a free port, in its
/// own process group, ready (its `/readyz` answered 200) when this returns.
pub struct BentoService {
    pub addr: SocketAddr,
    _home: tempfile::TempDir,
    _process: ProcessGroup,
}

pub async fn bento_service() -> BentoService {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let process = ProcessGroup::spawn(
        std::process::Command::new(bentoml_python())
            .args([
                "-m",
                "bentoml",
                "serve",
                "service:Echo",
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string()])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bentoml"))
            .env("BENTOML_HOME", home.path())
            .env("BENTOML_DO_NOT_TRACK", "True")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let started = Instant::now();
    loop {
        let req = Request::get(format!("http://{addr}/readyz"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if client()
            .request(req)
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bentoml serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    BentoService {
        addr,
        _home: home,
        _process: process,
    }
}
