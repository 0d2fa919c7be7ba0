//! The token commands against the local store: create, list, get, delete and import.
//!
//! `create` prints a token's value, this once; `import` digests the values it reads and forgets
//! them. Must never print, log or keep a value otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Deserialize;

use super::{output, CliError, Output};
use crate::clock;
use crate::control::issuance::{issue, Issuer};
use crate::control::NewToken;
use crate::store::records::{PageQuery, PageStart, Search, Visibility};
use crate::store::{StoreError, TokenFile, TokenStore};
use crate::token::{self, Digest, Scope, Scopes, Secret, Token};

impl TokenCommand {
    /// `create --deployment NAME` must name a deployment the configuration routes (at `config`,
    /// or the embedded one): a token for a name no route has would pass nowhere, and a typo
    /// would go unnoticed until a caller gets 403. Says which deployments exist.
    pub fn refuse_unknown_deployments(&self, config: Option<&Path>) -> Result<(), CliError> {
        let TokenCommand::Create(args) = self else {
            return Ok(());
        };
        if args.deployments.is_empty() {
            return Ok(());
        }
        let config = super::load_config(config)?;
        let known: Vec<String> = config.deployments.iter().map(|d| d.name.clone()).collect();
        if let Some(unknown) = crate::control::issuance::unrouted(&args.deployments, &known) {
            return Err(CliError::Usage(format!(
                "no route in {} is named `{unknown}`; its deployments are: {} (use one of them, or --all-deployments)",
                config.origin,
                known.join(", ")
            )));
        }
        Ok(())
    }
}

/// Token commands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its value, this once.
    Create(CreateArgs),
    /// List tokens (never their values).
    List {
        /// Only tokens whose name, uid or description contains this text (any case).
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

/// Runs a token command against `store`, printing to `out`.
pub fn token(
    command: TokenCommand,
    store: &dyn TokenStore,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        TokenCommand::Create(args) => {
            let (secret, record) = create(args, store)?;
            output::created(out, format, &record, &secret)?;
        }
        TokenCommand::List { search } => {
            let search = match search.as_deref() {
                Some(s) => Some(Search::new(s).ok_or_else(|| {
                    CliError::Usage("--search must not contain control characters".into())
                })?),
                None => None,
            };
            let mut query = PageQuery {
                visibility: Visibility::All,
                search,
                start: PageStart::Offset(0),
                count: LIST_PAGE,
            };
            // Page by cursor: every token once, whatever changes meanwhile.
            let mut all = Vec::new();
            loop {
                let page = store.page(&query)?;
                all.extend(page.items);
                match page.next {
                    Some(c) => query.start = PageStart::After(c),
                    None => break,
                }
            }
            let refs: Vec<&Token> = all.iter().collect();
            output::tokens(out, format, &refs, clock::now())?;
        }
        TokenCommand::Get { uid } => {
            let t = store.get(&uid)?.ok_or_else(|| no_token(&uid))?;
            output::token(out, format, &t, clock::now())?;
        }
        TokenCommand::Delete { uid } => {
            let removed = store.delete(&uid)?.ok_or_else(|| no_token(&uid))?;
            output::message(
                out,
                format,
                &format!("deleted token {} ({})", removed.uid, removed.name),
            )?;
        }
        TokenCommand::Import { file: from } => {
            let (imported, skipped) = import(&from, store)?;
            output::message(
                out,
                format,
                &format!("imported {imported} tokens; {skipped} were already present"),
            )?;
        }
    }
    Ok(())
}

/// Tokens read per page by `token list`.
const LIST_PAGE: usize = 1000;

fn no_token(uid: &str) -> CliError {
    CliError::NotFound(format!(
        "no token with uid `{uid}`; `bentogate token list` shows them"
    ))
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

fn create(args: CreateArgs, store: &dyn TokenStore) -> Result<(Secret, Token), CliError> {
    let now = clock::now();
    let expired_at = expiry(args.expires.as_deref(), now)?;
    let scopes = Scopes::from_slice(&args.scopes);
    if scopes.is_empty() && args.deployments.is_empty() && !args.all_deployments && !args.monitoring
    {
        return Err(CliError::Usage(
            "a token needs at least one kind of access: --deployment NAME, --all-deployments, --scope or --monitoring".into(),
        ));
    }
    let req = NewToken {
        name: args.name,
        description: args.description,
        scopes,
        expired_at,
        deployments: args.deployments,
        all_deployments: args.all_deployments,
        organization: Some(args.user.is_none()),
        monitoring: args.monitoring,
    };
    let owner = args.user.as_deref();
    Ok(issue(store, Issuer::Local { owner }, req)?)
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

fn import(from: &Path, store: &dyn TokenStore) -> Result<(usize, usize), CliError> {
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
    // Values repeated inside the import file count once.
    let mut seen = std::collections::HashSet::new();
    let total = records.len();
    records.retain(|r| seen.insert(r.digest));
    let (_, added) = store.import(TokenFile {
        tokens: records,
        ..TokenFile::default()
    })?;
    Ok((added, total - added))
}
