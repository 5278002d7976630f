//! RFC 4733 telephone-event payloads. DTMF is kept as metadata next to the
//! recording and never mixed into the audio.

use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DtmfError {
    #[error("telephone-event payload of {0} bytes is shorter than 4")]
    TooShort(usize),
}

/// One event block of a telephone-event packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// Attenuation in dBm0 (0..=63, larger is quieter).
    pub volume: u8,
    /// Duration so far in RTP timestamp units, counted from the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block (later blocks, if any, are redundant copies
    /// of earlier events; they carry their own timestamp offsets we don't need).
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        let b = payload.get(..4).ok_or(DtmfError::TooShort(payload.len()))?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The DTMF symbol for events 0..=15, `None` for other telephony events.
    pub fn digit(&self) -> Option<char> {
        digit(self.event)
    }

    /// Encodes the block (used by tests and the test client).
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// Maps an RFC 4733 event code to its DTMF symbol.
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// A DTMF key press placed on the session timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmfEvent {
    /// Index of the stream (m-line) it arrived on.
    pub stream: usize,
    /// Event code (0..=15 are DTMF digits).
    pub event: u8,
    /// The DTMF symbol, when the event is a digit.
    pub digit: Option<char>,
    /// Offset from the session start.
    pub start: Duration,
    pub duration: Duration,
    /// True when an end packet was seen; false if the sender never finished it.
    pub ended: bool,
    pub volume: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let e = TelephoneEvent::parse(&[11, 0x80 | 10, 0x03, 0x20]).expect("valid");
        assert_eq!(e.digit(), Some('#'));
        assert!(e.end);
        assert_eq!(e.volume, 10);
        assert_eq!(e.duration, 800);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Ok(e));
        assert_eq!(TelephoneEvent::parse(&[1, 2]), Err(DtmfError::TooShort(2)));
    }

    #[test]
    fn digits() {
        let s: String = (0..=15).filter_map(digit).collect();
        assert_eq!(s, "0123456789*#ABCD");
        assert_eq!(digit(16), None);
    }
}
