//! `migrate`: copies a token file into the configured database, or the database into a new
//! token file.
//!
//! Must never overwrite an existing file nor replace records already in the database.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::{local_store, output, CliError, Output};
use crate::config::Config;
use crate::store::{StoreError, TokenFile};

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
    let said = match (&args.from_file, &args.to_file) {
        (Some(from), None) => {
            let text = std::fs::read_to_string(from).map_err(|e| StoreError::io(from, e))?;
            let mut file = TokenFile::parse(&text, from)?;
            // Last uses beside the file (`<file>.last-used`) travel with their tokens.
            let usage = crate::store::usage::read(&crate::store::usage::path_for(from));
            crate::store::usage::merge(&mut file, &usage);
            let offered = (file.members.len(), file.tokens.len());
            let (members, tokens) = local.run(|store| store.import(file))?;
            format!(
                "imported {members} of {} members and {tokens} of {} tokens from {} into {}; the rest were already there",
                offered.0,
                offered.1,
                from.display(),
                local.run(|store| store.describe())
            )
        }
        (None, Some(to)) => {
            let all = local.run(|store| store.export())?;
            let counts = (all.members.len(), all.tokens.len());
            crate::store::file::update(to, move |f| {
                *f = all;
                Ok(())
            })?;
            format!(
                "exported {} members and {} tokens from {} to {}",
                counts.0,
                counts.1,
                local.run(|store| store.describe()),
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
