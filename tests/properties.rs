//! Property tests (proptest) of the route table and the token codec.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use bentogate::config::Config;
use bentogate::metrics::Metrics;
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
