//! One recording session end to end: timeline → stereo Opus → Ogg → `Write`.

use super::DtmfEvent;
use super::ogg::{OggError, OggOpusWriter, OpusConfig};
use super::timeline::{
    StreamConfig, StreamId, StreamStats, Timeline, TimelineConfig, TimelineError,
};
use std::io::Write;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error(transparent)]
    Timeline(#[from] TimelineError),
    #[error(transparent)]
    Ogg(#[from] OggError),
}

/// What a finished recording contains, for the database row and evidence.
#[derive(Debug, Clone)]
pub struct RecordingSummary {
    pub duration: Duration,
    pub bytes: u64,
    pub streams: Vec<StreamStats>,
    pub dtmf: Vec<DtmfEvent>,
}

/// A live recording: feed packets, advance time, finish.
#[derive(Debug)]
pub struct Recording<W: Write> {
    timeline: Timeline,
    writer: OggOpusWriter<W>,
    streams: usize,
}

impl<W: Write> Recording<W> {
    /// Starts a recording at `start`. The Opus input rate and frame follow
    /// the timeline's settings.
    pub fn new(
        timeline: TimelineConfig,
        mut opus: OpusConfig,
        start: Instant,
        out: W,
    ) -> Result<Self, MediaError> {
        let timeline = Timeline::new(timeline, start)?;
        opus.input_rate = timeline.config().output_rate;
        opus.frame_len = timeline.frame_len();
        let writer = OggOpusWriter::new(out, opus)?;
        Ok(Recording {
            timeline,
            writer,
            streams: 0,
        })
    }

    pub fn add_stream(&mut self, config: StreamConfig) -> StreamId {
        self.streams += 1;
        self.timeline.add_stream(config)
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    pub fn timeline_mut(&mut self) -> &mut Timeline {
        &mut self.timeline
    }

    /// Accepts a datagram. A malformed packet is counted and reported, and
    /// the recording carries on.
    pub fn push(
        &mut self,
        stream: StreamId,
        datagram: &[u8],
        arrival: Instant,
    ) -> Result<(), MediaError> {
        Ok(self.timeline.push(stream, datagram, arrival)?)
    }

    /// Encodes and writes everything whose playout point passed.
    pub fn advance(&mut self, now: Instant) -> Result<(), MediaError> {
        let writer = &mut self.writer;
        Ok(self
            .timeline
            .advance(now, |frame| writer.write_frame(frame))?)
    }

    /// Approximate memory held by the session apart from libopus' encoder
    /// state (see `docs`/benchmarks for the full figure).
    pub fn memory_bytes(&self) -> usize {
        self.timeline.memory_bytes()
    }

    /// Ends the recording at `end` and returns the writer and a summary.
    pub fn finish(mut self, end: Instant) -> Result<(W, RecordingSummary), MediaError> {
        let writer = &mut self.writer;
        let total = self
            .timeline
            .finish(end, |frame| writer.write_frame(frame))?;
        let rate = u64::from(self.timeline.config().output_rate);
        let streams = (0..self.streams)
            .filter_map(|i| self.timeline.stats(StreamId(i)).cloned())
            .collect();
        let dtmf = self.timeline.dtmf_events().to_vec();
        let (out, bytes) = self.writer.finish(total)?;
        Ok((
            out,
            RecordingSummary {
                duration: Duration::from_nanos(total * 1_000_000_000 / rate),
                bytes,
                streams,
                dtmf,
            },
        ))
    }
}
