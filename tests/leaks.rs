//! No secret leaks: the real binary, logging at trace level, serves a mix of every kind of traffic
//! the suite exercises (data plane on HTTP/1.1 and h2c, every policy, bad and good tokens, the
//! control-plane API, introspection, metrics, throttling, shutdown); then every byte it wrote to
//! stdout and stderr, every /metrics scrape and every response body (except the one create
//! response that must carry its value) is scanned for every token value created.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bentogate"))
}

fn create(dir: &std::path::Path, config: &str, args: &[&str]) -> String {
    let out = bin()
        .current_dir(dir)
        .args(["token", "create"])
        .args(args)
        .args(["--config", config, "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_value_appears_in_any_output_log_metric_or_body() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("bentogate.yaml").display().to_string();
    std::fs::write(
        &config,
        format!(
            "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{format: json, access: true, level: trace}}\nthrottle: {{failures_per_minute: 60, burst: 100}}\ndeployments:\n{}{}{}{}",
            deployment("a", u.addr, "protected", "    path_prefix: /a\n"),
            deployment("mon", u.addr, "monitoring", "    path_prefix: /mon\n"),
            deployment("dev", u.addr, "developer", "    path_prefix: /dev\n    scopes: [read_cluster]\n"),
            deployment("pub", u.addr, "public", "    path_prefix: /pub\n"),
        ),
    )
    .unwrap();
    let mut values = vec![
        create(
            d,
            &config,
            &[
                "admin",
                "--scope",
                "api",
                "--scope",
                "write_organization",
                "--scope",
                "read_cluster",
                // It creates a token for `a` below; a new token grants no more than its maker.
                "--all-deployments",
            ],
        ),
        create(d, &config, &["caller", "--deployment", "a"]),
        create(d, &config, &["monitor", "--monitoring"]),
        create(
            d,
            &config,
            &["everywhere", "--all-deployments", "--expires", "30d"],
        ),
    ];
    let foreign = "yatai0123456789abcdefXYZ".to_owned();
    std::fs::write(
        d.join("import.yaml"),
        format!("- {{ name: legacy, value: {foreign}, deployments: [a] }}\n"),
    )
    .unwrap();
    let imported = bin()
        .current_dir(d)
        .args(["token", "import", "import.yaml", "--config", &config])
        .output()
        .unwrap();
    assert!(imported.status.success());
    values.push(foreign);
    let unknown = bentogate::token::Secret::generate()
        .unwrap()
        .expose()
        .to_owned();
    values.push(unknown.clone());

    // Its own process group, killed on drop: a failing assertion leaves no server running.
    let mut served = ProcessGroup::spawn(
        bin()
            .args(["serve", "--config", &config])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let child = &mut served.0;
    // Read stderr on a thread; the first lines give the addresses.
    let mut err = child.stderr.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        all
    });
    let out_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = out.read_to_end(&mut all);
        all
    });
    let (proxy, admin): (SocketAddr, SocketAddr) = {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = String::new();
        loop {
            seen.push_str(
                &rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .unwrap(),
            );
            if let Some(line) = seen.lines().find(|l| l.contains("\"listening\"")) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                break (
                    v["proxy_addr"].as_str().unwrap().parse().unwrap(),
                    v["admin_addr"].as_str().unwrap().parse().unwrap(),
                );
            }
        }
    };

    let mut bodies: Vec<String> = Vec::new();
    // The throttle is one per address across proxy and control plane. The data-plane guessing
    // (hundreds of failures) comes from 127.0.0.2 and empties that address's bucket; the
    // control-plane calls come from 127.0.0.1, whose fewer than 100 refusals stay within the
    // burst, so the API really answers instead of a 429 for everything.
    let h1 = client();
    let guess = |http2: bool| {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_local_address(Some([127, 0, 0, 2].into()));
        let mut builder =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        builder.http2_only(http2);
        builder.build(connector)
    };
    let (g1, g2) = (guess(false), guess(true));
    for c in [&g1, &g2] {
        for path in [
            "/a/x?token=q",
            "/mon/metrics",
            "/dev/x",
            "/pub/x",
            "/nowhere",
        ] {
            for v in &values {
                for header in [
                    format!("Bearer {v}"),
                    format!("bearer   {v}"),
                    format!("Basic {v}"),
                    v.clone(),
                ] {
                    bodies.push(
                        send(c, proxy, path, &[("authorization", &header)])
                            .await
                            .body,
                    );
                }
                bodies.push(
                    send(c, proxy, &format!("{path}?access_token={v}"), &[])
                        .await
                        .body,
                );
                let dup = format!("Bearer {v}");
                bodies.push(
                    send(
                        c,
                        proxy,
                        path,
                        &[("authorization", &dup), ("authorization", &dup)],
                    )
                    .await
                    .body,
                );
            }
        }
    }
    let control_plane_from = bodies.len();
    // Control plane: every read path, a create (whose value is allowed in its own response),
    // a delete, refusals, introspection of every value.
    let admin_key = &values[0].clone();
    for path in [
        "/api/v1/auth/current",
        "/api/v1/current_org",
        "/api/v1/api_tokens",
        "/api/v1/members",
    ] {
        for key in [admin_key, &values[1], &unknown] {
            bodies.push(
                request(&h1, "GET", admin, path, &[("x-yatai-api-token", key)], "")
                    .await
                    .body,
            );
        }
    }
    let created = request(
        &h1,
        "POST",
        admin,
        "/api/v1/api_tokens",
        &[("x-yatai-api-token", admin_key)],
        r#"{"name":"made","deployments":["a"]}"#,
    )
    .await;
    assert_eq!(created.status, http::StatusCode::OK, "{}", created.body);
    let made: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    let made_value = made["token"].as_str().unwrap().to_owned();
    let made_uid = made["uid"].as_str().unwrap().to_owned();
    bodies.push(
        send(
            &h1,
            proxy,
            "/a/x",
            &[("authorization", &format!("Bearer {made_value}"))],
        )
        .await
        .body,
    );
    bodies.push(
        request(
            &h1,
            "GET",
            admin,
            &format!("/api/v1/api_tokens/{made_uid}"),
            &[("x-yatai-api-token", admin_key)],
            "",
        )
        .await
        .body,
    );
    bodies.push(
        request(
            &h1,
            "DELETE",
            admin,
            &format!("/api/v1/api_tokens/{made_uid}"),
            &[("x-yatai-api-token", admin_key)],
            "",
        )
        .await
        .body,
    );
    values.push(made_value);
    // A value pasted where a uid or a route goes is neither echoed nor logged.
    for v in &values {
        for (method, path) in [
            ("GET", format!("/api/v1/api_tokens/{v}")),
            ("DELETE", format!("/api/v1/api_tokens/{v}")),
            ("GET", format!("/api/v1/{v}")),
        ] {
            for key in [admin_key, &unknown] {
                let headers = [("x-yatai-api-token", key.as_str())];
                bodies.push(request(&h1, method, admin, &path, &headers, "").await.body);
            }
        }
    }
    for v in &values {
        bodies.push(
            request(
                &h1,
                "POST",
                admin,
                "/v1/introspect",
                &[
                    ("x-yatai-api-token", admin_key),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                &format!("token={v}"),
            )
            .await
            .body,
        );
    }
    // The control plane answered every call above: none was a 429 (which would scan nothing).
    let throttled = bodies[control_plane_from..]
        .iter()
        .filter(|b| b.contains("too many failed authorizations"))
        .count();
    assert_eq!(
        throttled, 0,
        "{throttled} control-plane calls were throttled"
    );
    assert!(
        bodies.iter().any(|b| b.contains(&made_uid)),
        "the created token was never read back"
    );
    // Keep guessing from the throttled address.
    for _ in 0..30 {
        bodies.push(
            send(
                &g1,
                proxy,
                "/a/x",
                &[("authorization", &format!("Bearer {unknown}"))],
            )
            .await
            .body,
        );
    }
    let scrape = metrics(admin).await;
    bodies.push(scrape.clone());
    bodies.push(send(&h1, admin, "/readyz", &[]).await.body);

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    assert!(
        stderr.contains("bentogate::access"),
        "the access log was not written"
    );
    assert!(
        scrape.contains("outcome=\"throttled\""),
        "the traffic did not reach the throttle"
    );

    for v in &values {
        for (name, text) in [
            ("stderr", &stderr),
            ("stdout", &stdout),
            ("/metrics", &scrape),
        ] {
            assert!(
                !text.contains(v.as_str()),
                "a token value appeared in {name}"
            );
        }
        for (i, b) in bodies.iter().enumerate() {
            assert!(
                !b.contains(v.as_str()),
                "a token value appeared in response body {i}: {b}"
            );
        }
    }
    eprintln!(
        "scanned {} bytes of stderr, {} of stdout, {} response bodies for {} token values",
        stderr.len(),
        stdout.len(),
        bodies.len(),
        values.len()
    );
}
