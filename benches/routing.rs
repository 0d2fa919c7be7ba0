//! Route matching: host + longest prefix, with 10 and 10,000 routes.
//!
//! Run: `cargo bench --bench routing`
//! Last result (2026-11-28, third session): 10 routes 38 ns (host hit) / 36 ns (any-host
//! fallback); 10,000 routes 38 ns / 36 ns. BENCHMARKS.md has the rest.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use bentogate::config::Config;
use bentogate::metrics::Metrics;
use bentogate::route::RouteTable;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

/// `n` deployments on `n / 2` hosts, two prefixes each, plus a catch-all for any host.
fn table(n: usize) -> RouteTable {
    let mut yaml = String::from(
        "deployments:\n  - { name: any, upstream: \"http://127.0.0.1:1\", policy: protected }\n",
    );
    for i in 0..n {
        let prefix = if i % 2 == 0 { "/v1" } else { "/v2/predict" };
        yaml.push_str(&format!(
            "  - {{ name: d{i}, hosts: [h{}.example.com], path_prefix: {prefix}, upstream: \"http://127.0.0.1:1\", policy: protected }}\n",
            i / 2
        ));
    }
    let config = Config::parse(&yaml, "bench", Path::new(".")).unwrap();
    RouteTable::new(&config.deployments, &Metrics::new().unwrap(), 1024)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for n in [10usize, 10_000] {
        let t = table(n);
        let host = format!("h{}.example.com", n / 4);
        assert_eq!(
            &*t.route(Some(&host), "/v2/predict/x").unwrap().name,
            format!("d{}", 2 * (n / 4) + 1)
        );
        g.bench_function(format!("{n}_routes_host_hit"), |b| {
            b.iter(|| t.route(black_box(Some(&host)), black_box("/v2/predict/x")))
        });
        g.bench_function(format!("{n}_routes_any_host_fallback"), |b| {
            b.iter(|| t.route(black_box(Some("other.example.com")), black_box("/v3")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
