//! The one normalization of a request path, done once before routing.
//!
//! The upstream (uvicorn/Starlette) percent-decodes the path before it routes, so a path the
//! proxy matched as `/%6detrics` reaches `/metrics` there, under another route's policy. This
//! module owns the answer: [`normalize`] turns an origin-form path (no query) into the one
//! spelling the proxy routes on, authorizes on and forwards, byte for byte:
//!
//! 1. refuse what has no safe meaning ([`PathError`]): an escape that is not two hex digits, an
//!    encoded separator, a control byte, bytes that do not decode to UTF-8, a `..` above the root,
//!    a dot segment with a `;` parameter;
//! 2. RFC 3986 section 6.2.2 (syntax-based normalization): decode escapes of unreserved
//!    characters, uppercase the hex digits of every other escape, escape raw non-ASCII bytes;
//! 3. optionally merge runs of `/` (nginx `merge_slashes`);
//! 4. RFC 3986 section 5.2.4 (remove_dot_segments): drop `.` and `..` segments.
//!
//! What it must never do: decode twice (`%252e` stays `%252e`: an escaped `%` is a literal `%`),
//! clamp a `..` above the root silently (that hides an attack; it is refused), return anything
//! that normalizes to something else (the output is a fixed point), allocate on an ordinary path,
//! or panic on any input. It is pure: no I/O, no configuration, no logging.

use std::borrow::Cow;

/// Why a request path is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The target does not start with `/` (`*`, an empty path, an authority): there is no
    /// origin-form path to route on.
    #[error("path not in origin form")]
    NotOrigin,
    /// A `%` not followed by two hex digits: servers disagree on what it means (kept, dropped,
    /// decoded partially), so any reading the proxy picks can differ from the upstream's.
    #[error("malformed percent escape in path")]
    BadEscape,
    /// An encoded `/` (`%2F`), an encoded `\` (`%5C`) or a raw `\`: a decoding upstream splits
    /// segments where the proxy saw none (and some treat `\` as `/`), so a route prefix or a
    /// dot segment could hide inside one segment.
    #[error("encoded separator in path")]
    EncodedSeparator,
    /// A byte below 0x20 or 0x7F, raw or escaped: NUL truncates paths in C-based servers, CR/LF
    /// split log lines and headers, and no route needs one.
    #[error("control byte in path")]
    ControlByte,
    /// The bytes after decoding every escape are not UTF-8 (an overlong `%C0%AE` that some
    /// decoders read as `.`, a lone `%FF`, ...): the upstream's decoder may replace, drop or
    /// reinterpret them, so the path it routes on is not the one authorized.
    #[error("path does not decode to UTF-8")]
    InvalidUtf8,
    /// A `..` segment that climbs above the root (`/..`, `/a/../..`): no legitimate client sends
    /// one, and clamping it silently would hide a traversal attempt.
    #[error("path climbs above the root")]
    AboveRoot,
    /// A segment whose part before the first `;` (raw or `%3B`) is `.` or `..` (`..;`, `.;x`,
    /// `%2e%2e;jsessionid=1`): Tomcat-style upstreams strip the parameter and then resolve the
    /// dot segment, which the proxy would have matched as an ordinary name.
    #[error("dot segment with a parameter in path")]
    DotParameter,
}

/// Uppercase hex digits, for the escapes this module writes.
const UPPER_HEX: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'A', 'B', 'C', 'D', 'E', 'F',
];

/// Normalizes an origin-form request path (no query) into the one spelling the proxy routes on,
/// authorizes on and forwards; see the [module documentation](self) for the rules and their order.
///
/// `merge_slashes` merges runs of `/` into one (as nginx's `merge_slashes`); without it, empty
/// segments are kept and count as segments for `..` (`/a//..` is `/a/`).
///
/// An ordinary path (letters, digits, `-`, `_`, `~`, `/`, sub-delimiters other than `;`, `:`,
/// `@`; no `//` when merging) is returned borrowed after one scan, without allocating. The output
/// always starts with `/`, is ASCII, and normalizes to itself.
///
/// # Errors
///
/// The [`PathError`] that makes the path unsafe to route on; the caller answers 400.
pub fn normalize(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOrigin);
    }
    if is_plain(bytes, merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let out = normalize_slow(bytes, merge_slashes)?;
    if out == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// True when `normalize(path, merge_slashes)` would return `path` unchanged (used to check
/// configured prefixes and public paths).
pub fn is_normalized(path: &str, merge_slashes: bool) -> bool {
    matches!(normalize(path, merge_slashes), Ok(out) if out == path)
}

/// The hot path: true when every byte is one normalization keeps as is and no rule applies
/// (no dot, no escape, no `;`, no `\`, nothing non-ASCII or control, no `//` when merging).
fn is_plain(bytes: &[u8], merge_slashes: bool) -> bool {
    let mut previous = 0u8;
    for &b in bytes {
        let plain = matches!(b,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' | b'/'
            | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@');
        if !plain || (merge_slashes && b == b'/' && previous == b'/') {
            return false;
        }
        previous = b;
    }
    true
}

/// The value of one hex digit, either case.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 section 2.3: ALPHA / DIGIT / `-` / `.` / `_` / `~`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends `%XX` with uppercase hex digits.
fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(UPPER_HEX[usize::from(b >> 4)]);
    out.push(UPPER_HEX[usize::from(b & 0x0F)]);
}

/// Refuses a byte, raw or decoded, that no path may hold.
fn check_byte(b: u8) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::EncodedSeparator),
        0x00..=0x1F | 0x7F => Err(PathError::ControlByte),
        _ => Ok(()),
    }
}

/// Rules 1 to 4 on a path that starts with `/` and is not plain.
fn normalize_slow(bytes: &[u8], merge_slashes: bool) -> Result<String, PathError> {
    // Rules 1 and 2 in one scan: `decoded` holds every escape decoded (what a decoding upstream
    // sees, checked for UTF-8 below), `canonical` the RFC 3986 6.2.2 form, which stays encoded.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut canonical = String::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            let low = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::BadEscape);
            };
            let d = (high << 4) | low;
            if d == b'/' {
                return Err(PathError::EncodedSeparator);
            }
            check_byte(d)?;
            decoded.push(d);
            if is_unreserved(d) {
                canonical.push(char::from(d));
            } else {
                // Includes `%25`: the literal `%` stays escaped, so it is never decoded again.
                push_escape(&mut canonical, d);
            }
            i += 3;
        } else {
            check_byte(b)?;
            decoded.push(b);
            if b.is_ascii() {
                canonical.push(char::from(b));
            } else {
                push_escape(&mut canonical, b);
            }
            i += 1;
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }

    // Rule 3.
    let merged = if merge_slashes {
        let mut merged = String::with_capacity(canonical.len());
        let mut previous_slash = false;
        for c in canonical.chars() {
            let slash = c == '/';
            if !(slash && previous_slash) {
                merged.push(c);
            }
            previous_slash = slash;
        }
        merged
    } else {
        canonical
    };

    // Rule 4, on a stack of segments: the stack is RFC 3986 5.2.4's output buffer, and a `..`
    // that finds it empty is the one the RFC would clamp.
    let rest = merged.strip_prefix('/').ok_or(PathError::NotOrigin)?;
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if is_dot_parameter(segment) {
            return Err(PathError::DotParameter);
        }
        match segment {
            "." => {}
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        // A dot segment at the end leaves the directory it names: `/a/b/..` is `/a/`.
        if last {
            kept.push("");
        }
    }
    let mut out = String::with_capacity(merged.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// True when the part of `segment` before its first `;` (raw, or `%3B` as this module writes it)
/// is `.` or `..`. A segment with no `;` is not a parameter (`..` alone is rule 4's).
fn is_dot_parameter(segment: &str) -> bool {
    let cut = [segment.find(';'), segment.find("%3B")]
        .into_iter()
        .flatten()
        .min();
    cut.is_some_and(|n| matches!(segment.get(..n), Some("." | "..")))
}

#[cfg(test)]
mod tests {
    use super::{is_normalized, normalize, PathError};
    use std::borrow::Cow;

    #[test]
    fn refuses_every_spelling_of_every_error() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("", NotOrigin),
            ("*", NotOrigin),
            ("a/b", NotOrigin),
            ("http://x/a", NotOrigin),
            ("%2Fa", NotOrigin),
            ("/%", BadEscape),
            ("/a%", BadEscape),
            ("/%2", BadEscape),
            ("/%zz", BadEscape),
            ("/%g0", BadEscape),
            ("/%0g", BadEscape),
            ("/%%41", BadEscape),
            ("/%é", BadEscape),
            ("/a%2Fb", EncodedSeparator),
            ("/a%2fb", EncodedSeparator),
            ("/a%5Cb", EncodedSeparator),
            ("/a%5cb", EncodedSeparator),
            ("/a\\b", EncodedSeparator),
            ("/..%2F..", EncodedSeparator),
            ("/a%00", ControlByte),
            ("/a\0", ControlByte),
            ("/a%0a", ControlByte),
            ("/a%0A", ControlByte),
            ("/a%0d%0a", ControlByte),
            ("/a\n", ControlByte),
            ("/a\r", ControlByte),
            ("/a\t", ControlByte),
            ("/a%1f", ControlByte),
            ("/a%7f", ControlByte),
            ("/a%7F", ControlByte),
            ("/a\x7f", ControlByte),
            ("/%C0%AE", InvalidUtf8),
            ("/%c0%ae%c0%ae/x", InvalidUtf8),
            ("/%e0%80%ae", InvalidUtf8),
            ("/%FF", InvalidUtf8),
            ("/%ff", InvalidUtf8),
            ("/%C3", InvalidUtf8),
            ("/%C3é", InvalidUtf8),
            ("/%ED%A0%80", InvalidUtf8),
            ("/..", AboveRoot),
            ("/../", AboveRoot),
            ("/../x", AboveRoot),
            ("/a/../..", AboveRoot),
            ("/a/../../b", AboveRoot),
            ("/%2e%2e", AboveRoot),
            ("/%2E%2e/x", AboveRoot),
            ("/.%2E", AboveRoot),
            ("/./..", AboveRoot),
            ("/..;/x", DotParameter),
            ("/.;/x", DotParameter),
            ("/a/.;/b", DotParameter),
            ("/a/.;x", DotParameter),
            ("/a/..;", DotParameter),
            ("/a/%2e%2e;jsessionid=1/b", DotParameter),
            ("/a/%2E.;x/b", DotParameter),
            ("/a/..%3Bx/b", DotParameter),
            ("/a/..%3b/b", DotParameter),
            ("/a/.;x/..", DotParameter),
        ];
        for &(path, want) in cases {
            for merge in [false, true] {
                assert_eq!(normalize(path, merge), Err(want), "{path:?} merge={merge}");
                assert!(!is_normalized(path, merge), "{path:?} merge={merge}");
            }
        }
    }

    #[test]
    fn normalizes() {
        // (input, output without merge_slashes, output with merge_slashes)
        let cases: &[(&str, &str, &str)] = &[
            ("/", "/", "/"),
            ("/%6Detrics", "/metrics", "/metrics"),
            ("/%6detrics", "/metrics", "/metrics"),
            ("/%41%5a%61%7A%30%39%2D%5F%7e", "/AZaz09-_~", "/AZaz09-_~"),
            ("/a/%2e%2e/b", "/b", "/b"),
            ("/a/%2E%2e/b", "/b", "/b"),
            ("/a/.%2e/b", "/b", "/b"),
            ("//a///b", "//a///b", "/a/b"),
            ("/a//b/", "/a//b/", "/a/b/"),
            ("/a///", "/a///", "/a/"),
            ("/a/./b", "/a/b", "/a/b"),
            ("/./a", "/a", "/a"),
            ("/.", "/", "/"),
            ("/a/.", "/a/", "/a/"),
            ("/a/b/..", "/a/", "/a/"),
            ("/a/b/../", "/a/", "/a/"),
            ("/a/b/../c", "/a/c", "/a/c"),
            ("/a/..", "/", "/"),
            ("/a//..", "/a/", "/"),
            ("/a/b//../..", "/a/", "/"),
            ("/%7e", "/~", "/~"),
            ("/%3b", "/%3B", "/%3B"),
            ("/%3B", "/%3B", "/%3B"),
            ("/a%20b", "/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9", "/caf%C3%A9"),
            ("/café", "/caf%C3%A9", "/caf%C3%A9"),
            ("/%E2%82%AC€", "/%E2%82%AC%E2%82%AC", "/%E2%82%AC%E2%82%AC"),
            ("/%252e", "/%252e", "/%252e"),
            ("/%252E%252e", "/%252E%252e", "/%252E%252e"),
            ("/%25", "/%25", "/%25"),
            ("/a;b", "/a;b", "/a;b"),
            ("/a;b/c;d=1", "/a;b/c;d=1", "/a;b/c;d=1"),
            ("/;x", "/;x", "/;x"),
            ("/...", "/...", "/..."),
            ("/a/.../b", "/a/.../b", "/a/.../b"),
            ("/...;x", "/...;x", "/...;x"),
            ("/.a/..b/a.", "/.a/..b/a.", "/.a/..b/a."),
            ("/v1/model.onnx", "/v1/model.onnx", "/v1/model.onnx"),
            ("/a:b@c", "/a:b@c", "/a:b@c"),
        ];
        for &(path, plain, merged) in cases {
            for (merge, want) in [(false, plain), (true, merged)] {
                let got = normalize(path, merge);
                assert_eq!(got.as_deref(), Ok(want), "{path:?} merge={merge}");
                assert_eq!(
                    normalize(want, merge).as_deref(),
                    Ok(want),
                    "{want:?} again"
                );
                assert_eq!(is_normalized(path, merge), path == want, "{path:?}");
            }
        }
    }

    /// Slashes merge before dot segments go (rule 3 before rule 4), so an empty segment a `..`
    /// could consume without merging is gone with it.
    #[test]
    fn merging_comes_before_dot_removal() {
        assert_eq!(normalize("//..", false).as_deref(), Ok("/"));
        assert_eq!(normalize("//..", true), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a//../..", false).as_deref(), Ok("/"));
        assert_eq!(normalize("/a//../..", true), Err(PathError::AboveRoot));
    }

    #[test]
    fn an_ordinary_or_unchanged_path_is_borrowed() {
        for path in [
            "/v1/predict",
            "/api/items/42",
            "/",
            "/a-b_c~d/!$&'()*+,=",
            "/a.b",
            "/a;b",
        ] {
            for merge in [false, true] {
                assert!(
                    matches!(normalize(path, merge), Ok(Cow::Borrowed(p)) if p == path),
                    "{path:?} merge={merge}"
                );
            }
        }
        assert!(matches!(normalize("//a", false), Ok(Cow::Borrowed("//a"))));
        assert!(matches!(normalize("//a", true), Ok(Cow::Owned(p)) if p == "/a"));
    }

    #[test]
    fn is_normalized_accepts_only_fixed_points() {
        for path in [
            "/",
            "/api",
            "/api/v1/",
            "/%3B",
            "/caf%C3%A9",
            "/%252e",
            "/a;b",
        ] {
            assert!(is_normalized(path, true), "{path:?}");
            assert!(is_normalized(path, false), "{path:?}");
        }
        assert!(is_normalized("//a", false));
        for path in [
            "/api/../x",
            "/%61pi",
            "/%3b",
            "/café",
            "/./api",
            "/api/.",
            "api",
            "",
        ] {
            assert!(!is_normalized(path, true), "{path:?}");
            assert!(!is_normalized(path, false), "{path:?}");
        }
        assert!(!is_normalized("//a", true));
    }
}
