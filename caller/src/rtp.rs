//! RTP packets (RFC 3550) and their schedule: packet `k` of a stream is due `k × 20 ms` after
//! the stream starts and carries timestamp `ts0 + 160k` and sequence number `seq0 + k`
//! (both wrapping), whatever the sender's own delays, so late sending never skews the media
//! timeline the recorder rebuilds.

use std::time::Duration;

use crate::audio::SAMPLES_PER_PACKET;

pub const PTIME: Duration = Duration::from_millis(20);
const HEADER_LEN: usize = 12;

/// The fixed identity of one RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpStream {
    pub ssrc: u32,
    pub payload_type: u8,
    pub first_seq: u16,
    pub first_timestamp: u32,
}

impl RtpStream {
    /// Random SSRC, sequence and timestamp origins (RFC 3550 §5.1).
    pub fn random(payload_type: u8) -> Self {
        Self {
            ssrc: rand::random(),
            payload_type,
            first_seq: rand::random(),
            first_timestamp: rand::random(),
        }
    }

    pub fn sequence(&self, k: u64) -> u16 {
        self.first_seq.wrapping_add(k as u16)
    }

    pub fn timestamp(&self, k: u64) -> u32 {
        self.first_timestamp
            .wrapping_add((k as u32).wrapping_mul(SAMPLES_PER_PACKET as u32))
    }

    /// Writes packet `k` into `buf` (cleared first). The first packet has the marker bit: it
    /// starts a talkspurt (RFC 3551 §4.1).
    pub fn packet(&self, k: u64, payload: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        buf.reserve(HEADER_LEN + payload.len());
        buf.push(0x80);
        buf.push(self.payload_type | if k == 0 { 0x80 } else { 0 });
        buf.extend_from_slice(&self.sequence(k).to_be_bytes());
        buf.extend_from_slice(&self.timestamp(k).to_be_bytes());
        buf.extend_from_slice(&self.ssrc.to_be_bytes());
        buf.extend_from_slice(payload);
    }
}

/// Packets in a call of `duration` (a partial last packet counts as a whole one).
pub fn packet_count(duration: Duration) -> u64 {
    let ptime = PTIME.as_nanos();
    duration.as_nanos().div_ceil(ptime) as u64
}

/// When packet `k` is due, after the stream's start.
pub fn due(k: u64) -> Duration {
    PTIME.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
}

/// How late a send was: zero when on time or early.
pub fn lateness(due: Duration, sent: Duration) -> Duration {
    sent.saturating_sub(due)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use callvault_recorder::media::rtp::{Packet, parse};

    #[test]
    fn packets_parse_back_with_marker_only_on_the_first() {
        let s = RtpStream {
            ssrc: 0xdead_beef,
            payload_type: 8,
            first_seq: 7,
            first_timestamp: 1000,
        };
        let mut buf = Vec::new();
        s.packet(0, &[1, 2, 3], &mut buf);
        let Packet::Rtp(p) = parse(&buf).unwrap() else {
            panic!("not RTP")
        };
        assert!(p.marker);
        assert_eq!(
            (p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (8, 7, 1000, 0xdead_beef)
        );
        assert_eq!(p.payload, &[1, 2, 3]);
        s.packet(3, &[9; 160], &mut buf);
        let Packet::Rtp(p) = parse(&buf).unwrap() else {
            panic!("not RTP")
        };
        assert!(!p.marker);
        assert_eq!((p.sequence, p.timestamp), (10, 1480));
        assert_eq!(p.payload.len(), 160);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let s = RtpStream {
            ssrc: 1,
            payload_type: 0,
            first_seq: u16::MAX,
            first_timestamp: u32::MAX - 159,
        };
        assert_eq!(s.sequence(1), 0);
        assert_eq!(s.timestamp(1), 0);
        assert_eq!(s.sequence(65_537), 0);
        // Packet numbers past 2^32 keep the same arithmetic modulo 2^32.
        assert_eq!(s.timestamp(1 + (1u64 << 32)), 0);
    }

    #[test]
    fn schedule_is_fixed_by_packet_number() {
        assert_eq!(packet_count(Duration::from_secs(10)), 500);
        assert_eq!(packet_count(Duration::from_millis(30)), 2);
        assert_eq!(packet_count(Duration::ZERO), 0);
        assert_eq!(due(0), Duration::ZERO);
        assert_eq!(due(500), Duration::from_secs(10));
        assert_eq!(
            lateness(Duration::from_millis(40), Duration::from_micros(40_350)),
            Duration::from_micros(350)
        );
        assert_eq!(
            lateness(Duration::from_millis(40), Duration::from_millis(39)),
            Duration::ZERO
        );
    }
}
