//! The `introspect` token source: a sidecar that holds no store asks a central bentogate's
//! `POST /v1/introspect` (RFC 7662) and rebuilds the token record from the answer.
//!
//! Owns the HTTP(S) call, reading the answer back into a [`Token`], and reachability (for
//! /readyz): every call updates it, and [`IntrospectSource::probe_every`] keeps it current when
//! no request comes. Caching, coalescing and stale-if-error belong to the validator.
//!
//! Over `https://` the endpoint's certificate must chain to `ca_file` (else the platform's roots)
//! and name the URL's host; there is no switch to skip either. This gateway's own token is
//! re-read from `token_file` when the file changes (a Kubernetes Secret rotates by swapping a
//! symlink), and at once when the endpoint refuses it, before the call is retried: a rotation
//! where the old token is revoked right after the new one is mounted fails no lookup.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::IntrospectConfig;
use crate::metrics::Metrics;
use crate::tls::client::Verify;
use crate::token::{Digest, OwnerKind, Scopes, Secret, Token};

/// How often the token file is checked for a rotated token.
const TOKEN_FILE_POLL: Duration = Duration::from_secs(1);

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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// This gateway's own token: from the configuration, replaced when its file changes.
    token: ArcSwap<Secret>,
    /// Serializes re-reads of the token file (the watcher and refused calls).
    reread: tokio::sync::Mutex<()>,
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
    /// Failed calls, probes included, count in `metrics`' source failures. Fails when the
    /// https endpoint's CA file or the client certificate cannot be loaded.
    pub fn new(
        config: IntrospectConfig,
        metrics: Arc<Metrics>,
    ) -> Result<IntrospectSource, crate::tls::TlsError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        http.enforce_http(false);
        let tls = if config.url.scheme_str() == Some("https") {
            crate::tls::client::config(Verify::Full(&config.ca), config.identity.as_ref(), &[])?
        } else {
            crate::tls::client::empty()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(IntrospectSource {
            token: ArcSwap::new(Arc::clone(&config.token)),
            reread: tokio::sync::Mutex::new(()),
            config,
            client,
            reachable: AtomicBool::new(true),
            last_error: Mutex::new(None),
            metrics,
        })
    }

    /// Re-reads `token_file`; true when it held a new token, now in use. An unreadable file or
    /// one that holds no token keeps the current token (logged, never the value).
    async fn reread_token(&self) -> bool {
        let Some(path) = &self.config.token_file else {
            return false;
        };
        let _one = self.reread.lock().await;
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "introspection token file unreadable; keeping the current token");
                return false;
            }
        };
        let new = text.trim();
        if new == self.token.load().expose() {
            return false;
        }
        if crate::token::check(new.as_bytes()).is_err() {
            tracing::warn!(file = %path.display(), "introspection token file holds no token (yet); keeping the current token");
            return false;
        }
        self.token.store(Arc::new(Secret::new(new.to_owned())));
        tracing::info!(file = %path.display(), "introspection token rotated");
        true
    }

    /// Re-reads the token file every second until `shutdown`, so a rotated Secret is used
    /// before the old token is revoked.
    pub async fn watch_token_file(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        if self.config.token_file.is_none() {
            return;
        }
        crate::periodic::every(TOKEN_FILE_POLL, shutdown, || {
            let me = Arc::clone(&self);
            async move {
                me.reread_token().await;
            }
        })
        .await
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

    /// One call; when the endpoint refuses this gateway's token and the token file holds a
    /// newer one, once more with it.
    async fn call(
        &self,
        value: &[u8],
        digest: Digest,
    ) -> Result<Option<Arc<Token>>, IntrospectError> {
        match self.call_once(value, digest).await {
            Err(IntrospectError::Refused(s))
                if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN =>
            {
                if self.reread_token().await {
                    self.call_once(value, digest).await
                } else {
                    Err(IntrospectError::Refused(s))
                }
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        value: &[u8],
        digest: Digest,
    ) -> Result<Option<Arc<Token>>, IntrospectError> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &String::from_utf8_lossy(value))
            .finish();
        let mut credential = HeaderValue::from_str(self.token.load().expose())
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
                .map_err(|e| IntrospectError::Unreachable(crate::tls::client::chain(&e)))?;
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
                let own = me.token.load().expose().as_bytes().to_vec();
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
