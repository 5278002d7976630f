//! Random and mutated input never panics the recorder's parsers and media
//! path. The entry points are the fuzz targets' own (recorder/fuzz, run with
//! coverage guidance in CI); here proptest drives them from random bytes and
//! from mutations of the committed seed corpora, so `cargo test` covers them.

#[path = "../fuzz/src/lib.rs"]
mod entry;

use proptest::prelude::*;
use proptest::sample::Index;

/// The files of a directory under the crate, in a stable order.
fn files(dir: &str) -> Vec<Vec<u8>> {
    let dir = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .and_then(|entries| entries.map(|e| std::fs::read(e?.path())).collect())
        .unwrap_or_else(|e| panic!("{dir}: {e}"));
    assert!(!out.is_empty(), "{dir} is empty");
    out.sort();
    out
}

/// The seed corpus of a fuzz target; the SIP one also takes the SIP fixtures.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut out = files(&format!("fuzz/seeds/{target}"));
    if target == "sip_message" {
        out.extend(files("tests/fixtures/sip"));
    }
    out
}

/// Applies byte edits (overwrite, delete, insert) to one seed.
fn mutate(seed: &[u8], edits: &[(Index, u8, u8)]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for (at, byte, op) in edits {
        if data.is_empty() {
            data.push(*byte);
            continue;
        }
        let i = at.index(data.len());
        match op % 3 {
            0 => data[i] = *byte,
            1 => {
                data.remove(i);
            }
            _ => data.insert(i, *byte),
        }
    }
    data
}

/// One seed of `target`, picked by `which`, after `edits`.
fn mutated(target: &str, which: Index, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    let all = seeds(target);
    mutate(&all[which.index(all.len())], edits)
}

fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    proptest::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..16)
}

/// The seeds themselves go through without tripping an invariant.
#[test]
fn seeds_pass() {
    for seed in seeds("sip_message") {
        entry::sip_message(&seed);
    }
    for seed in seeds("sdp") {
        entry::sdp_offer(&seed);
    }
    for seed in seeds("rs_metadata") {
        entry::rs_metadata(&seed);
    }
    for seed in seeds("multipart") {
        entry::multipart(&seed);
    }
    for seed in seeds("rtp_path") {
        entry::rtp_path(&seed);
    }
    for seed in seeds("srtp") {
        entry::srtp_datagrams(&seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sip_message_random(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        entry::sip_message(&data);
    }

    #[test]
    fn sip_message_mutated(which in any::<Index>(), edits in edits()) {
        entry::sip_message(&mutated("sip_message", which, &edits));
    }

    #[test]
    fn sdp_random(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        entry::sdp_offer(&data);
    }

    #[test]
    fn sdp_mutated(which in any::<Index>(), edits in edits()) {
        entry::sdp_offer(&mutated("sdp", which, &edits));
    }

    #[test]
    fn rs_metadata_random(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        entry::rs_metadata(&data);
    }

    #[test]
    fn rs_metadata_mutated(which in any::<Index>(), edits in edits()) {
        entry::rs_metadata(&mutated("rs_metadata", which, &edits));
    }

    #[test]
    fn multipart_random(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        entry::multipart(&data);
    }

    #[test]
    fn multipart_mutated(which in any::<Index>(), edits in edits()) {
        entry::multipart(&mutated("multipart", which, &edits));
    }

    #[test]
    fn rtp_path_random(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        entry::rtp_path(&data);
    }

    #[test]
    fn rtp_path_mutated(which in any::<Index>(), edits in edits()) {
        entry::rtp_path(&mutated("rtp_path", which, &edits));
    }

    #[test]
    fn srtp_random(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        entry::srtp_datagrams(&data);
    }

    #[test]
    fn srtp_mutated(which in any::<Index>(), edits in edits()) {
        entry::srtp_datagrams(&mutated("srtp", which, &edits));
    }
}
