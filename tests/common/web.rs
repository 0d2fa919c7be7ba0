//! A browser-shaped HTTP client for the console's tests without a browser: a cookie jar, form
//! POSTs with the page's CSRF value and this origin, and the page's own links.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{client, request, Answer};

/// One signed-in (or not) browser against the console at `admin`.
pub struct Web {
    pub admin: SocketAddr,
    pub jar: HashMap<String, String>,
}

impl Web {
    /// A browser with no cookies.
    pub fn new(admin: SocketAddr) -> Web {
        Web {
            admin,
            jar: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, a: &Answer) {
        for v in a.headers.get_all("set-cookie") {
            let line = v.to_str().unwrap_or("");
            let pair = line.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || line.contains("Max-Age=0") {
                    self.jar.remove(k);
                } else {
                    self.jar.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }

    /// GET `path` with the jar's cookies (redirects are not followed).
    pub async fn get(&mut self, path: &str) -> Answer {
        let cookies = self.cookie_header();
        let a = request(
            &client(),
            "GET",
            self.admin,
            path,
            &[("cookie", &cookies)],
            "",
        )
        .await;
        self.keep(&a);
        a
    }

    /// POSTs `fields` (form-encoded) with the jar's cookies and `Origin: origin`.
    pub async fn post_from(&mut self, origin: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let cookies = self.cookie_header();
        let headers = [
            ("cookie", cookies.as_str()),
            ("origin", origin),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        let a = request(&client(), "POST", self.admin, path, &headers, &body).await;
        self.keep(&a);
        a
    }

    /// POSTs `fields` from this console's own origin.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let origin = format!("http://{}", self.admin);
        self.post_from(&origin, path, fields).await
    }

    /// The CSRF value of the form on the page at `path`.
    pub async fn csrf(&mut self, path: &str) -> String {
        let a = self.get(path).await;
        csrf_in(&a.body).unwrap_or_else(|| panic!("no CSRF field on {path}: {}", a.status))
    }

    /// Signs in with a pasted token; returns the answer to the POST.
    pub async fn sign_in(&mut self, token: &str) -> Answer {
        let csrf = self.csrf("/login").await;
        self.post(
            "/login",
            &[("csrf", &csrf), ("token", token), ("next", "/api_tokens")],
        )
        .await
    }

    /// Signs in through a one-time link's URL path (`/login/link/...`).
    pub async fn sign_in_link(&mut self, path: &str) -> Answer {
        let csrf = self.csrf(path).await;
        self.post(path, &[("csrf", &csrf)]).await
    }

    /// True when `GET /api_tokens` serves the page (not a redirect to sign in).
    pub async fn signed_in(&mut self) -> bool {
        let a = self.get("/api_tokens").await;
        a.status == http::StatusCode::OK
    }
}

/// The value of the first `name="csrf"` field in `html`.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_owned())
}
