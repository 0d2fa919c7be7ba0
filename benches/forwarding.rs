//! Header rewriting for forwarding, beside the cost of the header clone it starts from.
//!
//! Run: `cargo bench --bench forwarding`
//! Last result (2026-11-28, third session): clone_only 126 ns, rewrite_request 1.25 us, rewrite_response 48 ns.
//! The batched setup's page faults weigh on these; BENCHMARKS.md has the rest.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use bentogate::config::Config;
use bentogate::proxy::headers::{rewrite_request, rewrite_response, Hop};
use bentogate::token::{Digest, Token};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderValue, Version};

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "summarize.example.com"),
        ("user-agent", "bentoml/1.4.40"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("content-length", "512"),
        (
            "authorization",
            "Bearer bgt_k4x8KoeVTaod7aVVwIGOX1Gp9BTPrk2VOLSf",
        ),
        ("connection", "keep-alive"),
        ("x-request-id", "7f1c2a9e-0c4b-4b8e-9d0e-2f7f1d6f9a11"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn bench(c: &mut Criterion) {
    let config = Config::parse(
        "deployments:\n  - { name: summarize, upstream: \"http://127.0.0.1:1\", policy: protected }\n",
        "bench",
        Path::new("."),
    )
    .unwrap();
    let token = Token {
        deployments: vec!["summarize".into()],
        ..Token::new(
            "9b78a8210902e3093fe2".into(),
            "ci".into(),
            Digest::of(b"x"),
            None,
            0,
        )
    };
    let base = request_headers();
    let hop = Hop {
        client: "10.1.2.3".parse().unwrap(),
        trusted: false,
        https: false,
        version: Version::HTTP_11,
    };
    let host = Some(HeaderValue::from_static("summarize.example.com"));
    let mut g = c.benchmark_group("headers");
    g.bench_function("clone_only", |b| b.iter(|| black_box(base.clone())));
    g.bench_function("rewrite_request", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| rewrite_request(h, &config.forwarding, &hop, host.clone(), Some(&token)),
            BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    response.insert("content-type", HeaderValue::from_static("application/json"));
    response.insert("content-length", HeaderValue::from_static("42"));
    g.bench_function("rewrite_response", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |h| rewrite_response(h, Version::HTTP_11),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
