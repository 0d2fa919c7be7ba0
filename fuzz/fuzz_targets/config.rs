//! The configuration loader: any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bentogate::config::Config::parse(text, "fuzz.yaml", std::path::Path::new("/nonexistent"));
    }
});
