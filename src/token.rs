//! Token values and token records.
//!
//! Owns the shape of a bentogate token value (`bgt_` + 30 base62 characters from the OS CSPRNG,
//! about 178 bits, + a 6-character CRC-32 checksum), its SHA-256 digest, and the [`Token`] record
//! with its access. A value is never stored, logged or formatted by anything here except
//! [`Secret::expose`], which the creation path alone calls.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

use http::HeaderValue;

use serde::{Deserialize, Serialize};

use crate::clock::{self, UnixSeconds};

/// The fixed prefix of every value bentogate issues; it makes leaked tokens easy to scan for.
pub const PREFIX: &str = "bgt_";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
/// Length of a value bentogate issues.
pub const VALUE_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// Bounds for values issued elsewhere (BentoCloud and Yatai issue 20 characters with no prefix).
const FOREIGN_MIN_LEN: usize = 16;
const FOREIGN_MAX_LEN: usize = 512;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A SHA-256 digest of a token value: the only form in which a token is kept or looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digests a token value.
    #[inline]
    pub fn of(value: &[u8]) -> Self {
        if sha_extensions() {
            Digest::of_with_extensions(value)
        } else {
            Digest::of_without_extensions(value)
        }
    }

    /// The `sha2` crate, which uses the CPU's SHA extensions: 70 ns a value where they exist
    /// (ring's code took 103 ns on the same AMD EPYC; BENCHMARKS.md, eighth session).
    fn of_with_extensions(value: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(value).into())
    }

    /// ring's assembly (AVX2/SSSE3) where the CPU has no SHA extensions (most Intel server parts
    /// before Ice Lake, and valgrind's virtual CPU): about 2,100 instructions a value against the
    /// `sha2` crate's portable Rust's 3,400.
    fn of_without_extensions(value: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, value).as_ref());
        Digest(out)
    }

    /// Reads `sha256:<64 hex>` or bare hex, the forms the token file and imports use.
    pub fn parse(text: &str) -> Option<Self> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(Digest(out))
    }
}

/// True when the CPU has SHA-256 instructions (std caches the answer: one load per call).
#[inline]
fn sha_extensions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("sha2")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&text).ok_or_else(|| {
            serde::de::Error::custom("digest must be `sha256:` followed by 64 hex digits")
        })
    }
}

/// `text` with every bentogate token value in it (`bgt_` and what follows it of the value's
/// alphabet) replaced by `bgt_(redacted)`. For parser messages about files and requests, which
/// may repeat what they could not read: a value pasted into the wrong field of a token file or a
/// config must not reach a log line, `/readyz` or an error body.
pub fn redact_values(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        out.push_str(PREFIX);
        out.push_str("(redacted)");
        let after = &rest[at + PREFIX.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Why a presented value was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Carries the bentogate prefix but its length or checksum is wrong (a typo or a forgery).
    BadChecksum,
    /// Not a token68 string of plausible length (RFC 6750 section 2.1).
    BadShape,
}

/// Checks a presented value's shape without any lookup: bentogate values by their checksum,
/// foreign values (imported from BentoCloud or Yatai) by charset and length.
///
/// ```
/// use bentogate::token::{check, Malformed, Secret};
/// let issued = Secret::generate().unwrap();
/// assert_eq!(check(issued.expose().as_bytes()), Ok(()));
/// assert_eq!(check(b"bgt_typo"), Err(Malformed::BadChecksum));
/// assert_eq!(check(b"cx1a2b3c4d5e6f7g8h9i"), Ok(())); // a 20-character BentoCloud value
/// assert_eq!(check(b"<script>"), Err(Malformed::BadShape));
/// ```
#[inline]
pub fn check(value: &[u8]) -> Result<(), Malformed> {
    if value.starts_with(PREFIX.as_bytes()) {
        if value.len() != VALUE_LEN {
            return Err(Malformed::BadChecksum);
        }
        let (body, sum) = value.split_at(VALUE_LEN - CHECKSUM_LEN);
        if !body[PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric) {
            return Err(Malformed::BadChecksum);
        }
        if sum != checksum(body) {
            return Err(Malformed::BadChecksum);
        }
        return Ok(());
    }
    if !(FOREIGN_MIN_LEN..=FOREIGN_MAX_LEN).contains(&value.len()) || !is_token68(value) {
        return Err(Malformed::BadShape);
    }
    Ok(())
}

/// RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_token68(value: &[u8]) -> bool {
    let body_end = value.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    body_end > 0
        && value[..body_end].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[inline]
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut n = crc32fast::hash(body) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// A token value, held only between generation (or reading user input) and digesting it.
/// Its `Debug` and `Display` are redacted so it can never reach a log by accident.
pub struct Secret(String);

impl Secret {
    /// Wraps a value that came from the user (an import), so it is handled as a secret from here.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// Generates a new bentogate value from the OS CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut value = String::with_capacity(VALUE_LEN);
        value.push_str(PREFIX);
        let mut pool = [0u8; 64];
        let mut drawn = 0;
        while drawn < RANDOM_LEN {
            getrandom::fill(&mut pool)?;
            // Rejection sampling keeps every character uniform: 248 = 4 * 62.
            for &b in pool.iter().filter(|&&b| b < 248) {
                if drawn == RANDOM_LEN {
                    break;
                }
                value.push(BASE62[(b % 62) as usize] as char);
                drawn += 1;
            }
        }
        let sum = checksum(value.as_bytes());
        value.extend(sum.iter().map(|&b| b as char));
        Ok(Secret(value))
    }

    /// The digest under which this value is stored.
    pub fn digest(&self) -> Digest {
        Digest::of(self.0.as_bytes())
    }

    /// The value itself, for the creation response and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A random identifier for records (tokens), unrelated to any value.
pub fn new_uid() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 10];
    getrandom::fill(&mut raw)?;
    Ok(hex::encode(raw))
}

/// A Developer Operations scope (docs/design.md, The control plane): what a token may do through the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Scope {
    /// Use the control-plane API at all.
    Api,
    /// Read organization data (members, organization tokens).
    ReadOrganization,
    /// Change organization data (create or delete organization tokens).
    WriteOrganization,
    /// Read cluster resources.
    ReadCluster,
    /// Change cluster resources.
    WriteCluster,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 5] = [
        Scope::Api,
        Scope::ReadOrganization,
        Scope::WriteOrganization,
        Scope::ReadCluster,
        Scope::WriteCluster,
    ];

    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Api => "api",
            Scope::ReadOrganization => "read_organization",
            Scope::WriteOrganization => "write_organization",
            Scope::ReadCluster => "read_cluster",
            Scope::WriteCluster => "write_cluster",
        }
    }
}

/// A set of scopes as a bit set, so a route's requirement is checked with one AND.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// The set holding exactly these scopes.
    pub fn from_slice(scopes: &[Scope]) -> Self {
        Scopes(scopes.iter().fold(0, |acc, s| acc | (1 << *s as u8)))
    }

    /// True when every scope of `required` is in `self`.
    #[inline]
    pub fn contains_all(self, required: Scopes) -> bool {
        self.0 & required.0 == required.0
    }

    /// True for the empty set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// True when `scope` is in the set.
    #[inline]
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & (1 << scope as u8) != 0
    }

    /// True when every scope of `self` is in `other` (a new token may not outrank its maker).
    pub fn is_subset_of(self, other: Scopes) -> bool {
        other.contains_all(self)
    }

    /// Reads wire names (`api`, `read_cluster`, ...). An unknown name is refused without being
    /// repeated (it may come from a request, and the message reaches logs); the valid ones are
    /// listed instead.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut out = Scopes::default();
        for name in names {
            let s = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    "unknown scope; the valid scopes are api, read_organization, write_organization, read_cluster and write_cluster".to_owned()
                })?;
            out.0 |= 1 << s as u8;
        }
        Ok(out)
    }

    /// The scopes in listing order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & (1 << *s as u8) != 0)
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Scopes::from_slice(&Vec::<Scope>::deserialize(d)?))
    }
}

/// Who a token belongs to (docs/design.md, Tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerKind {
    /// Belongs to the organization: stays valid whoever created it.
    Organization,
    /// Belongs to its user: dies when the user leaves the organization.
    Personal,
}

/// A token record as kept by a source: everything but the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Token {
    /// Stable public identifier, safe to log and to return.
    pub uid: String,
    /// Human name chosen at creation.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// SHA-256 of the value.
    pub digest: Digest,
    /// Organization or personal.
    pub kind: OwnerKind,
    /// The creating user; for a personal token, its owner.
    pub user: String,
    /// Creation time.
    #[serde(with = "rfc3339")]
    pub created_at: UnixSeconds,
    /// Last change.
    #[serde(with = "rfc3339")]
    pub updated_at: UnixSeconds,
    /// Expiry; none means never.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<UnixSeconds>,
    /// Last time the data plane saw it (batched, may be a few seconds late).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<UnixSeconds>,
    /// Developer Operations Access.
    #[serde(default, skip_serializing_if = "Scopes::is_empty")]
    pub scopes: Scopes,
    /// Protected Endpoint Access to these deployments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<String>,
    /// Protected Endpoint Access to All Deployments.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_deployments: bool,
    /// May read metrics (routes with the `monitoring` policy).
    #[serde(default, skip_serializing_if = "is_false")]
    pub monitoring: bool,
    /// Identity header values, built on first use so forwarding copies no string per request.
    #[serde(skip)]
    pub identity: OnceLock<IdentityValues>,
    /// When the data plane last let it through, not yet written to the source.
    #[serde(skip)]
    pub used: LastUsed,
}

/// The data plane's in-memory record of a token's last use: one relaxed atomic per record, so
/// recording a use takes no lock and allocates nothing; a flusher writes them out in batches.
#[derive(Debug, Default)]
pub struct LastUsed(AtomicI64);

impl LastUsed {
    /// The last recorded use, 0 if none.
    pub fn get(&self) -> UnixSeconds {
        self.0.load(Ordering::Relaxed)
    }

    /// Records a use at `now`, keeping the later of the two.
    pub fn record(&self, now: UnixSeconds) {
        // A load first: under load the value is already `now`, and a store per request would
        // bounce the cache line between cores.
        if self.0.load(Ordering::Relaxed) < now {
            self.0.fetch_max(now, Ordering::Relaxed);
        }
    }
}

impl Clone for LastUsed {
    fn clone(&self) -> Self {
        LastUsed(AtomicI64::new(self.get()))
    }
}

impl PartialEq for LastUsed {
    /// Usage is bookkeeping, not identity: two records differ only by what the source holds.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The values of the identity headers that name a token to the upstream (never its value).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdentityValues {
    /// The token's uid.
    pub uid: Option<HeaderValue>,
    /// The token's name; none when it is not a valid header value.
    pub name: Option<HeaderValue>,
    /// `organization`, or the owning user's name.
    pub owner: Option<HeaderValue>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The creating user recorded for tokens made with the local CLI (which acts as the operator).
pub const LOCAL_USER: &str = "admin";

impl Token {
    /// A record created `now` that grants nothing yet (callers add access with struct update
    /// syntax). With `owner`, a personal token of that member; without, an organization token
    /// created by [`LOCAL_USER`].
    pub fn new(
        uid: String,
        name: String,
        digest: Digest,
        owner: Option<String>,
        now: UnixSeconds,
    ) -> Token {
        let (kind, user) = match owner {
            Some(u) => (OwnerKind::Personal, u),
            None => (OwnerKind::Organization, LOCAL_USER.to_owned()),
        };
        Token {
            uid,
            name,
            description: None,
            digest,
            kind,
            user,
            created_at: now,
            updated_at: now,
            expired_at: None,
            last_used_at: None,
            scopes: Scopes::default(),
            deployments: Vec::new(),
            all_deployments: false,
            monitoring: false,
            identity: OnceLock::new(),
            used: LastUsed::default(),
        }
    }

    /// Records that the data plane let this token through at `now` (flushed in batches).
    #[inline]
    pub fn mark_used(&self, now: UnixSeconds) {
        self.used.record(now);
    }

    /// The identity header values, built once per record and then shared by every request.
    pub fn identity(&self) -> &IdentityValues {
        self.identity.get_or_init(|| IdentityValues {
            uid: HeaderValue::from_str(&self.uid).ok(),
            name: HeaderValue::from_str(&self.name).ok(),
            owner: match self.kind {
                OwnerKind::Organization => Some(HeaderValue::from_static("organization")),
                OwnerKind::Personal => HeaderValue::from_str(&self.user).ok(),
            },
        })
    }

    /// True from the second the token expires.
    #[inline]
    pub fn is_expired(&self, now: UnixSeconds) -> bool {
        self.expired_at.is_some_and(|at| now >= at)
    }

    /// True when the token may reach the deployment named `deployment` (a `protected` route).
    #[inline]
    pub fn reaches(&self, deployment: &str) -> bool {
        self.all_deployments || self.deployments.iter().any(|d| d == deployment)
    }

    /// True when the token grants at least one kind of access, as every token must.
    pub fn has_access(&self) -> bool {
        !self.scopes.is_empty()
            || self.all_deployments
            || !self.deployments.is_empty()
            || self.monitoring
    }
}

mod rfc3339 {
    use crate::clock::{self, UnixSeconds};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &UnixSeconds, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&clock::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixSeconds, D::Error> {
        // Borrowed where the input allows: loading a token file reads two times per record.
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        clock::parse_absolute(&text).map_err(serde::de::Error::custom)
    }
}

pub(crate) mod rfc3339_opt {
    use crate::clock::{self, UnixSeconds};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<UnixSeconds>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&clock::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UnixSeconds>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => clock::parse_absolute(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Formats an optional time for tables: `-` for none.
pub fn show_time(t: Option<UnixSeconds>) -> String {
    t.map_or_else(|| "-".to_owned(), clock::format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sha256_implementations_give_the_same_digest() {
        // The one the CPU picks and the other must agree, whatever this CPU has.
        for len in 0..200 {
            let value: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            assert_eq!(
                Digest::of_with_extensions(&value),
                Digest::of_without_extensions(&value),
                "length {len}"
            );
        }
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn values_in_messages_are_redacted_and_nothing_else() {
        let v = Secret::generate().unwrap();
        let text = format!(
            "unknown variant `{}`, and \"{}\" again",
            v.expose(),
            v.expose()
        );
        let out = redact_values(&text);
        assert_eq!(
            out,
            "unknown variant `bgt_(redacted)`, and \"bgt_(redacted)\" again"
        );
        assert!(matches!(
            redact_values("no value here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn generated_values_pass_their_own_check() {
        for _ in 0..100 {
            let s = Secret::generate().unwrap();
            assert_eq!(s.expose().len(), VALUE_LEN);
            assert!(s.expose().starts_with(PREFIX));
            assert_eq!(check(s.expose().as_bytes()), Ok(()));
        }
    }

    #[test]
    fn generated_values_differ() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_single_changed_character_fails_the_checksum() {
        let s = Secret::generate().unwrap();
        let mut v = s.expose().as_bytes().to_vec();
        v[10] = if v[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(check(&v), Err(Malformed::BadChecksum));
        assert_eq!(check(&v[..VALUE_LEN - 1]), Err(Malformed::BadChecksum));
    }

    #[test]
    fn foreign_values_are_checked_by_shape_only() {
        assert_eq!(check(b"abcdefghij0123456789"), Ok(()));
        assert_eq!(check(b"short"), Err(Malformed::BadShape));
        assert_eq!(check(b"abcdefghij01234567\"9"), Err(Malformed::BadShape));
        assert_eq!(check(b"abcdefghij0123456789=="), Ok(()));
        assert_eq!(check(b"================"), Err(Malformed::BadShape));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::generate().unwrap();
        assert!(!format!("{s:?}").contains(&s.expose()[4..]));
    }

    #[test]
    fn digest_round_trips_through_text() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(&d.to_string()), Some(d));
        assert_eq!(Digest::parse("sha256:zz"), None);
    }

    #[test]
    fn scopes_are_a_set() {
        let have = Scopes::from_slice(&[Scope::Api, Scope::ReadCluster]);
        assert!(have.contains_all(Scopes::from_slice(&[Scope::ReadCluster])));
        assert!(!have.contains_all(Scopes::from_slice(&[Scope::WriteCluster])));
        assert_eq!(
            have.iter().collect::<Vec<_>>(),
            vec![Scope::Api, Scope::ReadCluster]
        );
    }
}
