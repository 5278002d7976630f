//! multipart/mixed bodies; the first line of the input is the Content-Type.
#![no_main]

use callvault_recorder::multipart;
use callvault_recorder::sip::MediaType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let nl = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(nl);
    let ct = match std::str::from_utf8(head)
        .ok()
        .and_then(|s| MediaType::parse(s).ok())
    {
        Some(ct) => ct,
        None => match MediaType::parse("multipart/mixed;boundary=b") {
            Ok(ct) => ct,
            Err(_) => return,
        },
    };
    let _ = multipart::parse(&ct, body);
    let _ = multipart::siprec_body(&ct, body);
});
