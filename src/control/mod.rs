//! The control plane: who may do what to tokens and members, over the writable store (the
//! token file or the shared database).
//!
//! Owns the permission rules of docs/design.md (The control plane) ([`Caller`]) and the operations the HTTP API
//! ([`api`]) and token introspection ([`introspect`]) expose. Every change goes through the
//! file store's locked writer and is then reloaded at once, so a token deleted here is refused
//! by this gateway's data plane before the API answers. HTTP shapes live in [`api`]; errors are
//! mapped to statuses in one place ([`ControlError::status`]).

pub mod api;
pub mod audit;
pub mod grant;
pub mod introspect;
pub mod issuance;
pub mod members;
pub mod view;

pub use members::{
    apply_member_change, shown_member, valid_member_name, MemberChange, MEMBER_NAME_MAX,
};
use std::sync::Arc;

use http::StatusCode;

use crate::clock::UnixSeconds;
use crate::store::{Member, Role, StoreError, TokenFile, TokenSource, Writable};
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
    Store(#[from] StoreError),
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

    /// True when the caller may see `t`: her own personal tokens, and organization tokens.
    pub fn sees(&self, t: &Token) -> bool {
        match t.kind {
            OwnerKind::Organization => self.is_member(),
            OwnerKind::Personal => {
                t.user == self.token.user && self.token.kind == OwnerKind::Personal
                    || self.is_admin()
            }
        }
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

/// The writable token store behind the control plane.
pub struct Store {
    writable: Writable,
    /// The source the data plane reads: told to pick up changes at once after a write, and
    /// before a request is judged.
    source: Arc<dyn TokenSource>,
}

impl Store {
    /// The control plane over `source`'s records; none when this gateway holds none (the
    /// `introspect` source).
    pub fn new(source: Arc<dyn TokenSource>) -> Option<Store> {
        Some(Store {
            writable: source.writable()?,
            source,
        })
    }

    /// Everything as it is now, with last-use times merged in.
    pub fn read(&self) -> Result<TokenFile, ControlError> {
        Ok(self.writable.read()?)
    }

    /// Applies `change` atomically, then makes the data plane see it at once.
    pub fn write<T>(
        &self,
        change: impl FnOnce(&mut TokenFile) -> Result<T, StoreError>,
    ) -> Result<T, ControlError> {
        let out = self.writable.update(change)?;
        self.refresh();
        Ok(out)
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
            OwnerKind::Personal => self.writable.member(&token.user)?,
            OwnerKind::Organization => None,
        };
        Ok(Caller { token, member })
    }

    /// The tokens in `file` the caller may see, filtered by `search` (name, uid or description),
    /// newest first: the total and the page `start..start+count`.
    pub fn list<'f>(
        caller: &Caller,
        file: &'f TokenFile,
        search: Option<&str>,
        start: usize,
        count: usize,
    ) -> (usize, Vec<&'f Token>) {
        let mut hits: Vec<&Token> = file
            .tokens
            .iter()
            .filter(|t| caller.sees(t) && search.is_none_or(|s| matches_search(t, s)))
            .collect();
        hits.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.uid.cmp(&b.uid)));
        let total = hits.len();
        let page = hits.into_iter().skip(start).take(count).collect();
        (total, page)
    }

    /// One token in `file` the caller may see.
    pub fn get<'f>(
        caller: &Caller,
        file: &'f TokenFile,
        uid: &str,
    ) -> Result<&'f Token, ControlError> {
        file.tokens
            .iter()
            .find(|t| t.uid == uid && caller.sees(t))
            .ok_or_else(|| no_token(uid))
    }

    /// Creates a token for `caller` ([`issuance::issue`]); the value is returned this once and
    /// never kept. The data plane sees the token before this returns.
    pub fn create(&self, caller: &Caller, req: NewToken) -> Result<(Secret, Token), ControlError> {
        let created = issuance::issue(&self.writable, issuance::Issuer::Caller(caller), req);
        self.refresh();
        created
    }

    /// Deletes a token: her own personal tokens for a member; any token for an admin.
    pub fn delete(&self, caller: &Caller, uid: &str) -> Result<Token, ControlError> {
        let caller = caller.clone();
        let uid = uid.to_owned();
        let outcome = self.write(move |f| {
            let Some(i) = f
                .tokens
                .iter()
                .position(|t| t.uid == uid && caller.sees(t))
            else {
                return Ok(Err(no_token(&uid)));
            };
            let t = &f.tokens[i];
            let own = t.kind == OwnerKind::Personal && t.user == caller.user();
            if !own && !caller.is_admin() {
                return Ok(Err(ControlError::Forbidden(
                    "deleting an organization token needs an admin's token with the `write_organization` scope".into(),
                )));
            }
            Ok(Ok(f.tokens.remove(i)))
        })?;
        outcome
    }

    /// The members, for any member.
    pub fn members(&self, caller: &Caller) -> Result<Vec<Member>, ControlError> {
        if !caller.is_member() {
            return Err(ControlError::Forbidden("only members see members".into()));
        }
        Ok(self.read()?.members)
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
        self.write(move |f| Ok(apply_member_change(f, change)))?
    }
}

/// True when `s` occurs in the token's name, uid or description.
pub fn matches_search(t: &Token, s: &str) -> bool {
    t.name.contains(s)
        || t.uid.contains(s)
        || t.description.as_deref().is_some_and(|d| d.contains(s))
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
