//! The route matcher (host and path) over a fixed table: any host and path bytes.
#![no_main]
use std::sync::OnceLock;

use bentogate::config::Config;
use bentogate::metrics::Metrics;
use bentogate::route::RouteTable;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = "deployments:
  - { name: a, upstream: \"http://127.0.0.1:1\", policy: public }
  - { name: b, path_prefix: /api, upstream: \"http://127.0.0.1:1\", policy: public }
  - { name: c, hosts: [x.example.com], path_prefix: /api/v1, upstream: \"http://127.0.0.1:1\", policy: public }
  - { name: d, hosts: [x.example.com, y.example.com], upstream: \"http://127.0.0.1:1\", policy: public }
";

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let c = Config::parse(CONFIG, "fuzz", std::path::Path::new("/")).expect("fixed config");
        RouteTable::new(&c.deployments, &Metrics::new().expect("metrics"), 8)
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (host, path) = data.split_at(split);
    let (Ok(host), Ok(path)) = (std::str::from_utf8(host), std::str::from_utf8(path)) else {
        return;
    };
    let host = (!host.is_empty()).then_some(host);
    if let Some(route) = table().route(host, path) {
        // A prefix match is on a segment boundary.
        let p = &*route.prefix;
        assert!(p == "/" || path == p || path.starts_with(&format!("{p}/")), "{p} matched {path}");
    }
});
