//! Reading HTTP/1.1 answers off a raw TCP stream that stays open (keep-alive, upgrades), for
//! tests that write their requests by hand.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// One answer read from `stream`: its status (0 when unparseable), its head and its
/// `Content-Length` body, without waiting for the connection to close. Fails the test after
/// 10 s or if the connection closes first.
pub async fn read_answer(stream: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                return (status, head.to_owned(), body.to_owned());
            }
        }
        assert!(Instant::now() < deadline, "no complete answer: {text}");
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed early: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}
