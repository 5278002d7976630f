//! rs-metadata XML: parse, merge into itself, resolve label senders.
#![no_main]

use callvault_recorder::metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = metadata::parse(data) {
        let mut state = md.clone();
        state.apply(md);
        for s in state.label_senders() {
            let _ = state.sender_of_label(s.label);
        }
    }
});
