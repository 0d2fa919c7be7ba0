//! The `file` token source: a YAML token file, watched for changes, and its locked writer.
//!
//! Reading: the file is loaded at start and polled every [`POLL_INTERVAL`]; the fingerprint follows
//! symlinks, so a Kubernetes Secret mount (an atomic `..data` symlink swap) is seen like an edit.
//! A file that fails to parse never replaces the last good set: the error is logged, counted and
//! shown on /readyz until a good file arrives.
//!
//! Writing ([`update`]): an exclusive lock file serializes writers (so none loses another's token),
//! then write to a temp file, fsync, rename over the original, fsync the folder.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::format::{TokenFile, TokenSet};
use super::StoreError;
use crate::metrics::Metrics;
use crate::token::{Digest, Token};

/// How often the file is checked for changes; well inside the 1 s revocation bound.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let m = fs::metadata(path)?;
    Ok(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// The token file as a live source: the current set, swapped whole on every good reload.
pub struct FileSource {
    path: PathBuf,
    set: ArcSwap<TokenSet>,
    /// Bumped after every swap; cache entries from an older generation are not trusted.
    generation: AtomicU64,
    /// The file version the current set came from, and the last error (kept for /readyz).
    state: Mutex<WatchState>,
    metrics: Arc<Metrics>,
    /// Last-use times as last written to `<file>.last-used`; only the flusher takes this lock.
    usage: Mutex<super::usage::Usage>,
}

#[derive(Default)]
struct WatchState {
    seen: Option<Fingerprint>,
    last_error: Option<String>,
}

impl FileSource {
    /// Loads the file, creating an empty one if it does not exist. A corrupt file at start is an
    /// error: there is no last good set to keep.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<FileSource, StoreError> {
        if !path.exists() {
            update(path, |_| Ok(()))?;
        }
        let seen = fingerprint(path).map_err(|e| StoreError::io(path, e))?;
        let text = fs::read_to_string(path).map_err(|e| StoreError::io(path, e))?;
        let set = TokenFile::parse(&text, path)?.live_set();
        metrics.tokens_loaded.set(set.len() as i64);
        metrics.token_file_healthy.set(1);
        Ok(FileSource {
            path: path.to_owned(),
            set: ArcSwap::from_pointee(set),
            generation: AtomicU64::new(1),
            state: Mutex::new(WatchState {
                seen: Some(seen),
                last_error: None,
            }),
            metrics,
            usage: Mutex::new(super::usage::read(path)),
        })
    }

    /// The record for a digest, if the token is live (its owner may use it).
    #[inline]
    pub fn lookup(&self, digest: &Digest) -> Option<Arc<Token>> {
        self.set.load().get(digest).cloned()
    }

    /// The version of the set; changes whenever the set is replaced.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Tokens in the current set (as `bentogate_tokens_loaded` reports).
    pub fn token_count(&self) -> i64 {
        self.metrics.tokens_loaded.get()
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The error that keeps the last good set in force, if the last read failed.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.last_error.clone())
    }

    /// Re-reads the file if it changed since the last read; returns true when a new set is live.
    pub fn reload_if_changed(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        let now = match fingerprint(&self.path) {
            Ok(f) => f,
            Err(e) => {
                // A Secret mount briefly lacks the file during a swap; a deleted file is an error
                // that keeps the last good set.
                self.fail(&mut state, None, format!("{}: {e}", self.path.display()));
                return false;
            }
        };
        if state.seen == Some(now) {
            return false;
        }
        let parsed = fs::read_to_string(&self.path)
            .map_err(|e| StoreError::io(&self.path, e))
            .and_then(|text| {
                let file = TokenFile::parse(&text, &self.path)?;
                if file.tokens.is_empty() && text.trim().is_empty() && !self.set.load().is_empty() {
                    // An empty file is what a half-done truncate-and-write looks like; deleting
                    // every token takes an explicit `tokens: []`.
                    return Err(StoreError::Corrupt {
                        path: self.path.display().to_string(),
                        line: None,
                        message: "the file is empty; write `tokens: []` to remove every token"
                            .to_owned(),
                    });
                }
                Ok(file)
            });
        // A writer still busy in place changes the fingerprint under us: read again next tick.
        if fingerprint(&self.path).ok() != Some(now) {
            return false;
        }
        match parsed {
            Ok(file) => {
                let set = file.live_set();
                set.carry_usage(&self.set.load());
                let count = set.len();
                self.set.store(Arc::new(set));
                self.generation.fetch_add(1, Ordering::AcqRel);
                state.seen = Some(now);
                state.last_error = None;
                self.metrics.tokens_loaded.set(count as i64);
                self.metrics.token_file_healthy.set(1);
                self.metrics
                    .token_file_reloads
                    .with_label_values(&["success"])
                    .inc();
                tracing::info!(file = %self.path.display(), tokens = count, "token file reloaded");
                true
            }
            Err(e) => {
                self.fail(&mut state, Some(now), e.to_string());
                false
            }
        }
    }

    fn fail(&self, state: &mut WatchState, seen: Option<Fingerprint>, message: String) {
        let first = state.last_error.as_deref() != Some(message.as_str());
        if let Some(seen) = seen {
            state.seen = Some(seen);
        }
        if first {
            self.metrics
                .token_file_reloads
                .with_label_values(&["error"])
                .inc();
            self.metrics.token_file_healthy.set(0);
            tracing::error!(error = %message, kept = self.set.load().len(), "token file rejected; keeping the last good set");
            state.last_error = Some(message);
        }
    }

    /// Writes the last-use times the data plane recorded since the last flush to
    /// `<file>.last-used` (see [`super::usage`]); the token file itself is not touched, so the set
    /// and the cache stay as they are. Returns how many tokens had a newer use.
    pub fn flush_usage(&self) -> Result<usize, StoreError> {
        let Ok(mut usage) = self.usage.lock() else {
            return Ok(0);
        };
        let set = self.set.load();
        let mut newer = 0;
        for t in set.records() {
            let used = t.used.get();
            if used > 0 && usage.get(&t.uid).is_none_or(|&at| at < used) {
                usage.insert(t.uid.clone(), used);
                newer += 1;
            }
        }
        if newer == 0 {
            return Ok(0);
        }
        // Forget deleted tokens so the file does not grow forever.
        let live: std::collections::HashSet<&str> = set.records().map(|t| t.uid.as_str()).collect();
        usage.retain(|uid, _| live.contains(uid.as_str()));
        super::usage::write(&self.path, &usage)
            .map_err(|e| StoreError::io(&super::usage::path_for(&self.path), e))?;
        Ok(newer)
    }

    /// Flushes last-use times every `every` until `shutdown` resolves (the server flushes once
    /// more after draining, when no request can record a use any more).
    pub async fn flush_usage_every(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        crate::periodic::after_every(every, shutdown, || Arc::clone(&self).flush_usage_logged())
            .await
    }

    /// [`FileSource::flush_usage`] off the request threads, with its outcome logged.
    pub async fn flush_usage_logged(self: Arc<Self>) {
        match tokio::task::spawn_blocking(move || self.flush_usage()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(tokens = n, "last-use times written"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not write last-use times; will retry"),
            Err(_) => tracing::error!("last-use flush task failed"),
        }
    }

    /// Polls the file until `shutdown` resolves.
    pub async fn watch(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::periodic::every(POLL_INTERVAL, shutdown, || {
            let me = Arc::clone(&self);
            async move {
                // Parsing a large file must not stall a worker thread that serves requests.
                if tokio::task::spawn_blocking(move || me.reload_if_changed())
                    .await
                    .is_err()
                {
                    tracing::error!("token file reload task failed");
                }
            }
        })
        .await
    }
}

/// Reads the token file (empty if missing), lets `change` edit it, and writes it back atomically
/// under an exclusive lock, so concurrent writers never lose each other's changes.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Write through a symlink the operator made, not over it.
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let lock_path = sibling(&path, ".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::io(&lock_path, e))?;
    lock.lock().map_err(|e| StoreError::io(&lock_path, e))?;

    let mut file = match fs::read_to_string(&path) {
        Ok(text) => TokenFile::parse(&text, &path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenFile::default(),
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let out = change(&mut file)?;
    file.validate().map_err(|message| StoreError::Corrupt {
        path: path.display().to_string(),
        line: None,
        message,
    })?;
    let text = file.to_text().map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        line: None,
        message: e.to_string(),
    })?;
    let tmp = sibling(&path, &format!(".tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io(&path, e));
    }
    drop(lock);
    Ok(out)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}
