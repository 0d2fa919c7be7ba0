//! Property tests (proptest) of the route table, the token codec and the request-path normalizer.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bentogate::config::Config;
use bentogate::metrics::Metrics;
use bentogate::path::normalize;
use bentogate::route::RouteTable;
use bentogate::token::{check, Secret, PREFIX};
use proptest::prelude::*;

/// A path prefix of 1 to 3 segments over a small alphabet (so prefixes often share segments).
fn prefix() -> impl Strategy<Value = String> {
    prop::collection::vec("[ab]{1,2}", 1..=3).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn table(yaml: &str) -> RouteTable {
    let c = Config::parse(yaml, "prop.yaml", Path::new("/")).unwrap();
    RouteTable::new(&c.deployments, &Metrics::new().unwrap(), 8)
}

fn deployments(prefixes: &[String], host: Option<&str>) -> String {
    let mut out = String::from("deployments:\n");
    for (i, p) in prefixes.iter().enumerate() {
        let hosts = host.map(|h| format!(", hosts: [{h}]")).unwrap_or_default();
        out.push_str(&format!(
            "  - {{ name: d{i}, path_prefix: \"{p}\", upstream: \"http://127.0.0.1:1\", policy: public{hosts} }}\n"
        ));
    }
    out
}

/// True when `prefix` covers `path` on a segment boundary.
fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Among the routes whose prefix covers the path, the longest wins; none covering: no route.
    #[test]
    fn the_longest_covering_prefix_wins(
        prefixes in prop::collection::hash_set(prefix(), 1..6),
        path in prop::collection::vec("[abc]{1,2}", 0..5).prop_map(|s| format!("/{}", s.join("/"))),
    ) {
        let prefixes: Vec<String> = prefixes.into_iter().collect();
        let t = table(&deployments(&prefixes, None));
        let want = prefixes.iter().filter(|p| covers(p, &path)).max_by_key(|p| p.len());
        let got = t.route(None, &path).map(|r| r.prefix.to_string());
        prop_assert_eq!(got.as_ref(), want);
    }

    /// Host matching ignores ASCII case and a port.
    #[test]
    fn host_match_ignores_case_and_port(
        host in "[a-z]{1,8}\\.example\\.com",
        upper in prop::collection::vec(any::<bool>(), 20),
        port in proptest::option::of(1u16..),
    ) {
        let t = table(&deployments(&["/".to_owned()], Some(&host)));
        let mut asked: String = host
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        if let Some(p) = port {
            asked = format!("{asked}:{p}");
        }
        prop_assert!(t.route(Some(&asked), "/x").is_some(), "{} did not match {}", asked, host);
        prop_assert!(t.route(Some("other.example.org"), "/x").is_none());
    }

    /// Two deployments with the same host and prefix are refused at load: no route is shadowed
    /// silently.
    #[test]
    fn a_duplicate_route_is_refused(p in prefix(), host in proptest::option::of("[a-z]{1,5}\\.test")) {
        let yaml = deployments(&[p.clone(), format!("{p}/")], host.as_deref());
        let e = Config::parse(&yaml, "prop.yaml", Path::new("/")).unwrap_err().to_string();
        prop_assert!(e.contains("deployments[1]"), "{}", e);
    }

    /// A value bentogate issues passes its own check; changing any one character after the
    /// prefix to another letter or digit fails it (a mistyped or forged value never reaches the
    /// cache).
    #[test]
    fn any_single_character_change_fails_the_checksum(
        position in PREFIX.len()..bentogate::token::VALUE_LEN,
        replacement in "[0-9A-Za-z]",
    ) {
        let secret = Secret::generate().unwrap();
        let value = secret.expose().as_bytes().to_vec();
        prop_assert!(check(&value).is_ok());
        let replacement = replacement.as_bytes()[0];
        prop_assume!(value[position] != replacement);
        let mut changed = value.clone();
        changed[position] = replacement;
        prop_assert!(check(&changed).is_err(), "changed at {}", position);
    }
}

/// A path from a hostile alphabet: separators, dots, escapes (whole, broken, double, either case),
/// parameters, backslashes, UTF-8; one in ten without the leading `/`.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "/", "/", ".", ".", "..", "%", "%2e", "%2E", "2e", "2f", "5c", "%2f", "%5C", "%25",
        "%41", "%6d", "%7e", "%3b", "%3B", "%c3%a9", "%C0%AE", "%ff", "%00", "%7F", "0", "9", "a",
        "f", "F", "A", "e", "E", "c", "x", ";", "\\", "~", "é", "€", "-", "_", ":", " ",
    ]);
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(piece, 0..12),
    )
        .prop_map(|(rooted, pieces)| {
            format!("{}{}", if rooted { "/" } else { "" }, pieces.concat())
        })
}

/// What an output of `normalize` satisfies; `Err` names the first broken invariant.
fn check_normalized(out: &str, merge_slashes: bool) -> Result<(), String> {
    if !out.starts_with('/') {
        return Err("does not start with /".into());
    }
    if !out.is_ascii() {
        return Err("not ASCII".into());
    }
    if merge_slashes && out.contains("//") {
        return Err("holds // with merge_slashes".into());
    }
    if out.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("holds a dot segment".into());
    }
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).ok_or("truncated escape")?;
        if !hex
            .iter()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
        {
            return Err(format!("escape not two uppercase hex digits at {i}"));
        }
        let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            return Err(format!("escaped unreserved character at {i}"));
        }
        if value == b'/' {
            return Err(format!("encoded / at {i}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// `normalize` never panics; what it returns is canonical and a fixed point.
    #[test]
    fn a_normalized_path_is_canonical_and_a_fixed_point(path in hostile_path(), merge in any::<bool>()) {
        if let Ok(out) = normalize(&path, merge) {
            if let Err(e) = check_normalized(&out, merge) {
                prop_assert!(false, "{:?} -> {:?}: {}", path, out, e);
            }
            let again = normalize(&out, merge);
            prop_assert_eq!(again.as_deref(), Ok(&*out), "{:?} not idempotent", path);
        }
    }

    /// Decoding the output never splits a segment: the output holds no encoded `/`, and a full
    /// percent-decode has exactly the output's segments, one for one.
    #[test]
    fn decoding_the_output_never_adds_a_separator(path in hostile_path(), merge in any::<bool>()) {
        if let Ok(out) = normalize(&path, merge) {
            prop_assert!(!out.contains("%2F") && !out.contains("%2f"), "{:?} -> {:?}", path, out);
            let decoded: Vec<u8> = percent_decode(out.as_bytes());
            let slashes = decoded.iter().filter(|&&b| b == b'/').count();
            prop_assert_eq!(slashes, out.matches('/').count(), "{:?} -> {:?}", path, out);
        }
    }
}

/// Every `%XX` decoded once (what a decoding upstream does).
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = match bytes.get(i + 1..i + 3) {
            Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                std::str::from_utf8(&[h, l])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            }
            _ => None,
        };
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}
