//! The admin listener: `/healthz`, `/readyz`, `/metrics`, and the control plane's paths
//! (`/api/v1/...`, `/v1/introspect`), which it hands to [`crate::control`].
//!
//! Owns what operators and the kubelet poll, and reading request bodies (at most
//! [`MAX_BODY_BYTES`]). With `admin.probes` set, [`Admin::probe`] serves the probe listener:
//! health, readiness and metrics only, never the control plane, so the port opened to the
//! kubelet and to Prometheus does not expose the token API. `/healthz` answers while the process serves;
//! `/readyz` answers 200 while serving (with the token file's state: a rejected file keeps the
//! last good set and says so here) and 503 while draining; `/metrics` is Prometheus text.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::console::Console;
use crate::control::api::Api;
use crate::control::introspect::Introspection;
use crate::control::Store;
use crate::metrics::Metrics;
use crate::throttle::Throttle;
use crate::validator::Validator;

/// Largest control-plane request body read; a token create is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// State the admin endpoints report on, and the control plane behind them.
pub struct Admin {
    metrics: Arc<Metrics>,
    validator: Arc<Validator>,
    draining: Arc<AtomicBool>,
    api: Api,
    introspection: Introspection,
    store: Option<Arc<Store>>,
    throttle: Option<Arc<Throttle>>,
    /// The web console (`admin.console`), when enabled and this gateway holds a store.
    console: Option<Arc<Console>>,
}

impl Admin {
    /// Serves the web console (its pages and the browser-login API) on this listener.
    pub fn with_console(mut self, console: Option<Arc<Console>>) -> Admin {
        self.console = console;
        self
    }

    /// Reports on these parts of a running server.
    /// `store` is the writable token store behind the control-plane API, if this gateway has one;
    /// `throttle` holds the failure buckets the proxy listeners use too: a failed token on the
    /// API or on introspection costs the same bucket as one on the data plane.
    pub fn new(
        metrics: Arc<Metrics>,
        validator: Arc<Validator>,
        store: Option<Arc<Store>>,
        draining: Arc<AtomicBool>,
        throttle: Option<Arc<Throttle>>,
    ) -> Admin {
        Admin {
            throttle,
            api: Api::new(Arc::clone(&validator), store.clone()),
            store,
            introspection: Introspection::new(Arc::clone(&validator)),
            metrics,
            validator,
            draining,
            console: None,
        }
    }

    /// Serves one admin request.
    pub async fn handle<B>(&self, req: Request<B>, peer: IpAddr) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if let Some(console) = self
            .console
            .as_ref()
            .filter(|_| crate::console::serves(path))
        {
            let (parts, body) = req.into_parts();
            let body = match read_body(body).await {
                Ok(b) => b,
                Err(res) => return res,
            };
            return console.handle(&parts, body, peer).await;
        }
        if path.starts_with("/api/v1/") || path == "/v1/introspect" {
            return self.control(req, peer).await;
        }
        self.observe(req.method(), path).unwrap_or_else(|| {
            json(
                StatusCode::NOT_FOUND,
                r#"{"error":"unknown admin path; try /healthz, /readyz or /metrics"}"#.into(),
            )
        })
    }

    /// Serves one request on the probe listener (`admin.probes`): `/healthz`, `/readyz` and
    /// `/metrics`, and nothing of the control plane.
    pub fn probe<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        self.observe(req.method(), req.uri().path())
            .unwrap_or_else(|| {
                json(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"the probe listener serves /healthz, /readyz and /metrics only; the token API is on admin.address"}"#.into(),
                )
            })
    }

    /// The answers shared by both listeners; `None` for a path that is not theirs.
    fn observe(&self, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
        if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"use GET"}"#.into(),
            ));
        }
        Some(match path {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/readyz" => self.readyz(),
            _ => {
                self.metrics
                    .cache_entries
                    .set(self.validator.cached_entries() as i64);
                let mut res = Response::new(Full::new(Bytes::from(self.metrics.render())));
                res.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
        })
    }

    async fn control<B>(&self, req: Request<B>, peer: IpAddr) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        // Key guessing against the API is throttled like guessing on the proxy listeners.
        let client = self
            .throttle
            .as_ref()
            .map(|t| t.client(peer, &parts.headers));
        // As on the proxy listeners, a live cached token is never throttled: only callers
        // without one are checked against their address's bucket.
        let live = crate::auth::presented_token(&parts.headers).is_some_and(|v| {
            matches!(
                self.validator.cached(v, crate::clock::now()),
                Some(crate::validator::Verdict::Valid(_))
            )
        });
        if let (Some(t), Some(ip), false) = (&self.throttle, client, live) {
            if let Some(wait) = t.blocked(ip) {
                let mut res = json(
                    StatusCode::TOO_MANY_REQUESTS,
                    r#"{"error":"too many failed authorizations from this address; wait for Retry-After seconds"}"#.into(),
                );
                res.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
                );
                return res;
            }
        }
        let body = match read_body(body).await {
            Ok(b) => b,
            Err(res) => return res,
        };
        if let Some(store) = self.store.clone() {
            // Judge the caller against the file as it is now, not as of the last poll.
            let _ = tokio::task::spawn_blocking(move || store.refresh()).await;
        }
        let (status, value) = if parts.uri.path() == "/v1/introspect" {
            if parts.method != Method::POST {
                return json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    r#"{"error":"use POST with a form body token=..."}"#.into(),
                );
            }
            self.introspection.handle(&parts.headers, body).await
        } else {
            self.api.handle(&parts, body).await
        };
        if let (StatusCode::UNAUTHORIZED, Some(t), Some(ip)) = (status, &self.throttle, client) {
            t.failed(ip);
            self.metrics.throttle_failures.inc();
        }
        let mut res = json(status, value.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // The store or token source is away, not the caller wrong: say when to come back.
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        res
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        if self.draining.load(Ordering::Acquire) {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"draining"}"#.into(),
            );
        }
        let source = self.validator.source();
        let report = source.readiness();
        let status = if report.ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": match (report.ready, report.degraded) {
                (false, _) => "unavailable",
                (true, true) => "degraded",
                (true, false) => "ready",
            },
            "token_source": report.detail,
        });
        json(status, body.to_string())
    }
}

/// Reads a control-plane or console request body, at most [`MAX_BODY_BYTES`].
async fn read_body<B>(body: B) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => {
            let status = if e.is::<http_body_util::LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            Err(json(
                status,
                serde_json::json!({ "error": format!("reading the body: {e}") }).to_string(),
            ))
        }
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::FileSource;

    fn admin(draining: bool) -> (Admin, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "deployments:\n  - { name: a, upstream: \"http://127.0.0.1:1\", policy: public }\n",
            "t",
            dir.path(),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let source = Arc::new(FileSource::open(&config.tokens.file, metrics.clone()).unwrap());
        let validator = Arc::new(Validator::new(&config.tokens, source, metrics.clone()));
        (
            Admin::new(
                metrics,
                validator,
                None,
                Arc::new(AtomicBool::new(draining)),
                None,
            ),
            dir,
        )
    }

    fn get(admin: &Admin, path: &str) -> StatusCode {
        let req = Request::get(path)
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        block_on(admin.handle(req, std::net::Ipv4Addr::LOCALHOST.into())).status()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn readyz_is_503_while_draining() {
        let (a, _dir) = admin(false);
        assert_eq!(get(&a, "/readyz"), StatusCode::OK);
        assert_eq!(get(&a, "/healthz"), StatusCode::OK);
        assert_eq!(get(&a, "/nope"), StatusCode::NOT_FOUND);
        let (a, _dir) = admin(true);
        assert_eq!(get(&a, "/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get(&a, "/healthz"), StatusCode::OK);
    }

    #[test]
    fn the_probe_listener_serves_no_control_plane() {
        let (a, _dir) = admin(false);
        let probe = |method: Method, path: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            a.probe(&req).status()
        };
        assert_eq!(probe(Method::GET, "/readyz"), StatusCode::OK);
        assert_eq!(probe(Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(probe(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(
            probe(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        for path in [
            "/api/v1/api_tokens",
            "/v1/introspect",
            "/api/v1/auth/current",
        ] {
            assert_eq!(probe(Method::GET, path), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(probe(Method::POST, path), StatusCode::NOT_FOUND, "{path}");
        }
    }
}
