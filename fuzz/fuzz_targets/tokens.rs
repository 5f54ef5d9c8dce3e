//! Token extraction and the Supabase cookie decoder (`palisade::props::tokens`).
#![no_main]

libfuzzer_sys::fuzz_target!(|lines: Vec<(String, Vec<u8>)>| {
    palisade::props::tokens(&lines);
});
