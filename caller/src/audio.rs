//! The two channels a call plays: read from WAV files (8 kHz mono 16-bit; other rates
//! resampled) or generated tones, encoded once to G.711 and then sliced into 20 ms payloads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use callvault_recorder::media::resample::Resampler;

use crate::config::G711;
use crate::error::AudioError;

pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Tone frequencies: whole cycles per second at 8 kHz, so a one-second buffer loops cleanly.
pub const TONE_HZ: [u32; 2] = [440, 660];
/// About -12 dBFS: clearly audible, far from clipping.
const TONE_AMPLITUDE: f64 = 8000.0;

/// PCM samples of a WAV file, with its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    pub rate: u32,
    pub samples: Vec<i16>,
}

/// A RIFF/WAVE file of 16-bit mono PCM at `rate`: what [`parse_wav`] reads. Tests and
/// benchmarks write the audio they give `callvault call` with it.
pub fn mono_wav(rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&36u32.saturating_add(data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes()); // bytes per second
    b.extend_from_slice(&2u16.to_le_bytes()); // block align
    b.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

/// Parses a RIFF/WAVE file holding 16-bit mono PCM. Anything else is refused with what it is.
pub fn parse_wav(bytes: &[u8]) -> Result<Pcm, String> {
    let le16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let le32 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    if bytes.get(..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err("not a WAV file (no RIFF/WAVE header)".into());
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while let (Some(id), Some(size)) = (bytes.get(at..at + 4), le32(bytes, at + 4)) {
        let start = at + 8;
        let size = size as usize;
        // A truncated last chunk is read as far as it goes (recorders writing WAV often leave
        // the data size unset or too large).
        let end = start.saturating_add(size).min(bytes.len());
        let chunk = &bytes[start..end];
        match id {
            b"fmt " => {
                let (Some(tag), Some(channels), Some(rate), Some(bits)) = (
                    le16(chunk, 0),
                    le16(chunk, 2),
                    le32(chunk, 4),
                    le16(chunk, 14),
                ) else {
                    return Err("fmt chunk is too short".into());
                };
                // WAVE_FORMAT_EXTENSIBLE names the real format in its sub-format GUID.
                let tag = if tag == 0xfffe {
                    le16(chunk, 24).ok_or("extensible fmt chunk is too short")?
                } else {
                    tag
                };
                format = Some((tag, channels, rate, bits));
            }
            b"data" => {
                let (tag, channels, rate, bits) =
                    format.ok_or("data chunk comes before the fmt chunk")?;
                if tag != 1 {
                    return Err(format!(
                        "audio format {tag} is not PCM; save it as 16-bit PCM"
                    ));
                }
                if channels != 1 {
                    return Err(format!(
                        "{channels} channels; each file is one party and must be mono"
                    ));
                }
                if bits != 16 {
                    return Err(format!("{bits}-bit samples; 16-bit PCM is needed"));
                }
                if rate == 0 || rate > 384_000 {
                    return Err(format!("sample rate {rate} Hz is not usable"));
                }
                let samples = chunk
                    .chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect::<Vec<_>>();
                if samples.is_empty() {
                    return Err("no audio in the data chunk".into());
                }
                return Ok(Pcm { rate, samples });
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        at = start.saturating_add(size).saturating_add(size & 1);
    }
    Err(if format.is_some() {
        "no data chunk".into()
    } else {
        "no fmt chunk".into()
    })
}

/// Converts to 8 kHz with the recorder's resampler (a no-op at 8 kHz).
pub fn to_8khz(pcm: Pcm) -> Vec<i16> {
    if pcm.rate == SAMPLE_RATE {
        return pcm.samples;
    }
    let mut r = Resampler::new(pcm.rate, SAMPLE_RATE);
    let mut out = Vec::with_capacity(r.output_len(pcm.samples.len()));
    r.process(&pcm.samples, &mut out);
    out
}

/// One second of a sine tone at 8 kHz.
pub fn tone(hz: u32) -> Vec<i16> {
    (0..SAMPLE_RATE)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * f64::from(hz) * f64::from(n);
            (TONE_AMPLITUDE * (phase / f64::from(SAMPLE_RATE)).sin()).round() as i16
        })
        .collect()
}

/// Both channels, G.711-encoded, of equal length in whole packets. Calls loop over them.
#[derive(Debug, Clone)]
pub struct Audio {
    channels: [Arc<[u8]>; 2],
}

impl Audio {
    /// Encodes two channels; the shorter is padded with silence, both to whole packets.
    pub fn encode(left: &[i16], right: &[i16], codec: G711) -> Self {
        let packets = left
            .len()
            .max(right.len())
            .div_ceil(SAMPLES_PER_PACKET)
            .max(1);
        let len = packets * SAMPLES_PER_PACKET;
        let enc = |pcm: &[i16]| -> Arc<[u8]> {
            pcm.iter()
                .copied()
                .chain(std::iter::repeat(0))
                .take(len)
                .map(|s| codec.encode(s))
                .collect()
        };
        Self {
            channels: [enc(left), enc(right)],
        }
    }

    pub fn tones(codec: G711) -> Self {
        Self::encode(&tone(TONE_HZ[0]), &tone(TONE_HZ[1]), codec)
    }

    /// Reads both WAV files.
    pub fn from_wavs(left: &Path, right: &Path, codec: G711) -> Result<Self, AudioError> {
        let read = |path: &Path| -> Result<Vec<i16>, AudioError> {
            let bytes = std::fs::read(path).map_err(|source| AudioError::Read {
                path: path.to_owned(),
                source,
            })?;
            let pcm = parse_wav(&bytes).map_err(|problem| AudioError::Format {
                path: path.to_owned(),
                problem,
            })?;
            Ok(to_8khz(pcm))
        };
        Ok(Self::encode(&read(left)?, &read(right)?, codec))
    }

    /// Length of one pass through the audio.
    pub fn length(&self) -> Duration {
        Duration::from_millis(self.channels[0].len() as u64 * 1000 / u64::from(SAMPLE_RATE))
    }

    /// The payload of packet `k` of channel `ch` (0 left, 1 right), looping.
    pub fn payload(&self, ch: usize, k: u64) -> &[u8] {
        let data = &self.channels[ch.min(1)];
        let packets = (data.len() / SAMPLES_PER_PACKET) as u64;
        let i = (k % packets.max(1)) as usize * SAMPLES_PER_PACKET;
        data.get(i..i + SAMPLES_PER_PACKET).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use callvault_recorder::media::g711::decode_ulaw;

    /// A 16-bit PCM WAV file; `extra` chunks go before `data`.
    pub(crate) fn wav(rate: u32, channels: u16, bits: u16, samples: &[i16]) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut b = b"RIFF\0\0\0\0WAVE".to_vec();
        b.extend_from_slice(b"fmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(channels) * u32::from(bits) / 8).to_le_bytes());
        b.extend_from_slice(&(channels * bits / 8).to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(b"abc\0"); // odd size, padded
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&data);
        let riff = (b.len() - 8) as u32;
        b[4..8].copy_from_slice(&riff.to_le_bytes());
        b
    }

    #[test]
    fn reads_mono_16_bit_pcm_past_other_chunks() {
        let pcm = parse_wav(&wav(8000, 1, 16, &[1, -2, 300])).unwrap();
        assert_eq!(
            pcm,
            Pcm {
                rate: 8000,
                samples: vec![1, -2, 300]
            }
        );
    }

    #[test]
    fn mono_wav_reads_back_as_written() {
        let samples = [0, 1, -1, i16::MAX, i16::MIN, 300];
        let pcm = parse_wav(&mono_wav(16000, &samples)).unwrap();
        assert_eq!(
            pcm,
            Pcm {
                rate: 16000,
                samples: samples.to_vec()
            }
        );
    }

    #[test]
    fn refuses_what_it_cannot_play_saying_why() {
        for (bytes, needle) in [
            (b"RIFX....WAVE".to_vec(), "not a WAV"),
            (wav(8000, 2, 16, &[1, 2]), "2 channels"),
            (wav(8000, 1, 8, &[1, 2]), "8-bit"),
            (wav(8000, 1, 16, &[]), "no audio"),
            (b"RIFF\0\0\0\0WAVE".to_vec(), "no fmt chunk"),
            (wav(8000, 1, 16, &[1])[..36].to_vec(), "no data chunk"),
        ] {
            let e = parse_wav(&bytes).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let mut float = wav(8000, 1, 16, &[1]);
        float[20] = 3; // IEEE float
        assert!(parse_wav(&float).unwrap_err().contains("not PCM"));
    }

    #[test]
    fn other_rates_are_resampled_to_8khz() {
        let tone16k: Vec<i16> = (0..16000)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * 500.0 * f64::from(n) / 16000.0).sin())
                    as i16
            })
            .collect();
        let out = to_8khz(Pcm {
            rate: 16000,
            samples: tone16k,
        });
        assert_eq!(out.len(), 8000);
        assert_eq!(zero_crossings(&out[100..]) / 2, 500 - 7, "500 Hz kept");
    }

    /// Sign changes, for telling tones apart.
    pub(crate) fn zero_crossings(x: &[i16]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    #[test]
    fn tones_differ_per_channel_and_loop_per_packet() {
        let a = Audio::tones(G711::Pcmu);
        assert_eq!(a.length(), Duration::from_secs(1));
        let mut left = Vec::new();
        let mut right = Vec::new();
        for k in 0..50 {
            decode_ulaw(a.payload(0, k), &mut left);
            decode_ulaw(a.payload(1, k), &mut right);
        }
        assert!((zero_crossings(&left) as i64 / 2 - 440).abs() <= 1);
        assert!((zero_crossings(&right) as i64 / 2 - 660).abs() <= 1);
        // Packet 50 is packet 0 again: the tone loops seamlessly.
        assert_eq!(a.payload(0, 50), a.payload(0, 0));
    }

    #[test]
    fn shorter_channel_is_padded_with_silence_to_whole_packets() {
        let a = Audio::encode(&[1000; 200], &[1000; 10], G711::Pcma);
        assert_eq!(a.payload(0, 0).len(), 160);
        assert_eq!(a.length(), Duration::from_millis(40));
        let silence = G711::Pcma.encode(0);
        assert!(a.payload(1, 1).iter().all(|b| *b == silence));
        assert!(a.payload(0, 1)[..40].iter().all(|b| *b != silence));
        assert!(a.payload(0, 1)[40..].iter().all(|b| *b == silence));
    }
}
