//! The Members page (admins).

use maud::{html, Markup};

use super::{layout, Ctx};
use crate::store::{Member, Role};

/// The Members page (admins).
pub(crate) fn members(ctx: &Ctx, members: &[Member], error: Option<&str>) -> Markup {
    layout(
        Some(ctx),
        "Members",
        html! {
            h1 { "Members" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            table #members {
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Email" }
                    th scope="col" { "Role" }
                    th scope="col" { "State" }
                    th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for m in members {
                        tr data-member=(m.name) {
                            td { (m.name) }
                            td { (m.email.as_deref().unwrap_or("")) }
                            td { @if m.role == Role::Admin { "admin" } @else { "member" } }
                            td { @if m.active { "active" } @else { "deactivated" } }
                            td.actions {
                                @if m.role != Role::Admin {
                                    (member_action(ctx, &m.name, "promote", "Promote"))
                                }
                                @if m.active {
                                    (member_action(ctx, &m.name, "deactivate", "Deactivate"))
                                }
                                (member_action(ctx, &m.name, "remove", "Remove"))
                            }
                        }
                    }
                }
            }
            h2 { "Add a member" }
            form.card #add-member method="post" action="/members" {
                (ctx.csrf_field())
                label for="member-name" { "Name" }
                input #member-name type="text" name="name" required maxlength="64";
                label for="member-email" { "Email" }
                input #member-email type="email" name="email";
                label.check { input type="checkbox" name="admin"; " Admin" }
                button.primary type="submit" { "Add" }
            }
        },
    )
}

fn member_action(ctx: &Ctx, name: &str, action: &str, text: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/members/" (name) "/" (action) } {
            (ctx.csrf_field())
            button type="submit" class=[(action == "remove").then_some("danger")]
                aria-label={ (text) " " (name) } { (text) }
        }
    }
}
