//! The request pipeline, in phase order.
//!
//! 1. **check**: header block size (431), path dot-segments (400);
//! 2. **route**: host + longest prefix (404);
//! 3. **authorize**: public route or public path passes; otherwise Bearer credentials through the
//!    validator and the route's policy (401, 403);
//! 4. **rewrite**: headers for the upstream ([`headers`]);
//! 5. **forward**: pooled client, response-headers timeout (502, 504);
//! 6. **respond**: the upstream's body streams through frame by frame;
//! 7. **log**: one metrics update and one access-log line.
//!
//! Every answer the gateway gives itself is a [`Reject`], turned into HTTP in one place.

pub mod headers;
pub mod reject;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HOST;
use http::request::Parts;
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::connect::{Connect, HttpConnector};

use crate::auth::{self, Credentials};
use crate::clock;
use crate::config::{Config, ForwardingConfig, Policy, UpstreamProtocol};
use crate::metrics::{Metrics, Outcome, RouteMetrics};
use crate::route::{Route, RouteTable};
use crate::token::Token;
use crate::validator::{Validator, Verdict};
pub use reject::Reject;
use upstream::{UpstreamBody, UpstreamClient};

/// What a client receives: the upstream's streamed body, or a short body of our own.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// The data plane: everything a request needs, immutable and shared by all connections.
/// Generic over the upstream connector and the request body only so that benches can run it in
/// memory; the server uses the defaults (TCP, hyper's `Incoming`).
pub struct Gateway<C = HttpConnector, B = Incoming> {
    routes: RouteTable,
    validator: Arc<Validator>,
    client: UpstreamClient<C, B>,
    forwarding: ForwardingConfig,
    max_header_bytes: usize,
    unrouted: RouteMetrics,
    access_log: bool,
}

/// A request that passed the check, route and authorize phases.
struct Admitted<'a> {
    route: &'a Route,
    token: Option<Arc<Token>>,
}

impl Gateway {
    /// Builds the gateway for a configuration around a shared validator, forwarding over TCP.
    pub fn new(config: &Config, validator: Arc<Validator>, metrics: &Metrics) -> Gateway {
        Gateway::with_client(
            config,
            validator,
            metrics,
            UpstreamClient::new(&config.forwarding),
        )
    }
}

impl<C, B> Gateway<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Builds the gateway with a given upstream client.
    pub fn with_client(
        config: &Config,
        validator: Arc<Validator>,
        metrics: &Metrics,
        client: UpstreamClient<C, B>,
    ) -> Self {
        Gateway {
            routes: RouteTable::new(&config.deployments, metrics),
            validator,
            client,
            forwarding: config.forwarding.clone(),
            max_header_bytes: config.limits.max_header_bytes,
            unrouted: metrics.for_route(""),
            access_log: config.log.access,
        }
    }

    /// Serves one request from `client`.
    pub async fn handle(&self, req: Request<B>, client: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let logged = self
            .access_log
            .then(|| (req.method().clone(), req.uri().clone()));
        let (parts, body) = req.into_parts();
        let version = parts.version;
        let (route, token, outcome, mut res) = match self.admit(&parts).await {
            Err((route, reject)) => (
                route,
                None,
                reject.outcome(),
                reject.response().map(Either::Right),
            ),
            Ok(Admitted { route, token }) => {
                match self
                    .forward(route, parts, body, client, token.as_deref())
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
        self.log(
            &logged,
            route.map(|r| &*r.name),
            &res,
            outcome,
            token.as_deref(),
            started,
        );
        res
    }

    fn log(
        &self,
        logged: &Option<(http::Method, Uri)>,
        deployment: Option<&str>,
        res: &Response<ProxyBody>,
        outcome: Outcome,
        token: Option<&Token>,
        started: Instant,
    ) {
        if let Some((method, uri)) = logged {
            tracing::info!(
                target: "bentogate::access",
                method = %method,
                path = uri.path(),
                deployment = deployment.unwrap_or("-"),
                status = res.status().as_u16(),
                decision = outcome.as_str(),
                token_uid = token.map_or("-", |t| t.uid.as_str()),
                latency_us = started.elapsed().as_micros() as u64,
            );
        }
    }

    /// The check, route and authorize phases; no I/O but a cache miss, no allocation on a hit.
    async fn admit(&self, parts: &Parts) -> Result<Admitted<'_>, (Option<&Route>, Reject)> {
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Err((None, Reject::HeadersTooLarge));
        }
        let path = parts.uri.path();
        if has_dot_segments(path) {
            return Err((None, Reject::DotSegments));
        }
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()));
        let route = self
            .routes
            .route(host, path)
            .ok_or((None, Reject::NoRoute))?;
        if route.policy == Policy::Public || route.is_public_path(path) {
            return Ok(Admitted { route, token: None });
        }
        let deny = |r| Err((Some(&**route), r));
        let value = match auth::credentials(&parts.headers) {
            Credentials::Bearer(v) => v,
            Credentials::Absent => return deny(Reject::MissingCredentials),
            Credentials::NotBearer => return deny(Reject::NotBearer),
            Credentials::Duplicated => return deny(Reject::DuplicateAuthorization),
        };
        let now = clock::now();
        match self.validator.validate(value, now).await {
            Verdict::Valid(token) if auth::permits(route.policy, &route.name, &token) => {
                token.mark_used(now);
                Ok(Admitted {
                    route,
                    token: Some(token),
                })
            }
            Verdict::Valid(_) => deny(Reject::InsufficientScope),
            Verdict::Malformed | Verdict::Unknown | Verdict::Expired => deny(Reject::InvalidToken),
            Verdict::Unavailable => deny(Reject::SourceUnavailable),
        }
    }

    /// The rewrite, forward and respond phases.
    async fn forward(
        &self,
        route: &Route,
        mut parts: Parts,
        body: B,
        client: SocketAddr,
        token: Option<&Token>,
    ) -> Result<Response<UpstreamBody>, Reject> {
        let client_version = parts.version;
        let host = match parts.headers.get(HOST) {
            Some(h) => Some(h.clone()),
            None => parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        headers::rewrite_request(
            &mut parts.headers,
            &self.forwarding,
            client.ip(),
            client_version,
            host.clone(),
            token,
        );
        let upstream = &route.upstream;
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| Reject::UpstreamUnavailable)?;
        match upstream.protocol {
            UpstreamProtocol::Http1 => {
                parts.version = Version::HTTP_11;
                // An HTTP/2 client sends :authority, not Host; keep the name it asked for.
                if let (false, Some(h)) = (parts.headers.contains_key(HOST), host) {
                    parts.headers.insert(HOST, h);
                }
            }
            UpstreamProtocol::H2 => {
                parts.version = Version::HTTP_2;
                parts.headers.remove(HOST);
            }
        }
        let request = Request::from_parts(parts, body);
        let pending = self.client.pool(upstream.protocol).request(request);
        let res = match tokio::time::timeout(self.forwarding.response_headers_timeout, pending)
            .await
        {
            Err(_) => return Err(Reject::UpstreamTimeout),
            Ok(Err(e)) => {
                let reject = upstream::classify(&e);
                tracing::warn!(deployment = &*route.name, error = %e, "upstream request failed");
                return Err(reject);
            }
            Ok(Ok(res)) => res,
        };
        let (mut parts, body) = res.into_parts();
        headers::rewrite_response(&mut parts.headers, client_version);
        Ok(Response::from_parts(
            parts,
            UpstreamBody::new(body, self.forwarding.idle_timeout),
        ))
    }

    /// The validator, for the admin listener's metrics.
    pub fn validator(&self) -> &Arc<Validator> {
        &self.validator
    }
}

/// True when a path segment is `.` or `..`, literally or percent-encoded (RFC 3986 section 5.2.4):
/// such a path could be matched by one route's prefix and resolved by the upstream into another's.
fn has_dot_segments(path: &str) -> bool {
    path.split('/')
        .any(|seg| matches!(dot_count(seg.as_bytes()), Some(1 | 2)))
}

/// How many dots a segment made only of `.` and `%2e` spells; `None` if it holds anything else.
fn dot_count(mut seg: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !seg.is_empty() {
        seg = match seg {
            [b'.', rest @ ..] => rest,
            [b'%', b'2', e, rest @ ..] if e.eq_ignore_ascii_case(&b'e') => rest,
            _ => return None,
        };
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::has_dot_segments;

    #[test]
    fn finds_dot_segments_in_every_spelling() {
        for p in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/.%2E/b",
            "/a/%2e./b",
            "/a/%2E",
        ] {
            assert!(has_dot_segments(p), "{p}");
        }
        for p in [
            "/",
            "/a/b",
            "/a/...",
            "/a/.well-known",
            "/a/b.c",
            "/%2e%2e%2e",
        ] {
            assert!(!has_dot_segments(p), "{p}");
        }
    }
}
