//! Token issuance: the one function that turns a request for a new token into a stored record
//! and a value shown once. The local CLI, the token API and (later) the web console all call
//! [`issue`], so the checks, the grant rule and value generation live only here.
//!
//! What it must never do: keep or log the value (only its digest is stored), or let a
//! control-plane caller grant more than its own token holds ([`super::grant`]).

use super::{grant, Caller, ControlError, NewToken};
use crate::clock;
use crate::store::TokenStore;
use crate::token::{self, OwnerKind, Secret, Token};

/// Who asks for the token.
#[derive(Clone, Copy)]
pub enum Issuer<'a> {
    /// The local operator, with the token file or the database in reach: the root of trust,
    /// not attenuated. The token is personal to `owner` if one is given, else the
    /// organization's.
    Local {
        /// The member who will own a personal token.
        owner: Option<&'a str>,
    },
    /// A control-plane caller: personal tokens are its own, organization tokens need an admin,
    /// every grant is attenuated to what the caller's token holds, and every deployment named
    /// must be one of `routed` (checked after the grant, so a grant too wide is refused as such).
    Caller {
        /// Who asks.
        caller: &'a Caller,
        /// The deployments this gateway's routes serve.
        routed: &'a [String],
    },
}

/// The one rule for the deployments a token names: each must be a deployment some route serves
/// (a token for a name no route has passes nowhere, and a typo would go unnoticed until a
/// caller gets 403). Returns the first that is not, if any.
pub fn unrouted<'a>(deployments: &'a [String], routed: &[String]) -> Option<&'a str> {
    deployments
        .iter()
        .find(|d| !routed.contains(d))
        .map(String::as_str)
}

/// Validates `req`, applies the grant rule, generates the value and stores the record in one
/// write. Returns the value (to show this once) and the record.
pub fn issue(
    store: &dyn TokenStore,
    issuer: Issuer<'_>,
    req: NewToken,
) -> Result<(Secret, Token), ControlError> {
    let now = clock::now();
    if req.name.trim().is_empty() {
        return Err(ControlError::Invalid("`name` must not be empty".into()));
    }
    if req.expired_at.is_some_and(|at| at <= now) {
        return Err(ControlError::Invalid(
            "`expired_at` is in the past; give a future time".into(),
        ));
    }
    // The personal owner, and the user recorded as an organization token's maker.
    let (owner, maker) = match issuer {
        Issuer::Local { owner } => (owner.map(str::to_owned), None),
        Issuer::Caller { caller, routed } => {
            let organization = req
                .organization
                .unwrap_or(caller.token.kind == OwnerKind::Organization && caller.is_admin());
            if organization && !caller.is_admin() {
                return Err(ControlError::Forbidden(
                    "creating an organization token needs an admin's token with the `write_organization` scope".into(),
                ));
            }
            grant::attenuate(&caller.token, &req)?;
            if unrouted(&req.deployments, routed).is_some() {
                // The name the request chose is not repeated; the ones that exist are.
                return Err(ControlError::Invalid(format!(
                    "a deployment in `deployments` is not served by any route; the deployments are: {} (or ask for `all_deployments`)",
                    routed.join(", ")
                )));
            }
            let user = caller.user().to_owned();
            if organization {
                (None, Some(user))
            } else {
                (Some(user), None)
            }
        }
    };
    let randomness =
        |e: getrandom::Error| ControlError::Unavailable(format!("no randomness from the OS: {e}"));
    let secret = Secret::generate().map_err(randomness)?;
    let uid = token::new_uid().map_err(randomness)?;
    let mut record = Token {
        description: req.description.filter(|d| !d.is_empty()),
        expired_at: req.expired_at,
        scopes: req.scopes,
        deployments: req.deployments,
        all_deployments: req.all_deployments,
        monitoring: req.monitoring,
        ..Token::new(uid, req.name, secret.digest(), owner, now)
    };
    if let Some(user) = maker {
        record.user = user;
    }
    if !record.has_access() {
        return Err(ControlError::Invalid(
            "a token needs at least one kind of access: `scopes` (e.g. --scope api), `deployments`, `all_deployments` or `monitoring`".into(),
        ));
    }
    store.insert(record.clone())?;
    Ok((secret, record))
}
