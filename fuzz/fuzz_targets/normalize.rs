//! The request-path normalizer: any UTF-8 path, both `merge_slashes` settings.
#![no_main]
use bentogate::path::{is_normalized, normalize};
use libfuzzer_sys::fuzz_target;

/// What every output satisfies: canonical (RFC 3986 6.2.2 and 5.2.4) and a fixed point.
fn check(input: &str, out: &str, merge_slashes: bool) {
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    assert!(out.is_ascii(), "{input:?} -> {out:?}");
    assert!(
        !(merge_slashes && out.contains("//")),
        "{input:?} -> {out:?}"
    );
    assert!(
        !out.split('/').any(|seg| seg == "." || seg == ".."),
        "{input:?} -> {out:?}"
    );
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let digits = bytes.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            digits.len() == 2
                && digits
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{input:?} -> {out:?}: escape at {i} not two uppercase hex digits"
        );
        let value = digits.iter().fold(0u8, |v, &d| {
            (v << 4) | (d as char).to_digit(16).unwrap_or(0) as u8
        });
        assert!(
            !(value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~' | b'/')),
            "{input:?} -> {out:?}: escaped {value:#04x} at {i}"
        );
    }
    assert_eq!(
        normalize(out, merge_slashes).as_deref(),
        Ok(out),
        "{input:?} not idempotent"
    );
    assert!(is_normalized(out, merge_slashes), "{input:?} -> {out:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    for merge_slashes in [false, true] {
        match normalize(path, merge_slashes) {
            Ok(out) => {
                check(path, &out, merge_slashes);
                assert_eq!(is_normalized(path, merge_slashes), *out == *path);
            }
            Err(_) => assert!(!is_normalized(path, merge_slashes)),
        }
    }
});
