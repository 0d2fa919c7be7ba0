//! The member commands against the local store: add, remove, promote, deactivate and list.
//!
//! The rules of a member change live in `store::members` (shared with the control-plane API);
//! this file only maps the command to one and words the outcome. Must never decide a rule itself.

use std::io::Write;

use clap::Subcommand;

use super::{output, CliError, Output};
use crate::store::{MemberChange, MemberRefusal, StoreError, TokenStore};

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
    /// Print a one-time link that signs a member in to the web console (valid 10 minutes,
    /// single use; the session acts as the member). Run where the token store is.
    LoginLink {
        /// The member.
        name: String,
        /// The console's address as the member's browser reaches it (default: the admin
        /// listener from the configuration, e.g. http://127.0.0.1:9901).
        #[arg(long)]
        url: Option<String>,
    },
}

/// `member login-link`: stores a link for an active member and prints its URL under `base`.
pub fn login_link(
    name: &str,
    base: &str,
    store: &dyn TokenStore,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match store.member(name)? {
        Some(m) if m.active => {}
        Some(_) => {
            return Err(CliError::Usage(format!(
                "member {name} is deactivated; a sign-in link would not work"
            )))
        }
        None => {
            return Err(CliError::NotFound(format!(
                "no member {name}; `bentogate member list` shows them"
            )))
        }
    }
    let secret = crate::console::create_link(store.console(), name)
        .map_err(|e| CliError::Io(e.to_string()))?;
    let url = format!("{}/login/link/{secret}", base.trim_end_matches('/'));
    if format == Output::Table {
        writeln!(out, "{url}")?;
        writeln!(
            out,
            "(single use, valid 10 minutes; it signs {name} in to the console as herself)"
        )?;
    } else {
        let v = serde_json::json!({ "member": name, "url": url, "expires_in_seconds": 600 });
        output::structured(out, format, &v)?;
    }
    Ok(())
}

/// Runs a member command against `store`, printing to `out`.
pub fn member(
    command: MemberCommand,
    store: &dyn TokenStore,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let change = match command {
        MemberCommand::Add { name, email, admin } => MemberChange::Add { name, email, admin },
        MemberCommand::Remove { name } => MemberChange::Remove { name },
        MemberCommand::Promote { name } => MemberChange::Promote { name },
        MemberCommand::Deactivate { name } => MemberChange::Deactivate { name },
        MemberCommand::List => {
            output::members(out, format, &store.members()?)?;
            return Ok(());
        }
        MemberCommand::LoginLink { .. } => {
            return Err(CliError::Usage(
                "member login-link needs the console's address: run it through `bentogate member login-link`".into(),
            ))
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
    let killed = store.change_member(&change).map_err(|e| match e {
        StoreError::Member(r @ MemberRefusal::NoSuchMember) => {
            CliError::NotFound(format!("{r}; `bentogate member list` shows them"))
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
