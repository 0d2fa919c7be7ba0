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
//!
//! The line is formatted by hand ([`crate::log_line`]) in the format the tracing subscriber
//! writes (same fields, order, escaping and timestamp), not through a `tracing` event: the
//! event's generic JSON formatting cost more than the rest of a forwarded request. [`init`]
//! says which format; until it is called (the library on its own) the line is a `tracing` event.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::log_key;
use crate::log_line::{self, Fields, Style};
use crate::metrics::Outcome;
use crate::token::Token;

/// The access log's `tracing` target, which `log.level` and `RUST_LOG` filter.
const TARGET: &str = "bentogate::access";

/// How lines are written, set once by [`init`]; [`Style::Tracing`] until then.
static STYLE: OnceLock<Style> = OnceLock::new();

/// Sets how access-log lines are written, once, after the tracing subscriber is installed:
/// `style` is the subscriber's format ([`Style::Json`], [`Style::Text`], or [`Style::Tracing`]
/// for what this module does not write by hand, such as colours). When the subscriber's filter
/// turns `bentogate::access` at INFO off, lines are not written at all, as the subscriber would
/// drop them (the filter is fixed for the process: a reload does not change it).
pub fn init(style: Style) {
    let style = match style {
        Style::Json | Style::Text if !tracing::enabled!(target: TARGET, tracing::Level::INFO) => {
            Style::Off
        }
        style => style,
    };
    let _ = STYLE.set(style);
}

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
        match STYLE.get().copied().unwrap_or(Style::Tracing) {
            Style::Tracing => self.event(complete),
            style => log_line::write(style, TARGET, |f| self.fields(f, complete)),
        }
    }

    /// The Host header if it reads as text, else the target's authority.
    fn host(&self) -> &str {
        let logged = &self.logged;
        logged
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or_else(|| logged.uri.authority().map(|a| a.as_str()))
            .unwrap_or("-")
    }

    /// The path logged: the normalized one, else the one sent, never the query string.
    fn path(&self) -> &str {
        let logged = &self.logged;
        logged.path.as_deref().unwrap_or(logged.uri.path())
    }

    /// The line's fields, by hand, in the order and form of [`Line::event`]'s.
    fn fields(&self, f: &mut Fields<'_>, complete: bool) {
        f.addr(log_key!("client"), &self.client);
        f.str(log_key!("host"), self.host().as_bytes());
        f.display(log_key!("method"), self.logged.method.as_str().as_bytes());
        f.str(log_key!("path"), self.path().as_bytes());
        f.str(
            log_key!("deployment"),
            self.deployment.as_deref().unwrap_or("-").as_bytes(),
        );
        f.u64(log_key!("status"), self.status.into());
        f.str(log_key!("decision"), self.outcome.as_str().as_bytes());
        f.u64(
            log_key!("bytes_in"),
            self.logged.bytes_in.load(Ordering::Relaxed),
        );
        f.u64(log_key!("bytes_out"), self.bytes_out);
        f.bool(log_key!("complete"), complete);
        // Always text: request_id::take keeps a client's id only if it is plain ASCII (and
        // generates it otherwise), so `to_str` would only check it again.
        f.str(log_key!("request_id"), self.request_id.as_bytes());
        let uid = self.token.as_deref().map_or("-", |t| t.uid.as_str());
        f.str(log_key!("token_uid"), uid.as_bytes());
        f.u64(log_key!("latency_us"), self.latency.as_micros() as u64);
    }

    /// The line as a `tracing` event, for the subscriber to format.
    fn event(&self, complete: bool) {
        tracing::info!(
            target: TARGET,
            client = %self.client,
            host = self.host(),
            method = %self.logged.method,
            path = self.path(),
            deployment = self.deployment.as_deref().unwrap_or("-"),
            status = self.status,
            decision = self.outcome.as_str(),
            bytes_in = self.logged.bytes_in.load(Ordering::Relaxed),
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

    /// The line as the tracing subscriber writes it (`json` or the text format).
    fn traced(line: &Line, json: bool) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false);
        let emit = || line.event(true);
        if json {
            let subscriber = builder.json().flatten_event(true).finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text
    }

    /// The line as [`Line::write`] writes it by hand.
    fn by_hand(line: &Line, style: Style) -> String {
        let at = Duration::new(1_796_316_150, 7_000);
        let text = log_line::render(style, TARGET, at, |f| line.fields(f, true));
        String::from_utf8(text).unwrap()
    }

    /// A line whose every string field carries bytes that need escaping.
    fn hostile() -> Box<Line> {
        let mut l = line();
        l.logged.method = Method::from_bytes(b"PURGE").unwrap();
        l.logged.host = Some(HeaderValue::from_static("h\"\\o{st}"));
        l.logged.path = Some("/a\"b\\c\n\r\t\u{1}\u{1b}[0m\u{7f}/caf\u{e9}\"}".into());
        l.deployment = Some(Arc::from("dep\"\\\u{0}"));
        l.request_id = HeaderValue::from_static("id\"},\\");
        l.client = "[2001:db8::1]:443".parse().unwrap();
        l.latency = Duration::from_micros(1234);
        l
    }

    #[test]
    fn the_line_by_hand_is_the_subscribers_byte_for_byte_after_the_timestamp() {
        // `{"timestamp":"` and `2026-12-03T16:42:30.000007Z`: 14 and 27 bytes.
        for l in [line(), hostile()] {
            let (theirs, ours) = (traced(&l, true), by_hand(&l, Style::Json));
            assert_eq!(theirs[14 + 27..], ours[14 + 27..]);
            let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(v["target"], "bentogate::access");
            assert_eq!(v["path"], l.path());
            assert_eq!(ours.find('\n'), Some(ours.len() - 1));
            let (theirs, ours) = (traced(&l, false), by_hand(&l, Style::Text));
            assert_eq!(theirs[27..], ours[27..]);
            assert_eq!(ours.find('\n'), Some(ours.len() - 1));
        }
        let ours = by_hand(&hostile(), Style::Json);
        let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(v["host"], "h\"\\o{st}");
        assert_eq!(v["deployment"], "dep\"\\\u{0}");
        assert_eq!(v["request_id"], "id\"},\\");
        assert_eq!(v["method"], "PURGE");
        assert_eq!(v["client"], "[2001:db8::1]:443");
        assert_eq!(v["latency_us"], 1234);
    }

    #[test]
    fn the_line_never_holds_the_query_string() {
        let mut l = line();
        l.logged.uri = Uri::from_static("http://gate/p?access_token=bgt_secret");
        let ours = by_hand(&l, Style::Json);
        assert!(!ours.contains("bgt_secret"), "{ours}");
        let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert_eq!(v["path"], "/p");
        assert_eq!(v["host"], "gate");
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
