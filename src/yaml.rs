//! Every YAML call in bentogate: reading and writing, behind one small API.
//!
//! serde_yaml is archived upstream; this is the only file that names it, so the parser can be
//! replaced here alone. A leaf: it imports nothing from the crate. Its [`Error`] carries what
//! callers show users: the line, the column, the key path (when tracked) and the bare message;
//! its `Display` is the parser's own full text, unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A YAML document that could not be read into the wanted shape, or a value that could not be
/// written as YAML.
#[derive(Debug)]
pub struct Error {
    /// What the parser said.
    inner: serde_yaml::Error,
    /// The key path ([`from_str_tracked`] only); none untracked, or when the document itself is
    /// wrong.
    path: Option<String>,
}

impl Error {
    /// The 1-based line of the error, where known.
    pub fn line(&self) -> Option<usize> {
        self.inner.location().map(|l| l.line())
    }

    /// The 1-based column of the error, where known.
    pub fn column(&self) -> Option<usize> {
        self.inner.location().map(|l| l.column())
    }

    /// The exact key, as a path (`forwarding.timeouts.connect`, `deployments[1].policy`), when
    /// read by [`from_str_tracked`] and the error is below the document itself.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// What is wrong, without the key and location the parser puts around it.
    pub fn message(&self) -> String {
        let full = crate::token::redact_values(&self.inner.to_string()).into_owned();
        // serde_yaml says "path.to.key: what is wrong at line L column C"; keep only what is wrong.
        let without_location = match full.rfind(" at line ") {
            Some(at) => &full[..at],
            None => full.as_str(),
        };
        match without_location.split_once(": ") {
            Some((key, message)) if !key.contains(' ') => message.to_owned(),
            _ => without_location.to_owned(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Parser messages may repeat a value they could not read: never a token's.
        f.write_str(&crate::token::redact_values(&self.inner.to_string()))
    }
}

impl std::error::Error for Error {}

/// Reads `text` as a `T`.
pub fn from_str<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, Error> {
    serde_yaml::from_str(text).map_err(|inner| Error { inner, path: None })
}

/// Reads `text` as a `T`, tracking the key path so an error names its exact key
/// ([`Error::path`]): the parser alone loses it for errors raised inside a value's own
/// deserializer (a bad duration under `forwarding.timeouts.connect`).
pub fn from_str_tracked<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, Error> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        // `.` alone is the document itself.
        let path = e.path().to_string();
        let path = (path != "." && !path.is_empty()).then_some(path);
        Error {
            inner: e.into_inner(),
            path,
        }
    })
}

/// Writes `value` as a YAML document.
pub fn to_string<T: ?Sized + Serialize>(value: &T) -> Result<String, Error> {
    serde_yaml::to_string(value).map_err(|inner| Error { inner, path: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(deserialize_with = "positive")]
        n: i64,
    }

    fn positive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let n = i64::deserialize(d)?;
        if n > 0 {
            Ok(n)
        } else {
            Err(serde::de::Error::custom(format!("`{n}` is not positive")))
        }
    }

    #[test]
    fn a_tracked_read_reads() {
        let ok: Outer = from_str_tracked("inner:\n  n: 2\n").unwrap();
        assert_eq!(ok.inner.n, 2);
    }

    #[test]
    fn a_tracked_error_names_its_exact_key_line_and_message() {
        let e = from_str_tracked::<Outer>("inner:\n  n: -3\n").unwrap_err();
        assert_eq!(e.path(), Some("inner.n"));
        assert_eq!(e.line(), Some(2));
        assert!(e.column().is_some());
        assert_eq!(e.message(), "`-3` is not positive");
        // Display is the parser's own text, location included.
        assert!(e.to_string().contains("at line 2"), "{e}");
    }

    #[test]
    fn untracked_errors_have_no_path_and_keep_the_parsers_text() {
        let e = from_str::<Outer>("inner:\n  m: 1\n").unwrap_err();
        assert_eq!(e.path(), None);
        assert_eq!(e.line(), Some(2));
        assert!(
            e.message().starts_with("unknown field `m`"),
            "{}",
            e.message()
        );
        assert!(e.to_string().starts_with("inner: unknown field `m`"), "{e}");
    }

    #[test]
    fn an_error_at_the_document_has_no_path() {
        let e = from_str_tracked::<Outer>("- a\n").unwrap_err();
        assert_eq!(e.path(), None);
    }

    #[test]
    fn writes_and_reads_back() {
        let text = to_string(&std::collections::BTreeMap::from([("a", 1)])).unwrap();
        assert_eq!(text, "a: 1\n");
        let back: std::collections::BTreeMap<String, i64> = from_str(&text).unwrap();
        assert_eq!(back["a"], 1);
    }
}
