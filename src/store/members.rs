//! Members: the one rule for member names, the member changes (add, remove, promote,
//! deactivate), and the guard that keeps the organization with an active admin.
//!
//! Every store applies a change natively (the file in memory, the database in SQL), but each
//! first asks [`check`] with the member list it holds inside its atomic section, so the rules
//! live here only. Refusals are typed ([`MemberRefusal`]) and never repeat the name asked for.

use super::format::{Member, Role, TokenFile};
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

    /// The member an `Add` creates.
    pub fn new_member(&self) -> Option<Member> {
        match self {
            MemberChange::Add { name, email, admin } => Some(Member {
                name: name.clone(),
                email: email.clone(),
                role: if *admin { Role::Admin } else { Role::Member },
                active: true,
            }),
            _ => None,
        }
    }
}

/// Why a member change was refused; the messages never repeat the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberRefusal {
    /// The name breaks [`valid_member_name`].
    #[error("a member name is 1 to {MEMBER_NAME_MAX} characters of letters, digits and . _ @ + -")]
    BadName,
    /// No member has this name.
    #[error("no member with this name")]
    NoSuchMember,
    /// `Add` of a name that is taken.
    #[error("a member with this name exists already; `member list` shows them")]
    Exists,
    /// Removing or deactivating the last active admin.
    #[error("this member is the last active admin and cannot be {0}; promote another member to admin first (`bentogate member promote NAME`)")]
    LastAdmin(&'static str),
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

/// Whether `change` may be applied to an organization whose members are `members` (read in
/// the same atomic section that then applies it). Refuses a bad or unknown name, a taken name,
/// and removing or deactivating the last active admin: the organization would be left with no
/// member who may manage it.
pub fn check(members: &[Member], change: &MemberChange) -> Result<(), MemberRefusal> {
    let name = change.name();
    if !valid_member_name(name) {
        return Err(match change {
            MemberChange::Add { .. } => MemberRefusal::BadName,
            _ => MemberRefusal::NoSuchMember,
        });
    }
    let found = members.iter().find(|m| m.name == name);
    let is_active_admin = |m: &Member| m.active && m.role == Role::Admin;
    let last_admin = found.is_some_and(is_active_admin)
        && members.iter().filter(|m| is_active_admin(m)).count() == 1;
    match (change, found) {
        (MemberChange::Add { .. }, Some(_)) => Err(MemberRefusal::Exists),
        (MemberChange::Add { .. }, None) => Ok(()),
        (_, None) => Err(MemberRefusal::NoSuchMember),
        (MemberChange::Remove { .. }, Some(_)) if last_admin => {
            Err(MemberRefusal::LastAdmin("removed"))
        }
        (MemberChange::Deactivate { .. }, Some(_)) if last_admin => {
            Err(MemberRefusal::LastAdmin("deactivated"))
        }
        _ => Ok(()),
    }
}

/// Applies a checked change to a member list in memory (the file store, fixtures).
pub fn apply(members: &mut Vec<Member>, change: &MemberChange) {
    let name = change.name();
    match change {
        MemberChange::Add { .. } => members.extend(change.new_member()),
        MemberChange::Remove { .. } => members.retain(|m| m.name != name),
        MemberChange::Promote { .. } => {
            for m in members.iter_mut().filter(|m| m.name == name) {
                m.role = Role::Admin;
            }
        }
        MemberChange::Deactivate { .. } => {
            for m in members.iter_mut().filter(|m| m.name == name) {
                m.active = false;
            }
        }
    }
}

/// Checks and applies a change to a whole file (`migrate`, fixtures): removing a member
/// deletes her personal tokens. Returns the personal tokens removed or disabled.
pub fn change_file(f: &mut TokenFile, change: &MemberChange) -> Result<usize, MemberRefusal> {
    check(&f.members, change)?;
    apply(&mut f.members, change);
    let name = change.name();
    let owned = |t: &crate::token::Token| t.kind == OwnerKind::Personal && t.user == name;
    Ok(match change {
        MemberChange::Remove { .. } => {
            let before = f.tokens.len();
            f.tokens.retain(|t| !owned(t));
            before - f.tokens.len()
        }
        MemberChange::Deactivate { .. } => f.tokens.iter().filter(|t| owned(t)).count(),
        _ => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, Role, bool)]) -> Vec<Member> {
        list.iter()
            .map(|(name, role, active)| Member {
                name: (*name).into(),
                email: None,
                role: *role,
                active: *active,
            })
            .collect()
    }

    fn change(ms: &mut Vec<Member>, c: MemberChange) -> Result<(), MemberRefusal> {
        check(ms, &c)?;
        apply(ms, &c);
        Ok(())
    }

    #[test]
    fn the_last_active_admin_stays() {
        let mut ms = members(&[("ann", Role::Admin, true), ("bob", Role::Member, true)]);
        assert_eq!(
            change(&mut ms, MemberChange::Remove { name: "ann".into() }),
            Err(MemberRefusal::LastAdmin("removed"))
        );
        assert_eq!(
            change(&mut ms, MemberChange::Deactivate { name: "ann".into() }),
            Err(MemberRefusal::LastAdmin("deactivated"))
        );
        assert_eq!(ms.len(), 2);
        assert!(ms[0].active);
        // A deactivated admin does not count: the active one is still the last.
        let mut ms = members(&[("ann", Role::Admin, true), ("old", Role::Admin, false)]);
        assert!(change(&mut ms, MemberChange::Remove { name: "ann".into() }).is_err());
        // With a second active admin, either may go.
        let mut ms = members(&[("ann", Role::Admin, true), ("cy", Role::Admin, true)]);
        change(&mut ms, MemberChange::Deactivate { name: "cy".into() }).unwrap();
        assert!(!ms[1].active);
        assert!(change(&mut ms, MemberChange::Remove { name: "ann".into() }).is_err());
        // Members who are not admins are removed and deactivated freely.
        let mut ms = members(&[("ann", Role::Admin, true), ("bob", Role::Member, true)]);
        change(&mut ms, MemberChange::Deactivate { name: "bob".into() }).unwrap();
        change(&mut ms, MemberChange::Remove { name: "bob".into() }).unwrap();
        assert_eq!(ms.len(), 1);
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
            let ms = members(&[("ann", Role::Admin, true)]);
            for c in [
                MemberChange::Add {
                    name: bad.into(),
                    email: None,
                    admin: false,
                },
                MemberChange::Remove { name: bad.into() },
                MemberChange::Promote { name: bad.into() },
                MemberChange::Deactivate { name: bad.into() },
            ] {
                let add = matches!(c, MemberChange::Add { .. });
                let e = check(&ms, &c).unwrap_err();
                let want = if add {
                    MemberRefusal::BadName
                } else {
                    MemberRefusal::NoSuchMember
                };
                assert_eq!(e, want, "{bad:?}");
                assert!(!e.to_string().contains(marker), "{e}");
            }
        }
        // Valid names that are unknown or taken are not echoed either.
        let ms = members(&[("MARKER", Role::Admin, true)]);
        let taken = MemberChange::Add {
            name: marker.into(),
            email: None,
            admin: false,
        };
        assert!(!check(&ms, &taken).unwrap_err().to_string().contains(marker));
        let unknown = MemberChange::Promote {
            name: "MARKER2".into(),
        };
        assert!(!check(&ms, &unknown)
            .unwrap_err()
            .to_string()
            .contains(marker));
    }
}
