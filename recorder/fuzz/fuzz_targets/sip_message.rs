//! SIP datagrams and TCP streams, and the SIPREC bodies they carry.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callvault_recorder_fuzz::sip_message(data));
