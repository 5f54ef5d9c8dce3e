//! JWT header parsing and verification (`palisade::props::jwt`).
#![no_main]

libfuzzer_sys::fuzz_target!(|token: &str| {
    palisade::props::jwt(token);
});
