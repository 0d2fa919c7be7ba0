//! One connection's life: accepting within the listener's cap, the TLS handshake under the
//! header-read deadline, serving HTTP/1.1 (with upgrades) and HTTP/2 with hyper-util's auto
//! builder, the keep-alive timeout, and a graceful close when the server stops.
//!
//! Never holds a request's data; a request in flight keeps its connection open until its
//! response body is done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
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
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
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
            drive(TokioIo::new(stream), peer, handler, settings).await
        }
        Some(acceptor) => {
            // The handshake counts against the header read timeout: a silent client holds no slot.
            match tokio::time::timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let peer = Peer { addr, https: true };
                    drive(TokioIo::new(tls), peer, handler, settings).await
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %addr, "TLS handshake failed"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves one connection until it closes, shutting it down gracefully (in-flight requests
/// finish; HTTP/2 sends GOAWAY) when the server stops or no request has started for the
/// keep-alive timeout.
async fn drive<I, H, F, B>(io: I, peer: Peer, handler: H, settings: &ConnSettings)
where
    I: Read + Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::default());
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
    let conn = settings.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stop = settings.stop.clone();
    let mut closing = *stop.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    // Checked once per keep-alive period: a connection that saw no request start or finish
    // during a whole period, with none in flight, is closed (after one to two periods).
    let mut events_seen = 0;
    let mut check_at = Instant::now() + settings.keepalive;
    loop {
        tokio::select! {
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
            _ = tokio::time::sleep_until(check_at), if !closing => {
                let events = activity.events.load(Ordering::Relaxed);
                if events == events_seen && activity.in_flight.load(Ordering::Relaxed) == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                events_seen = events;
                check_at = Instant::now() + settings.keepalive;
            }
        }
    }
}

/// What a connection has been doing, for the keep-alive timeout: counters only, so a request
/// costs no clock read.
#[derive(Default)]
struct Activity {
    /// Requests started plus responses finished.
    events: AtomicU64,
    /// Requests whose response body has not finished.
    in_flight: AtomicUsize,
}

/// One request in flight on a connection, from its start until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.events.fetch_add(1, Ordering::Relaxed);
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
