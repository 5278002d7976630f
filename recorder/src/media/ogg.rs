//! Ogg (RFC 3533) page framing and the Ogg Opus mapping (RFC 7845):
//! OpusHead (two uncoupled mono streams, one per party), OpusTags, audio pages with 48 kHz granule positions flushed
//! about once a second (so players and range requests can seek), and an
//! end-of-stream page whose granule trims the output to the exact length.

use super::codec::opus_rate;
use audiopus::{Application, Bitrate, Channels, Signal, coder::Encoder};
use std::io::{self, Write};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OggError {
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
    #[error("opus encoder: {0}")]
    Opus(#[from] audiopus::Error),
    #[error("invalid Opus settings: {0}")]
    Config(String),
    #[error("packet of {0} bytes does not fit an Ogg page")]
    PacketTooLarge(usize),
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            k += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
};

/// Ogg's CRC-32: polynomial 0x04c11db7, zero initial value, no reflection.
pub fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from(((crc >> 24) as u8) ^ b)]
    })
}

const FLAG_BOS: u8 = 0x02;
const FLAG_EOS: u8 = 0x04;

/// Writes one logical Ogg bitstream of whole packets.
#[derive(Debug)]
pub struct OggPageWriter<W: Write> {
    inner: W,
    serial: u32,
    sequence: u32,
    lacing: Vec<u8>,
    body: Vec<u8>,
    packets: usize,
    granule: u64,
    bos_pending: bool,
    page: Vec<u8>,
    bytes_written: u64,
}

impl<W: Write> OggPageWriter<W> {
    pub fn new(inner: W, serial: u32) -> Self {
        OggPageWriter {
            inner,
            serial,
            sequence: 0,
            lacing: Vec::new(),
            body: Vec::new(),
            packets: 0,
            granule: 0,
            bos_pending: true,
            page: Vec::new(),
            bytes_written: 0,
        }
    }

    /// Packets waiting for the current page.
    pub fn buffered_packets(&self) -> usize {
        self.packets
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Adds a packet ending at `granule`; starts a new page first if it would
    /// not fit in the 255 lacing values of this one.
    pub fn push_packet(&mut self, packet: &[u8], granule: u64) -> Result<(), OggError> {
        let segments = packet.len() / 255 + 1;
        if segments > 255 {
            return Err(OggError::PacketTooLarge(packet.len()));
        }
        if self.lacing.len() + segments > 255 {
            self.flush_page(false)?;
        }
        self.lacing
            .extend(std::iter::repeat_n(255u8, packet.len() / 255));
        self.lacing.push((packet.len() % 255) as u8);
        self.body.extend_from_slice(packet);
        self.packets += 1;
        self.granule = granule;
        Ok(())
    }

    /// Overrides the granule of the page being built (end trimming).
    pub fn set_granule(&mut self, granule: u64) {
        self.granule = granule;
    }

    /// Writes the buffered packets as one page (and the EOS flag if `last`).
    pub fn flush_page(&mut self, last: bool) -> Result<(), OggError> {
        if self.packets == 0 && !last {
            return Ok(());
        }
        let mut flags = 0;
        if self.bos_pending {
            flags |= FLAG_BOS;
            self.bos_pending = false;
        }
        if last {
            flags |= FLAG_EOS;
        }
        // A page on which no packet ends carries granule -1 (RFC 3533).
        let granule = if self.packets == 0 {
            u64::MAX
        } else {
            self.granule
        };
        let page = &mut self.page;
        page.clear();
        page.extend_from_slice(b"OggS");
        page.push(0);
        page.push(flags);
        page.extend_from_slice(&granule.to_le_bytes());
        page.extend_from_slice(&self.serial.to_le_bytes());
        page.extend_from_slice(&self.sequence.to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.push(self.lacing.len() as u8);
        page.extend_from_slice(&self.lacing);
        page.extend_from_slice(&self.body);
        let crc = crc32(page);
        page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.inner.write_all(page)?;
        self.bytes_written += page.len() as u64;
        self.sequence = self.sequence.wrapping_add(1);
        self.lacing.clear();
        self.body.clear();
        self.packets = 0;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Encoder settings of a recording.
#[derive(Debug, Clone)]
pub struct OpusConfig {
    /// Bitrate of two channels: each channel is encoded at half of it.
    pub bitrate: i32,
    /// Channels, 1 to [`super::timeline::MAX_CHANNELS`] (the timeline's).
    pub channels: usize,
    /// 0..=10; the main CPU knob (5 is the measured sweet spot for speech).
    pub complexity: u8,
    /// `Application::Voip` favours speech intelligibility.
    pub application: Application,
    /// Input PCM rate (the timeline's output rate).
    pub input_rate: u32,
    /// Samples per channel per frame at `input_rate`.
    pub frame_len: usize,
    /// Flush a page after this many packets (50 × 20 ms = 1 s).
    pub packets_per_page: usize,
    /// OpusTags vendor string.
    pub vendor: String,
    /// OpusTags comments as (FIELD, value).
    pub comments: Vec<(String, String)>,
    pub serial: u32,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            bitrate: 32_000,
            channels: 2,
            complexity: 5,
            application: Application::Voip,
            input_rate: 16_000,
            frame_len: 320,
            packets_per_page: 50,
            vendor: format!("callvault-recorder {}", env!("CARGO_PKG_VERSION")),
            comments: vec![("ENCODER".into(), "callvault-recorder".into())],
            serial: 0x4356_4c54,
        }
    }
}

/// Opus encoder of one to eight channels writing an Ogg Opus stream to any `Write`.
#[derive(Debug)]
pub struct OggOpusWriter<W: Write> {
    ogg: OggPageWriter<W>,
    /// One mono encoder per channel: a coupled stereo encoder at speech
    /// bitrates narrows the stereo image and leaks one party into the other
    /// channel, which breaks per-channel review and transcription.
    encoders: Vec<Encoder>,
    config: OpusConfig,
    mono: Vec<Vec<i16>>,
    /// One channel's packet before it is framed into the multistream packet.
    single: Vec<u8>,
    pre_skip: u64,
    /// 48 kHz samples encoded so far.
    encoded_48k: u64,
    packet: Vec<u8>,
    packets: u64,
}

impl<W: Write> OggOpusWriter<W> {
    /// Creates the encoder and writes the two header pages.
    pub fn new(inner: W, config: OpusConfig) -> Result<Self, OggError> {
        let rate = opus_rate(config.input_rate).map_err(|e| OggError::Config(e.to_string()))?;
        if config.complexity > 10 {
            return Err(OggError::Config(format!(
                "complexity {} > 10",
                config.complexity
            )));
        }
        if !(6_000..=510_000).contains(&config.bitrate) {
            return Err(OggError::Config(format!(
                "bitrate {} out of 6000..=510000",
                config.bitrate
            )));
        }
        if config.packets_per_page == 0 {
            return Err(OggError::Config("packets_per_page must be positive".into()));
        }
        if !(1..=super::timeline::MAX_CHANNELS).contains(&config.channels) {
            return Err(OggError::Config(format!(
                "{} channels: 1 to {}",
                config.channels,
                super::timeline::MAX_CHANNELS
            )));
        }
        let make = || -> Result<Encoder, OggError> {
            let mut e = Encoder::new(rate, Channels::Mono, config.application)?;
            e.set_bitrate(Bitrate::BitsPerSecond(config.bitrate / 2))?;
            e.set_complexity(config.complexity)?;
            e.set_signal(Signal::Voice)?;
            Ok(e)
        };
        let encoders = (0..config.channels)
            .map(|_| make())
            .collect::<Result<Vec<_>, _>>()?;
        let lookahead = u64::from(encoders[0].lookahead()?);
        let pre_skip = lookahead * 48_000 / u64::from(config.input_rate);

        let mut ogg = OggPageWriter::new(inner, config.serial);
        let mut head = Vec::with_capacity(23);
        head.extend_from_slice(b"OpusHead");
        let channels = config.channels as u8;
        head.push(1); // version
        head.push(channels);
        head.extend_from_slice(&(pre_skip as u16).to_le_bytes());
        head.extend_from_slice(&config.input_rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        if channels == 1 {
            head.push(0); // mapping family 0: one mono stream
        } else {
            // Mapping family 1 (RFC 7845 §5.1.1.2): an uncoupled mono stream per channel,
            // channel 0 = party A.
            head.push(1);
            head.push(channels); // streams
            head.push(0); // coupled streams
            head.extend(0..channels); // channel mapping
        }
        ogg.push_packet(&head, 0)?;
        ogg.flush_page(false)?;

        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(config.vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(config.vendor.as_bytes());
        tags.extend_from_slice(&(config.comments.len() as u32).to_le_bytes());
        for (k, v) in &config.comments {
            let c = format!("{k}={v}");
            tags.extend_from_slice(&(c.len() as u32).to_le_bytes());
            tags.extend_from_slice(c.as_bytes());
        }
        ogg.push_packet(&tags, 0)?;
        ogg.flush_page(false)?;

        // The largest 20 ms Opus packet is 1275 bytes, plus self-delimiting framing.
        let packet = vec![0; 1280 * config.channels];
        Ok(OggOpusWriter {
            ogg,
            mono: vec![Vec::new(); encoders.len()],
            encoders,
            single: vec![0; 1500],
            config,
            pre_skip,
            encoded_48k: 0,
            packet,
            packets: 0,
        })
    }

    pub fn pre_skip(&self) -> u64 {
        self.pre_skip
    }

    pub fn bytes_written(&self) -> u64 {
        self.ogg.bytes_written()
    }

    /// Encodes one frame of `frame_len` samples per channel, the channels interleaved.
    pub fn write_frame(&mut self, interleaved: &[i16]) -> Result<(), OggError> {
        let channels = self.encoders.len();
        if interleaved.len() != channels * self.config.frame_len {
            return Err(OggError::Config(format!(
                "frame of {} samples, expected {}",
                interleaved.len(),
                channels * self.config.frame_len
            )));
        }
        for (c, buf) in self.mono.iter_mut().enumerate() {
            buf.clear();
            buf.extend(interleaved.iter().skip(c).step_by(channels));
        }
        // Multistream packet (RFC 7845 §5.1.1.2): every stream but the last
        // uses self-delimiting framing (RFC 6716 Appendix B).
        let mut n = 0;
        let last = channels - 1;
        for (c, encoder) in self.encoders.iter_mut().enumerate() {
            if c == last {
                n += encoder.encode(&self.mono[c], &mut self.packet[n..])?;
            } else {
                let len = encoder.encode(&self.mono[c], &mut self.single)?;
                n += self_delimit(&self.single[..len], &mut self.packet[n..])?;
            }
        }
        self.encoded_48k +=
            self.config.frame_len as u64 * 48_000 / u64::from(self.config.input_rate);
        if self.ogg.buffered_packets() >= self.config.packets_per_page {
            self.ogg.flush_page(false)?;
        }
        // The granule counts every decoded sample, pre-skip included
        // (RFC 7845 §4), so the stream starts at granule 0.
        let granule = self.encoded_48k;
        self.ogg.push_packet(&self.packet[..n], granule)?;
        self.packets += 1;
        Ok(())
    }

    /// Writes the end-of-stream page. `total_samples` (at the input rate) is
    /// the exact recording length; the padding of the last frame is trimmed
    /// by the final granule position.
    pub fn finish(mut self, total_samples: u64) -> Result<(W, u64), OggError> {
        let exact = total_samples * 48_000 / u64::from(self.config.input_rate);
        // The encoder lags by its lookahead (the pre-skip): feed silence until
        // the last real sample has come out of it.
        let silence = vec![0i16; self.encoders.len() * self.config.frame_len];
        while self.encoded_48k < self.pre_skip + exact {
            self.write_frame(&silence)?;
        }
        let granule = self.pre_skip + exact;
        self.ogg.set_granule(granule);
        self.ogg.flush_page(true)?;
        let bytes = self.ogg.bytes_written();
        let mut inner = self.ogg.into_inner();
        inner.flush()?;
        Ok((inner, bytes))
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.ogg.get_mut()
    }
}

/// Rewrites a single-stream Opus packet in self-delimiting form into `out`.
/// libopus emits code 0 (one frame) or code 1 (two equal frames) packets for
/// 20 ms VBR frames; other codes are reported rather than guessed.
fn self_delimit(packet: &[u8], out: &mut [u8]) -> Result<usize, OggError> {
    let (&toc, data) = packet
        .split_first()
        .ok_or_else(|| OggError::Config("empty Opus packet".into()))?;
    let frame = match toc & 3 {
        0 => data.len(),
        1 => data.len() / 2,
        code => {
            return Err(OggError::Config(format!(
                "cannot self-delimit Opus packet code {code}"
            )));
        }
    };
    let mut len = [0u8; 2];
    let len = if frame < 252 {
        len[0] = frame as u8;
        &len[..1]
    } else {
        let first = 252 + (frame & 3);
        len[0] = first as u8;
        len[1] = ((frame - first) / 4) as u8;
        &len[..2]
    };
    let total = 1 + len.len() + data.len();
    let dest = out
        .get_mut(..total)
        .ok_or(OggError::PacketTooLarge(total))?;
    dest[0] = toc;
    dest[1..1 + len.len()].copy_from_slice(len);
    dest[1 + len.len()..].copy_from_slice(data);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ogg_polynomial() {
        // CRC-32/MPEG-2 without the initial all-ones and final xor: "123456789" → 0x89a1897f.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn pages_have_valid_headers_and_lacing() {
        let mut w = OggPageWriter::new(Vec::new(), 7);
        w.push_packet(&[1; 255], 10).expect("push");
        w.push_packet(&[2; 3], 20).expect("push");
        w.flush_page(true).expect("flush");
        let page = w.into_inner();
        assert_eq!(&page[..4], b"OggS");
        assert_eq!(page[5], FLAG_BOS | FLAG_EOS);
        assert_eq!(u64::from_le_bytes(page[6..14].try_into().expect("8")), 20);
        assert_eq!(page[26], 3);
        assert_eq!(&page[27..30], &[255, 0, 3]);
        assert_eq!(page.len(), 30 + 258);
        let mut zeroed = page.clone();
        zeroed[22..26].fill(0);
        assert_eq!(
            u32::from_le_bytes(page[22..26].try_into().expect("4")),
            crc32(&zeroed)
        );
    }
}
