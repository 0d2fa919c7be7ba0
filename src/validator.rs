//! The token validator: a bounded moka cache in front of a token source.
//!
//! Owns the decision "is this value a live token, and which". In order: shape and checksum
//! (malformed values never reach the cache), SHA-256 digest, cache lookup, source lookup on a miss
//! (concurrent misses of one digest share one lookup), then expiry against the clock. A hit costs
//! no I/O, no lock shared by all cores and no allocation (a test counts allocations; moka's own
//! housekeeping, which it runs inline every 64 reads, allocates now and then).
//!
//! Freshness: every entry carries the source generation it was read under; an entry from an older
//! generation is a miss, so a revocation is seen as soon as the source has reloaded. Entries live
//! at most the cache TTL (one cache-wide TTL: moka's per-entry expiry costs a fifth of a hit); an
//! unknown digest's entry is stale after the negative TTL, checked on the hit; a token past its
//! expiry is refused on every request whatever the cache holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::clock::UnixSeconds;
use crate::config::TokensConfig;
use crate::metrics::Metrics;
use crate::store::FileSource;
use crate::token::{self, Digest, Token};

/// What the validator concluded about a presented value.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A live token; the policy decides whether it reaches this route.
    Valid(Arc<Token>),
    /// Refused on shape or checksum, before any lookup.
    Malformed,
    /// Well-formed but not a live token (never issued, deleted, or its owner left).
    Unknown,
    /// A real token past its expiry.
    Expired,
}

#[derive(Clone)]
struct Entry {
    token: Option<Arc<Token>>,
    generation: u64,
    /// For an unknown digest, when the negative answer stops counting.
    stale_after: Option<Instant>,
}

impl Entry {
    /// True while the entry may answer for the source at `generation`.
    #[inline]
    fn is_fresh(&self, generation: u64) -> bool {
        self.generation == generation && self.stale_after.is_none_or(|at| Instant::now() < at)
    }
}

/// The cached validator shared by every request.
pub struct Validator {
    cache: Cache<Digest, Entry, foldhash::fast::RandomState>,
    negative_ttl: Duration,
    source: Arc<FileSource>,
    metrics: Arc<Metrics>,
}

impl Validator {
    /// Builds the cache described by `config` in front of `source`.
    pub fn new(config: &TokensConfig, source: Arc<FileSource>, metrics: Arc<Metrics>) -> Validator {
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(config.cache_ttl)
            // Keys are SHA-256 outputs: a fast seeded hash suffices, and SipHash would cost more
            // than the lookup itself.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Validator {
            cache,
            negative_ttl: config.negative_ttl,
            source,
            metrics,
        }
    }

    /// Judges a presented value at time `now`. Async because remote sources will await their
    /// lookups on a miss; with the file source it never waits.
    pub async fn validate(&self, value: &[u8], now: UnixSeconds) -> Verdict {
        if token::check(value).is_err() {
            return Verdict::Malformed;
        }
        let digest = Digest::of(value);
        let generation = self.source.generation();
        let entry = match self.cache.get(&digest) {
            Some(e) if e.is_fresh(generation) => {
                self.metrics.cache_hits.inc();
                e
            }
            _ => {
                self.metrics.cache_misses.inc();
                let source = &self.source;
                let metrics = &self.metrics;
                let negative_ttl = self.negative_ttl;
                // Concurrent misses of one digest wait for this one lookup (moka coalesces).
                self.cache
                    .entry(digest)
                    .or_insert_with_if(
                        || {
                            metrics.source_lookups.inc();
                            let token = source.lookup(&digest);
                            let stale_after =
                                token.is_none().then(|| Instant::now() + negative_ttl);
                            Entry {
                                token,
                                generation,
                                stale_after,
                            }
                        },
                        |old| !old.is_fresh(generation),
                    )
                    .into_value()
            }
        };
        match entry.token {
            None => Verdict::Unknown,
            Some(t) if t.is_expired(now) => Verdict::Expired,
            Some(t) => Verdict::Valid(t),
        }
    }

    /// Entries currently cached, after applying pending evictions (for /metrics, not per request).
    pub fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// The source behind the cache.
    pub fn source(&self) -> &Arc<FileSource> {
        &self.source
    }
}
