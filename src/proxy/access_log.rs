//! The access log (`bentogate::access`): what a request's line needs, captured only when
//! `log.access` is on, and the one function that writes it. Never a token value, a credential
//! header or the query string.
//!
//! The line is written when the response body has been handed to the client in full, or when
//! it is dropped before that (the client went away, the upstream failed mid-body): `bytes_in` is
//! then the request body bytes actually forwarded upstream, `bytes_out` the response body bytes
//! actually sent, both counted frame by frame ([`CountedBody`], [`LoggedBody`]), streamed
//! (chunked) bodies included; `complete` says whether the response body ended normally.
//! With the access log off, neither wrapper counts or allocates: one branch per frame.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::metrics::Outcome;
use crate::token::Token;

/// What the access log needs from the request, captured only when it is on.
pub(super) struct Logged {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) host: Option<HeaderValue>,
    /// Request body bytes forwarded so far, counted by the request's [`CountedBody`].
    pub(super) bytes_in: Arc<AtomicU64>,
    /// The normalized path, when it differs from the one sent.
    pub(super) path: Option<String>,
}

/// Everything one access-log line holds, kept by the response body until it ends.
pub(super) struct Line {
    pub(super) logged: Logged,
    pub(super) client: SocketAddr,
    pub(super) deployment: Option<std::sync::Arc<str>>,
    pub(super) status: u16,
    pub(super) outcome: Outcome,
    /// The token, for its uid (never its value).
    pub(super) token: Option<Arc<Token>>,
    pub(super) request_id: HeaderValue,
    /// From the request's arrival to its response headers.
    pub(super) latency: Duration,
    /// Response body bytes sent so far.
    pub(super) bytes_out: u64,
}

impl Line {
    /// Writes the line (`bentogate::access`); `complete` is false when the response body was
    /// cut short.
    fn write(&self, complete: bool) {
        let logged = &self.logged;
        let host = logged
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or_else(|| logged.uri.authority().map(|a| a.as_str()));
        tracing::info!(
            target: "bentogate::access",
            client = %self.client,
            host = host.unwrap_or("-"),
            method = %logged.method,
            path = logged.path.as_deref().unwrap_or(logged.uri.path()),
            deployment = self.deployment.as_deref().unwrap_or("-"),
            status = self.status,
            decision = self.outcome.as_str(),
            bytes_in = logged.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out,
            complete,
            request_id = self.request_id.to_str().unwrap_or("-"),
            token_uid = self.token.as_deref().map_or("-", |t| t.uid.as_str()),
            latency_us = self.latency.as_micros() as u64,
        );
    }
}

/// The number of data bytes in a frame (none for trailers).
fn data_len<D: Buf>(frame: &Frame<D>) -> u64 {
    frame.data_ref().map_or(0, |d| d.remaining() as u64)
}

pin_project! {
    /// A request body on its way upstream, adding the bytes forwarded to a counter shared with
    /// the access-log line (none when the log is off).
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        count: Option<Arc<AtomicU64>>,
    }
}

impl<B> CountedBody<B> {
    /// Wraps `inner`; `count`, when some, receives every data byte read from it.
    pub fn new(inner: B, count: Option<Arc<AtomicU64>>) -> Self {
        CountedBody { inner, count }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(count), Poll::Ready(Some(Ok(frame)))) = (this.count, &polled) {
            count.fetch_add(data_len(frame), Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The response body on its way to the client. With the access log on it counts the bytes
    /// sent and writes the request's line when the body ends, fails, or is dropped unfinished.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        line: Option<Box<Line>>,
        // The body was already at its end when wrapped (hyper may then never poll it).
        empty: bool,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(line) = this.line.take() {
                line.write(*this.empty);
            }
        }
    }
}

impl<B: Body> LoggedBody<B> {
    /// Wraps `inner`; `line` is none when the access log is off.
    pub(super) fn new(inner: B, line: Option<Box<Line>>) -> Self {
        let empty = inner.is_end_stream();
        LoggedBody { inner, line, empty }
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        if this.line.is_none() {
            return polled;
        }
        let ended = match &polled {
            Poll::Pending => return polled,
            Poll::Ready(None) => Some(true),
            Poll::Ready(Some(Err(_))) => Some(false),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(line) = this.line.as_mut() {
                    line.bytes_out += data_len(frame);
                }
                // hyper stops polling a body that says it is done.
                this.inner.is_end_stream().then_some(true)
            }
        };
        if let Some(complete) = ended {
            if let Some(line) = this.line.take() {
                line.write(complete);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex;

    /// A body that yields `frames`, then an error if `fail`, else its end.
    struct Script(std::collections::VecDeque<Bytes>, bool);

    impl Body for Script {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(match self.0.pop_front() {
                Some(b) => Some(Ok(Frame::data(b))),
                None if self.1 => Some(Err(std::io::Error::other("cut"))),
                None => None,
            })
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line() -> Box<Line> {
        Box::new(Line {
            logged: Logged {
                method: Method::GET,
                uri: Uri::from_static("/x"),
                host: None,
                bytes_in: Arc::new(AtomicU64::new(3)),
                path: None,
            },
            client: "127.0.0.1:1".parse().unwrap(),
            deployment: None,
            status: 200,
            outcome: Outcome::Public,
            token: None,
            request_id: HeaderValue::from_static("id"),
            latency: Duration::ZERO,
            bytes_out: 0,
        })
    }

    /// Drives `body` to its end (or first error), then drops it; returns what was logged.
    fn logged(frames: &[&'static [u8]], fail: bool, read_all: bool) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let inner = Script(frames.iter().map(|f| Bytes::from_static(f)).collect(), fail);
            let mut body = Box::pin(LoggedBody::new(inner, Some(line())));
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            if read_all {
                while let Poll::Ready(Some(Ok(_))) = body.as_mut().poll_frame(&mut cx) {}
            } else {
                let _ = body.as_mut().poll_frame(&mut cx);
            }
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn one_line_with_the_bytes_sent_when_the_body_ends_fails_or_is_dropped() {
        let done = logged(&[b"abc", b"de"], false, true);
        assert!(
            done.contains("bytes_in=3 bytes_out=5 complete=true"),
            "{done}"
        );
        assert_eq!(done.lines().count(), 1, "{done}");
        let failed = logged(&[b"abc"], true, true);
        assert!(failed.contains("bytes_out=3 complete=false"), "{failed}");
        assert_eq!(failed.lines().count(), 1, "{failed}");
        let dropped = logged(&[b"abc", b"de"], false, false);
        assert!(dropped.contains("bytes_out=3 complete=false"), "{dropped}");
        assert_eq!(dropped.lines().count(), 1, "{dropped}");
    }
}
