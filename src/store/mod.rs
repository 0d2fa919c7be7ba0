//! Token sources.
//!
//! Owns where token records live and how they are read and written. The validator asks a source
//! by digest; the CLI and the control plane edit the records. `file` is the embedded default
//! (sidecars and single gateways); `postgres` is shared by replicas; `introspect` asks another
//! bentogate.

pub mod console;
pub mod file;
pub mod format;
pub mod index;
pub mod introspect;
pub mod members;
pub mod postgres;
pub mod records;
pub mod source;
pub mod usage;

pub use file::FileSource;
pub use format::{Member, Organization, Role, TokenFile};
pub use members::{MemberChange, MemberRefusal};
pub use records::{Page, PageQuery, PageStart, TokenEdit, TokenStore, Visibility};
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
    /// A personal token for someone who is not an active member.
    #[error("`{0}` is not an active member, so it cannot own a personal token; add one with `bentogate member add {0}`")]
    NotActiveMember(String),
    /// A token with this uid or digest is stored already.
    #[error("a token with this uid or value exists already")]
    Duplicate,
    /// A token that grants nothing.
    #[error("a token needs at least one kind of access: scopes, deployments, all_deployments or monitoring")]
    NoAccess,
    /// A member change the rules refuse.
    #[error(transparent)]
    Member(#[from] MemberRefusal),
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Runs a database call to completion from blocking code, on the runtime this thread belongs
/// to (a blocking-pool thread, or the CLI's thread after it entered its runtime).
pub(crate) fn wait<F: std::future::Future>(call: F) -> Result<F::Output, StoreError> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::Database("no async runtime to reach the database from".into()))?;
    Ok(handle.block_on(call))
}

/// Opens (creating it) and exclusively locks the lock file at `lock_path`; released when the
/// returned file is dropped. Every file bentogate rewrites in place of another process is
/// guarded by one.
pub(crate) fn lock_exclusive(lock_path: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path)
        .map_err(|e| StoreError::io(lock_path, e))?;
    lock.lock().map_err(|e| StoreError::io(lock_path, e))?;
    Ok(lock)
}
