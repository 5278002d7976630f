//! SDP offers: parse, plan and build an answer that must itself parse.
#![no_main]

use callvault_recorder::sdp::{self, AnswerParams, MediaPlan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = sdp::parse(data) else { return };
    let plans = sdp::plan(&offer);
    let accepted = plans
        .iter()
        .filter(|p| matches!(p, MediaPlan::Accept { .. }))
        .count();
    let ports: Vec<u16> = (0..accepted).map(|i| 10_000 + 2 * (i as u16)).collect();
    let params = AnswerParams {
        address: [192, 0, 2, 1].into(),
        ports: &ports,
        session_id: 1,
        session_version: 1,
    };
    let answer = sdp::build_answer(&offer, &plans, &params).expect("answer for a planned offer");
    let parsed = sdp::parse(answer.as_bytes()).expect("our answer parses");
    assert_eq!(parsed.media.len(), offer.media.len());
});
