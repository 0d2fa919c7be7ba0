//! `POST /v1/introspect` (RFC 7662): other bentogates ask here whether a token is live.
//!
//! Owns the answer's shape, which the `introspect` source ([`crate::store::introspect`]) reads
//! back. The caller authenticates with its own token (`X-YATAI-API-TOKEN` or Bearer), which
//! must hold `read_cluster`. The answer for a live token names its uid (`client_id`), owner
//! (`sub`), scopes (`scope`, space separated), expiry (`exp`), the deployments it reaches
//! (`aud`, `*` for All Deployments) and, as extensions, `name`, `owner_kind` and `monitoring`.
//! Anything else is `{"active": false}`, whatever the reason (RFC 7662 section 2.2).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::view::TokenView;
use crate::auth::presented_token;
use crate::clock;
use crate::token::Scope;
use crate::validator::{Validator, Verdict};

/// The introspection endpoint over this gateway's validator.
pub struct Introspection {
    validator: Arc<Validator>,
}

impl Introspection {
    /// Answers for the tokens `validator` knows.
    pub fn new(validator: Arc<Validator>) -> Introspection {
        Introspection { validator }
    }

    /// Serves one introspection request: headers authenticate the caller, the form body holds
    /// `token=...`.
    pub async fn handle(&self, headers: &HeaderMap, body: Bytes) -> (StatusCode, Value) {
        let now = clock::now();
        let refuse = |status: StatusCode, reason: &'static str| {
            super::audit::denied("introspect", None, None, &reason);
            (
                status,
                json!({ "error": "invalid_client", "error_description": reason }),
            )
        };
        let Some(caller) = presented_token(headers) else {
            return refuse(StatusCode::UNAUTHORIZED, "no caller token: send one with the read_cluster scope in X-YATAI-API-TOKEN or Authorization: Bearer");
        };
        match self.validator.validate(caller, now).await {
            Verdict::Valid(t) if t.scopes.contains(Scope::ReadCluster) => {}
            Verdict::Valid(_) => {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "the caller token lacks the read_cluster scope",
                )
            }
            Verdict::Unavailable => return unavailable(),
            Verdict::Malformed | Verdict::Unknown | Verdict::Expired => {
                return refuse(StatusCode::UNAUTHORIZED, "the caller token is not live")
            }
        }
        let Some(value) = form_urlencoded::parse(&body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
        else {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_request", "error_description": "the form body needs token=..." }),
            );
        };
        match self.validator.validate(value.as_bytes(), now).await {
            Verdict::Valid(t) => {
                t.mark_used(now);
                (StatusCode::OK, TokenView(&t).introspection())
            }
            // "Inactive" would be cached by the asking gateway as an unknown token: say instead
            // that this control plane cannot tell right now.
            Verdict::Unavailable => unavailable(),
            Verdict::Malformed | Verdict::Unknown | Verdict::Expired => {
                (StatusCode::OK, json!({ "active": false }))
            }
        }
    }
}

/// 503: this control plane's own token source is unreachable.
fn unavailable() -> (StatusCode, Value) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": "temporarily_unavailable", "error_description": "the token source is unreachable; retry shortly" }),
    )
}
