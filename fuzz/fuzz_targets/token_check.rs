//! The token format and checksum check: any bytes; a value that passes has a stable digest.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if bentogate::token::check(data).is_ok() {
        assert_eq!(
            bentogate::token::Digest::of(data),
            bentogate::token::Digest::of(data)
        );
    }
});
