//! The Authorization header parser: any header value bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        let mut h = http::HeaderMap::new();
        h.append(http::header::AUTHORIZATION, v.clone());
        if let bentogate::auth::Credentials::Bearer(t) = bentogate::auth::credentials(&h) {
            assert!(!t.is_empty() && t.len() <= data.len());
        }
        h.append(http::header::AUTHORIZATION, v);
        assert_eq!(
            bentogate::auth::credentials(&h),
            bentogate::auth::Credentials::Duplicated
        );
    }
});
