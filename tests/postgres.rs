//! The `postgres` source with real replicas on a real PostgreSQL: tokens created on one replica
//! pass on another, revocations reach the other replica within a second, the database going
//! away (cut, or black-holed) keeps cached tokens and fails closed for the rest, migrations are
//! safe to race, and `migrate` moves a file store in and out.
//!
//! The server is the one at BENTOGATE_TEST_POSTGRES (default
//! postgres://postgres@127.0.0.1:5432/postgres); every test makes its own database there. With
//! no server answering, each test prints `SKIPPED <test>: ...` and returns, unless `CI` is set:
//! then it fails, naming tests/postgres/ensure.sh, which starts one.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bentogate::config::Config;
use bentogate::metrics::Metrics;
use bentogate::server::Running;
use bentogate::store::postgres::PgSource;
use common::*;
use http::StatusCode;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn admin_url() -> String {
    std::env::var("BENTOGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped afterwards.
struct TestDb {
    name: String,
    host: String,
    port: u16,
    user: String,
}

impl TestDb {
    /// A fresh database for `test`, or `None` when no server answers and `CI` is unset (the
    /// test then returns early: Rust has no runtime skip, so one printed line says so).
    async fn new(test: &str) -> Option<TestDb> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bentogate_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = server_or_skip(test).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        Some(TestDb {
            name,
            host,
            port: cfg.get_ports().first().copied().unwrap_or(5432),
            user: cfg.get_user().unwrap_or("postgres").to_owned(),
        })
    }

    /// The URL through `addr` (a relay) or straight to the server.
    fn url_via(&self, addr: Option<SocketAddr>) -> String {
        let (host, port) = match addr {
            Some(a) => (a.ip().to_string(), a.port()),
            None => (self.host.clone(), self.port),
        };
        format!("postgres://{}@{host}:{port}/{}", self.user, self.name)
    }

    fn url(&self) -> String {
        self.url_via(None)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async code in some tests and inside in others: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) =
                    tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A connection to the test server. When none answers: in CI (`CI` set) the test fails,
/// naming tests/postgres/ensure.sh; elsewhere it prints one SKIPPED line and returns `None`.
async fn server_or_skip(test: &str) -> Option<tokio_postgres::Client> {
    let url = admin_url();
    let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    let why = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            return Some(client);
        }
        Ok(Err(e)) => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
        Err(_) => "no answer within 5 s".to_owned(),
    };
    if std::env::var_os("CI").is_some() {
        panic!(
            "no PostgreSQL at {url} ({why}); in CI the PostgreSQL tests must run: start one with \
             tests/postgres/ensure.sh and export its output as BENTOGATE_TEST_POSTGRES \
             (.ci/run does both)"
        );
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of passing tests,
    // and a skip must be seen without --nocapture.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: no PostgreSQL at {url} ({why}); run tests/postgres/ensure.sh and export \
         its output as BENTOGATE_TEST_POSTGRES to run it (with CI set, this fails instead)"
    );
    None
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL at {} ({e}); start one or set BENTOGATE_TEST_POSTGRES (.ci/run does both)",
                admin_url()
            )
        });
    tokio::spawn(conn);
    client
}

fn tokens_section(url: &str) -> String {
    format!(
        "tokens:\n  source: postgres\n  usage_flush: 200ms\n  postgres: {{ url: \"{url}\", pool_size: 2, timeout: 500ms }}\n"
    )
}

/// A replica on `url`, routing deployment `a` to `upstream`.
async fn replica(url: &str, upstream: SocketAddr) -> Running {
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\n{}deployments:\n{}",
        tokens_section(url),
        deployment("a", upstream, "protected", "")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&text, "replica.yaml", dir.path()).unwrap();
    Running::start(config).await.unwrap()
}

/// Runs the real binary with a config on `url`; returns stdout (asserting success).
async fn cli(url: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bentogate.yaml");
    std::fs::write(
        &config,
        format!(
            "{}deployments:\n  - {{name: a, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
            tokens_section(url)
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bentogate"));
    cmd.args(args).arg("--config").arg(&config);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "bentogate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An organization admin token (api + write_organization + All Deployments, since it creates
/// tokens for deployment `a` and a new token grants no more than its maker) made with the CLI.
async fn admin_token(url: &str) -> String {
    let out = cli(
        url,
        &[
            "token",
            "create",
            "root",
            "--org",
            "--scope",
            "api",
            "--scope",
            "write_organization",
            "--all-deployments",
            "-o",
            "json",
        ],
    )
    .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

async fn api(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    api_call(admin, method, path, token, body).await
}

/// Creates a token for deployment `a` through a replica's API; returns (uid, value).
async fn create(admin: SocketAddr, root: &str, name: &str) -> (String, String) {
    let (s, v) = api(
        admin,
        "POST",
        "/api/v1/api_tokens",
        root,
        json!({"name": name, "deployments": ["a"], "is_organization_token": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (
        v["uid"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

async fn delete(admin: SocketAddr, root: &str, uid: &str) {
    let (s, v) = api(
        admin,
        "DELETE",
        &format!("/api/v1/api_tokens/{uid}"),
        root,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Polls until `addr` answers `want` for `token`, for at most `limit`; returns the time taken.
async fn within(limit: Duration, addr: SocketAddr, token: &str, want: StatusCode) -> Duration {
    let start = Instant::now();
    loop {
        if status(addr, "/a/x", Some(token)).await == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not {want} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn readyz(admin: SocketAddr) -> StatusCode {
    send(&client(), admin, "/readyz", &[]).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_tokens_and_revocations_reach_the_other_within_a_second() {
    let Some(db) =
        TestDb::new("replicas_share_tokens_and_revocations_reach_the_other_within_a_second").await
    else {
        return;
    };
    let u = upstream().await;
    let root = admin_token(&db.url()).await;
    let a = replica(&db.url(), u.addr).await;
    let b = replica(&db.url(), u.addr).await;
    assert_eq!(readyz(b.admin_addr).await, StatusCode::OK);

    // Created on A, used on B.
    let (uid, value) = create(a.admin_addr, &root, "shared").await;
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(&value)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(&value)).await,
        StatusCode::OK
    );

    // Deleted on A (the API answers after the commit): B refuses it within a second, although
    // its cache held the token for a minute.
    delete(a.admin_addr, &root, &uid).await;
    let took = within(
        Duration::from_secs(1),
        b.proxy_addrs[0],
        &value,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    eprintln!("revocation: DELETE committed on A -> first 401 on B after {took:?}");
    // A refuses it at once: its own write evicted it before the API answered.
    assert_eq!(
        status(a.proxy_addrs[0], "/a/x", Some(&value)).await,
        StatusCode::UNAUTHORIZED
    );

    // A value B has cached as unknown passes as soon as it is imported elsewhere.
    let secret = bentogate::token::Secret::generate().unwrap();
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(secret.expose())).await,
        StatusCode::UNAUTHORIZED
    );
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        list.path(),
        format!(
            "- {{name: imported, value: \"{}\", deployments: [a]}}\n",
            secret.expose()
        ),
    )
    .unwrap();
    cli(
        &db.url(),
        &["token", "import", list.path().to_str().unwrap()],
    )
    .await;
    within(
        Duration::from_secs(1),
        b.proxy_addrs[0],
        secret.expose(),
        StatusCode::OK,
    )
    .await;

    // An expiry change (here to the past, written straight through the store) reaches B.
    let (uid2, value2) = create(a.admin_addr, &root, "expiring").await;
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(&value2)).await,
        StatusCode::OK
    );
    let direct = PgSource::connect(pg_config(&db.url()), Arc::new(Metrics::new().unwrap()))
        .await
        .unwrap();
    let edit = bentogate::store::TokenEdit {
        expired_at: Some(Some(bentogate::clock::now() - 1)),
        ..Default::default()
    };
    let uid_edited = uid2.clone();
    tokio::task::spawn_blocking(move || {
        use bentogate::store::TokenStore;
        direct.edit(&uid_edited, &edit).unwrap().unwrap()
    })
    .await
    .unwrap();
    let took = within(
        Duration::from_secs(1),
        b.proxy_addrs[0],
        &value2,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    eprintln!("expiry change -> 401 on B after {took:?}");

    // A member's removal kills her personal tokens on every replica.
    let (s, v) = api(
        a.admin_addr,
        "POST",
        "/api/v1/members",
        &root,
        json!({"name": "ann"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let out = cli(
        &db.url(),
        &[
            "token",
            "create",
            "ann-laptop",
            "--user",
            "ann",
            "--deployment",
            "a",
            "-o",
            "json",
        ],
    )
    .await;
    let personal: Value = serde_json::from_str(&out).unwrap();
    let personal = personal["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(&personal)).await,
        StatusCode::OK
    );
    let (s, v) = api(
        a.admin_addr,
        "DELETE",
        "/api/v1/members/ann",
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let took = within(
        Duration::from_secs(1),
        b.proxy_addrs[0],
        &personal,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    eprintln!("member removal -> 401 on B after {took:?}");
    let m = metrics(b.admin_addr).await;
    assert!(
        metric(&m, "bentogate_token_revocations_received_total") >= 3.0,
        "{m}"
    );

    // Last use: B's batch reaches the database, and A's API shows it.
    let (uid3, value3) = create(a.admin_addr, &root, "used").await;
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(&value3)).await,
        StatusCode::OK
    );
    eventually(Duration::from_secs(3), || async {
        let (_, v) = api(
            a.admin_addr,
            "GET",
            &format!("/api/v1/api_tokens/{uid3}"),
            &root,
            Value::Null,
        )
        .await;
        !v["last_used_at"].is_null()
    })
    .await;

    a.stop().await;
    b.stop().await;
}

fn pg_config(url: &str) -> bentogate::config::PostgresConfig {
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\n{}deployments:\n  - {{name: a, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
        tokens_section(url)
    );
    Config::parse(&text, "t.yaml", Path::new("."))
        .unwrap()
        .tokens
        .postgres
        .unwrap()
}

/// What the relay in front of the database does with traffic.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Pass,
    /// Connections are held open and nothing moves: a dead network, not a closed port.
    Blackhole,
    /// Connections are closed at once: a stopped server.
    Refuse,
}

/// A TCP relay to the database that can be cut, as a server restart or a network fault would.
struct Relay {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Connections currently passing traffic.
    passing: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a passing connection while it lives.
struct Passing(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Passing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Pass);
        let passing = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&passing);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let now = *rx.borrow_and_update();
                    match now {
                        Mode::Refuse => return,
                        Mode::Blackhole => {
                            // Hold it open until the fault ends, then close it.
                            while *rx.borrow_and_update() == Mode::Blackhole {
                                if rx.changed().await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                        Mode::Pass => {}
                    }
                    let Ok(mut server) = TcpStream::connect(to).await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut guard = Some(Passing(counter));
                    let faulted = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => false,
                        _ = async {
                            loop {
                                if rx.changed().await.is_err() { return; }
                                if *rx.borrow_and_update() != Mode::Pass { return; }
                            }
                        } => true,
                    };
                    drop(guard.take());
                    // A black hole keeps the sockets open, silent, until it ends.
                    while faulted && *rx.borrow_and_update() == Mode::Blackhole {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Relay {
            addr,
            mode,
            passing,
        }
    }

    /// Switches the fault on or off; a fault is in force once no connection passes traffic.
    async fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        if mode != Mode::Pass {
            eventually(Duration::from_secs(2), || async {
                self.passing.load(Ordering::SeqCst) == 0
            })
            .await;
        }
    }
}

async fn database_addr() -> SocketAddr {
    let cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(_) => {
            panic!("the test database must be reached over TCP")
        }
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap();
    addrs.next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_keeps_cached_tokens_fails_closed_and_recovers() {
    let Some(db) =
        TestDb::new("a_lost_database_keeps_cached_tokens_fails_closed_and_recovers").await
    else {
        return;
    };
    let u = upstream().await;
    let relay = Relay::start(database_addr().await).await;
    let root = admin_token(&db.url()).await;
    // A writes straight to the database; B reaches it only through the relay.
    let a = replica(&db.url(), u.addr).await;
    let b = replica(&db.url_via(Some(relay.addr)), u.addr).await;
    let bp = b.proxy_addrs[0];
    let (_, kept) = create(a.admin_addr, &root, "kept").await;
    let (doomed_uid, doomed) = create(a.admin_addr, &root, "doomed").await;
    let (_, unseen) = create(a.admin_addr, &root, "unseen").await;
    // Creations are announced too (to drop cached "unknown" answers); let B hear all three
    // first, or the announcement could evict what B is about to cache.
    eventually(Duration::from_secs(3), || async {
        metric(
            &metrics(b.admin_addr).await,
            "bentogate_token_revocations_received_total",
        ) >= 3.0
    })
    .await;
    assert_eq!(status(bp, "/a/x", Some(&kept)).await, StatusCode::OK);
    assert_eq!(status(bp, "/a/x", Some(&doomed)).await, StatusCode::OK);
    let (s, listed) = api(
        b.admin_addr,
        "GET",
        "/api/v1/api_tokens",
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{listed}");

    // A silent network: no request waits longer than the lookup timeout (500 ms) on it.
    relay.set(Mode::Blackhole).await;
    let started = Instant::now();
    // Not the caller's fault: 503 (with Retry-After), not a 401 saying its token is bad.
    assert_eq!(
        status(bp, "/a/x", Some(&unseen)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "an unknown token waited {waited:?} on a dead database"
    );
    eprintln!("unknown token on a black-holed database: 503 after {waited:?}");
    assert_eq!(status(bp, "/a/x", Some(&kept)).await, StatusCode::OK);
    // The heartbeat notices: not ready, and the metric says so.
    eventually(Duration::from_secs(5), || async {
        readyz(b.admin_addr).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let m = metrics(b.admin_addr).await;
    assert_eq!(metric(&m, "bentogate_token_source_up"), 0.0, "{m}");

    // A stopped server: cached tokens pass, everything else fails closed, fast.
    relay.set(Mode::Refuse).await;
    assert_eq!(status(bp, "/a/x", Some(&kept)).await, StatusCode::OK);
    let started = Instant::now();
    assert_eq!(
        status(bp, "/a/x", Some(&unseen)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // B's control plane cannot reach its store: 503 with the reason, at once.
    let started = Instant::now();
    let (s, v) = api(
        b.admin_addr,
        "GET",
        "/api/v1/api_tokens",
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("database"), "{v}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let never = bentogate::token::Secret::generate().unwrap();
    assert_eq!(
        status(bp, "/a/x", Some(never.expose())).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let m = metrics(b.admin_addr).await;
    // The lookup the black hole swallowed is counted as a failure.
    assert!(
        metric(&m, "bentogate_token_source_failures_total") >= 1.0,
        "{m}"
    );

    // Revoked while B could not hear it.
    delete(a.admin_addr, &root, &doomed_uid).await;
    let flushes = metric(
        &metrics(b.admin_addr).await,
        "bentogate_token_cache_flushes_total",
    );

    relay.set(Mode::Pass).await;
    eventually(Duration::from_secs(10), || async {
        readyz(b.admin_addr).await == StatusCode::OK
    })
    .await;
    assert!(
        metric(
            &metrics(b.admin_addr).await,
            "bentogate_token_cache_flushes_total"
        ) > flushes
    );
    // The missed revocation holds (the cache was dropped on reconnect), the rest pass.
    assert_eq!(
        status(bp, "/a/x", Some(&doomed)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(bp, "/a/x", Some(&kept)).await, StatusCode::OK);
    assert_eq!(status(bp, "/a/x", Some(&unseen)).await, StatusCode::OK);

    // Revocations after the reconnect propagate again.
    let (late_uid, late) = create(a.admin_addr, &root, "late").await;
    assert_eq!(status(bp, "/a/x", Some(&late)).await, StatusCode::OK);
    delete(a.admin_addr, &root, &late_uid).await;
    let took = within(Duration::from_secs(1), bp, &late, StatusCode::UNAUTHORIZED).await;
    eprintln!("revocation after reconnect: 401 on B after {took:?}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backends_are_replaced_and_revocations_still_propagate() {
    let Some(db) =
        TestDb::new("terminated_backends_are_replaced_and_revocations_still_propagate").await
    else {
        return;
    };
    let u = upstream().await;
    let root = admin_token(&db.url()).await;
    let a = replica(&db.url(), u.addr).await;
    let b = replica(&db.url(), u.addr).await;
    let bp = b.proxy_addrs[0];
    let (uid, value) = create(a.admin_addr, &root, "survivor").await;
    assert_eq!(status(bp, "/a/x", Some(&value)).await, StatusCode::OK);
    let flushes = metric(
        &metrics(b.admin_addr).await,
        "bentogate_token_cache_flushes_total",
    );

    // What a database restart or failover does to every session.
    let admin = admin_client().await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "expected both replicas' listeners, killed {killed}"
    );
    // B listens again (its cache dropped once more) ...
    eventually(Duration::from_secs(10), || async {
        metric(
            &metrics(b.admin_addr).await,
            "bentogate_token_cache_flushes_total",
        ) > flushes
    })
    .await;
    assert_eq!(readyz(b.admin_addr).await, StatusCode::OK);
    // ... looks the token up again on a fresh connection, and hears the next revocation.
    within(Duration::from_secs(3), bp, &value, StatusCode::OK).await;
    delete(a.admin_addr, &root, &uid).await;
    let took = within(Duration::from_secs(1), bp, &value, StatusCode::UNAUTHORIZED).await;
    eprintln!("revocation after backends were terminated: 401 on B after {took:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_the_schema_once() {
    let Some(db) = TestDb::new("replicas_starting_together_migrate_the_schema_once").await else {
        return;
    };
    let starts = (0..4).map(|_| {
        let config = pg_config(&db.url());
        tokio::spawn(
            async move { PgSource::connect(config, Arc::new(Metrics::new().unwrap())).await },
        )
    });
    for s in starts {
        assert!(s.await.unwrap().is_ok());
    }
    let (c, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = c
        .query("SELECT version FROM bentogate_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    // A database migrated by a newer bentogate is refused with what to do.
    c.execute("INSERT INTO bentogate_schema (version) VALUES (99)", &[])
        .await
        .unwrap();
    let err = PgSource::connect(pg_config(&db.url()), Arc::new(Metrics::new().unwrap()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("99") && err.contains("upgrade bentogate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_a_file_store_into_the_database_and_back() {
    let Some(db) = TestDb::new("migrate_moves_a_file_store_into_the_database_and_back").await
    else {
        return;
    };
    let u = upstream().await;
    // A file store with a member, her personal token and an organization token.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    bentogate::store::file::update(&file, |f| {
        bentogate::store::members::change_file(
            f,
            &bentogate::store::MemberChange::Add {
                name: "ann".into(),
                email: Some("ann@example.com".into()),
                admin: true,
            },
        )
        .unwrap();
        Ok(())
    })
    .unwrap();
    let (_, org_value) = add_token(
        &file,
        Grant {
            expired_at: Some(bentogate::clock::now() + 86_400),
            ..Grant::to(&["a"])
        },
    );
    let (_, ann_value) = add_token(
        &file,
        Grant {
            user: Some("ann"),
            ..Grant::to(&["a"])
        },
    );
    // A last use recorded beside the file travels with its token (one nobody uses below).
    let (idle_uid, _) = add_token(&file, Grant::to(&["a"]));
    std::fs::write(
        bentogate::store::usage::path_for(&file),
        format!("{{\"{idle_uid}\": 1700000000}}"),
    )
    .unwrap();
    let before = bentogate::store::usage::load_for_display(&file).unwrap();

    let said = cli(
        &db.url(),
        &["migrate", "--from-file", file.to_str().unwrap()],
    )
    .await;
    assert!(
        said.contains("imported 1 of 1 members and 3 of 3 tokens"),
        "{said}"
    );
    // Idempotent: a second run adds nothing.
    let said = cli(
        &db.url(),
        &["migrate", "--from-file", file.to_str().unwrap()],
    )
    .await;
    assert!(
        said.contains("imported 0 of 1 members and 0 of 3 tokens"),
        "{said}"
    );

    // The same values pass on a replica of the database.
    let r = replica(&db.url(), u.addr).await;
    assert_eq!(
        status(r.proxy_addrs[0], "/a/x", Some(&org_value)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(r.proxy_addrs[0], "/a/x", Some(&ann_value)).await,
        StatusCode::OK
    );
    r.stop().await;

    // And back out: uids, digests, expiries and memberships as they were.
    let out = dir.path().join("exported.yaml");
    cli(&db.url(), &["migrate", "--to-file", out.to_str().unwrap()]).await;
    let after = bentogate::store::usage::load_for_display(&out).unwrap();
    let key = |f: &bentogate::store::TokenFile| {
        let mut v: Vec<_> = f
            .tokens
            .iter()
            .map(|t| {
                (
                    t.uid.clone(),
                    t.digest,
                    t.expired_at,
                    t.user.clone(),
                    t.kind,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(key(&after), key(&before));
    assert_eq!(after.members, before.members);
    let idle_after = after.tokens.iter().find(|t| t.uid == idle_uid).unwrap();
    assert_eq!(idle_after.last_used_at, Some(1_700_000_000));
    // It never overwrites.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bentogate"));
    let cfg = dir.path().join("pg.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}deployments:\n  - {{name: a, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
            tokens_section(&db.url())
        ),
    )
    .unwrap();
    cmd.args([
        "migrate",
        "--to-file",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let refused = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("exists"), "{stderr}");
}

#[tokio::test]
async fn serve_refuses_to_start_without_its_database_and_says_why() {
    // A port nothing listens on: bind one, note it, free it.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("replica.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\n{}deployments:\n  - {{name: a, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
            tokens_section(&format!("postgres://bg:s3cret@{free}/nothing"))
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bentogate"));
    cmd.args(["serve", "--config", config.to_str().unwrap()]);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("token database") && stderr.contains("tokens.postgres.url"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password was printed: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_passes_the_store_suite() {
    let Some(db) = TestDb::new("the_database_passes_the_store_suite").await else {
        return;
    };
    let source = Arc::new(
        PgSource::connect(pg_config(&db.url()), Arc::new(Metrics::new().unwrap()))
            .await
            .unwrap(),
    );
    // The store's calls block on this runtime: run them on the blocking pool, like the API.
    tokio::task::spawn_blocking(move || {
        store_suite::conformance(&*source);
        console_suite::conformance(&*source);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_creating_and_deleting_at_once_lose_and_duplicate_nothing() {
    let Some(db) =
        TestDb::new("two_replicas_creating_and_deleting_at_once_lose_and_duplicate_nothing").await
    else {
        return;
    };
    let u = upstream().await;
    let root = admin_token(&db.url()).await;
    let a = replica(&db.url(), u.addr).await;
    let b = replica(&db.url(), u.addr).await;
    // Each replica creates 40 tokens and deletes every other one it made, both at once.
    let churn = |admin: SocketAddr, tag: &'static str| {
        let root = root.clone();
        async move {
            let mut kept = Vec::new();
            for i in 0..40 {
                let (uid, value) = create(admin, &root, &format!("{tag}-{i}")).await;
                if i % 2 == 0 {
                    delete(admin, &root, &uid).await;
                } else {
                    kept.push((uid, value));
                }
            }
            kept
        }
    };
    let (kept_a, kept_b) = tokio::join!(
        tokio::spawn(churn(a.admin_addr, "a")),
        tokio::spawn(churn(b.admin_addr, "b"))
    );
    let kept: Vec<(String, String)> = kept_a.unwrap().into_iter().chain(kept_b.unwrap()).collect();
    // Listed by cursor through the other replica: exactly the survivors and the root, once.
    let mut seen = Vec::new();
    let mut path = "/api/v1/api_tokens?count=7".to_owned();
    loop {
        let (s, page) = api(a.admin_addr, "GET", &path, &root, Value::Null).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 41, "{page}");
        for t in page["items"].as_array().unwrap() {
            seen.push(t["uid"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/api_tokens?count=7&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 41);
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 41, "a token was listed twice");
    for (uid, value) in &kept {
        assert!(seen.contains(uid), "{uid} was lost");
        // Served by both replicas.
        assert_eq!(
            status(a.proxy_addrs[0], "/a/x", Some(value)).await,
            StatusCode::OK
        );
        assert_eq!(
            status(b.proxy_addrs[0], "/a/x", Some(value)).await,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_console_sessions_and_login_codes() {
    let Some(db) = TestDb::new("replicas_share_console_sessions_and_login_codes").await else {
        return;
    };
    let url = db.url();
    let up = upstream().await;
    let (a, b) = (replica(&url, up.addr).await, replica(&url, up.addr).await);
    cli(&url, &["member", "add", "bob"]).await;
    let made = cli(
        &url,
        &[
            "token", "create", "bob-api", "--user", "bob", "--scope", "api", "-o", "json",
        ],
    )
    .await;
    let bob = serde_json::from_str::<Value>(&made).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Signed in on A, the same cookie is a session on B (a load balancer may send it either way).
    let mut on_a = common::web::Web::new(a.admin_addr);
    assert_eq!(on_a.sign_in(&bob).await.status, StatusCode::SEE_OTHER);
    let mut on_b = common::web::Web::new(b.admin_addr);
    on_b.jar = on_a.jar.clone();
    assert!(on_b.signed_in().await, "B honours A's session");

    // A code asked of A, approved on B, answered on A, once.
    let code = send(&client(), a.admin_addr, "/api/v1/auth/code", &[]).await;
    let code = serde_json::from_str::<Value>(&code.body).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let panel = on_b.get(&format!("/api_tokens?code={code}")).await;
    let csrf = common::web::csrf_in(&panel.body).unwrap();
    let approved = on_b
        .post("/login/approve", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert!(
        approved.body.contains("Login approved"),
        "{}",
        approved.body
    );
    let poll = |admin: SocketAddr| {
        let path = format!("/api/v1/auth/token?code={code}");
        async move { send(&client(), admin, &path, &[]).await.status }
    };
    assert_eq!(poll(a.admin_addr).await, StatusCode::OK);
    assert_eq!(
        poll(b.admin_addr).await,
        StatusCode::NOT_FOUND,
        "once, on any replica"
    );

    // Signing out on B ends the session on A too.
    let csrf = on_b.csrf("/api_tokens").await;
    on_b.post("/logout", &[("csrf", &csrf)]).await;
    assert!(!on_a.signed_in().await);
}
