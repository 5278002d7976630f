//! The recorder's G.722 codec against an independent one: libg722 (the `g722` package on PyPI,
//! in the speech venv that `scripts/test` installs, CALLVAULT_TEST_PYTHON). G.722's encoder
//! and decoder are specified bit-exactly (ITU-T G.722 Appendix II test vectors), so two
//! conforming implementations agree on every code word and every decoded sample.

use std::path::Path;
use std::process::Command;

use callvault_recorder::media::g722::{G722Decoder, G722Encoder};

/// Speech-band content that exercises both sub-bands and the adaptive step sizes: a chirp
/// across the whole 0–8 kHz band, loud and quiet passages, silence and a square wave's edges.
fn signal(samples: usize) -> Vec<i16> {
    let mut noise = 0x1234_5678u32;
    (0..samples)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let level = match (i / 8_000) % 4 {
                0 => 12_000.0,
                1 => 300.0,
                2 => 0.0,
                _ => 24_000.0,
            };
            let chirp = (2.0 * std::f64::consts::PI * (50.0 + 2_000.0 * t) * t).sin();
            let square = if (i / 20) % 2 == 0 { 0.3 } else { -0.3 };
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let hiss = f64::from((noise >> 16) as u16) / 65_536.0 - 0.5;
            (level * (0.6 * chirp + square + 0.1 * hiss)).clamp(-32_768.0, 32_767.0) as i16
        })
        .collect()
}

fn write_pcm(path: &Path, pcm: &[i16]) {
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write pcm");
}

fn read_pcm(path: &Path) -> Vec<i16> {
    std::fs::read(path)
        .expect("read pcm")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// libg722 encodes `input.pcm` to `theirs.g722`, and decodes both its own code words and
/// ours (`ours.g722`) to PCM.
const ORACLE: &str = r#"
import array, sys, G722
d = sys.argv[1]
pcm = array.array('h'); pcm.frombytes(open(d + '/input.pcm', 'rb').read())
open(d + '/theirs.g722', 'wb').write(G722.G722(16000, 64000).encode(pcm))
for name in ('theirs', 'ours'):
    out = G722.G722(16000, 64000).decode(open(d + '/' + name + '.g722', 'rb').read())
    open(d + '/' + name + '.decoded.pcm', 'wb').write(out.tobytes())
"#;

#[test]
fn codec_agrees_with_libg722_bit_for_bit() {
    let python = std::env::var("CALLVAULT_TEST_PYTHON").expect(
        "CALLVAULT_TEST_PYTHON is not set: run `source scripts/services.sh && ensure_speech` \
         (a venv with the g722 package)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let input = signal(16_000 * 6);
    write_pcm(&dir.path().join("input.pcm"), &input);

    let mut ours = Vec::new();
    G722Encoder::new().encode(&input, &mut ours);
    std::fs::write(dir.path().join("ours.g722"), &ours).expect("write ours");

    let status = Command::new(&python)
        .args(["-c", ORACLE])
        .arg(dir.path())
        .status()
        .expect("run libg722");
    assert!(status.success(), "libg722 failed: {status}");

    let theirs = std::fs::read(dir.path().join("theirs.g722")).expect("theirs");
    assert_eq!(
        theirs.len(),
        input.len() / 2,
        "64 kbit/s: one byte per two samples"
    );
    let first_diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "encoders disagree at code word {first_diff:?}"
    );

    // Our decoder on their code words gives their decoder's samples, and theirs on ours.
    let mut decoded = Vec::new();
    G722Decoder::new().decode(&theirs, &mut decoded);
    let their_decoded = read_pcm(&dir.path().join("theirs.decoded.pcm"));
    assert_eq!(decoded.len(), their_decoded.len());
    let first_diff = decoded.iter().zip(&their_decoded).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "decoders disagree at sample {first_diff:?}"
    );
    assert_eq!(
        read_pcm(&dir.path().join("ours.decoded.pcm")),
        their_decoded
    );
}
