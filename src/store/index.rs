//! The file source's in-memory index: every token record once, reachable by digest (the data
//! plane) and by uid (the control plane), with the members beside it.
//!
//! Owns what the token file holds once it is parsed, and the operations the file store runs on
//! it: one record in or out, a page of the listing, a member change. The index is replaced whole
//! on each change (the maps are cloned, the records are shared by `Arc`), so readers never lock
//! and a change costs a copy of two tables of pointers, not of the records.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::Arc;

use super::format::{self, Member, Organization, TokenFile};
use super::members::{self, MemberChange};
use super::records::{Page, PageQuery, PageStart};
use super::StoreError;
use crate::clock::UnixSeconds;
use crate::token::{Digest, OwnerKind, Token};

/// A record keyed by its uid, so one `Arc` serves as both key and value.
#[derive(Clone)]
struct ByUid(Arc<Token>);

impl PartialEq for ByUid {
    fn eq(&self, other: &Self) -> bool {
        self.0.uid == other.0.uid
    }
}

impl Eq for ByUid {}

impl Hash for ByUid {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.uid.as_str().hash(state);
    }
}

impl Borrow<str> for ByUid {
    fn borrow(&self) -> &str {
        &self.0.uid
    }
}

/// Everything the token file holds, indexed.
#[derive(Clone, Default)]
pub struct Index {
    organization: Organization,
    members: Vec<Member>,
    /// Names of active members: a personal token is live only while its owner is one.
    active: HashSet<String, Fast>,
    by_uid: HashSet<ByUid>,
    /// Probed once per request for a token (the data plane's only lookup for the file source).
    /// Keys are SHA-256 outputs and members' names, so a fast seeded hash suffices: SipHash
    /// cost more than the probe itself.
    by_digest: HashMap<Digest, Arc<Token>, Fast>,
}

/// The hasher of the per-request maps.
type Fast = foldhash::fast::RandomState;

impl Index {
    /// Indexes a parsed (and validated) file. An organization without a creation time gets
    /// its oldest token's (or `now`), so the client sees a stable one.
    pub fn new(file: TokenFile, now: UnixSeconds) -> Index {
        let mut organization = file.organization;
        if organization.created_at.is_none() {
            organization.created_at = Some(
                file.tokens
                    .iter()
                    .map(|t| t.created_at)
                    .min()
                    .unwrap_or(now),
            );
        }
        let active = file
            .members
            .iter()
            .filter(|m| m.active)
            .map(|m| m.name.clone())
            .collect();
        let mut by_uid = HashSet::with_capacity(file.tokens.len());
        let mut by_digest = HashMap::with_capacity_and_hasher(file.tokens.len(), Fast::default());
        for t in file.tokens {
            let t = Arc::new(t);
            by_digest.insert(t.digest, Arc::clone(&t));
            by_uid.insert(ByUid(t));
        }
        Index {
            organization,
            members: file.members,
            active,
            by_uid,
            by_digest,
        }
    }

    /// The live record for a digest: known, and organization-owned or owned by an active member.
    #[inline]
    pub fn live(&self, digest: &Digest) -> Option<&Arc<Token>> {
        self.by_digest
            .get(digest)
            .filter(|t| t.kind == OwnerKind::Organization || self.active.contains(&t.user))
    }

    /// Number of live tokens (what `bentogate_tokens_loaded` reports).
    pub fn live_count(&self) -> usize {
        self.by_digest
            .values()
            .filter(|t| t.kind == OwnerKind::Organization || self.active.contains(&t.user))
            .count()
    }

    /// Number of records, live or not.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// True when the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// Every record.
    pub fn records(&self) -> impl Iterator<Item = &Arc<Token>> {
        self.by_uid.iter().map(|r| &r.0)
    }

    /// The record with this uid.
    pub fn get(&self, uid: &str) -> Option<&Arc<Token>> {
        self.by_uid.get(uid).map(|r| &r.0)
    }

    /// The organization.
    pub fn organization(&self) -> &Organization {
        &self.organization
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Carries unflushed last-use times over from the index this one replaces (a reload of an
    /// edit made outside this process), so a reload never forgets a use not yet written.
    pub fn carry_usage(&self, old: &Index) {
        for t in self.records() {
            if let Some(o) = old.get(&t.uid) {
                t.used.record(o.used.get());
            }
        }
    }

    /// Adds a record (see [`super::records::TokenStore::insert`] for the refusals).
    pub fn insert(&mut self, token: Token) -> Result<(), StoreError> {
        if token.kind == OwnerKind::Personal && !self.active.contains(&token.user) {
            return Err(StoreError::NotActiveMember(token.user));
        }
        if self.by_uid.contains(token.uid.as_str()) || self.by_digest.contains_key(&token.digest) {
            return Err(StoreError::Duplicate);
        }
        if !token.has_access() {
            return Err(StoreError::NoAccess);
        }
        let t = Arc::new(token);
        self.by_digest.insert(t.digest, Arc::clone(&t));
        self.by_uid.insert(ByUid(t));
        Ok(())
    }

    /// Removes a record; the removed one.
    pub fn remove(&mut self, uid: &str) -> Option<Arc<Token>> {
        let ByUid(t) = self.by_uid.take(uid)?;
        self.by_digest.remove(&t.digest);
        Some(t)
    }

    /// Replaces a record by one with the same uid and digest (an edit).
    pub fn replace(&mut self, token: Token) {
        let t = Arc::new(token);
        t.used.record(self.get(&t.uid).map_or(0, |o| o.used.get()));
        self.by_digest.insert(t.digest, Arc::clone(&t));
        self.by_uid.replace(ByUid(t));
    }

    /// Applies a member change ([`members::check`] first); returns the personal tokens a
    /// removal deleted or a deactivation disabled.
    pub fn change_member(&mut self, change: &MemberChange) -> Result<usize, StoreError> {
        members::check(&self.members, change)?;
        members::apply(&mut self.members, change);
        let name = change.name();
        let owned: Vec<String> = match change {
            MemberChange::Remove { .. } | MemberChange::Deactivate { .. } => self
                .records()
                .filter(|t| t.kind == OwnerKind::Personal && t.user == name)
                .map(|t| t.uid.clone())
                .collect(),
            _ => Vec::new(),
        };
        match change {
            MemberChange::Add { .. } => {
                self.active.insert(name.to_owned());
            }
            MemberChange::Remove { .. } => {
                self.active.remove(name);
                for uid in &owned {
                    self.remove(uid);
                }
            }
            MemberChange::Deactivate { .. } => {
                self.active.remove(name);
            }
            MemberChange::Promote { .. } => {}
        }
        Ok(owned.len())
    }

    /// Adds what `file` has that this index lacks (by member name, uid and digest).
    pub fn import(&mut self, file: TokenFile) -> (usize, usize) {
        if self.members.is_empty() && self.by_uid.is_empty() {
            self.organization = file.organization;
        }
        let mut members = 0;
        for m in file.members {
            if !self.members.iter().any(|k| k.name == m.name) {
                if m.active {
                    self.active.insert(m.name.clone());
                }
                self.members.push(m);
                members += 1;
            }
        }
        let mut tokens = 0;
        for t in file.tokens {
            if !self.by_uid.contains(t.uid.as_str()) && !self.by_digest.contains_key(&t.digest) {
                let t = Arc::new(t);
                self.by_digest.insert(t.digest, Arc::clone(&t));
                self.by_uid.insert(ByUid(t));
                tokens += 1;
            }
        }
        (members, tokens)
    }

    /// One page of the listing: one pass over the records, then a partial sort of what the
    /// page needs.
    pub fn page(&self, query: &PageQuery) -> Page {
        let listed = |t: &&Arc<Token>| {
            query.visibility.shows(t) && query.search.as_ref().is_none_or(|s| s.matches(t))
        };
        let mut total = 0u64;
        let mut hits: Vec<&Arc<Token>> = Vec::new();
        for t in self.records().filter(listed) {
            total += 1;
            if let PageStart::After(c) = &query.start {
                if !c.precedes(t) {
                    continue;
                }
            }
            hits.push(t);
        }
        let wanted = match query.start {
            PageStart::Offset(skip) => skip.saturating_add(query.count),
            PageStart::After(_) => query.count,
        };
        if hits.len() > wanted && wanted > 0 {
            hits.select_nth_unstable_by(wanted - 1, |a, b| newest_first(a, b));
            hits.truncate(wanted);
        } else if wanted == 0 {
            hits.clear();
        }
        hits.sort_unstable_by(|a, b| newest_first(a, b));
        // Only the page itself is copied out, not what an offset skips.
        if let PageStart::Offset(skip) = query.start {
            hits.drain(..skip.min(hits.len()));
        }
        let items = hits.into_iter().map(|t| (**t).clone()).collect();
        let from_here = PageQuery {
            start: PageStart::Offset(0),
            ..query.clone()
        };
        Page::cut(items, total, &from_here)
    }

    /// Writes the file in one streaming pass: the organization, then one member and one token
    /// per line (oldest first), in the JSON form [`format::TokenFile::parse`] reads.
    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut tokens: Vec<&Arc<Token>> = self.records().collect();
        tokens.sort_unstable_by(|a, b| newest_first(b, a));
        format::write_file(
            out,
            &self.organization,
            &self.members,
            tokens.into_iter().map(|t| &**t),
        )
    }

    /// Everything as a file (for export).
    pub fn to_file(&self) -> TokenFile {
        let mut tokens: Vec<Token> = self.records().map(|t| (**t).clone()).collect();
        tokens.sort_unstable_by(|a, b| newest_first(b, a));
        TokenFile {
            organization: self.organization.clone(),
            members: self.members.clone(),
            tokens,
        }
    }
}

/// The listing's order: newest first, ties by uid.
pub fn newest_first(a: &Token, b: &Token) -> Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| a.uid.cmp(&b.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::Role;
    use crate::store::records::{Search, Visibility};

    fn token(uid: &str, owner: Option<&str>, at: UnixSeconds) -> Token {
        Token {
            deployments: vec!["a".to_owned()],
            ..Token::new(
                uid.to_owned(),
                format!("name-{uid}"),
                Digest::of(uid.as_bytes()),
                owner.map(str::to_owned),
                at,
            )
        }
    }

    fn member(name: &str, active: bool) -> Member {
        Member {
            name: name.into(),
            email: None,
            role: Role::Member,
            active,
        }
    }

    #[test]
    fn personal_tokens_die_with_membership() {
        let mut f = TokenFile::default();
        f.members.push(member("ann", true));
        f.members.push(member("bob", false));
        f.tokens.push(token("t1", Some("ann"), 1));
        f.tokens.push(token("t2", Some("bob"), 1));
        f.tokens.push(token("t3", Some("gone"), 1));
        f.tokens.push(token("t4", None, 1));
        let mut index = Index::new(f, 5);
        assert!(index.live(&Digest::of(b"t1")).is_some());
        assert!(index.live(&Digest::of(b"t2")).is_none());
        assert!(index.live(&Digest::of(b"t3")).is_none());
        assert!(index.live(&Digest::of(b"t4")).is_some());
        assert_eq!((index.len(), index.live_count()), (4, 2));
        assert_eq!(index.organization().created_at, Some(1));
        // Deactivating ann kills t1 at once; removing her deletes it.
        let deactivate = MemberChange::Deactivate { name: "ann".into() };
        assert_eq!(index.change_member(&deactivate).unwrap(), 1);
        assert!(index.live(&Digest::of(b"t1")).is_none());
        assert!(index.get("t1").is_some());
        let remove = MemberChange::Remove { name: "ann".into() };
        assert_eq!(index.change_member(&remove).unwrap(), 1);
        assert!(index.get("t1").is_none());
        // A personal token needs an active owner; uids and digests are unique.
        assert!(matches!(
            index.insert(token("t5", Some("bob"), 2)),
            Err(StoreError::NotActiveMember(_))
        ));
        assert!(matches!(
            index.insert(token("t4", None, 2)),
            Err(StoreError::Duplicate)
        ));
    }

    #[test]
    fn pages_are_newest_first_and_cursors_skip_nothing() {
        let mut f = TokenFile::default();
        for i in 0..50u32 {
            // Ten tokens share each second, so ties are broken by uid.
            f.tokens
                .push(token(&format!("u{i:02}"), None, i64::from(i / 10)));
        }
        let index = Index::new(f, 100);
        let mut query = PageQuery {
            visibility: Visibility::All,
            search: None,
            start: PageStart::Offset(0),
            count: 7,
        };
        let mut seen = Vec::new();
        loop {
            let page = index.page(&query);
            assert_eq!(page.total, 50);
            seen.extend(page.items.iter().map(|t| (t.created_at, t.uid.clone())));
            match page.next {
                Some(c) => query.start = PageStart::After(c),
                None => break,
            }
        }
        let mut want = seen.clone();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        want.dedup();
        assert_eq!(seen, want, "every token once, in order");
        assert_eq!(seen.len(), 50);
        let offset = index.page(&PageQuery {
            start: PageStart::Offset(45),
            ..query.clone()
        });
        assert_eq!(offset.items.len(), 5);
        let search = index.page(&PageQuery {
            search: Search::new("NAME-U1"),
            start: PageStart::Offset(0),
            ..query
        });
        assert_eq!(search.total, 10);
    }
}
