//! The console's HTML, as compile-time checked, auto-escaping maud templates: every value from a
//! record or a request is escaped where it is written, and no page carries inline script or
//! style (the CSP forbids both).
//!
//! Owns how things look and what is offered: a button is drawn only if the caller may use it
//! (asked of [`Caller`]'s rules, never decided here).

use maud::{html, Markup, DOCTYPE};

use crate::clock::{self, UnixSeconds};
use crate::control::view::TokenView;
use crate::control::Caller;
use crate::store::{Member, Page, Role};
use crate::token::{OwnerKind, Scope, Token};

/// What every signed-in page needs: who is signed in and the session's CSRF value.
pub(crate) struct Ctx {
    pub(crate) caller: Caller,
    csrf: String,
}

impl Ctx {
    /// The context of one request.
    pub(crate) fn new(caller: &Caller, csrf: &str) -> Ctx {
        Ctx {
            caller: caller.clone(),
            csrf: csrf.to_owned(),
        }
    }

    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    /// True when the session acts as a member (sign-in link), not through a pasted token.
    fn as_member(&self) -> bool {
        self.caller.token.uid == "console"
    }
}

/// The Create form's fields, as shown (empty, or as submitted with an error).
#[derive(Default)]
pub(crate) struct NewTokenForm {
    pub(crate) organization: bool,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) scopes: Vec<Scope>,
    /// `none`, `*` (All Deployments) or one deployment's name.
    pub(crate) endpoint: String,
    pub(crate) monitoring: bool,
    /// `7`, `30`, `90`, `custom` or `never`.
    pub(crate) expiry: String,
    pub(crate) expiry_date: String,
}

/// The show-once panel's content.
pub(crate) struct CreatedView<'a> {
    pub(crate) token: &'a Token,
    pub(crate) value: &'a str,
    pub(crate) endpoint: &'a str,
}

/// The login approval panel on the API Tokens page.
pub(crate) enum Approval {
    /// A pending code from a new client.
    Code {
        code: String,
        from: String,
        asked_at: UnixSeconds,
        name: String,
    },
    /// An old client's loopback callback.
    Callback { callback: String, name: String },
    /// The code is unknown, used, denied or expired.
    Dead,
    /// The callback is not a loopback address.
    BadCallback,
}

fn layout(ctx: Option<&Ctx>, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · bentogate" }
                link rel="stylesheet" href="/assets/console.css";
                link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                script src="/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/api_tokens" {
                        img src="/assets/icon.svg" alt="" width="24" height="24";
                        " bentogate"
                    }
                    @if let Some(ctx) = ctx {
                        nav aria-label="Console" {
                            a href="/api_tokens" { "API Tokens" }
                            @if ctx.caller.is_admin() { a href="/members" { "Members" } }
                        }
                        details.profile {
                            summary { (ctx.caller.user()) }
                            div.menu {
                                p {
                                    "Signed in as " strong { (ctx.caller.user()) }
                                    @if ctx.as_member() { " (sign-in link)" }
                                    @else { " with the token " code { (ctx.caller.token.name) } }
                                }
                                form method="post" action="/logout" {
                                    (ctx.csrf_field())
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// A page a person can act on after a refusal or failure.
pub(crate) fn error_page(ctx: Option<&Ctx>, title: &str, message: &str) -> Markup {
    layout(
        ctx,
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/api_tokens" { "Back to API Tokens" } }
        },
    )
}

/// Sign-in: paste a token, or use a link from an admin.
pub(crate) fn sign_in(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        None,
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.card method="post" action="/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="token" { "API token with the " code { "api" } " scope" }
                input #token type="password" name="token" autocomplete="off" required;
                p.hint { "The session can do no more than this token." }
                button type="submit" { "Sign in" }
            }
            p.hint {
                "No token yet? Ask an admin for a one-time sign-in link: "
                code { "bentogate member login-link YOUR-NAME" }
            }
        },
    )
}

/// The page a sign-in link opens: one button, so only a person uses the link up.
pub(crate) fn link_sign_in(csrf: &str, secret: &str) -> Markup {
    layout(
        None,
        "Sign in",
        html! {
            h1 { "Sign in with a link" }
            form.card method="post" action={ "/login/link/" (secret) } {
                input type="hidden" name="csrf" value=(csrf);
                p { "This one-time link signs you in as the member it was made for." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn when(t: UnixSeconds) -> String {
    clock::format(t)
}

/// "3 hours ago" / "in 5 days", coarse on purpose.
fn relative(now: UnixSeconds, t: UnixSeconds) -> String {
    let d = (now - t).abs();
    let (size, unit) = if d < 90 {
        return if t <= now {
            "just now".into()
        } else {
            "in a minute".into()
        };
    } else if d < 90 * 60 {
        (60, "minute")
    } else if d < 36 * 3600 {
        (3600, "hour")
    } else {
        (86_400, "day")
    };
    // Rounded, so "30 days" a few seconds after it was set still reads 30.
    let n = (d + size / 2) / size;
    let plural = if n == 1 { "" } else { "s" };
    if t <= now {
        format!("{n} {unit}{plural} ago")
    } else {
        format!("in {n} {unit}{plural}")
    }
}

fn expiry_cell(now: UnixSeconds, t: &Token) -> Markup {
    match t.expired_at {
        None => html! { span { "never" } },
        Some(at) if at <= now => html! { span.badge.bad title=(when(at)) { "expired" } },
        Some(at) if at - now < 7 * 86_400 => {
            html! { span.badge.warn title=(when(at)) { (relative(now, at)) } }
        }
        Some(at) => html! { span title=(when(at)) { (relative(now, at)) } },
    }
}

/// The API Tokens page.
pub(crate) fn tokens(
    ctx: &Ctx,
    personal: bool,
    search: &str,
    page: &Page,
    approval: Option<Approval>,
    now: UnixSeconds,
) -> Markup {
    let may_create = personal || ctx.caller.is_admin();
    let new_href = if personal {
        "/api_tokens/new"
    } else {
        "/api_tokens/new?kind=organization"
    };
    layout(
        Some(ctx),
        "API Tokens",
        html! {
            @if let Some(a) = approval { (approval_panel(ctx, a)) }
            div.heading {
                h1 { "API Tokens" }
                @if may_create { a.button.primary #create href=(new_href) { "Create" } }
            }
            nav.tabs aria-label="Token kind" {
                a href="/api_tokens" aria-current=[personal.then_some("page")] { "Personal" }
                a href="/api_tokens?tab=organization" aria-current=[(!personal).then_some("page")] { "Organization" }
            }
            form.search method="get" action="/api_tokens" role="search" {
                @if !personal { input type="hidden" name="tab" value="organization"; }
                label for="search" { "Search by name, uid or description" }
                input #search type="search" name="search" value=(search);
                button type="submit" { "Search" }
            }
            p.hint { (page.total) " token" @if page.total != 1 { "s" } }
            @if page.items.is_empty() {
                p #empty { "No tokens here yet." }
            } @else {
                table #tokens {
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Access" }
                        th scope="col" { "Created" }
                        th scope="col" { "Expires" }
                        th scope="col" { "Last used" }
                        th scope="col" { "Owner" }
                        th scope="col" { span.visually-hidden { "Actions" } }
                    } }
                    tbody {
                        @for t in &page.items {
                            tr data-uid=(t.uid) {
                                td {
                                    strong { (t.name) }
                                    @if let Some(d) = &t.description { br; span.hint { (d) } }
                                    br; code.hint { (t.uid) }
                                }
                                td { (TokenView(t).access()) }
                                td title=(when(t.created_at)) { (relative(now, t.created_at)) }
                                td { (expiry_cell(now, t)) }
                                td {
                                    @match t.last_used_at {
                                        Some(at) => span title=(when(at)) { (relative(now, at)) },
                                        None => span { "never" },
                                    }
                                }
                                td { (TokenView(t).owner()) }
                                td.actions {
                                    @if ctx.caller.may_change(t) {
                                        a href={ "/api_tokens/" (t.uid) "/edit" } aria-label={ "Edit " (t.name) } { "Edit" }
                                        " "
                                        a.danger href={ "/api_tokens/" (t.uid) "/delete" } data-confirm={ "Delete " (t.name) "?" } aria-label={ "Delete " (t.name) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
                dialog #confirm-dialog aria-label="Confirm delete" {
                    p { "Delete this token?" }
                    form method="post" {
                        (ctx.csrf_field())
                        div.row {
                            button.danger type="submit" { "Delete" }
                            button type="submit" formmethod="dialog" formnovalidate { "Cancel" }
                        }
                    }
                }
                @if let Some(next) = &page.next {
                    p { a href={ "/api_tokens?" (next_query(personal, search, &next.to_string())) } { "Next page" } }
                }
            }
        },
    )
}

fn next_query(personal: bool, search: &str, after: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if !personal {
        q.append_pair("tab", "organization");
    }
    if !search.is_empty() {
        q.append_pair("search", search);
    }
    q.append_pair("after", after);
    q.finish()
}

fn approval_panel(ctx: &Ctx, a: Approval) -> Markup {
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
        },
    )
}

/// The Create form.
pub(crate) fn new_token(
    ctx: &Ctx,
    form: &NewTokenForm,
    deployments: &[String],
    error: Option<&str>,
) -> Markup {
    let kind = if form.organization {
        "organization"
    } else {
        "personal"
    };
    let expiry = if form.expiry.is_empty() {
        "30"
    } else {
        form.expiry.as_str()
    };
    let endpoint = if form.endpoint.is_empty() {
        "none"
    } else {
        form.endpoint.as_str()
    };
    layout(
        Some(ctx),
        "Create API token",
        html! {
            h1 { "Create " (kind) " API token" }
            @if let Some(e) = error { p.error role="alert" #form-error { (e) } }
            form.card #create-form method="post" action="/api_tokens" {
                (ctx.csrf_field())
                input type="hidden" name="kind" value=(kind);
                label for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) required maxlength="200";
                label for="description" { "Description" }
                input #description type="text" name="description" value=(form.description) maxlength="1000";
                fieldset {
                    legend { "Developer Operations Access" }
                    @for s in Scope::ALL {
                        label.check {
                            input type="checkbox" name="scope" value=(s.as_str()) checked[form.scopes.contains(&s)];
                            " " (s.as_str())
                        }
                    }
                }
                label for="endpoint" { "Protected Endpoint Access" }
                select #endpoint name="endpoint" {
                    option value="none" selected[endpoint == "none"] { "None" }
                    option value="*" selected[endpoint == "*"] { "All Deployments" }
                    @for d in deployments {
                        option value=(d) selected[endpoint == d] { (d) }
                    }
                }
                label.check {
                    input #monitoring type="checkbox" name="monitoring" checked[form.monitoring];
                    " Monitoring Token (may read the monitoring routes)"
                }
                fieldset {
                    legend { "Expired At" }
                    @for (value, text) in [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("custom", "Custom date"), ("never", "Never")] {
                        label.check {
                            input type="radio" name="expiry" value=(value) checked[expiry == value];
                            " " (text)
                        }
                    }
                    label for="expiry_date" { "Custom date (UTC midnight)" }
                    input #expiry_date type="date" name="expiry_date" value=(form.expiry_date);
                }
                p.hint #grant-rule {
                    "At least one kind of access is needed. "
                    @if ctx.as_member() {
                        "You are signed in as yourself: a token may hold any access; organization tokens need an admin."
                    } @else {
                        "A token can never hold more than the token you signed in with: only its scopes, its deployments, monitoring if it has it, and an expiry no later than its own."
                    }
                }
                div.row {
                    button.primary #submit type="submit" { "Submit" }
                    a.button href=(if form.organization { "/api_tokens?tab=organization" } else { "/api_tokens" }) { "Cancel" }
                }
            }
        },
    )
}

/// The show-once panel after Create.
pub(crate) fn created(ctx: &Ctx, v: &CreatedView<'_>) -> Markup {
    let command = format!(
        "bentoml cloud login --api-token {} --endpoint {}",
        v.value, v.endpoint
    );
    layout(
        Some(ctx),
        "Token created",
        html! {
            h1 { "Token created" }
            section.card.once aria-labelledby="once-title" {
                h2 #once-title { "Copy the value now: you will not see it again" }
                p { "Token " strong { (v.token.name) } " (" code { (v.token.uid) } "): " (TokenView(v.token).access()) }
                label for="token-value" { "Token value" }
                div.row {
                    input #token-value type="text" readonly value=(v.value);
                    button type="button" data-copy="token-value" { "Copy" }
                }
                label for="login-command" { "Log the bentoml CLI in with it" }
                div.row {
                    input #login-command type="text" readonly value=(command);
                    button type="button" data-copy="login-command" { "Copy" }
                }
            }
            p { a #done href=(if v.token.kind == OwnerKind::Organization { "/api_tokens?tab=organization" } else { "/api_tokens" }) { "Done" } }
        },
    )
}

/// The Edit form (name, description, expiry).
pub(crate) fn edit_token(ctx: &Ctx, t: &Token, error: Option<&str>) -> Markup {
    let kind = match t.kind {
        OwnerKind::Organization => "organization",
        OwnerKind::Personal => "personal",
    };
    layout(
        Some(ctx),
        "Edit API token",
        html! {
            h1 { "Edit " code { (t.uid) } }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.card #edit-form method="post" action={ "/api_tokens/" (t.uid) "/edit" } {
                (ctx.csrf_field())
                input type="hidden" name="kind" value=(kind);
                label for="name" { "Name" }
                input #name type="text" name="name" value=(t.name) required maxlength="200";
                label for="description" { "Description" }
                input #description type="text" name="description" value=(t.description.as_deref().unwrap_or("")) maxlength="1000";
                fieldset {
                    legend { "Expired At (now: " (t.expired_at.map(when).unwrap_or_else(|| "never".into())) ")" }
                    @for (value, text) in [("keep", "Keep"), ("7", "7 days from now"), ("30", "30 days from now"), ("90", "90 days from now"), ("custom", "Custom date"), ("never", "Never")] {
                        label.check {
                            input type="radio" name="expiry" value=(value) checked[value == "keep"];
                            " " (text)
                        }
                    }
                    label for="expiry_date" { "Custom date (UTC midnight)" }
                    input #expiry_date type="date" name="expiry_date";
                }
                div.row {
                    button.primary #save type="submit" { "Save" }
                    a.button href="/api_tokens" { "Cancel" }
                }
            }
        },
    )
}

/// The Delete confirmation (the script turns the link into a dialog; this page works without).
pub(crate) fn delete_token(ctx: &Ctx, t: &Token) -> Markup {
    layout(
        Some(ctx),
        "Delete API token",
        html! {
            h1 { "Delete " (t.name) "?" }
            p { "Anything using " code { (t.uid) } " stops working at once. This cannot be undone." }
            form.card #delete-form method="post" action={ "/api_tokens/" (t.uid) "/delete" } {
                (ctx.csrf_field())
                div.row {
                    button.danger #confirm-delete type="submit" { "Delete" }
                    a.button href="/api_tokens" { "Cancel" }
                }
            }
        },
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_as_words() {
        assert_eq!(relative(1000, 1000), "just now");
        assert_eq!(relative(10_000, 10_000 - 3 * 3600), "3 hours ago");
        assert_eq!(relative(0, 5 * 86_400), "in 5 days");
        assert_eq!(relative(0, 60 * 60), "in 60 minutes");
        assert_eq!(relative(10, 30 * 86_400), "in 30 days");
    }

    #[test]
    fn values_are_escaped() {
        let page = error_page(None, "t", "<script>alert(1)</script>");
        let s = page.into_string();
        assert!(!s.contains("<script>alert"), "{s}");
        assert!(s.contains("&lt;script&gt;"));
    }
}
