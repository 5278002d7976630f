//! Helpers the recorder's media tests share: RTP packets, and the recording read back with an
//! independent Ogg page reader and libopus, measured per tone.
#![allow(dead_code)] // each test file uses its own share of these

use audiopus::{Channels, SampleRate, coder::Decoder};
use callvault_recorder::media::ogg::crc32;
use std::f64::consts::PI;

/// The recordings' output rate.
pub const OUT: f64 = 48_000.0;

/// An RTP packet (version 2, no CSRC, no extension).
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, pt];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ts.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// Ogg Opus read back: pre-skip, final granule, and 48 kHz stereo PCM
/// trimmed exactly as a player would.
pub struct Decoded {
    pub channels: u8,
    pub pcm: [Vec<f64>; 2],
    pub pages: usize,
    pub tags: String,
}

pub fn read_ogg_opus(data: &[u8]) -> Decoded {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut partial = Vec::new();
    let mut pos = 0;
    let mut last_granule = 0u64;
    let mut pages = 0;
    let mut eos = false;
    while pos < data.len() {
        assert_eq!(&data[pos..pos + 4], b"OggS", "page capture at {pos}");
        let nseg = usize::from(data[pos + 26]);
        let lacing = &data[pos + 27..pos + 27 + nseg];
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let end = pos + 27 + nseg + body_len;
        let mut page = data[pos..end].to_vec();
        let crc = u32::from_le_bytes(page[22..26].try_into().expect("4"));
        page[22..26].fill(0);
        assert_eq!(crc32(&page), crc, "page CRC");
        let granule = u64::from_le_bytes(data[pos + 6..pos + 14].try_into().expect("8"));
        if granule != u64::MAX {
            assert!(granule >= last_granule, "granules never decrease");
            last_granule = granule;
        }
        eos = data[pos + 5] & 0x04 != 0;
        if pages == 2 {
            // First audio page: its packets start at granule 0 (RFC 7845 §4).
            let on_page = lacing.iter().filter(|&&l| l < 255).count() as u64;
            assert_eq!(granule, on_page * 960, "first audio page granule");
        }
        let mut body = &data[pos + 27 + nseg..end];
        for &l in lacing {
            partial.extend_from_slice(&body[..usize::from(l)]);
            body = &body[usize::from(l)..];
            if l < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        pages += 1;
        pos = end;
    }
    assert!(eos, "last page has the end-of-stream flag");
    let head = &packets[0];
    assert_eq!(&head[..8], b"OpusHead");
    let channels = head[9];
    let pre_skip = usize::from(u16::from_le_bytes([head[10], head[11]]));
    assert_eq!(&packets[1][..8], b"OpusTags");
    let tags = String::from_utf8_lossy(&packets[1]).to_string();
    assert_eq!(head[18], 1, "mapping family 1");
    assert_eq!(
        &head[19..23],
        &[2, 0, 0, 1],
        "two uncoupled streams, A left"
    );
    let mut decs = [
        Decoder::new(SampleRate::Hz48000, Channels::Mono).expect("dec"),
        Decoder::new(SampleRate::Hz48000, Channels::Mono).expect("dec"),
    ];
    let mut chans: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut buf = vec![0i16; 5760];
    for p in &packets[2..] {
        // First stream is self-delimited: TOC, frame length, frame data.
        let toc = p[0];
        let (len, hdr) = if p[1] < 252 {
            (usize::from(p[1]), 2)
        } else {
            (usize::from(p[1]) + 4 * usize::from(p[2]), 3)
        };
        let data = if toc & 3 == 1 { 2 * len } else { len };
        let mut first = vec![toc];
        first.extend_from_slice(&p[hdr..hdr + data]);
        for (c, pkt) in [first, p[hdr + data..].to_vec()].iter().enumerate() {
            let n = decs[c]
                .decode(Some(&pkt[..]), &mut buf[..], false)
                .expect("decode");
            chans[c].extend(buf[..n].iter().map(|&s| f64::from(s)));
        }
    }
    let total = last_granule as usize - pre_skip;
    let pcm = chans.map(|c| c[pre_skip..pre_skip + total].to_vec());
    Decoded {
        channels,
        pcm,
        pages,
        tags,
    }
}

/// How much of a channel's energy follows a party's tone sequence: per
/// 100 ms block, the share of the block's energy at that party's frequency
/// (1.0 = only that signal, ~0 = unrelated). Insensitive to a few ms of lag,
/// which the onset checks bound separately.
pub fn correlation(x: &[f64], freq: fn(f64) -> f64, t0: f64, t1: f64) -> f64 {
    let blocks = ((t0 * 10.0).round() as i64)..((t1 * 10.0).round() as i64);
    let n = blocks.clone().count() as f64;
    blocks
        .map(|k| {
            let a = ((k as f64 / 10.0 + 0.025) * OUT) as usize;
            let len = (0.05 * OUT) as usize;
            let w = 2.0 * PI * freq(k as f64 / 10.0 + 0.05) / OUT;
            let (mut re, mut im, mut e) = (0.0, 0.0, 0.0);
            for (i, &v) in x[a..a + len].iter().enumerate() {
                re += v * (w * i as f64).cos();
                im += v * (w * i as f64).sin();
                e += v * v;
            }
            (re * re + im * im) / (e.max(1.0) * len as f64 / 2.0)
        })
        .sum::<f64>()
        / n
}

pub fn rms(x: &[f64], t0: f64, t1: f64) -> f64 {
    let s = &x[(t0 * OUT) as usize..(t1 * OUT) as usize];
    (s.iter().map(|v| v * v).sum::<f64>() / s.len() as f64).sqrt()
}

/// First time after `from` where 2.5 ms RMS exceeds a quarter of full level.
pub fn onset(x: &[f64], from: f64) -> f64 {
    let w = 120;
    let mut n = (from * OUT) as usize;
    while n + w < x.len() {
        if rms(x, n as f64 / OUT, (n + w) as f64 / OUT) > 1400.0 {
            return n as f64 / OUT;
        }
        n += 24;
    }
    f64::INFINITY
}
