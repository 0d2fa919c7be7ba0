//! Token sources.
//!
//! Owns where token records live and how they are read and written. The validator asks a source
//! by digest; the CLI edits the records. Only the `file` source exists in this build; it is the
//! embedded default (sidecars and single gateways).

pub mod file;
pub mod format;
pub mod introspect;
pub mod usage;

pub use file::FileSource;
pub use format::{Member, Role, TokenFile};

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
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
