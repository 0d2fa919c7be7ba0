//! The SQL of one page of the listing: per visibility an ordered index scan (merged when a
//! member sees the organization's tokens and her own), a search through the trigram index, and
//! the statement that counts the total (per-owner counts, or the matches of a search).

use tokio_postgres::types::ToSql;

use super::queries::TOKEN_COLUMNS;
use crate::store::records::{PageQuery, PageStart, Visibility};

/// Statement parameters built at run time.
pub(super) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(super) fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

/// A LIKE pattern matching `text` anywhere (its own `%`, `_` and `\\` taken literally).
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The SQL of one page.
pub(super) struct PageSql {
    /// Per visibility branch an ordered index scan, merged when there are two (a member sees
    /// organization tokens and her own).
    pub(super) items: String,
    pub(super) params: Params,
    /// What counts the listing's total.
    pub(super) total: String,
    pub(super) total_params: Params,
    /// The items carry the total in a third column (a search by offset: one index scan for
    /// both; the count statement then runs only for an empty page).
    pub(super) windowed: bool,
}

pub(super) fn page_sql(q: &PageQuery) -> PageSql {
    let mut params: Params = Vec::new();
    let mut shared = Vec::new();
    if let Some(search) = &q.search {
        params.push(Box::new(contains_pattern(search.text())));
        shared.push(format!("search LIKE ${}", params.len()));
    }
    let count_params_len = params.len();
    if let PageStart::After(c) = &q.start {
        params.push(Box::new(c.created_at));
        let at = params.len();
        params.push(Box::new(c.uid.clone()));
        shared.push(format!(
            "created_at <= ${at} AND (created_at < ${at} OR uid > ${})",
            params.len()
        ));
    }
    let branches: Vec<String> = match &q.visibility {
        Visibility::All => vec![String::new()],
        Visibility::Organization => vec!["owner IS NULL".into()],
        Visibility::OrganizationAndPersonalOf(user) => {
            params.push(Box::new(user.clone()));
            vec!["owner IS NULL".into(), format!("owner = ${}", params.len())]
        }
        Visibility::PersonalOf(user) => {
            params.push(Box::new(user.clone()));
            vec![format!("owner = ${}", params.len())]
        }
    };
    let (skip, count) = match q.start {
        PageStart::Offset(skip) => (skip as i64, q.count as i64),
        PageStart::After(_) => (0, q.count as i64),
    };
    // Each branch of a merge must reach past the rows the outer OFFSET skips.
    let reach = if branches.len() > 1 {
        params.push(Box::new(skip.saturating_add(count)));
        params.len()
    } else {
        0
    };
    params.push(Box::new(skip));
    let skip_at = params.len();
    params.push(Box::new(count));
    let count_at = params.len();
    let where_of = |branch: &str| {
        let conds: Vec<&str> = shared
            .iter()
            .map(String::as_str)
            .chain((!branch.is_empty()).then_some(branch))
            .collect();
        if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        }
    };
    let windowed =
        q.search.is_some() && branches.len() == 1 && matches!(q.start, PageStart::Offset(_));
    let items = if branches.len() == 1 {
        format!(
            "SELECT {TOKEN_COLUMNS}{} FROM bentogate_tokens {} ORDER BY created_at DESC, uid
             LIMIT ${count_at} OFFSET ${skip_at}",
            if windowed { ", count(*) OVER ()" } else { "" },
            where_of(&branches[0])
        )
    } else {
        let union: Vec<String> = branches
            .iter()
            .map(|b| {
                format!(
                    "(SELECT record, last_used_at, created_at, uid FROM bentogate_tokens {}
                      ORDER BY created_at DESC, uid LIMIT ${reach})",
                    where_of(b)
                )
            })
            .collect();
        format!(
            "SELECT {TOKEN_COLUMNS} FROM ({}) s ORDER BY created_at DESC, uid
             LIMIT ${count_at} OFFSET ${skip_at}",
            union.join(" UNION ALL ")
        )
    };
    // The total: per-owner counts kept by a trigger, or a count of the matches of a search.
    let mut total_params: Params = Vec::new();
    let total = match (&q.search, &q.visibility) {
        (None, Visibility::All) => {
            "SELECT coalesce(sum(n), 0)::int8 FROM bentogate_token_counts".to_owned()
        }
        (None, Visibility::Organization) => {
            "SELECT coalesce(sum(n), 0)::int8 FROM bentogate_token_counts WHERE owner = ''"
                .to_owned()
        }
        (None, Visibility::OrganizationAndPersonalOf(user)) => {
            total_params.push(Box::new(user.clone()));
            "SELECT coalesce(sum(n), 0)::int8 FROM bentogate_token_counts WHERE owner IN ('', $1)"
                .to_owned()
        }
        (None, Visibility::PersonalOf(user)) => {
            total_params.push(Box::new(user.clone()));
            "SELECT coalesce(sum(n), 0)::int8 FROM bentogate_token_counts WHERE owner = $1"
                .to_owned()
        }
        (Some(search), visibility) => {
            debug_assert_eq!(count_params_len, 1);
            total_params.push(Box::new(contains_pattern(search.text())));
            let owner = match visibility {
                Visibility::All => String::new(),
                Visibility::Organization => " AND owner IS NULL".into(),
                Visibility::OrganizationAndPersonalOf(user) => {
                    total_params.push(Box::new(user.clone()));
                    " AND (owner IS NULL OR owner = $2)".into()
                }
                Visibility::PersonalOf(user) => {
                    total_params.push(Box::new(user.clone()));
                    " AND owner = $2".into()
                }
            };
            format!("SELECT count(*) FROM bentogate_tokens WHERE search LIKE $1{owner}")
        }
    };
    PageSql {
        items,
        params,
        total,
        total_params,
        windowed,
    }
}
