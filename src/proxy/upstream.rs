//! The pooled upstream client and the streaming response body.
//!
//! Owns connections to upstreams: one keep-alive pool for HTTP/1.1 and one for HTTP/2 prior
//! knowledge (h2c), with connect and idle timeouts. [`UpstreamBody`] streams the upstream's body
//! frame by frame as it arrives and ends it with an error when the upstream stays silent longer
//! than the idle timeout, so a dead peer never hangs a client.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::reject::Reject;
use crate::config::{ForwardingConfig, UpstreamProtocol};

/// Idle connections kept per upstream host and pool.
const MAX_IDLE_PER_HOST: usize = 256;

/// Pools of upstream connections, shared by all requests. Generic over the connector and the
/// request body so benches can run the whole pipeline in memory; the server uses the defaults.
pub struct UpstreamClient<C = HttpConnector, B = Incoming> {
    http1: Client<C, B>,
    h2: Client<C, B>,
}

impl UpstreamClient {
    /// Builds both pools over TCP with the configured timeouts.
    pub fn new(config: &ForwardingConfig) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        UpstreamClient::with_connector(config, connector)
    }
}

impl<C, B> UpstreamClient<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
{
    /// Builds both pools over `connector`.
    pub fn with_connector(config: &ForwardingConfig, connector: C) -> Self {
        let build = |h2_only: bool| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(config.idle_timeout)
                .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                .http2_only(h2_only)
                .build(connector.clone())
        };
        UpstreamClient {
            http1: build(false),
            h2: build(true),
        }
    }

    /// The pool for a protocol.
    pub fn pool(&self, protocol: UpstreamProtocol) -> &Client<C, B> {
        match protocol {
            UpstreamProtocol::Http1 => &self.http1,
            UpstreamProtocol::H2 => &self.h2,
        }
    }
}

/// Maps a client error to the answer: timeouts (connect included) are 504, the rest 502.
pub fn classify(error: &hyper_util::client::legacy::Error) -> Reject {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Reject::UpstreamTimeout;
            }
        }
        source = e.source();
    }
    Reject::UpstreamUnavailable
}

/// Why a streamed upstream body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream connection failed mid-body.
    #[error("upstream body failed: {0}")]
    Upstream(#[from] hyper::Error),
    /// The upstream sent nothing for longer than the idle timeout.
    #[error("upstream body idle for longer than {0:?}")]
    Idle(Duration),
}

pin_project! {
    /// An upstream response body with an idle timeout between frames.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        limit: Duration,
    }
}

impl UpstreamBody {
    /// Wraps `inner`; the timer starts now.
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        UpstreamBody {
            inner,
            idle: tokio::time::sleep(limit),
            limit,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle.as_mut().reset(Instant::now() + *this.limit);
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => match this.idle.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(*this.limit)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
