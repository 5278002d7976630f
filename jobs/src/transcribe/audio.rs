//! A decrypted recording (Ogg Opus) back to PCM, one signal per party.
//!
//! The recorder writes mapping family 1 with one uncoupled mono stream per channel (channel 0 =
//! party A; a per-stream recording has up to eight): each Ogg packet is a multistream packet
//! whose streams but the last are self-delimited (RFC 7845 §5.1.1.2, RFC 6716 Appendix B).
//! Splitting the packet gives each channel's own Opus stream, decoded alone, so one channel
//! never leaks into another's transcript. Mono recordings (family 0) are read too.
//!
//! Page CRCs are not checked: the payload was authenticated chunk by chunk when it was
//! decrypted, so a flipped bit cannot reach this code.

use audiopus::coder::Decoder;
use audiopus::{Channels, SampleRate};

/// Sample rate of the decoded signals: what speech engines expect.
pub const RATE: u32 = 16_000;

/// Why a recording's audio could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("not an Ogg stream: {0}")]
    Ogg(String),
    #[error("not an Opus stream: {0}")]
    Head(String),
    #[error("unsupported Opus layout: {0}")]
    Layout(String),
    #[error("bad Opus packet {index}: {reason}")]
    Packet { index: usize, reason: String },
    #[error("Opus decoder: {0}")]
    Decoder(#[from] audiopus::Error),
}

/// Mono 16 kHz signals, one per channel of the recording (party A first).
#[derive(Debug, Clone, PartialEq)]
pub struct Channels16k {
    pub channels: Vec<Vec<i16>>,
}

impl Channels16k {
    /// Length in seconds (of the longest channel).
    pub fn seconds(&self) -> f64 {
        let n = self.channels.iter().map(Vec::len).max().unwrap_or(0);
        n as f64 / f64::from(RATE)
    }
}

/// The packets of an Ogg bitstream (one logical stream), and its last granule position.
fn ogg_packets(data: &[u8]) -> Result<(Vec<Vec<u8>>, u64), AudioError> {
    let mut spans: Vec<Vec<u8>> = Vec::new();
    let mut partial: Vec<u8> = Vec::new();
    let mut continuing = false;
    let mut last_granule = 0u64;
    let mut pos = 0usize;
    let mut pages = 0usize;
    while pos < data.len() {
        let hdr = data
            .get(pos..pos + 27)
            .ok_or_else(|| AudioError::Ogg(format!("truncated page header at byte {pos}")))?;
        if &hdr[..4] != b"OggS" {
            return Err(AudioError::Ogg(format!(
                "no page capture pattern at byte {pos}"
            )));
        }
        let nseg = usize::from(hdr[26]);
        let lacing = data
            .get(pos + 27..pos + 27 + nseg)
            .ok_or_else(|| AudioError::Ogg(format!("truncated lacing table at byte {pos}")))?;
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_start = pos + 27 + nseg;
        let mut body = data
            .get(body_start..body_start + body_len)
            .ok_or_else(|| AudioError::Ogg(format!("truncated page body at byte {pos}")))?;
        let granule = u64::from_le_bytes(hdr[6..14].try_into().unwrap_or([0xff; 8]));
        if granule != u64::MAX {
            last_granule = granule;
        }
        if hdr[5] & 0x01 == 0 && continuing {
            return Err(AudioError::Ogg(format!(
                "page {pages} does not continue the packet the previous page left open"
            )));
        }
        for &l in lacing {
            let (seg, rest) = body.split_at(usize::from(l));
            partial.extend_from_slice(seg);
            body = rest;
            if l < 255 {
                spans.push(std::mem::take(&mut partial));
            }
        }
        continuing = !partial.is_empty() || lacing.last() == Some(&255);
        pos = body_start + body_len;
        pages += 1;
    }
    if pages == 0 {
        return Err(AudioError::Ogg("empty stream".into()));
    }
    Ok((spans, last_granule))
}

/// Reads a length as coded in Opus packets (1 or 2 bytes); returns (length, bytes used).
fn opus_len(data: &[u8]) -> Option<(usize, usize)> {
    match *data.first()? {
        b @ 0..=251 => Some((usize::from(b), 1)),
        b => Some((usize::from(b) + 4 * usize::from(*data.get(1)?), 2)),
    }
}

/// Splits a two-stream multistream packet into the first stream's packet (self-delimiting
/// framing removed) and the second's.
fn split_multistream(p: &[u8]) -> Result<(Vec<u8>, &[u8]), String> {
    let (&toc, rest) = p.split_first().ok_or("empty packet")?;
    match toc & 3 {
        // Code 0: one frame; code 1: two frames of the self-delimited length each.
        code @ (0 | 1) => {
            let (len, used) = opus_len(rest).ok_or("truncated length")?;
            let total = if code == 1 { 2 * len } else { len };
            let frames = rest
                .get(used..used + total)
                .ok_or("first stream longer than the packet")?;
            let mut first = Vec::with_capacity(1 + total);
            first.push(toc);
            first.extend_from_slice(frames);
            Ok((first, &rest[used + total..]))
        }
        // Code 2: first frame's length as usual, then the self-delimiting second length.
        2 => {
            let (n1, u1) = opus_len(rest).ok_or("truncated length")?;
            let (n2, u2) = opus_len(&rest[u1..]).ok_or("truncated length")?;
            let frames = rest
                .get(u1 + u2..u1 + u2 + n1 + n2)
                .ok_or("first stream longer than the packet")?;
            let mut first = Vec::with_capacity(1 + u1 + n1 + n2);
            first.push(toc);
            first.extend_from_slice(&rest[..u1]);
            first.extend_from_slice(frames);
            Ok((first, &rest[u1 + u2 + n1 + n2..]))
        }
        _ => {
            Err("code 3 (arbitrary frame count) in a self-delimited stream is not supported".into())
        }
    }
}

fn decode_into(
    dec: &mut Decoder,
    packet: &[u8],
    out: &mut Vec<i16>,
    index: usize,
) -> Result<(), AudioError> {
    // 120 ms at 16 kHz is the longest Opus packet.
    let mut buf = [0i16; 1920];
    let n = dec
        .decode(Some(packet), &mut buf[..], false)
        .map_err(|e| AudioError::Packet {
            index,
            reason: e.to_string(),
        })?;
    out.extend_from_slice(&buf[..n]);
    Ok(())
}

/// Decodes an Ogg Opus recording into one 16 kHz signal per channel, trimmed of the encoder's
/// pre-skip and cut at the stream's final granule position, as a player would.
pub fn decode_ogg_opus(data: &[u8]) -> Result<Channels16k, AudioError> {
    let (packets, last_granule) = ogg_packets(data)?;
    let head = packets
        .first()
        .ok_or_else(|| AudioError::Head("no packets".into()))?;
    if head.len() < 19 || &head[..8] != b"OpusHead" {
        return Err(AudioError::Head("first packet is not OpusHead".into()));
    }
    let channels = usize::from(head[9]);
    let pre_skip = u64::from(u16::from_le_bytes([head[10], head[11]]));
    let family = head[18];
    // Mono (family 0), or family 1 with an uncoupled mono stream per channel in order, as the
    // recorder writes two-channel and per-stream recordings.
    let uncoupled: Vec<u8> = [channels as u8, 0]
        .into_iter()
        .chain(0..channels as u8)
        .collect();
    let streams = match (family, channels) {
        (0, 1) => 1,
        (1, 2..=8) if head.get(19..21 + channels) == Some(&uncoupled[..]) => channels,
        _ => {
            return Err(AudioError::Layout(format!(
                "mapping family {family} with {channels} channels (expected a CallVault recording: \
                 family 1 with an uncoupled mono stream per channel, or mono)"
            )));
        }
    };
    if packets.get(1).is_none_or(|t| !t.starts_with(b"OpusTags")) {
        return Err(AudioError::Head("second packet is not OpusTags".into()));
    }
    let mut decoders = Vec::with_capacity(streams);
    for _ in 0..streams {
        decoders.push(Decoder::new(SampleRate::Hz16000, Channels::Mono)?);
    }
    let mut out: Vec<Vec<i16>> = vec![Vec::new(); streams];
    for (i, p) in packets.iter().enumerate().skip(2) {
        // Every stream but the last is self-delimited.
        let mut rest = &p[..];
        for c in 0..streams {
            if c + 1 == streams {
                decode_into(&mut decoders[c], rest, &mut out[c], i)?;
            } else {
                let (first, tail) = split_multistream(rest)
                    .map_err(|reason| AudioError::Packet { index: i, reason })?;
                decode_into(&mut decoders[c], &first, &mut out[c], i)?;
                rest = tail;
            }
        }
    }
    // Granules and pre-skip count 48 kHz samples.
    let skip = usize::try_from(pre_skip / 3).unwrap_or(usize::MAX);
    let total = usize::try_from(last_granule.saturating_sub(pre_skip) / 3).unwrap_or(usize::MAX);
    let channels = out
        .into_iter()
        .map(|c| {
            let start = skip.min(c.len());
            let end = start.saturating_add(total).min(c.len());
            c[start..end].to_vec()
        })
        .collect();
    Ok(Channels16k { channels })
}

/// A 16-bit mono RIFF/WAVE file of `samples` at [`RATE`] (what HTTP engines are sent).
pub fn wav(samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&RATE.to_le_bytes());
    out.extend_from_slice(&(RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A party's channel is silent whenever the other party speaks, and Whisper-family models
/// given a window with seconds of silence between two turns often end the transcript at the
/// silence and drop the turn after it. So each channel is sent as its turns: spans of sound
/// separated by at least [`MIN_GAP_MS`] of silence, padded by [`PAD_MS`] (the engine hears
/// each word's onset and decay) and cut to at most `max` samples.
///
/// A frame is silent when its level is 40 dB under the channel's loudest frame or under
/// -60 dBFS; a channel with steady noise above that is sent whole, as before. A silent channel
/// gives no pieces: there is nothing to transcribe, and Whisper invents words for silence.
pub fn speech_pieces(samples: &[i16], max: usize) -> Vec<std::ops::Range<usize>> {
    const FRAME: usize = (RATE / 50) as usize; // 20 ms
    let frame_power =
        |f: &[i16]| f.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / f.len() as f64;
    let powers: Vec<f64> = samples.chunks(FRAME).map(frame_power).collect();
    let loudest = powers.iter().copied().fold(0.0, f64::max);
    // -60 dBFS: an amplitude of about 33 in 16 bits.
    let floor = (32768.0f64 * 1e-3).powi(2);
    if loudest <= floor {
        return Vec::new();
    }
    let threshold = floor.max(loudest * 1e-4);
    let gap = MIN_GAP_MS * RATE as usize / 1000;
    let pad = PAD_MS * RATE as usize / 1000;
    // Spans of sounding frames, joined across pauses shorter than the gap.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (i, _) in powers.iter().enumerate().filter(|(_, p)| **p > threshold) {
        let (start, end) = (i * FRAME, ((i + 1) * FRAME).min(samples.len()));
        match spans.last_mut() {
            Some(last) if start - last.1 < gap => last.1 = end,
            _ => spans.push((start, end)),
        }
    }
    let mut pieces = Vec::new();
    for (start, end) in spans {
        let (start, end) = (start.saturating_sub(pad), (end + pad).min(samples.len()));
        let mut from = start;
        for cut in cut_points(&samples[start..end], max) {
            pieces.push(from..start + cut);
            from = start + cut;
        }
        pieces.push(from..end);
    }
    pieces
}

/// Silence between two turns of a party that [`speech_pieces`] separates.
pub const MIN_GAP_MS: usize = 1_000;
/// Silence kept around each piece.
pub const PAD_MS: usize = 250;

/// Where to cut `samples` into pieces of at most `max` samples each: at the quietest 100 ms
/// within the last quarter before each limit, so a cut rarely splits a word.
pub fn cut_points(samples: &[i16], max: usize) -> Vec<usize> {
    let win = (RATE / 10) as usize;
    let mut cuts = Vec::new();
    let mut start = 0usize;
    while samples.len() - start > max {
        let limit = start + max;
        let search_from = limit - (max / 4).max(win).min(max);
        let mut best = (u64::MAX, limit);
        let mut w = search_from;
        while w + win <= limit {
            let energy: u64 = samples[w..w + win]
                .iter()
                .map(|&s| u64::from(s.unsigned_abs()).pow(2))
                .sum();
            if energy < best.0 {
                best = (energy, w + win / 2);
            }
            w += win / 2;
        }
        let cut = best.1.max(start + 1);
        cuts.push(cut);
        start = cut;
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_delimited_first_stream_is_split_for_each_frame_code() {
        // Code 0: TOC 0x08, self-delimiting length 3, frame, then stream 2.
        let p = [0x08, 3, 1, 2, 3, 0x08, 9, 9];
        let (first, second) = split_multistream(&p).expect("code 0");
        assert_eq!(first, vec![0x08, 1, 2, 3]);
        assert_eq!(second, &[0x08, 9, 9]);
        // Code 1: two frames of 2 bytes.
        let p = [0x09, 2, 1, 2, 3, 4, 0x08, 7];
        let (first, second) = split_multistream(&p).expect("code 1");
        assert_eq!(first, vec![0x09, 1, 2, 3, 4]);
        assert_eq!(second, &[0x08, 7]);
        // Code 2: N1 = 1, self-delimiting N2 = 2.
        let p = [0x0a, 1, 2, 5, 6, 7, 0x08];
        let (first, second) = split_multistream(&p).expect("code 2");
        assert_eq!(first, vec![0x0a, 1, 5, 6, 7]);
        assert_eq!(second, &[0x08]);
        // Two-byte lengths: 252 + 4 * 1 = 256.
        let mut p = vec![0x08, 252, 1];
        p.extend(std::iter::repeat_n(5u8, 256));
        p.push(0x08);
        let (first, second) = split_multistream(&p).expect("long");
        assert_eq!(first.len(), 257);
        assert_eq!(second, &[0x08]);
        assert!(split_multistream(&[0x0b, 1]).is_err(), "code 3");
        assert!(split_multistream(&[0x08, 200, 1]).is_err(), "overlong");
        assert!(split_multistream(&[]).is_err(), "empty");
    }

    /// A recording as the recorder writes it, of `channels` channels, in which channel c
    /// carries a tone during second c only.
    fn recording(channels: usize) -> Vec<u8> {
        use callvault_recorder::media::OpusConfig;
        use callvault_recorder::media::ogg::OggOpusWriter;
        let config = OpusConfig {
            channels,
            ..OpusConfig::default()
        };
        let (rate, frame) = (config.input_rate as usize, config.frame_len);
        let mut w = OggOpusWriter::new(Vec::new(), config).expect("encoder");
        let total = channels * rate;
        let mut pcm = vec![0i16; channels * frame];
        for start in (0..total).step_by(frame) {
            for (i, s) in pcm.iter_mut().enumerate() {
                let (n, c) = (start + i / channels, i % channels);
                let t = n as f64 / rate as f64;
                *s = if n / rate == c {
                    ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
                } else {
                    0
                };
            }
            w.write_frame(&pcm).expect("frame");
        }
        w.finish(total as u64).expect("finish").0
    }

    #[test]
    fn every_channel_of_a_per_stream_or_mono_recording_decodes_apart() {
        let loud = |x: &[i16]| {
            (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt() > 1000.0
        };
        for channels in [1, 2, 3, 8] {
            let pcm = decode_ogg_opus(&recording(channels)).expect("decodes");
            assert_eq!(pcm.channels.len(), channels);
            let second = RATE as usize;
            for (c, signal) in pcm.channels.iter().enumerate() {
                for s in 0..channels {
                    // The middle of each second: clear of the codec's onset and decay.
                    let mid = &signal[s * second + second / 4..s * second + 3 * second / 4];
                    assert_eq!(
                        loud(mid),
                        s == c,
                        "{channels} channels: channel {c}, second {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [&b""[..], b"OggS", b"RIFF....WAVEfmt ", &[0u8; 64][..]] {
            assert!(decode_ogg_opus(data).is_err(), "{data:?}");
        }
    }

    #[test]
    fn cuts_land_in_silence_and_bound_every_piece() {
        let sec = RATE as usize;
        // 25 s of tone with silence from 8.0 to 8.4 s and 17.5 to 17.8 s; pieces of at most 10 s.
        let mut s: Vec<i16> = (0..25 * sec)
            .map(|i| if i % 40 < 20 { 8000 } else { -8000 })
            .collect();
        s[8 * sec..8 * sec + 6400].fill(0);
        s[17 * sec + 8000..17 * sec + 12800].fill(0);
        let cuts = cut_points(&s, 10 * sec);
        assert_eq!(cuts.len(), 2, "{cuts:?}");
        assert!((8 * sec..8 * sec + 6400).contains(&cuts[0]), "{cuts:?}");
        assert!(
            (17 * sec + 8000..17 * sec + 12800).contains(&cuts[1]),
            "{cuts:?}"
        );
        let mut prev = 0;
        for c in cuts.iter().copied().chain([s.len()]) {
            assert!(c - prev <= 10 * sec);
            prev = c;
        }
        assert!(cut_points(&s[..sec], 10 * sec).is_empty());
    }

    /// A 16 kHz tone-like signal of `secs` seconds at amplitude `amp`.
    fn sound(secs: f64, amp: i16) -> Vec<i16> {
        (0..(secs * f64::from(RATE)) as usize)
            .map(|i| if i % 40 < 20 { amp } else { -amp })
            .collect()
    }

    #[test]
    fn pieces_are_the_turns_without_the_silence_between() {
        let sec = RATE as usize;
        // 0.3 s silence, 3 s speech with a 0.5 s pause inside, 5 s silence, 2 s speech, 0.6 s.
        let mut s = vec![0i16; 3 * sec / 10];
        s.extend(sound(1.5, 8000));
        s.extend(vec![0i16; sec / 2]);
        s.extend(sound(1.5, 8000));
        let first_end = s.len();
        s.extend(vec![0i16; 5 * sec]);
        let second_start = s.len();
        s.extend(sound(2.0, 8000));
        let second_end = s.len();
        s.extend(vec![0i16; 6 * sec / 10]);
        let pieces = speech_pieces(&s, 30 * sec);
        let pad = PAD_MS * sec / 1000;
        assert_eq!(
            pieces,
            vec![
                3 * sec / 10 - pad..first_end + pad,
                second_start - pad..second_end + pad
            ]
        );
    }

    #[test]
    fn quiet_noise_is_silence_and_a_silent_channel_has_no_pieces() {
        let sec = RATE as usize;
        assert!(speech_pieces(&vec![0i16; 10 * sec], 30 * sec).is_empty());
        // -70 dBFS hiss alone: nothing to transcribe.
        assert!(speech_pieces(&sound(10.0, 10), 30 * sec).is_empty());
        // The same hiss between two turns still separates them.
        let mut s = sound(1.0, 8000);
        s.extend(sound(3.0, 10));
        s.extend(sound(1.0, 8000));
        assert_eq!(speech_pieces(&s, 30 * sec).len(), 2);
        // Steady noise as loud as the speech: the channel is sent whole.
        let s = sound(12.0, 8000);
        assert_eq!(speech_pieces(&s, 30 * sec), vec![0..s.len()]);
        assert!(speech_pieces(&[], 30 * sec).is_empty());
    }

    #[test]
    fn a_long_turn_is_cut_to_the_engine_limit() {
        let sec = RATE as usize;
        let mut s = vec![0i16; 2 * sec];
        s.extend(sound(25.0, 8000));
        s.extend(vec![0i16; 2 * sec]);
        let pieces = speech_pieces(&s, 10 * sec);
        // 25.5 s with its padding: at least three pieces of at most 10 s.
        assert!(pieces.len() >= 3, "{pieces:?}");
        for w in pieces.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous: {pieces:?}");
        }
        assert!(pieces.iter().all(|p| p.len() <= 10 * sec), "{pieces:?}");
        let pad = PAD_MS * sec / 1000;
        assert_eq!(pieces[0].start, 2 * sec - pad);
        assert_eq!(pieces.last().map(|p| p.end), Some(27 * sec + pad));
    }

    #[test]
    fn wav_header_describes_the_samples() {
        let w = wav(&[1, -1, 300]);
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([w[4], w[5], w[6], w[7]]), 36 + 6);
        assert_eq!(u32::from_le_bytes([w[24], w[25], w[26], w[27]]), RATE);
        assert_eq!(u32::from_le_bytes([w[40], w[41], w[42], w[43]]), 6);
        assert_eq!(&w[44..], &[1, 0, 0xff, 0xff, 44, 1]);
    }
}
