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
