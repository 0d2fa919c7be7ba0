//! Protective limits: header size (431), header read timeout (slowloris), max connections.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn oversized_headers_get_431() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{max_header_bytes: 2048}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let c = client();
    let under = "x".repeat(1000);
    assert_eq!(
        send(&c, g.addr, "/", &[("x-big", &under)]).await.status,
        StatusCode::OK
    );
    let over = "x".repeat(3000);
    let res = send(&c, g.addr, "/", &[("x-big", &over)]).await;
    assert_eq!(res.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(res.body.contains("error"));
    // Far beyond the limit, hyper refuses before parsing completes; still 431.
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let huge = "y".repeat(64 * 1024);
    s.write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-huge: {huge}\r\n\r\n").as_bytes())
        .await
        .unwrap_or(());
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(
        u.seen.lock().unwrap().len(),
        1,
        "oversized requests must not reach the upstream"
    );
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_headers_is_cut_off() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{header_read_timeout: 300ms}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    // The server must end the connection (after at most a 408) instead of waiting forever.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection still open 5 s after a 300 ms header timeout"
    );
    assert!(u.seen.lock().unwrap().is_empty());
}

/// A connection that never sends a byte owes its first head from the moment it opened: it is
/// cut at the header read timeout, not held for the (longer) keep-alive timeout.
#[tokio::test]
async fn a_silent_connection_is_cut_at_the_header_timeout() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{header_read_timeout: 300ms, keepalive_timeout: 30s}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a silent connection still open 5 s after a 300 ms header timeout"
    );
}

/// The first bytes decide HTTP/1.1 or HTTP/2 (whose preface starts `PRI`): a client that sends
/// one ambiguous byte and then trickles an HTTP/1.1 head is still cut at the header timeout, not
/// taken for an HTTP/2 connection that owes no head.
#[tokio::test]
async fn a_head_that_begins_like_the_http2_preface_is_still_timed() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{header_read_timeout: 300ms, keepalive_timeout: 30s}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    for first in [&b"P"[..], b"PRI * HT"] {
        let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
        s.write_all(first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The rest arrives a byte at a time, never ending the head.
        let mut buf = Vec::new();
        let trickle = async {
            for b in b"OST / HTTP/1.1\r\nhost: x\r\nx-slow: " {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            s.read_to_end(&mut buf).await
        };
        let closed = tokio::time::timeout(Duration::from_secs(5), trickle).await;
        assert!(
            closed.is_ok(),
            "a head starting {first:?} still open 5 s after a 300 ms header timeout"
        );
    }
    assert!(u.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{max_connections: 1}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let first = hanging_request(g.addr, &u).await;

    let mut second = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    second
        .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), second.read_to_end(&mut buf)).await;
    assert!(
        early.is_err(),
        "the second connection was served while the first held the only slot"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

/// The header read timeout runs from a head's first byte, on every request of a connection,
/// not while a kept-alive connection is idle (that is the keep-alive timeout's): an idle
/// connection outlives the header timeout and serves its next request; a trickled second head
/// is cut off like a first one.
#[tokio::test]
async fn the_header_timeout_times_each_head_and_not_the_idle_time_between_them() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{header_read_timeout: 300ms, keepalive_timeout: 10s}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let request = b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n";
    s.write_all(request).await.unwrap();
    let (_, first, _) = common::raw::read_answer(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for more than three header timeouts: still open, and the next request is served.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.write_all(b"GET /two HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, second, _) = common::raw::read_answer(&mut s).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // A third head that never completes is cut off (between 1 and 1.5 timeouts, plus slack).
    let started = std::time::Instant::now();
    s.write_all(b"GET /three HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a pending second head was never timed out");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "cut off after {took:?}, before the 300 ms timeout"
    );
    assert_eq!(
        u.seen.lock().unwrap().len(),
        2,
        "the cut request reached the upstream"
    );
}

/// HTTP/2 has no request head to time between requests: frames that arrive while no request is
/// in flight (here pings, every 100 ms for four header timeouts) never close the connection.
#[tokio::test]
async fn http2_frames_between_requests_are_not_a_slow_head() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{header_read_timeout: 300ms, keepalive_timeout: 10s}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let (mut h2, mut conn) = h2::client::handshake(tcp).await.unwrap();
    let mut pings = conn.ping_pong().unwrap();
    let driven = tokio::spawn(conn);
    for path in ["/one", "/two"] {
        let req = http::Request::get(format!("http://x{path}"))
            .body(())
            .unwrap();
        let (res, _) = h2.send_request(req, true).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(5), res)
            .await
            .expect("no response within 5 s")
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        if path == "/one" {
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                pings.ping(h2::Ping::opaque()).await.unwrap();
            }
        }
    }
    assert!(!driven.is_finished(), "the connection ended");
}
