//! Throughput of the media path on one core: two G.711 streams through RTP
//! parsing, the timeline, decoding, resampling and two-channel Opus/Ogg
//! encoding, against raw libopus encoding of the same PCM at the same
//! settings. Run: `cargo bench -p callvault-recorder --bench media_path`.

use audiopus::{Application, Bitrate, Channels, SampleRate, Signal, coder::Encoder};
use callvault_recorder::media::{
    Channel, OpusConfig, Recording, StreamConfig, TimelineConfig, g711,
};
use std::f64::consts::PI;
use std::hint::black_box;
use std::time::{Duration, Instant};

const SECONDS: usize = 120;

fn speechy(t: f64, base: f64) -> f64 {
    // Tone with a syllable-rate envelope, a rough stand-in for speech.
    let env = (0.5 + 0.5 * (2.0 * PI * 3.0 * t).sin()).powi(2);
    6000.0 * env * (2.0 * PI * (base + 80.0 * (2.0 * PI * 0.7 * t).sin()) * t).sin()
}

fn packets(base: f64, ssrc: u32) -> Vec<Vec<u8>> {
    (0..SECONDS * 50)
        .map(|i| {
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&((i * 160) as u32).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend((0..160).map(|k| {
                let t = (i * 160 + k) as f64 / 8000.0;
                g711::encode_ulaw(speechy(t, base) as i16)
            }));
            p
        })
        .collect()
}

fn full_path(a: &[Vec<u8>], b: &[Vec<u8>]) -> (Duration, u64, usize) {
    let start = Instant::now();
    let mut rec = Recording::new(
        TimelineConfig::default(),
        OpusConfig::default(),
        start,
        Vec::with_capacity(1 << 20),
    )
    .expect("recording");
    let sa = rec.add_stream(StreamConfig::new(Channel::A));
    let sb = rec.add_stream(StreamConfig::new(Channel::B));
    let mut peak = 0;
    let t0 = Instant::now();
    for (i, (pa, pb)) in a.iter().zip(b).enumerate() {
        let at = start + Duration::from_millis(i as u64 * 20);
        rec.push(sa, pa, at).expect("push");
        rec.push(sb, pb, at).expect("push");
        rec.advance(at).expect("advance");
        if i % 500 == 0 {
            peak = peak.max(rec.memory_bytes());
        }
    }
    let (out, _) = rec
        .finish(start + Duration::from_secs(SECONDS as u64))
        .expect("finish");
    (t0.elapsed(), black_box(out).len() as u64, peak)
}

fn raw_opus() -> Duration {
    let frames: Vec<Vec<i16>> = (0..SECONDS * 50)
        .map(|i| {
            (0..320)
                .map(|k| speechy((i * 320 + k) as f64 / 16000.0, 500.0) as i16)
                .collect()
        })
        .collect();
    let make = || {
        let mut e =
            Encoder::new(SampleRate::Hz16000, Channels::Mono, Application::Voip).expect("enc");
        e.set_bitrate(Bitrate::BitsPerSecond(16_000))
            .expect("bitrate");
        e.set_complexity(5).expect("complexity");
        e.set_signal(Signal::Voice).expect("signal");
        e
    };
    let (e0, e1) = (make(), make());
    let mut out = vec![0u8; 1500];
    let t0 = Instant::now();
    for f in &frames {
        black_box(e0.encode(f, &mut out).expect("encode"));
        black_box(e1.encode(f, &mut out).expect("encode"));
    }
    t0.elapsed()
}

fn main() {
    let a = packets(450.0, 1);
    let b = packets(1500.0, 2);
    let (full, bytes, peak) = full_path(&a, &b);
    let raw = raw_opus();
    let audio = SECONDS as f64;
    println!("audio per run: {SECONDS} s, two channels, 16 kHz, 32 kbit/s, complexity 5, 20 ms");
    println!(
        "full path (RTP→timeline→decode→resample→2×Opus→Ogg): {:.3} s → {:.0}× real time → ~{:.0} two-channel sessions per core ({:.0} channel-encodes/s)",
        full.as_secs_f64(),
        audio / full.as_secs_f64(),
        audio / full.as_secs_f64(),
        2.0 * audio * 50.0 / full.as_secs_f64()
    );
    println!(
        "raw libopus (2 mono encoders, same settings):          {:.3} s → {:.0}× real time ({:.0} channel-encodes/s)",
        raw.as_secs_f64(),
        audio / raw.as_secs_f64(),
        2.0 * audio * 50.0 / raw.as_secs_f64()
    );
    println!(
        "output {:.1} KB per minute; timeline buffers peak {peak} bytes per session",
        bytes as f64 / 1024.0 / (audio / 60.0)
    );
}
