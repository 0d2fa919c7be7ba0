//! The access log (`bentogate::access`): what a request's line needs, captured only when
//! `log.access` is on, and the one function that writes it. Never a token value, a credential
//! header or the query string.

use std::net::SocketAddr;
use std::time::Instant;

use http::{HeaderValue, Method, Response, Uri};
use hyper::body::Body;

use crate::metrics::Outcome;
use crate::token::Token;

/// What the access log needs beyond the response, captured only when it is on.
pub(super) struct Logged {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) host: Option<HeaderValue>,
    pub(super) bytes_in: Option<u64>,
    /// The normalized path, when it differs from the one sent.
    pub(super) path: Option<String>,
}

/// One access-log line (`bentogate::access`). Written only when `log.access` is on; never a
/// token value, a credential header or the query string.
#[allow(clippy::too_many_arguments)]
pub(super) fn log<B: Body>(
    logged: &Logged,
    client: SocketAddr,
    deployment: Option<&str>,
    res: &Response<B>,
    outcome: Outcome,
    token: Option<&Token>,
    request_id: &HeaderValue,
    started: Instant,
) {
    let host = logged
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .or_else(|| logged.uri.authority().map(|a| a.as_str()));
    tracing::info!(
        target: "bentogate::access",
        client = %client,
        host = host.unwrap_or("-"),
        method = %logged.method,
        path = logged.path.as_deref().unwrap_or(logged.uri.path()),
        deployment = deployment.unwrap_or("-"),
        status = res.status().as_u16(),
        decision = outcome.as_str(),
        bytes_in = logged.bytes_in,
        bytes_out = res.body().size_hint().exact(),
        request_id = request_id.to_str().unwrap_or("-"),
        token_uid = token.map_or("-", |t| t.uid.as_str()),
        latency_us = started.elapsed().as_micros() as u64,
    );
}
