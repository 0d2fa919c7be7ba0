//! The stop a Kubernetes pod gets: SIGTERM to the real binary while clients keep sending, and a
//! load balancer that stops sending once `/readyz` says 503. With `shutdown.delay` longer than
//! the balancer takes to notice, no request fails: the listeners keep accepting through the delay,
//! then close, drain and exit 0. Also: the probe listener (`admin.probes`) serves probes and
//! metrics and never the token API.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, serve_binary, status, upstream, ProcessGroup};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A `bentogate serve` child and the addresses from its JSON "listening" line.
struct Served {
    child: ProcessGroup,
    proxy: SocketAddr,
    admin: SocketAddr,
    probes: SocketAddr,
}

fn serve(config: &std::path::Path) -> Served {
    let (child, _lines, listening) = serve_binary(config);
    let addr = |k: &str| listening[k].as_str().unwrap().parse().unwrap();
    Served {
        proxy: addr("proxy_addr"),
        admin: addr("admin_addr"),
        probes: addr("probes_addr"),
        child,
    }
}

fn config(dir: &std::path::Path, upstream: SocketAddr, shutdown: &str) -> std::path::PathBuf {
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\n\
         admin: {{address: \"127.0.0.1:0\", probes: \"127.0.0.1:0\"}}\n\
         shutdown: {shutdown}\n\
         log: {{format: json, access: false}}\n\
         throttle: {{failures_per_minute: 0}}\n\
         deployments:\n  - name: a\n    upstream: \"http://{upstream}\"\n    policy: public\n"
    );
    let path = dir.join("bentogate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "bentogate did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the load balancer's clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    /// Requests that started after SIGTERM and succeeded: the delay at work.
    ok_after_term: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_that_stops_within_the_delay_sees_no_failed_request() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let delay = Duration::from_secs(2);
    let mut s = serve(&config(dir.path(), u.addr, "{delay: 2s, timeout: 10s}"));
    assert_eq!(status(s.probes, "/readyz", None).await, StatusCode::OK);

    let tally = Arc::new(Tally::default());
    let sending = Arc::new(AtomicBool::new(true));
    let terminated = Arc::new(AtomicBool::new(false));
    // Eight clients: half open a new connection for every request (what a kube-proxy'd
    // Service does for new clients), half reuse keep-alive connections.
    let mut clients = Vec::new();
    for i in 0..8 {
        let (tally, sending, terminated) = (tally.clone(), sending.clone(), terminated.clone());
        let proxy = s.proxy;
        clients.push(tokio::spawn(async move {
            let mut builder = Client::builder(TokioExecutor::new());
            if i % 2 == 0 {
                builder.pool_max_idle_per_host(0);
            }
            let client = builder.build_http::<Full<Bytes>>();
            while sending.load(Ordering::Acquire) {
                let after_term = terminated.load(Ordering::Acquire);
                let req = http::Request::get(format!("http://{proxy}/work"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let ok = match client.request(req).await {
                    Ok(res) => {
                        res.status() == StatusCode::OK && res.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    if after_term {
                        tally.ok_after_term.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Traffic flows before the signal.
    let flowing = tally.clone();
    eventually(Duration::from_secs(10), move || {
        let n = flowing.ok.load(Ordering::Relaxed);
        async move { n >= 50 }
    })
    .await;

    let term_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &s.child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    terminated.store(true, Ordering::Release);
    // The load balancer's health check: /readyz every 100 ms; it turns 503 at once.
    let probes = s.probes;
    let noticed = eventually(Duration::from_secs(1), move || async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status(probes, "/readyz", None).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(noticed < Duration::from_secs(1), "readyz took {noticed:?}");
    // Liveness stays 200: the kubelet must not restart a pod that is stopping.
    assert_eq!(status(s.probes, "/healthz", None).await, StatusCode::OK);
    // The balancer takes a while to act on it (endpoint propagation), still within the delay.
    let until = term_at + delay / 2;
    tokio::time::sleep_until(until.into()).await;
    sending.store(false, Ordering::Release);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed, after) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.ok_after_term.load(Ordering::Relaxed),
    );
    eprintln!("requests: {ok} ok ({after} after SIGTERM), {failed} failed");
    assert_eq!(
        failed, 0,
        "{failed} requests failed during the shutdown delay"
    );
    assert!(
        after >= 20,
        "only {after} requests were served after SIGTERM"
    );
    // Once the delay is over the listeners close; the process drains and exits 0.
    let proxy = s.proxy;
    eventually(Duration::from_secs(10), move || async move {
        tokio::net::TcpStream::connect(proxy).await.is_err()
    })
    .await;
    assert!(
        term_at.elapsed() >= delay,
        "the listener closed {:?} after SIGTERM, before the delay",
        term_at.elapsed()
    );
    assert_eq!(
        wait_exit(&mut s.child.0, Duration::from_secs(10)).code(),
        Some(0)
    );
    let _ = s.admin;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delay_the_listeners_close_at_once() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(&config(dir.path(), u.addr, "{delay: 0s}"));
    assert_eq!(status(s.proxy, "/", None).await, StatusCode::OK);
    let term_at = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &s.child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        wait_exit(&mut s.child.0, Duration::from_secs(10)).code(),
        Some(0)
    );
    assert!(term_at.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_without_the_delay() {
    // SIGINT is a person at a terminal, not an orchestrator: a 60 s delay is not waited for.
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(&config(dir.path(), u.addr, "{delay: 60s}"));
    assert_eq!(status(s.proxy, "/", None).await, StatusCode::OK);
    assert!(Command::new("kill")
        .args(["-INT", &s.child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(
        wait_exit(&mut s.child.0, Duration::from_secs(20)).code(),
        Some(0),
        "exited well before the 60 s delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_listener_serves_probes_and_metrics_but_not_the_token_api() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&config(dir.path(), u.addr, "{delay: 0s}"));
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(s.probes, path, None).await, StatusCode::OK, "{path}");
    }
    let m = common::metrics(s.probes).await;
    assert!(m.contains("bentogate_build_info"), "{m}");
    for path in [
        "/api/v1/api_tokens",
        "/api/v1/auth/current",
        "/api/v1/members",
    ] {
        assert_eq!(
            status(s.probes, path, None).await,
            StatusCode::NOT_FOUND,
            "{path} on the probe listener"
        );
        // ...where the admin listener has it (401: no token).
        assert_eq!(
            status(s.admin, path, None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
}
