//! One recording session end to end: timeline → Opus (a mono encoder per channel) → Ogg →
//! `Write`.

use super::DtmfEvent;
use super::ogg::{OggError, OggOpusWriter, OpusConfig};
use super::timeline::{
    StreamConfig, StreamId, StreamStats, Timeline, TimelineConfig, TimelineError,
};
use std::collections::VecDeque;
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
    pause: PauseTrack,
}

/// Where the recording is paused, in timeline samples: a paused frame is written as
/// silence, so the file keeps the session's length and both channels stay aligned.
#[derive(Debug, Default)]
struct PauseTrack {
    paused: bool,
    /// Changes not yet reached by the output: (timeline position, paused from there on).
    changes: VecDeque<(i64, bool)>,
    /// Timeline position of the next frame written.
    written: i64,
    frame_len: usize,
    silence: Vec<i16>,
}

impl PauseTrack {
    /// Writes `frame`, or silence when the frame starts in a paused stretch.
    fn write<W: Write>(
        &mut self,
        writer: &mut OggOpusWriter<W>,
        frame: &[i16],
    ) -> Result<(), OggError> {
        while let Some(&(at, paused)) = self.changes.front() {
            if at > self.written {
                break;
            }
            self.paused = paused;
            self.changes.pop_front();
        }
        self.written += self.frame_len as i64;
        if self.paused {
            self.silence.resize(frame.len(), 0);
            writer.write_frame(&self.silence)
        } else {
            writer.write_frame(frame)
        }
    }
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
        opus.channels = timeline.config().channels;
        let frame_len = timeline.frame_len();
        let writer = OggOpusWriter::new(out, opus)?;
        Ok(Recording {
            timeline,
            writer,
            streams: 0,
            pause: PauseTrack {
                frame_len,
                ..PauseTrack::default()
            },
        })
    }

    /// Pauses (or resumes) the recording from `at` on: paused audio is written as silence.
    /// A recording that starts paused (on-demand mode) calls this with its start instant.
    pub fn set_paused(&mut self, paused: bool, at: Instant) {
        // A frame is muted whole: the one the pause falls in is muted, the one a resume falls
        // in stays muted, so no paused audio is ever heard.
        let frame = self.pause.frame_len.max(1) as i64;
        let pos = self.timeline.position(at);
        let pos = if paused {
            pos - pos.rem_euclid(frame)
        } else {
            pos + (frame - pos.rem_euclid(frame)) % frame
        };
        self.pause
            .changes
            .push_back((pos.max(self.pause.written), paused));
    }

    /// Whether the latest pause or resume asked for a pause.
    pub fn is_paused(&self) -> bool {
        self.pause
            .changes
            .back()
            .map_or(self.pause.paused, |&(_, p)| p)
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
        let (writer, pause) = (&mut self.writer, &mut self.pause);
        Ok(self
            .timeline
            .advance(now, |frame| pause.write(writer, frame))?)
    }

    /// Approximate memory held by the session apart from libopus' encoder
    /// state (see `docs`/benchmarks for the full figure).
    pub fn memory_bytes(&self) -> usize {
        self.timeline.memory_bytes()
    }

    /// Ends the recording at `end` and returns the writer and a summary.
    pub fn finish(mut self, end: Instant) -> Result<(W, RecordingSummary), MediaError> {
        let (writer, pause) = (&mut self.writer, &mut self.pause);
        let total = self
            .timeline
            .finish(end, |frame| pause.write(writer, frame))?;
        let rate = u64::from(self.timeline.config().output_rate);
        let streams = (0..self.streams)
            .filter_map(|i| self.timeline.stats(StreamId(i)).cloned())
            .collect();
        let dtmf = self.timeline.dtmf_events().to_vec();
        let (out, bytes) = self.writer.finish(total)?;
        Ok((
            out,
            RecordingSummary {
                duration: Duration::from_secs(total / rate)
                    + Duration::from_nanos(total % rate * 1_000_000_000 / rate),
                bytes,
                streams,
                dtmf,
            },
        ))
    }
}
