//! The request path end to end: a real gateway between a real client and a real upstream.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bentogate::token::Scope;
use common::*;
use http::StatusCode;

async fn two_route_gate() -> (Upstream, Upstream, Gate) {
    let a = upstream().await;
    let b = upstream().await;
    let body = format!(
        "deployments:\n{}{}{}{}",
        deployment(
            "summarize",
            a.addr,
            "protected",
            "    public_paths: [/readyz, /livez]\n"
        ),
        deployment(
            "translate",
            b.addr,
            "protected",
            "    hosts: [translate.example.com]\n"
        ),
        deployment("docs", b.addr, "public", "    path_prefix: /docs\n"),
        deployment(
            "ops",
            b.addr,
            "developer",
            "    hosts: [ops.example.com]\n    scopes: [read_cluster]\n"
        ),
    );
    let g = gate(&body).await;
    (a, b, g)
}

#[tokio::test]
async fn protected_route_answers_200_401_403() {
    let (a, _b, g) = two_route_gate().await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["summarize"]));
    let (_, other) = add_token(&g.tokens, Grant::to(&["translate"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;

    let c = client();
    let none = send(&c, g.addr, "/x", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers["www-authenticate"],
        r#"Bearer realm="bentogate""#
    );
    assert_eq!(none.headers["content-type"], "application/json");
    assert!(serde_json::from_str::<serde_json::Value>(&none.body).unwrap()["error"].is_string());

    let wrong = send(
        &c,
        g.addr,
        "/x",
        &[("authorization", &format!("Bearer {other}"))],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(
        wrong.headers["www-authenticate"],
        r#"Bearer realm="bentogate", error="insufficient_scope""#
    );
    assert!(!wrong.body.contains(&other));

    let forged = format!("{}A", &good[..good.len() - 1]);
    let bad = send(
        &c,
        g.addr,
        "/x",
        &[("authorization", &format!("Bearer {forged}"))],
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad.headers["www-authenticate"],
        r#"Bearer realm="bentogate", error="invalid_token""#
    );
    assert!(!bad.body.contains(&forged));

    let basic = send(&c, g.addr, "/x", &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);

    let ok = send(
        &c,
        g.addr,
        "/x",
        &[("authorization", &format!("bearer {good}"))],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body, "ok");
    assert!(a
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.path_and_query == "/x"));
}

#[tokio::test]
async fn routes_by_host_and_longest_prefix_and_404s_the_rest() {
    let (a, b, g) = two_route_gate().await;
    let (_, all) = add_token(
        &g.tokens,
        Grant {
            all: true,
            ..Grant::default()
        },
    );
    until_status(g.addr, "/", Some(&all), StatusCode::OK).await;
    let c = client();
    let auth = format!("Bearer {all}");
    // Host routes first; routes without hosts catch every other host (the sidecar case).
    let t = send(
        &c,
        g.addr,
        "/v1",
        &[
            ("host", "Translate.Example.com:8080"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(b.seen.lock().unwrap().len(), 1);
    let s = send(
        &c,
        g.addr,
        "/v1",
        &[("host", "anything.test"), ("authorization", &auth)],
    )
    .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        a.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path_and_query == "/v1")
            .count(),
        1
    );
    // Longest prefix: /docs is public and goes to b, /docsx is summarize's (protected).
    assert_eq!(
        send(&c, g.addr, "/docs/intro", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, g.addr, "/docsx", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(b.seen.lock().unwrap().len(), 2);

    let only_host = format!(
        "deployments:\n{}",
        deployment("one", a.addr, "public", "    hosts: [one.test]\n")
    );
    let g2 = gate(&only_host).await;
    let miss = send(&c, g2.addr, "/", &[("host", "two.test")]).await;
    assert_eq!(miss.status, StatusCode::NOT_FOUND);
    assert!(miss.body.contains("error"));
    assert_eq!(
        send(&c, g2.addr, "/", &[("host", "one.test")]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn public_paths_and_public_routes_pass_without_a_token() {
    let (a, _b, g) = two_route_gate().await;
    assert_eq!(status(g.addr, "/readyz", None).await, StatusCode::OK);
    assert_eq!(status(g.addr, "/livez", None).await, StatusCode::OK);
    // Exact paths only: a suffix or a dot-segment trick does not pass. Dot-segments are
    // resolved first, so the policy is the resolved path's (`/secret`: protected).
    assert_eq!(
        status(g.addr, "/readyz/x", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(g.addr, "/readyz/../secret", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(g.addr, "/docs/%2e%2e/secret", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(g.addr, "/readyz/../..", None).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(a.seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn monitoring_and_developer_policies_check_their_own_access() {
    let u = upstream().await;
    let body = format!(
        "deployments:\n{}{}",
        deployment(
            "metrics",
            u.addr,
            "monitoring",
            "    path_prefix: /metrics\n"
        ),
        deployment(
            "ops",
            u.addr,
            "developer",
            "    scopes: [read_cluster, api]\n"
        ),
    );
    let g = gate(&body).await;
    let (_, mon) = add_token(
        &g.tokens,
        Grant {
            monitoring: true,
            ..Grant::default()
        },
    );
    let (_, dev) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::Api, Scope::ReadCluster],
            ..Grant::default()
        },
    );
    let (_, half) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![Scope::Api],
            ..Grant::default()
        },
    );
    let (_, all) = add_token(
        &g.tokens,
        Grant {
            all: true,
            ..Grant::default()
        },
    );
    until_status(g.addr, "/metrics", Some(&mon), StatusCode::OK).await;
    assert_eq!(
        status(g.addr, "/metrics", Some(&dev)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(g.addr, "/metrics", Some(&all)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(g.addr, "/ops", Some(&dev)).await, StatusCode::OK);
    assert_eq!(
        status(g.addr, "/ops", Some(&half)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(g.addr, "/ops", Some(&mon)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(g.addr, "/ops", None).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_token_is_read_from_the_authorization_header_only() {
    let (_a, _b, g) = two_route_gate().await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["summarize"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    let c = client();
    for path in [format!("/?access_token={good}"), format!("/?token={good}")] {
        assert_eq!(
            send(&c, g.addr, &path, &[]).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let cookie = format!("token={good}; access_token={good}");
    assert_eq!(
        send(&c, g.addr, "/", &[("cookie", &cookie)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Two Authorization headers are ambiguous: 400, never "the first one wins".
    let mut req = http::Request::get(format!("http://{}/", g.addr));
    req = req
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", "Bearer other");
    let res = c
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn forwarding_rewrites_headers_and_identity_cannot_be_spoofed() {
    let (a, _b, g) = two_route_gate().await;
    let (uid, good) = add_token(&g.tokens, Grant::to(&["summarize"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    a.seen.lock().unwrap().clear();
    let auth = format!("Bearer {good}");
    let res = send(
        &client(),
        g.addr,
        "/predict?q=1",
        &[
            ("authorization", &auth),
            ("host", "gw.example.com"),
            ("x-bentogate-token-uid", "forged"),
            ("x-bentogate-token-name", "forged"),
            ("x-bentogate-token-owner", "forged"),
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("proxy-authorization", "Basic x"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["via"], "1.1 bentogate");
    let seen = a.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path_and_query, "/predict?q=1");
    let h = &seen.headers;
    assert!(
        h.get("authorization").is_none(),
        "authorization must be stripped"
    );
    assert_eq!(
        h.get_all("x-bentogate-token-uid")
            .iter()
            .collect::<Vec<_>>(),
        [uid.as_str()]
    );
    assert_eq!(h["x-bentogate-token-name"], format!("test-{uid}").as_str());
    assert_eq!(h["x-bentogate-token-owner"], "organization");
    // The client is no trusted proxy: what it claims in X-Forwarded-For is replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "gw.example.com");
    assert_eq!(h["host"], "gw.example.com");
    assert_eq!(h["via"], "1.1 bentogate");
    assert!(h.get("x-hop").is_none() && h.get("proxy-authorization").is_none());

    // On a public path no token is read, and forged identity headers are still removed.
    a.seen.lock().unwrap().clear();
    send(
        &client(),
        g.addr,
        "/readyz",
        &[("x-bentogate-token-uid", "forged")],
    )
    .await;
    assert!(a.seen.lock().unwrap()[0]
        .headers
        .get("x-bentogate-token-uid")
        .is_none());
}

#[tokio::test]
async fn authorization_is_kept_when_configured() {
    let u = upstream().await;
    let body = format!(
        "forwarding: {{strip_authorization: false, identity_headers: {{token_name: \"\"}}}}\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    );
    let g = gate(&body).await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["a"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    let seen = u.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {good}").as_str()
    );
    assert!(seen.headers.get("x-bentogate-token-name").is_none());
    assert!(seen.headers.get("x-bentogate-token-uid").is_some());
}

#[tokio::test]
async fn responses_stream_before_the_upstream_finishes() {
    let (a, _b, g) = two_route_gate().await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["summarize"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    for c in [client(), h2c_client()] {
        let req = http::Request::get(format!("http://{}/stream", g.addr))
            .header("authorization", format!("Bearer {good}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let res = c.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers().get("x-upstream-hop").is_none(),
            "connection-listed header leaked"
        );
        let mut body = res.into_body();
        use http_body_util::BodyExt;
        // The upstream holds "last" until released: reading "first" proves nothing is buffered.
        let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "first\n");
        a.release.notify_one();
        let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.to_bytes(), "last\n");
    }
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream() {
    let (a, _b, g) = two_route_gate().await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["summarize"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    let big = bytes::Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let req = http::Request::post(format!("http://{}/upload", g.addr))
        .header("authorization", format!("Bearer {good}"))
        .body(http_body_util::Full::new(big))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = a
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path_and_query == "/upload")
        .cloned()
        .unwrap();
    assert_eq!(seen.body_len, 8 * 1024 * 1024);
    assert_eq!(seen.method, "POST");
}

#[tokio::test]
async fn h2c_clients_and_h2c_upstreams_work() {
    let u = upstream().await;
    let body = format!(
        "deployments:\n{}",
        deployment("a", u.addr, "protected", "    upstream_protocol: h2\n")
    );
    let g = gate(&body).await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["a"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    let res = send(
        &h2c_client(),
        g.addr,
        "/h2",
        &[("authorization", &format!("Bearer {good}"))],
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = u
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.path_and_query == "/h2")
        .cloned()
        .unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.headers["via"], "2 bentogate");
}

#[tokio::test]
async fn upstream_failures_are_502_and_timeouts_504() {
    // Refused: a port that was just free.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // Reset: accepts, then closes without answering.
    let reset = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = reset.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = reset.accept().await {
            drop(s);
        }
    });
    let slow = upstream().await;
    let body = format!(
        "forwarding: {{timeouts: {{response_headers: 300ms, idle: 300ms}}}}\ndeployments:\n{}{}{}",
        deployment("refused", refused, "public", "    path_prefix: /refused\n"),
        deployment("reset", reset_addr, "public", "    path_prefix: /reset\n"),
        deployment("slow", slow.addr, "public", ""),
    );
    let g = gate(&body).await;
    let c = client();
    let r = send(&c, g.addr, "/refused", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.body.contains("error"));
    assert_eq!(
        send(&c, g.addr, "/reset", &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        send(&c, g.addr, "/hang", &[]).await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
    // A body that stops mid-way is cut after the idle timeout instead of hanging the client.
    let req = http::Request::get(format!("http://{}/stall", g.addr))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = c.request(req).await.unwrap();
    use http_body_util::BodyExt;
    let collected = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
        .await
        .unwrap();
    assert!(
        collected.is_err(),
        "a stalled body must end in an error, not hang"
    );
    let m = metrics(g.admin).await;
    assert_eq!(
        metric(
            &m,
            r#"bentogate_requests_total{deployment="refused",outcome="upstream_error"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"bentogate_requests_total{deployment="slow",outcome="upstream_timeout"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_request() {
    let u = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let stream = hanging_request(g.addr, &u).await;
    assert_eq!(u.cancelled.load(std::sync::atomic::Ordering::SeqCst), 0);
    drop(stream);
    eventually(Duration::from_secs(3), || async {
        u.cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test]
async fn admin_endpoints_report_health_and_metrics() {
    let (_a, _b, g) = two_route_gate().await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["summarize"]));
    until_status(g.addr, "/", Some(&good), StatusCode::OK).await;
    for _ in 0..3 {
        status(g.addr, "/", Some(&good)).await;
    }
    status(g.addr, "/", None).await;
    status(g.addr, "/", Some("bgt_definitelynotavalidtokenvalue000000")).await;
    let c = client();
    assert_eq!(
        send(&c, g.admin, "/healthz", &[]).await.status,
        StatusCode::OK
    );
    let ready = send(&c, g.admin, "/readyz", &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(ready.body.contains(r#""status":"ready""#), "{}", ready.body);
    let m = metrics(g.admin).await;
    assert!(
        metric(
            &m,
            r#"bentogate_requests_total{deployment="summarize",outcome="allowed"}"#
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"bentogate_requests_total{deployment="summarize",outcome="unauthorized"}"#
        ) >= 2.0
    );
    assert!(
        metric(
            &m,
            r#"bentogate_request_duration_seconds_count{deployment="summarize"}"#
        ) >= 4.0
    );
    assert!(metric(&m, "bentogate_token_cache_hits_total") >= 1.0, "{m}");
    assert!(metric(&m, "bentogate_token_cache_misses_total") >= 1.0);
    // The file source's index is its cache: nothing is kept in moka.
    assert_eq!(metric(&m, "bentogate_token_cache_entries"), 0.0, "{m}");
    assert!(
        metric(
            &m,
            r#"bentogate_token_file_reloads_total{result="success"}"#
        ) >= 1.0
    );
    assert_eq!(metric(&m, "bentogate_tokens_loaded"), 1.0);
    assert_eq!(
        metric(
            &m,
            &format!(
                "bentogate_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    assert!(!m.contains(&good));
}

/// The access-log line of the request to `path`, waiting up to 10 s for it.
fn access_line(lines: &std::sync::mpsc::Receiver<String>, path: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(wait).expect("no access-log line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["target"] == "bentogate::access" && v["path"] == path {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_counts_the_bytes_really_sent_both_ways_streamed_bodies_included() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bentogate.yaml");
    let yaml = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\n\
         log: {{format: json, access: true}}\nforwarding: {{timeouts: {{idle: 1s}}}}\n\
         deployments: [{{name: open, upstream: \"http://{}\", policy: public}}]\n",
        u.addr
    );
    std::fs::write(&config, yaml).unwrap();
    let (_child, lines, listening) = serve_binary(&config);
    let proxy: std::net::SocketAddr = listening["proxy_addr"].as_str().unwrap().parse().unwrap();

    // A chunked upload (no Content-Length: nothing declares its size), three chunks.
    let chunks = [vec![b'a'; 1000], vec![b'b'; 70_000], vec![b'c'; 5]];
    let sent: usize = chunks.iter().map(Vec::len).sum();
    let mut request = b"POST /upload HTTP/1.1\r\nhost: gate\r\ntransfer-encoding: chunked\r\n\
        connection: close\r\n\r\n"
        .to_vec();
    for c in &chunks {
        request.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        request.extend_from_slice(c);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert_eq!(u.seen.lock().unwrap().last().unwrap().body_len, sent);
    let line = access_line(&lines, "/upload");
    assert_eq!(line["bytes_in"], sent as u64, "{line}");
    assert_eq!(line["bytes_out"], 2, "{line}"); // "ok"
    assert_eq!(line["complete"], true, "{line}");

    // A streamed response: 16 MiB in 64 KiB frames, chunked, no Content-Length.
    let c = client();
    let res = c.get(format!("http://{proxy}/big").parse().unwrap());
    let res = res.await.unwrap();
    assert!(res.headers().get("content-length").is_none());
    let received = res.into_body().collect().await.unwrap().to_bytes().len();
    assert_eq!(received, 16 * 1024 * 1024);
    let line = access_line(&lines, "/big");
    assert_eq!(line["bytes_out"], received as u64, "{line}");
    assert_eq!(line["bytes_in"], 0, "{line}");
    assert_eq!(line["complete"], true, "{line}");

    // Cut short: one frame, then silence; the gateway ends the body after the idle timeout
    // and logs what was sent, marked incomplete.
    let res = c.get(format!("http://{proxy}/stall").parse().unwrap());
    let mut body = res.await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let line = access_line(&lines, "/stall");
    assert_eq!(line["bytes_out"], first.len() as u64, "{line}");
    assert_eq!(line["complete"], false, "{line}");
}
