//! The admin listener: `/healthz`, `/readyz`, `/metrics`.
//!
//! Owns what operators and the kubelet poll. `/healthz` answers while the process serves;
//! `/readyz` answers 200 while serving (with the token file's state: a rejected file keeps the
//! last good set and says so here) and 503 while draining; `/metrics` is Prometheus text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::Metrics;
use crate::validator::Validator;

/// State the admin endpoints report on.
pub struct Admin {
    metrics: Arc<Metrics>,
    validator: Arc<Validator>,
    draining: Arc<AtomicBool>,
}

impl Admin {
    /// Reports on these parts of a running server.
    pub fn new(
        metrics: Arc<Metrics>,
        validator: Arc<Validator>,
        draining: Arc<AtomicBool>,
    ) -> Admin {
        Admin {
            metrics,
            validator,
            draining,
        }
    }

    /// Serves one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"use GET"}"#.into(),
            );
        }
        match req.uri().path() {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/readyz" => self.readyz(),
            "/metrics" => {
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
            _ => json(
                StatusCode::NOT_FOUND,
                r#"{"error":"unknown admin path; try /healthz, /readyz or /metrics"}"#.into(),
            ),
        }
    }

    fn readyz(&self) -> Response<Full<Bytes>> {
        if self.draining.load(Ordering::Acquire) {
            return json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"draining"}"#.into(),
            );
        }
        let source = self.validator.source();
        let body = serde_json::json!({
            "status": if source.last_error().is_some() { "degraded" } else { "ready" },
            "token_source": {
                "kind": "file",
                "path": source.path().display().to_string(),
                "tokens": self.metrics.tokens_loaded.get(),
                "last_error": source.last_error(),
            },
        });
        json(StatusCode::OK, body.to_string())
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
            Admin::new(metrics, validator, Arc::new(AtomicBool::new(draining))),
            dir,
        )
    }

    fn get(admin: &Admin, path: &str) -> StatusCode {
        let req = Request::get(path).body(()).unwrap();
        block_on(admin.handle(req)).status()
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
}
