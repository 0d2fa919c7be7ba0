//! The API Tokens pages: the list with its Personal and Organization tabs, Create (the form and
//! the show-once panel), Edit and Delete.
//!
//! Reads the forms into the control plane's own requests ([`NewToken`], [`TokenEdit`]) and calls
//! the same [`crate::control::Store`] operations and audit lines as the token API; the only rule
//! of its own is how a form is read (expiry presets, the single deployment choice).

use http::StatusCode;

use super::pages::{self, CreatedView, Ctx, NewTokenForm};
use super::{Console, ConsoleError, Reply, Req};
use crate::clock::{self, UnixSeconds};
use crate::control::{audit, shown_uid, ControlError, NewToken};
use crate::store::records::{Cursor, PageStart};
use crate::store::TokenEdit;
use crate::token::{Scope, Scopes};

/// Tokens per console page.
const PAGE: usize = 50;

/// One day in seconds, for the expiry presets.
const DAY: UnixSeconds = 86_400;

/// Reads an expiry choice: a preset (`7`, `30`, `90` days), `never`, or `custom` with a date
/// (`YYYY-MM-DD`, 00:00 UTC of that day).
pub(crate) fn expiry_of(
    choice: &str,
    date: Option<&str>,
    now: UnixSeconds,
) -> Result<Option<UnixSeconds>, ControlError> {
    match choice {
        "never" | "" => Ok(None),
        "7" | "30" | "90" => Ok(Some(now + choice.parse::<i64>().unwrap_or(30) * DAY)),
        "custom" => {
            let date = date.unwrap_or("").trim();
            let at = clock::parse_absolute(date).map_err(|_| {
                ControlError::Invalid(
                    "the custom expiry is not a date: pick one in the date field (YYYY-MM-DD)"
                        .into(),
                )
            })?;
            if at <= now {
                return Err(ControlError::Invalid(
                    "the custom expiry date is today or in the past; pick a later date".into(),
                ));
            }
            Ok(Some(at))
        }
        _ => Err(ControlError::Invalid(
            "pick an expiry: 7, 30 or 90 days, a custom date, or never".into(),
        )),
    }
}

impl NewTokenForm {
    /// The form as the request filled it (to show it again with an error).
    fn read(req: &Req) -> NewTokenForm {
        NewTokenForm {
            organization: req.form("kind").or(req.query("kind")) == Some("organization"),
            name: req.form("name").unwrap_or("").to_owned(),
            description: req.form("description").unwrap_or("").to_owned(),
            scopes: req
                .form_all("scope")
                .filter_map(|n| Scope::ALL.into_iter().find(|s| s.as_str() == n))
                .collect::<Vec<_>>(),
            endpoint: req.form("endpoint").unwrap_or("none").to_owned(),
            monitoring: req.form("monitoring") == Some("on"),
            expiry: req.form("expiry").unwrap_or("30").to_owned(),
            expiry_date: req.form("expiry_date").unwrap_or("").to_owned(),
        }
    }

    /// The control plane's request for this form.
    fn request(&self, now: UnixSeconds) -> Result<NewToken, ControlError> {
        let (deployments, all_deployments) = match self.endpoint.as_str() {
            "none" | "" => (Vec::new(), false),
            "*" => (Vec::new(), true),
            one => (vec![one.to_owned()], false),
        };
        Ok(NewToken {
            name: self.name.trim().to_owned(),
            description: Some(self.description.trim().to_owned()).filter(|d| !d.is_empty()),
            scopes: Scopes::from_slice(&self.scopes),
            expired_at: expiry_of(&self.expiry, Some(&self.expiry_date), now)?,
            deployments,
            all_deployments,
            organization: Some(self.organization),
            monitoring: self.monitoring,
        })
    }
}

impl Console {
    /// GET /api_tokens: the list (Personal or Organization tab), and the login approval panel
    /// when the bentoml CLI sent the member here (`?code=` or `?callback=`).
    pub(crate) fn tokens_page(&self, req: &Req, ctx: &Ctx) -> Result<Reply, ConsoleError> {
        let personal = req.query("tab") != Some("organization");
        let search = req.query("search").filter(|s| !s.is_empty());
        let start = match req.query("after").and_then(Cursor::parse) {
            Some(c) => PageStart::After(c),
            None => PageStart::Offset(0),
        };
        let page = self
            .store
            .list_tab(&ctx.caller, personal, search, start, PAGE)?;
        let approval = self.approval_panel(req, ctx)?;
        Ok(Reply::ok(pages::tokens(
            ctx,
            personal,
            search.unwrap_or(""),
            &page,
            approval,
            clock::now(),
        )))
    }

    /// GET /api_tokens/new: the Create form (`?kind=organization` for the Organization tab).
    pub(crate) fn new_token_page(&self, req: &Req, ctx: &Ctx) -> Result<Reply, ConsoleError> {
        let form = NewTokenForm {
            organization: req.query("kind") == Some("organization"),
            ..NewTokenForm::default()
        };
        if form.organization {
            super::require_admin(&ctx.caller)?;
        }
        Ok(Reply::ok(pages::new_token(
            ctx,
            &form,
            &self.store.routed(),
            None,
        )))
    }

    /// POST /api_tokens: creates the token through the one issuance function and shows its
    /// value this once.
    pub(crate) fn create(&self, req: &Req, ctx: &Ctx) -> Result<Reply, ConsoleError> {
        let form = NewTokenForm::read(req);
        let now = clock::now();
        let outcome = form
            .request(now)
            .and_then(|r| self.store.create(&ctx.caller, r));
        match outcome {
            Ok((secret, record)) => {
                audit::change(&ctx.caller, "token.create", &record.uid, Ok(()))?;
                let endpoint = req.this_origin.clone().unwrap_or_default();
                Ok(Reply::ok(pages::created(
                    ctx,
                    &CreatedView {
                        token: &record,
                        value: secret.expose(),
                        endpoint: &endpoint,
                    },
                )))
            }
            Err(e) => {
                let e = audit::failure(&ctx.caller, "token.create", "(new token)", e);
                let status = e.status();
                Ok(Reply::page(
                    status,
                    pages::new_token(ctx, &form, &self.store.routed(), Some(&e.to_string())),
                ))
            }
        }
    }

    /// GET /api_tokens/UID/edit.
    pub(crate) fn edit_page(&self, ctx: &Ctx, uid: &str) -> Result<Reply, ConsoleError> {
        let t = self.store.get(&ctx.caller, uid)?;
        if !ctx.caller.may_change(&t) {
            return Err(ControlError::Forbidden(
                "only its owner, or an admin for an organization token, may edit this token".into(),
            )
            .into());
        }
        Ok(Reply::ok(pages::edit_token(ctx, &t, None)))
    }

    /// POST /api_tokens/UID/edit: name, description, expiry.
    pub(crate) fn edit(&self, req: &Req, ctx: &Ctx, uid: &str) -> Result<Reply, ConsoleError> {
        let now = clock::now();
        let expiry = match req.form("expiry").unwrap_or("keep") {
            "keep" => Ok(None),
            choice => expiry_of(choice, req.form("expiry_date"), now).map(Some),
        };
        let outcome = expiry.and_then(|expired_at| {
            let edit = TokenEdit {
                name: req.form("name").map(|n| n.trim().to_owned()),
                description: req
                    .form("description")
                    .map(|d| Some(d.trim().to_owned()).filter(|d| !d.is_empty())),
                expired_at,
            };
            self.store.edit(&ctx.caller, uid, &edit)
        });
        match audit::change(&ctx.caller, "token.edit", shown_uid(uid), outcome) {
            Ok(_) => Ok(Reply::redirect(tab_of(req))),
            Err(e @ ControlError::Invalid(_)) => {
                let t = self.store.get(&ctx.caller, uid)?;
                Ok(Reply::page(
                    StatusCode::BAD_REQUEST,
                    pages::edit_token(ctx, &t, Some(&e.to_string())),
                ))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// GET /api_tokens/UID/delete: the confirmation.
    pub(crate) fn delete_page(&self, ctx: &Ctx, uid: &str) -> Result<Reply, ConsoleError> {
        let t = self.store.get(&ctx.caller, uid)?;
        Ok(Reply::ok(pages::delete_token(ctx, &t)))
    }

    /// POST /api_tokens/UID/delete.
    pub(crate) fn delete(&self, ctx: &Ctx, uid: &str) -> Result<Reply, ConsoleError> {
        let outcome = self.store.delete(&ctx.caller, uid);
        let t = audit::change(&ctx.caller, "token.delete", shown_uid(uid), outcome)?;
        let tab = match t.kind {
            crate::token::OwnerKind::Organization => "/api_tokens?tab=organization",
            crate::token::OwnerKind::Personal => "/api_tokens",
        };
        Ok(Reply::redirect(tab))
    }
}

fn tab_of(req: &Req) -> &'static str {
    if req.form("kind") == Some("organization") {
        "/api_tokens?tab=organization"
    } else {
        "/api_tokens"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_presets_and_custom_dates() {
        let now = 1_800_000_000;
        assert_eq!(expiry_of("never", None, now).unwrap(), None);
        assert_eq!(expiry_of("7", None, now).unwrap(), Some(now + 7 * DAY));
        assert_eq!(expiry_of("90", None, now).unwrap(), Some(now + 90 * DAY));
        let custom = expiry_of("custom", Some("2030-01-02"), now).unwrap();
        assert_eq!(custom, Some(clock::parse_absolute("2030-01-02").unwrap()));
        assert!(expiry_of("custom", Some("2020-01-01"), now).is_err());
        assert!(expiry_of("custom", Some("not a date"), now).is_err());
        assert!(expiry_of("13", None, now).is_err());
    }
}
