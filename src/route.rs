//! The route table: Host header, then the longest path prefix.
//!
//! Owns matching a request to a deployment. Routes that name hosts are tried first for their
//! hosts; routes without hosts (the sidecar case) match any host after that. Prefixes match on
//! segment boundaries (`/api` matches `/api` and `/api/x`, not `/apix`); a `;` ends a segment
//! too (`/api;v=1` is under `/api`), because upstreams that read path parameters (Tomcat,
//! Spring) route it there. Paths arrive normalized ([`crate::path`]). Matching borrows the
//! request and allocates nothing.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::config::{Deployment, Policy, Upstream};
use crate::metrics::{Metrics, RouteMetrics};

/// One deployment as the request path needs it.
pub struct Route {
    /// The deployment name (what tokens name).
    pub name: std::sync::Arc<str>,
    /// Path prefix this route was matched by.
    pub prefix: Box<str>,
    /// Who passes.
    pub policy: Policy,
    /// Where requests go.
    pub upstream: Upstream,
    /// Exact paths that pass without a token.
    pub public_paths: Box<[Box<str>]>,
    /// Pre-resolved metric handles.
    pub metrics: RouteMetrics,
    /// Requests in flight to the upstream (bounds its connections); one per route.
    pub slots: Arc<Semaphore>,
    /// The deployment's position in the configuration: how the upstream client finds its pool.
    pub index: usize,
    /// WebSocket upgrades are tunnelled (the deployment's `websocket`, on by default).
    pub websocket: bool,
}

impl Route {
    /// True when `path` is one of the route's public paths.
    #[inline]
    pub fn is_public_path(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| &**p == path)
    }
}

/// Routes by host, each list ordered longest prefix first.
pub struct RouteTable {
    by_host: HashMap<Box<str>, Box<[Arc<Route>]>>,
    any_host: Box<[Arc<Route>]>,
}

/// Longest host name (RFC 1035: 253 characters) normalized without allocating.
const MAX_HOST: usize = 256;

impl RouteTable {
    /// Compiles the deployments; metric handles are resolved here, once.
    /// `max_per_upstream` bounds each route's requests in flight to its upstream.
    pub fn new(
        deployments: &[Deployment],
        metrics: &Metrics,
        max_per_upstream: usize,
    ) -> RouteTable {
        let mut by_host: HashMap<Box<str>, Vec<Arc<Route>>> = HashMap::new();
        let mut any_host = Vec::new();
        for (index, d) in deployments.iter().enumerate() {
            let route = Arc::new(Route {
                index,
                name: d.name.as_str().into(),
                prefix: d.path_prefix.as_str().into(),
                policy: d.policy,
                upstream: d.upstream.clone(),
                public_paths: d.public_paths.iter().map(|p| p.as_str().into()).collect(),
                metrics: metrics.for_route(&d.name),
                slots: Arc::new(Semaphore::new(max_per_upstream)),
                websocket: d.websocket,
            });
            if d.hosts.is_empty() {
                any_host.push(route);
            } else {
                for h in &d.hosts {
                    by_host
                        .entry(h.as_str().into())
                        .or_default()
                        .push(Arc::clone(&route));
                }
            }
        }
        let longest_first = |mut v: Vec<Arc<Route>>| {
            v.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
            v.into_boxed_slice()
        };
        RouteTable {
            by_host: by_host
                .into_iter()
                .map(|(h, v)| (h, longest_first(v)))
                .collect(),
            any_host: longest_first(any_host),
        }
    }

    /// The route for a request's host (with or without port) and path.
    #[inline]
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let mut buf = [0u8; MAX_HOST];
        if let Some(routes) = host
            .and_then(|h| normalize_host(h, &mut buf))
            .and_then(|h| self.by_host.get(h))
        {
            if let Some(r) = routes.iter().find(|r| prefix_matches(&r.prefix, path)) {
                return Some(r);
            }
        }
        self.any_host
            .iter()
            .find(|r| prefix_matches(&r.prefix, path))
    }
}

#[inline]
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/' | b';')))
}

/// Strips the port and a trailing dot, and lower-cases into `buf` only when needed.
fn normalize_host<'a>(host: &'a str, buf: &'a mut [u8; MAX_HOST]) -> Option<&'a str> {
    let name = if host.starts_with('[') {
        &host[..host.find(']').map_or(host.len(), |i| i + 1)]
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(name);
    }
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn table() -> RouteTable {
        let text = r#"
deployments:
  - { name: any-root, upstream: "http://127.0.0.1:1", policy: public }
  - { name: any-api, path_prefix: /api, upstream: "http://127.0.0.1:1", policy: protected }
  - { name: a-root, hosts: [a.example.com], upstream: "http://127.0.0.1:1", policy: protected }
  - { name: a-v1, hosts: [a.example.com], path_prefix: /v1/, upstream: "http://127.0.0.1:1", policy: protected }
  - { name: b-v2, hosts: [b.example.com], path_prefix: /v2, upstream: "http://127.0.0.1:1", policy: protected }
"#;
        let c = Config::parse(text, "t", Path::new(".")).unwrap();
        RouteTable::new(&c.deployments, &Metrics::new().unwrap(), 8)
    }

    fn name(t: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        t.route(host, path).map(|r| r.name.to_string())
    }

    #[test]
    fn host_then_longest_prefix() {
        let t = table();
        assert_eq!(
            name(&t, Some("a.example.com"), "/v1/x").as_deref(),
            Some("a-v1")
        );
        assert_eq!(
            name(&t, Some("a.example.com"), "/v1").as_deref(),
            Some("a-v1")
        );
        assert_eq!(
            name(&t, Some("a.example.com"), "/v10").as_deref(),
            Some("a-root")
        );
        assert_eq!(
            name(&t, Some("a.example.com"), "/v1;jsessionid=x/y").as_deref(),
            Some("a-v1")
        );
        assert_eq!(
            name(&t, Some("A.Example.COM:8080"), "/").as_deref(),
            Some("a-root")
        );
        assert_eq!(
            name(&t, Some("a.example.com."), "/").as_deref(),
            Some("a-root")
        );
    }

    #[test]
    fn falls_back_to_any_host_routes() {
        let t = table();
        assert_eq!(
            name(&t, Some("b.example.com"), "/v2/y").as_deref(),
            Some("b-v2")
        );
        assert_eq!(
            name(&t, Some("b.example.com"), "/api/y").as_deref(),
            Some("any-api")
        );
        assert_eq!(
            name(&t, Some("b.example.com"), "/apix").as_deref(),
            Some("any-root")
        );
        assert_eq!(name(&t, None, "/api").as_deref(), Some("any-api"));
        assert_eq!(name(&t, Some("[::1]:80"), "/").as_deref(), Some("any-root"));
    }

    #[test]
    fn no_route_without_a_catch_all() {
        let text = "deployments:\n  - { name: a, hosts: [a.test], upstream: \"http://127.0.0.1:1\", policy: public }\n";
        let c = Config::parse(text, "t", Path::new(".")).unwrap();
        let t = RouteTable::new(&c.deployments, &Metrics::new().unwrap(), 8);
        assert!(t.route(Some("b.test"), "/").is_none());
        assert!(t.route(None, "/").is_none());
        assert!(t.route(Some("a.test"), "/").is_some());
    }
}
