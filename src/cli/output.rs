//! How the CLI prints tokens and members: a table for people, JSON or YAML for tools.
//!
//! Token views never hold a value or a digest; only [`created`] adds the value, once.

use std::io::Write;

use serde_json::{json, Value};

use crate::clock::{self, UnixSeconds};
use crate::control::view::TokenView;
use crate::store::{Member, Role};
use crate::token::{show_time, Secret, Token};

/// Output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for tools.
    Json,
    /// YAML for tools.
    Yaml,
}

pub(crate) fn structured(
    out: &mut dyn Write,
    format: Output,
    value: &Value,
) -> std::io::Result<()> {
    match format {
        Output::Json | Output::Table => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Yaml => write!(out, "{}", crate::yaml::to_string(value).unwrap_or_default()),
    }
}

fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Prints a list of tokens.
pub fn tokens(
    out: &mut dyn Write,
    format: Output,
    tokens: &[&Token],
    now: UnixSeconds,
) -> std::io::Result<()> {
    if format != Output::Table {
        return structured(
            out,
            format,
            &Value::Array(tokens.iter().map(|t| TokenView(t).json(now)).collect()),
        );
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let expires = match t.expired_at {
                Some(_) if t.is_expired(now) => format!("{} (expired)", show_time(t.expired_at)),
                _ => show_time(t.expired_at),
            };
            vec![
                t.uid.clone(),
                t.name.clone(),
                TokenView(t).owner().to_owned(),
                TokenView(t).access(),
                expires,
                show_time(t.last_used_at),
            ]
        })
        .collect();
    table(
        out,
        &["UID", "NAME", "OWNER", "ACCESS", "EXPIRES", "LAST USED"],
        &rows,
    )
}

/// Prints one token.
pub fn token(
    out: &mut dyn Write,
    format: Output,
    t: &Token,
    now: UnixSeconds,
) -> std::io::Result<()> {
    if format != Output::Table {
        return structured(out, format, &TokenView(t).json(now));
    }
    let rows = [
        ("uid", t.uid.clone()),
        ("name", t.name.clone()),
        ("description", t.description.clone().unwrap_or_default()),
        ("owner", TokenView(t).owner().to_owned()),
        ("access", TokenView(t).access()),
        ("created", clock::format(t.created_at)),
        ("expires", show_time(t.expired_at)),
        ("last used", show_time(t.last_used_at)),
        ("expired", t.is_expired(now).to_string()),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<12} {v}")?;
    }
    Ok(())
}

/// Prints a created token with its value: the only place a value is ever shown.
pub fn created(
    out: &mut dyn Write,
    format: Output,
    t: &Token,
    secret: &Secret,
) -> std::io::Result<()> {
    if format != Output::Table {
        let mut v = TokenView(t).json(clock::now());
        v["token"] = Value::String(secret.expose().to_owned());
        return structured(out, format, &v);
    }
    writeln!(
        out,
        "created token {} (uid {}) with access: {}",
        t.name,
        t.uid,
        TokenView(t).access()
    )?;
    writeln!(out, "its value, shown this once (store it now):")?;
    writeln!(out, "{}", secret.expose())
}

/// Prints a one-line result.
pub fn message(out: &mut dyn Write, format: Output, text: &str) -> std::io::Result<()> {
    match format {
        Output::Table => writeln!(out, "{text}"),
        _ => structured(out, format, &json!({ "result": text })),
    }
}

/// Prints members.
pub fn members(out: &mut dyn Write, format: Output, members: &[Member]) -> std::io::Result<()> {
    if format != Output::Table {
        let list = serde_json::to_value(members).unwrap_or(Value::Null);
        return structured(out, format, &list);
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.email.clone().unwrap_or_default(),
                if m.role == Role::Admin {
                    "admin"
                } else {
                    "member"
                }
                .to_owned(),
                if m.active { "active" } else { "inactive" }.to_owned(),
            ]
        })
        .collect();
    table(out, &["NAME", "EMAIL", "ROLE", "STATUS"], &rows)
}
