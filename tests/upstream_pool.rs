//! The upstream connection pool, seen from the upstream's side: a hand-written HTTP/1.1 server
//! that counts the connections it accepts and the ones that end.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the counting upstream does after each response.
#[derive(Clone, Copy)]
enum AfterResponse {
    /// Waits for the next request on the same connection.
    KeepAlive,
    /// Closes the connection this long after the response, as an upstream's own keep-alive
    /// timeout does, without saying so in the response.
    CloseAfter(Duration),
}

struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// Answers `200 ok` to every request head (GET, no body); `/slow` after 200 ms.
async fn counting_upstream(after: AfterResponse) -> Counting {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (a, e, r) = (accepted.clone(), ended.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let (e, r) = (e.clone(), r.clone());
            tokio::spawn(async move {
                serve(stream, after, r).await;
                e.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Counting {
        addr,
        accepted,
        ended,
        requests,
    }
}

async fn serve(mut stream: TcpStream, after: AfterResponse, requests: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        requests.fetch_add(1, Ordering::SeqCst);
        if head.starts_with("GET /slow") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(response).await.is_err() {
            return;
        }
        if let AfterResponse::CloseAfter(wait) = after {
            tokio::time::sleep(wait).await;
            return;
        }
    }
}

fn count(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

#[tokio::test]
async fn deployments_with_one_upstream_share_its_kept_alive_connection() {
    let u = counting_upstream(AfterResponse::KeepAlive).await;
    let g = gate(&format!(
        "deployments:\n{}{}",
        deployment("a", u.addr, "public", "    path_prefix: /a\n"),
        deployment("b", u.addr, "public", "    path_prefix: /b\n"),
    ))
    .await;
    for i in 0..20 {
        let path = if i % 2 == 0 { "/a/x" } else { "/b/x" };
        assert_eq!(status(g.addr, path, None).await, StatusCode::OK);
    }
    assert_eq!(count(&u.requests), 20);
    assert_eq!(
        count(&u.accepted),
        1,
        "20 sequential requests opened more than one connection"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_without_an_error() {
    let u = counting_upstream(AfterResponse::CloseAfter(Duration::from_millis(30))).await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    for round in 1..=5 {
        assert_eq!(
            status(g.addr, "/x", None).await,
            StatusCode::OK,
            "round {round}"
        );
        // The upstream closes the connection the gateway keeps; the next request must not
        // fail on it.
        eventually(Duration::from_secs(3), || async {
            count(&u.ended) == round
        })
        .await;
    }
    assert_eq!(count(&u.accepted), 5);
    assert_eq!(count(&u.requests), 5);
}

#[tokio::test]
async fn idle_upstream_connections_close_after_the_idle_timeout() {
    let u = counting_upstream(AfterResponse::KeepAlive).await;
    let g = gate(&format!(
        "forwarding: {{timeouts: {{idle: 400ms}}}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    assert_eq!(status(g.addr, "/x", None).await, StatusCode::OK);
    let started = Instant::now();
    let took = eventually(Duration::from_secs(5), || async { count(&u.ended) == 1 }).await;
    let idle_for = started.elapsed();
    assert!(
        idle_for >= Duration::from_millis(300),
        "closed after {idle_for:?} idle, before the 400ms timeout"
    );
    assert!(
        took <= Duration::from_secs(2),
        "still open {took:?} after the request"
    );
    // A later request simply opens a new one.
    assert_eq!(status(g.addr, "/x", None).await, StatusCode::OK);
    assert_eq!(count(&u.accepted), 2);
}

#[tokio::test]
async fn the_pool_keeps_at_most_max_idle_connections() {
    let u = counting_upstream(AfterResponse::KeepAlive).await;
    let g = gate(&format!(
        "forwarding: {{pool: {{max_idle_per_upstream: 1}}}}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    // Three at once need three connections...
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(status(g.addr, "/slow", None)))
        .collect();
    for s in slow {
        assert_eq!(s.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(count(&u.accepted), 3);
    // ...and only one of them is kept afterwards.
    eventually(Duration::from_secs(3), || async { count(&u.ended) == 2 }).await;
    for _ in 0..3 {
        assert_eq!(status(g.addr, "/x", None).await, StatusCode::OK);
    }
    assert_eq!(count(&u.accepted), 3, "the kept connection was not reused");
}
