//! The token validator: a bounded moka cache in front of a token source.
//!
//! Owns the decision "is this value a live token, and which". In order: shape and checksum
//! (malformed values never reach the cache), SHA-256 digest, cache lookup, source lookup on a miss
//! (concurrent misses of one digest share one lookup), then expiry against the clock. A hit costs
//! no I/O, no lock shared by all cores and no allocation (a test counts allocations; moka's own
//! housekeeping, which it runs inline every 64 reads, allocates now and then).
//!
//! Freshness: every entry carries the source generation it was read under; an entry from an older
//! generation is a miss, so a revocation is seen as soon as the source has reloaded. Positive
//! entries live at most the cache TTL and never past their token's expiry; unknown digests are
//! cached for the negative TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use crate::clock::{self, UnixSeconds};
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
}

struct EntryExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl EntryExpiry {
    fn life(&self, value: &Entry) -> Duration {
        match &value.token {
            None => self.negative_ttl,
            Some(t) => match t.expired_at {
                Some(at) => {
                    let left = u64::try_from(at.saturating_sub(clock::now())).unwrap_or(0);
                    self.ttl.min(Duration::from_secs(left))
                }
                None => self.ttl,
            },
        }
    }
}

impl Expiry<Digest, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Digest,
        value: &Entry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.life(value))
    }

    /// A refreshed entry (a newer generation replacing an older one) gets its own life; moka's
    /// default would keep the old entry's, e.g. a negative entry's 5 s for a positive one.
    fn expire_after_update(
        &self,
        _key: &Digest,
        value: &Entry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.life(value))
    }
}

/// The cached validator shared by every request.
pub struct Validator {
    cache: Cache<Digest, Entry, foldhash::fast::RandomState>,
    source: Arc<FileSource>,
    metrics: Arc<Metrics>,
}

impl Validator {
    /// Builds the cache described by `config` in front of `source`.
    pub fn new(config: &TokensConfig, source: Arc<FileSource>, metrics: Arc<Metrics>) -> Validator {
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(EntryExpiry {
                ttl: config.cache_ttl,
                negative_ttl: config.negative_ttl,
            })
            // Keys are SHA-256 outputs: a fast seeded hash suffices, and SipHash would cost more
            // than the lookup itself.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Validator {
            cache,
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
            Some(e) if e.generation == generation => {
                self.metrics.cache_hits.inc();
                e
            }
            _ => {
                self.metrics.cache_misses.inc();
                let source = &self.source;
                let metrics = &self.metrics;
                // Concurrent misses of one digest wait for this one lookup (moka coalesces).
                self.cache
                    .entry(digest)
                    .or_insert_with_if(
                        || {
                            metrics.source_lookups.inc();
                            Entry {
                                token: source.lookup(&digest),
                                generation,
                            }
                        },
                        |old| old.generation != generation,
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
