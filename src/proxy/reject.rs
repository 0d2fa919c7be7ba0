//! Every answer bentogate gives itself, and its one mapping to HTTP.
//!
//! Bodies are short static JSON in the shape Bento servers use (`{"error": "..."}`); they never
//! echo the request, so never a token. 401 and 403 carry `WWW-Authenticate` per RFC 6750 section 3.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::target::HostError;
use crate::metrics::Outcome;
use crate::path::PathError;

/// Why the gateway answers instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// No deployment matches the host and path.
    #[error("no route")]
    NoRoute,
    /// The path cannot be read one way only (an encoded `/`, a control byte, a climb above
    /// the root...): it could reach another route's upstream path.
    #[error("unacceptable path: {0}")]
    BadPath(PathError),
    /// No single valid host: the upstream could read another than the one routed on.
    #[error("unacceptable host: {0}")]
    BadHost(HostError),
    /// CONNECT: bentogate tunnels to no address a client names.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// More than one Authorization header.
    #[error("duplicated authorization header")]
    DuplicateAuthorization,
    /// Header block over `limits.max_header_bytes`.
    #[error("headers too large")]
    HeadersTooLarge,
    /// No credentials at all.
    #[error("missing credentials")]
    MissingCredentials,
    /// Credentials in a scheme other than Bearer.
    #[error("not a bearer credential")]
    NotBearer,
    /// A token was given but is malformed, unknown, expired or revoked.
    #[error("invalid token")]
    InvalidToken,
    /// The remote token source could not be asked and the token is not cached (fail closed).
    #[error("token source unavailable")]
    SourceUnavailable,
    /// Too many failed authorizations from this client; retry after this many seconds.
    #[error("throttled")]
    Throttled(u32),
    /// A live token without access to this deployment.
    #[error("insufficient scope")]
    InsufficientScope,
    /// The upstream refused, reset, or answered nonsense.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not connect or answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
}

const REALM: HeaderValue = HeaderValue::from_static(r#"Bearer realm="bentogate""#);
const REALM_INVALID: HeaderValue =
    HeaderValue::from_static(r#"Bearer realm="bentogate", error="invalid_token""#);
const REALM_SCOPE: HeaderValue =
    HeaderValue::from_static(r#"Bearer realm="bentogate", error="insufficient_scope""#);
const REALM_REQUEST: HeaderValue =
    HeaderValue::from_static(r#"Bearer realm="bentogate", error="invalid_request""#);
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// Retry-After for an unreachable token source: about one reachability check (2 s).
const SOURCE_RETRY_SECONDS: u32 = 2;
const ALLOWED_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE");

/// The 400 body for a path: says what to fix, never repeats the path.
fn path_message(e: PathError) -> &'static str {
    match e {
        PathError::NotOrigin => r#"{"error":"the request target must be a path starting with /"}"#,
        PathError::BadEscape => {
            r#"{"error":"the path has a % not followed by two hex digits; encode % as %25"}"#
        }
        PathError::EncodedSeparator => {
            r#"{"error":"the path holds an encoded / or a backslash; send / unencoded and no backslash"}"#
        }
        PathError::ControlByte => r#"{"error":"the path holds a control character or %00"}"#,
        PathError::InvalidUtf8 => r#"{"error":"the path's percent-escapes are not valid UTF-8"}"#,
        PathError::AboveRoot => r#"{"error":"the path climbs above / with .. segments"}"#,
        PathError::DotParameter => {
            r#"{"error":"the path has a . or .. segment with ; parameters"}"#
        }
    }
}

/// The 400 body for a host: says what to fix, never repeats the host.
fn host_message(e: HostError) -> &'static str {
    match e {
        HostError::Missing => r#"{"error":"HTTP/1.1 requests need a Host header"}"#,
        HostError::Duplicated => r#"{"error":"send exactly one Host header"}"#,
        HostError::Invalid => r#"{"error":"the Host header is not a valid host[:port]"}"#,
        HostError::Mismatch => {
            r#"{"error":"the host header differs from :authority; send one host"}"#
        }
    }
}

impl Reject {
    /// Status, `WWW-Authenticate` value and body: the single place errors become HTTP.
    fn parts(self) -> (StatusCode, Option<HeaderValue>, &'static str) {
        match self {
            Reject::NoRoute => (
                StatusCode::NOT_FOUND,
                None,
                r#"{"error":"no deployment is served at this host and path; check the URL"}"#,
            ),
            Reject::BadPath(e) => (StatusCode::BAD_REQUEST, None, path_message(e)),
            Reject::BadHost(e) => (StatusCode::BAD_REQUEST, None, host_message(e)),
            Reject::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                r#"{"error":"CONNECT is not served; send requests to a deployment's URL"}"#,
            ),
            Reject::DuplicateAuthorization => (
                StatusCode::BAD_REQUEST,
                Some(REALM_REQUEST),
                r#"{"error":"send exactly one Authorization header"}"#,
            ),
            Reject::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                None,
                r#"{"error":"request headers are too large; send fewer or smaller headers"}"#,
            ),
            Reject::MissingCredentials => (
                StatusCode::UNAUTHORIZED,
                Some(REALM),
                r#"{"error":"authentication required: send Authorization: Bearer <token>"}"#,
            ),
            Reject::NotBearer => (
                StatusCode::UNAUTHORIZED,
                Some(REALM),
                r#"{"error":"use the Bearer scheme: send Authorization: Bearer <token>"}"#,
            ),
            Reject::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                Some(REALM_INVALID),
                r#"{"error":"invalid token: it is malformed, unknown, expired or revoked; ask your administrator for a valid one"}"#,
            ),
            // The client is blameless: 503 with Retry-After, not a 401 that says its token is bad.
            Reject::SourceUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                r#"{"error":"the token could not be checked: the token service is unreachable; retry shortly"}"#,
            ),
            Reject::Throttled(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                None,
                r#"{"error":"too many failed authorizations from this address; wait for Retry-After seconds"}"#,
            ),
            Reject::InsufficientScope => (
                StatusCode::FORBIDDEN,
                Some(REALM_SCOPE),
                r#"{"error":"this token has no access to this deployment; ask for a token that grants it"}"#,
            ),
            Reject::UpstreamUnavailable => (
                StatusCode::BAD_GATEWAY,
                None,
                r#"{"error":"the deployment is unavailable; try again later"}"#,
            ),
            Reject::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                None,
                r#"{"error":"the deployment did not answer in time; try again later"}"#,
            ),
        }
    }

    /// The metrics outcome of this answer.
    pub fn outcome(self) -> Outcome {
        match self {
            Reject::NoRoute => Outcome::NotFound,
            Reject::BadPath(_)
            | Reject::BadHost(_)
            | Reject::MethodNotAllowed
            | Reject::DuplicateAuthorization => Outcome::BadRequest,
            Reject::HeadersTooLarge => Outcome::HeadersTooLarge,
            Reject::MissingCredentials | Reject::NotBearer | Reject::InvalidToken => {
                Outcome::Unauthorized
            }
            Reject::SourceUnavailable => Outcome::SourceUnavailable,
            Reject::Throttled(_) => Outcome::Throttled,
            Reject::InsufficientScope => Outcome::Forbidden,
            Reject::UpstreamUnavailable => Outcome::UpstreamError,
            Reject::UpstreamTimeout => Outcome::UpstreamTimeout,
        }
    }

    /// The response; built from static parts, so it allocates only the response itself.
    pub fn response(self) -> Response<Full<Bytes>> {
        let (status, challenge, body) = self.parts();
        let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *res.status_mut() = status;
        res.headers_mut().insert(CONTENT_TYPE, JSON);
        if let Some(c) = challenge {
            res.headers_mut().insert(WWW_AUTHENTICATE, c);
        }
        if self == Reject::MethodNotAllowed {
            res.headers_mut()
                .insert(http::header::ALLOW, ALLOWED_METHODS);
        }
        if self == Reject::SourceUnavailable {
            res.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(SOURCE_RETRY_SECONDS),
            );
        }
        if let Reject::Throttled(seconds) = self {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Reject; 14] = [
        Reject::NoRoute,
        Reject::BadPath(PathError::AboveRoot),
        Reject::BadHost(HostError::Missing),
        Reject::MethodNotAllowed,
        Reject::DuplicateAuthorization,
        Reject::HeadersTooLarge,
        Reject::MissingCredentials,
        Reject::NotBearer,
        Reject::InvalidToken,
        Reject::SourceUnavailable,
        Reject::Throttled(3),
        Reject::InsufficientScope,
        Reject::UpstreamUnavailable,
        Reject::UpstreamTimeout,
    ];

    #[test]
    fn each_reject_has_its_status() {
        let want = [
            404, 400, 400, 405, 400, 431, 401, 401, 401, 503, 429, 403, 502, 504,
        ];
        for (r, code) in ALL.iter().zip(want) {
            assert_eq!(r.response().status().as_u16(), code, "{r:?}");
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let h = |r: Reject| {
            r.response()
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            h(Reject::MissingCredentials).as_deref(),
            Some(r#"Bearer realm="bentogate""#)
        );
        assert!(h(Reject::InvalidToken)
            .unwrap()
            .ends_with(r#"error="invalid_token""#));
        assert!(h(Reject::InsufficientScope)
            .unwrap()
            .ends_with(r#"error="insufficient_scope""#));
        assert_eq!(h(Reject::NoRoute), None);
    }

    #[test]
    fn bodies_are_json_objects_with_an_error() {
        let paths = [
            PathError::NotOrigin,
            PathError::BadEscape,
            PathError::EncodedSeparator,
            PathError::ControlByte,
            PathError::InvalidUtf8,
            PathError::AboveRoot,
            PathError::DotParameter,
        ]
        .map(Reject::BadPath);
        let hosts = [
            HostError::Missing,
            HostError::Duplicated,
            HostError::Invalid,
            HostError::Mismatch,
        ]
        .map(Reject::BadHost);
        for r in ALL.into_iter().chain(paths).chain(hosts) {
            let (_, _, body) = r.parts();
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{r:?}");
        }
    }
}
