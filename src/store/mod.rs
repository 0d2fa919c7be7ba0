//! Token sources.
//!
//! Owns where token records live and how they are read and written. The validator asks a source
//! by digest; the CLI and the control plane edit the records. `file` is the embedded default
//! (sidecars and single gateways); `postgres` is shared by replicas; `introspect` asks another
//! bentogate.

pub mod file;
pub mod format;
pub mod introspect;
pub mod postgres;
pub mod source;
pub mod usage;

pub use file::FileSource;
pub use format::{Member, Role, TokenFile};
pub use source::{open, TokenSource};

/// Why a token file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The OS refused a read, write, lock or rename.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid token file; the last good set stays in force.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Corrupt {
        /// The file.
        path: String,
        /// 1-based line, where known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The token database could not be reached or refused the change.
    #[error("{0}")]
    Database(String),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A store the CLI and the control plane may change: the token file or the shared database.
/// Its calls block (files are read and fsynced, the database is awaited on the current
/// runtime), so async callers run them on the blocking pool.
#[derive(Clone)]
pub enum Writable {
    /// The token file at this path.
    File(std::path::PathBuf),
    /// The shared database.
    Postgres(std::sync::Arc<postgres::PgSource>),
}

impl Writable {
    /// Everything, with last-use times merged in.
    pub fn read(&self) -> Result<TokenFile, StoreError> {
        match self {
            Writable::File(path) => usage::load_for_display(path),
            Writable::Postgres(db) => Ok(wait(db.read())??),
        }
    }

    /// Applies `change` atomically: under the file's lock, or in one database transaction.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self {
            Writable::File(path) => file::update(path, change),
            Writable::Postgres(db) => wait(db.update(change))?,
        }
    }

    /// One member (a control-plane caller's standing) without reading every token.
    pub fn member(&self, name: &str) -> Result<Option<Member>, StoreError> {
        match self {
            Writable::File(_) => Ok(self.read()?.member(name).cloned()),
            Writable::Postgres(db) => Ok(wait(db.member(name))??),
        }
    }

    /// Where the records live, for messages.
    pub fn describe(&self) -> String {
        match self {
            Writable::File(path) => path.display().to_string(),
            Writable::Postgres(db) => format!("postgres {}", db.describe()),
        }
    }
}

impl From<&std::path::Path> for Writable {
    fn from(path: &std::path::Path) -> Self {
        Writable::File(path.to_owned())
    }
}

impl From<&std::path::PathBuf> for Writable {
    fn from(path: &std::path::PathBuf) -> Self {
        Writable::File(path.clone())
    }
}

/// Runs a database call to completion from blocking code, on the runtime this thread belongs
/// to (a blocking-pool thread, or the CLI's thread after it entered its runtime).
fn wait<F: std::future::Future>(call: F) -> Result<F::Output, StoreError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::Database("no async runtime to reach the database from".into()))?;
    Ok(handle.block_on(call))
}
