//! The Members page (admins): add, remove, promote, deactivate, through the same
//! [`crate::control::Store::change_member`] and audit lines as `bentogate member ... --endpoint`.

use http::StatusCode;

use super::pages::{self, Ctx};
use super::{Console, ConsoleError, Reply, Req};
use crate::control::{audit, shown_member, ControlError, MemberChange};

impl Console {
    /// GET /members (admins only: the page is where members are changed).
    pub(crate) fn members_page(
        &self,
        ctx: &Ctx,
        error: Option<&str>,
    ) -> Result<Reply, ConsoleError> {
        super::require_admin(&ctx.caller)?;
        let members = self.store.members(&ctx.caller)?;
        let status = if error.is_some() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Ok(Reply::page(status, pages::members(ctx, &members, error)))
    }

    /// POST /members: adds a member.
    pub(crate) fn add_member(&self, req: &Req, ctx: &Ctx) -> Result<Reply, ConsoleError> {
        let change = MemberChange::Add {
            name: req.form("name").unwrap_or("").trim().to_owned(),
            email: req
                .form("email")
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty()),
            admin: req.form("admin") == Some("on"),
        };
        self.member_change(ctx, change, "member.add")
    }

    /// POST /members/NAME/ACTION: remove, promote or deactivate.
    pub(crate) fn change_member(
        &self,
        ctx: &Ctx,
        name: &str,
        action: &str,
    ) -> Result<Reply, ConsoleError> {
        let name = name.to_owned();
        let (change, label) = match action {
            "remove" => (MemberChange::Remove { name }, "member.remove"),
            "promote" => (MemberChange::Promote { name }, "member.promote"),
            "deactivate" => (MemberChange::Deactivate { name }, "member.deactivate"),
            _ => {
                return Err(ControlError::NotFound(
                    "no such member action; use remove, promote or deactivate".into(),
                )
                .into())
            }
        };
        self.member_change(ctx, change, label)
    }

    fn member_change(
        &self,
        ctx: &Ctx,
        change: MemberChange,
        action: &'static str,
    ) -> Result<Reply, ConsoleError> {
        let name = change.name().to_owned();
        let outcome = self.store.change_member(&ctx.caller, change);
        match audit::change(&ctx.caller, action, shown_member(&name), outcome) {
            Ok(_) => Ok(Reply::redirect("/members")),
            Err(
                e @ (ControlError::Invalid(_)
                | ControlError::Conflict(_)
                | ControlError::NotFound(_)),
            ) => self.members_page(ctx, Some(&e.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}
