//! The pooled upstream client and the streaming response body.
//!
//! Owns connections to upstreams, on hyper's connection API: per upstream, a stack of idle
//! HTTP/1.1 keep-alive connections (most recently used first) and one shared HTTP/2 connection
//! (prior knowledge over plain TCP, ALPN over TLS). A route reaches its upstream's pool by index,
//! so a request costs no pool-key hashing; a connection goes back on the stack as soon as its
//! response is complete. A request that finds a pooled connection closed under it (the upstream
//! timed it out) is sent again on a new connection: it was never written. Idle connections are
//! closed after the idle timeout. `https://` upstreams are verified against the platform's roots
//! or `forwarding.upstream_ca`. [`UpstreamBody`] streams the upstream's body frame by frame as
//! it arrives and ends it with an error when the upstream stays silent longer than the idle
//! timeout, so a dead peer never hangs a client.
//!
//! # Layout
//!
//! ```text
//! mod.rs   UpstreamClient: building it, TLS trust, sending (HTTP/1.1 and HTTP/2), errors, classify
//! pool.rs  HostPool: idle HTTP/1.1 connections, the shared HTTP/2 one, checkin, the reaper
//! body.rs  UpstreamBody: the streamed response body with its idle timeout
//! ```
//!
//! Hot path: `send` and the pool calls it makes run on every request; they must never gain
//! boxing, allocation or hashing (the rare paths that are boxed say why).

mod body;
mod pool;

use std::error::Error as StdError;
use std::future::poll_fn;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tower_service::Service;

use super::reject::Reject;
use crate::config::{Config, ForwardingConfig, UpstreamProtocol};
use crate::metrics::{Metrics, UpstreamErrorKind};

pub use body::{BodyError, UpstreamBody};
pub use pool::Checkin;
use pool::HostPool;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Pools of upstream connections, shared by all requests. Generic over the connector and the
/// request body so benches can run the whole pipeline in memory; the server uses the defaults.
pub struct UpstreamClient<C = HttpsConnector<HttpConnector>, B = Incoming> {
    connector: C,
    /// One per deployment, in configuration order; deployments with the same upstream share one.
    pools: Arc<[Arc<HostPool<B>>]>,
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

/// Why a request got no response from its upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unresolvable, TLS, or the connect timeout).
    #[error("connect: {0}")]
    Connect(BoxError),
    /// The connection failed during the exchange.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// What kind of failure this is, for `bentogate_upstream_errors_total{kind}`.
    pub fn kind(&self) -> UpstreamErrorKind {
        let io = self.io_error();
        match (self, io.map(std::io::Error::kind)) {
            (_, Some(std::io::ErrorKind::TimedOut)) if self.is_connect() => {
                UpstreamErrorKind::ConnectTimeout
            }
            (_, Some(std::io::ErrorKind::ConnectionRefused)) => UpstreamErrorKind::ConnectRefused,
            (UpstreamError::Connect(_), _) => UpstreamErrorKind::Connect,
            (_, Some(std::io::ErrorKind::TimedOut)) => UpstreamErrorKind::Timeout,
            (UpstreamError::Http(e), _) if e.is_parse() || e.is_parse_status() => {
                UpstreamErrorKind::Protocol
            }
            (UpstreamError::Http(_), _) => UpstreamErrorKind::Reset,
        }
    }

    /// The whole chain of causes, down to the OS's own words ("Connection refused (os error
    /// 111)"), for the log line; hyper's top-level message alone ("client error (Connect)")
    /// does not say what happened. Built only when a request failed.
    pub fn reason(&self) -> String {
        let (mut out, mut source): (String, Option<&(dyn StdError + 'static)>) = match self {
            UpstreamError::Connect(e) => ("connect".to_owned(), Some(e.as_ref())),
            UpstreamError::Http(e) => (String::new(), Some(e)),
        };
        while let Some(e) = source {
            let text = e.to_string();
            // Wrappers often repeat their cause's text: keep each part once.
            if !out.contains(&text) {
                if !out.is_empty() {
                    out.push_str(": ");
                }
                out.push_str(&text);
            }
            source = e.source();
        }
        out
    }

    fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// The innermost OS error in the chain, if any.
    fn io_error(&self) -> Option<&std::io::Error> {
        let mut source: Option<&(dyn StdError + 'static)> = match self {
            UpstreamError::Connect(e) => Some(e.as_ref()),
            UpstreamError::Http(e) => Some(e),
        };
        let mut found = None;
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                found = Some(io);
            }
            source = e.source();
        }
        found
    }
}

impl<B> UpstreamClient<HttpsConnector<HttpConnector>, B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Builds the pools for `config`'s deployments over TCP, with TLS for `https://` upstreams,
    /// measured on `metrics`. Without an `https://` upstream the platform's roots are not loaded
    /// (a reload that adds one builds a new client).
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Self, UpstreamTlsError> {
        let forwarding = &config.forwarding;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(forwarding.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // The TLS layer needs the URL scheme to reach it.
        connector.enforce_http(false);
        let any_https = config
            .deployments
            .iter()
            .any(|d| d.upstream.scheme == Scheme::HTTPS);
        let tls = client_tls(forwarding, any_https)?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        Ok(UpstreamClient::build(config, https, Some(metrics)))
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
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Builds the pools for `config`'s deployments over `connector`. Inside a runtime, a task
    /// closes connections idle for longer than `forwarding.timeouts.idle`; it ends with the client.
    pub fn with_connector(config: &Config, connector: C) -> Self {
        UpstreamClient::build(config, connector, None)
    }

    fn build(config: &Config, connector: C, metrics: Option<&Metrics>) -> Self {
        let forwarding = &config.forwarding;
        let mut pools: Vec<Arc<HostPool<B>>> = Vec::with_capacity(config.deployments.len());
        for d in &config.deployments {
            let same = pools.iter().find(|p| p.serves(d)).cloned();
            pools.push(same.unwrap_or_else(|| {
                let measured = metrics.map(|m| m.for_pool(d.upstream.authority.as_str()));
                Arc::new(HostPool::new(d, forwarding, measured))
            }));
        }
        let pools: Arc<[Arc<HostPool<B>>]> = pools.into();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(pool::reap(Arc::downgrade(&pools), forwarding.idle_timeout));
        }
        UpstreamClient { connector, pools }
    }

    /// Sends `req` to the upstream of the deployment at `index` (configuration order). The
    /// request's URI and version are set here from the upstream's; its headers are the caller's.
    pub async fn send(
        &self,
        index: usize,
        mut req: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError> {
        let Some(pool) = self.pools.get(index) else {
            return Err(UpstreamError::Connect(
                "no upstream for this deployment".into(),
            ));
        };
        // The rare paths (HTTP/2, a new connection) are boxed: inline, their large futures
        // would be part of every request's, and be copied with it.
        if pool.protocol == UpstreamProtocol::H2 || pool.negotiated_h2() {
            return Box::pin(self.send_h2(pool, req)).await;
        }
        // HTTP/1.1: origin-form, and a Host header (the client's, else the upstream's).
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
        if let (false, Some(host)) = (req.headers().contains_key(http::header::HOST), &pool.host) {
            req.headers_mut().insert(http::header::HOST, host.clone());
        }
        loop {
            let (mut sender, reused) = match pool.take_idle() {
                Some(s) => (s, true),
                None => match Box::pin(self.connect(pool)).await? {
                    Connected::Http1(s) => (s, false),
                    // The TLS handshake chose HTTP/2: this upstream speaks it from now on.
                    Connected::Http2 => return Box::pin(self.send_h2(pool, req)).await,
                },
            };
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let checkin = Checkin {
                        sender: Some(sender),
                        pool: Arc::clone(pool),
                    };
                    // A body that was complete in the first read leaves the connection ready
                    // at once; otherwise it goes back when the body ends.
                    let checkin = checkin.now_if_ready();
                    return Ok(res.map(|b| {
                        let mut body = UpstreamBody::new(b, pool.idle_timeout);
                        body.checkin = checkin;
                        body
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: a pooled connection the upstream had closed. Once more,
                    // on a new connection.
                    Some(again) if reused => req = again,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// Sends on the upstream's shared HTTP/2 connection (absolute URI, no Host: `:authority`),
    /// making it first if there is none (one connect at a time), and once more on a new
    /// connection if the old one had closed unsent.
    async fn send_h2(
        &self,
        pool: &Arc<HostPool<B>>,
        mut req: Request<B>,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = pool.absolute(path);
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().remove(http::header::HOST);
        let mut last_try = false;
        loop {
            let mut sender = match pool.h2_sender() {
                Some(s) => s,
                None => {
                    last_try = true;
                    self.connect_h2(pool).await?
                }
            };
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(res.map(|b| UpstreamBody::new(b, pool.idle_timeout))),
                Err(mut e) => match e.take_message() {
                    Some(again) if !last_try => {
                        pool.forget_h2(&sender);
                        req = again;
                        // Once more only, whoever made the next connection.
                        last_try = true;
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The shared HTTP/2 connection, made by the first caller that finds none.
    async fn connect_h2(
        &self,
        pool: &Arc<HostPool<B>>,
    ) -> Result<http2::SendRequest<B>, UpstreamError> {
        let _one_at_a_time = pool.h2_connecting.lock().await;
        if let Some(s) = pool.h2_sender() {
            return Ok(s);
        }
        let io = self.dial(pool).await?;
        let sender = handshake_h2(io).await?;
        *pool.h2.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender.clone());
        Ok(sender)
    }

    /// A new connection to the pool's upstream, in the protocol it speaks.
    async fn connect(&self, pool: &Arc<HostPool<B>>) -> Result<Connected<B>, UpstreamError> {
        let io = self.dial(pool).await?;
        if io.connected().is_negotiated_h2() {
            let _one_at_a_time = pool.h2_connecting.lock().await;
            let sender = handshake_h2(io).await?;
            *pool.h2.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
            pool.alpn_h2
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(Connected::Http2);
        }
        let (sender, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Connected::Http1(sender))
    }

    async fn dial(&self, pool: &HostPool<B>) -> Result<C::Response, UpstreamError> {
        let started = std::time::Instant::now();
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        let io = connector
            .call(pool.target.clone())
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        if let Some(m) = &pool.metrics {
            m.connect_seconds.observe(started.elapsed().as_secs_f64());
            m.connections_opened.inc();
        }
        Ok(io)
    }

    /// The `host:port` of the deployment at `index`'s upstream, for log lines.
    pub fn upstream_of(&self, index: usize) -> Option<&http::uri::Authority> {
        self.pools.get(index).map(|p| p.authority())
    }
}

async fn handshake_h2<I, B>(io: I) -> Result<http2::SendRequest<B>, UpstreamError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// What a new connection turned out to speak.
enum Connected<B> {
    Http1(http1::SendRequest<B>),
    /// TLS chose h2: the connection is now the pool's shared one.
    Http2,
}

/// Maps an upstream error to the answer: timeouts (connect included) are 504, the rest 502.
pub fn classify(error: &UpstreamError) -> Reject {
    let mut source: Option<&(dyn StdError + 'static)> = match error {
        UpstreamError::Connect(e) => Some(e.as_ref()),
        UpstreamError::Http(e) => Some(e),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(kind: std::io::ErrorKind) -> UpstreamError {
        UpstreamError::Connect(Box::new(std::io::Error::from(kind)))
    }

    #[test]
    fn failures_are_counted_by_kind_and_described_to_the_os_reason() {
        use std::io::ErrorKind;
        assert_eq!(
            connect(ErrorKind::ConnectionRefused).kind(),
            UpstreamErrorKind::ConnectRefused
        );
        assert_eq!(
            connect(ErrorKind::TimedOut).kind(),
            UpstreamErrorKind::ConnectTimeout
        );
        assert_eq!(
            connect(ErrorKind::NotFound).kind(),
            UpstreamErrorKind::Connect
        );
        assert!(matches!(
            classify(&connect(ErrorKind::TimedOut)),
            Reject::UpstreamTimeout
        ));
        let refused = UpstreamError::Connect(Box::new(std::io::Error::from_raw_os_error(111)));
        let reason = refused.reason();
        assert!(reason.starts_with("connect: "), "{reason}");
        assert!(reason.contains("os error 111"), "{reason}");
    }
}
