//! The token validator: a bounded moka cache in front of a remote token source, the index
//! itself for a source held in memory.
//!
//! Owns the decision "is this value a live token, and which". In order: shape and checksum
//! (malformed values never reach the cache), SHA-256 digest, cache lookup, source lookup on a miss
//! (concurrent misses of one digest share one lookup), then expiry against the clock. A hit costs
//! no I/O, no lock shared by all cores and no allocation (a test counts allocations; moka's own
//! housekeeping, which it runs inline every 64 reads on the remote path, allocates now and then).
//!
//! The data plane asks in two steps, [`Validator::probe`] then, for a miss and after the failure
//! throttle, [`Validator::settle`], with the digest computed once. A source held in memory (the
//! file source) is not cached at all: its index, a flat read-mostly map, is the cache. One probe
//! of it answers every value, live or unknown, with no insert, no eviction and no clock read, so
//! the cost per request is the same at a million tokens as at ten (the moka cache in front of it
//! held a second copy of the hot set and churned once the set outgrew its capacity). Found
//! tokens count as cache hits; values it lacks as a miss and a source lookup, as a remote
//! source's would; none is remembered, so rotating unknown values cannot allocate.
//!
//! Freshness: every entry carries the source generation it was read under; an entry from an older
//! generation is a miss, so a revocation is seen as soon as the source has reloaded. Entries live
//! at most the cache TTL (one cache-wide TTL: moka's per-entry expiry costs a fifth of a hit); an
//! unknown digest's entry is stale after the negative TTL, checked on the hit; a token past its
//! expiry is refused on every request whatever the cache holds.
//!
//! With the `introspect` source a positive is refreshed after the cache TTL (or at the token's
//! expiry, if sooner); entries live TTL + stale-if-error, so when the control plane cannot be
//! reached a token seen lately keeps passing for that window, while a token never seen fails
//! closed ([`Verdict::Unavailable`]). Concurrent misses of one digest share one remote call.
//!
//! The `postgres` source works the same way, with two additions: a change notification evicts
//! the named entries at once (and a lookup of that digest that raced the eviction answers
//! without caching), and
//! a reconnect to the database bumps its generation, which drops every entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use tokio::sync::OnceCell;

use crate::clock::UnixSeconds;
use crate::config::TokensConfig;
use crate::metrics::Metrics;
use crate::store::source::{Eviction, TokenSource};
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
    /// The remote source could not be asked and nothing usable is cached: refused (fail closed).
    Unavailable,
}

/// What [`Validator::probe`] found.
#[derive(Debug)]
pub enum Probe {
    /// Settled without asking a remote source.
    Verdict(Verdict),
    /// Not settled: pass it to [`Validator::settle`] (after the throttle check).
    Miss(Miss),
}

/// A probe's miss: the digest computed once, and whether the in-memory index already lacks it.
#[derive(Debug)]
pub struct Miss {
    digest: Digest,
    absent: bool,
}

/// One remote lookup shared by every request that missed on the same digest meanwhile.
type Inflight = Arc<OnceCell<Result<Option<Arc<Token>>, ()>>>;

#[derive(Clone)]
struct Entry {
    token: Option<Arc<Token>>,
    generation: u64,
    /// When the answer stops counting as fresh: a negative after the negative TTL, an
    /// introspected positive after the TTL or at its expiry; a file positive never (generation).
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
    positive_ttl: Duration,
    source: Arc<dyn TokenSource>,
    /// The source answers misses from memory ([`TokenSource::lookup_now`]): the inline path.
    in_memory: bool,
    inflight: Mutex<HashMap<Digest, Inflight>>,
    metrics: Arc<Metrics>,
}

impl Validator {
    /// Builds the cache described by `config` in front of `source`. Entries live TTL +
    /// the source's stale-if-error; they count as fresh for the TTL (the backstop behind
    /// notifications) or until evicted. A source that announces revocations needs
    /// [`Validator::shared`], which subscribes the cache to them.
    pub fn new(
        config: &TokensConfig,
        source: Arc<dyn TokenSource>,
        metrics: Arc<Metrics>,
    ) -> Validator {
        let life = config.cache_ttl + source.stale_if_error();
        let in_memory = source.in_memory();
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(life)
            // Keys are SHA-256 outputs: a fast seeded hash suffices, and SipHash would cost more
            // than the lookup itself.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Validator {
            cache,
            negative_ttl: config.negative_ttl,
            positive_ttl: config.cache_ttl,
            source,
            in_memory,
            inflight: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// [`Validator::new`], shared, and subscribed to the source's evictions.
    pub fn shared(
        config: &TokensConfig,
        source: Arc<dyn TokenSource>,
        metrics: Arc<Metrics>,
    ) -> Arc<Validator> {
        let validator = Arc::new(Self::new(config, Arc::clone(&source), metrics));
        let weak = Arc::downgrade(&validator);
        source.on_evict(Box::new(move |eviction| {
            if let Some(v) = weak.upgrade() {
                v.evict(eviction);
            }
        }));
        validator
    }

    /// Drops evicted entries, and any lookup in flight for them, so the next request asks the
    /// source again. (A whole flush is done by the source's generation; in-flight lookups are
    /// dropped here.)
    fn evict(&self, eviction: &Eviction) {
        let Ok(mut inflight) = self.inflight.lock() else {
            return;
        };
        match eviction {
            Eviction::All => inflight.clear(),
            Eviction::Tokens(digests) => {
                for d in digests {
                    inflight.remove(d);
                    self.cache.invalidate(d);
                }
            }
        }
    }

    /// Tokens the data plane let through since start, with their last use: what the
    /// database's last-use batch writes (the file source keeps its own records).
    pub fn used_tokens(&self) -> Vec<(String, UnixSeconds)> {
        self.cache
            .iter()
            .filter_map(|(_, e)| e.token)
            .filter(|t| t.used.get() > 0)
            .map(|t| (t.uid.clone(), t.used.get()))
            .collect()
    }

    /// Judges a presented value at time `now`. Async because remote sources will await their
    /// lookups on a miss; with the file source it never waits.
    pub async fn validate(&self, value: &[u8], now: UnixSeconds) -> Verdict {
        if token::check(value).is_err() {
            return Verdict::Malformed;
        }
        self.validate_digest(value, Digest::of(value), now).await
    }

    /// [`Validator::validate`] of a well-formed value whose digest is already known.
    async fn validate_digest(&self, value: &[u8], digest: Digest, now: UnixSeconds) -> Verdict {
        if !self.in_memory {
            if let Some(hit) = self.fresh_hit(&digest, now) {
                return hit;
            }
            // Boxed: inlined, the remote call's large future would be part of every request's
            // future, file source included (measured: 0.7-1.4 % fewer instructions per request).
            return Box::pin(self.validate_remote(value, digest, now)).await;
        }
        self.judge_in_index(&digest, now)
    }

    /// The in-memory source's answer, from its index (the cache of such a source): a hit for a
    /// live token, a miss and a lookup for anything else. Never cached, never allocates.
    #[inline]
    fn judge_in_index(&self, digest: &Digest, now: UnixSeconds) -> Verdict {
        self.index_hit(digest, now)
            .unwrap_or_else(|| self.absent_from_index())
    }

    /// A live token in the in-memory source's index, counted as a hit; none when it lacks the
    /// digest (not counted: [`Validator::absent_from_index`] does, once the caller settles).
    #[inline]
    fn index_hit(&self, digest: &Digest, now: UnixSeconds) -> Option<Verdict> {
        let token = self.source.lookup_now(digest).flatten()?;
        self.metrics.cache_hits.inc();
        Some(verdict(Some(token), now))
    }

    /// The answer for a value the in-memory index lacks: a miss and a lookup in the metrics, as
    /// a remote source's would be.
    fn absent_from_index(&self) -> Verdict {
        self.metrics.cache_misses.inc();
        self.metrics.source_lookups.inc();
        Verdict::Unknown
    }

    /// The remote path (introspect, postgres): a fresh entry answers; otherwise one source
    /// call per digest, and on failure the stale positive (within stale-if-error) or a
    /// fail-closed refusal.
    async fn validate_remote(&self, value: &[u8], digest: Digest, now: UnixSeconds) -> Verdict {
        let (generation, reachable) = self.remote_state();
        let cached = self.cache.get(&digest);
        if let Some(e) = &cached {
            if e.is_fresh(generation) {
                self.metrics.cache_hits.inc();
                return verdict(e.token.clone(), now);
            }
        }
        self.metrics.cache_misses.inc();
        if !reachable {
            // Known to be away (the last call, probe or listening connection failed): answer
            // now from what is cached rather than make every request wait for a timeout.
            return self.stale_or_closed(cached, generation, now);
        }
        let cell = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return Verdict::Unavailable;
            };
            Arc::clone(inflight.entry(digest).or_default())
        };
        let outcome = cell
            .get_or_init(|| async {
                self.metrics.source_lookups.inc();
                let found = self.source.lookup(value, digest).await;
                let Ok(token) = found else {
                    // Counted in source failures by the source itself.
                    return Err(());
                };
                // An eviction of this digest while we asked removed our cell: what we read may
                // predate the change, so answer this request but do not keep it. The lock
                // orders this check and insert against `evict`.
                if let Ok(inflight) = self.inflight.lock() {
                    if inflight.get(&digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        let refresh = match &token {
                            None => self.negative_ttl,
                            Some(t) => self.positive_ttl.min(until(t.expired_at, now)),
                        };
                        self.cache.insert(
                            digest,
                            Entry {
                                token: token.clone(),
                                generation,
                                stale_after: Some(Instant::now() + refresh),
                            },
                        );
                    }
                }
                Ok(token)
            })
            .await
            .clone();
        if let Ok(mut inflight) = self.inflight.lock() {
            if inflight.get(&digest).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&digest);
            }
        }
        match outcome {
            Ok(token) => verdict(token, now),
            Err(()) => self.stale_or_closed(cached, generation, now),
        }
    }

    /// The remote source's cache generation and whether it is reachable.
    fn remote_state(&self) -> (u64, bool) {
        (self.source.generation(), self.source.is_reachable())
    }

    /// While the remote source is unreachable: a positive seen within TTL + stale-if-error
    /// keeps passing (moka has already dropped older ones); anything else fails closed.
    /// Only an entry of the current generation counts: after the database connection came
    /// back, older entries may hold tokens revoked while nobody listened.
    fn stale_or_closed(&self, cached: Option<Entry>, generation: u64, now: UnixSeconds) -> Verdict {
        match cached {
            Some(Entry {
                token: Some(t),
                generation: seen,
                ..
            }) if seen == generation => {
                self.metrics.source_stale_hits.inc();
                verdict(Some(t), now)
            }
            _ => Verdict::Unavailable,
        }
    }

    /// The answer the cache alone gives, without asking the source: `Malformed` for a bad
    /// shape, the cached verdict on a fresh hit, none on a miss. The throttle consults this
    /// first, so a throttled client never causes a source lookup and a cached live token never
    /// touches the throttle.
    #[inline]
    pub fn cached(&self, value: &[u8], now: UnixSeconds) -> Option<Verdict> {
        if token::check(value).is_err() {
            return Some(Verdict::Malformed);
        }
        let digest = Digest::of(value);
        if self.in_memory {
            return Some(self.judge_in_index(&digest, now));
        }
        self.fresh_hit(&digest, now)
    }

    /// A remote source's fresh cache entry, counted as a hit; none on a miss (not counted: the
    /// caller settles it). Allocates nothing.
    #[inline]
    fn fresh_hit(&self, digest: &Digest, now: UnixSeconds) -> Option<Verdict> {
        let entry = self.cache.get(digest)?;
        if !entry.is_fresh(self.source.generation()) {
            return None;
        }
        self.metrics.cache_hits.inc();
        Some(verdict(entry.token, now))
    }

    /// The data plane's first step: the answer available without asking a remote source, or
    /// the miss to settle with [`Validator::settle`] once the caller has checked the failure
    /// throttle. The checksum and the SHA-256 digest are computed once, here, and the miss
    /// carries the digest on.
    ///
    /// A source held in memory is answered here from its index: a live token is a verdict, a
    /// value it lacks a miss that [`Validator::settle`] answers `Unknown` (after the throttle,
    /// which only failures reach). A remote source's live token is found in moka; a miss is
    /// settled by one source lookup, shared by concurrent misses of the same digest.
    #[inline]
    pub fn probe(&self, value: &[u8], now: UnixSeconds) -> Probe {
        if token::check(value).is_err() {
            return Probe::Verdict(Verdict::Malformed);
        }
        let digest = Digest::of(value);
        if self.in_memory {
            return match self.index_hit(&digest, now) {
                Some(hit) => Probe::Verdict(hit),
                None => Probe::Miss(Miss {
                    digest,
                    absent: true,
                }),
            };
        }
        if let Some(hit) = self.fresh_hit(&digest, now) {
            return Probe::Verdict(hit);
        }
        Probe::Miss(Miss {
            digest,
            absent: false,
        })
    }

    /// Settles a [`Validator::probe`] miss: asks the remote source (or, for a value the
    /// in-memory index lacks, answers `Unknown` and counts the miss and the lookup).
    pub async fn settle(&self, value: &[u8], miss: Miss, now: UnixSeconds) -> Verdict {
        if miss.absent {
            return self.absent_from_index();
        }
        self.validate_digest(value, miss.digest, now).await
    }

    /// Entries currently cached, after applying pending evictions (for /metrics, not per request).
    pub fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// The source behind the cache.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }
}

fn verdict(token: Option<Arc<Token>>, now: UnixSeconds) -> Verdict {
    match token {
        None => Verdict::Unknown,
        Some(t) if t.is_expired(now) => Verdict::Expired,
        Some(t) => Verdict::Valid(t),
    }
}

/// Time from `now` until `expired_at` (none: forever).
fn until(expired_at: Option<UnixSeconds>, now: UnixSeconds) -> Duration {
    expired_at.map_or(Duration::MAX, |at| {
        Duration::from_secs(u64::try_from(at - now).unwrap_or(0))
    })
}
