//! The request target, read once: the host and path that routing, the policy and the upstream
//! all use.
//!
//! Owns the agreement between what bentogate checks and what the upstream is sent. The host is
//! taken by the rules of RFC 9112 section 3.2 (HTTP/1.1: exactly one valid `Host`; an
//! absolute-form target's authority replaces it) and RFC 9113 section 8.3.1 (HTTP/2:
//! `:authority`, and a `host` header that differs from it is refused). The path is normalized
//! once ([`crate::path`]); the upstream receives exactly that path with the query untouched.
//! Never echoes what it refuses.

use std::borrow::Cow;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderValue, Version};

use crate::path::{self, PathError};

/// Why a request's host is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// An HTTP/1.1 request without `Host` (RFC 9112 section 3.2).
    #[error("missing Host header")]
    Missing,
    /// More than one `Host` header: which one the upstream reads is anyone's guess.
    #[error("more than one Host header")]
    Duplicated,
    /// Not a valid authority: userinfo (`@`), spaces, an empty name or a bad port.
    #[error("Host is not a valid host[:port]")]
    Invalid,
    /// HTTP/2 `host` differs from `:authority` (RFC 9113 section 8.3.1).
    #[error("host differs from :authority")]
    Mismatch,
}

/// The host and path a request is routed, authorized and forwarded on.
#[derive(Debug)]
pub struct Target<'a> {
    /// The host as the client named it (with port, as sent); none for HTTP/1.0 without `Host`.
    pub host: Option<HeaderValue>,
    /// The normalized path: borrowed from the request when it was already normal.
    pub path: Cow<'a, str>,
}

impl Target<'_> {
    /// The host as text, for routing.
    pub fn host_str(&self) -> Option<&str> {
        self.host.as_ref().and_then(|h| h.to_str().ok())
    }
}

/// Why a request target is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// See [`HostError`].
    Host(HostError),
    /// See [`PathError`].
    Path(PathError),
}

/// Reads the host and normalizes the path of a request.
pub fn read(parts: &Parts, merge_slashes: bool) -> Result<Target<'_>, TargetError> {
    let host = host(parts).map_err(TargetError::Host)?;
    let path = path::normalize(parts.uri.path(), merge_slashes).map_err(TargetError::Path)?;
    Ok(Target { host, path })
}

fn host(parts: &Parts) -> Result<Option<HeaderValue>, HostError> {
    let mut headers = parts.headers.get_all(HOST).iter();
    let header = headers.next();
    if headers.next().is_some() {
        return Err(HostError::Duplicated);
    }
    if let Some(h) = header {
        check_authority(h.as_bytes())?;
    }
    // HTTP/2's `:authority` and an HTTP/1.1 absolute-form target both arrive as the URI's
    // authority; hyper refuses userinfo in either.
    match (parts.uri.authority(), header) {
        (Some(authority), header) => {
            check_authority(authority.as_str().as_bytes())?;
            if parts.version == Version::HTTP_2 {
                if let Some(h) = header {
                    if !h
                        .as_bytes()
                        .eq_ignore_ascii_case(authority.as_str().as_bytes())
                    {
                        return Err(HostError::Mismatch);
                    }
                    return Ok(Some(h.clone()));
                }
            }
            // Absolute form: the target's authority replaces Host (RFC 9112 section 3.2.2).
            HeaderValue::from_str(authority.as_str())
                .map(Some)
                .map_err(|_| HostError::Invalid)
        }
        (None, Some(h)) => Ok(Some(h.clone())),
        (None, None) if parts.version == Version::HTTP_11 => Err(HostError::Missing),
        (None, None) => Ok(None),
    }
}

/// A host value must be `host[:port]` (RFC 3986 3.2.2 and 3.2.3): a reg-name of unreserved,
/// percent-encoded and sub-delim characters or a bracketed IP literal, no userinfo (`@`), no
/// spaces, a port of at most five digits that fits in 16 bits. One pass over the bytes: this
/// runs on every request.
fn check_authority(bytes: &[u8]) -> Result<(), HostError> {
    let (host, port) = match bytes {
        [b'[', rest @ ..] => {
            let close = rest
                .iter()
                .position(|&b| b == b']')
                .ok_or(HostError::Invalid)?;
            let (literal, after) = rest.split_at(close);
            let literal_ok = !literal.is_empty()
                && literal
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'%'));
            if !literal_ok {
                return Err(HostError::Invalid);
            }
            (None, &after[1..])
        }
        _ => {
            let colon = bytes.iter().position(|&b| b == b':');
            let (name, after) = bytes.split_at(colon.unwrap_or(bytes.len()));
            (Some(name), after)
        }
    };
    if let Some(name) = host {
        let name_ok = !name.is_empty()
            && name.iter().all(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(
                        b,
                        b'-' | b'.'
                            | b'_'
                            | b'~'
                            | b'%'
                            | b'!'
                            | b'$'
                            | b'&'
                            | b'\''
                            | b'('
                            | b')'
                            | b'*'
                            | b'+'
                            | b','
                            | b';'
                            | b'='
                    )
            });
        if !name_ok {
            return Err(HostError::Invalid);
        }
    }
    // `host:` with an empty port is allowed by RFC 3986; a port that is not a u16 is not.
    match port {
        [] | [b':'] => Ok(()),
        [b':', digits @ ..]
            if digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && digits
                    .iter()
                    .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                    <= 65535 =>
        {
            Ok(())
        }
        _ => Err(HostError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> Parts {
        let mut b = Request::builder().uri(uri).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn host_of(version: Version, uri: &str, hosts: &[&str]) -> Result<Option<String>, HostError> {
        host(&parts(version, uri, hosts)).map(|h| h.map(|h| h.to_str().unwrap().to_owned()))
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let v = Version::HTTP_11;
        assert_eq!(host_of(v, "/", &["a.test"]), Ok(Some("a.test".into())));
        assert_eq!(
            host_of(v, "/", &["a.test:8080"]),
            Ok(Some("a.test:8080".into()))
        );
        assert_eq!(host_of(v, "/", &["[::1]:80"]), Ok(Some("[::1]:80".into())));
        assert_eq!(host_of(v, "/", &["a.test:"]), Ok(Some("a.test:".into())));
        assert_eq!(
            host_of(v, "/", &["a.test:65535"]),
            Ok(Some("a.test:65535".into()))
        );
        assert_eq!(host_of(v, "/", &[]), Err(HostError::Missing));
        assert_eq!(
            host_of(v, "/", &["a.test", "b.test"]),
            Err(HostError::Duplicated)
        );
        for bad in [
            "",
            "user@a.test",
            "a.test:99999",
            "a.test:x",
            ":80",
            "a test",
        ] {
            assert_eq!(host_of(v, "/", &[bad]), Err(HostError::Invalid), "{bad:?}");
        }
        assert_eq!(host_of(Version::HTTP_10, "/", &[]), Ok(None));
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let v = Version::HTTP_11;
        assert_eq!(
            host_of(v, "http://b.test/x", &["a.test"]),
            Ok(Some("b.test".into()))
        );
        assert_eq!(
            host_of(v, "http://b.test/x", &[]),
            Ok(Some("b.test".into()))
        );
    }

    #[test]
    fn http2_host_must_agree_with_authority() {
        let v = Version::HTTP_2;
        assert_eq!(
            host_of(v, "https://a.test/", &[]),
            Ok(Some("a.test".into()))
        );
        assert_eq!(
            host_of(v, "https://a.test/", &["A.test"]),
            Ok(Some("A.test".into()))
        );
        assert_eq!(
            host_of(v, "https://a.test/", &["b.test"]),
            Err(HostError::Mismatch)
        );
        assert_eq!(host_of(v, "/", &["a.test"]), Ok(Some("a.test".into())));
    }
}
