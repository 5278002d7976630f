//! RTP packet sequences through the timeline and every decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callvault_recorder_fuzz::rtp_path(data));
