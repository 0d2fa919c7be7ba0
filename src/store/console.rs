//! The web console's server-side state: sessions, one-time sign-in links, and the codes of the
//! `bentoml cloud login` browser flow.
//!
//! Owns where that state lives, so every replica behind a load balancer honours the same session
//! and answers the same code: the PostgreSQL source keeps it in tables
//! (`store/postgres/console.rs`), the file source in this process's memory ([`MemoryConsole`]),
//! except sign-in links, which the `bentogate member login-link` command (another process) writes
//! to a file beside the token file ([`LinkFile`]).
//!
//! Secrets never stored: a session cookie, a link and a code are kept by their SHA-256 digest,
//! and the token value an approved code hands to the CLI is kept sealed under a key derived from
//! the code itself ([`seal`]), so the database holds nothing a reader could use.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::StoreError;
use crate::clock::UnixSeconds;
use crate::token::Digest;

/// How long a sign-in link and a login code live.
pub const ONE_TIME_LIFE: UnixSeconds = 10 * 60;

/// Who a console session acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Signed in by pasting this token (its uid): the session can do no more than the token,
    /// and ends when the token is deleted or expires.
    Token(String),
    /// Signed in through a one-time link: the session acts as this member, and ends when she is
    /// removed or deactivated.
    Member(String),
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie value.
    pub id: Digest,
    /// Who it acts as.
    pub actor: Actor,
    /// The value every form of this session must carry (a random 128-bit hex string).
    pub csrf: String,
    /// When it was opened (for the absolute timeout).
    pub created_at: UnixSeconds,
    /// When it was last used (for the idle timeout).
    pub seen_at: UnixSeconds,
}

/// A one-time sign-in link for a member, printed by `bentogate member login-link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginLink {
    /// SHA-256 of the link's secret, hex.
    pub id: String,
    /// The member it signs in.
    pub member: String,
    /// When it stops working.
    pub expires_at: UnixSeconds,
}

/// Where a browser-login code stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeState {
    /// Waiting for a member to approve or deny it.
    Pending,
    /// Approved: the token value, sealed under the code ([`seal`]), waits for the CLI's poll.
    Approved(Vec<u8>),
}

/// A live browser-login code, as the approval panel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCode {
    /// When the CLI asked for it.
    pub created_at: UnixSeconds,
    /// The address that asked for it (shown on the approval panel: a login the member did not
    /// start comes from somewhere else).
    pub from: String,
    /// Pending or approved.
    pub state: CodeState,
}

/// What the console keeps between requests; implemented by each token source.
pub trait ConsoleStore: Send + Sync {
    /// Stores a new session (and forgets sessions older than `oldest`).
    fn open_session(&self, session: &Session, oldest: UnixSeconds) -> Result<(), StoreError>;
    /// The session with this cookie digest, if any.
    fn session(&self, id: &Digest) -> Result<Option<Session>, StoreError>;
    /// Records a use of the session at `at`.
    fn touch_session(&self, id: &Digest, at: UnixSeconds) -> Result<(), StoreError>;
    /// Ends a session.
    fn end_session(&self, id: &Digest) -> Result<(), StoreError>;
    /// Stores a sign-in link.
    fn put_link(&self, link: &LoginLink) -> Result<(), StoreError>;
    /// Takes the link with this digest if it is alive at `now`: it works once.
    fn take_link(&self, id: &str, now: UnixSeconds) -> Result<Option<LoginLink>, StoreError>;
    /// Adds a pending code created at `now` for a client at `from`, unless `max_pending` live
    /// codes wait already (then false).
    fn add_code(
        &self,
        id: &Digest,
        from: &str,
        now: UnixSeconds,
        max_pending: usize,
    ) -> Result<bool, StoreError>;
    /// A live code (created within [`ONE_TIME_LIFE`] of `now`), if any.
    fn code(&self, id: &Digest, now: UnixSeconds) -> Result<Option<LoginCode>, StoreError>;
    /// Approves (with the sealed value) or, with `None`, denies a live pending code; a denied
    /// code is dead. False when the code was not live and pending.
    fn settle_code(
        &self,
        id: &Digest,
        sealed: Option<Vec<u8>>,
        now: UnixSeconds,
    ) -> Result<bool, StoreError>;
    /// Takes an approved code's sealed value: once, after which the code is dead. `None` while
    /// pending, or for an unknown or dead code.
    fn take_code(&self, id: &Digest, now: UnixSeconds) -> Result<Option<Vec<u8>>, StoreError>;
}

/// SHA-256 of a secret from a cookie, link or code.
pub fn digest_of(secret: &str) -> Digest {
    Digest(Sha256::digest(secret.as_bytes()).into())
}

fn code_key(code: &str) -> chacha20poly1305::Key {
    let mut h = Sha256::new();
    h.update(b"bentogate login code seal\0");
    h.update(code.as_bytes());
    h.finalize()
}

/// Seals a token value under a key derived from the login code, so the stored form is useless
/// to anyone who does not hold the code. Each code seals one value once, so the nonce is fixed.
pub fn seal(code: &str, value: &str) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&code_key(code));
    // Encryption with a valid key and a 12-byte nonce cannot fail for a short message.
    cipher
        .encrypt(&Default::default(), value.as_bytes())
        .unwrap_or_default()
}

/// Opens what [`seal`] made; `None` when the code does not match.
pub fn unseal(code: &str, sealed: &[u8]) -> Option<String> {
    let cipher = ChaCha20Poly1305::new(&code_key(code));
    let plain = cipher.decrypt(&Default::default(), sealed).ok()?;
    String::from_utf8(plain).ok()
}

/// The file source's console state: sessions and codes in memory (a file-source gateway is one
/// replica), links in a [`LinkFile`].
pub struct MemoryConsole {
    sessions: Mutex<HashMap<Digest, Session>>,
    codes: Mutex<HashMap<Digest, LoginCode>>,
    links: LinkFile,
}

impl MemoryConsole {
    /// Console state for the token file at `token_file`.
    pub fn new(token_file: &Path) -> MemoryConsole {
        MemoryConsole {
            sessions: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            links: LinkFile::beside(token_file),
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Database("the console state lock was poisoned by a panic".into())
}

impl ConsoleStore for MemoryConsole {
    fn open_session(&self, session: &Session, oldest: UnixSeconds) -> Result<(), StoreError> {
        let mut sessions = self.sessions.lock().map_err(|_| poisoned())?;
        sessions.retain(|_, s| s.created_at >= oldest);
        sessions.insert(session.id, session.clone());
        Ok(())
    }

    fn session(&self, id: &Digest) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions
            .lock()
            .map_err(|_| poisoned())?
            .get(id)
            .cloned())
    }

    fn touch_session(&self, id: &Digest, at: UnixSeconds) -> Result<(), StoreError> {
        if let Some(s) = self.sessions.lock().map_err(|_| poisoned())?.get_mut(id) {
            s.seen_at = at;
        }
        Ok(())
    }

    fn end_session(&self, id: &Digest) -> Result<(), StoreError> {
        self.sessions.lock().map_err(|_| poisoned())?.remove(id);
        Ok(())
    }

    fn put_link(&self, link: &LoginLink) -> Result<(), StoreError> {
        self.links.put(link)
    }

    fn take_link(&self, id: &str, now: UnixSeconds) -> Result<Option<LoginLink>, StoreError> {
        self.links.take(id, now)
    }

    fn add_code(
        &self,
        id: &Digest,
        from: &str,
        now: UnixSeconds,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        let mut codes = self.codes.lock().map_err(|_| poisoned())?;
        codes.retain(|_, c| now < c.created_at + ONE_TIME_LIFE);
        if codes.len() >= max_pending {
            return Ok(false);
        }
        codes.insert(
            *id,
            LoginCode {
                created_at: now,
                from: from.to_owned(),
                state: CodeState::Pending,
            },
        );
        Ok(true)
    }

    fn code(&self, id: &Digest, now: UnixSeconds) -> Result<Option<LoginCode>, StoreError> {
        let codes = self.codes.lock().map_err(|_| poisoned())?;
        Ok(codes
            .get(id)
            .filter(|c| now < c.created_at + ONE_TIME_LIFE)
            .cloned())
    }

    fn settle_code(
        &self,
        id: &Digest,
        sealed: Option<Vec<u8>>,
        now: UnixSeconds,
    ) -> Result<bool, StoreError> {
        let mut codes = self.codes.lock().map_err(|_| poisoned())?;
        let live = codes
            .get(id)
            .is_some_and(|c| c.state == CodeState::Pending && now < c.created_at + ONE_TIME_LIFE);
        if !live {
            return Ok(false);
        }
        match sealed {
            Some(v) => {
                if let Some(entry) = codes.get_mut(id) {
                    entry.state = CodeState::Approved(v);
                }
            }
            None => {
                codes.remove(id);
            }
        }
        Ok(true)
    }

    fn take_code(&self, id: &Digest, now: UnixSeconds) -> Result<Option<Vec<u8>>, StoreError> {
        let mut codes = self.codes.lock().map_err(|_| poisoned())?;
        let approved = codes.get(id).is_some_and(|c| {
            matches!(c.state, CodeState::Approved(_)) && now < c.created_at + ONE_TIME_LIFE
        });
        if !approved {
            return Ok(None);
        }
        Ok(codes.remove(id).and_then(|c| match c.state {
            CodeState::Approved(v) => Some(v),
            CodeState::Pending => None,
        }))
    }
}

/// Sign-in links of the file source: `<token file>.login-links`, one JSON object per line,
/// written by `bentogate member login-link` and consumed by the server, both under an exclusive
/// lock on `<token file>.login-links.lock`. Mode 0600: a line holds no secret (only a digest),
/// but who may sign in when is nobody else's business.
pub struct LinkFile {
    path: PathBuf,
}

impl LinkFile {
    /// The links file beside `token_file`.
    pub fn beside(token_file: &Path) -> LinkFile {
        let mut name = token_file.as_os_str().to_owned();
        name.push(".login-links");
        LinkFile { path: name.into() }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Runs `change` on the live links under the lock and writes back what it leaves.
    fn change<T>(
        &self,
        now: UnixSeconds,
        change: impl FnOnce(&mut Vec<LoginLink>) -> T,
    ) -> Result<T, StoreError> {
        let mut lock_name = self.path.as_os_str().to_owned();
        lock_name.push(".lock");
        let _lock = super::lock_exclusive(Path::new(&lock_name))?;
        let mut links: Vec<LoginLink> = match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(self.io(e)),
        };
        links.retain(|l| now < l.expires_at);
        let out = change(&mut links);
        let mut text = String::new();
        for l in &links {
            if let Ok(line) = serde_json::to_string(l) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(|e| self.io(e))?;
        f.write_all(text.as_bytes()).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Adds a link.
    pub fn put(&self, link: &LoginLink) -> Result<(), StoreError> {
        self.change(crate::clock::now(), |links| links.push(link.clone()))
    }

    /// Removes and returns the live link with digest `id`.
    pub fn take(&self, id: &str, now: UnixSeconds) -> Result<Option<LoginLink>, StoreError> {
        self.change(now, |links| {
            let i = links.iter().position(|l| l.id == id)?;
            Some(links.remove(i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_code() {
        let sealed = seal("code-one", "bgt_value");
        assert!(!sealed.windows(9).any(|w| w == b"bgt_value"));
        assert_eq!(unseal("code-one", &sealed).as_deref(), Some("bgt_value"));
        assert_eq!(unseal("code-two", &sealed), None);
    }

    #[test]
    fn a_code_is_answered_once_and_dies_when_denied_or_old() {
        let dir = tempfile::tempdir().unwrap();
        let c = MemoryConsole::new(&dir.path().join("tokens.jsonl"));
        let (a, b) = (digest_of("a"), digest_of("b"));
        assert!(c.add_code(&a, "127.0.0.1", 100, 2).unwrap());
        assert!(c.add_code(&b, "127.0.0.1", 100, 2).unwrap());
        assert!(
            !c.add_code(&digest_of("c"), "127.0.0.1", 100, 2).unwrap(),
            "limit"
        );
        assert_eq!(
            c.code(&a, 100).unwrap().map(|c| c.from),
            Some("127.0.0.1".into())
        );
        assert_eq!(c.take_code(&a, 101).unwrap(), None, "pending");
        assert!(c.settle_code(&a, Some(vec![1]), 101).unwrap());
        assert!(!c.settle_code(&a, None, 101).unwrap(), "settled once");
        assert_eq!(c.take_code(&a, 102).unwrap(), Some(vec![1]));
        assert_eq!(c.take_code(&a, 102).unwrap(), None, "once");
        assert!(c.settle_code(&b, None, 101).unwrap());
        assert_eq!(c.code(&b, 101).unwrap(), None, "denied is dead");
        assert!(c.add_code(&a, "127.0.0.1", 200, 2).unwrap());
        assert_eq!(c.code(&a, 200 + ONE_TIME_LIFE).unwrap(), None, "expired");
        assert!(!c
            .settle_code(&a, Some(vec![1]), 200 + ONE_TIME_LIFE)
            .unwrap());
    }

    #[test]
    fn a_link_works_once_and_not_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let links = LinkFile::beside(&dir.path().join("tokens.jsonl"));
        let now = crate::clock::now();
        let link = |id: &str, expires_at| LoginLink {
            id: id.into(),
            member: "ann".into(),
            expires_at,
        };
        links.put(&link("one", now + 60)).unwrap();
        links.put(&link("old", now + 1)).unwrap();
        assert_eq!(links.take("one", now).unwrap(), Some(link("one", now + 60)));
        assert_eq!(links.take("one", now).unwrap(), None);
        assert_eq!(links.take("old", now + 1).unwrap(), None);
    }
}
