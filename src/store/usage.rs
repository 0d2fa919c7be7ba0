//! Last-use times, kept beside the token file in `<token file>.last-used` unless
//! `tokens.last_used_file` puts them elsewhere (or turns them off).
//!
//! Owns that small JSON file (`{"uid": unix seconds, ...}`). It is separate from the token file
//! so that recording uses never rewrites, reloads or invalidates the token set: under load every
//! flush would otherwise re-parse the whole token file and empty the validator's cache. Readers
//! that show tokens (the CLI, the API) merge it in with [`merge`]. Losing it loses only last-use
//! times, so it is written with a rename but without fsync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::format::TokenFile;
use crate::clock::UnixSeconds;

/// uid -> last use.
pub type Usage = HashMap<String, UnixSeconds>;

/// Where the last-use times of `token_file` live by default.
pub use crate::config::default_last_used_file as path_for;

/// The times recorded at `path`; a missing or unreadable file is empty (they are only
/// informative).
pub fn read(path: &Path) -> Usage {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Replaces the file at `path` with `usage` (temp file, then rename).
pub fn write(path: &Path, usage: &Usage) -> std::io::Result<()> {
    let path = path.to_owned();
    let mut tmp = path.clone().into_os_string();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec(usage).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Sets each token's `last_used_at` to the later of the file's value and the recorded one.
pub fn merge(file: &mut TokenFile, usage: &Usage) {
    for t in &mut file.tokens {
        if let Some(&at) = usage.get(&t.uid) {
            if t.last_used_at.is_none_or(|old| old < at) {
                t.last_used_at = Some(at);
            }
        }
    }
}

/// Reads a token file for display: missing is empty, and last-use times are merged in.
pub fn load_for_display(token_file: &Path) -> Result<TokenFile, super::StoreError> {
    let mut file = match std::fs::read_to_string(token_file) {
        Ok(text) => TokenFile::parse(&text, token_file)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenFile::default(),
        Err(e) => return Err(super::StoreError::io(token_file, e)),
    };
    merge(&mut file, &read(&path_for(token_file)));
    Ok(file)
}
