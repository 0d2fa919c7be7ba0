//! The console's HTML, as compile-time checked, auto-escaping maud templates: every value from a
//! record or a request is escaped where it is written, and no page carries inline script or
//! style (the CSP forbids both).
//!
//! Owns how things look and what is offered: a button is drawn only if the caller may use it
//! (asked of [`Caller`]'s rules, never decided here).

mod login_pages;
mod member_pages;
mod token_pages;

pub(crate) use login_pages::{callback_handoff, login_result};
pub(crate) use member_pages::members;
pub(crate) use token_pages::{created, delete_token, edit_token, new_token, tokens};

use maud::{html, Markup, DOCTYPE};

use crate::clock::{self, UnixSeconds};
use crate::control::Caller;
use crate::token::{Scope, Token};

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

pub(super) fn layout(ctx: Option<&Ctx>, title: &str, body: Markup) -> Markup {
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

pub(super) fn when(t: UnixSeconds) -> String {
    clock::format(t)
}

/// "3 hours ago" / "in 5 days", coarse on purpose.
pub(super) fn relative(now: UnixSeconds, t: UnixSeconds) -> String {
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
