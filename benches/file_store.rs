//! The file source's per-change work at 100,000 tokens, without the disk: copying the index,
//! writing the file into a sink, a page of the listing (first and at an offset), a search.
//!
//! Run: `cargo bench --bench file_store`. BENCHMARKS.md (Control plane at scale) has the results.
#![allow(missing_docs, clippy::unwrap_used)]

use bentogate::store::index::Index;
use bentogate::store::records::{PageQuery, PageStart, Search, Visibility};
use bentogate::store::TokenFile;
use bentogate::token::{Digest, Token};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const TOKENS: usize = 100_000;

fn index() -> Index {
    let mut f = TokenFile::default();
    for i in 0..TOKENS {
        f.tokens.push(Token {
            deployments: vec!["alpha".to_owned()],
            ..Token::new(
                format!("{:020x}", i * 7_919),
                format!("bench{i}"),
                Digest::of(format!("t{i}").as_bytes()),
                None,
                1_735_689_600 + i as i64 * 31,
            )
        });
    }
    Index::new(f, 0)
}

fn bench(c: &mut Criterion) {
    let index = index();
    let mut g = c.benchmark_group("file_store_100k");
    g.sample_size(20);
    g.bench_function("copy_index", |b| b.iter(|| black_box(index.clone())));
    g.bench_function("write_file", |b| {
        b.iter(|| index.write_to(&mut std::io::sink()).unwrap())
    });
    let query = |start, search: Option<&str>| PageQuery {
        visibility: Visibility::All,
        search: search.and_then(Search::new),
        start,
        count: 100,
    };
    let first = query(PageStart::Offset(0), None);
    g.bench_function("page_first", |b| b.iter(|| black_box(index.page(&first))));
    let middle = query(PageStart::Offset(TOKENS / 2), None);
    g.bench_function("page_at_half", |b| {
        b.iter(|| black_box(index.page(&middle)))
    });
    let search = query(PageStart::Offset(0), Some("BENCH4242"));
    assert_eq!(index.page(&search).total, 11);
    g.bench_function("search", |b| b.iter(|| black_box(index.page(&search))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
