//! The API Tokens pages: the list with its tabs, Create and its show-once panel, Edit, Delete.

use maud::{html, Markup};

use super::{layout, relative, when, Approval, CreatedView, Ctx, NewTokenForm};
use crate::clock::UnixSeconds;
use crate::control::view::TokenView;
use crate::store::Page;
use crate::token::{OwnerKind, Scope, Token};

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
            @if let Some(a) = approval { (super::login_pages::approval_panel(ctx, a)) }
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
