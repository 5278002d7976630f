//! Frames SIP messages out of a byte stream (TCP/TLS), where message
//! boundaries come only from `Content-Length` (RFC 3261 §18.3).

use super::error::SipError;
use super::message::{
    Limits, SipMessage, content_length, find_header_end, parse_head, parse_with_limits,
};

/// Accumulates stream bytes and yields complete messages. Handles partial
/// reads, several pipelined messages in one read, and CRLF keep-alives
/// (RFC 5626). After an error the stream cannot be resynchronised: the
/// caller should answer 400 if possible and close the connection.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limits: Limits,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            limits,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not form a complete message yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<SipMessage>, SipError> {
        // Drop keep-alive CRLFs between messages.
        let lead = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        self.buf.drain(..lead);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let Some((head_len, body_start)) = find_header_end(&self.buf) else {
            if self.buf.len() > self.limits.max_message {
                return Err(self.fail(SipError::TooLarge {
                    size: self.buf.len(),
                    limit: self.limits.max_message,
                }));
            }
            return Ok(None);
        };
        let head = self.buf.get(..head_len).unwrap_or_default();
        let declared = match parse_head(head, &self.limits).and_then(|(_, h)| content_length(&h)) {
            Ok(Some(n)) => n,
            // A stream message without Content-Length cannot be delimited.
            Ok(None) => return Err(self.fail(SipError::MissingHeader("Content-Length"))),
            Err(e) => return Err(self.fail(e)),
        };
        let total = body_start.saturating_add(declared);
        if total > self.limits.max_message {
            return Err(self.fail(SipError::TooLarge {
                size: total,
                limit: self.limits.max_message,
            }));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let bytes: Vec<u8> = self.buf.drain(..total).collect();
        parse_with_limits(&bytes, &self.limits).map(Some)
    }

    fn fail(&mut self, e: SipError) -> SipError {
        self.buf.clear();
        e
    }
}
