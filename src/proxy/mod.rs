//! The request pipeline, in phase order.
//!
//! 1. **check**: header block size (431), CONNECT (405), the target read once ([`target`]): one
//!    valid host and the normalized path, or 400;
//! 2. **route**: host + longest prefix of the normalized path (404);
//! 3. **authorize**: public route or public path passes; otherwise Bearer credentials through the
//!    validator and the route's policy (401, 403);
//! 4. **rewrite**: the normalized path and the routed host, headers for the upstream ([`headers`]);
//! 5. **forward**: pooled client, response-headers timeout (502, 504);
//! 6. **respond**: the upstream's body streams through frame by frame; an accepted WebSocket
//!    upgrade becomes a byte tunnel between the two connections (no other upgrade is forwarded);
//! 7. **log**: one metrics update, and one access-log line (client address, host, method,
//!    normalized path, status, request body bytes forwarded and response body bytes sent, time
//!    to the response headers, request id, token uid), written when the response body ends or
//!    is dropped ([`access_log`]).
//!
//! Every request carries an `X-Request-Id` ([`request_id`]): the client's if sane, else a new
//! one; the upstream receives it and the client gets it back, refusals included.
//!
//! Every answer the gateway gives itself is a [`Reject`], turned into HTTP in one place.

pub mod access_log;
pub mod headers;
pub mod reject;
pub mod request_id;
pub mod target;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use crate::auth::{self, Credentials};
use crate::clock;
use crate::config::{Config, ForwardingConfig, Policy, UpstreamProtocol};
use crate::metrics::{Metrics, Outcome, RouteMetrics, UpstreamErrorKind};
use crate::path::PathError;
use crate::route::{Route, RouteTable};
use crate::throttle::Throttle;
use crate::token::Token;
use crate::validator::{Probe, Validator, Verdict};
use access_log::{CountedBody, Line, Logged, LoggedBody};
pub use reject::Reject;
use request_id::{RequestIds, X_REQUEST_ID};
use upstream::{UpstreamBody, UpstreamClient};

/// What a client receives: the upstream's streamed body, or a short body of our own.
pub type ProxyBody<B = Incoming> = Either<UpstreamBody<CountedBody<B>>, Full<Bytes>>;

/// The response body handed to the server: [`ProxyBody`], counted for the access log.
pub type ClientBody<B = Incoming> = LoggedBody<ProxyBody<B>>;

/// The data plane: everything a request needs, immutable and shared by all connections.
/// Generic over the upstream connector and the request body only so that benches can run it in
/// memory; the server uses the defaults (TCP, hyper's `Incoming`).
pub struct Gateway<C = HttpsConnector<HttpConnector>, B = Incoming> {
    routes: RouteTable,
    validator: Arc<Validator>,
    client: UpstreamClient<C, CountedBody<B>>,
    forwarding: ForwardingConfig,
    max_header_bytes: usize,
    unrouted: RouteMetrics,
    access_log: bool,
    throttle: Option<Arc<Throttle>>,
    /// Peers whose forwarding headers are believed (`throttle.trusted_proxies`).
    trusted_proxies: Box<[IpNet]>,
    throttle_failures: prometheus::IntCounter,
    throttle_clients: prometheus::IntGauge,
    /// Generates `X-Request-Id`s for requests that come without one.
    ids: RequestIds,
}

/// Who sent a request, as the listener saw it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// True on a TLS listener (`X-Forwarded-Proto: https`).
    pub https: bool,
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer { addr, https: false }
    }
}

/// A request that did not pass the check, route and authorize phases: the route it matched (if
/// any), the answer, and the token when one was read and is live (a 403), for the access log.
struct Refused<'a> {
    route: Option<&'a Route>,
    reject: Reject,
    token: Option<Arc<Token>>,
}

impl<'a> From<(Option<&'a Route>, Reject)> for Refused<'a> {
    fn from((route, reject): (Option<&'a Route>, Reject)) -> Self {
        Refused {
            route,
            reject,
            token: None,
        }
    }
}

/// A request that passed the check, route and authorize phases.
struct Admitted<'a> {
    route: &'a Route,
    token: Option<Arc<Token>>,
    /// The host the request was routed on; the upstream is sent this one, never another.
    host: Option<HeaderValue>,
    /// The normalized path, when it differs from the one the client sent.
    path: Option<String>,
}

impl<'a> Admitted<'a> {
    /// Takes the target's host and, only if normalization changed it, its path (moved, not
    /// copied: an unchanged path is the request's own and costs nothing here).
    fn new(route: &'a Route, token: Option<Arc<Token>>, target: target::Target<'_>) -> Self {
        Admitted {
            route,
            token,
            host: target.host,
            path: match target.path {
                std::borrow::Cow::Owned(p) => Some(p),
                std::borrow::Cow::Borrowed(_) => None,
            },
        }
    }
}

impl Gateway {
    /// Builds the gateway for a configuration around a shared validator and failure throttle,
    /// forwarding over TCP (and TLS for `https://` upstreams).
    pub fn new(
        config: &Config,
        validator: Arc<Validator>,
        metrics: &Metrics,
        throttle: Option<Arc<Throttle>>,
    ) -> Result<Gateway, upstream::UpstreamTlsError> {
        Ok(Gateway::with_client(
            config,
            validator,
            metrics,
            UpstreamClient::new(config, metrics)?,
        )
        .with_throttle(throttle))
    }
}

impl<C, B> Gateway<C, B>
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Builds the gateway with a given upstream client.
    pub fn with_client(
        config: &Config,
        validator: Arc<Validator>,
        metrics: &Metrics,
        client: UpstreamClient<C, CountedBody<B>>,
    ) -> Self {
        Gateway {
            routes: RouteTable::new(
                &config.deployments,
                metrics,
                config.forwarding.max_connections_per_upstream,
            ),
            validator,
            client,
            forwarding: config.forwarding.clone(),
            max_header_bytes: config.limits.max_header_bytes,
            unrouted: metrics.for_route(""),
            access_log: config.log.access,
            throttle: Throttle::new(&config.throttle).map(Arc::new),
            trusted_proxies: config.throttle.trusted_proxies.clone().into(),
            throttle_failures: metrics.throttle_failures.clone(),
            throttle_clients: metrics.throttle_clients.clone(),
            ids: RequestIds::new(),
        }
    }

    /// Uses `throttle`'s buckets (shared with the admin listener) instead of the gateway's own.
    pub fn with_throttle(mut self, throttle: Option<Arc<Throttle>>) -> Self {
        self.throttle = throttle;
        self
    }

    /// Serves one request from `client`.
    pub async fn handle(
        &self,
        req: Request<B>,
        client: impl Into<Peer>,
    ) -> Response<ClientBody<B>> {
        let client = client.into();
        let started = Instant::now();
        let request_id = self.ids.take(req.headers());
        let mut logged = self.access_log.then(|| Logged {
            method: req.method().clone(),
            uri: req.uri().clone(),
            host: req.headers().get(HOST).cloned(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            path: None,
        });
        let (parts, body) = req.into_parts();
        let body = CountedBody::new(body, logged.as_ref().map(|l| Arc::clone(&l.bytes_in)));
        let version = parts.version;
        let (route, token, outcome, mut res) = match self.admit(&parts, client).await {
            Err(Refused {
                route,
                reject,
                token,
            }) => (
                route,
                token,
                reject.outcome(),
                reject.response().map(Either::Right),
            ),
            Ok(Admitted {
                route,
                token,
                host,
                path,
            }) => {
                if let Some(l) = &mut logged {
                    // Only when the access log is on and normalization changed the path.
                    l.path.clone_from(&path);
                    if host.is_some() {
                        l.host.clone_from(&host);
                    }
                }
                let routed = Routed {
                    host,
                    path,
                    request_id: request_id.clone(),
                };
                match self
                    .forward(route, parts, body, client, token.as_deref(), routed)
                    .await
                {
                    Ok(res) => {
                        let outcome = if token.is_some() {
                            Outcome::Allowed
                        } else {
                            Outcome::Public
                        };
                        (Some(route), token, outcome, res.map(Either::Left))
                    }
                    Err(reject) => (
                        Some(route),
                        token,
                        reject.outcome(),
                        reject.response().map(Either::Right),
                    ),
                }
            }
        };
        *res.version_mut() = version;
        let metrics = route.map_or(&self.unrouted, |r| &r.metrics);
        metrics.record(outcome, started.elapsed().as_secs_f64());
        let line = logged.map(|logged| {
            Box::new(Line {
                logged,
                client: client.addr,
                deployment: route.map(|r| r.name.clone()),
                status: res.status().as_u16(),
                outcome,
                token,
                request_id: request_id.clone(),
                latency: started.elapsed(),
                bytes_out: 0,
            })
        });
        res.headers_mut().insert(X_REQUEST_ID, request_id);
        res.map(|body| LoggedBody::new(body, line))
    }

    /// The check, route and authorize phases; no I/O but a cache miss, no allocation on a hit.
    async fn admit(&self, parts: &Parts, client: Peer) -> Result<Admitted<'_>, Refused<'_>> {
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err((None, Reject::HeadersTooLarge).into());
        }
        // A tunnel to anywhere the client names: never (RFC 9110 section 9.3.6).
        if parts.method == Method::CONNECT {
            return Err((None, Reject::MethodNotAllowed).into());
        }
        let target = target::read(parts, self.forwarding.merge_slashes).map_err(|e| {
            Refused::from((
                None,
                match e {
                    target::TargetError::Host(e) => Reject::BadHost(e),
                    target::TargetError::Path(e) => Reject::BadPath(e),
                },
            ))
        })?;
        let route = self
            .routes
            .route(target.host_str(), &target.path)
            .ok_or((None, Reject::NoRoute))?;
        if route.policy == Policy::Public || route.is_public_path(&target.path) {
            return Ok(Admitted::new(route, None, target));
        }
        let deny = |r| Err(Refused::from((Some(&**route), r)));
        let now = clock::now();
        let value = match auth::credentials(&parts.headers) {
            Credentials::Bearer(v) => v,
            Credentials::Duplicated => return deny(Reject::DuplicateAuthorization),
            missing => {
                let reject = match missing {
                    Credentials::Absent => Reject::MissingCredentials,
                    _ => Reject::NotBearer,
                };
                return deny(self.failed(parts, client, reject));
            }
        };
        // A live cached token passes without touching the throttle; anything else is checked
        // against the client's failure bucket before the source is asked.
        let verdict = match self.validator.probe(value, now) {
            Probe::Verdict(v @ Verdict::Valid(_)) => v,
            probe => {
                if let Some(reject) = self.throttled(parts, client) {
                    return deny(reject);
                }
                match probe {
                    Probe::Verdict(v) => v,
                    Probe::Miss(miss) => self.validator.settle(value, miss, now).await,
                }
            }
        };
        match verdict {
            Verdict::Valid(token) if auth::permits(route.policy, &route.name, &token) => {
                token.mark_used(now);
                Ok(Admitted::new(route, Some(token), target))
            }
            // The token is live, so the log may name it: who was refused matters on a 403.
            Verdict::Valid(token) => Err(Refused {
                route: Some(route),
                reject: Reject::InsufficientScope,
                token: Some(token),
            }),
            Verdict::Malformed | Verdict::Unknown | Verdict::Expired => {
                deny(self.failed(parts, client, Reject::InvalidToken))
            }
            Verdict::Unavailable => deny(Reject::SourceUnavailable),
        }
    }

    /// 429 when the client's failure bucket is empty.
    fn throttled(&self, parts: &Parts, client: Peer) -> Option<Reject> {
        let throttle = self.throttle.as_ref()?;
        let ip = throttle.client(client.addr.ip(), &parts.headers);
        throttle
            .blocked(ip)
            .map(|wait| Reject::Throttled(wait.as_secs_f64().ceil() as u32))
    }

    /// Counts a failed authorization against the client, or answers 429 if its bucket was
    /// already empty.
    fn failed(&self, parts: &Parts, client: Peer, reject: Reject) -> Reject {
        let Some(throttle) = &self.throttle else {
            return reject;
        };
        if let Some(throttled) = self.throttled(parts, client) {
            return throttled;
        }
        throttle.failed(throttle.client(client.addr.ip(), &parts.headers));
        self.throttle_failures.inc();
        self.throttle_clients.set(throttle.tracked() as i64);
        reject
    }

    /// The rewrite, forward and respond phases.
    async fn forward(
        &self,
        route: &Route,
        mut parts: Parts,
        body: CountedBody<B>,
        client: Peer,
        token: Option<&Token>,
        routed: Routed,
    ) -> Result<Response<UpstreamBody<CountedBody<B>>>, Reject> {
        let client_version = parts.version;
        // A WebSocket upgrade (the only one tunnelled): keep the two headers the hop-by-hop rule
        // removes, and take the client side of the connection for the tunnel. Any other
        // `Upgrade` (h2c included) is dropped with the hop-by-hop headers: a plain request.
        let upgrade = (route.websocket && is_websocket_upgrade(&parts))
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
        if let Some(path) = routed.path {
            // The upstream routes on exactly the path that was authorized; the query as sent.
            let target = match parts.uri.query() {
                Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
                None => PathAndQuery::try_from(path),
            };
            parts.uri = Uri::from(target.map_err(|_| Reject::BadPath(PathError::NotOrigin))?);
        }
        let hop = headers::Hop {
            client: client.addr.ip(),
            trusted: !self.trusted_proxies.is_empty()
                && self
                    .trusted_proxies
                    .iter()
                    .any(|n| n.contains(&client.addr.ip())),
            https: client.https,
            version: client_version,
        };
        headers::rewrite_request(
            &mut parts.headers,
            &self.forwarding,
            &hop,
            routed.host.clone(),
            token,
        );
        parts.headers.insert(X_REQUEST_ID, routed.request_id);
        if upgrade.is_some() {
            parts.headers.insert(UPGRADE, WEBSOCKET);
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if route.upstream.protocol == UpstreamProtocol::Http1 {
            // The host routed on, never another: an absolute-form target's authority or
            // HTTP/2's :authority replaces whatever Host the client also sent.
            match routed.host {
                Some(h) => {
                    parts.headers.insert(HOST, h);
                }
                None => {
                    parts.headers.remove(HOST);
                }
            }
        }
        let request = Request::from_parts(parts, body);
        let deadline = tokio::time::Instant::now() + self.forwarding.response_headers_timeout;
        // A slot of the upstream's connection bound: free ones are taken without waiting.
        let slot = match Arc::clone(&route.slots).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let waited =
                    tokio::time::timeout_at(deadline, Arc::clone(&route.slots).acquire_owned())
                        .await;
                match waited {
                    Err(_) => {
                        route.metrics.upstream_error(UpstreamErrorKind::PoolTimeout);
                        self.warn_upstream(route, "no upstream connection slot came free in time");
                        return Err(Reject::UpstreamTimeout);
                    }
                    Ok(p) => p.ok(),
                }
            }
        };
        route.metrics.upstream_request();
        let pending = self.client.send(route.index, request);
        let res = match tokio::time::timeout_at(deadline, pending).await {
            Err(_) => {
                route.metrics.upstream_error(UpstreamErrorKind::Timeout);
                self.warn_upstream(
                    route,
                    "no response headers within forwarding.timeouts.response_headers",
                );
                return Err(Reject::UpstreamTimeout);
            }
            Ok(Err(e)) => {
                let reject = upstream::classify(&e);
                route.metrics.upstream_error(e.kind());
                self.warn_upstream(route, &e.reason());
                return Err(reject);
            }
            Ok(Ok(res)) => res,
        };
        let (mut res, mut slot) = (res, slot);
        let tunnel = match upgrade {
            Some(Some(client_side)) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream_side = hyper::upgrade::on(&mut res);
                tokio::spawn(tunnel(
                    client_side,
                    upstream_side,
                    route.name.clone(),
                    slot.take(),
                ));
                true
            }
            // A switch nobody asked for would leave the client on a connection in an unknown
            // protocol: the upstream misbehaved.
            _ if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                route.metrics.upstream_error(UpstreamErrorKind::Protocol);
                self.warn_upstream(
                    route,
                    "switched protocols without a WebSocket upgrade; answered 502",
                );
                return Err(Reject::UpstreamUnavailable);
            }
            _ => false,
        };
        let (mut parts, body) = res.into_parts();
        headers::rewrite_response(&mut parts.headers, client_version);
        // The slot, unless a tunnel holds it, is released when the body is done.
        let body = body.holding(slot);
        if tunnel {
            parts.headers.insert(UPGRADE, WEBSOCKET);
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        Ok(Response::from_parts(parts, body))
    }

    /// The validator, for the admin listener's metrics.
    pub fn validator(&self) -> &Arc<Validator> {
        &self.validator
    }

    /// One warning about a failed upstream exchange: which deployment, which upstream address,
    /// and why (down to the OS's reason). Never the request.
    fn warn_upstream(&self, route: &Route, reason: &str) {
        tracing::warn!(
            deployment = &*route.name,
            upstream = %self.client.upstream_of(route.index).map_or("-", |a| a.as_str()),
            error = reason,
            "upstream request failed"
        );
    }
}

/// What admission decided the upstream is sent: the routed host, the path if it changed, and
/// the request id.
struct Routed {
    host: Option<HeaderValue>,
    path: Option<String>,
    request_id: HeaderValue,
}

const WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");

/// True for a WebSocket opening handshake (RFC 6455 section 4.1): HTTP/1.1 GET with
/// `Connection: upgrade`, `Upgrade: websocket` and `Sec-WebSocket-Version: 13`. Nothing else is
/// tunnelled: an h2c or other upgrade would carry requests bentogate never sees.
fn is_websocket_upgrade(parts: &Parts) -> bool {
    if parts.version != Version::HTTP_11 || parts.method != Method::GET {
        return false;
    }
    let asks = parts.headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    let mut upgrade = parts.headers.get_all(UPGRADE).iter();
    let websocket = upgrade
        .next()
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && upgrade.next().is_none();
    let version_13 = parts
        .headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"13");
    asks && websocket && version_13
}

/// Copies bytes both ways between an upgraded client connection and the upstream's until either
/// side closes; holds the upstream slot meanwhile.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    deployment: std::sync::Arc<str>,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(deployment = &*deployment, error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            tracing::debug!(
                deployment = &*deployment,
                up,
                down,
                "upgraded connection closed"
            )
        }
        Err(e) => {
            tracing::debug!(deployment = &*deployment, error = %e, "upgraded connection failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder()
            .uri("/ws")
            .version(version)
            .method(method);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn only_websocket_version_13_is_an_upgrade() {
        let ws = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
        ];
        assert!(is_websocket_upgrade(&parts(
            Version::HTTP_11,
            Method::GET,
            &ws
        )));
        assert!(!is_websocket_upgrade(&parts(
            Version::HTTP_11,
            Method::POST,
            &ws
        )));
        assert!(!is_websocket_upgrade(&parts(
            Version::HTTP_10,
            Method::GET,
            &ws
        )));
        for refused in [
            &[
                ("connection", "upgrade"),
                ("upgrade", "h2c"),
                ("sec-websocket-version", "13"),
            ][..],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket, h2c"),
                ("sec-websocket-version", "13"),
            ],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "8"),
            ],
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            &[("upgrade", "websocket"), ("sec-websocket-version", "13")],
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
                ("sec-websocket-version", "13"),
            ],
        ] {
            assert!(
                !is_websocket_upgrade(&parts(Version::HTTP_11, Method::GET, refused)),
                "{refused:?}"
            );
        }
    }
}
