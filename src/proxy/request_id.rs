//! `X-Request-Id`: one id per request, kept from the client (or the load balancer in front) when
//! it sent a sane one, generated otherwise; forwarded to the upstream, returned to the client and
//! written in the access log, so one request can be followed through every log.
//!
//! Generated ids are a random per-gateway prefix and a counter. They are written a batch at a
//! time (256 ids, 8 KiB) into one buffer, and each request's `HeaderValue` is a slice of it: no
//! formatting, no `String`, no allocation per request (one per batch), and the clones that go
//! to the upstream and back to the client are reference counts. Each worker thread keeps its
//! own batch (a thread-local, no lock shared by the cores), reserved from the generator's counter
//! with one atomic add per batch. Unique within a process life and, by the 64-bit random
//! prefix, across replicas and restarts.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The header, lower-case as HTTP/2 requires.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id kept; a longer one is replaced (it would bloat every log line).
const MAX_LEN: usize = 128;

/// A generated id: 16 hex digits of prefix, 16 of counter.
const ID_LEN: usize = 32;

/// Ids written per batch.
const BATCH: u64 = 256;

/// Tells generators apart in the per-thread batch (a test process holds several).
static GENERATORS: AtomicU64 = AtomicU64::new(0);

/// One thread's current batch.
struct Batch {
    /// The generator it was written for.
    generator: u64,
    ids: Bytes,
    /// How many of its ids were handed out.
    used: usize,
}

thread_local! {
    static BATCH_OF_THIS_THREAD: RefCell<Batch> = const {
        RefCell::new(Batch { generator: u64::MAX, ids: Bytes::new(), used: 0 })
    };
}

/// Hands out request ids.
pub struct RequestIds {
    /// 16 lower-case hex digits of OS randomness, fixed for this gateway's life.
    prefix: [u8; 16],
    /// The counter of the next batch's first id.
    next: AtomicU64,
    /// This generator, for the per-thread batches.
    generator: u64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub fn new() -> RequestIds {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // No OS randomness (never seen on Linux): still distinct per process and start.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed = (nanos ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
        }
        let mut prefix = [0u8; 16];
        hex_into(&seed, &mut prefix);
        RequestIds {
            prefix,
            next: AtomicU64::new(0),
            generator: GENERATORS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The request's id: its own `X-Request-Id` if it sent exactly one of 1 to 128 characters
    /// from `A-Z a-z 0-9 - _ . : / + = @`, else a new one.
    pub fn take(&self, headers: &HeaderMap) -> HeaderValue {
        let mut sent = headers.get_all(X_REQUEST_ID).iter();
        if let (Some(v), None) = (sent.next(), sent.next()) {
            if is_sane(v.as_bytes()) {
                return v.clone();
            }
        }
        self.generate()
    }

    fn generate(&self) -> HeaderValue {
        let id = BATCH_OF_THIS_THREAD.with_borrow_mut(|b| {
            if b.generator != self.generator || b.used * ID_LEN >= b.ids.len() {
                *b = Batch {
                    generator: self.generator,
                    ids: self.write_batch(),
                    used: 0,
                };
            }
            let id = b.ids.slice(b.used * ID_LEN..(b.used + 1) * ID_LEN);
            b.used += 1;
            id
        });
        // Hex digits only: always a valid header value.
        HeaderValue::from_maybe_shared(id).unwrap_or(HeaderValue::from_static("-"))
    }

    /// The next [`BATCH`] ids, one after another in one buffer.
    fn write_batch(&self) -> Bytes {
        let first = self.next.fetch_add(BATCH, Ordering::Relaxed);
        let mut out = vec![0u8; ID_LEN * BATCH as usize];
        for (n, id) in (first..).zip(out.chunks_exact_mut(ID_LEN)) {
            id[..16].copy_from_slice(&self.prefix);
            hex_into(&n.to_be_bytes(), &mut id[16..]);
        }
        Bytes::from(out)
    }
}

fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("lb-7f3a:1"));
        assert_eq!(ids.take(&h), "lb-7f3a:1");
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = ids.take(&h);
            assert_eq!(id.len(), 32, "{bad:?} -> {id:?}");
        }
        // Two ids: neither is believed.
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(ids.take(&h).len(), 32);
    }

    #[test]
    fn ids_stay_distinct_across_threads_and_generators() {
        let ids = std::sync::Arc::new(RequestIds::new());
        let other = RequestIds::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ids = std::sync::Arc::clone(&ids);
                std::thread::spawn(move || {
                    (0..BATCH + 10)
                        .map(|_| ids.take(&HeaderMap::new()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in threads {
            for id in t.join().expect("thread") {
                assert!(id.as_bytes().starts_with(&ids.prefix));
                assert!(seen.insert(id), "an id twice");
            }
        }
        // Interleaved with another generator on one thread, each keeps its own prefix.
        for _ in 0..3 {
            assert!(ids
                .take(&HeaderMap::new())
                .as_bytes()
                .starts_with(&ids.prefix));
            assert!(other
                .take(&HeaderMap::new())
                .as_bytes()
                .starts_with(&other.prefix));
        }
    }

    #[test]
    fn ids_stay_distinct_across_batches() {
        let ids = RequestIds::new();
        let seen: std::collections::HashSet<_> = (0..3 * BATCH)
            .map(|_| ids.take(&HeaderMap::new()))
            .collect();
        assert_eq!(seen.len(), 3 * BATCH as usize);
        assert!(seen.iter().all(|id| id.len() == ID_LEN));
    }

    #[test]
    fn generated_ids_are_hex_and_distinct() {
        let ids = RequestIds::new();
        let (a, b) = (ids.take(&HeaderMap::new()), ids.take(&HeaderMap::new()));
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(
            RequestIds::new().take(&HeaderMap::new()).as_bytes()[..16],
            a.as_bytes()[..16]
        );
    }
}
