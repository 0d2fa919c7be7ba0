//! A token file seen through the remote sources' path: the same records, but the validator
//! must ask with [`TokenSource::lookup`] and keep the answers in its moka cache, as it does for
//! the `postgres` and `introspect` sources. Lets the cache's own rules (bound, negative TTL,
//! allocation-free hits) be tested without a database; the file source itself is never cached.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bentogate::store::source::{Lookup, Readiness, TokenSource, UsedTokens, Work};
use bentogate::store::FileSource;
use bentogate::token::Digest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The file source, answering only through the asynchronous lookup.
pub struct RemoteFile(pub Arc<FileSource>);

impl TokenSource for RemoteFile {
    fn kind(&self) -> &'static str {
        "remote-file"
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }

    fn lookup<'a>(&'a self, _value: &'a [u8], digest: Digest) -> Lookup<'a> {
        Box::pin(async move { Ok(self.0.lookup(&digest)) })
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            ready: true,
            degraded: false,
            detail: serde_json::Value::Null,
        }
    }

    fn start(
        self: Arc<Self>,
        _used: UsedTokens,
        _flush_every: Duration,
        _stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        Vec::new()
    }

    fn flush_usage(self: Arc<Self>, _used: UsedTokens) -> Work {
        Box::pin(async {})
    }

    fn describe(&self) -> String {
        "a token file behind the remote path (tests)".into()
    }
}
