//! End-to-end media path: RTP packets (PCMU, PCMA, G.722, Opus, DTMF) with
//! loss, reordering, hold, late start, SSRC change → timeline → Ogg Opus,
//! decoded back with an independent Ogg page reader and libopus.

mod common;

use audiopus::{Application, Channels, SampleRate, coder::Encoder};
use callvault_recorder::media::{
    Channel, Codec, OpusConfig, PayloadType, Recording, StreamConfig, TimelineConfig, g711,
    g722::G722Encoder,
};
use common::{OUT, correlation, onset, read_ogg_opus, rms, rtp};
use std::f64::consts::PI;
use std::time::{Duration, Instant};

/// Party A: stepped tones 400..900 Hz, silent 4.6–5.0 s so the onset at
/// exactly 5.0 s marks alignment.
fn sig_a(t: f64) -> f64 {
    if (4.6..5.0).contains(&t) {
        return 0.0;
    }
    8000.0 * (2.0 * PI * freq_a(t) * t).sin()
}

fn freq_a(t: f64) -> f64 {
    400.0 + 100.0 * ((t * 10.0) as i64 % 6) as f64
}

fn freq_b(t: f64) -> f64 {
    1400.0 + 150.0 * ((t * 10.0) as i64 % 7) as f64
}

/// Party B: stepped tones 1400..2300 Hz.
fn sig_b(t: f64) -> f64 {
    8000.0 * (2.0 * PI * freq_b(t) * t).sin()
}

fn samples(sig: fn(f64) -> f64, t0: f64, rate: f64, n: usize) -> Vec<i16> {
    (0..n).map(|i| sig(t0 + i as f64 / rate) as i16).collect()
}

/// Deterministic pseudo-random jitter in 0..30 ms.
fn jitter(i: u64) -> f64 {
    ((i.wrapping_mul(2_654_435_761) >> 7) % 30) as f64 / 1000.0
}

/// A sender: one SSRC with its own sequence and timestamp bases.
struct Sender {
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    clock: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Enc {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

struct Arrival {
    at: f64,
    stream: usize,
    bytes: Vec<u8>,
}

/// Packetises `sig` from t0 to t1 (send time = media time) into arrivals.
#[allow(clippy::too_many_arguments)]
fn send(
    out: &mut Vec<Arrival>,
    stream: usize,
    s: &mut Sender,
    enc: Enc,
    sig: fn(f64) -> f64,
    t0: f64,
    t1: f64,
    seed: u64,
) {
    let mut g722 = G722Encoder::new();
    let opus = Encoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip).expect("enc");
    let mut i = 0u64;
    let mut t = t0;
    while t < t1 - 1e-9 {
        let payload: Vec<u8> = match enc {
            Enc::Pcmu => samples(sig, t, 8000.0, 160)
                .into_iter()
                .map(g711::encode_ulaw)
                .collect(),
            Enc::Pcma => samples(sig, t, 8000.0, 160)
                .into_iter()
                .map(g711::encode_alaw)
                .collect(),
            Enc::G722 => {
                let mut b = Vec::new();
                g722.encode(&samples(sig, t, 16000.0, 320), &mut b);
                b
            }
            Enc::Opus => {
                let mut b = vec![0u8; 1500];
                let n = opus
                    .encode(&samples(sig, t, 48000.0, 960), &mut b)
                    .expect("opus");
                b.truncate(n);
                b
            }
        };
        let pkt = rtp(s.pt, s.seq, s.ts, s.ssrc, &payload);
        out.push(Arrival {
            at: t + jitter(i + seed),
            stream,
            bytes: pkt,
        });
        s.seq = s.seq.wrapping_add(1);
        s.ts = s.ts.wrapping_add((0.02 * s.clock) as u32);
        t += 0.02;
        i += 1;
    }
}

/// Feeds arrivals in arrival order, advancing time before each packet and
/// every 20 ms in between, then finishes at `end`.
fn run(
    rec: &mut Recording<Vec<u8>>,
    ids: &[callvault_recorder::media::StreamId],
    mut arrivals: Vec<Arrival>,
    start: Instant,
    end: f64,
) {
    arrivals.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut tick = 0.0;
    for a in arrivals {
        while tick < a.at {
            rec.advance(start + Duration::from_secs_f64(tick))
                .expect("advance");
            tick += 0.02;
        }
        let at = start + Duration::from_secs_f64(a.at);
        rec.advance(at).expect("advance");
        let _ = rec.push(ids[a.stream], &a.bytes, at);
    }
    while tick < end {
        rec.advance(start + Duration::from_secs_f64(tick))
            .expect("advance");
        tick += 0.02;
    }
}

#[test]
fn two_parties_with_loss_hold_late_start_and_ssrc_change_stay_aligned() {
    let start = Instant::now();
    let session = 14.0;
    let opus = OpusConfig {
        comments: vec![("CALLVAULT_SESSION".into(), "test-1".into())],
        ..OpusConfig::default()
    };
    let mut rec = Recording::new(TimelineConfig::default(), opus, start, Vec::new()).expect("new");
    let dtmf = PayloadType::dynamic(101, Codec::TelephoneEvent, 8000);
    let a = rec.add_stream(StreamConfig::new(Channel::A).with_payload_type(dtmf));
    let b = rec.add_stream(StreamConfig::new(Channel::B));
    let silent = rec.add_stream(StreamConfig::new(Channel::B));
    let ids = [a, b, silent];

    let mut arrivals = Vec::new();
    // A: PCMU from 0 s, sequence and timestamp wrap early, hold 6–9 s with
    // timestamps following the wall clock, new SSRC at 10 s (transfer).
    let mut s1 = Sender {
        pt: 0,
        ssrc: 0x1111,
        seq: 65_500,
        ts: u32::MAX - 8000,
        clock: 8000.0,
    };
    send(&mut arrivals, 0, &mut s1, Enc::Pcmu, sig_a, 0.0, 6.0, 1);
    s1.ts = s1.ts.wrapping_add(3 * 8000);
    send(&mut arrivals, 0, &mut s1, Enc::Pcmu, sig_a, 9.0, 10.0, 2);
    let mut s2 = Sender {
        pt: 0,
        ssrc: 0x2222,
        seq: 7,
        ts: 123_456,
        clock: 8000.0,
    };
    send(
        &mut arrivals,
        0,
        &mut s2,
        Enc::Pcmu,
        sig_a,
        10.0,
        session,
        3,
    );
    // B: G.722, starts late at 1.5 s, holds 7.5–9 s with FROZEN timestamps
    // (the sender resumes where it paused), stops at 12.5 s.
    let mut s3 = Sender {
        pt: 9,
        ssrc: 0x3333,
        seq: 100,
        ts: 5,
        clock: 8000.0,
    };
    send(&mut arrivals, 1, &mut s3, Enc::G722, sig_b, 1.5, 7.5, 4);
    send(&mut arrivals, 1, &mut s3, Enc::G722, sig_b, 9.0, 12.5, 5);

    // Loss (every 37th), duplicates (every 50th), adjacent swaps (every 10th).
    let mut mangled = Vec::new();
    for (i, a) in arrivals.into_iter().enumerate() {
        if i % 37 == 36 {
            continue;
        }
        if i % 50 == 0 {
            mangled.push(Arrival {
                at: a.at + 0.005,
                stream: a.stream,
                bytes: a.bytes.clone(),
            });
        }
        mangled.push(a);
    }
    for i in (0..mangled.len().saturating_sub(1)).step_by(10) {
        if mangled[i].stream == mangled[i + 1].stream {
            let t = mangled[i].at;
            mangled[i].at = mangled[i + 1].at + 0.001;
            mangled[i + 1].at = t;
        }
    }
    // DTMF '5' on A at 3.0 s for 200 ms (start, update, three end packets).
    for (k, (dur, end)) in [(400u16, false), (1600, true), (1600, true), (1600, true)]
        .iter()
        .enumerate()
    {
        let ts = (u32::MAX - 8000).wrapping_add(3 * 8000);
        let payload = [
            5,
            if *end { 0x80 | 10 } else { 10 },
            (dur >> 8) as u8,
            *dur as u8,
        ];
        mangled.push(Arrival {
            at: 3.05 + 0.2 * (k as f64).min(1.0) + 0.001 * k as f64,
            stream: 0,
            bytes: rtp(101, 40_000 + k as u16, ts, 0x1111, &payload),
        });
    }
    // RTCP and garbage on the RTP port are counted, not fatal.
    mangled.push(Arrival {
        at: 2.0,
        stream: 0,
        bytes: vec![0x80, 200, 0, 6, 0, 0, 17, 17],
    });
    mangled.push(Arrival {
        at: 2.5,
        stream: 1,
        bytes: vec![0x80, 0, 1],
    });

    run(&mut rec, &ids, mangled, start, session);
    let mem = rec.memory_bytes();
    let (ogg, summary) = rec
        .finish(start + Duration::from_secs_f64(session))
        .expect("finish");
    let d = read_ogg_opus(&ogg);

    assert_eq!(d.channels, 2);
    assert!(d.tags.contains("CALLVAULT_SESSION=test-1"));
    assert!(
        d.pages > 14,
        "pages flushed about once a second: {}",
        d.pages
    );
    let dur = d.pcm[0].len() as f64 / OUT;
    assert!((dur - session).abs() <= 0.02, "duration {dur}");
    assert_eq!(summary.duration, Duration::from_secs_f64(session));
    assert!(mem < 64 * 1024, "timeline memory {mem} bytes");

    let [ch0, ch1] = &d.pcm;
    // Each channel carries its own party and not the other.
    for (t0, t1) in [(0.5, 4.5), (5.1, 5.9), (9.2, 9.9), (10.1, 13.8)] {
        let own = correlation(ch0, freq_a, t0, t1);
        let other = correlation(ch0, freq_b, t0, t1);
        assert!(
            own > 0.6 && other < 0.1,
            "ch0 {t0}-{t1}: A {own:.2} B {other:.2}"
        );
    }
    for (t0, t1) in [(1.7, 7.3), (9.2, 12.3)] {
        let own = correlation(ch1, freq_b, t0, t1);
        let other = correlation(ch1, freq_a, t0, t1);
        assert!(
            own > 0.6 && other < 0.1,
            "ch1 {t0}-{t1}: B {own:.2} A {other:.2}"
        );
    }
    // Hold and late start are silence, not shifted audio.
    assert!(rms(ch0, 6.1, 8.9) < 100.0, "A hold: {}", rms(ch0, 6.1, 8.9));
    assert!(
        rms(ch1, 0.0, 1.45) < 100.0,
        "B before start: {}",
        rms(ch1, 0.0, 1.45)
    );
    assert!(rms(ch1, 7.6, 8.9) < 100.0, "B hold: {}", rms(ch1, 7.6, 8.9));
    assert!(
        rms(ch1, 12.6, 14.0) < 100.0,
        "B after end: {}",
        rms(ch1, 12.6, 14.0)
    );
    // Alignment: events appear where they happened.
    let t = onset(ch0, 4.7);
    assert!((t - 5.0).abs() <= 0.02, "A onset at {t}");
    let t = onset(ch0, 6.5);
    assert!((t - 9.0).abs() <= 0.02, "A resume at {t}");
    let t = onset(ch1, 0.5);
    assert!((t - 1.5).abs() <= 0.03, "B late start at {t}");
    let t = onset(ch1, 8.0);
    assert!(
        (t - 9.0).abs() <= 0.03,
        "B resume (frozen timestamps) at {t}"
    );

    let sa = &summary.streams[0];
    assert_eq!(sa.ssrc_changes, 1);
    assert!(sa.lost > 0 && sa.duplicates > 0 && sa.rtcp == 1, "{sa:?}");
    let sb = &summary.streams[1];
    assert_eq!(sb.resyncs, 1, "{sb:?}");
    assert_eq!(sb.malformed, 1);
    assert_eq!(summary.streams[2].packets, 0);

    assert_eq!(summary.dtmf.len(), 1);
    let e = &summary.dtmf[0];
    assert_eq!(e.digit, Some('5'));
    assert!(e.ended);
    assert_eq!(e.duration, Duration::from_millis(200));
    let s = e.start.as_secs_f64();
    assert!((s - 3.0).abs() <= 0.02, "DTMF at {s}");
}

#[test]
fn opus_and_pcma_sources_and_a_mixed_stream() {
    let start = Instant::now();
    let mut rec = Recording::new(
        TimelineConfig::default(),
        OpusConfig::default(),
        start,
        Vec::new(),
    )
    .expect("new");
    let a = rec.add_stream(StreamConfig::new(Channel::A));
    let b = rec.add_stream(
        StreamConfig::new(Channel::B).with_payload_type(PayloadType::dynamic(
            111,
            Codec::Opus,
            48000,
        )),
    );
    let mut arrivals = Vec::new();
    let mut sa = Sender {
        pt: 8,
        ssrc: 1,
        seq: 1,
        ts: 1,
        clock: 8000.0,
    };
    send(&mut arrivals, 0, &mut sa, Enc::Pcma, sig_a, 0.0, 4.0, 7);
    let mut sb = Sender {
        pt: 111,
        ssrc: 2,
        seq: 1,
        ts: 1,
        clock: 48000.0,
    };
    send(&mut arrivals, 1, &mut sb, Enc::Opus, sig_b, 1.0, 4.0, 8);
    run(&mut rec, &[a, b], arrivals, start, 4.0);
    let (ogg, _) = rec.finish(start + Duration::from_secs(4)).expect("finish");
    let d = read_ogg_opus(&ogg);
    assert!((d.pcm[0].len() as f64 / OUT - 4.0).abs() <= 0.02);
    let (own, other) = (
        correlation(&d.pcm[0], freq_a, 0.5, 3.5),
        correlation(&d.pcm[0], freq_b, 0.5, 3.5),
    );
    assert!(own > 0.6 && other < 0.1, "PCMA ch0: {own:.2} {other:.2}");
    let (own, other) = (
        correlation(&d.pcm[1], freq_b, 1.5, 3.5),
        correlation(&d.pcm[1], freq_a, 1.5, 3.5),
    );
    assert!(own > 0.5 && other < 0.1, "Opus ch1: {own:.2} {other:.2}");
    assert!(rms(&d.pcm[1], 0.0, 0.95) < 100.0);

    // One mixed stream (some sources send only that) lands on both channels.
    let mut rec = Recording::new(
        TimelineConfig::default(),
        OpusConfig::default(),
        start,
        Vec::new(),
    )
    .expect("new");
    let m = rec.add_stream(StreamConfig::new(Channel::Both));
    let mut arrivals = Vec::new();
    let mut s = Sender {
        pt: 0,
        ssrc: 9,
        seq: 1,
        ts: 1,
        clock: 8000.0,
    };
    send(&mut arrivals, 0, &mut s, Enc::Pcmu, sig_a, 0.0, 3.0, 9);
    run(&mut rec, &[m], arrivals, start, 3.0);
    let (ogg, _) = rec.finish(start + Duration::from_secs(3)).expect("finish");
    let d = read_ogg_opus(&ogg);
    for ch in &d.pcm {
        let c = correlation(ch, freq_a, 0.5, 2.5);
        assert!(c > 0.6, "mixed stream on both channels: {c:.2}");
    }
}

#[test]
fn a_session_without_any_rtp_is_full_length_silence() {
    let start = Instant::now();
    let mut rec = Recording::new(
        TimelineConfig::default(),
        OpusConfig::default(),
        start,
        Vec::new(),
    )
    .expect("new");
    rec.add_stream(StreamConfig::new(Channel::A));
    rec.add_stream(StreamConfig::new(Channel::B));
    rec.advance(start + Duration::from_secs(2))
        .expect("advance");
    let end = start + Duration::from_millis(7_310);
    let (ogg, summary) = rec.finish(end).expect("finish");
    let d = read_ogg_opus(&ogg);
    assert_eq!(d.channels, 2);
    let dur = d.pcm[0].len() as f64 / OUT;
    assert!((dur - 7.31).abs() < 0.001, "duration {dur}");
    assert_eq!(summary.duration, Duration::from_millis(7_310));
    assert!(rms(&d.pcm[0], 0.0, 7.3) < 10.0 && rms(&d.pcm[1], 0.0, 7.3) < 10.0);
}

#[test]
fn memory_stays_bounded_over_a_long_call_with_a_flood_of_future_packets() {
    let start = Instant::now();
    let mut rec = Recording::new(
        TimelineConfig::default(),
        OpusConfig::default(),
        start,
        std::io::sink(),
    )
    .expect("new");
    let a = rec.add_stream(StreamConfig::new(Channel::A));
    let payload = [0xffu8; 160];
    let mut peak = 0;
    for i in 0..30_000u32 {
        // Ten minutes of 20 ms packets, plus a hostile packet far in the future each second.
        let at = start + Duration::from_millis(u64::from(i) * 20);
        rec.push(a, &rtp(0, i as u16, i.wrapping_mul(160), 5, &payload), at)
            .expect("push");
        if i % 50 == 0 {
            let bogus = rtp(
                0,
                (i + 30_000) as u16,
                i.wrapping_mul(160).wrapping_add(1 << 30),
                5,
                &payload,
            );
            rec.push(a, &bogus, at).expect("push");
        }
        rec.advance(at).expect("advance");
        peak = peak.max(rec.memory_bytes());
    }
    assert!(peak < 64 * 1024, "peak {peak} bytes");
}
