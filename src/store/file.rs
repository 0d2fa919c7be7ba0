//! The `file` token source: a token file, watched for changes, indexed in memory, and changed
//! one record at a time under a lock.
//!
//! Reading: the file is loaded at start and polled every [`POLL_INTERVAL`]; the fingerprint follows
//! symlinks, so a Kubernetes Secret mount (an atomic `..data` symlink swap) is seen like an edit.
//! A file that fails to parse never replaces the last good set: the error is logged, counted and
//! shown on /readyz until a good file arrives.
//!
//! Writing: an exclusive lock file serializes writers across processes (the server and the local
//! CLI), so none loses another's change. Under it, a writer that finds the file changed since it
//! last read it (another process wrote) re-reads it first; otherwise it changes its in-memory
//! [`Index`] (one record in or out) and writes the file in one streaming pass to a temp file,
//! fsync, rename over the original, fsync the folder. Its own write is never parsed back.

use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::console::{ConsoleStore, MemoryConsole};
use super::format::{Member, Organization, TokenFile};
use super::index::Index;
use super::members::MemberChange;
use super::records::{Page, PageQuery, TokenEdit, TokenStore};
use super::usage::{self, Usage};
use super::StoreError;
use crate::clock;
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

/// The token file as a live source: the current index, swapped whole on every change.
pub struct FileSource {
    path: PathBuf,
    index: ArcSwap<Index>,
    /// Bumped after every swap; cache entries from an older generation are not trusted.
    generation: AtomicU64,
    /// The file version the index came from, and the last error (kept for /readyz). Held by
    /// a writer from its read of the file to its swap, so the watcher never reloads in between.
    state: Mutex<WatchState>,
    metrics: Arc<Metrics>,
    /// Last-use times as last written; only the flusher takes this lock.
    usage: Mutex<UsageState>,
    /// The web console's state: this process's memory, links beside the file.
    console: MemoryConsole,
}

#[derive(Default)]
struct WatchState {
    seen: Option<Fingerprint>,
    last_error: Option<String>,
}

/// Where last uses go, what was last written there, and the last write error (warned once).
struct UsageState {
    path: Option<PathBuf>,
    written: Usage,
    last_error: Option<String>,
}

impl FileSource {
    /// Loads the file, creating an empty one if it does not exist, with last uses beside it
    /// (`<file>.last-used`). A corrupt file at start is an error: there is no last good set.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<FileSource, StoreError> {
        Self::open_with(path, Some(usage::path_for(path)), metrics)
    }

    /// [`FileSource::open`] with last uses kept at `usage_path` (`None`: not kept).
    pub fn open_with(
        path: &Path,
        usage_path: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Result<FileSource, StoreError> {
        if !path.exists() {
            update(path, |_| Ok(()))?;
        }
        let seen = fingerprint(path).map_err(|e| StoreError::io(path, e))?;
        let index = read_index(path)?;
        metrics.tokens_loaded.set(index.live_count() as i64);
        metrics.token_file_healthy.set(1);
        let written = usage_path.as_deref().map(usage::read).unwrap_or_default();
        Ok(FileSource {
            console: MemoryConsole::new(path),
            path: path.to_owned(),
            index: ArcSwap::from_pointee(index),
            generation: AtomicU64::new(1),
            state: Mutex::new(WatchState {
                seen: Some(seen),
                last_error: None,
            }),
            metrics,
            usage: Mutex::new(UsageState {
                path: usage_path,
                written,
                last_error: None,
            }),
        })
    }

    /// The record for a digest, if the token is live (its owner may use it).
    #[inline]
    pub fn lookup(&self, digest: &Digest) -> Option<Arc<Token>> {
        self.index.load().live(digest).cloned()
    }

    /// The version of the set; changes whenever the set is replaced.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Live tokens (as `bentogate_tokens_loaded` reports).
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

    fn install(&self, index: Index, why: &str) {
        let count = index.live_count();
        self.index.store(Arc::new(index));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.tokens_loaded.set(count as i64);
        self.metrics.token_file_healthy.set(1);
        tracing::debug!(file = %self.path.display(), tokens = count, why, "token set replaced");
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
                if file.tokens.is_empty() && text.trim().is_empty() && !self.index.load().is_empty()
                {
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
                let index = Index::new(file, clock::now());
                index.carry_usage(&self.index.load());
                let count = index.live_count();
                self.install(index, "reload");
                state.seen = Some(now);
                state.last_error = None;
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
            tracing::error!(error = %message, kept = self.index.load().live_count(), "token file rejected; keeping the last good set");
            state.last_error = Some(message);
        }
    }

    /// Changes the index under the file lock and writes the file, unless `edit` reports that
    /// nothing changed (`false`). A file another process changed since this one read it is read
    /// again first, so its change is kept.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut Index) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let mut state = self.state.lock().map_err(|_| poisoned(&self.path))?;
        let lock = FileLock::acquire(&self.path)?;
        let on_disk = fingerprint(&lock.target).ok();
        let current = self.index.load_full();
        let mut next = if on_disk.is_some() && on_disk == state.seen {
            (*current).clone()
        } else {
            let index = read_index(&lock.target)?;
            index.carry_usage(&current);
            index
        };
        let (out, changed) = edit(&mut next)?;
        if changed {
            lock.replace(|w| next.write_to(w))?;
            state.seen = fingerprint(&lock.target).ok();
            state.last_error = None;
            self.install(next, "change");
        } else if on_disk != state.seen {
            state.seen = on_disk;
            self.install(next, "reload");
        }
        Ok(out)
    }

    /// A record as shown: with the later of its stored and its flushed last use (what every
    /// process reading the files sees; a use not flushed yet shows after `tokens.usage_flush`,
    /// as with the database).
    fn shown(&self, t: &Token) -> Token {
        let mut t = t.clone();
        let flushed = self
            .usage
            .lock()
            .ok()
            .and_then(|u| u.written.get(&t.uid).copied());
        t.last_used_at = t.last_used_at.max(flushed);
        t
    }

    /// Writes the last-use times the data plane recorded since the last flush to the usage
    /// file ([`super::usage`]); the token file itself is not touched, so the set and the cache
    /// stay as they are. Returns how many tokens had a newer use. A location that cannot be
    /// written (a read-only mount) is reported once, not on every flush.
    pub fn flush_usage(&self) -> Result<usize, StoreError> {
        let Ok(mut usage) = self.usage.lock() else {
            return Ok(0);
        };
        let Some(path) = usage.path.clone() else {
            return Ok(0);
        };
        let index = self.index.load();
        let mut newer = 0;
        for t in index.records() {
            let used = t.used.get();
            if used > 0 && usage.written.get(&t.uid).is_none_or(|&at| at < used) {
                usage.written.insert(t.uid.clone(), used);
                newer += 1;
            }
        }
        // A write that failed is retried even without a newer use.
        if newer == 0 && usage.last_error.is_none() {
            return Ok(0);
        }
        // Forget deleted tokens so the file does not grow forever.
        usage.written.retain(|uid, _| index.get(uid).is_some());
        match usage::write(&path, &usage.written) {
            Ok(()) => {
                if usage.last_error.take().is_some() {
                    tracing::info!(file = %path.display(), "last-use times written again");
                }
                Ok(newer)
            }
            Err(e) => {
                let message = e.to_string();
                if usage.last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(file = %path.display(), error = %message, "could not write last-use times; they are kept in memory and retried (set tokens.last_used_file to a writable path, or `off`)");
                    usage.last_error = Some(message);
                }
                Ok(0)
            }
        }
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

impl TokenStore for FileSource {
    fn console(&self) -> &dyn ConsoleStore {
        &self.console
    }

    fn organization(&self) -> Result<Organization, StoreError> {
        Ok(self.index.load().organization().clone())
    }

    fn get(&self, uid: &str) -> Result<Option<Token>, StoreError> {
        Ok(self.index.load().get(uid).map(|t| self.shown(t)))
    }

    fn insert(&self, token: Token) -> Result<(), StoreError> {
        self.change(|index| index.insert(token).map(|()| ((), true)))
    }

    fn delete(&self, uid: &str) -> Result<Option<Token>, StoreError> {
        let removed = self.change(|index| {
            let removed = index.remove(uid);
            let changed = removed.is_some();
            Ok((removed, changed))
        })?;
        Ok(removed.map(|t| self.shown(&t)))
    }

    fn edit(&self, uid: &str, edit: &TokenEdit) -> Result<Option<Token>, StoreError> {
        let edited = self.change(|index| {
            let Some(old) = index.get(uid) else {
                return Ok((None, false));
            };
            let mut t = (**old).clone();
            edit.apply(&mut t, clock::now());
            index.replace(t.clone());
            Ok((Some(t), true))
        })?;
        Ok(edited.map(|t| self.shown(&t)))
    }

    fn page(&self, query: &PageQuery) -> Result<Page, StoreError> {
        let mut page = self.index.load().page(query);
        for t in &mut page.items {
            *t = self.shown(t);
        }
        Ok(page)
    }

    fn member(&self, name: &str) -> Result<Option<Member>, StoreError> {
        Ok(self
            .index
            .load()
            .members()
            .iter()
            .find(|m| m.name == name)
            .cloned())
    }

    fn members(&self) -> Result<Vec<Member>, StoreError> {
        Ok(self.index.load().members().to_vec())
    }

    fn change_member(&self, change: &MemberChange) -> Result<usize, StoreError> {
        self.change(|index| index.change_member(change).map(|n| (n, true)))
    }

    fn import(&self, file: TokenFile) -> Result<(usize, usize), StoreError> {
        file.validate().map_err(|message| StoreError::Corrupt {
            path: "the imported records".into(),
            line: None,
            message,
        })?;
        self.change(|index| {
            let added = index.import(file);
            Ok((added, added != (0, 0)))
        })
    }

    fn export(&self) -> Result<TokenFile, StoreError> {
        let mut file = self.index.load().to_file();
        for t in &mut file.tokens {
            *t = self.shown(t);
        }
        Ok(file)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

fn poisoned(path: &Path) -> StoreError {
    StoreError::io(
        path,
        std::io::Error::other("a writer panicked; restart bentogate"),
    )
}

/// Parses the file at `path` (missing: empty) into an index.
fn read_index(path: &Path) -> Result<Index, StoreError> {
    Ok(Index::new(read_file(path)?, clock::now()))
}

fn read_file(path: &Path) -> Result<TokenFile, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => TokenFile::parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// The exclusive lock every writer of one token file takes (`<file>.lock`), and where the
/// file really is (a symlink the operator made is written through, not over).
struct FileLock {
    target: PathBuf,
    _lock: File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, StoreError> {
        let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let lock = super::lock_exclusive(&sibling(&target, ".lock"))?;
        Ok(FileLock {
            target,
            _lock: lock,
        })
    }

    /// Replaces the file atomically with what `write` streams: temp file, fsync, rename,
    /// fsync the folder.
    fn replace(
        &self,
        write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let dir = match self.target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = sibling(&self.target, &format!(".tmp.{}", std::process::id()));
        let written = (|| {
            let mut out = BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
            write(&mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            fs::rename(&tmp, &self.target)?;
            File::open(&dir)?.sync_all()
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::io(&self.target, e)
        })
    }
}

/// Reads the token file (empty if missing), lets `change` edit it, and writes it back atomically
/// under the writers' lock. For whole-file work (fixtures, `migrate --to-file`); the control
/// plane and the CLI change one record through [`TokenStore`].
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let lock = FileLock::acquire(path)?;
    let mut file = read_file(&lock.target)?;
    let out = change(&mut file)?;
    file.validate().map_err(|message| StoreError::Corrupt {
        path: lock.target.display().to_string(),
        line: None,
        message,
    })?;
    lock.replace(|w| {
        super::format::write_file(w, &file.organization, &file.members, file.tokens.iter())
    })?;
    Ok(out)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}
