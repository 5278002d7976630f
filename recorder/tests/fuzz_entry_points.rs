//! Random and mutated input never panics any signalling parser (the fuzz
//! targets in fuzz/ do the same with coverage guidance).
#![allow(clippy::unwrap_used)]

use callvault_recorder::sip::{self, Limits, StreamFramer};
use callvault_recorder::{metadata, multipart, sdp};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    let dir = format!("{}/tests/fixtures/sip", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    out.sort();
    out
}

/// Feeds bytes to every parser, the way the recorder chains them.
fn exercise(data: &[u8]) {
    if let Ok(msg) = sip::parse_datagram(data) {
        let _ = msg.validate_request();
        let _ = sip::TransactionKey::of(&msg);
        let _ = sip::DialogId::for_incoming(&msg);
        let _ = msg.response(200, "OK", "t").map(|r| r.to_bytes());
        if let Ok(Some(ct)) = msg.content_type()
            && let Ok(body) = multipart::siprec_body(&ct, &msg.body)
        {
            if let Ok(offer) = sdp::parse(&body.sdp) {
                let plans = sdp::plan(&offer);
                let n = plans
                    .iter()
                    .filter(|p| matches!(p, sdp::MediaPlan::Accept { .. }))
                    .count();
                let ports: Vec<u16> = (0..n).map(|i| 20000 + 2 * i as u16).collect();
                let params = sdp::AnswerParams {
                    address: [127, 0, 0, 1].into(),
                    ports: &ports,
                    session_id: 1,
                    session_version: 1,
                };
                sdp::build_answer(&offer, &plans, &params).unwrap();
            }
            if let Some(md) = body
                .metadata
                .as_deref()
                .and_then(|m| metadata::parse(m).ok())
            {
                let _ = md.label_senders();
            }
        }
    }
    let _ = sdp::parse(data);
    let _ = metadata::parse(data);
    let mut framer = StreamFramer::new(Limits::default());
    for chunk in data.chunks(13) {
        framer.push(chunk);
        while let Ok(Some(_)) = framer.next_message() {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&data);
    }

    #[test]
    fn mutated_fixtures(
        which in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let all = seeds();
        let mut data = all[which % all.len()].clone();
        for (at, byte, op) in edits {
            if data.is_empty() {
                data.push(byte);
                continue;
            }
            let i = at.index(data.len());
            match op {
                0 => data[i] = byte,
                1 => { data.remove(i); }
                _ => data.insert(i, byte),
            }
        }
        exercise(&data);
    }
}
