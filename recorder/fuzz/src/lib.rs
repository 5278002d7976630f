//! Entry points shared by the libFuzzer targets (`fuzz_targets/`) and the
//! recorder's "never panics" property tests (`recorder/tests/fuzz_*.rs`, which
//! include this file as a module), so both exercise exactly the same paths.
//!
//! Each takes arbitrary bytes, drives one parser the way the recorder chains
//! it, and asserts the invariants a user would notice: what we answer parses
//! back, and a recording lasts exactly as long as its session.

use callvault_recorder::media::{
    Channel, Codec, PayloadType, StreamConfig, StreamId, Timeline, TimelineConfig,
};
use callvault_recorder::sip::TransactionKey;
use callvault_recorder::sip::{self, DialogId, Limits, MediaType, SipMessage, StreamFramer};
use callvault_recorder::{metadata, multipart, sdp};
use std::time::{Duration, Instant};

/// A SIP datagram, then the same bytes as a TCP stream split at a point the
/// first byte chooses; every message goes through the SIPREC body chain.
pub fn sip_message(data: &[u8]) {
    if let Ok(msg) = sip::parse_datagram(data) {
        signalling(&msg);
    }
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let (a, b) = data.split_at(split);
    let mut framer = StreamFramer::new(Limits::default());
    for chunk in [a, b] {
        framer.push(chunk);
        while let Ok(Some(msg)) = framer.next_message() {
            signalling(&msg);
        }
    }
}

/// What the SIP layer and the session layer do with one parsed message.
fn signalling(msg: &SipMessage) {
    let _ = msg.validate_request();
    let _ = TransactionKey::of(msg);
    let _ = DialogId::for_incoming(msg);
    let _ = msg.vias();
    let _ = msg.contacts();
    if let Ok(resp) = msg.response(200, "OK", "fuzz") {
        let bytes = resp.to_bytes();
        assert!(
            sip::parse_datagram(&bytes).is_ok(),
            "our response does not parse: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    if let Ok(Some(ct)) = msg.content_type()
        && let Ok(body) = multipart::siprec_body(&ct, &msg.body)
    {
        sdp_offer(&body.sdp);
        if let Some(md) = &body.metadata {
            rs_metadata(md);
        }
    }
}

/// An SDP offer: parse, plan, answer; the answer must parse and keep one
/// m-line per offered one (RFC 3264 §6).
pub fn sdp_offer(data: &[u8]) {
    let Ok(offer) = sdp::parse(data) else { return };
    // Every SRTP policy sees the offer: which one is the input's length's choice.
    let policy = [
        sdp::SrtpPolicy::Preferred,
        sdp::SrtpPolicy::Required,
        sdp::SrtpPolicy::Disabled,
    ][data.len() % 3];
    let plans = sdp::plan(&offer, policy);
    let accepted = plans
        .iter()
        .filter(|p| matches!(p, sdp::MediaPlan::Accept { .. }))
        .count();
    let ports: Vec<u16> = (0..accepted)
        .map(|i| 20_000u16.wrapping_add(2 * i as u16))
        .collect();
    let params = sdp::AnswerParams {
        address: [192, 0, 2, 1].into(),
        ports: &ports,
        session_id: 1,
        session_version: 1,
    };
    let answer = match sdp::build_answer(&offer, &plans, &params) {
        Ok(answer) => answer,
        Err(e) => panic!("no answer for a planned offer: {e}"),
    };
    let parsed = match sdp::parse(answer.as_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("our answer does not parse ({e}): {answer:?}"),
    };
    assert_eq!(parsed.media.len(), offer.media.len(), "{answer}");
    // An SRTP stream is answered with the chosen attribute's tag and suite and a key of our
    // own, which parses as any offered one does (RFC 4568 §7.1.1).
    for (plan, m) in plans.iter().zip(&parsed.media) {
        if let sdp::MediaPlan::Accept {
            srtp: Some(keys), ..
        } = plan
        {
            let crypto: Vec<_> = m.attributes.iter().filter(|(n, _)| n == "crypto").collect();
            let [(_, Some(value))] = crypto.as_slice() else {
                panic!("one a=crypto per SRTP stream: {answer:?}");
            };
            let ours = callvault_recorder::srtp::Crypto::parse(value)
                .unwrap_or_else(|e| panic!("our a=crypto does not parse ({e})"));
            assert_eq!(ours.tag, keys.remote.tag);
            assert_eq!(ours.key.suite(), keys.remote.key.suite());
            assert_ne!(ours.key, keys.remote.key, "a key of our own");
        }
    }
}

/// An rs-metadata document: parse, apply to itself (a re-INVITE repeating
/// it), and resolve each label's sender.
pub fn rs_metadata(data: &[u8]) {
    let Ok(md) = metadata::parse(data) else {
        return;
    };
    let mut state = md.clone();
    state.apply(md);
    for s in state.label_senders() {
        let _ = state.sender_of_label(s.label);
    }
}

/// A multipart body: the first line is the Content-Type header value (a
/// fixed multipart type when it does not parse), the rest the body.
pub fn multipart(data: &[u8]) {
    let nl = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (head, body) = data.split_at(nl);
    let parsed = std::str::from_utf8(head)
        .ok()
        .and_then(|s| MediaType::parse(s.trim_end_matches('\r')).ok());
    let ct = match parsed {
        Some(ct) => ct,
        None => match MediaType::parse("multipart/mixed;boundary=b") {
            Ok(ct) => ct,
            Err(e) => panic!("fixed content type: {e}"),
        },
    };
    if let Ok(mp) = multipart::parse(&ct, body) {
        for part in &mp.parts {
            let _ = part.content_type();
            let _ = part.disposition();
        }
    }
    let _ = multipart::siprec_body(&ct, body);
}

/// The frame durations the timeline accepts (Opus frame sizes).
const OPUS_FRAMES_US: [u64; 6] = [2_500, 5_000, 10_000, 20_000, 40_000, 60_000];

/// Longest session one input may describe: emitting the frames costs time in
/// proportion, and longer sessions reach no other code.
const MAX_SESSION: Duration = Duration::from_secs(2);

/// Reads an input as a little program; missing bytes read as zero so every
/// input is a valid program.
struct Program<'a> {
    data: &'a [u8],
}

impl Program<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        let (b, rest) = self
            .data
            .split_first()
            .map_or((0, &[][..]), |(b, r)| (*b, r));
        self.data = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Payload types a negotiation can yield: the codecs at their RTP clock,
    /// telephone-event at the clock of the codec it goes with.
    fn payload_types(&mut self) -> Vec<PayloadType> {
        (0..self.u8() % 4)
            .map(|_| {
                let pt = self.u8();
                let (codec, clock_rate) = match self.u8() % 6 {
                    0 => (Codec::Pcmu, 8000),
                    1 => (Codec::Pcma, 8000),
                    2 => (Codec::G722, 8000),
                    3 => (Codec::Opus, 48000),
                    4 => (Codec::TelephoneEvent, 8000),
                    _ => (Codec::TelephoneEvent, 48000),
                };
                PayloadType::dynamic(pt & 0x7f, codec, clock_rate)
            })
            .collect()
    }

    fn stream(&mut self) -> StreamConfig {
        let pick = self.u8();
        let channel = match pick % 4 {
            0 => Channel::A,
            1 => Channel::B,
            2 => Channel::Both,
            // Past the last channel too: mixed into it.
            _ => Channel::Nth(usize::from(pick >> 2) % 10),
        };
        StreamConfig {
            channel,
            payload_types: self.payload_types(),
        }
    }
}

/// Per stream: the next sequence number and timestamp of generated packets.
#[derive(Default, Clone, Copy)]
struct Sender {
    seq: u16,
    ts: u32,
}

/// The media path of one session: a program of RTP packets (well-formed
/// ones built from fields, and raw datagrams), clock steps, codec changes
/// (re-INVITE) and added streams, through RTP parsing, the timeline and
/// every decoder. Checks that each output frame is whole and that the
/// output lasts exactly as long as the session, rounded up to a frame.
pub fn rtp_path(data: &[u8]) {
    let mut p = Program { data };
    let head = p.u8();
    let config = TimelineConfig {
        output_rate: [8000, 16000, 24000, 48000][usize::from(head & 3)],
        frame: Duration::from_micros(OPUS_FRAMES_US[usize::from(head >> 2) % 6]),
        jitter_delay: Duration::from_millis(u64::from(p.u8())),
        resync_threshold: Duration::from_millis(2 * u64::from(p.u8())),
        resync_packets: 1 + usize::from(p.u8() % 8),
        max_pending: 1 + usize::from(p.u8() % 128),
        channels: 1 + usize::from(head >> 5),
    };
    let start = Instant::now();
    let mut timeline = match Timeline::new(config, start) {
        Ok(t) => t,
        Err(e) => panic!("valid timeline config refused: {e}"),
    };
    let frame_len = timeline.frame_len();
    let channels = timeline.config().channels;
    let mut frames = 0u64;
    let mut sink = |frame: &[i16]| -> Result<(), String> {
        if frame.len() != channels * frame_len {
            return Err(format!("frame of {} samples", frame.len()));
        }
        frames += 1;
        Ok(())
    };
    let mut senders = vec![Sender::default(); 1 + usize::from(p.u8() % 3)];
    for _ in 0..senders.len() {
        let s = p.stream();
        timeline.add_stream(s);
    }
    let mut now = Duration::ZERO;
    let step = |now: &mut Duration, ms: u64| {
        *now = (*now + Duration::from_millis(ms)).min(MAX_SESSION);
    };
    while !p.is_empty() {
        match p.u8() % 6 {
            // A well-formed RTP packet, built from fields.
            0 | 1 => {
                // One past the last stream is an unknown one: an error, never a panic.
                let index = usize::from(p.u8()) % (senders.len() + 1);
                step(&mut now, u64::from(p.u8()));
                let flags = p.u8();
                // Padding, extension and CSRC count bits; the payload bytes then
                // hold the CSRCs, the extension and the padding.
                let shape = p.u8() & 0x3f;
                let pt = p.u8();
                let sender = senders.get_mut(index).copied().unwrap_or_default();
                let seq = if flags & 1 != 0 {
                    p.u16()
                } else {
                    sender.seq.wrapping_add_signed(i16::from(p.u8() as i8))
                };
                let ts = if flags & 2 != 0 {
                    p.u32()
                } else {
                    sender.ts.wrapping_add_signed(i32::from(p.u16() as i16) * 8)
                };
                let ssrc = 0x5eed_0000 + u32::from((flags >> 2) & 3);
                let len = usize::from(p.u8());
                let mut packet = Vec::with_capacity(12 + len);
                packet.extend_from_slice(&[0x80 | shape, (flags & 0x80) | (pt & 0x7f)]);
                packet.extend_from_slice(&seq.to_be_bytes());
                packet.extend_from_slice(&ts.to_be_bytes());
                packet.extend_from_slice(&ssrc.to_be_bytes());
                packet.extend_from_slice(p.bytes(len));
                if let Some(s) = senders.get_mut(index) {
                    *s = Sender { seq, ts };
                }
                push(&mut timeline, index, senders.len(), &packet, start + now);
            }
            // Any datagram (malformed RTP, RTCP, padding, extensions).
            2 => {
                let index = usize::from(p.u8()) % (senders.len() + 1);
                step(&mut now, u64::from(p.u8()));
                let len = usize::from(p.u16() % 1500);
                let datagram = p.bytes(len).to_vec();
                push(&mut timeline, index, senders.len(), &datagram, start + now);
            }
            // Time passes: frames whose playout point passed are emitted.
            3 => {
                step(&mut now, u64::from(p.u16() % 1000));
                if let Err(e) = timeline.advance(start + now, &mut sink) {
                    panic!("{e}");
                }
            }
            // A re-INVITE changes a stream's codecs.
            4 => {
                let index = usize::from(p.u8()) % senders.len();
                let types = p.payload_types();
                if let Err(e) = timeline.set_payload_types(StreamId(index), types) {
                    panic!("codec change on a known stream: {e}");
                }
            }
            // A re-INVITE adds a stream.
            _ => {
                if senders.len() < 4 {
                    let s = p.stream();
                    timeline.add_stream(s);
                    senders.push(Sender::default());
                }
            }
        }
    }
    step(&mut now, u64::from(p.u8()));
    let total = match timeline.finish(start + now, &mut sink) {
        Ok(total) => total,
        Err(e) => panic!("{e}"),
    };
    let expected =
        (now.as_nanos() * u128::from(timeline.config().output_rate) / 1_000_000_000) as u64;
    assert_eq!(total, expected, "session of {now:?}");
    assert_eq!(
        frames,
        total.div_ceil(frame_len as u64),
        "{frames} frames of {frame_len} for {total} samples"
    );
}

/// Pushes a datagram; only an unknown stream may be refused outright, and
/// then with an error.
fn push(timeline: &mut Timeline, index: usize, streams: usize, datagram: &[u8], at: Instant) {
    let result = timeline.push(StreamId(index), datagram, at);
    if index >= streams {
        assert!(result.is_err(), "unknown stream {index} accepted");
    }
}

/// SRTP and SRTCP datagrams: each is authenticated and decrypted, or dropped as a replay or
/// a forgery, never a panic. The first byte picks the suite; then each datagram is a length
/// byte and its bytes. Odd-numbered ones are first protected under the stream's key, so that
/// what comes after authentication is reached as well.
pub fn srtp_datagrams(data: &[u8]) {
    use callvault_recorder::srtp::{Inbound, MasterKey, Outbound, Suite};
    let Some((&head, mut rest)) = data.split_first() else {
        return;
    };
    let suite = Suite::ALL[usize::from(head) % Suite::ALL.len()];
    let material = vec![head; suite.key_len() + suite.salt_len()];
    let Ok(key) = MasterKey::from_bytes(suite, &material) else {
        panic!("a key of the suite's length refused");
    };
    let mut tx = Outbound::new(&key);
    let mut rx = Inbound::new(key);
    let mut n = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let (datagram, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        n += 1;
        let protected = if n % 2 == 1 {
            let rtcp = datagram.len() >= 2 && (192..=223).contains(&datagram[1]);
            let sent = if rtcp {
                tx.protect_rtcp(datagram)
            } else {
                tx.protect_rtp(datagram)
            };
            match sent {
                Ok(p) => p,
                Err(_) => datagram.to_vec(),
            }
        } else {
            datagram.to_vec()
        };
        let _ = rx.unprotect(&protected);
        let _ = rx.unprotect_rtcp(&protected);
    }
}
