//! The token file loader: any text; a file that parses round-trips through bentogate's writer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let origin = std::path::Path::new("fuzz.yaml");
    if let Ok(file) = bentogate::store::TokenFile::parse(text, origin) {
        let written = file.to_text().expect("a parsed file serializes");
        let again = bentogate::store::TokenFile::parse(&written, origin).expect("bentogate reads what it writes");
        assert_eq!(again.tokens.len(), file.tokens.len());
        // The index the file source keeps writes the same records back.
        let index = bentogate::store::index::Index::new(file, 0);
        let mut streamed = Vec::new();
        index.write_to(&mut streamed).expect("an index serializes");
        let text = String::from_utf8(streamed).expect("the index writes UTF-8");
        let back = bentogate::store::TokenFile::parse(&text, origin).expect("bentogate reads what its index writes");
        assert_eq!(back.tokens.len(), again.tokens.len());
    }
});
