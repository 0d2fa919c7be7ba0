//! The pooled upstream client and the streaming response body.
//!
//! Owns connections to upstreams: one keep-alive pool for HTTP/1.1 and one for HTTP/2 (prior
//! knowledge over plain TCP, ALPN over TLS), with connect and idle timeouts; `https://` upstreams
//! are verified against the platform's roots or `forwarding.upstream_ca`. [`UpstreamBody`] streams the upstream's body
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
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::reject::Reject;
use crate::config::{ForwardingConfig, UpstreamProtocol};

/// Pools of upstream connections, shared by all requests. Generic over the connector and the
/// request body so benches can run the whole pipeline in memory; the server uses the defaults.
pub struct UpstreamClient<C = HttpsConnector<HttpConnector>, B = Incoming> {
    http1: Client<C, B>,
    h2: Client<C, B>,
}

/// Why the upstream TLS trust could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    /// `forwarding.upstream_ca` could not be read or holds no certificate.
    #[error("forwarding.upstream_ca {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The platform's roots could not be loaded.
    #[error("cannot load the platform's root certificates ({0}); set forwarding.upstream_ca")]
    NativeRoots(String),
}

impl UpstreamClient {
    /// Builds both pools over TCP, with TLS for `https://` upstreams. `any_https` says whether
    /// the configuration names one: without, the platform's roots are not loaded (2 MiB of
    /// memory and most of the start-up work on a sidecar that never speaks TLS upstream).
    pub fn new(
        config: &ForwardingConfig,
        any_https: bool,
    ) -> Result<UpstreamClient, UpstreamTlsError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // The TLS layer needs the URL scheme to reach it.
        connector.enforce_http(false);
        let tls = client_tls(config, any_https)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        Ok(UpstreamClient::with_connector(config, https))
    }
}

/// The rustls client configuration for upstreams: only the CA file's certificates when one is
/// configured (a private PKI), else the platform's roots; no roots at all (every server
/// refused) when no upstream is `https://`. A reload that adds one builds a new client.
fn client_tls(
    config: &ForwardingConfig,
    any_https: bool,
) -> Result<rustls::ClientConfig, UpstreamTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.upstream_ca {
        None if !any_https => {}
        Some(path) => {
            let bad = |message: String| UpstreamTlsError::CaFile {
                path: path.display().to_string(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("not a PEM file: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("no usable CA certificate in it".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(UpstreamTlsError::NativeRoots(
                    found
                        .errors
                        .first()
                        .map_or("none found".to_owned(), |e| e.to_string()),
                ));
            }
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamTlsError::NativeRoots(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
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
                .pool_max_idle_per_host(config.max_idle_per_upstream)
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
        // The upstream's connection slot, held until the body is dropped.
        slot: Option<OwnedSemaphorePermit>,
    }
}

impl UpstreamBody {
    /// Wraps `inner`; the timer starts now.
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        UpstreamBody {
            inner,
            idle: tokio::time::sleep(limit),
            limit,
            slot: None,
        }
    }

    /// Holds `slot` (of the upstream's connection bound) until the body is done.
    pub fn holding(mut self, slot: Option<OwnedSemaphorePermit>) -> Self {
        self.slot = slot;
        self
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
