//! SRTP and SRTCP datagrams of every suite through a stream's decryption.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callvault_recorder_fuzz::srtp_datagrams(data));
