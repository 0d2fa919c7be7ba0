//! One behaviour for every token store: run against the file store (tests/records.rs) and the
//! database (tests/postgres.rs) with the same records, and compared with the rules written
//! once in `bentogate::store::records` (visibility, search, order).

use std::collections::HashSet;

use bentogate::store::index::newest_first;
use bentogate::store::records::{PageQuery, PageStart, Search, Visibility};
use bentogate::store::{Member, MemberChange, Role, StoreError, TokenEdit, TokenFile, TokenStore};
use bentogate::token::{Digest, Token};

/// Creation times of the fixture: in the past, four tokens per second (ties are broken by uid).
const EPOCH: i64 = 1_700_000_000;

fn uid(i: usize) -> String {
    format!("{:020x}", (i as u64 + 1) * 7_919)
}

/// A token of the fixture: owner `None` for the organization.
pub fn record(i: usize, owner: Option<&str>, at: i64) -> Token {
    let names = [
        "Deploy-Bot",
        "nightly_ci",
        "ALPHA 100%",
        "beta",
        "Gamma_ray",
    ];
    Token {
        deployments: vec!["a".to_owned()],
        description: i
            .is_multiple_of(3)
            .then(|| format!("desc {i} for Team-{}", i % 5)),
        ..Token::new(
            uid(i),
            format!("{} {i}", names[i % names.len()]),
            Digest::of(format!("fixture-token-{i}").as_bytes()),
            owner.map(str::to_owned),
            at,
        )
    }
}

/// Members ann (admin), bob (member), cy (deactivated); 240 tokens, a third each for the
/// organization, ann and bob.
pub fn fixture() -> TokenFile {
    let member = |name: &str, role, active| Member {
        name: name.into(),
        email: Some(format!("{name}@example.com")),
        role,
        active,
    };
    let mut f = TokenFile {
        members: vec![
            member("ann", Role::Admin, true),
            member("bob", Role::Member, true),
            member("cy", Role::Member, false),
        ],
        ..TokenFile::default()
    };
    for i in 0..240 {
        let owner = [None, Some("ann"), Some("bob")][i % 3];
        f.tokens.push(record(i, owner, EPOCH + (i as i64) / 4));
    }
    f
}

/// What a listing must hold, from the rules and the records.
fn expected(all: &[Token], query: &PageQuery) -> Vec<String> {
    let mut hits: Vec<&Token> = all
        .iter()
        .filter(|t| query.visibility.shows(t))
        .filter(|t| query.search.as_ref().is_none_or(|s| s.matches(t)))
        .collect();
    hits.sort_by(|a, b| newest_first(a, b));
    hits.iter().map(|t| t.uid.clone()).collect()
}

fn uids(items: &[Token]) -> Vec<String> {
    items.iter().map(|t| t.uid.clone()).collect()
}

/// Every page of a listing by cursor.
fn by_cursor(store: &dyn TokenStore, mut query: PageQuery) -> (u64, Vec<String>) {
    let mut seen = Vec::new();
    let mut total = None;
    loop {
        let page = store.page(&query).unwrap();
        total.get_or_insert(page.total);
        seen.extend(uids(&page.items));
        match page.next {
            Some(c) => query.start = PageStart::After(c),
            None => return (total.unwrap_or(0), seen),
        }
    }
}

fn visibilities() -> [Visibility; 3] {
    [
        Visibility::All,
        Visibility::Organization,
        Visibility::OrganizationAndPersonalOf("ann".into()),
    ]
}

/// The whole suite on an empty store.
pub fn conformance(store: &dyn TokenStore) {
    let file = fixture();
    assert_eq!(store.import(file.clone()).unwrap(), (3, 240));
    assert_eq!(
        store.import(file.clone()).unwrap(),
        (0, 0),
        "import is idempotent"
    );
    let all = file.tokens.clone();

    // Order, totals and pages, for every visibility, with and without a search.
    let searches = [
        None,
        Search::new("deploy-BOT"),
        Search::new("100%"),
        Search::new("_"),
        Search::new("team-3"),
        Search::new(&uid(17)[10..]),
        Search::new("no such text"),
    ];
    for visibility in visibilities() {
        for search in &searches {
            let query = PageQuery {
                visibility: visibility.clone(),
                search: search.clone(),
                start: PageStart::Offset(0),
                count: 7,
            };
            let want = expected(&all, &query);
            let (total, seen) = by_cursor(store, query.clone());
            assert_eq!(total, want.len() as u64, "{visibility:?} {search:?}");
            assert_eq!(seen, want, "{visibility:?} {search:?}: by cursor");
            let offset = store
                .page(&PageQuery {
                    start: PageStart::Offset(5),
                    count: 11,
                    ..query.clone()
                })
                .unwrap();
            let end = want.len().min(16);
            assert_eq!(
                uids(&offset.items),
                want[want.len().min(5)..end],
                "{visibility:?} {search:?}: by offset"
            );
            assert_eq!(offset.total, want.len() as u64);
        }
    }
    assert_eq!(
        store
            .page(&PageQuery {
                visibility: Visibility::All,
                search: Search::new("deploy"),
                start: PageStart::Offset(0),
                count: 1000,
            })
            .unwrap()
            .total,
        48,
        "case-insensitive: every Deploy-Bot"
    );

    // Paging while tokens are created and deleted between pages: every token that stays is
    // seen exactly once, none twice, none that was deleted before its page.
    let mut query = PageQuery {
        visibility: Visibility::All,
        search: None,
        start: PageStart::Offset(0),
        count: 9,
    };
    let mut seen = Vec::new();
    let mut deleted = HashSet::new();
    let mut next_new = 1_000;
    let mut order = expected(&all, &query);
    loop {
        let page = store.page(&query).unwrap();
        seen.extend(uids(&page.items));
        // Churn: two new tokens (newest of all), one deleted ahead, one deleted behind.
        for _ in 0..2 {
            store
                .insert(record(next_new, None, bentogate::clock::now()))
                .unwrap();
            next_new += 1;
        }
        let ahead = order
            .iter()
            .find(|u| !seen.contains(u) && !deleted.contains(*u))
            .cloned();
        if let Some(u) = ahead {
            assert!(store.delete(&u).unwrap().is_some());
            deleted.insert(u);
        }
        if let Some(u) = seen.iter().find(|u| !deleted.contains(*u)).cloned() {
            assert!(store.delete(&u).unwrap().is_some());
            deleted.insert(u);
        }
        match page.next {
            Some(c) => query.start = PageStart::After(c),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a token was listed twice");
    order.retain(|u| !deleted.contains(u) || seen.contains(u));
    assert_eq!(seen, order, "every token that stayed, once, in order");

    // One record: get, edit, delete.
    let probe = uid(200);
    let before = store.get(&probe).unwrap().unwrap();
    assert_eq!(before.name, "Deploy-Bot 200");
    let edited = store
        .edit(
            &probe,
            &TokenEdit {
                name: Some("renamed".into()),
                description: Some(None),
                expired_at: Some(Some(EPOCH + 10_000_000)),
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            edited.name.as_str(),
            edited.description.as_deref(),
            edited.expired_at
        ),
        ("renamed", None, Some(EPOCH + 10_000_000))
    );
    assert_eq!(
        edited.digest, before.digest,
        "an edit never changes what a token is"
    );
    assert_eq!(store.get(&probe).unwrap().unwrap().name, "renamed");
    assert!(store
        .edit("00000000000000000000", &TokenEdit::default())
        .unwrap()
        .is_none());
    assert!(store.delete("00000000000000000000").unwrap().is_none());
    assert!(store.get("00000000000000000000").unwrap().is_none());

    // Refusals: a personal token of someone not active, a duplicate digest.
    assert!(matches!(
        store.insert(record(5_000, Some("cy"), EPOCH)),
        Err(StoreError::NotActiveMember(_))
    ));
    assert!(matches!(
        store.insert(record(5_001, Some("nobody"), EPOCH)),
        Err(StoreError::NotActiveMember(_))
    ));
    let mut twin = record(5_002, None, EPOCH);
    twin.digest = before.digest;
    assert!(matches!(store.insert(twin), Err(StoreError::Duplicate)));

    // Members: the rules hold in the store's own atomic section.
    let bob_tokens = by_cursor(
        store,
        PageQuery {
            visibility: Visibility::OrganizationAndPersonalOf("bob".into()),
            search: None,
            start: PageStart::Offset(0),
            count: 50,
        },
    )
    .1
    .into_iter()
    .filter(|u| store.get(u).unwrap().is_some_and(|t| t.user == "bob"))
    .count();
    assert!(matches!(
        store.change_member(&MemberChange::Remove { name: "ann".into() }),
        Err(StoreError::Member(_))
    ));
    assert_eq!(
        store
            .change_member(&MemberChange::Deactivate { name: "bob".into() })
            .unwrap(),
        bob_tokens
    );
    assert!(!store.member("bob").unwrap().unwrap().active);
    assert_eq!(
        store
            .change_member(&MemberChange::Remove { name: "bob".into() })
            .unwrap(),
        bob_tokens
    );
    assert!(store.member("bob").unwrap().is_none());
    store
        .change_member(&MemberChange::Add {
            name: "dee".into(),
            email: None,
            admin: false,
        })
        .unwrap();
    store
        .change_member(&MemberChange::Promote { name: "dee".into() })
        .unwrap();
    assert_eq!(store.member("dee").unwrap().unwrap().role, Role::Admin);
    store
        .change_member(&MemberChange::Remove { name: "ann".into() })
        .unwrap();
    let names: Vec<String> = store
        .members()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["cy", "dee"]);

    // The export holds what the listing does.
    let exported = store.export().unwrap();
    let (total, listed) = by_cursor(
        store,
        PageQuery {
            visibility: Visibility::All,
            search: None,
            start: PageStart::Offset(0),
            count: 1000,
        },
    );
    assert_eq!(exported.tokens.len() as u64, total);
    let exported: HashSet<String> = exported.tokens.into_iter().map(|t| t.uid).collect();
    assert_eq!(exported, listed.into_iter().collect());
}
