//! The command line: `serve`, `check`, `token`, `member` and `migrate`.
//!
//! Owns argument parsing (clap) and the token and member commands, against the local token file
//! or, with `--endpoint`, a remote control plane ([`remote`]).
//! Token values are printed once, by `token create`; nothing else here ever sees one, except
//! `token import`, which digests what it reads and forgets it.
//!
//! # Layout
//!
//! ```text
//! mod.rs      the clap types (Cli, Command, Common), CliError, load_config, the local store
//! check.rs    check: a configuration validated as serve would, without serving
//! token.rs    token create, list, get, delete and import
//! member.rs   member add, remove, promote, deactivate and list
//! migrate.rs  migrate: token file to database and back
//! output.rs   printing in table, JSON or YAML
//! remote.rs   the same commands against a remote control plane
//! ```

mod check;
pub mod member;
mod migrate;
mod output;
pub mod remote;
mod token;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::store::{StoreError, TokenStore};
pub use check::check;
pub use member::{member, MemberCommand};
pub use migrate::{migrate, MigrateArgs};
pub use output::Output;
use token::expiry;
pub use token::{token, CreateArgs, TokenCommand};

/// bentogate: an authorizing reverse proxy for protected Bento deployments.
#[derive(Debug, Parser)]
#[command(name = "bentogate", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (and its admin listener) until SIGTERM.
    Serve(ConfigArg),
    /// Validate a configuration (and its token file) and exit: 0 valid, 2 invalid.
    Check(ConfigArg),
    /// Create, list, get, delete and import tokens in the configured token file.
    Token {
        /// The token command.
        #[command(subcommand)]
        command: TokenCommand,
        /// Where the token file is and how to print.
        #[command(flatten)]
        common: Common,
    },
    /// Copy a token file into the configured PostgreSQL database, or the database into a new
    /// token file (uids, digests, expiries, last uses and memberships kept).
    Migrate(MigrateArgs),
    /// Add, remove, promote, deactivate and list members of the organization.
    Member {
        /// The member command.
        #[command(subcommand)]
        command: MemberCommand,
        /// Where the token file is and how to print.
        #[command(flatten)]
        common: Common,
    },
}

/// `--config FILE`; without it, the embedded example configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The YAML configuration; without it the embedded config.example.yaml is used.
    #[arg(long, short = 'c', env = "BENTOGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Options shared by the token and member commands.
#[derive(Debug, Args)]
pub struct Common {
    /// The configuration whose token file to edit (default: embedded, ./tokens.yaml).
    #[arg(long, short = 'c', global = true, env = "BENTOGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// A remote control plane (a bentogate admin listener, http://HOST:9901) instead of the local
    /// token file; the caller's token comes from BENTO_CLOUD_API_KEY. Without --config,
    /// BENTO_CLOUD_API_ENDPOINT sets it too.
    #[arg(long, global = true, conflicts_with = "config")]
    pub endpoint: Option<String>,
    /// For an https:// --endpoint: the PEM CA its certificate must chain to (a private CA);
    /// the platform's roots when omitted. The host name is always checked.
    #[arg(long, global = true, env = "BENTOGATE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl Common {
    /// The control plane to call, if the command is remote: `--endpoint`, else
    /// `BENTO_CLOUD_API_ENDPOINT` unless a config was named (an explicit local file wins).
    pub fn endpoint(&self) -> Option<String> {
        self.endpoint.clone().or_else(|| {
            if self.config.is_some() {
                return None;
            }
            std::env::var(remote::ENDPOINT_ENV)
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
    }
}

/// Why a command failed; its exit code follows Appendix B (1 runtime, 2 usage or config).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The token file could not be read or written.
    #[error(transparent)]
    Store(StoreError),
    /// The remote control plane refused or could not be reached.
    #[error("{0}")]
    Remote(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change was refused because of the store's state (the last active admin).
    #[error("{0}")]
    Conflict(String),
    /// Writing the output failed, or the OS had no randomness.
    #[error("{0}")]
    Io(String),
}

impl From<crate::control::ControlError> for CliError {
    /// The control plane's refusals, as the local CLI reports them (the store's own errors keep
    /// their exit code).
    fn from(e: crate::control::ControlError) -> Self {
        use crate::control::ControlError;
        match e {
            ControlError::Store(e) => CliError::Store(e),
            ControlError::NotFound(m) => CliError::NotFound(m),
            ControlError::Conflict(m) => CliError::Conflict(m),
            ControlError::Unavailable(m) => CliError::Io(m),
            other => CliError::Usage(other.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    /// A store's refusals read as the control plane words them; its failures keep their text.
    fn from(e: StoreError) -> Self {
        CliError::from(crate::control::ControlError::from(e))
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => 2,
            CliError::Store(_)
            | CliError::NotFound(_)
            | CliError::Conflict(_)
            | CliError::Io(_)
            | CliError::Remote(_) => 1,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e.to_string())
    }
}

/// The store a local command works on, with the runtime a database needs.
pub struct Local {
    store: std::sync::Arc<dyn TokenStore>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Local {
    /// Runs `f` on the store; database calls inside it are driven by this command's runtime.
    pub fn run<T>(&self, f: impl FnOnce(&dyn TokenStore) -> T) -> T {
        let _entered = self.runtime.as_ref().map(|r| r.enter());
        f(&*self.store)
    }
}

/// The configured store for local commands ([`crate::store::source::open_store`]), with the
/// small runtime that drives a database connection while the command blocks on it.
pub fn local_store(config: &Config) -> Result<Local, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = std::sync::Arc::new(
        crate::metrics::Metrics::new().map_err(|e| CliError::Io(e.to_string()))?,
    );
    let store = runtime
        .block_on(crate::store::source::open_store(&config.tokens, &metrics))
        .map_err(|e| match e {
            crate::store::source::OpenError::File(e) => CliError::Store(e),
            crate::store::source::OpenError::Database(e) => CliError::Store(StoreError::from(e)),
            e @ crate::store::source::OpenError::Introspect(_) => CliError::Io(e.to_string()),
        })?
        .ok_or_else(|| {
            CliError::Usage(
                "this configuration takes its tokens from a control plane (tokens.source: introspect); manage them there with --endpoint".into(),
            )
        })?;
    Ok(Local {
        store,
        runtime: Some(runtime),
    })
}

/// Loads `--config`, or the embedded example when none is given.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
}
