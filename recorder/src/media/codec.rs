//! Payload types and the decoders behind them. All decoders produce mono
//! i16 PCM at their native rate (Opus decodes directly at the output rate).

use super::{g711, g722::G722Decoder};
use audiopus::{Channels, SampleRate, coder::Decoder as OpusDecoder};
use thiserror::Error;

/// Codecs the recorder understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
    Opus,
    /// RFC 4733 DTMF events; metadata only.
    TelephoneEvent,
}

impl Codec {
    /// Looks up an SDP `a=rtpmap` encoding name (case-insensitive).
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        match name.to_ascii_lowercase().as_str() {
            "pcmu" => Some(Codec::Pcmu),
            "pcma" => Some(Codec::Pcma),
            "g722" => Some(Codec::G722),
            "opus" => Some(Codec::Opus),
            "telephone-event" => Some(Codec::TelephoneEvent),
            _ => None,
        }
    }

    /// The codec of an `a=rtpmap` encoding at its RTP clock, or `None` when the recorder cannot
    /// receive it. G.722's RTP clock is 8000 although it samples at 16 kHz (RFC 3551 §4.5.2);
    /// Opus always uses 48000 (RFC 7587).
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<Codec> {
        let codec = Self::from_encoding_name(name)?;
        let clock_ok = match codec {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => clock_rate == 8000,
            Codec::Opus => clock_rate == 48000,
            Codec::TelephoneEvent => true,
        };
        clock_ok.then_some(codec)
    }

    /// The encoding name an SDP answer uses.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
            Codec::TelephoneEvent => "telephone-event",
        }
    }
}

/// One negotiated payload type of a stream (from SDP, or the static ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadType {
    pub pt: u8,
    pub codec: Codec,
    /// RTP timestamp clock. G.722 uses 8000 although it samples at 16 kHz
    /// (RFC 3551 §4.5.2); Opus always uses 48000 (RFC 7587).
    pub clock_rate: u32,
}

impl PayloadType {
    /// Static payload types (RFC 3551) used when SDP does not map them.
    pub fn static_types() -> [PayloadType; 3] {
        [
            PayloadType {
                pt: 0,
                codec: Codec::Pcmu,
                clock_rate: 8000,
            },
            PayloadType {
                pt: 8,
                codec: Codec::Pcma,
                clock_rate: 8000,
            },
            PayloadType {
                pt: 9,
                codec: Codec::G722,
                clock_rate: 8000,
            },
        ]
    }

    /// The static payload type `pt`, if it is one the recorder decodes.
    pub fn static_type(pt: u8) -> Option<PayloadType> {
        Self::static_types().into_iter().find(|t| t.pt == pt)
    }

    /// Dynamic payload type with the codec's standard clock.
    pub fn dynamic(pt: u8, codec: Codec, clock_rate: u32) -> PayloadType {
        PayloadType {
            pt,
            codec,
            clock_rate,
        }
    }
}

#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("opus: {0}")]
    Opus(#[from] audiopus::Error),
    #[error("unsupported output rate {0} Hz (use 8000, 16000, 24000 or 48000)")]
    Rate(u32),
}

/// Converts an output rate to libopus' enum.
pub fn opus_rate(rate: u32) -> Result<SampleRate, DecodeError> {
    match rate {
        8000 => Ok(SampleRate::Hz8000),
        12000 => Ok(SampleRate::Hz12000),
        16000 => Ok(SampleRate::Hz16000),
        24000 => Ok(SampleRate::Hz24000),
        48000 => Ok(SampleRate::Hz48000),
        other => Err(DecodeError::Rate(other)),
    }
}

/// Stateful audio decoder for one source.
#[derive(Debug)]
pub(crate) enum Decoder {
    Pcmu,
    Pcma,
    G722(Box<G722Decoder>),
    Opus {
        decoder: Box<OpusDecoder>,
        rate: u32,
    },
}

impl Decoder {
    pub(crate) fn new(codec: Codec, output_rate: u32) -> Result<Option<Decoder>, DecodeError> {
        Ok(match codec {
            Codec::Pcmu => Some(Decoder::Pcmu),
            Codec::Pcma => Some(Decoder::Pcma),
            Codec::G722 => Some(Decoder::G722(Box::default())),
            Codec::Opus => Some(Decoder::Opus {
                decoder: Box::new(OpusDecoder::new(opus_rate(output_rate)?, Channels::Mono)?),
                rate: output_rate,
            }),
            Codec::TelephoneEvent => None,
        })
    }

    /// Rate of the PCM this decoder produces.
    pub(crate) fn pcm_rate(&self) -> u32 {
        match self {
            Decoder::Pcmu | Decoder::Pcma => 8000,
            Decoder::G722(_) => 16000,
            Decoder::Opus { rate, .. } => *rate,
        }
    }

    pub(crate) fn codec(&self) -> Codec {
        match self {
            Decoder::Pcmu => Codec::Pcmu,
            Decoder::Pcma => Codec::Pcma,
            Decoder::G722(_) => Codec::G722,
            Decoder::Opus { .. } => Codec::Opus,
        }
    }

    /// Decodes one payload, appending PCM to `out`.
    pub(crate) fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        match self {
            Decoder::Pcmu => g711::decode_ulaw(payload, out),
            Decoder::Pcma => g711::decode_alaw(payload, out),
            Decoder::G722(d) => d.decode(payload, out),
            Decoder::Opus { decoder, rate } => {
                // Up to 120 ms per packet (RFC 6716).
                let max = (*rate as usize) * 120 / 1000;
                let start = out.len();
                out.resize(start + max, 0);
                let n = decoder.decode(Some(payload), &mut out[start..], false);
                match n {
                    Ok(n) => out.truncate(start + n),
                    Err(e) => {
                        out.truncate(start);
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }
}
