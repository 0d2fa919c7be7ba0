//! One behaviour for the console's state in every token store (the file source's memory and
//! links file, the database's tables), with the clock passed in so expiry is asserted without
//! waiting: sessions, one-time sign-in links, and browser-login codes (limit, approval once,
//! denial, expiry).

use bentogate::clock;
use bentogate::store::console::{
    digest_of, seal, unseal, Actor, CodeState, LoginLink, Session, ONE_TIME_LIFE,
};
use bentogate::store::TokenStore;

/// Runs the console-state suite against `store`.
pub fn conformance(store: &dyn TokenStore) {
    let c = store.console();
    let now = clock::now();

    // Sessions: stored by digest, touched, ended; old ones forgotten when a new one opens.
    let session = |secret: &str, actor: Actor, at: i64| Session {
        id: digest_of(secret),
        actor,
        csrf: format!("csrf-{secret}"),
        created_at: at,
        seen_at: at,
    };
    let ann = session("s-ann", Actor::Member("ann".into()), now);
    let tok = session(
        "s-tok",
        Actor::Token("0123456789abcdef0123".into()),
        now - 100,
    );
    c.open_session(&ann, now - 1000).unwrap();
    c.open_session(&tok, now - 1000).unwrap();
    assert_eq!(c.session(&digest_of("s-ann")).unwrap(), Some(ann.clone()));
    assert_eq!(c.session(&digest_of("s-tok")).unwrap(), Some(tok.clone()));
    assert_eq!(c.session(&digest_of("nobody")).unwrap(), None);
    c.touch_session(&ann.id, now + 5).unwrap();
    assert_eq!(c.session(&ann.id).unwrap().unwrap().seen_at, now + 5);
    c.end_session(&ann.id).unwrap();
    assert_eq!(c.session(&ann.id).unwrap(), None);
    let late = session("s-late", Actor::Member("bob".into()), now);
    c.open_session(&late, now - 50).unwrap();
    assert_eq!(
        c.session(&tok.id).unwrap(),
        None,
        "older than the lifetime: forgotten"
    );

    // Links: once, and not after they expire.
    let link = |id: &str, expires_at| LoginLink {
        id: id.into(),
        member: "ann".into(),
        expires_at,
    };
    c.put_link(&link("link-1", now + ONE_TIME_LIFE)).unwrap();
    c.put_link(&link("link-2", now + 2)).unwrap();
    assert_eq!(
        c.take_link("link-1", now).unwrap(),
        Some(link("link-1", now + ONE_TIME_LIFE))
    );
    assert_eq!(c.take_link("link-1", now).unwrap(), None, "used up");
    assert_eq!(c.take_link("link-2", now + 2).unwrap(), None, "expired");
    assert_eq!(c.take_link("never-made", now).unwrap(), None);

    // Codes: the limit, pending, approved once, denied is dead, expired is dead.
    let (a, b, x) = (
        digest_of("code-a"),
        digest_of("code-b"),
        digest_of("code-x"),
    );
    assert!(c.add_code(&a, "127.0.0.1", now, 2).unwrap());
    assert!(c.add_code(&b, "10.0.0.7", now, 2).unwrap());
    assert!(
        !c.add_code(&x, "127.0.0.1", now, 2).unwrap(),
        "at most 2 pending"
    );
    let pending = c.code(&b, now).unwrap().unwrap();
    assert_eq!(
        (pending.from.as_str(), pending.state),
        ("10.0.0.7", CodeState::Pending)
    );
    assert_eq!(
        c.take_code(&a, now).unwrap(),
        None,
        "pending: nothing to take"
    );
    let sealed = seal("code-a", "bgt_value-for-the-cli");
    assert!(c.settle_code(&a, Some(sealed.clone()), now).unwrap());
    assert!(!c.settle_code(&a, None, now).unwrap(), "settled once");
    let taken = c.take_code(&a, now).unwrap().unwrap();
    assert_eq!(
        unseal("code-a", &taken).as_deref(),
        Some("bgt_value-for-the-cli")
    );
    assert_eq!(c.take_code(&a, now).unwrap(), None, "answered once");
    assert_eq!(c.code(&a, now).unwrap(), None, "dead after it was taken");
    assert!(c.settle_code(&b, None, now).unwrap(), "denied");
    assert_eq!(c.code(&b, now).unwrap(), None, "a denied code is dead");
    assert!(!c.settle_code(&b, Some(sealed.clone()), now).unwrap());
    let later = now + 1;
    assert!(c.add_code(&x, "127.0.0.1", later, 2).unwrap(), "room again");
    let expired = later + ONE_TIME_LIFE;
    assert_eq!(c.code(&x, expired).unwrap(), None, "expired");
    assert!(
        !c.settle_code(&x, Some(sealed), expired).unwrap(),
        "no approving it"
    );
    assert_eq!(c.take_code(&x, expired).unwrap(), None);
}
