//! The token file's format: organization, members and token records (never values).
//!
//! Owns parsing (YAML, or JSON for speed when the file starts with `{`), validation of the whole
//! document, and serialization. Knows nothing of watching or locking.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::token::Token;
use crate::yaml;

/// The whole token file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The organization every member and token belongs to.
    #[serde(default)]
    pub organization: Organization,
    /// Users; a personal token is valid only while its user is an active member.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Token records.
    #[serde(default)]
    pub tokens: Vec<Token>,
}

/// The organization's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    /// Display name.
    pub name: String,
    /// Creation time, as the client shows it; files written before it existed get their
    /// oldest token's when loaded.
    #[serde(
        default,
        with = "crate::token::rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<crate::clock::UnixSeconds>,
}

impl Default for Organization {
    fn default() -> Self {
        Organization {
            name: "default".to_owned(),
            created_at: None,
        }
    }
}

/// A user of the organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Unique user name.
    pub name: String,
    /// Contact address, shown by the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Admins create and delete organization tokens.
    #[serde(default)]
    pub role: Role,
    /// A deactivated member's personal tokens are invalid, as if removed.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// A member's role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages her own personal tokens; sees organization tokens.
    #[default]
    Member,
    /// Also creates and deletes organization tokens.
    Admin,
}

impl TokenFile {
    /// Parses and validates file text. `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<TokenFile, StoreError> {
        let corrupt = |line: Option<usize>, message: String| StoreError::Corrupt {
            path: origin.display().to_string(),
            line,
            // A value pasted into the file by mistake must not reach the log or /readyz.
            message: crate::token::redact_values(&message).into_owned(),
        };
        let file: TokenFile = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| corrupt(Some(e.line()), e.to_string()))?
        } else if text.trim().is_empty() {
            TokenFile::default()
        } else {
            yaml::from_str(text).map_err(|e| corrupt(e.line(), e.to_string()))?
        };
        file.validate().map_err(|m| corrupt(None, m))?;
        Ok(file)
    }

    /// Checks what serde cannot: unique names, uids and digests, and that every token grants access.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::with_capacity(self.members.len());
        for m in &self.members {
            if !names.insert(m.name.as_str()) {
                return Err(format!("member `{}` is listed twice", m.name));
            }
        }
        let mut uids = HashSet::with_capacity(self.tokens.len());
        let mut digests = HashSet::with_capacity(self.tokens.len());
        for t in &self.tokens {
            if !uids.insert(t.uid.as_str()) {
                return Err(format!("token uid `{}` is listed twice", t.uid));
            }
            if !digests.insert(t.digest) {
                return Err(format!(
                    "token `{}` has the same digest as another token",
                    t.uid
                ));
            }
            if !t.has_access() {
                return Err(format!(
                    "token `{}` grants no access; give it deployments, all_deployments, scopes or monitoring",
                    t.uid
                ));
            }
        }
        Ok(())
    }

    /// The member named `name`, if any.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The file's text as bentogate writes it: JSON with one member or token per line. JSON is
    /// YAML (1.2), so the file stays a YAML file that people may edit or rewrite in block style,
    /// and it parses an order of magnitude faster than block YAML (100,000 tokens well under 1 s).
    pub fn to_text(&self) -> Result<String, std::io::Error> {
        let mut out = Vec::with_capacity(64 + 256 * self.tokens.len());
        write_file(
            &mut out,
            &self.organization,
            &self.members,
            self.tokens.iter(),
        )?;
        String::from_utf8(out).map_err(std::io::Error::other)
    }
}

/// Writes a token file in one pass: the organization, then one member and one token per line.
/// JSON is YAML (1.2), so the file stays a YAML file that people may edit or rewrite in block
/// style, and it parses an order of magnitude faster than block YAML.
pub fn write_file<'t>(
    out: &mut impl Write,
    organization: &Organization,
    members: &[Member],
    tokens: impl Iterator<Item = &'t Token>,
) -> std::io::Result<()> {
    out.write_all(b"{\"organization\": ")?;
    serde_json::to_writer(&mut *out, organization)?;
    out.write_all(b",\n\"members\": [")?;
    write_lines(out, members.iter())?;
    out.write_all(b"],\n\"tokens\": [")?;
    write_lines(out, tokens)?;
    out.write_all(b"]}\n")
}

fn write_lines<T: Serialize>(
    out: &mut impl Write,
    items: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let mut any = false;
    for item in items {
        out.write_all(if any { b",\n  " } else { b"\n  " })?;
        serde_json::to_writer(&mut *out, &item)?;
        any = true;
    }
    if any {
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Digest, OwnerKind, Secret};

    fn token(uid: &str, kind: OwnerKind, user: &str) -> Token {
        let owner = (kind == OwnerKind::Personal).then(|| user.to_owned());
        Token {
            deployments: vec!["a".to_owned()],
            ..Token::new(
                uid.to_owned(),
                uid.to_owned(),
                Digest::of(uid.as_bytes()),
                owner,
                0,
            )
        }
    }

    #[test]
    fn round_trips_through_yaml_and_json() {
        let mut f = TokenFile::default();
        f.tokens.push(token("t1", OwnerKind::Organization, "ann"));
        f.members.push(Member {
            name: "ann".into(),
            email: None,
            role: Role::Admin,
            active: true,
        });
        let text = f.to_text().unwrap();
        assert_eq!(text.lines().count(), 7, "one line per record:\n{text}");
        let back = TokenFile::parse(&text, Path::new("t.yaml")).unwrap();
        assert_eq!(back.tokens, f.tokens);
        assert_eq!(back.members, f.members);
        // What bentogate writes is YAML too, and people may write block YAML by hand.
        let as_yaml: TokenFile = yaml::from_str(&text).unwrap();
        assert_eq!(as_yaml.tokens, f.tokens);
        let block = yaml::to_string(&f).unwrap();
        let back = TokenFile::parse(&block, Path::new("t.yaml")).unwrap();
        assert_eq!(back.tokens, f.tokens);
    }

    #[test]
    fn duplicates_and_accessless_tokens_are_corrupt() {
        let mut f = TokenFile::default();
        f.tokens.push(token("t1", OwnerKind::Organization, "ann"));
        f.tokens.push(token("t1", OwnerKind::Organization, "ann"));
        assert!(f.validate().unwrap_err().contains("twice"));
        f.tokens.pop();
        f.tokens[0].deployments.clear();
        assert!(f.validate().unwrap_err().contains("no access"));
    }

    #[test]
    fn a_token_value_in_the_file_never_reaches_the_error() {
        let value = Secret::generate().unwrap();
        let value = value.expose();
        for text in [
            format!("tokens:\n  - uid: u\n    kind: {value}\n"),
            format!("{{\"tokens\": [{{\"uid\": \"u\", \"kind\": \"{value}\"}}]}}"),
            format!("organization: {value}\n"),
        ] {
            let e = TokenFile::parse(&text, Path::new("t.yaml"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains(&value[4..]), "{e}");
            assert!(e.contains("bgt_(redacted)"), "{e}");
        }
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let e = TokenFile::parse("tokens:\n  - uid: [\n", Path::new("t.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("t.yaml:"), "{e}");
    }
}
