//! The browser-login pages: the approval panel, its outcome, and the hand-off to an old CLI.

use maud::{html, Markup};

use super::{layout, relative, Approval, Ctx};
use crate::clock;

pub(super) fn approval_panel(ctx: &Ctx, a: Approval) -> Markup {
    let form = |field: &str, value: &str, name: &str| {
        html! {
            form method="post" action="/login/approve" {
                (ctx.csrf_field())
                input type="hidden" name=(field) value=(value);
                label for="cli-name" { "Name of the new token" }
                input #cli-name type="text" name="name" value=(name) required;
                p.hint { "A personal token with the " code { "api" } " scope will be made for the CLI." }
                div.row {
                    button.primary #approve type="submit" { "Approve" }
                    @if field == "code" {
                        button #deny type="submit" formaction="/login/deny" { "Deny" }
                    } @else {
                        a.button href="/api_tokens" { "Cancel" }
                    }
                }
            }
        }
    };
    html! {
        section.approval #approval aria-labelledby="approval-title" {
            @match a {
                Approval::Code { code, from, asked_at, name } => {
                    h2 #approval-title { "Approve a bentoml CLI login?" }
                    p.warn role="note" {
                        strong { "Approve only a login you started on your own terminal just now. " }
                        "Anyone who sent you this link gets a token that acts as you."
                    }
                    p { "Code " code { (code.get(..8).unwrap_or(&code)) "…" }
                        ", asked for " (relative(clock::now(), asked_at)) " from " code { (from) } "." }
                    (form("code", &code, &name))
                }
                Approval::Callback { callback, name } => {
                    h2 #approval-title { "Approve a bentoml CLI login?" }
                    p.warn role="note" {
                        strong { "Approve only a login you started on your own terminal just now. " }
                        "The token will be sent to the CLI listening at " code { (callback) } " on this computer."
                    }
                    (form("callback", &callback, &name))
                }
                Approval::Dead => {
                    h2 #approval-title { "This login code does not work" }
                    p.error role="alert" { "It expired (codes live 10 minutes), was used, or was denied. Run " code { "bentoml cloud login" } " again." }
                }
                Approval::BadCallback => {
                    h2 #approval-title { "This login link is refused" }
                    p.error role="alert" { "Its callback is not a loopback address (http://localhost:PORT), so no token is sent there." }
                }
            }
        }
    }
}

/// After approving or failing to approve a code.
pub(crate) fn login_result(ctx: &Ctx, approved: bool) -> Markup {
    layout(
        Some(ctx),
        "CLI login",
        html! {
            @if approved {
                h1 #login-approved { "Login approved" }
                p { "Return to your terminal: the bentoml CLI picks the token up within a second." }
            } @else {
                h1 { "This login code does not work" }
                p.error role="alert" { "It expired, was used, or was denied. Run " code { "bentoml cloud login" } " again." }
            }
            p { a href="/api_tokens" { "Back to API Tokens" } }
        },
    )
}

/// The page that hands the value to an old CLI's loopback server: a form the script submits
/// at once (or the member, without script).
pub(crate) fn callback_handoff(ctx: &Ctx, callback: &str, value: &str) -> Markup {
    layout(
        Some(ctx),
        "CLI login",
        html! {
            h1 { "Sending the token to your terminal" }
            form #handoff method="post" action=(callback) data-autosubmit="" {
                input type="hidden" name="code" value=(value);
                p { "If nothing happens, press the button." }
                button.primary type="submit" { "Send to the bentoml CLI" }
            }
            p #handoff-done role="status" hidden {
                "The token was sent to the bentoml CLI. Return to your terminal."
            }
        },
    )
}
