//! Header rewriting for forwarding.
//!
//! Owns what crosses the proxy: hop-by-hop headers are removed both ways (RFC 9110 section 7.6.1,
//! including names listed in `Connection`, and `HTTP2-Settings`); `X-Forwarded-For/Proto/Host`
//! and `Via` (RFC 9110 section 7.6.3) are set; `Authorization` and `X-YATAI-API-TOKEN` (both
//! credentials) are stripped by default; identity headers that arrive from the client are always
//! removed before ours are added, so a caller can never spoof them, and so are their look-alikes
//! spelt with `_` for `-` (WSGI, CGI and PHP fold the two into one name). Client-supplied
//! `X-Forwarded-For`, `Forwarded` and `X-Real-IP` are believed only from a trusted proxy.

use std::net::IpAddr;

use http::header::{AUTHORIZATION, CONNECTION, TE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use crate::config::{ForwardingConfig, HOP_BY_HOP};
use crate::token::Token;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// The bentoml client's credential header; a credential like `Authorization`.
pub static X_YATAI_API_TOKEN: HeaderName = HeaderName::from_static(crate::auth::TOKEN_HEADER);
const PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");
const PROTO_HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The connection a request arrived on, as the rewrite needs it.
#[derive(Debug, Clone, Copy)]
pub struct Hop {
    /// The peer's address.
    pub client: IpAddr,
    /// True when the peer is one of `throttle.trusted_proxies`: only then are the client's
    /// `X-Forwarded-For`, `Forwarded` and `X-Real-IP` passed on.
    pub trusted: bool,
    /// True on a TLS listener.
    pub https: bool,
    /// The protocol version the client spoke (for `Via`).
    pub version: Version,
}

/// The `Via` entry this proxy adds, by the protocol version it received.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_2 => "2 bentogate",
        Version::HTTP_10 => "1.0 bentogate",
        _ => "1.1 bentogate",
    })
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
///
/// One pass over the names finds which are present (most requests carry none, most responses
/// only `Connection`); only those are removed, since every `remove` hashes its name.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u32;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    remove_present_hop_by_hop(headers, present);
}

/// [`remove_hop_by_hop`] once the caller's scan found which of [`HOP_BY_HOP`] are present
/// (bit `i` for `HOP_BY_HOP[i]`).
fn remove_present_hop_by_hop(headers: &mut HeaderMap, present: u32) {
    if present & HOP_MASK == 0 {
        return;
    }
    // Names listed in Connection are hop-by-hop too (RFC 9110 section 7.6.1). The listed names
    // that are in HOP_BY_HOP are handled below (compared as bytes first: parsing one would
    // allocate), and `close` names no header.
    if present & 1 != 0 {
        let mut listed: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            if token.eq_ignore_ascii_case("close")
                || HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(token))
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
        for name in listed {
            headers.remove(name);
        }
    }
    // `TE: trailers` is end-to-end meaningful for HTTP/2 upstreams (gRPC); anything else goes.
    let keep_te = present & 2 != 0
        && headers
            .get(TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if keep_te {
        // Only that first `TE: trailers` line goes on.
        if let Some(te) = headers.remove(TE) {
            headers.insert(TE, te);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 && !(keep_te && name == TE) {
            headers.remove(name);
        }
    }
}

/// Bits of the request scan: `HOP_BY_HOP[i]` is bit `i`; then the names below.
/// Covers the ten names of [`HOP_BY_HOP`] (a unit test checks the count).
const HOP_MASK: u32 = (1 << 10) - 1;
const HAS_AUTHORIZATION: u32 = 1 << 16;
const HAS_YATAI_TOKEN: u32 = 1 << 17;
const HAS_FORWARDED: u32 = 1 << 18;
const HAS_REAL_IP: u32 = 1 << 19;
const HAS_FORWARDED_HOST: u32 = 1 << 20;
const HAS_UNDERSCORE: u32 = 1 << 21;
/// The identity header names, in the order of `config.identity` (uid, name, owner).
const HAS_IDENTITY: [u32; 3] = [1 << 22, 1 << 23, 1 << 24];

/// One pass over a request's header names: which of those the rewrite removes or replaces are
/// present, so that absent ones cost no hashed `remove`.
fn scan_request(headers: &HeaderMap, config: &ForwardingConfig) -> u32 {
    let ids = &config.identity;
    let identity = [&ids.token_uid, &ids.token_name, &ids.token_owner];
    let mut present = 0u32;
    for name in headers.keys() {
        present |= if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            1 << i
        } else if name == AUTHORIZATION {
            HAS_AUTHORIZATION
        } else if name == X_YATAI_API_TOKEN {
            HAS_YATAI_TOKEN
        } else if name == FORWARDED {
            HAS_FORWARDED
        } else if name == X_REAL_IP {
            HAS_REAL_IP
        } else if name == X_FORWARDED_HOST {
            HAS_FORWARDED_HOST
        } else if let Some(i) = identity.iter().position(|n| n.as_ref() == Some(name)) {
            HAS_IDENTITY[i]
        } else {
            0
        };
        if name.as_str().contains('_') {
            present |= HAS_UNDERSCORE;
        }
    }
    present
}

/// Rewrites a request's headers for the upstream. `host` is the host the request was routed
/// on (for `X-Forwarded-Host`).
///
/// One scan of the names ([`scan_request`]) decides every removal: a header the client did not
/// send costs no hashed `remove`; what is set is set with `insert` (which drops any prior
/// values) or, for `Via`, `append`.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    config: &ForwardingConfig,
    hop: &Hop,
    host: Option<HeaderValue>,
    token: Option<&Token>,
) {
    let present = scan_request(headers, config);
    remove_present_hop_by_hop(headers, present);
    if present & HAS_UNDERSCORE != 0 {
        remove_lookalikes(headers, config);
    }
    if config.strip_authorization {
        if present & HAS_AUTHORIZATION != 0 {
            headers.remove(AUTHORIZATION);
        }
        if present & HAS_YATAI_TOKEN != 0 {
            headers.remove(&X_YATAI_API_TOKEN);
        }
    }
    // Our identity headers replace any the client sent (`insert` drops every prior value);
    // names we do not fill are removed, so a caller can never spoof them.
    let (names, values) = (&config.identity, token.map(Token::identity));
    for ((name, value), bit) in [
        (&names.token_uid, values.and_then(|v| v.uid.as_ref())),
        (&names.token_name, values.and_then(|v| v.name.as_ref())),
        (&names.token_owner, values.and_then(|v| v.owner.as_ref())),
    ]
    .into_iter()
    .zip(HAS_IDENTITY)
    {
        match (name, value) {
            (Some(name), Some(value)) => {
                headers.insert(name.clone(), value.clone());
            }
            (Some(name), None) if present & bit != 0 => {
                headers.remove(name);
            }
            _ => {}
        }
    }
    if hop.trusted {
        append_forwarded_for(headers, hop.client);
    } else {
        // From anyone else these name whoever the client claims to be: say who it is instead.
        headers.insert(X_FORWARDED_FOR.clone(), ip_value(hop.client));
        if present & HAS_FORWARDED != 0 {
            headers.remove(&FORWARDED);
        }
        if present & HAS_REAL_IP != 0 {
            headers.remove(&X_REAL_IP);
        }
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        if hop.https { PROTO_HTTPS } else { PROTO_HTTP },
    );
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h);
        }
        None if present & HAS_FORWARDED_HOST != 0 => {
            headers.remove(&X_FORWARDED_HOST);
        }
        None => {}
    }
    headers.append(VIA, via(hop.version));
}

/// Removes client headers whose name, with `_` read as `-`, is one bentogate sets or strips:
/// the identity headers, the credentials (when stripped) and the forwarding headers. A stack
/// that folds `_` into `-` would otherwise read them as ours.
fn remove_lookalikes(headers: &mut HeaderMap, config: &ForwardingConfig) {
    let managed = |folded: &str| {
        let ids = &config.identity;
        [&ids.token_uid, &ids.token_name, &ids.token_owner]
            .into_iter()
            .flatten()
            .any(|n| n.as_str() == folded)
            || [
                &X_FORWARDED_FOR,
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_REAL_IP,
            ]
            .iter()
            .any(|n| n.as_str() == folded)
            || (config.strip_authorization && folded == X_YATAI_API_TOKEN.as_str())
    };
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_') && managed(&n.as_str().replace('_', "-")))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Rewrites an upstream response's headers for the client.
pub fn rewrite_response(headers: &mut HeaderMap, version: Version) {
    remove_hop_by_hop(headers);
    headers.append(VIA, via(version));
}

fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let value = match prior {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {client}")).ok(),
        None => Some(ip_value(client)),
    };
    // `insert` replaces every prior line; a list that cannot be extended is dropped.
    match value {
        Some(v) => headers.insert(X_FORWARDED_FOR.clone(), v),
        None => headers.remove(&X_FORWARDED_FOR),
    };
}

/// The address as a header value: IPv4 written by hand (the formatter costs a fifth of the
/// request rewrite), IPv6 through `Display`.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static(""));
    };
    let mut out = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    HeaderValue::from_bytes(&out[..len]).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::token::{Digest, OwnerKind};
    use std::path::Path;

    fn forwarding() -> ForwardingConfig {
        let text =
            "deployments:\n  - { name: a, upstream: \"http://127.0.0.1:1\", policy: public }\n";
        Config::parse(text, "t", Path::new(".")).unwrap().forwarding
    }

    fn token(kind: OwnerKind) -> Token {
        let owner = (kind == OwnerKind::Personal).then(|| "ann".to_owned());
        Token {
            deployments: vec!["a".into()],
            ..Token::new("uid1".into(), "ci".into(), Digest::of(b"x"), owner, 0)
        }
    }

    fn hop(trusted: bool, version: Version) -> Hop {
        Hop {
            client: "10.0.0.1".parse().unwrap(),
            trusted,
            https: false,
            version,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_scan_bits_cover_the_hop_by_hop_list_and_do_not_overlap() {
        assert_eq!(HOP_MASK, (1 << HOP_BY_HOP.len()) - 1);
        const { assert!(HOP_MASK < HAS_AUTHORIZATION) };
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("x-end-to-end", "kept"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "kept");
        let mut h = headers(&[("te", "trailers")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn identity_headers_cannot_be_spoofed() {
        let cfg = forwarding();
        let mut h = headers(&[
            ("x-bentogate-token-uid", "forged"),
            ("x-bentogate-token-name", "forged"),
            ("x-bentogate-token-owner", "forged"),
            ("authorization", "Bearer secret"),
        ]);
        rewrite_request(&mut h, &cfg, &hop(false, Version::HTTP_11), None, None);
        assert!(h.get("x-bentogate-token-uid").is_none());
        assert!(h.get("x-bentogate-token-owner").is_none());
        assert!(h.get("authorization").is_none());

        let mut h = headers(&[("x-bentogate-token-uid", "forged")]);
        let t = token(OwnerKind::Personal);
        rewrite_request(&mut h, &cfg, &hop(false, Version::HTTP_11), None, Some(&t));
        assert_eq!(
            h.get_all("x-bentogate-token-uid")
                .iter()
                .collect::<Vec<_>>(),
            ["uid1"]
        );
        assert_eq!(h["x-bentogate-token-name"], "ci");
        assert_eq!(h["x-bentogate-token-owner"], "ann");
        let t = token(OwnerKind::Organization);
        rewrite_request(&mut h, &cfg, &hop(false, Version::HTTP_11), None, Some(&t));
        assert_eq!(h["x-bentogate-token-owner"], "organization");
    }

    #[test]
    fn writes_addresses_as_display_does() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.255",
            "1.20.199.9",
            "::1",
            "2001:db8::17",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), ip.to_string().as_str());
        }
    }

    #[test]
    fn sets_forwarding_headers() {
        let cfg = forwarding();
        let mut h = headers(&[("x-forwarded-for", "203.0.113.9"), ("via", "1.1 edge")]);
        rewrite_request(
            &mut h,
            &cfg,
            &hop(true, Version::HTTP_2),
            Some(HeaderValue::from_static("a.example.com")),
            None,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example.com");
        assert_eq!(
            h.get_all("via").iter().collect::<Vec<_>>(),
            ["1.1 edge", "2 bentogate"]
        );
    }

    #[test]
    fn client_forwarding_headers_count_only_from_trusted_proxies() {
        let cfg = forwarding();
        let sent = [
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
        ];
        let mut h = headers(&sent);
        rewrite_request(&mut h, &cfg, &hop(false, Version::HTTP_11), None, None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert!(h.get("forwarded").is_none());
        assert!(h.get("x-real-ip").is_none());
        let mut h = headers(&sent);
        rewrite_request(&mut h, &cfg, &hop(true, Version::HTTP_11), None, None);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(h["forwarded"], "for=203.0.113.9");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
    }

    #[test]
    fn lookalikes_and_credentials_are_removed() {
        let cfg = forwarding();
        let mut h = headers(&[
            ("x_bentogate_token_uid", "forged"),
            ("x-bentogate_token-owner", "forged"),
            ("x_forwarded_for", "203.0.113.9"),
            ("x_real_ip", "203.0.113.9"),
            ("x-yatai-api-token", "secret"),
            ("x_yatai_api_token", "secret"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("x_custom_header", "kept"),
        ]);
        rewrite_request(&mut h, &cfg, &hop(false, Version::HTTP_11), None, None);
        for gone in [
            "x_bentogate_token_uid",
            "x-bentogate_token-owner",
            "x_forwarded_for",
            "x_real_ip",
            "x-yatai-api-token",
            "x_yatai_api_token",
            "http2-settings",
        ] {
            assert!(h.get(gone).is_none(), "{gone} was forwarded");
        }
        assert_eq!(h["x_custom_header"], "kept");
    }
}
