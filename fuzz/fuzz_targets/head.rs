//! Client header lines → forwarded headers (`palisade::props::head`).
#![no_main]

libfuzzer_sys::fuzz_target!(|lines: Vec<(String, Vec<u8>)>| {
    palisade::props::head(&lines);
});
