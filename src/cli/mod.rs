//! The command line: `serve`, `check`, `token` and `member`.
//!
//! Owns argument parsing (clap) and the token and member commands, against the local token file
//! or, with `--endpoint`, a remote control plane ([`remote`]).
//! Token values are printed once, by `token create`; nothing else here ever sees one, except
//! `token import`, which digests what it reads and forgets it.

mod output;
pub mod remote;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::clock;
use crate::config::{Config, ConfigError};
use crate::control::{apply_member_change, matches_search, ControlError, MemberChange};
use crate::store::postgres::PgSource;
use crate::store::{StoreError, TokenFile, Writable};
use crate::token::{self, Digest, OwnerKind, Scope, Scopes, Secret, Token};
pub use output::Output;

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

/// What `migrate` takes: exactly one direction.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The configuration naming the database (`tokens.source: postgres`).
    #[arg(long, short = 'c', env = "BENTOGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Import this token file into the database; records already there (by uid) are kept.
    #[arg(long, conflicts_with = "to_file", required_unless_present = "to_file")]
    pub from_file: Option<PathBuf>,
    /// Export the database into this token file, which must not exist yet.
    #[arg(long)]
    pub to_file: Option<PathBuf>,
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

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its value, this once.
    Create(CreateArgs),
    /// List tokens (never their values).
    List {
        /// Only tokens whose name, uid or description contains this text.
        #[arg(long)]
        search: Option<String>,
    },
    /// Show one token.
    Get {
        /// The token's uid.
        uid: String,
    },
    /// Delete a token; the data plane rejects it within a second.
    Delete {
        /// The token's uid.
        uid: String,
    },
    /// Import tokens issued elsewhere (by value or SHA-256 digest) from a YAML or JSON list.
    Import {
        /// The file to read; see the README for its format.
        file: PathBuf,
    },
}

/// What `token create` takes.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name for people.
    pub name: String,
    /// A Developer Operations scope; repeat for several.
    #[arg(long = "scope", value_enum)]
    pub scopes: Vec<Scope>,
    /// Expiry: a duration from now (30d, 1w, 24h) or a date or time (2026-12-31, RFC 3339).
    #[arg(long)]
    pub expires: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// A deployment the token may call; repeat for several.
    #[arg(long = "deployment")]
    pub deployments: Vec<String>,
    /// The token may call every deployment.
    #[arg(long, conflicts_with = "deployments")]
    pub all_deployments: bool,
    /// An organization token (the default): valid whoever created it.
    #[arg(long, conflicts_with = "user")]
    pub org: bool,
    /// A personal token of this member: it dies when the member leaves.
    #[arg(long)]
    pub user: Option<String>,
    /// The token may read routes with the `monitoring` policy.
    #[arg(long)]
    pub monitoring: bool,
}

/// Member commands.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a member.
    Add {
        /// Unique user name.
        name: String,
        /// Contact address.
        #[arg(long)]
        email: Option<String>,
        /// Make the member an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a member and delete her personal tokens.
    Remove {
        /// The member.
        name: String,
    },
    /// Make a member an admin.
    Promote {
        /// The member.
        name: String,
    },
    /// Deactivate a member: she stays listed, her personal tokens stop working at once.
    Deactivate {
        /// The member.
        name: String,
    },
    /// List members.
    List,
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
    Store(#[from] StoreError),
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
    store: Writable,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Local {
    /// Runs `f` on the store; database calls inside it are driven by this command's runtime.
    pub fn run<T>(&self, f: impl FnOnce(&Writable) -> T) -> T {
        let _entered = self.runtime.as_ref().map(|r| r.enter());
        f(&self.store)
    }
}

/// The configured store for local commands: the token file, or the database (connected and
/// migrated here).
pub fn local_store(config: &Config) -> Result<Local, CliError> {
    let Some(pg) = &config.tokens.postgres else {
        return Ok(Local {
            store: Writable::File(config.tokens.file.clone()),
            runtime: None,
        });
    };
    // One worker thread drives the connections while the command blocks on them.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = std::sync::Arc::new(
        crate::metrics::Metrics::new().map_err(|e| CliError::Io(e.to_string()))?,
    );
    let db = runtime
        .block_on(PgSource::connect(pg.clone(), metrics))
        .map_err(|e| CliError::Store(StoreError::from(e)))?;
    Ok(Local {
        store: Writable::Postgres(std::sync::Arc::new(db)),
        runtime: Some(runtime),
    })
}

/// Runs `migrate`: file to database or database to file.
pub fn migrate(args: &MigrateArgs, config: &Config, out: &mut dyn Write) -> Result<(), CliError> {
    if config.tokens.postgres.is_none() {
        return Err(CliError::Usage(format!(
            "{}: migrate needs a configuration with `tokens.source: postgres` and `tokens.postgres.url`",
            config.origin
        )));
    }
    if let Some(to) = &args.to_file {
        if to.exists() {
            return Err(CliError::Usage(format!(
                "{} exists; migrate --to-file writes a new file only (move the old one away first)",
                to.display()
            )));
        }
    }
    let local = local_store(config)?;
    let Writable::Postgres(db) = &local.store else {
        return Err(CliError::Usage("migrate needs the postgres source".into()));
    };
    let said = match (&args.from_file, &args.to_file) {
        (Some(from), None) => {
            let text = std::fs::read_to_string(from).map_err(|e| StoreError::io(from, e))?;
            let mut file = TokenFile::parse(&text, from)?;
            crate::store::usage::merge(&mut file, &crate::store::usage::read(from));
            let offered = (file.members.len(), file.tokens.len());
            let (members, tokens) =
                local.run(|_| tokio::runtime::Handle::current().block_on(db.import(file)))?;
            format!(
                "imported {members} of {} members and {tokens} of {} tokens from {} into {}; the rest were already there",
                offered.0,
                offered.1,
                from.display(),
                local.store.describe()
            )
        }
        (None, Some(to)) => {
            let all = local.run(|store| store.read())?;
            let counts = (all.members.len(), all.tokens.len());
            crate::store::file::update(to, move |f| {
                *f = all;
                Ok(())
            })?;
            format!(
                "exported {} members and {} tokens from {} to {}",
                counts.0,
                counts.1,
                local.store.describe(),
                to.display()
            )
        }
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --from-file FILE or --to-file FILE".into(),
            ))
        }
    };
    output::message(out, Output::Table, &said)?;
    Ok(())
}

/// Loads `--config`, or the embedded example when none is given.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
}

/// Runs a token command against `file`, printing to `out`.
pub fn token(
    command: TokenCommand,
    store: impl Into<Writable>,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let file = &store.into();
    match command {
        TokenCommand::Create(args) => {
            let (secret, record) = create(args, file)?;
            output::created(out, format, &record, &secret)?;
        }
        TokenCommand::List { search } => {
            let f = read(file)?;
            let now = clock::now();
            let hits: Vec<&Token> = f
                .tokens
                .iter()
                .filter(|t| search.as_deref().is_none_or(|s| matches_search(t, s)))
                .collect();
            output::tokens(out, format, &hits, now)?;
        }
        TokenCommand::Get { uid } => {
            let f = read(file)?;
            let t = f
                .tokens
                .iter()
                .find(|t| t.uid == uid)
                .ok_or_else(|| no_token(&uid))?;
            output::token(out, format, t, clock::now())?;
        }
        TokenCommand::Delete { uid } => {
            let removed = file
                .update(|f| {
                    Ok(f.tokens
                        .iter()
                        .position(|t| t.uid == uid)
                        .map(|i| f.tokens.remove(i)))
                })?
                .ok_or_else(|| no_token(&uid))?;
            output::message(
                out,
                format,
                &format!("deleted token {} ({})", removed.uid, removed.name),
            )?;
        }
        TokenCommand::Import { file: from } => {
            let (imported, skipped) = import(&from, file)?;
            output::message(
                out,
                format,
                &format!("imported {imported} tokens; {skipped} were already present"),
            )?;
        }
    }
    Ok(())
}

fn no_token(uid: &str) -> CliError {
    CliError::NotFound(format!(
        "no token with uid `{uid}`; `bentogate token list` shows them"
    ))
}

fn read(file: &Writable) -> Result<TokenFile, CliError> {
    Ok(file.read()?)
}

/// Reads `--expires` (a duration from `now` or an absolute time), refusing the past.
pub(crate) fn expiry(
    expires: Option<&str>,
    now: clock::UnixSeconds,
) -> Result<Option<clock::UnixSeconds>, CliError> {
    let expired_at = expires
        .map(|e| clock::parse_expiry(e, now))
        .transpose()
        .map_err(|e| CliError::Usage(format!("--expires: {e}")))?;
    if expired_at.is_some_and(|at| at <= now) {
        return Err(CliError::Usage(
            "--expires is in the past; give a future time or a duration like 30d".into(),
        ));
    }
    Ok(expired_at)
}

fn create(args: CreateArgs, file: &Writable) -> Result<(Secret, Token), CliError> {
    let now = clock::now();
    let expired_at = expiry(args.expires.as_deref(), now)?;
    let scopes = Scopes::from_slice(&args.scopes);
    if scopes.is_empty() && args.deployments.is_empty() && !args.all_deployments && !args.monitoring
    {
        return Err(CliError::Usage(
            "a token needs at least one kind of access: --deployment NAME, --all-deployments, --scope or --monitoring".into(),
        ));
    }
    let secret =
        Secret::generate().map_err(|e| CliError::Io(format!("no randomness from the OS: {e}")))?;
    let uid =
        token::new_uid().map_err(|e| CliError::Io(format!("no randomness from the OS: {e}")))?;
    let record = Token {
        description: args.description,
        expired_at,
        scopes,
        deployments: args.deployments,
        all_deployments: args.all_deployments,
        monitoring: args.monitoring,
        ..Token::new(uid, args.name, secret.digest(), args.user, now)
    };
    let stored = record.clone();
    let usage = file.update(move |f| {
        if stored.kind == OwnerKind::Personal && !f.member(&stored.user).is_some_and(|m| m.active) {
            return Ok(Some(format!(
                "no active member `{}`; add one with `bentogate member add {}`",
                stored.user, stored.user
            )));
        }
        f.tokens.push(stored);
        Ok(None)
    })?;
    match usage {
        Some(message) => Err(CliError::Usage(message)),
        None => Ok((secret, record)),
    }
}

/// One entry of an import file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportEntry {
    name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    digest: Option<Digest>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    deployments: Vec<String>,
    #[serde(default)]
    all_deployments: bool,
    #[serde(default)]
    scopes: Vec<Scope>,
    #[serde(default)]
    monitoring: bool,
    #[serde(default)]
    expired_at: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

impl std::fmt::Debug for ImportEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportEntry")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn import(from: &Path, file: &Writable) -> Result<(usize, usize), CliError> {
    let text = std::fs::read_to_string(from).map_err(|e| StoreError::io(from, e))?;
    let bad = |line: Option<usize>, message: String| StoreError::Corrupt {
        path: from.display().to_string(),
        line,
        message,
    };
    let entries: Vec<ImportEntry> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).map_err(|e| bad(Some(e.line()), e.to_string()))?
    } else {
        crate::yaml::from_str(&text).map_err(|e| bad(e.line(), e.to_string()))?
    };
    let now = clock::now();
    let mut records = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let digest = match (e.value, e.digest) {
            (Some(v), None) => {
                let v = Secret::new(v);
                if token::check(v.expose().as_bytes()).is_err() {
                    return Err(bad(None, format!("entry {i} ({}): the value is not a token: use 16 to 512 characters of letters, digits and -._~+/", e.name)).into());
                }
                v.digest()
            }
            (None, Some(d)) => d,
            _ => {
                return Err(bad(
                    None,
                    format!(
                        "entry {i} ({}): give exactly one of `value` or `digest`",
                        e.name
                    ),
                )
                .into())
            }
        };
        let expired_at = e
            .expired_at
            .as_deref()
            .map(clock::parse_absolute)
            .transpose()
            .map_err(|err| bad(None, format!("entry {i} ({}): expired_at: {err}", e.name)))?;
        let uid = token::new_uid()
            .map_err(|err| CliError::Io(format!("no randomness from the OS: {err}")))?;
        records.push(Token {
            description: e.description,
            expired_at,
            scopes: Scopes::from_slice(&e.scopes),
            deployments: e.deployments,
            all_deployments: e.all_deployments,
            monitoring: e.monitoring,
            ..Token::new(uid, e.name, digest, e.user, now)
        });
    }
    Ok(file.update(move |f| {
        let mut known: std::collections::HashSet<Digest> =
            f.tokens.iter().map(|t| t.digest).collect();
        let total = records.len();
        let before = f.tokens.len();
        f.tokens
            .extend(records.into_iter().filter(|r| known.insert(r.digest)));
        let added = f.tokens.len() - before;
        Ok((added, total - added))
    })?)
}

/// Runs a member command against `file`, printing to `out`.
pub fn member(
    command: MemberCommand,
    store: impl Into<Writable>,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let file = &store.into();
    let change = match command {
        MemberCommand::Add { name, email, admin } => MemberChange::Add { name, email, admin },
        MemberCommand::Remove { name } => MemberChange::Remove { name },
        MemberCommand::Promote { name } => MemberChange::Promote { name },
        MemberCommand::Deactivate { name } => MemberChange::Deactivate { name },
        MemberCommand::List => {
            let f = read(file)?;
            output::members(out, format, &f.members)?;
            return Ok(());
        }
    };
    let said = match &change {
        MemberChange::Add { name, .. } => format!("added member {name}"),
        MemberChange::Remove { name } => format!("removed member {name}"),
        MemberChange::Promote { name } => format!("{name} is now an admin"),
        MemberChange::Deactivate { name } => format!("deactivated member {name}"),
    };
    let removal = matches!(change, MemberChange::Remove { .. });
    let deactivation = matches!(change, MemberChange::Deactivate { .. });
    let killed = file
        .update(|f| Ok(apply_member_change(f, change)))?
        .map_err(|e| match e {
            ControlError::NotFound(m) => {
                CliError::NotFound(format!("{m}; `bentogate member list` shows them"))
            }
            ControlError::Conflict(m) => CliError::Conflict(m),
            other => CliError::Usage(other.to_string()),
        })?;
    let said = if removal {
        format!("{said} and deleted {killed} personal tokens")
    } else if deactivation {
        format!("{said}; her {killed} personal tokens no longer work")
    } else {
        said
    };
    output::message(out, format, &said)?;
    Ok(())
}
