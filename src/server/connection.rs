//! One connection's life: accepting within the listener's cap, the TLS handshake under the
//! header-read deadline, serving HTTP/1.1 (with upgrades) and HTTP/2 with hyper-util's auto
//! builder, the header read and keep-alive timeouts, and a graceful close when the server stops.
//!
//! Both timeouts are kept by one timer per connection, re-armed a few times per timeout, not per
//! request: hyper's own header-read timer allocated and registered a timer for every request
//! head (about 1,000 instructions per request). The reader notes when a head's first bytes
//! arrive (one clock read per request); the connection's timer closes it once that head has
//! taken longer than `limits.header_read_timeout`, between 1 and 1.5 times the timeout.
//!
//! Never holds a request's data; a request in flight keeps its connection open until its
//! response body is done.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::shutdown::Tracker;
use crate::config::Limits;
use crate::proxy::Peer;

pub(super) fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper refuses buffers under 8 KiB; the exact header limit is enforced per request (431).
    let buf = (limits.max_header_bytes + 4096).max(8192);
    // The header read timeout is the connection's own (see the module doc), not hyper's.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // One buffer, one write(2), instead of a vectored write of head and body: the small
        // heads and bodies of most responses cost fewer instructions copied than queued
        // (measured in bench/floor.rs: -325 per refusal); large bodies are copied once.
        .writev(false)
        .max_buf_size(buf);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// What every connection of a server shares.
pub(super) struct ConnSettings {
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) keepalive: Duration,
    /// Time a client has to send a request head (and, first, the TLS handshake).
    pub(super) handshake_timeout: Duration,
    pub(super) tracker: Tracker,
    pub(super) stop: watch::Receiver<bool>,
}

pub(super) async fn accept_loop<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    settings: Arc<ConnSettings>,
    limit: Arc<Semaphore>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut stop = settings.stop.clone();
    loop {
        // Beyond max_connections, new connections wait in the kernel backlog.
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let settings = Arc::clone(&settings);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _open = settings.tracker.open();
            serve_connection(stream, addr, tls, handler, &settings).await;
            drop(permit);
        });
    }
}

async fn serve_connection<H, F, B>(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    handler: H,
    settings: &ConnSettings,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tls {
        None => {
            let peer = Peer { addr, https: false };
            drive(stream, peer, handler, settings).await
        }
        Some(acceptor) => {
            // The handshake counts against the header read timeout: a silent client holds no slot.
            match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let peer = Peer { addr, https: true };
                    drive(tls, peer, handler, settings).await
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves one connection until it closes, shutting it down gracefully (in-flight requests
/// finish; HTTP/2 sends GOAWAY) when the server stops or no request has started for the
/// keep-alive timeout, and closing it when a request head takes longer than the header read
/// timeout.
async fn drive<I, H, F, B>(io: I, peer: Peer, handler: H, settings: &ConnSettings)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let opened = Instant::now();
    let activity = Arc::new(Activity::default());
    // A new connection owes its first head from the start: one that sends nothing is cut at the
    // header read timeout, not held for the keep-alive timeout.
    activity.head_since.store(1, Ordering::Relaxed);
    let seen = Arc::clone(&activity);
    let service = service_fn(move |req| {
        let guard = InFlight::start(Arc::clone(&seen));
        let fut = handler(req, peer);
        async move {
            let res = fut.await;
            Ok::<_, std::convert::Infallible>(res.map(|body| Tracked {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let io = TokioIo::new(Watched {
        inner: io,
        activity: Arc::clone(&activity),
        opened,
        state: Watch::First(0),
    });
    let conn = settings.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stop = settings.stop.clone();
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // The keep-alive check runs once per keep-alive period: a connection that saw no request
    // start or finish during a whole period, with none in flight, is closed (after one to two
    // periods). The head check runs every half header read timeout.
    let head_timeout = settings.handshake_timeout;
    let head_period = (head_timeout / 2).max(Duration::from_millis(10));
    let mut events_seen = 0;
    let mut keepalive_at = opened + settings.keepalive;
    let mut head_at = opened + head_period;
    loop {
        let wake_at = if closing {
            head_at
        } else {
            head_at.min(keepalive_at)
        };
        tokio::select! {
            biased;
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, addr = %peer.addr, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(wake_at) => {
                let now = Instant::now();
                if now >= head_at {
                    if activity.head_overdue(opened, now, head_timeout) {
                        tracing::debug!(addr = %peer.addr, "request head not complete within limits.header_read_timeout; closed");
                        return;
                    }
                    head_at = now + head_period;
                }
                if !closing && now >= keepalive_at {
                    let events = activity.events.load(Ordering::Relaxed);
                    if events == events_seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    events_seen = events;
                    keepalive_at = now + settings.keepalive;
                }
            }
        }
    }
}

/// Where the reader stands on noting request heads.
#[derive(Clone, Copy, PartialEq)]
enum Watch {
    /// The first bytes, as many of HTTP/2's preface as have matched so far: they tell it from an
    /// HTTP/1.1 head (the connection is timed from its open meanwhile, so a client cannot stall
    /// the decision by sending the preface's first bytes slowly).
    First(u8),
    /// HTTP/1.1: bytes read while no request is in flight start a head.
    Heads,
    /// HTTP/2: frames arrive between requests (pings, settings); hyper times nothing there.
    Frames,
}

pin_project_lite::pin_project! {
    /// The client's stream, noting when the first bytes of a request head arrive.
    struct Watched<I> {
        #[pin]
        inner: I,
        activity: Arc<Activity>,
        opened: Instant,
        state: Watch,
    }
}

/// The start of HTTP/2's connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if read.is_empty() {
            return polled;
        }
        if let Watch::First(matched) = *this.state {
            let matched = usize::from(matched);
            let n = read.len().min(H2_PREFACE.len() - matched);
            *this.state = if read[..n] != H2_PREFACE[matched..matched + n] {
                Watch::Heads
            } else if matched + n == H2_PREFACE.len() {
                // No head is owed on HTTP/2: its streams are judged by hyper.
                this.activity.head_since.store(0, Ordering::Relaxed);
                Watch::Frames
            } else {
                Watch::First((matched + n) as u8)
            };
        }
        if *this.state == Watch::Heads {
            this.activity.head_started(*this.opened);
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// What a connection has been doing, for its timeouts: counters, and the time the pending
/// request head began to arrive.
#[derive(Default)]
struct Activity {
    /// Requests started plus responses finished.
    events: AtomicU64,
    /// Requests whose response body has not finished.
    in_flight: AtomicUsize,
    /// Milliseconds after the connection opened, plus one, when the first bytes of the head not
    /// yet complete arrived; 0 when no head is pending.
    head_since: AtomicU64,
}

impl Activity {
    /// Notes that bytes arrived; they start a head when no request is in flight and none is
    /// pending already (a request's body arrives while it is in flight). One clock read.
    #[inline]
    fn head_started(&self, opened: Instant) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            let since = millis_since(opened, Instant::now()) + 1;
            self.head_since.store(since, Ordering::Relaxed);
        }
    }

    /// True when a head has been arriving for longer than `timeout`, with no request in flight.
    fn head_overdue(&self, opened: Instant, now: Instant, timeout: Duration) -> bool {
        let since = self.head_since.load(Ordering::Relaxed);
        since != 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && (millis_since(opened, now) + 1).saturating_sub(since)
                >= u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

fn millis_since(opened: Instant, now: Instant) -> u64 {
    u64::try_from(now.duration_since(opened).as_millis()).unwrap_or(u64::MAX)
}

/// One request in flight on a connection, from its start until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.events.fetch_add(1, Ordering::Relaxed);
        // The head is complete.
        activity.head_since.store(0, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its request in flight until hyper drops it.
    struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: InFlight,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
