//! Members: the one rule for member names, member changes (add, remove, promote, deactivate),
//! and the guard that keeps the organization with an active admin. Shared by the local CLI and
//! the API ([`apply_member_change`]).

use super::ControlError;
use crate::store::{Member, Role, TokenFile};
use crate::token::OwnerKind;

/// A change to the member list.
#[derive(Debug, Clone)]
pub enum MemberChange {
    /// Add a member.
    Add {
        /// Unique user name.
        name: String,
        /// Contact address.
        email: Option<String>,
        /// Admin from the start.
        admin: bool,
    },
    /// Remove a member and her personal tokens.
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
}

impl MemberChange {
    /// The member the change is about, as the request named her.
    pub fn name(&self) -> &str {
        match self {
            MemberChange::Add { name, .. }
            | MemberChange::Remove { name }
            | MemberChange::Promote { name }
            | MemberChange::Deactivate { name } => name,
        }
    }
}

/// The longest member name.
pub const MEMBER_NAME_MAX: usize = 64;

/// The one rule for member names: 1 to 64 characters of `A-Z a-z 0-9 . _ @ + -` (user names
/// and email addresses fit). A name that breaks it is refused without being echoed.
pub fn valid_member_name(name: &str) -> bool {
    (1..=MEMBER_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
}

/// A member name from a request as it may be logged: only once it passed the name rule.
pub fn shown_member(name: &str) -> &str {
    if valid_member_name(name) {
        name
    } else {
        "(not a member name)"
    }
}

/// Applies a member change to a file (shared by the local CLI and the API). Returns the number
/// of personal tokens a removal deleted or a deactivation disabled.
///
/// Refuses, with [`ControlError::Conflict`], to remove or deactivate the last active admin: the
/// organization would be left with no member who may manage it.
pub fn apply_member_change(f: &mut TokenFile, change: MemberChange) -> Result<usize, ControlError> {
    let name = change.name();
    if !valid_member_name(name) {
        return Err(match change {
            MemberChange::Add { .. } => ControlError::Invalid(format!(
                "a member name is 1 to {MEMBER_NAME_MAX} characters of letters, digits and . _ @ + -"
            )),
            _ => no_member(),
        });
    }
    let last_admin = |f: &TokenFile, name: &str| {
        let is_active_admin = |m: &Member| m.active && m.role == Role::Admin;
        f.member(name).is_some_and(is_active_admin)
            && f.members.iter().filter(|m| is_active_admin(m)).count() == 1
    };
    match change {
        MemberChange::Add { name, email, admin } => {
            if f.member(&name).is_some() {
                return Err(ControlError::Invalid(
                    "a member with this name exists already; `member list` shows them".into(),
                ));
            }
            f.members.push(Member {
                name,
                email,
                role: if admin { Role::Admin } else { Role::Member },
                active: true,
            });
            Ok(0)
        }
        MemberChange::Remove { name } => {
            let Some(i) = f.members.iter().position(|m| m.name == name) else {
                return Err(no_member());
            };
            if last_admin(f, &name) {
                return Err(last_admin_conflict("removed"));
            }
            f.members.remove(i);
            let before = f.tokens.len();
            f.tokens
                .retain(|t| !(t.kind == OwnerKind::Personal && t.user == name));
            Ok(before - f.tokens.len())
        }
        MemberChange::Promote { name } => {
            let m = f
                .members
                .iter_mut()
                .find(|m| m.name == name)
                .ok_or_else(no_member)?;
            m.role = Role::Admin;
            Ok(0)
        }
        MemberChange::Deactivate { name } => {
            if f.member(&name).is_none() {
                return Err(no_member());
            }
            if last_admin(f, &name) {
                return Err(last_admin_conflict("deactivated"));
            }
            if let Some(m) = f.members.iter_mut().find(|m| m.name == name) {
                m.active = false;
            }
            Ok(f.tokens
                .iter()
                .filter(|t| t.kind == OwnerKind::Personal && t.user == name)
                .count())
        }
    }
}

fn last_admin_conflict(done: &str) -> ControlError {
    ControlError::Conflict(format!(
        "this member is the last active admin and cannot be {done}; promote another member to admin first (`bentogate member promote NAME`)"
    ))
}

fn no_member() -> ControlError {
    ControlError::NotFound("no member with this name".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn file_with(members: &[(&str, Role, bool)]) -> TokenFile {
        let mut f = TokenFile::default();
        for (name, role, active) in members {
            f.members.push(Member {
                name: (*name).into(),
                email: None,
                role: *role,
                active: *active,
            });
        }
        f
    }

    #[test]
    fn the_last_active_admin_stays() {
        let mut f = file_with(&[("ann", Role::Admin, true), ("bob", Role::Member, true)]);
        for change in [
            MemberChange::Remove { name: "ann".into() },
            MemberChange::Deactivate { name: "ann".into() },
        ] {
            match apply_member_change(&mut f, change) {
                Err(e @ ControlError::Conflict(_)) => {
                    assert_eq!(e.status(), StatusCode::CONFLICT);
                    assert!(e.to_string().contains("last active admin"), "{e}");
                }
                other => panic!("expected a conflict, got {other:?}"),
            }
        }
        assert_eq!(f.members.len(), 2);
        assert!(f.member("ann").unwrap().active);
        // A deactivated admin does not count: the active one is still the last.
        let mut f = file_with(&[("ann", Role::Admin, true), ("old", Role::Admin, false)]);
        assert!(matches!(
            apply_member_change(&mut f, MemberChange::Remove { name: "ann".into() }),
            Err(ControlError::Conflict(_))
        ));
        // With a second active admin, either may go.
        let mut f = file_with(&[("ann", Role::Admin, true), ("cy", Role::Admin, true)]);
        apply_member_change(&mut f, MemberChange::Deactivate { name: "cy".into() }).unwrap();
        assert!(!f.member("cy").unwrap().active);
        assert!(matches!(
            apply_member_change(&mut f, MemberChange::Remove { name: "ann".into() }),
            Err(ControlError::Conflict(_))
        ));
        // Members who are not admins are removed and deactivated freely.
        let mut f = file_with(&[("ann", Role::Admin, true), ("bob", Role::Member, true)]);
        apply_member_change(&mut f, MemberChange::Deactivate { name: "bob".into() }).unwrap();
        apply_member_change(&mut f, MemberChange::Remove { name: "bob".into() }).unwrap();
        assert_eq!(f.members.len(), 1);
    }

    #[test]
    fn member_names_follow_one_rule_and_are_never_echoed() {
        for ok in [
            "ann",
            "ann.lee",
            "a_b-c",
            "ann+ci@example.com",
            &"x".repeat(64),
        ] {
            assert!(valid_member_name(ok), "{ok}");
        }
        let marker = "MARKER";
        for bad in [
            "",
            &"x".repeat(65),
            "ann lee",
            "ann/..",
            "MARKER\n",
            "MARKER<script>",
            "MARKER%20",
            "MARKERé",
        ] {
            assert!(!valid_member_name(bad), "{bad:?}");
            assert_eq!(shown_member(bad), "(not a member name)");
            let mut f = file_with(&[("ann", Role::Admin, true)]);
            for change in [
                MemberChange::Add {
                    name: bad.into(),
                    email: None,
                    admin: false,
                },
                MemberChange::Remove { name: bad.into() },
                MemberChange::Promote { name: bad.into() },
                MemberChange::Deactivate { name: bad.into() },
            ] {
                let add = matches!(change, MemberChange::Add { .. });
                let e = apply_member_change(&mut f, change).unwrap_err();
                let want = if add {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::NOT_FOUND
                };
                assert_eq!(e.status(), want, "{bad:?}: {e}");
                assert!(!e.to_string().contains(marker), "{e}");
            }
        }
        // Valid names that are unknown or taken are not echoed either.
        let mut f = file_with(&[("MARKER", Role::Admin, true)]);
        let taken = MemberChange::Add {
            name: marker.into(),
            email: None,
            admin: false,
        };
        let e = apply_member_change(&mut f, taken).unwrap_err();
        assert!(!e.to_string().contains(marker), "{e}");
        let e = apply_member_change(
            &mut f,
            MemberChange::Promote {
                name: "MARKER2".into(),
            },
        )
        .unwrap_err();
        assert!(!e.to_string().contains(marker), "{e}");
    }
}
