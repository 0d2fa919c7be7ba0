//! The audit trail: one line per control-plane change, refusal and failed authorization, on the
//! `bentogate::audit` log target, written here and nowhere else.
//!
//! Fields: `action`, `actor` and `actor_uid` (when a caller is known), `subject`, `outcome`
//! (`done`, `refused`, `failed`), `reason`. Never a token value and never request content: a
//! subject is a uid, a member name that passed the name rule, or a fixed placeholder, and a
//! request is shown by its route's shape.

use std::fmt::Display;

use super::{Caller, ControlError};

/// Records a change's outcome and passes it on: `done`, or the error as `refused` (the caller
/// may not do this) or `failed` (anything else).
pub fn change<T>(
    caller: &Caller,
    action: &'static str,
    subject: &str,
    outcome: Result<T, ControlError>,
) -> Result<T, ControlError> {
    match outcome {
        Ok(done) => {
            tracing::info!(target: "bentogate::audit", action, actor = caller.user(), actor_uid = %caller.token.uid, subject, outcome = "done", "control-plane change");
            Ok(done)
        }
        Err(e) => Err(failure(caller, action, subject, e)),
    }
}

/// Records a refused or failed change and returns its error.
pub fn failure(
    caller: &Caller,
    action: &'static str,
    subject: &str,
    e: ControlError,
) -> ControlError {
    match &e {
        ControlError::Forbidden(_) => {
            tracing::warn!(target: "bentogate::audit", action, actor = caller.user(), actor_uid = %caller.token.uid, subject, outcome = "refused", reason = %e, "control-plane authorization failed")
        }
        _ => {
            tracing::info!(target: "bentogate::audit", action, actor = caller.user(), actor_uid = %caller.token.uid, subject, outcome = "failed", reason = %e, "control-plane change failed")
        }
    }
    e
}

/// Records a refused authorization: no live token, or one that may not use this endpoint.
/// `request` is the method and route label (never the caller's path), `actor_uid` the token's
/// uid once it is known.
pub fn denied(
    action: &'static str,
    request: Option<(&str, &str)>,
    actor_uid: Option<&str>,
    reason: &dyn Display,
) {
    let (method, path) = request.unwrap_or(("-", "-"));
    tracing::warn!(target: "bentogate::audit", action, method, path, actor_uid = actor_uid.unwrap_or("-"), outcome = "refused", reason = %reason, "control-plane authorization failed");
}
