//! Graceful shutdown's bookkeeping: how many connections are still open.
//!
//! Hand-made rather than hyper-util's `GracefulShutdown`: that one takes each connection future
//! by value (`watch(conn)`) and calls `graceful_shutdown` on it only when the whole server stops,
//! but a connection here must also be shut down gracefully by its own keep-alive check
//! (`connection::drive` holds the pinned connection to do both). Counting open connections is
//! all that is left to do, and this does only that.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Counts open connections so shutdown can wait for the last one.
#[derive(Default)]
pub(super) struct Tracker {
    open: AtomicUsize,
    closed: Notify,
}

/// Held by a connection's task; its drop counts the connection closed.
pub(super) struct Open<'a>(&'a Tracker);

impl Tracker {
    pub(super) fn open(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open(self)
    }

    /// Resolves once no connection is open.
    pub(super) async fn idle(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}
