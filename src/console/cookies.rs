//! How the console's cookies are set: the one place their name and attributes are decided.

/// How the console's cookies are set on the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePolicy {
    tls: bool,
}

impl CookiePolicy {
    /// The policy of a listener that serves TLS (`tls`) or plain HTTP.
    pub fn new(tls: bool) -> CookiePolicy {
        CookiePolicy { tls }
    }

    /// True when cookies carry `Secure` (the admin listener serves TLS).
    pub fn secure(self) -> bool {
        self.tls
    }

    /// The cookie name for `base`: `__Host-base` over TLS, `base` over plain HTTP (browsers
    /// refuse `__Host-` cookies without `Secure`).
    pub fn name(self, base: &str) -> String {
        if self.tls {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// The attributes after `name=value`: `; Path=/; HttpOnly; SameSite=Strict`, plus `; Secure`
    /// over TLS; never a `Domain`.
    pub fn attributes(self) -> &'static str {
        if self.tls {
            "; Path=/; HttpOnly; SameSite=Strict; Secure"
        } else {
            "; Path=/; HttpOnly; SameSite=Strict"
        }
    }
}

#[cfg(test)]
mod cookie_tests {
    use super::CookiePolicy;

    #[test]
    fn tls_cookies_are_secure_and_host_prefixed() {
        let tls = CookiePolicy { tls: true };
        assert!(tls.secure());
        assert_eq!(tls.name("session"), "__Host-session");
        assert!(tls.attributes().ends_with("; Secure") && !tls.attributes().contains("Domain"));
        let plain = CookiePolicy { tls: false };
        assert_eq!(plain.name("session"), "session");
        assert!(!plain.attributes().contains("Secure"));
    }
}
