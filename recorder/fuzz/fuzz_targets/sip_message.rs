//! SIP datagrams and TCP streams: parse, derive keys, answer, re-serialise.
#![no_main]

use callvault_recorder::sip::{self, DialogId, Limits, StreamFramer, TransactionKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = sip::parse_datagram(data) {
        let _ = msg.validate_request();
        let _ = TransactionKey::of(&msg);
        let _ = DialogId::for_incoming(&msg);
        let _ = msg.vias();
        let _ = msg.contacts();
        let _ = msg.content_type();
        if let Ok(resp) = msg.response(200, "OK", "fuzz") {
            // Whatever we send must parse back.
            assert!(sip::parse_datagram(&resp.to_bytes()).is_ok());
        }
    }
    // The same bytes as a stream, split at an arbitrary point.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut framer = StreamFramer::new(Limits::default());
    framer.push(a);
    while let Ok(Some(_)) = framer.next_message() {}
    framer.push(b);
    while let Ok(Some(_)) = framer.next_message() {}
});
