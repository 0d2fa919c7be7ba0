//! Hostile input: throttled guessing, request smuggling and framing, and a leak scan.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn bad_token() -> String {
    bentogate::token::Secret::generate()
        .unwrap()
        .expose()
        .to_owned()
}

#[tokio::test]
async fn failed_guesses_are_throttled_per_address_before_any_lookup() {
    let u = upstream().await;
    let g = gate(&format!(
        "throttle: {{ failures_per_minute: 60, burst: 5, trusted_proxies: [\"10.0.0.0/8\"] }}\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let (_, good) = add_token(&g.tokens, Grant::to(&["a"]));
    // Wait for the token without failing requests (they would count).
    eventually(Duration::from_secs(3), || async {
        metric(&metrics(g.admin).await, "bentogate_tokens_loaded") >= 1.0
    })
    .await;
    assert_eq!(status(g.addr, "/", Some(&good)).await, StatusCode::OK);

    for i in 0..5 {
        assert_eq!(
            status(g.addr, "/", Some(&bad_token())).await,
            StatusCode::UNAUTHORIZED,
            "failure {i} is within the burst"
        );
    }
    let a = send(
        &client(),
        g.addr,
        "/",
        &[("authorization", &format!("Bearer {}", bad_token()))],
    )
    .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // No credentials at all count as failures too, and are refused the same way.
    assert_eq!(
        status(g.addr, "/", None).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // While throttled, guesses cost no source lookup...
    let lookups = |m: &str| metric(m, "bentogate_token_source_lookups_total");
    let before = lookups(&metrics(g.admin).await);
    for _ in 0..20 {
        assert_eq!(
            status(g.addr, "/", Some(&bad_token())).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    let m = metrics(g.admin).await;
    assert_eq!(lookups(&m), before, "a throttled client caused lookups");
    // ...and a live token from the same address still passes: success is never throttled.
    assert_eq!(status(g.addr, "/", Some(&good)).await, StatusCode::OK);
    assert!(
        metric(
            &m,
            "bentogate_requests_total{deployment=\"a\",outcome=\"throttled\"}"
        ) >= 21.0
    );
    assert_eq!(metric(&m, "bentogate_throttle_failures_total"), 5.0);

    // The bucket refills at one failure per second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status(g.addr, "/", Some(&bad_token())).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket_and_the_map_is_bounded() {
    let u = upstream().await;
    let g = gate(&format!(
        "throttle: {{ failures_per_minute: 60, burst: 2, max_clients: 50, trusted_proxies: [\"127.0.0.1\"] }}\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let c = client();
    let guess = |xff: String| {
        let c = c.clone();
        async move {
            let auth = format!("Bearer {}", bad_token());
            send(
                &c,
                g.addr,
                "/",
                &[("authorization", &auth), ("x-forwarded-for", &xff)],
            )
            .await
            .status
        }
    };
    for _ in 0..2 {
        assert_eq!(guess("203.0.113.1".into()).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        guess("203.0.113.1".into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy is not affected; the proxy's own address neither.
    assert_eq!(guess("203.0.113.2".into()).await, StatusCode::UNAUTHORIZED);
    // A flood of distinct addresses: the bucket map stays bounded.
    for i in 0..1000u32 {
        let ip = format!("198.18.{}.{}", i / 250, i % 250);
        guess(ip).await;
    }
    let m = metrics(g.admin).await;
    let tracked = metric(&m, "bentogate_throttle_clients");
    assert!(
        tracked <= 100.0,
        "{tracked} buckets for a bound of 50 (moka trims lazily)"
    );
}

/// Sends raw bytes to the gateway and returns everything it answered until it closed. With
/// `half_close` the client also ends its side (a forwarded request is then cancelled, as a
/// client that went away; use `connection: close` instead for those).
async fn raw_with(g: &Gate, bytes: &[u8], half_close: bool) -> String {
    let mut tcp = TcpStream::connect(g.addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    if half_close {
        tcp.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn raw(g: &Gate, bytes: &[u8]) -> String {
    raw_with(g, bytes, true).await
}

/// Each ambiguous framing is refused with 400 (or answered as exactly one request), and the
/// upstream never sees a second, smuggled request.
#[tokio::test]
async fn ambiguous_framing_is_refused_and_nothing_is_smuggled() {
    let u = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "content-length and chunked",
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "two content-lengths",
            format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: 40\r\n\r\n{smuggled}"),
        ),
        (
            "chunked, identity",
            format!("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "obs-fold",
            format!("GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n{smuggled}"),
        ),
        (
            "bare LF line endings",
            format!("GET / HTTP/1.1\nhost: x\ntransfer-encoding: chunked\n\n0\n\n{smuggled}"),
        ),
        (
            "transfer-encoding with a space before the colon",
            format!("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    for (name, bytes) in cases {
        let answer = raw(&g, bytes.as_bytes()).await;
        let seen: Vec<String> = u
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path_and_query.clone())
            .collect();
        assert!(
            !seen.iter().any(|p| p == "/smuggled"),
            "{name}: a second request reached the upstream: {seen:?}\n{answer}"
        );
        let answers = answer.matches("HTTP/1.1 ").count();
        assert!(
            answer.starts_with("HTTP/1.1 400") || answers <= 1,
            "{name}: {answers} answers:\n{answer}"
        );
    }
}

#[tokio::test]
async fn absolute_form_targets_route_by_their_authority_and_the_host_cannot_disagree_unseen() {
    let u = upstream().await;
    let other = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}{}",
        deployment("a", u.addr, "public", "    hosts: [a.test]\n"),
        deployment("b", other.addr, "protected", "    hosts: [b.test]\n")
    ))
    .await;
    // The target says b.test (protected), the Host header says a.test (public): routing
    // follows the target's authority (RFC 9112 section 3.2.2), so no token means 401.
    let answer = raw(
        &g,
        b"GET http://b.test/x HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(u.seen.lock().unwrap().is_empty() && other.seen.lock().unwrap().is_empty());
    // Consistent absolute form to the public route passes, with the path only upstream.
    let answer = raw_with(
        &g,
        b"GET http://a.test/y?q=1 HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n",
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(u.seen.lock().unwrap()[0].path_and_query, "/y?q=1");
}

#[tokio::test]
async fn http2_requests_with_connection_specific_headers_are_refused() {
    let u = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    // hyper's client will not send these, so speak HTTP/2 with the h2 crate's raw client.
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    for (name, value) in [
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let req = http::Request::get("http://x/")
            .header(name, value)
            .body(())
            .unwrap();
        // An error before sending is a refusal too.
        if let Ok((res, _)) = h2.send_request(req, true) {
            let refused = match res.await {
                Err(_) => true,
                Ok(r) => r.status() == StatusCode::BAD_REQUEST,
            };
            assert!(refused, "{name} was accepted");
        }
        h2 = match h2.ready().await {
            Ok(h) => h,
            Err(_) => break, // the connection was reset: nothing more to send on it
        };
    }
    assert!(
        u.seen.lock().unwrap().is_empty(),
        "a malformed HTTP/2 request reached the upstream"
    );
}

#[tokio::test]
async fn guessing_control_plane_keys_is_throttled_too() {
    let u = upstream().await;
    let g = gate(&format!(
        "throttle: {{ failures_per_minute: 60, burst: 3 }}\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let ask = |key: String| async move {
        request(
            &client(),
            "GET",
            g.admin,
            "/api/v1/api_tokens",
            &[("x-yatai-api-token", &key)],
            "",
        )
        .await
    };
    for _ in 0..3 {
        assert_eq!(ask(bad_token()).await.status, StatusCode::UNAUTHORIZED);
    }
    let a = ask(bad_token()).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(a.headers.contains_key("retry-after"));
    // Health checks on the same listener are not affected.
    assert_eq!(status(g.admin, "/healthz", None).await, StatusCode::OK);
}

#[tokio::test]
async fn guesses_spread_over_proxy_api_and_introspection_share_one_bucket() {
    let u = upstream().await;
    let g = gate(&format!(
        "throttle: {{ failures_per_minute: 60, burst: 3 }}\ndeployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    let listed = |key: String| async move {
        api_call(
            g.admin,
            "GET",
            "/api/v1/api_tokens",
            &key,
            serde_json::Value::Null,
        )
        .await
        .0
    };
    let api = || listed(bad_token());
    let introspect = || async {
        request(
            &client(),
            "POST",
            g.admin,
            "/v1/introspect",
            &[("authorization", &format!("Bearer {}", bad_token()))],
            "token=x",
        )
        .await
        .status
    };
    let (_, live) = add_token(
        &g.tokens,
        Grant {
            scopes: vec![bentogate::token::Scope::Api],
            ..Grant::to(&["a"])
        },
    );
    // Wait for the file to be loaded without using the token: a 401 would take from the bucket.
    eventually(Duration::from_secs(5), || async {
        metric(&metrics(g.admin).await, "bentogate_tokens_loaded") >= 1.0
    })
    .await;
    assert_eq!(status(g.addr, "/", Some(&live)).await, StatusCode::OK);
    assert_eq!(listed(live.clone()).await, StatusCode::OK);
    let forwarded = u.seen.lock().unwrap().len();
    // One failure on each plane empties the bucket of 3 ...
    assert_eq!(
        status(g.addr, "/", Some(&bad_token())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api().await, StatusCode::UNAUTHORIZED);
    assert_eq!(introspect().await, StatusCode::UNAUTHORIZED);
    // ... so each plane now refuses this address, the data plane included.
    assert_eq!(
        status(g.addr, "/", Some(&bad_token())).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(api().await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(introspect().await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(u.seen.lock().unwrap().len(), forwarded);
    // A live token (cached by its use before the guessing) still passes on both listeners:
    // success is never throttled.
    assert_eq!(status(g.addr, "/", Some(&live)).await, StatusCode::OK);
    assert_eq!(listed(live.clone()).await, StatusCode::OK);
    // The failures were counted where operators look.
    assert_eq!(
        metric(&metrics(g.admin).await, "bentogate_throttle_failures_total"),
        3.0
    );
}
