//! The `deployments:` section: names, hosts, path prefixes, upstreams and policies.
//!
//! Part of the [`Resolver`]: deployment names are unique, no two deployments match the same host
//! and prefix, and configured paths are in the normalized form requests are matched in (a path in
//! another spelling would never match). Errors point at the deployment's own lines.

use std::str::FromStr;

use http::uri::Scheme;
use http::Uri;

use super::raw::{RawDeployment, RawPolicy};
use super::resolve::{find_line, Resolver};
use super::{ConfigError, Deployment, Policy, Upstream, UpstreamProtocol};
use crate::token::Scopes;

impl Resolver<'_> {
    pub(super) fn deployments(
        &self,
        raw: Vec<RawDeployment>,
        merge_slashes: bool,
    ) -> Result<Vec<Deployment>, ConfigError> {
        if raw.is_empty() {
            return Err(self.error(
                "deployments",
                &["deployments:"],
                "at least one deployment is needed; see config.example.yaml",
            ));
        }
        let mut out: Vec<Deployment> = Vec::with_capacity(raw.len());
        for (i, d) in raw.into_iter().enumerate() {
            let name_line = format!("name: {}", d.name);
            let at = |field: &str| -> Vec<String> { vec![name_line.clone(), format!("{field}:")] };
            let err = |field: &str, message: String| {
                let near = at(field);
                let near: Vec<&str> = near.iter().map(String::as_str).collect();
                let mut e = self.error(format!("deployments[{i}].{field}"), &near, message);
                // An omitted key has no line of its own: point at the deployment's name.
                if let ConfigError::Invalid {
                    line: line @ None, ..
                } = &mut e
                {
                    *line = find_line(self.text, &near[..1]);
                }
                e
            };
            if d.name.is_empty()
                || !d
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(err(
                    "name",
                    format!(
                        "`{}` is not a deployment name; use letters, digits, `-`, `_` and `.`",
                        d.name
                    ),
                ));
            }
            if out.iter().any(|o| o.name == d.name) {
                return Err(err(
                    "name",
                    format!(
                        "`{}` is used twice; deployment names must be unique",
                        d.name
                    ),
                ));
            }
            let mut hosts = Vec::with_capacity(d.hosts.len());
            for h in &d.hosts {
                let h = h.to_ascii_lowercase();
                if h.is_empty() || h.contains(['/', ' ', ':']) {
                    return Err(err(
                        "hosts",
                        format!("`{h}` is not a host name; write it without scheme, port or path"),
                    ));
                }
                hosts.push(h);
            }
            let path_prefix = normalize_prefix(d.path_prefix.as_deref().unwrap_or("/"))
                .ok_or_else(|| err("path_prefix", "must start with `/`".to_owned()))?;
            // Requests are matched after normalization: a prefix in another spelling would
            // never match, or match what it did not mean to.
            if let Some(fixed) = not_normalized(&path_prefix, merge_slashes) {
                return Err(err("path_prefix", fixed));
            }
            for o in &out {
                let same_hosts = (o.hosts.is_empty() && hosts.is_empty())
                    || o.hosts.iter().any(|h| hosts.contains(h));
                if same_hosts && o.path_prefix == path_prefix {
                    return Err(err(
                        "path_prefix",
                        format!("deployment `{}` already matches the same host and prefix `{path_prefix}`; give one a different path_prefix or hosts", o.name),
                    ));
                }
            }
            let upstream =
                parse_upstream(&d.upstream, d.upstream_protocol).map_err(|m| err("upstream", m))?;
            let policy = match (d.policy, d.scopes.is_empty()) {
                (RawPolicy::Developer, true) => {
                    return Err(err("scopes", "policy `developer` needs the scopes it requires, e.g. `scopes: [read_cluster]`".to_owned()))
                }
                (RawPolicy::Developer, false) => Policy::Developer(Scopes::from_slice(&d.scopes)),
                (_, false) => {
                    return Err(err("scopes", "scopes apply only to policy `developer`; remove them or change the policy".to_owned()))
                }
                (RawPolicy::Public, true) => Policy::Public,
                (RawPolicy::Protected, true) => Policy::Protected,
                (RawPolicy::Monitoring, true) => Policy::Monitoring,
            };
            for p in &d.public_paths {
                if !p.starts_with('/') || p.contains(['?', '#']) {
                    return Err(err(
                        "public_paths",
                        format!("`{p}` must be an exact path starting with `/`, without query"),
                    ));
                }
                if let Some(fixed) = not_normalized(p, merge_slashes) {
                    return Err(err("public_paths", fixed));
                }
            }
            out.push(Deployment {
                name: d.name,
                hosts,
                path_prefix,
                upstream,
                policy,
                public_paths: d.public_paths,
                websocket: d.websocket.unwrap_or(true),
            });
        }
        Ok(out)
    }
}

/// Why a configured path would never be seen in a request (requests are normalized first), with
/// the spelling to write instead; none when it is already normalized.
fn not_normalized(path: &str, merge_slashes: bool) -> Option<String> {
    match crate::path::normalize(path, merge_slashes) {
        Ok(p) if p == path => None,
        Ok(p) => Some(format!(
            "`{path}` is not in normalized form, so no request would match it; write `{p}`"
        )),
        Err(e) => Some(format!("`{path}` could never be requested: {e}")),
    }
}

/// `/api/` and `/api` are the same prefix; `/` stays `/`.
fn normalize_prefix(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let trimmed = p.trim_end_matches('/');
    Some(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

fn parse_upstream(text: &str, protocol: UpstreamProtocol) -> Result<Upstream, String> {
    let uri = Uri::from_str(text)
        .map_err(|e| format!("`{text}` is not a URL ({e}); write it like http://127.0.0.1:3000"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("`{text}` needs the scheme http:// or https://")),
    };
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{text}` has no host; write it like http://127.0.0.1:3000"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the upstream URL are not supported; remove `user@`".to_owned());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{text}` must have no path or query; requests keep their own path"
        ));
    }
    Ok(Upstream {
        scheme,
        authority,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_support::{parse, MINIMAL};
    use super::super::Config;
    use super::*;

    #[test]
    fn semantic_errors_point_at_the_deployment() {
        let text = "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n  - name: b\n    upstream: http://127.0.0.1:3000\n    policy: developer\n    path_prefix: /b\n";
        let e = parse(text).unwrap_err().to_string();
        assert_eq!(
            e,
            "test.yaml:5: deployments[1].scopes: policy `developer` needs the scopes it requires, e.g. `scopes: [read_cluster]`"
        );
        let dup = "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n  - name: b\n    upstream: http://127.0.0.1:3000\n    policy: public\n";
        let e = parse(dup).unwrap_err().to_string();
        assert!(
            e.starts_with("test.yaml:5: deployments[1].path_prefix:"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_upstreams() {
        for (u, want) in [
            ("ftp://x", "http://"),
            ("http://127.0.0.1:3000/base", "no path"),
            ("not a url", "not a URL"),
            ("https://u@x", "credentials"),
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:3000", u);
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains("deployments[0].upstream") && e.contains(want),
                "{u}: {e}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_routes_and_names() {
        let dup_name = format!("{MINIMAL}  - name: a\n    upstream: http://127.0.0.1:3001\n    policy: public\n    path_prefix: /x\n");
        assert!(parse(&dup_name)
            .unwrap_err()
            .to_string()
            .contains("used twice"));
        let dup_route = format!("{MINIMAL}  - name: b\n    upstream: http://127.0.0.1:3001\n    policy: public\n    path_prefix: /\n");
        assert!(parse(&dup_route)
            .unwrap_err()
            .to_string()
            .contains("same host and prefix"));
    }

    #[test]
    fn configured_paths_must_be_in_normalized_form() {
        for (extra, fix) in [
            ("    path_prefix: /%6detrics\n", "write `/metrics`"),
            ("    public_paths: [/a/../healthz]\n", "write `/healthz`"),
            ("    public_paths: [//healthz]\n", "write `/healthz`"),
            (
                "    public_paths: [\"/a%2fb\"]\n",
                "could never be requested",
            ),
        ] {
            let text = format!(
                "deployments:\n  - name: a\n    upstream: http://127.0.0.1:3000\n    policy: protected\n{extra}"
            );
            let e = Config::parse(&text, "t.yaml", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(e.contains(fix), "{e}");
        }
    }

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix("/api/").as_deref(), Some("/api"));
        assert_eq!(normalize_prefix("/").as_deref(), Some("/"));
        assert_eq!(normalize_prefix("api"), None);
    }
}
