//! SDP offers: parse, plan, answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callvault_recorder_fuzz::sdp_offer(data));
