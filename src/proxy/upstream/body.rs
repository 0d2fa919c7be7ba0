//! The upstream's response body, streamed frame by frame with an idle timeout between frames.
//!
//! Holds the upstream connection slot and the HTTP/1.1 checkin until the body is done, then
//! releases both. Must never buffer a body: frames pass through as they arrive.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::pool::Checkin;

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
    /// An upstream response body with an idle timeout between frames. Holds the upstream's
    /// connection slot until dropped, and hands its HTTP/1.1 connection back to the pool when
    /// the body is complete.
    pub struct UpstreamBody<B = Incoming> {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        limit: Duration,
        slot: Option<OwnedSemaphorePermit>,
        pub(super) checkin: Option<Checkin<B>>,
    }
}

impl<B> UpstreamBody<B> {
    /// Wraps `inner`; the timer starts now.
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        UpstreamBody {
            inner,
            idle: tokio::time::sleep(limit),
            limit,
            slot: None,
            checkin: None,
        }
    }

    /// Holds `slot` (of the upstream's connection bound) until the body is done.
    pub fn holding(mut self, slot: Option<OwnedSemaphorePermit>) -> Self {
        self.slot = slot;
        self
    }
}

impl<B> Body for UpstreamBody<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                if frame.is_none() || this.inner.is_end_stream() {
                    // Complete: the connection may serve the next request now.
                    this.checkin.take();
                } else {
                    this.idle.as_mut().reset(Instant::now() + *this.limit);
                }
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
