//! Transcription speed: real-time factor per core (processing time / audio time, one CPU
//! thread per engine worker) of the local whisper engine and of the openai engine against a
//! local OpenAI-compatible server running the same model on one thread, measured side by side
//! in one run on the same two-party call, with the Opus decoding and channel split as the
//! baseline. Each channel is sent as the job sends it: its turns, without the silence between. Needs `source scripts/services.sh && start_speech_server`.
//!
//! Run: `cargo bench -p callvault-jobs --bench transcribe`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke run of one round.

use std::time::Instant;

use callvault_jobs::transcribe::audio::{RATE, decode_ogg_opus, speech_pieces};
use callvault_jobs::transcribe::{
    OpenAiEngine, OpenAiOptions, Request, SpeechEngine, WhisperEngine, WhisperOptions,
    word_error_rate,
};

#[path = "../tests/transcribe_support/mod.rs"]
mod transcribe_support;

/// Rounds measured under `cargo bench`; a smoke run measures one.
fn rounds() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        3
    } else {
        1
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start_speech_server first"))
}

/// Median seconds over [`rounds`] of transcribing both channels, and the worse channel's WER.
async fn measure<E: SpeechEngine>(
    engine: &E,
    channels: &[Vec<i16>],
    refs: &[String],
) -> (f64, f64) {
    let request = Request {
        language: "en-US".into(),
        phrase_hints: Vec::new(),
    };
    let mut times = Vec::new();
    let mut wer: f64 = 0.0;
    for _ in 0..rounds() {
        let t = Instant::now();
        for (c, samples) in channels.iter().enumerate() {
            let mut text = Vec::new();
            let max = engine.max_seconds() as usize * RATE as usize;
            for piece in speech_pieces(samples, max) {
                let out = engine
                    .transcribe(&samples[piece], &request)
                    .await
                    .expect("transcribe");
                text.push(out.text);
            }
            wer = wer.max(word_error_rate(&refs[c], &text.join(" ")));
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], wer)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let d = transcribe_support::dialogue();
    let ogg = d.ogg();
    let refs = [d.reference(0), d.reference(1)];

    let t = Instant::now();
    for _ in 0..rounds() {
        let pcm = decode_ogg_opus(&ogg).expect("decode");
        for c in &pcm.channels {
            std::hint::black_box(speech_pieces(c, 30 * RATE as usize));
        }
    }
    let decode = t.elapsed().as_secs_f64() / rounds() as f64;
    let pcm = decode_ogg_opus(&ogg).expect("decode");
    let audio = pcm.seconds() * pcm.channels.len() as f64;

    rt.block_on(async {
        let whisper = WhisperEngine::start(WhisperOptions::new(
            env("CALLVAULT_TEST_PYTHON"),
            env("CALLVAULT_TEST_WHISPER_MODEL"),
        ))
        .await
        .expect("whisper");
        let (w_secs, w_wer) = measure(&whisper, &pcm.channels, &refs).await;
        let openai = OpenAiEngine::new(OpenAiOptions::new(
            Some(&env("CALLVAULT_TEST_OPENAI_ENDPOINT")),
            None,
            None,
        ))
        .expect("openai");
        let (o_secs, o_wer) = measure(&openai, &pcm.channels, &refs).await;

        println!("transcription of {audio:.1} s of audio (2 channels), median of {}, 1 thread per engine", rounds());
        println!("| path | seconds | real-time factor per core | x real time | worst channel WER |");
        println!("|---|---|---|---|---|");
        println!(
            "| Opus decode + channel split + turns | {decode:.4} | {:.5} | {:.0} | - |",
            decode / audio,
            audio / decode
        );
        for (name, secs, wer) in [
            ("whisper engine (worker, tiny.en int8)", w_secs, w_wer),
            ("openai engine (local server, same model)", o_secs, o_wer),
        ] {
            println!(
                "| {name} | {secs:.3} | {:.3} | {:.1} | {wer:.3} |",
                secs / audio,
                audio / secs
            );
        }
        println!(
            "whisper engine / decode: {:.0}x; openai engine / whisper engine: {:.2}",
            w_secs / decode,
            o_secs / w_secs
        );
    });
}
