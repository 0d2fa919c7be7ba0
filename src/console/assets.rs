//! The console's static files, embedded in the binary: no CDN, no build step.

use http::StatusCode;

use super::{Body, Reply};

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const ICON: &str = include_str!("assets/icon.svg");

/// The asset at `path`, if it is one.
pub(crate) fn serve(path: &str) -> Option<Reply> {
    let (content_type, bytes) = match path {
        "/assets/console.css" => ("text/css; charset=utf-8", CSS),
        "/assets/console.js" => ("text/javascript; charset=utf-8", JS),
        "/assets/icon.svg" => ("image/svg+xml", ICON),
        _ => return None,
    };
    Some(Reply {
        status: StatusCode::OK,
        body: Body::Asset(content_type, bytes.as_bytes()),
        cookies: Vec::new(),
        form_target: None,
    })
}
