//! The auth hot path on a cache hit, beside the floor (a bare `HashMap` lookup).
//!
//! Run: `cargo bench --bench auth_hot_path`
//!
//! Last result (2026-11-28, third session, the project's 2-core shared VM, release; medians of
//! `--measurement-time 3`; BENCHMARKS.md has all and the earlier machines' figures):
//!   auth/bare_hashmap_lookup   24 ns      HashMap<[u8; 32], Arc<Token>> get + Arc clone: the floor
//!   auth/bearer_parse          16 ns
//!   auth/format_and_checksum   42 ns
//!   auth/sha256_digest         68 ns      SHA-NI
//!   auth/validator_hit         200 ns     check + digest + moka get
//!   auth/validator_negative_hit      216 ns
//!   auth/validator_malformed_reject   37 ns
//!   auth/whole_auth_path       219 ns     parse + validator hit + policy
//!   validator_hit_with_tokens  10: 199 ns, 100,000: 378 ns, 1,000,000: 442 ns
//!     beside bare_hashmap_N    10: 23 ns,  100,000: 33 ns,  1,000,000: 50 ns
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bentogate::auth::{self, Credentials};
use bentogate::config::{Config, Policy};
use bentogate::metrics::Metrics;
use bentogate::store::FileSource;
use bentogate::token::{self, Digest, Secret, Token};
use bentogate::validator::{Validator, Verdict};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

/// Polls a future that never waits (a cache hit) to completion, without a runtime's overhead.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cache hit must not wait"),
    }
}

fn record(digest: Digest) -> Token {
    Token {
        deployments: vec!["summarize".into()],
        ..Token::new("u1".into(), "bench".into(), digest, None, 0)
    }
}

/// A validator with cache `capacity` over the token file `dir/tokens.yaml`.
fn validator_over(dir: &std::path::Path, capacity: usize) -> Validator {
    let config = Config::parse(
        &format!("tokens: {{cache: {{capacity: {capacity}}}}}\ndeployments:\n  - {{ name: summarize, upstream: \"http://127.0.0.1:1\", policy: protected }}\n"),
        "bench",
        dir,
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let source = Arc::new(FileSource::open(&config.tokens.file, metrics.clone()).unwrap());
    Validator::new(&config.tokens, source, metrics)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    let secret = Secret::generate().unwrap();
    bentogate::store::file::update(&file, |f| {
        f.tokens.push(record(secret.digest()));
        Ok(())
    })
    .unwrap();
    let validator = validator_over(dir.path(), 100_000);
    let value = secret.expose().as_bytes().to_vec();
    assert!(matches!(
        ready(validator.validate(&value, 0)),
        Verdict::Valid(_)
    ));
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {}", secret.expose())).unwrap(),
    );

    let mut map: HashMap<[u8; 32], Arc<Token>> = HashMap::new();
    map.insert(secret.digest().0, Arc::new(record(secret.digest())));
    let key = secret.digest().0;

    let mut g = c.benchmark_group("auth");
    g.bench_function("bare_hashmap_lookup", |b| {
        b.iter(|| map.get(black_box(&key)).cloned())
    });
    g.bench_function("bearer_parse", |b| {
        b.iter(|| auth::credentials(black_box(&headers)))
    });
    g.bench_function("format_and_checksum", |b| {
        b.iter(|| token::check(black_box(&value)))
    });
    g.bench_function("sha256_digest", |b| {
        b.iter(|| Digest::of(black_box(&value)))
    });
    g.bench_function("validator_hit", |b| {
        b.iter(|| ready(validator.validate(black_box(&value), 0)))
    });
    let unknown = Secret::generate().unwrap().expose().as_bytes().to_vec();
    assert!(matches!(
        ready(validator.validate(&unknown, 0)),
        Verdict::Unknown
    ));
    g.bench_function("validator_negative_hit", |b| {
        b.iter(|| ready(validator.validate(black_box(&unknown), 0)))
    });
    let malformed = b"bgt_000000000000000000000000000000AAAAAA".to_vec();
    g.bench_function("validator_malformed_reject", |b| {
        b.iter(|| ready(validator.validate(black_box(&malformed), 0)))
    });
    g.bench_function("whole_auth_path", |b| {
        b.iter(|| {
            let Credentials::Bearer(v) = auth::credentials(black_box(&headers)) else {
                unreachable!()
            };
            match ready(validator.validate(v, 0)) {
                Verdict::Valid(t) => auth::permits(Policy::Protected, "summarize", &t),
                _ => false,
            }
        })
    });
    g.finish();
}

/// A validator hit with `n` tokens in the file and in the cache: latency must stay flat.
fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("validator_hit_with_tokens");
    g.sample_size(30);
    for n in [10usize, 100_000, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.yaml");
        let secrets: Vec<Secret> = (0..n).map(|_| Secret::generate().unwrap()).collect();
        let tokens = bentogate::store::TokenFile {
            tokens: secrets
                .iter()
                .enumerate()
                .map(|(i, s)| Token {
                    uid: format!("u{i}"),
                    ..record(s.digest())
                })
                .collect(),
            ..Default::default()
        };
        std::fs::write(&file, tokens.to_text().unwrap()).unwrap();
        drop(tokens);
        let validator = validator_over(dir.path(), n);
        for s in &secrets {
            ready(validator.validate(s.expose().as_bytes(), 0));
        }
        validator.cached_entries();
        // Rotate over 1,024 tokens spread through the set, so no single entry stays hot.
        let sample: Vec<&[u8]> = (0..1024)
            .map(|i| secrets[i * n / 1024 % n].expose().as_bytes())
            .collect();
        // The floor at this size: a bare HashMap probe over the same digests (memory latency).
        let map: HashMap<[u8; 32], Arc<Token>> = secrets
            .iter()
            .map(|s| (s.digest().0, Arc::new(record(s.digest()))))
            .collect();
        let keys: Vec<[u8; 32]> = (0..1024)
            .map(|i| secrets[i * n / 1024 % n].digest().0)
            .collect();
        let mut j = 0;
        g.bench_function(format!("bare_hashmap_{n}"), |b| {
            b.iter(|| {
                j = (j + 1) % keys.len();
                map.get(black_box(&keys[j])).cloned()
            })
        });
        drop(map);
        let mut i = 0;
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % sample.len();
                ready(validator.validate(black_box(sample[i]), 0))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, scaling);
criterion_main!(benches);
