//! The signals an operator reads, from the real binary: the access log's fields, `X-Request-Id`
//! kept or generated and seen on both sides, an upstream failure logged with the upstream's
//! address and the OS's reason and counted by kind, the `process_*` and upstream metrics; and
//! the dashboard and alert rules in deploy/monitoring use only metric names a live /metrics has.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{add_token, free_port, metrics, send, serve_binary, upstream, Grant, ProcessGroup};
use http::StatusCode;

struct Served {
    _child: ProcessGroup,
    proxy: SocketAddr,
    probes: SocketAddr,
    lines: mpsc::Receiver<String>,
}

/// `bentogate serve` on port 0 with routes `a` (protected, to `up`) and `dead` (public, to a
/// port nothing listens on), JSON logs with the access log on.
fn serve(dir: &Path, up: SocketAddr) -> Served {
    let dead = free_port();
    let config = dir.join("bentogate.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\n\
             admin: {{address: \"127.0.0.1:0\", probes: \"127.0.0.1:0\"}}\n\
             shutdown: {{delay: 0s}}\n\
             throttle: {{failures_per_minute: 0}}\n\
             log: {{format: json, access: true}}\n\
             deployments:\n\
             \x20 - {{name: dead, path_prefix: /dead, upstream: \"http://127.0.0.1:{dead}\", policy: public}}\n\
             \x20 - {{name: a, upstream: \"http://{up}\", policy: protected}}\n"
        ),
    )
    .unwrap();
    let (child, lines, listening) = serve_binary(&config);
    let addr = |k: &str| listening[k].as_str().unwrap().parse().unwrap();
    Served {
        proxy: addr("proxy_addr"),
        probes: addr("probes_addr"),
        _child: child,
        lines,
    }
}

/// The next JSON log line that `matches`, within 5 s.
fn next_line(
    lines: &mpsc::Receiver<String>,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no such log line");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if matches(&v) {
                return v;
            }
        }
    }
}

fn access(v: &serde_json::Value) -> bool {
    v["target"] == "bentogate::access"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_and_request_ids_follow_a_request_through() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (uid, value) = add_token(&dir.path().join("tokens.yaml"), Grant::to(&["a"]));
    let (other_uid, other) = add_token(&dir.path().join("tokens.yaml"), Grant::to(&["dead"]));
    let s = serve(dir.path(), u.addr);
    let client = common::client();
    let bearer = format!("Bearer {value}");

    // A sane id from the client is kept: forwarded and returned; the path is logged normalized.
    let req = http::Request::post(format!("http://{}/x/./y//z?q=secret", s.proxy))
        .header("authorization", &bearer)
        .header("x-request-id", "lb-42:abc")
        .header("host", "models.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-request-id"], "lb-42:abc");
    let seen = u.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-request-id"], "lb-42:abc");
    let line = next_line(&s.lines, access);
    assert_eq!(line["request_id"], "lb-42:abc", "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["path"], "/x/y/z", "{line}");
    assert_eq!(line["host"], "models.example.com", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes_in"], 5, "{line}");
    assert_eq!(line["bytes_out"], 2, "{line}"); // the upstream's "ok"
    assert_eq!(line["token_uid"], uid.as_str(), "{line}");
    assert!(
        line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(line["latency_us"].as_u64().is_some(), "{line}");
    let text = line.to_string();
    assert!(!text.contains(&value) && !text.contains("secret"), "{text}");

    // No id: one is generated, and the upstream and the client see the same one.
    let a = send(&client, s.proxy, "/", &[("authorization", &bearer)]).await;
    let id = a.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    let seen = u.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-request-id"], id.as_str());
    assert_eq!(next_line(&s.lines, access)["request_id"], id.as_str());

    // A 403 names the live token that was refused; a 401 carries an id too.
    let a = send(
        &client,
        s.proxy,
        "/",
        &[("authorization", &format!("Bearer {other}"))],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.headers.contains_key("x-request-id"));
    let line = next_line(&s.lines, access);
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["token_uid"], other_uid.as_str(), "{line}");
    let a = send(&client, s.proxy, "/", &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.headers["x-request-id"].len(), 32);

    // An upstream that refuses: 502, a warning naming the address and the OS reason, counted.
    let a = send(&client, s.proxy, "/dead/x", &[]).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let warn = next_line(&s.lines, |v| v["message"] == "upstream request failed");
    assert_eq!(warn["deployment"], "dead", "{warn}");
    assert!(
        warn["upstream"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{warn}"
    );
    let error = warn["error"].as_str().unwrap();
    assert!(error.contains("Connection refused"), "{warn}");
    let m = metrics(s.probes).await;
    assert_eq!(
        common::metric(
            &m,
            "bentogate_upstream_errors_total{deployment=\"dead\",kind=\"connect_refused\"}"
        ),
        1.0
    );
    assert!(common::metric(&m, "bentogate_upstream_requests_total{deployment=\"a\"}") >= 2.0);
    let pool = format!(
        "bentogate_upstream_connections_opened_total{{upstream=\"{}\"}}",
        u.addr
    );
    assert!(common::metric(&m, &pool) >= 1.0, "{m}");
    // CPU time counts in 10 ms ticks: a fresh process may show 0, but the series is there.
    assert!(common::metric_value(&m, "process_cpu_seconds_total").is_some());
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(common::metric(&m, name) > 0.0, "{name}");
    }
}

/// Every `bentogate_*` and `process_*` name in `text` (PromQL, JSON, YAML alike).
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("bentogate_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_use_only_metrics_that_exist() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), u.addr);
    let live: BTreeSet<String> = metrics(s.probes)
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let alerts: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("alerts.yaml")).unwrap()).unwrap();
    let mut rules = 0;
    for group in alerts["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push_str(rule["expr"].as_str().unwrap());
            exprs.push('\n');
            rules += 1;
        }
    }
    let used = metric_names(&exprs);
    assert!(used.len() >= 15 && rules >= 8, "{used:?}");
    let missing: Vec<_> = used.iter().filter(|n| !live.contains(*n)).collect();
    assert!(missing.is_empty(), "not in /metrics: {missing:?}");
}
