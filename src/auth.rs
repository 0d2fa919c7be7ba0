//! Bearer credentials and the policy decision, as pure functions.
//!
//! Owns reading `Authorization: Bearer <token>` (RFC 6750 section 2.1, RFC 9110 section 11.6.2)
//! and deciding whether a live token passes a route's policy (docs/design.md, Policies). Borrows from the
//! request; never copies, stores or prints the value.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::config::Policy;
use crate::token::Token;

/// What the request presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// No Authorization header.
    Absent,
    /// `Bearer <value>`; the value is not yet checked.
    Bearer(&'a [u8]),
    /// Another scheme (Basic, Digest, ...), or `Bearer` with no value.
    NotBearer,
    /// The header appears more than once: ambiguous, refused with 400.
    Duplicated,
}

/// Reads the Authorization header. The scheme is case-insensitive; spaces around the value are
/// allowed (1*SP after the scheme).
///
/// ```
/// use bentogate::auth::{credentials, Credentials};
/// let mut h = http::HeaderMap::new();
/// assert_eq!(credentials(&h), Credentials::Absent);
/// h.insert("authorization", "bearer abc".parse().unwrap());
/// assert_eq!(credentials(&h), Credentials::Bearer(b"abc"));
/// ```
#[inline]
pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Credentials::Absent;
    };
    if all.next().is_some() {
        return Credentials::Duplicated;
    }
    let bytes = value.as_bytes();
    const SCHEME: &[u8] = b"bearer";
    if bytes.len() <= SCHEME.len()
        || !bytes[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        || bytes[SCHEME.len()] != b' '
    {
        return Credentials::NotBearer;
    }
    let token = trim_spaces(&bytes[SCHEME.len()..]);
    if token.is_empty() {
        return Credentials::NotBearer;
    }
    Credentials::Bearer(token)
}

/// The header the bentoml client puts its token in (a credential, like `Authorization`).
pub const TOKEN_HEADER: &str = "x-yatai-api-token";

/// The token a control-plane request presents: `X-YATAI-API-TOKEN`, else a Bearer token.
pub fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(TOKEN_HEADER) {
        let v = v.as_bytes().trim_ascii();
        return (!v.is_empty()).then_some(v);
    }
    match credentials(headers) {
        Credentials::Bearer(v) => Some(v),
        _ => None,
    }
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// True when a live token passes `policy` on the deployment named `deployment`.
#[inline]
pub fn permits(policy: Policy, deployment: &str, token: &Token) -> bool {
    match policy {
        Policy::Public => true,
        Policy::Protected => token.reaches(deployment),
        Policy::Monitoring => token.monitoring,
        Policy::Developer(required) => token.scopes.contains_all(required),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Digest, Scope, Scopes};
    use http::HeaderValue;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reads_bearer_case_insensitively() {
        assert_eq!(
            credentials(&with(&["Bearer abc"])),
            Credentials::Bearer(b"abc")
        );
        assert_eq!(
            credentials(&with(&["bEaReR  abc "])),
            Credentials::Bearer(b"abc")
        );
    }

    #[test]
    fn refuses_other_shapes() {
        assert_eq!(credentials(&HeaderMap::new()), Credentials::Absent);
        assert_eq!(
            credentials(&with(&["Basic dXNlcjpwYXNz"])),
            Credentials::NotBearer
        );
        assert_eq!(credentials(&with(&["Bearer"])), Credentials::NotBearer);
        assert_eq!(credentials(&with(&["Bearer   "])), Credentials::NotBearer);
        assert_eq!(credentials(&with(&["Bearerabc"])), Credentials::NotBearer);
        assert_eq!(
            credentials(&with(&["Bearer a", "Bearer b"])),
            Credentials::Duplicated
        );
    }

    fn token() -> Token {
        Token {
            scopes: Scopes::from_slice(&[Scope::ReadCluster]),
            deployments: vec!["a".into()],
            ..Token::new("u".into(), "n".into(), Digest::of(b"x"), None, 0)
        }
    }

    #[test]
    fn each_policy_checks_its_own_access() {
        let t = token();
        assert!(permits(Policy::Public, "b", &t));
        assert!(permits(Policy::Protected, "a", &t));
        assert!(!permits(Policy::Protected, "b", &t));
        assert!(!permits(Policy::Monitoring, "a", &t));
        assert!(permits(
            Policy::Developer(Scopes::from_slice(&[Scope::ReadCluster])),
            "a",
            &t
        ));
        assert!(!permits(
            Policy::Developer(Scopes::from_slice(&[Scope::ReadCluster, Scope::Api])),
            "a",
            &t
        ));
        let all = Token {
            all_deployments: true,
            deployments: vec![],
            ..token()
        };
        assert!(permits(Policy::Protected, "anything", &all));
        let mon = Token {
            monitoring: true,
            ..token()
        };
        assert!(permits(Policy::Monitoring, "a", &mon));
    }
}
