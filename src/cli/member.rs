//! The member commands against the local store: add, remove, promote, deactivate and list.
//!
//! The rules of a member change live in `control` (shared with the control-plane API); this
//! file only maps the command to one and words the outcome. Must never decide a rule itself.

use std::io::Write;

use clap::Subcommand;

use super::{output, read, CliError, Output};
use crate::control::{apply_member_change, ControlError, MemberChange};
use crate::store::Writable;

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
            other => CliError::from(other),
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
