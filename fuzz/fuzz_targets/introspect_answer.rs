//! The introspection answer parser (network input from the control plane): any bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let digest = bentogate::token::Digest([7; 32]);
    if let Ok(Some(t)) = bentogate::store::introspect::parse_answer(data, digest) {
        assert_eq!(t.digest, digest);
    }
});
