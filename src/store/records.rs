//! The control plane's view of a store: token and member operations at the grain of one record
//! ([`TokenStore`]), and the listing's query types ([`PageQuery`], [`Cursor`], [`Search`]).
//!
//! Every store implements each operation natively (the file in its in-memory index, the
//! database in a few indexed statements), so a create, a delete or a page costs the same with a
//! million tokens as with a thousand, and nothing reads the whole organization except
//! [`TokenStore::export`] (migration). Calls block (the file is fsynced, the database awaited on
//! the current runtime): async callers run them on the blocking pool.

use super::format::{Member, Organization, TokenFile};
use super::members::MemberChange;
use super::StoreError;
use crate::clock::UnixSeconds;
use crate::token::{OwnerKind, Token};

/// Which tokens a listing may show: decided by the control plane from the caller, applied by
/// the store inside its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every token (an admin).
    All,
    /// Organization tokens only (a non-admin organization token).
    Organization,
    /// Organization tokens and this member's personal tokens.
    OrganizationAndPersonalOf(String),
    /// This member's personal tokens only (the console's Personal tab).
    PersonalOf(String),
}

impl Visibility {
    /// True when `t` is in the listing.
    pub fn shows(&self, t: &Token) -> bool {
        match (self, t.kind) {
            (Visibility::All, _) => true,
            (Visibility::PersonalOf(_), OwnerKind::Organization) => false,
            (_, OwnerKind::Organization) => true,
            (Visibility::Organization, OwnerKind::Personal) => false,
            (Visibility::OrganizationAndPersonalOf(user), OwnerKind::Personal) => t.user == *user,
            (Visibility::PersonalOf(user), OwnerKind::Personal) => t.user == *user,
        }
    }
}

/// A position in the listing's order (newest first, ties by uid): the page after it starts
/// with the next token, whatever was created or deleted meanwhile. Shown to clients as an
/// opaque string (`<created_at>.<uid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The last token's creation time.
    pub created_at: UnixSeconds,
    /// The last token's uid.
    pub uid: String,
}

impl Cursor {
    /// The cursor just past `t`.
    pub fn after(t: &Token) -> Cursor {
        Cursor {
            created_at: t.created_at,
            uid: t.uid.clone(),
        }
    }

    /// Reads a cursor a client sent back; `None` when it is not one bentogate made.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (at, uid) = text.split_once('.')?;
        let valid_uid = !uid.is_empty()
            && uid.len() <= 64
            && uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        Some(Cursor {
            created_at: at.parse().ok()?,
            uid: valid_uid.then(|| uid.to_owned())?,
        })
    }

    /// True when `t` comes after this cursor in the listing's order.
    pub fn precedes(&self, t: &Token) -> bool {
        t.created_at < self.created_at || (t.created_at == self.created_at && t.uid > self.uid)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at, self.uid)
    }
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStart {
    /// Skip this many (the BentoCloud client's `start`); pages shift if tokens are created or
    /// deleted between calls.
    Offset(usize),
    /// Just after this token: stable while tokens come and go.
    After(Cursor),
}

/// The search rule, in one place: a case-insensitive substring of the name, the uid or the
/// description. Control characters are refused before a search is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search(String);

impl Search {
    /// The search for `text`; `None` for text with a control character (it could match across
    /// fields in the database's search column, which separates them with a newline).
    pub fn new(text: &str) -> Option<Search> {
        (!text.chars().any(char::is_control)).then(|| Search(text.to_lowercase()))
    }

    /// True when `t` matches.
    pub fn matches(&self, t: &Token) -> bool {
        let hit = |field: &str| contains_lowercase(field, &self.0);
        hit(&t.name) || hit(&t.uid) || t.description.as_deref().is_some_and(hit)
    }

    /// The lowercased text searched for.
    pub fn text(&self) -> &str {
        &self.0
    }
}

/// True when `haystack`, lowercased, contains `needle` (already lowercase). Without an
/// allocation when both are ASCII (a search reads every record of the file source).
fn contains_lowercase(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        haystack.to_lowercase().contains(needle)
    }
}

/// One page request.
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// What the caller may see.
    pub visibility: Visibility,
    /// Only matching tokens.
    pub search: Option<Search>,
    /// Where the page starts.
    pub start: PageStart,
    /// At most this many tokens.
    pub count: usize,
}

/// One page of the listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Tokens in the whole listing (visibility and search applied, not the start).
    pub total: u64,
    /// The page.
    pub items: Vec<Token>,
    /// Where the next page starts, when this one was full.
    pub next: Option<Cursor>,
}

impl Page {
    /// The page of `sorted` (already in listing order) that `query` asks for, and its cursor.
    pub fn cut(mut sorted: Vec<Token>, total: u64, query: &PageQuery) -> Page {
        if let PageStart::Offset(skip) = query.start {
            sorted.drain(..skip.min(sorted.len()));
        }
        sorted.truncate(query.count);
        let next = (sorted.len() == query.count && query.count > 0)
            .then(|| sorted.last().map(Cursor::after))
            .flatten();
        Page {
            total,
            items: sorted,
            next,
        }
    }
}

/// A change to a token's descriptive fields; what a token grants never changes after issue.
#[derive(Debug, Clone, Default)]
pub struct TokenEdit {
    /// New name.
    pub name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New expiry (`Some(None)`: never).
    pub expired_at: Option<Option<UnixSeconds>>,
}

impl TokenEdit {
    /// Applies the edit to a record at `now`.
    pub fn apply(&self, t: &mut Token, now: UnixSeconds) {
        if let Some(name) = &self.name {
            t.name.clone_from(name);
        }
        if let Some(d) = &self.description {
            t.description.clone_from(d);
        }
        if let Some(e) = self.expired_at {
            t.expired_at = e;
        }
        t.updated_at = now;
    }
}

/// The store behind the control plane and the local CLI: the token file or the database.
pub trait TokenStore: Send + Sync {
    /// The organization (name, creation time).
    fn organization(&self) -> Result<Organization, StoreError>;

    /// One token by uid, with its last use.
    fn get(&self, uid: &str) -> Result<Option<Token>, StoreError>;

    /// Stores a new token. A personal token's owner must be an active member at that moment
    /// ([`StoreError::NotActiveMember`]); a uid or digest already stored is
    /// [`StoreError::Duplicate`]. The data plane of this process sees it before this returns.
    fn insert(&self, token: Token) -> Result<(), StoreError>;

    /// Deletes a token; the deleted record, or `None` if there was none. This process's data
    /// plane refuses it before this returns; other replicas within a second.
    fn delete(&self, uid: &str) -> Result<Option<Token>, StoreError>;

    /// Changes a token's name, description or expiry; the new record, or `None`.
    fn edit(&self, uid: &str, edit: &TokenEdit) -> Result<Option<Token>, StoreError>;

    /// One page of the listing, newest first (ties by uid), with the listing's total.
    fn page(&self, query: &PageQuery) -> Result<Page, StoreError>;

    /// One member.
    fn member(&self, name: &str) -> Result<Option<Member>, StoreError>;

    /// Every member (members are people: a short list, unlike tokens).
    fn members(&self) -> Result<Vec<Member>, StoreError>;

    /// Applies a member change checked by [`super::members::check`] in the same atomic
    /// section; returns the personal tokens a removal deleted or a deactivation disabled.
    fn change_member(&self, change: &MemberChange) -> Result<usize, StoreError>;

    /// Adds the members and tokens of `file` that are not there yet (by name, uid and digest);
    /// returns how many members and tokens were added.
    fn import(&self, file: TokenFile) -> Result<(usize, usize), StoreError>;

    /// Everything, for `migrate --to-file`: the one whole read.
    fn export(&self) -> Result<TokenFile, StoreError>;

    /// Where the records live, for messages (never a secret).
    fn describe(&self) -> String;

    /// The web console's sessions, sign-in links and login codes, kept beside the records so
    /// every replica sharing them honours the same session.
    fn console(&self) -> &dyn super::console::ConsoleStore;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Digest;

    fn token(uid: &str, at: UnixSeconds, name: &str, description: Option<&str>) -> Token {
        Token {
            description: description.map(str::to_owned),
            ..Token::new(
                uid.into(),
                name.into(),
                Digest::of(uid.as_bytes()),
                None,
                at,
            )
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_bentogate_did_not_make() {
        let c = Cursor::after(&token("0123456789abcdef0123", 42, "n", None));
        assert_eq!(Cursor::parse(&c.to_string()), Some(c.clone()));
        for bad in ["", "42", ".x", "x.y", "42.", "42.a b", "42.a/b"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        // Newest first, ties by uid.
        assert!(c.precedes(&token("0000", 41, "n", None)));
        assert!(c.precedes(&token("1123456789abcdef0123", 42, "n", None)));
        assert!(!c.precedes(&token("0023456789abcdef0123", 42, "n", None)));
        assert!(!c.precedes(&token("0000", 43, "n", None)));
    }

    #[test]
    fn search_is_a_case_insensitive_substring_of_name_uid_or_description() {
        let t = token("abcdef", 1, "Deploy-Bot", Some("Nightly CI"));
        for hit in ["deploy", "BOT", "cde", "ly ci", "y-b"] {
            assert!(Search::new(hit).unwrap().matches(&t), "{hit}");
        }
        let accented = token("x", 1, "Ünïcode Straße", None);
        assert!(Search::new("üNÏ").unwrap().matches(&accented));
        assert!(Search::new("STRASSE").is_none_or(|s| !s.matches(&accented)));
        for miss in ["deploybot", "bot\nnightly", "xyz"] {
            assert!(Search::new(miss).is_none_or(|s| !s.matches(&t)), "{miss}");
        }
        assert!(Search::new("a\nb").is_none());
    }

    #[test]
    fn visibility_follows_the_callers_standing() {
        let org = token("o", 1, "n", None);
        let ann = Token {
            kind: OwnerKind::Personal,
            user: "ann".into(),
            ..org.clone()
        };
        assert!(Visibility::All.shows(&ann));
        assert!(!Visibility::Organization.shows(&ann));
        assert!(Visibility::Organization.shows(&org));
        assert!(Visibility::OrganizationAndPersonalOf("ann".into()).shows(&ann));
        assert!(!Visibility::OrganizationAndPersonalOf("bob".into()).shows(&ann));
    }
}
