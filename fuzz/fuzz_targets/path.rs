//! Path canonicalisation and route matching (`palisade::props::path`).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &str| {
    palisade::props::path(input);
});
