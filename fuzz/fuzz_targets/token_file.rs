//! The token file loader: any text; a file that parses round-trips through bentogate's writer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let origin = std::path::Path::new("fuzz.yaml");
    if let Ok(file) = bentogate::store::TokenFile::parse(text, origin) {
        let _ = file.live_set();
        let written = file.to_text().expect("a parsed file serializes");
        let again = bentogate::store::TokenFile::parse(&written, origin).expect("bentogate reads what it writes");
        assert_eq!(again.tokens.len(), file.tokens.len());
    }
});
