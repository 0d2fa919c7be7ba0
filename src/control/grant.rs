//! Grant attenuation: a token may create only a token that is no more powerful than itself.
//!
//! Owns the one rule every token-authenticated create goes through ([`attenuate`]): the API's
//! [`super::Store::create`] calls it, and so must any later front end (a web console) that
//! creates tokens on a caller's behalf. The local CLI, which holds the token file or database
//! itself, is the root of trust and is not limited by it.
//!
//! The refusals name the kind of grant that is too wide and what to do, never the request's
//! content (deployment names, the new token's name, times): they reach the caller and the audit
//! log.

use super::{ControlError, NewToken};
use crate::token::Token;

/// Checks that `req` grants nothing the calling token `caller` does not hold itself:
///
/// - every scope is one of the caller's scopes;
/// - All Deployments only from a token with All Deployments;
/// - each listed deployment only if the caller reaches it (All Deployments reaches all);
/// - `monitoring` only from a token with monitoring;
/// - if the caller expires, the new token expires too, no later than the caller.
///
/// Refused with [`ControlError::Forbidden`], before anything is written.
pub fn attenuate(caller: &Token, req: &NewToken) -> Result<(), ControlError> {
    let refuse = |m: &str| Err(ControlError::Forbidden(m.to_owned()));
    if !req.scopes.is_subset_of(caller.scopes) {
        return refuse(
            "the new token asks for a scope the calling token does not hold; ask only for scopes your token has, or have a token that holds them create it",
        );
    }
    if req.all_deployments && !caller.all_deployments {
        return refuse(
            "the new token asks for All Deployments, which the calling token does not have; list only the deployments your token reaches, or use a token with All Deployments",
        );
    }
    if !req.deployments.iter().all(|d| caller.reaches(d)) {
        return refuse(
            "the new token asks for a deployment the calling token cannot reach; list only deployments your token reaches, or use a token that reaches them",
        );
    }
    if req.monitoring && !caller.monitoring {
        return refuse(
            "the new token asks for monitoring, which the calling token does not have; leave it out, or use a token with monitoring",
        );
    }
    if let Some(limit) = caller.expired_at {
        match req.expired_at {
            None => {
                return refuse(
                    "the calling token expires, so the new token must expire too: set `expired_at` no later than the calling token's expiry",
                )
            }
            Some(at) if at > limit => {
                return refuse(
                    "the new token would expire after the calling token; set `expired_at` no later than the calling token's expiry",
                )
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Digest, Scope, Scopes};

    const SECRET_LOOKING: &str = "deployment-marker-7f3a";

    fn caller(edit: impl FnOnce(&mut Token)) -> Token {
        let mut t = Token::new("u".into(), "caller".into(), Digest([0; 32]), None, 0);
        t.scopes = Scopes::from_slice(&[Scope::Api]);
        edit(&mut t);
        t
    }

    fn refused(c: &Token, req: &NewToken, about: &str) {
        match attenuate(c, req) {
            Err(ControlError::Forbidden(m)) => {
                assert!(m.contains(about), "{m}");
                assert!(
                    !m.contains(SECRET_LOOKING),
                    "the refusal echoes the request: {m}"
                );
                assert!(!m.contains(&req.name), "the refusal echoes the name: {m}");
            }
            other => panic!("expected a refusal about {about}, got {other:?}"),
        }
    }

    fn req(edit: impl FnOnce(&mut NewToken)) -> NewToken {
        let mut r = NewToken {
            name: "new-token-name-marker".into(),
            ..NewToken::default()
        };
        edit(&mut r);
        r
    }

    #[test]
    fn scopes_must_be_held() {
        let c = caller(|_| {});
        let wider = req(|r| r.scopes = Scopes::from_slice(&[Scope::Api, Scope::WriteCluster]));
        refused(&c, &wider, "scope");
        let same = req(|r| r.scopes = Scopes::from_slice(&[Scope::Api]));
        assert!(attenuate(&c, &same).is_ok());
        assert!(
            attenuate(&c, &req(|_| {})).is_ok(),
            "asking for less is fine"
        );
    }

    #[test]
    fn all_deployments_only_from_all_deployments() {
        let single = caller(|t| t.deployments = vec!["a".into()]);
        refused(
            &single,
            &req(|r| r.all_deployments = true),
            "All Deployments",
        );
        let all = caller(|t| t.all_deployments = true);
        assert!(attenuate(&all, &req(|r| r.all_deployments = true)).is_ok());
    }

    #[test]
    fn each_deployment_must_be_reached() {
        let single = caller(|t| t.deployments = vec!["a".into()]);
        let other = req(|r| r.deployments = vec!["a".into(), SECRET_LOOKING.into()]);
        refused(&single, &other, "deployment");
        assert!(attenuate(&single, &req(|r| r.deployments = vec!["a".into()])).is_ok());
        let none = caller(|_| {});
        refused(
            &none,
            &req(|r| r.deployments = vec!["a".into()]),
            "deployment",
        );
        let all = caller(|t| t.all_deployments = true);
        assert!(
            attenuate(&all, &other).is_ok(),
            "All Deployments reaches all"
        );
    }

    #[test]
    fn monitoring_only_from_monitoring() {
        refused(&caller(|_| {}), &req(|r| r.monitoring = true), "monitoring");
        let m = caller(|t| t.monitoring = true);
        assert!(attenuate(&m, &req(|r| r.monitoring = true)).is_ok());
    }

    #[test]
    fn expiry_is_no_later_than_the_callers() {
        let expiring = caller(|t| t.expired_at = Some(1_000));
        refused(&expiring, &req(|_| {}), "must expire");
        refused(&expiring, &req(|r| r.expired_at = Some(1_001)), "after");
        assert!(attenuate(&expiring, &req(|r| r.expired_at = Some(1_000))).is_ok());
        assert!(attenuate(&expiring, &req(|r| r.expired_at = Some(500))).is_ok());
        let forever = caller(|_| {});
        assert!(attenuate(&forever, &req(|_| {})).is_ok());
        assert!(attenuate(&forever, &req(|r| r.expired_at = Some(9_999))).is_ok());
    }
}
