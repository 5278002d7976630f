//! Test calls for the transcription tests and benchmark: dialogues spoken by espeak-ng,
//! shaped by sox to the telephone band, each party on its own channel, encoded as the
//! recorder encodes calls.

#![allow(dead_code)] // each test or benchmark that includes this uses part of it

use std::process::Command;
use std::sync::OnceLock;

use callvault_recorder::media::{OggOpusWriter, OpusConfig};

/// Sample rate of the synthesised calls.
pub const RATE: usize = 16_000;

pub const A1: &str = "Thank you for calling the support line. How can I help you today?";
pub const B1: &str = "I would like to check the balance of my savings account, please.";
pub const A2: &str = "Certainly. Please hold while I transfer your call to a specialist.";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `text` spoken by espeak-ng, shaped by sox to 16 kHz mono telephone-band speech.
pub fn speak(text: &str, voice: &str) -> Vec<i16> {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("speech.wav");
    let raw = dir.path().join("speech.raw");
    run(Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&wav)
        .arg(text));
    // Repeatable (-R): sox dithers the 16-bit output from a random seed otherwise, and every
    // run would hear slightly different calls.
    run(Command::new("sox")
        .arg("-R")
        .arg(&wav)
        .args([
            "-t",
            "raw",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
        ])
        .arg(&raw)
        .args(["highpass", "300", "lowpass", "3400", "gain", "-n", "-3"]));
    std::fs::read(&raw)
        .expect("raw audio")
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A two-party call: stereo PCM (party A left) and when each utterance starts, in seconds.
pub struct Dialogue {
    pub left: Vec<i16>,
    pub right: Vec<i16>,
    /// (channel, start seconds, end seconds, text)
    pub turns: Vec<(usize, f64, f64, &'static str)>,
}

impl Dialogue {
    pub fn new(turns: &[(usize, &'static str)]) -> Self {
        let mut chans: [Vec<i16>; 2] = [Vec::new(), Vec::new()];
        let mut at = RATE * 3 / 10;
        let mut starts = Vec::new();
        for &(c, text) in turns {
            let voice = if c == 0 { "en-us" } else { "en" };
            let speech = speak(text, voice);
            for ch in &mut chans {
                ch.resize(at, 0);
            }
            let secs = |n: usize| n as f64 / RATE as f64;
            starts.push((c, secs(at), secs(at + speech.len()), text));
            chans[c].extend_from_slice(&speech);
            at += speech.len() + RATE * 6 / 10;
        }
        for ch in &mut chans {
            ch.resize(at, 0);
        }
        let [left, right] = chans;
        Dialogue {
            left,
            right,
            turns: starts,
        }
    }

    pub fn reference(&self, channel: usize) -> String {
        self.turns
            .iter()
            .filter(|t| t.0 == channel)
            .map(|t| t.3)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn seconds(&self) -> f64 {
        self.left.len() as f64 / RATE as f64
    }

    /// The call as the recorder writes it: Ogg Opus, one mono stream per party.
    pub fn ogg(&self) -> Vec<u8> {
        let config = OpusConfig {
            input_rate: RATE as u32,
            frame_len: 320,
            ..OpusConfig::default()
        };
        let mut w = OggOpusWriter::new(Vec::new(), config).expect("opus writer");
        let mut frame = vec![0i16; 640];
        for start in (0..self.left.len()).step_by(320) {
            frame.fill(0);
            for i in 0..320.min(self.left.len() - start) {
                frame[2 * i] = self.left[start + i];
                frame[2 * i + 1] = self.right[start + i];
            }
            w.write_frame(&frame).expect("frame");
        }
        w.finish(self.left.len() as u64).expect("finish").0
    }
}

/// The dialogue every test call carries (synthesised once).
pub fn dialogue() -> &'static Dialogue {
    static D: OnceLock<Dialogue> = OnceLock::new();
    D.get_or_init(|| Dialogue::new(&[(0, A1), (1, B1), (0, A2)]))
}

/// A short call for the selection tests: one sentence from party A.
pub fn short_call() -> &'static Dialogue {
    static D: OnceLock<Dialogue> = OnceLock::new();
    D.get_or_init(|| Dialogue::new(&[(0, "Good morning, thank you for calling.")]))
}
