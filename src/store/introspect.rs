//! The `introspect` token source: a sidecar that holds no store asks a central bentogate's
//! `POST /v1/introspect` (RFC 7662) and rebuilds the token record from the answer.
//!
//! Owns the HTTP call, reading the answer back into a [`Token`], and reachability (for /readyz):
//! every call updates it, and [`IntrospectSource::probe_every`] keeps it current when no request
//! comes. Caching, coalescing and stale-if-error belong to the validator.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::IntrospectConfig;
use crate::metrics::Metrics;
use crate::token::{Digest, OwnerKind, Scopes, Token};

/// Why an introspection call gave no answer (the token's status is then unknown).
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    /// No connection, a timeout, or a broken response.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// The control plane refused this gateway's own token (401/403) or answered oddly.
    #[error("control plane answered {0}: check tokens.introspect.token (it needs read_cluster)")]
    Refused(StatusCode),
    /// The answer is not RFC 7662 JSON.
    #[error("control plane answer unreadable: {0}")]
    Unreadable(String),
}

/// A remote control plane as a token source.
pub struct IntrospectSource {
    config: IntrospectConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    reachable: AtomicBool,
    last_error: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

#[derive(Deserialize)]
struct Answer {
    active: bool,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    aud: Option<Aud>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    owner_kind: Option<OwnerKind>,
    #[serde(default)]
    monitoring: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Aud {
    One(String),
    Many(Vec<String>),
}

impl IntrospectSource {
    /// A source asking `config.url`; nothing is called until the first lookup or probe.
    /// Failed calls, probes included, count in `metrics`' source failures.
    pub fn new(config: IntrospectConfig, metrics: Arc<Metrics>) -> IntrospectSource {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        IntrospectSource {
            config,
            client,
            reachable: AtomicBool::new(true),
            last_error: Mutex::new(None),
            metrics,
        }
    }

    /// The endpoint asked.
    pub fn url(&self) -> &http::Uri {
        &self.config.url
    }

    /// How long cached positives keep passing while the endpoint is unreachable.
    pub fn stale_if_error(&self) -> Duration {
        self.config.stale_if_error
    }

    /// False after a failed call, until one succeeds.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// The last failure, while unreachable.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Asks about the token `value` (whose digest is `digest`): its record if live, none if not.
    pub async fn lookup(
        &self,
        value: &[u8],
        digest: Digest,
    ) -> Result<Option<Arc<Token>>, IntrospectError> {
        let outcome = self.call(value, digest).await;
        let (reachable, error) = match &outcome {
            Ok(_) => (true, None),
            Err(e) => {
                self.metrics.source_failures.inc();
                (false, Some(e.to_string()))
            }
        };
        if self.reachable.swap(reachable, Ordering::AcqRel) != reachable {
            self.metrics.token_source_up.set(i64::from(reachable));
            match &error {
                Some(e) => {
                    tracing::error!(url = %self.config.url, error = %e, "introspection control plane unreachable: cached tokens keep passing, unknown ones are refused")
                }
                None => {
                    tracing::info!(url = %self.config.url, "introspection control plane reachable again")
                }
            }
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
        outcome
    }

    async fn call(
        &self,
        value: &[u8],
        digest: Digest,
    ) -> Result<Option<Arc<Token>>, IntrospectError> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &String::from_utf8_lossy(value))
            .finish();
        let mut credential = HeaderValue::from_str(self.config.token.expose())
            .map_err(|_| IntrospectError::Refused(StatusCode::UNAUTHORIZED))?;
        credential.set_sensitive(true);
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.config.url.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(crate::auth::TOKEN_HEADER, credential)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| IntrospectError::Unreachable(e.to_string()))?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| IntrospectError::Unreachable(e.to_string()))?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|e| IntrospectError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, IntrospectError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| {
                IntrospectError::Unreachable(format!("no answer within {:?}", self.config.timeout))
            })??;
        if status != StatusCode::OK {
            return Err(IntrospectError::Refused(status));
        }
        parse_answer(&bytes, digest).map(|t| t.map(Arc::new))
    }

    /// Checks reachability every `every` (by introspecting this gateway's own token) until
    /// `shutdown`, so /readyz tells the truth when no request comes.
    pub async fn probe_every(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::periodic::every(every, shutdown, || {
            let me = Arc::clone(&self);
            async move {
                let own = me.config.token.expose().as_bytes().to_vec();
                let _ = me.lookup(&own, Digest::of(&own)).await;
            }
        })
        .await
    }
}

/// Reads an introspection answer (network input) into the record it describes, if active.
pub fn parse_answer(bytes: &[u8], digest: Digest) -> Result<Option<Token>, IntrospectError> {
    let answer: Answer =
        serde_json::from_slice(bytes).map_err(|e| IntrospectError::Unreadable(e.to_string()))?;
    record(answer, digest)
}

/// Rebuilds the token record an active answer describes.
fn record(a: Answer, digest: Digest) -> Result<Option<Token>, IntrospectError> {
    if !a.active {
        return Ok(None);
    }
    let missing = |k: &str| IntrospectError::Unreadable(format!("active answer without `{k}`"));
    let uid = a.client_id.ok_or_else(|| missing("client_id"))?;
    let user = a.sub.ok_or_else(|| missing("sub"))?;
    let scopes = Scopes::parse(a.scope.as_deref().unwrap_or("").split_whitespace())
        .map_err(IntrospectError::Unreadable)?;
    let aud = match a.aud {
        None => Vec::new(),
        Some(Aud::One(s)) => vec![s],
        Some(Aud::Many(v)) => v,
    };
    let all_deployments = aud.iter().any(|d| d == "*");
    let created = a.iat.unwrap_or(0);
    let mut t = Token {
        expired_at: a.exp,
        scopes,
        deployments: if all_deployments { Vec::new() } else { aud },
        all_deployments,
        monitoring: a.monitoring,
        ..Token::new(uid.clone(), a.name.unwrap_or(uid), digest, None, created)
    };
    t.kind = a.owner_kind.unwrap_or(OwnerKind::Organization);
    t.user = user;
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_answer_becomes_a_record() {
        let a: Answer = serde_json::from_str(r#"{"active":true,"client_id":"u1","sub":"ann","scope":"api read_cluster","aud":["a","b"],"exp":99,"name":"n","owner_kind":"personal"}"#).unwrap();
        let t = record(a, Digest([1; 32])).unwrap().unwrap();
        assert_eq!(
            (t.uid.as_str(), t.user.as_str(), t.kind),
            ("u1", "ann", OwnerKind::Personal)
        );
        assert_eq!(t.deployments, ["a", "b"]);
        assert_eq!(t.expired_at, Some(99));
        assert_eq!(t.scopes.iter().count(), 2);
        let all: Answer =
            serde_json::from_str(r#"{"active":true,"client_id":"u","sub":"s","aud":"*"}"#).unwrap();
        assert!(
            record(all, Digest([1; 32]))
                .unwrap()
                .unwrap()
                .all_deployments
        );
        let inactive: Answer = serde_json::from_str(r#"{"active":false}"#).unwrap();
        assert!(record(inactive, Digest([1; 32])).unwrap().is_none());
        let broken: Answer = serde_json::from_str(r#"{"active":true}"#).unwrap();
        assert!(record(broken, Digest([1; 32])).is_err());
    }
}
