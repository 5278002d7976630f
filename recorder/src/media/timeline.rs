//! The session timeline: places each stream's audio by RTP timestamp on a
//! common clock so loss, hold, late start and silent streams become silence
//! and the channels stay aligned; output length equals the session length.
//!
//! Time is injected: `push` takes the packet's arrival instant and
//! `advance(now)` emits every 20 ms frame (all channels, interleaved) whose
//! playout point (`now - jitter_delay`) has passed.

use super::codec::{Codec, DecodeError, Decoder, PayloadType, opus_rate};
use super::dtmf::{DtmfEvent, TelephoneEvent};
use super::resample::Resampler;
use super::rtp::{self, Packet, RtpError, SeqExtender, TimestampExtender};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Which output channel a stream feeds. A channel past the recording's last one (a stream
/// added by a re-INVITE to a per-stream recording, any stream of a mono one) is mixed into
/// the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Channel 0 (left): party A.
    A,
    /// Channel 1 (right): party B.
    B,
    /// A single mixed stream from the call source: every channel.
    Both,
    /// Channel n of a recording with a channel per stream.
    Nth(usize),
}

impl Channel {
    /// The output channels this one feeds, of `channels`.
    fn targets(self, channels: usize) -> std::ops::Range<usize> {
        let last = channels.saturating_sub(1);
        let one = |c: usize| c.min(last)..c.min(last) + 1;
        match self {
            Channel::A => one(0),
            Channel::B => one(1),
            Channel::Nth(n) => one(n),
            Channel::Both => 0..channels,
        }
    }
}

/// One media stream (SDP m-line) of the session.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub channel: Channel,
    /// Negotiated payload types; static PCMU/PCMA/G.722 are implied.
    pub payload_types: Vec<PayloadType>,
}

impl StreamConfig {
    pub fn new(channel: Channel) -> Self {
        StreamConfig {
            channel,
            payload_types: Vec::new(),
        }
    }

    pub fn with_payload_type(mut self, pt: PayloadType) -> Self {
        self.payload_types.push(pt);
        self
    }

    /// The payload type `pt` stands for on this stream, if it is one the stream decodes.
    pub fn lookup(&self, pt: u8) -> Option<PayloadType> {
        self.payload_types
            .iter()
            .copied()
            .chain(PayloadType::static_types())
            .find(|p| p.pt == pt)
    }
}

/// Handle of a stream in a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(pub usize);

#[derive(Debug, Clone)]
pub struct TimelineConfig {
    /// PCM rate of the output (8000, 16000, 24000 or 48000).
    pub output_rate: u32,
    /// Output channels, 1 to [`MAX_CHANNELS`].
    pub channels: usize,
    pub frame: Duration,
    /// How long packets may be late (network jitter, reordering).
    pub jitter_delay: Duration,
    /// A stream whose timestamps disagree with arrival time by more than this
    /// (frozen timestamps across hold, jumps) is re-anchored to arrival time.
    pub resync_threshold: Duration,
    /// Consecutive consistent packets needed before re-anchoring, so a single
    /// stray packet or a burst after a network stall cannot move the stream.
    pub resync_packets: usize,
    /// Reorder buffer bound per stream.
    pub max_pending: usize,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            output_rate: 16000,
            channels: 2,
            frame: Duration::from_millis(20),
            jitter_delay: Duration::from_millis(120),
            resync_threshold: Duration::from_millis(300),
            resync_packets: 4,
            max_pending: 64,
        }
    }
}

#[derive(Debug, Error)]
pub enum TimelineError {
    #[error("invalid timeline config: {0}")]
    Config(String),
    #[error("unknown stream {0:?}")]
    UnknownStream(StreamId),
    #[error(transparent)]
    Rtp(#[from] RtpError),
}

/// Counters a recording keeps as evidence of what happened on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub packets: u64,
    pub rtcp: u64,
    pub malformed: u64,
    pub unknown_payload_type: u64,
    pub duplicates: u64,
    /// Arrived after their playout point (or from a replaced SSRC).
    pub late: u64,
    /// Sequence numbers never received.
    pub lost: u64,
    pub decode_errors: u64,
    pub ssrc_changes: u64,
    pub resyncs: u64,
    pub dtmf_packets: u64,
}

#[derive(Debug)]
struct Pending {
    ext_ts: u64,
    pt: PayloadType,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Candidate {
    ext_seq: u64,
    arrival_pos: i64,
    packet: Pending,
}

/// One sender (SSRC) of a stream and its mapping from RTP time to the timeline.
#[derive(Debug)]
struct Source {
    ssrc: u32,
    seq: SeqExtender,
    ts: TimestampExtender,
    anchor_ts: u64,
    anchor_pos: i64,
    anchor_clock: u32,
    released_any: bool,
    next_seq: Option<u64>,
    pending: BTreeMap<u64, Pending>,
    candidates: Vec<Candidate>,
    decoder: Option<Decoder>,
    resampler: Option<Resampler>,
    /// Timeline position right after the last decoded audio.
    last_end: Option<i64>,
    last_dtmf: Option<(u64, usize)>,
}

impl Source {
    fn position(&self, ext_ts: u64, output_rate: u32) -> i64 {
        let delta = i128::from(ext_ts) - i128::from(self.anchor_ts);
        let samples = delta * i128::from(output_rate) / i128::from(self.anchor_clock.max(1));
        self.anchor_pos
            .saturating_add(samples.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }
}

#[derive(Debug)]
struct Stream {
    config: StreamConfig,
    source: Option<Source>,
    previous_ssrc: Option<u32>,
    stats: StreamStats,
}

/// Per-session timeline. See the module docs.
#[derive(Debug)]
pub struct Timeline {
    config: TimelineConfig,
    start: Instant,
    streams: Vec<Stream>,
    channels: Vec<VecDeque<i16>>,
    /// Timeline position of `channels[_][0]` (everything before was emitted).
    emitted: i64,
    frame_len: usize,
    jitter_len: i64,
    threshold_len: i64,
    max_ahead: usize,
    events: Vec<DtmfEvent>,
    pcm: Vec<i16>,
    resampled: Vec<i16>,
    frame: Vec<i16>,
}

const MAX_EVENTS: usize = 10_000;

/// The most channels a recording has.
pub const MAX_CHANNELS: usize = callvault_config::ChannelLayout::MAX_CHANNELS;

impl Timeline {
    pub fn new(config: TimelineConfig, start: Instant) -> Result<Timeline, TimelineError> {
        opus_rate(config.output_rate).map_err(|e| TimelineError::Config(e.to_string()))?;
        let rate = u128::from(config.output_rate);
        let samples = |d: Duration| (d.as_nanos() * rate / 1_000_000_000) as i64;
        let frame_len = samples(config.frame) as usize;
        if ![
            2_500_000u128,
            5_000_000,
            10_000_000,
            20_000_000,
            40_000_000,
            60_000_000,
        ]
        .contains(&config.frame.as_nanos())
        {
            return Err(TimelineError::Config(format!(
                "frame {:?} is not an Opus frame size",
                config.frame
            )));
        }
        if !(1..=MAX_CHANNELS).contains(&config.channels) {
            return Err(TimelineError::Config(format!(
                "{} channels: 1 to {MAX_CHANNELS}",
                config.channels
            )));
        }
        if config.max_pending == 0 || config.resync_packets == 0 {
            return Err(TimelineError::Config(
                "max_pending and resync_packets must be positive".into(),
            ));
        }
        let jitter_len = samples(config.jitter_delay);
        let threshold_len = samples(config.resync_threshold);
        // Audio is decoded ahead of playout by at most the jitter delay, the
        // resync threshold and one maximal (120 ms) packet.
        let max_ahead = (jitter_len + threshold_len) as usize
            + samples(Duration::from_millis(120)) as usize
            + 2 * frame_len;
        Ok(Timeline {
            start,
            streams: Vec::new(),
            channels: vec![VecDeque::new(); config.channels],
            emitted: 0,
            frame_len,
            jitter_len,
            threshold_len,
            max_ahead,
            events: Vec::new(),
            pcm: Vec::new(),
            resampled: Vec::new(),
            frame: Vec::with_capacity(config.channels * frame_len),
            config,
        })
    }

    pub fn config(&self) -> &TimelineConfig {
        &self.config
    }

    /// Samples per channel in one output frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Adds a stream (an m-line; also later, after a re-INVITE).
    pub fn add_stream(&mut self, config: StreamConfig) -> StreamId {
        self.streams.push(Stream {
            config,
            source: None,
            previous_ssrc: None,
            stats: StreamStats::default(),
        });
        StreamId(self.streams.len() - 1)
    }

    /// Replaces a stream's payload types (re-INVITE changed codecs).
    pub fn set_payload_types(
        &mut self,
        id: StreamId,
        payload_types: Vec<PayloadType>,
    ) -> Result<(), TimelineError> {
        self.streams
            .get_mut(id.0)
            .ok_or(TimelineError::UnknownStream(id))?
            .config
            .payload_types = payload_types;
        Ok(())
    }

    pub fn stats(&self, id: StreamId) -> Option<&StreamStats> {
        self.streams.get(id.0).map(|s| &s.stats)
    }

    /// DTMF events seen so far, in arrival order.
    pub fn dtmf_events(&self) -> &[DtmfEvent] {
        &self.events
    }

    /// Timeline position (output samples) of an instant.
    pub fn position(&self, at: Instant) -> i64 {
        let d = at.saturating_duration_since(self.start);
        (d.as_nanos() * u128::from(self.config.output_rate) / 1_000_000_000) as i64
    }

    /// Approximate heap bytes held by this timeline (buffers and decoders'
    /// own state excluding libopus, which is ~18 KB per Opus source).
    pub fn memory_bytes(&self) -> usize {
        let chans: usize = self.channels.iter().map(|c| c.capacity() * 2).sum();
        let pending: usize = self
            .streams
            .iter()
            .filter_map(|s| s.source.as_ref())
            .map(|s| {
                s.pending
                    .values()
                    .map(|p| p.payload.capacity() + 48)
                    .sum::<usize>()
                    + s.resampler.as_ref().map_or(0, |_| 2048)
                    + std::mem::size_of::<Source>()
            })
            .sum();
        chans
            + pending
            + (self.pcm.capacity() + self.resampled.capacity() + self.frame.capacity()) * 2
            + self.events.capacity() * std::mem::size_of::<DtmfEvent>()
    }

    /// Accepts one datagram received on a stream's RTP port.
    pub fn push(
        &mut self,
        id: StreamId,
        datagram: &[u8],
        arrival: Instant,
    ) -> Result<(), TimelineError> {
        let arrival_pos = self.position(arrival);
        let rate = self.config.output_rate;
        let threshold = self.threshold_len;
        let resync_packets = self.config.resync_packets;
        let max_pending = self.config.max_pending;
        let Some(stream) = self.streams.get_mut(id.0) else {
            return Err(TimelineError::UnknownStream(id));
        };
        stream.stats.packets += 1;
        let packet = match rtp::parse(datagram) {
            Ok(Packet::Rtp(p)) => p,
            Ok(Packet::Rtcp { .. }) => {
                stream.stats.rtcp += 1;
                return Ok(());
            }
            Err(e) => {
                stream.stats.malformed += 1;
                return Err(e.into());
            }
        };
        let Some(pt) = stream.config.lookup(packet.payload_type) else {
            stream.stats.unknown_payload_type += 1;
            return Ok(());
        };

        // A new SSRC is a new sender (transfer, re-INVITE): finish the old one
        // and anchor the new one at the current session time.
        if stream
            .source
            .as_ref()
            .is_some_and(|s| s.ssrc != packet.ssrc)
        {
            if stream.previous_ssrc == Some(packet.ssrc) {
                stream.stats.late += 1;
                return Ok(());
            }
            stream.stats.ssrc_changes += 1;
            if let Some(mut old) = stream.source.take() {
                stream.previous_ssrc = Some(old.ssrc);
                let mut sink = Writer {
                    channels: &mut self.channels,
                    emitted: self.emitted,
                    max_ahead: self.max_ahead,
                    channel: stream.config.channel,
                    rate,
                    pcm: &mut self.pcm,
                    resampled: &mut self.resampled,
                };
                release(&mut old, &mut stream.stats, &mut sink, i64::MAX);
            }
        }
        let source = stream.source.get_or_insert_with(|| Source {
            ssrc: packet.ssrc,
            seq: SeqExtender::default(),
            ts: TimestampExtender::default(),
            anchor_ts: 0,
            anchor_pos: arrival_pos,
            anchor_clock: pt.clock_rate,
            released_any: false,
            next_seq: None,
            pending: BTreeMap::new(),
            candidates: Vec::new(),
            decoder: None,
            resampler: None,
            last_end: None,
            last_dtmf: None,
        });
        let ext_seq = source.seq.extend(packet.sequence);
        let ext_ts = source.ts.extend(packet.timestamp);
        if source.anchor_ts == 0 {
            source.anchor_ts = ext_ts;
        }

        let is_event = pt.codec == Codec::TelephoneEvent;
        // Event packets repeat the key press's start timestamp for its whole
        // duration, so they say nothing about the timestamp-to-time mapping.
        let offset = if is_event {
            0
        } else {
            arrival_pos.saturating_sub(source.position(ext_ts, rate))
        };
        if offset.saturating_abs() > threshold {
            // Timestamps and arrival disagree: maybe a jump, maybe a stray.
            source.candidates.push(Candidate {
                ext_seq,
                arrival_pos,
                packet: Pending {
                    ext_ts,
                    pt,
                    payload: packet.payload.to_vec(),
                },
            });
            if source.candidates.len() > resync_packets {
                source.candidates.remove(0);
                stream.stats.late += 1;
            }
            if source.candidates.len() == resync_packets && consistent(source, rate) {
                let mut sink = Writer {
                    channels: &mut self.channels,
                    emitted: self.emitted,
                    max_ahead: self.max_ahead,
                    channel: stream.config.channel,
                    rate,
                    pcm: &mut self.pcm,
                    resampled: &mut self.resampled,
                };
                release(source, &mut stream.stats, &mut sink, i64::MAX);
                resync(source, rate);
                stream.stats.resyncs += 1;
            }
            return Ok(());
        }
        if !source.candidates.is_empty() {
            stream.stats.late += source.candidates.len() as u64;
            source.candidates.clear();
        }
        if offset < 0 && !source.released_any {
            // Arrived earlier than the first packet implied: that one was
            // delayed, so move the anchor earlier while nothing was played.
            source.anchor_pos = source.anchor_pos.saturating_add(offset);
        }

        if is_event {
            stream.stats.dtmf_packets += 1;
            if let Ok(ev) = TelephoneEvent::parse(packet.payload) {
                let pos = source.position(ext_ts, rate);
                // A stray timestamp can put the key press days away; saturate
                // rather than overflow.
                let nanos =
                    u128::from(pos.max(0).unsigned_abs()) * 1_000_000_000 / u128::from(rate);
                let start = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                let duration = Duration::from_nanos(
                    u64::from(ev.duration) * 1_000_000_000 / u64::from(pt.clock_rate.max(1)),
                );
                match source.last_dtmf {
                    Some((ts, idx)) if ts == ext_ts => {
                        if let Some(e) = self.events.get_mut(idx) {
                            e.duration = e.duration.max(duration);
                            e.ended |= ev.end;
                        }
                    }
                    _ if self.events.len() < MAX_EVENTS => {
                        source.last_dtmf = Some((ext_ts, self.events.len()));
                        self.events.push(DtmfEvent {
                            stream: id.0,
                            event: ev.event,
                            digit: ev.digit(),
                            start,
                            duration,
                            ended: ev.end,
                            volume: ev.volume,
                        });
                    }
                    _ => {}
                }
            } else {
                stream.stats.malformed += 1;
            }
            // Keep the sequence slot so the reorder buffer sees no gap.
        }

        if source.next_seq.is_some_and(|n| ext_seq < n) {
            stream.stats.late += 1;
            return Ok(());
        }
        if source.pending.contains_key(&ext_seq) {
            stream.stats.duplicates += 1;
            return Ok(());
        }
        source.pending.insert(
            ext_seq,
            Pending {
                ext_ts,
                pt,
                payload: if pt.codec == Codec::TelephoneEvent {
                    Vec::new()
                } else {
                    packet.payload.to_vec()
                },
            },
        );
        let mut sink = Writer {
            channels: &mut self.channels,
            emitted: self.emitted,
            max_ahead: self.max_ahead,
            channel: stream.config.channel,
            rate,
            pcm: &mut self.pcm,
            resampled: &mut self.resampled,
        };
        while source.pending.len() > max_pending {
            release_first(source, &mut stream.stats, &mut sink);
        }
        // Decode in-order packets right away; holes wait for their playout point.
        while let Some(next) = source.next_seq {
            if !source.pending.contains_key(&next) {
                break;
            }
            release_first(source, &mut stream.stats, &mut sink);
        }
        Ok(())
    }

    /// Emits every frame whose playout point (`now - jitter_delay`) passed.
    pub fn advance<E>(
        &mut self,
        now: Instant,
        sink: impl FnMut(&[i16]) -> Result<(), E>,
    ) -> Result<(), E> {
        let playout = self.position(now) - self.jitter_len;
        self.emit_until(playout, sink)
    }

    /// Ends the session at `end`: everything received is placed, the output
    /// is exactly `end - start` long (the last frame is zero-padded; the
    /// returned sample count tells the writer where to trim).
    pub fn finish<E>(
        &mut self,
        end: Instant,
        mut sink: impl FnMut(&[i16]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let end_pos = self.position(end);
        self.release_all(end_pos);
        let whole = end_pos - end_pos % self.frame_len as i64;
        self.emit_until(whole, &mut sink)?;
        if self.emitted < end_pos {
            self.emit_frame(&mut sink)?;
        }
        Ok(end_pos.max(0) as u64)
    }

    fn release_all(&mut self, limit: i64) {
        let rate = self.config.output_rate;
        for stream in &mut self.streams {
            if let Some(source) = stream.source.as_mut() {
                let mut sink = Writer {
                    channels: &mut self.channels,
                    emitted: self.emitted,
                    max_ahead: self.max_ahead,
                    channel: stream.config.channel,
                    rate,
                    pcm: &mut self.pcm,
                    resampled: &mut self.resampled,
                };
                release(source, &mut stream.stats, &mut sink, limit);
            }
        }
    }

    fn emit_until<E>(
        &mut self,
        playout: i64,
        mut sink: impl FnMut(&[i16]) -> Result<(), E>,
    ) -> Result<(), E> {
        if playout < self.emitted + self.frame_len as i64 {
            return Ok(());
        }
        self.release_all(playout);
        while self.emitted + self.frame_len as i64 <= playout {
            self.emit_frame(&mut sink)?;
        }
        Ok(())
    }

    fn emit_frame<E>(&mut self, sink: &mut impl FnMut(&[i16]) -> Result<(), E>) -> Result<(), E> {
        self.frame.clear();
        for _ in 0..self.frame_len {
            for channel in &mut self.channels {
                self.frame.push(channel.pop_front().unwrap_or(0));
            }
        }
        self.emitted += self.frame_len as i64;
        sink(&self.frame)
    }
}

/// Whether resync candidates agree on one new timestamp-to-time mapping.
fn consistent(source: &Source, rate: u32) -> bool {
    let offsets = source.candidates.iter().map(|c| {
        c.arrival_pos
            .saturating_sub(source.position(c.packet.ext_ts, rate))
    });
    let (min, max) = offsets.fold((i64::MAX, i64::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
    // Within 30 ms of each other: normal jitter, not a burst after a stall.
    max.saturating_sub(min) <= i64::from(rate) * 30 / 1000
}

/// Re-anchors a source on its candidates (least delayed one wins).
fn resync(source: &mut Source, rate: u32) {
    let candidates = std::mem::take(&mut source.candidates);
    let Some(first) = candidates.first() else {
        return;
    };
    let base = first.packet.ext_ts;
    let anchor = candidates
        .iter()
        .map(|c| {
            let delta = i128::from(c.packet.ext_ts) - i128::from(base);
            let samples = delta * i128::from(rate) / i128::from(source.anchor_clock.max(1));
            (i128::from(c.arrival_pos) - samples).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
                as i64
        })
        .min()
        .unwrap_or(first.arrival_pos);
    source.anchor_ts = base;
    source.anchor_pos = anchor;
    source.next_seq = candidates.iter().map(|c| c.ext_seq).min();
    source.last_end = None;
    if let Some(r) = source.resampler.as_mut() {
        r.reset();
    }
    for c in candidates {
        source.pending.insert(c.ext_seq, c.packet);
    }
}

/// Where decoded audio goes: the channel buffers of the timeline.
struct Writer<'a> {
    channels: &'a mut [VecDeque<i16>],
    emitted: i64,
    max_ahead: usize,
    channel: Channel,
    rate: u32,
    pcm: &'a mut Vec<i16>,
    resampled: &'a mut Vec<i16>,
}

impl Writer<'_> {
    fn write(&mut self, pos: i64, samples: &[i16]) {
        let targets = self.channel.targets(self.channels.len());
        // Skip what was already emitted; clip what is implausibly far ahead.
        let skip = self
            .emitted
            .saturating_sub(pos)
            .clamp(0, samples.len() as i64) as usize;
        let start = pos.saturating_add(skip as i64).saturating_sub(self.emitted);
        // Negative: all of it was emitted already.
        let Ok(start) = usize::try_from(start) else {
            return;
        };
        if start >= self.max_ahead {
            return;
        }
        let take = (samples.len() - skip).min(self.max_ahead - start);
        for c in targets {
            let buf = &mut self.channels[c];
            if buf.len() < start + take {
                buf.resize(start + take, 0);
            }
            for (i, &s) in samples[skip..skip + take].iter().enumerate() {
                let slot = &mut buf[start + i];
                *slot = slot.saturating_add(s);
            }
        }
    }
}

/// Decodes pending packets (in sequence order) that start before `limit`.
fn release(source: &mut Source, stats: &mut StreamStats, sink: &mut Writer<'_>, limit: i64) {
    while let Some((_, p)) = source.pending.first_key_value() {
        if source.position(p.ext_ts, sink.rate) >= limit {
            break;
        }
        release_first(source, stats, sink);
    }
}

fn release_first(source: &mut Source, stats: &mut StreamStats, sink: &mut Writer<'_>) {
    let Some((seq, packet)) = source.pending.pop_first() else {
        return;
    };
    if let Some(next) = source.next_seq
        && seq > next
    {
        stats.lost += seq - next;
    }
    source.next_seq = Some(seq + 1);
    source.released_any = true;
    if packet.pt.codec == Codec::TelephoneEvent {
        return;
    }
    let pos = source.position(packet.ext_ts, sink.rate);
    if let Err(e) = decode_into(source, &packet, pos, sink) {
        stats.decode_errors += 1;
        let _ = e;
    }
}

fn decode_into(
    source: &mut Source,
    packet: &Pending,
    pos: i64,
    sink: &mut Writer<'_>,
) -> Result<(), DecodeError> {
    if source.decoder.as_ref().map(Decoder::codec) != Some(packet.pt.codec) {
        source.decoder = Decoder::new(packet.pt.codec, sink.rate)?;
        source.resampler = None;
        source.last_end = None;
    }
    let Some(decoder) = source.decoder.as_mut() else {
        return Ok(());
    };
    sink.pcm.clear();
    decoder.decode(&packet.payload, sink.pcm)?;
    let pcm_rate = decoder.pcm_rate();
    let resampler = source
        .resampler
        .get_or_insert_with(|| Resampler::new(pcm_rate, sink.rate));
    if source.last_end != Some(pos) {
        // Discontinuity (loss, hold, jump): the filter history is not this audio's past.
        resampler.reset();
    }
    sink.resampled.clear();
    resampler.process(sink.pcm, sink.resampled);
    let out = std::mem::take(sink.resampled);
    sink.write(pos, &out);
    source.last_end = Some(pos.saturating_add(out.len() as i64));
    *sink.resampled = out;
    Ok(())
}
