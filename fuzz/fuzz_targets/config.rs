//! Config parsing and compilation (`palisade::props::config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: &str| {
    palisade::props::config(input);
});
