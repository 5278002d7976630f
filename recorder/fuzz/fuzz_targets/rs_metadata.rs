//! rs-metadata XML documents.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callvault_recorder_fuzz::rs_metadata(data));
