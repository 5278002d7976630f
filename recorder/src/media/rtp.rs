//! RTP (RFC 3550) parsing with bounds checks, RTCP recognition, and
//! wrap-safe extension of 16-bit sequence numbers and 32-bit timestamps.

use thiserror::Error;

/// Why a datagram is not a usable RTP/RTCP packet.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RtpError {
    #[error("packet too short: {len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    #[error("unsupported RTP version {0} (expected 2)")]
    BadVersion(u8),
    #[error("CSRC list ({count} entries) overruns a {len}-byte packet")]
    CsrcOverrun { count: u8, len: usize },
    #[error("header extension of {words} words overruns a {len}-byte packet")]
    ExtensionOverrun { words: u16, len: usize },
    #[error("padding length {padding} is invalid for {available} bytes after the header")]
    BadPadding { padding: u8, available: usize },
}

/// A header extension (RFC 3550 §5.3.1): profile-defined id and raw words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    pub profile: u16,
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrc_count: u8,
    pub extension: Option<RtpExtension<'a>>,
    /// Payload with padding removed.
    pub payload: &'a [u8],
}

/// What arrived on an RTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Rtp(RtpPacket<'a>),
    /// RTCP (multiplexed on the RTP port, RFC 5761): recognised and ignored.
    Rtcp {
        packet_type: u8,
    },
}

const HEADER_LEN: usize = 12;

/// Parses one datagram. RTCP is told apart by its packet type in 192..=223
/// (SR 200, RR 201, SDES 202, BYE 203, APP 204, feedback and XR), the range
/// RFC 5761 reserves so that it never collides with RTP payload types.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, RtpError> {
    if buf.len() < 2 {
        return Err(RtpError::TooShort {
            len: buf.len(),
            need: HEADER_LEN,
        });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    if (192..=223).contains(&buf[1]) {
        if buf.len() < 8 {
            return Err(RtpError::TooShort {
                len: buf.len(),
                need: 8,
            });
        }
        return Ok(Packet::Rtcp {
            packet_type: buf[1],
        });
    }
    parse_rtp(buf).map(Packet::Rtp)
}

/// Parses an RTP packet (no RTCP check).
pub fn parse_rtp(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let len = buf.len();
    if len < HEADER_LEN {
        return Err(RtpError::TooShort {
            len,
            need: HEADER_LEN,
        });
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let padding = buf[0] & 0x20 != 0;
    let has_extension = buf[0] & 0x10 != 0;
    let csrc_count = buf[0] & 0x0f;
    let marker = buf[1] & 0x80 != 0;
    let payload_type = buf[1] & 0x7f;
    let sequence = u16::from_be_bytes([buf[2], buf[3]]);
    let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);

    let mut offset = HEADER_LEN + 4 * usize::from(csrc_count);
    if offset > len {
        return Err(RtpError::CsrcOverrun {
            count: csrc_count,
            len,
        });
    }
    let extension = if has_extension {
        let head = buf
            .get(offset..offset + 4)
            .ok_or(RtpError::ExtensionOverrun { words: 0, len })?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let words = u16::from_be_bytes([head[2], head[3]]);
        let start = offset + 4;
        let end = start + 4 * usize::from(words);
        let data = buf
            .get(start..end)
            .ok_or(RtpError::ExtensionOverrun { words, len })?;
        offset = end;
        Some(RtpExtension { profile, data })
    } else {
        None
    };
    let mut end = len;
    if padding {
        let available = len - offset;
        let pad = buf[len - 1];
        if pad == 0 || usize::from(pad) > available {
            return Err(RtpError::BadPadding {
                padding: pad,
                available,
            });
        }
        end -= usize::from(pad);
    }
    Ok(RtpPacket {
        marker,
        payload_type,
        sequence,
        timestamp,
        ssrc,
        csrc_count,
        extension,
        payload: &buf[offset..end],
    })
}

/// Extends 16-bit sequence numbers to a monotonic-ish 64-bit counter, so that
/// wrap-around (65535 → 0) keeps ordering. A jump is interpreted as the
/// nearest value (±32768) to the last one seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

/// Offset that keeps extended values positive even when a stream starts near
/// zero and the first packets arrive reordered.
const EXT_BASE: u64 = 1 << 32;

impl SeqExtender {
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = match self.last {
            None => EXT_BASE + u64::from(seq),
            Some(last) => {
                let delta = i64::from(seq.wrapping_sub(last as u16) as i16);
                last.saturating_add_signed(delta)
            }
        };
        // Only move the reference forward so a late packet cannot drag it back.
        if self.last.is_none_or(|last| ext > last) {
            self.last = Some(ext);
        }
        ext
    }
}

/// Extends 32-bit RTP timestamps to 64 bits (nearest to the last value seen).
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampExtender {
    last: Option<u64>,
}

impl TimestampExtender {
    pub fn extend(&mut self, ts: u32) -> u64 {
        let ext = match self.last {
            None => (EXT_BASE << 8) + u64::from(ts),
            Some(last) => {
                let delta = i64::from(ts.wrapping_sub(last as u32) as i32);
                last.saturating_add_signed(delta)
            }
        };
        if self.last.is_none_or(|last| ext > last) {
            self.last = Some(ext);
        }
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut b = vec![0x80, pt];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ssrc.to_be_bytes());
        b
    }

    #[test]
    fn parses_fields_csrc_extension_and_padding() {
        let mut b = header(0x80 | 8, 0xfffe, 0x1234_5678, 0xdead_beef);
        b[0] = 0x80 | 0x20 | 0x10 | 2; // padding, extension, 2 CSRCs
        b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]);
        b.extend_from_slice(&[1, 2, 3]);
        b.extend_from_slice(&[0, 0, 3]);
        let Packet::Rtp(p) = parse(&b).expect("valid") else {
            panic!("expected RTP")
        };
        assert!(p.marker);
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, 0xfffe);
        assert_eq!(p.timestamp, 0x1234_5678);
        assert_eq!(p.ssrc, 0xdead_beef);
        assert_eq!(p.csrc_count, 2);
        assert_eq!(p.extension.map(|e| e.profile), Some(0xbede));
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn malformed_packets_are_typed_errors() {
        assert!(matches!(parse(&[0x80]), Err(RtpError::TooShort { .. })));
        assert_eq!(parse(&[0x40, 0, 0, 0]), Err(RtpError::BadVersion(1)));
        let mut b = header(0, 1, 1, 1);
        b[0] |= 0x0f;
        assert!(matches!(parse(&b), Err(RtpError::CsrcOverrun { .. })));
        let mut b = header(0, 1, 1, 1);
        b[0] |= 0x10;
        b.extend_from_slice(&[0, 0, 0, 9]);
        assert!(matches!(parse(&b), Err(RtpError::ExtensionOverrun { .. })));
        let mut b = header(0, 1, 1, 1);
        b[0] |= 0x20;
        b.extend_from_slice(&[1, 200]);
        assert!(matches!(parse(&b), Err(RtpError::BadPadding { .. })));
        let mut b = header(0, 1, 1, 1);
        b[0] |= 0x20;
        b.push(0);
        assert!(matches!(parse(&b), Err(RtpError::BadPadding { .. })));
    }

    #[test]
    fn rtcp_is_recognised() {
        let sr = [0x80, 200, 0, 6, 1, 2, 3, 4];
        assert_eq!(parse(&sr), Ok(Packet::Rtcp { packet_type: 200 }));
        let bye = [0x81, 203, 0, 1, 1, 2, 3, 4];
        assert_eq!(parse(&bye), Ok(Packet::Rtcp { packet_type: 203 }));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut x: u32 = 12345;
        for len in 0..64 {
            for _ in 0..200 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (x >> 16) as u8
                    })
                    .collect();
                let _ = parse(&b);
            }
        }
    }

    #[test]
    fn sequence_wraps_and_reorders() {
        let mut e = SeqExtender::default();
        let a = e.extend(65534);
        let b = e.extend(65535);
        let c = e.extend(1);
        let d = e.extend(0); // late, after the wrap
        assert_eq!(b, a + 1);
        assert_eq!(c, a + 3);
        assert_eq!(d, a + 2);
    }

    #[test]
    fn timestamp_wraps() {
        let mut e = TimestampExtender::default();
        let a = e.extend(u32::MAX - 79);
        let b = e.extend(80);
        assert_eq!(b - a, 160);
        let c = e.extend(u32::MAX - 239); // older packet, before the wrap
        assert_eq!(a - c, 160);
    }
}
