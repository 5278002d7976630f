//! multipart/mixed bodies; the first line is the Content-Type.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callvault_recorder_fuzz::multipart(data));
