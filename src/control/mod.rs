//! The control plane: who may do what to tokens and members, over the writable store (the
//! token file or the shared database).
//!
//! Owns the permission rules of docs/design.md (The control plane) ([`Caller`]) and the
//! operations the HTTP API ([`api`]) and token introspection ([`introspect`]) expose. Each
//! operation reads the caller and the record it is about through the store's per-record calls
//! ([`crate::store::TokenStore`]); a change is seen by this gateway's data plane before the API
//! answers. HTTP shapes live in [`api`]; errors are mapped to statuses in one place
//! ([`ControlError::status`]), store refusals to errors in one place (`From<StoreError>`).

pub mod api;
pub mod audit;
pub mod grant;
pub mod introspect;
pub mod issuance;
pub mod view;

pub use crate::store::members::{
    shown_member, valid_member_name, MemberChange, MemberRefusal, MEMBER_NAME_MAX,
};
use std::sync::Arc;

use http::StatusCode;

use crate::clock::UnixSeconds;
use crate::store::records::{Page, PageQuery, PageStart, Search, TokenEdit, Visibility};
use crate::store::{Member, Organization, Role, StoreError, TokenSource, TokenStore};
use crate::token::{OwnerKind, Scope, Scopes, Secret, Token};

/// Why a control-plane request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No token, or not a live one.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A live token that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such token or member (or not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The request body or parameters are wrong.
    #[error("{0}")]
    Invalid(String),
    /// The change would leave the store in a state it must not reach (no active admin).
    #[error("{0}")]
    Conflict(String),
    /// The token file could not be read or written.
    #[error("token store: {0}")]
    Store(StoreError),
    /// This gateway holds no writable store.
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    /// The HTTP status for this error; the one place control-plane errors meet HTTP.
    pub fn status(&self) -> StatusCode {
        match self {
            ControlError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ControlError::Forbidden(_) => StatusCode::FORBIDDEN,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Store(StoreError::Database(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<StoreError> for ControlError {
    /// A store's refusals are the caller's to fix (4xx); its failures are not (5xx).
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotActiveMember(_) => ControlError::Forbidden(e.to_string()),
            StoreError::Duplicate => ControlError::Conflict(e.to_string()),
            StoreError::NoAccess => ControlError::Invalid(e.to_string()),
            StoreError::Member(r) => match r {
                MemberRefusal::BadName | MemberRefusal::Exists => {
                    ControlError::Invalid(r.to_string())
                }
                MemberRefusal::NoSuchMember => ControlError::NotFound(r.to_string()),
                MemberRefusal::LastAdmin(_) => ControlError::Conflict(r.to_string()),
            },
            other => ControlError::Store(other),
        }
    }
}

/// An authenticated control-plane caller: a live token with the `api` scope, and the member
/// behind it if it is a personal token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token the request presented.
    pub token: Arc<Token>,
    /// The owning member of a personal token (always active: otherwise the token is not live).
    pub member: Option<Member>,
}

impl Caller {
    /// The user name the caller acts as (a personal token's owner, an organization token's
    /// creator); audit lines and new personal tokens use it.
    pub fn user(&self) -> &str {
        &self.token.user
    }

    /// Organization tokens speak for the organization; personal tokens for an active member.
    pub fn is_member(&self) -> bool {
        self.token.kind == OwnerKind::Organization || self.member.as_ref().is_some_and(|m| m.active)
    }

    /// Admin rights need both an admin (an organization token counts as one: only admins make
    /// them) and the `write_organization` scope on the presented token.
    pub fn is_admin(&self) -> bool {
        let admin = match self.token.kind {
            OwnerKind::Organization => true,
            OwnerKind::Personal => self.member.as_ref().is_some_and(|m| m.role == Role::Admin),
        };
        admin && self.token.scopes.contains(Scope::WriteOrganization)
    }

    /// Which tokens the caller may see: an admin every token, a member the organization's and
    /// her own personal ones, an organization token without admin rights the organization's.
    pub fn visibility(&self) -> Visibility {
        if self.is_admin() {
            Visibility::All
        } else if self.token.kind == OwnerKind::Personal {
            Visibility::OrganizationAndPersonalOf(self.token.user.clone())
        } else {
            Visibility::Organization
        }
    }

    /// True when the caller may see `t` (what [`Caller::visibility`] lists).
    pub fn sees(&self, t: &Token) -> bool {
        self.is_member() && self.visibility().shows(t)
    }

    /// True when the caller may edit or delete `t`, which she sees: her own personal tokens for
    /// a member; any token for an admin. The one home of that rule (the API refuses with it,
    /// the console hides buttons with it).
    pub fn may_change(&self, t: &Token) -> bool {
        let own = t.kind == OwnerKind::Personal && t.user == self.user();
        own || self.is_admin()
    }
}

/// What a create request asks for; the optional extensions say what the bentoml client cannot.
#[derive(Debug, Default, Clone)]
pub struct NewToken {
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Developer Operations scopes.
    pub scopes: Scopes,
    /// Expiry.
    pub expired_at: Option<UnixSeconds>,
    /// Protected Endpoint Access to these deployments.
    pub deployments: Vec<String>,
    /// Protected Endpoint Access to All Deployments.
    pub all_deployments: bool,
    /// Organization (true) or personal (false); unset: personal for a personal caller,
    /// organization for an admin organization token.
    pub organization: Option<bool>,
    /// May read monitoring routes.
    pub monitoring: bool,
}

/// The token store behind the control plane, with the permission rules applied to each call.
/// Every call reads the caller and the record it is about, never the whole organization.
pub struct Store {
    records: Arc<dyn TokenStore>,
    /// The deployments this gateway's routes serve (replaced on reload): a token created through
    /// the API may name only these ([`issuance::unrouted`]).
    routed: arc_swap::ArcSwap<Vec<String>>,
    /// The source the data plane reads: told to pick up changes made by others before a
    /// request is judged.
    source: Arc<dyn TokenSource>,
}

impl Store {
    /// The control plane over `source`'s records; none when this gateway holds none (the
    /// `introspect` source).
    pub fn new(source: Arc<dyn TokenSource>) -> Option<Store> {
        Some(Store {
            records: Arc::clone(&source).store()?,
            routed: arc_swap::ArcSwap::from_pointee(Vec::new()),
            source,
        })
    }

    /// Sets the deployments the routes serve (at start and on every reload).
    pub fn set_routed(&self, deployments: Vec<String>) {
        self.routed.store(Arc::new(deployments));
    }

    /// The deployments the routes serve now (the console's Protected Endpoint Access choices).
    pub fn routed(&self) -> Vec<String> {
        self.routed.load().as_ref().clone()
    }

    /// The records, for views that need members or the organization.
    pub fn records(&self) -> &dyn TokenStore {
        &*self.records
    }

    /// Picks up edits made to the file by others (the local CLI, an operator) before a
    /// control-plane request is judged, instead of waiting for the next poll. (The database's
    /// writes evict through notifications instead.)
    pub fn refresh(&self) {
        self.source.refresh();
    }

    /// The caller for a live token: it must hold the `api` scope.
    pub fn caller(&self, token: Arc<Token>) -> Result<Caller, ControlError> {
        if !token.scopes.contains(Scope::Api) {
            return Err(ControlError::Forbidden(
                "this token has no `api` scope; create one with `--scope api` to use the control plane"
                    .into(),
            ));
        }
        let member = match token.kind {
            OwnerKind::Personal => self.records.member(&token.user)?,
            OwnerKind::Organization => None,
        };
        Ok(Caller { token, member })
    }

    /// One page of the tokens the caller may see, newest first, filtered by `search` (a
    /// case-insensitive part of the name, uid or description).
    pub fn list(
        &self,
        caller: &Caller,
        search: Option<&str>,
        start: PageStart,
        count: usize,
    ) -> Result<Page, ControlError> {
        if !caller.is_member() {
            return Ok(Page::default());
        }
        self.page(caller.visibility(), search, start, count)
    }

    /// One page of `visibility`, filtered by `search` (the one reading of a search text).
    fn page(
        &self,
        visibility: Visibility,
        search: Option<&str>,
        start: PageStart,
        count: usize,
    ) -> Result<Page, ControlError> {
        let search = match search {
            Some(s) => Some(Search::new(s).ok_or_else(|| {
                ControlError::Invalid("`search` must not contain control characters".into())
            })?),
            None => None,
        };
        Ok(self.records.page(&PageQuery {
            visibility,
            search,
            start,
            count,
        })?)
    }

    /// One page of the console's tab: the caller's own personal tokens (`personal`), or the
    /// organization's tokens; both are parts of what [`Store::list`] shows her.
    pub fn list_tab(
        &self,
        caller: &Caller,
        personal: bool,
        search: Option<&str>,
        start: PageStart,
        count: usize,
    ) -> Result<Page, ControlError> {
        // An organization token has no personal tokens (its `user` is only who made it).
        let no_personal = personal && caller.token.kind == OwnerKind::Organization;
        if !caller.is_member() || no_personal {
            return Ok(Page::default());
        }
        let visibility = if personal {
            Visibility::PersonalOf(caller.user().to_owned())
        } else {
            Visibility::Organization
        };
        self.page(visibility, search, start, count)
    }

    /// The console's state (sessions, links, login codes), kept with the records.
    pub fn console(&self) -> &dyn crate::store::console::ConsoleStore {
        self.records.console()
    }

    /// One token the caller may see.
    pub fn get(&self, caller: &Caller, uid: &str) -> Result<Token, ControlError> {
        self.records
            .get(uid)?
            .filter(|t| caller.sees(t))
            .ok_or_else(|| no_token(uid))
    }

    /// Creates a token for `caller` ([`issuance::issue`]); the value is returned this once and
    /// never kept. The data plane sees the token before this returns.
    pub fn create(&self, caller: &Caller, req: NewToken) -> Result<(Secret, Token), ControlError> {
        let routed = self.routed.load();
        let issuer = issuance::Issuer::Caller {
            caller,
            routed: &routed,
        };
        issuance::issue(&*self.records, issuer, req)
    }

    /// The token `uid` if the caller may change it: her own personal tokens for a member; any
    /// token she sees for an admin.
    fn changeable(&self, caller: &Caller, uid: &str, what: &str) -> Result<Token, ControlError> {
        let t = self.get(caller, uid)?;
        if !caller.may_change(&t) {
            return Err(ControlError::Forbidden(format!(
                "{what} an organization token needs an admin's token with the `write_organization` scope"
            )));
        }
        Ok(t)
    }

    /// Deletes a token: her own personal tokens for a member; any token for an admin.
    pub fn delete(&self, caller: &Caller, uid: &str) -> Result<Token, ControlError> {
        self.changeable(caller, uid, "deleting")?;
        self.records.delete(uid)?.ok_or_else(|| no_token(uid))
    }

    /// Changes a token's name, description or expiry, under the same rule as deleting it.
    pub fn edit(
        &self,
        caller: &Caller,
        uid: &str,
        edit: &TokenEdit,
    ) -> Result<Token, ControlError> {
        self.changeable(caller, uid, "editing")?;
        if edit.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
            return Err(ControlError::Invalid("`name` must not be empty".into()));
        }
        if edit
            .expired_at
            .flatten()
            .is_some_and(|at| at <= crate::clock::now())
        {
            return Err(ControlError::Invalid(
                "`expired_at` is in the past; give a future time".into(),
            ));
        }
        self.records.edit(uid, edit)?.ok_or_else(|| no_token(uid))
    }

    /// The organization.
    pub fn organization(&self) -> Result<Organization, ControlError> {
        Ok(self.records.organization()?)
    }

    /// One member, for showing who owns a token.
    pub fn member(&self, name: &str) -> Result<Option<Member>, ControlError> {
        Ok(self.records.member(name)?)
    }

    /// The members, for any member.
    pub fn members(&self, caller: &Caller) -> Result<Vec<Member>, ControlError> {
        if !caller.is_member() {
            return Err(ControlError::Forbidden("only members see members".into()));
        }
        Ok(self.records.members()?)
    }

    /// Adds, removes, promotes or deactivates a member (admins only). Removing one deletes her
    /// personal tokens, deactivating one disables them; the count is returned.
    pub fn change_member(
        &self,
        caller: &Caller,
        change: MemberChange,
    ) -> Result<usize, ControlError> {
        if !caller.is_admin() {
            return Err(ControlError::Forbidden(
                "changing members needs an admin's token with the `write_organization` scope"
                    .into(),
            ));
        }
        Ok(self.records.change_member(&change)?)
    }
}

fn no_token(uid: &str) -> ControlError {
    ControlError::NotFound(format!("no token with uid `{}`", shown_uid(uid)))
}

/// A uid from the request as it may be echoed or logged: only if it has a uid's shape (20 hex
/// characters), since a caller who pastes a token value where a uid goes must not see it logged.
pub fn shown_uid(uid: &str) -> &str {
    if uid.len() == 20 && uid.bytes().all(|b| b.is_ascii_hexdigit()) {
        uid
    } else {
        "(not a uid)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Digest;

    fn token(kind: OwnerKind, user: &str, scopes: &[Scope]) -> Arc<Token> {
        let owner = (kind == OwnerKind::Personal).then(|| user.to_owned());
        let mut t = Token::new("u".into(), "n".into(), Digest([0; 32]), owner, 0);
        t.user = user.to_owned();
        t.scopes = Scopes::from_slice(scopes);
        Arc::new(t)
    }

    fn member(name: &str, role: Role) -> Option<Member> {
        Some(Member {
            name: name.into(),
            email: None,
            role,
            active: true,
        })
    }

    #[test]
    fn admin_needs_the_role_and_the_scope() {
        let w = [Scope::Api, Scope::WriteOrganization];
        let personal_admin = Caller {
            token: token(OwnerKind::Personal, "ann", &w),
            member: member("ann", Role::Admin),
        };
        assert!(personal_admin.is_admin());
        let personal_member = Caller {
            token: token(OwnerKind::Personal, "bob", &w),
            member: member("bob", Role::Member),
        };
        assert!(!personal_member.is_admin());
        assert!(personal_member.is_member());
        let admin_without_scope = Caller {
            token: token(OwnerKind::Personal, "ann", &[Scope::Api]),
            member: member("ann", Role::Admin),
        };
        assert!(!admin_without_scope.is_admin());
        let org = Caller {
            token: token(OwnerKind::Organization, "admin", &w),
            member: None,
        };
        assert!(org.is_admin() && org.is_member());
    }

    #[test]
    fn members_see_own_personal_and_all_organization_tokens() {
        let bob = Caller {
            token: token(OwnerKind::Personal, "bob", &[Scope::Api]),
            member: member("bob", Role::Member),
        };
        assert!(bob.sees(&token(OwnerKind::Personal, "bob", &[])));
        assert!(!bob.sees(&token(OwnerKind::Personal, "ann", &[])));
        assert!(bob.sees(&token(OwnerKind::Organization, "ann", &[])));
    }
}
