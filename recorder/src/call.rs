//! One recorded call: its media sockets, the live segment (timeline → Opus/Ogg → encrypted
//! spool file) and segment rotation at `maxDurationSeconds`. Runs as one task that owns
//! everything, driven by datagrams, a tick and control messages from the SIP side.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault_store::db::{Party, ReleaseCause, now_micros};
use callvault_store::format::{RecordingWriter, WriterOptions};
use callvault_store::keys::PublicKey;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::commit::{Committer, DbSlot};
use crate::media::{OpusConfig, Recording, StreamConfig, StreamId, TimelineConfig};
use crate::metrics::{self, Metrics};
use crate::ports::{PortPair, PortPool};
use crate::spool::{Ended, Manifest, RowFacts, Spool, trim_to_whole_chunks};

/// What the recording side shares between calls.
#[derive(Debug)]
pub struct CallContext {
    pub tenant: String,
    pub key: PublicKey,
    pub opus: OpusConfig,
    pub chunk_size: u32,
    pub max_duration: Duration,
    pub spool: Spool,
    pub committer: Committer,
    pub db: Arc<DbSlot>,
    pub metrics: Arc<Metrics>,
    pub ports: Arc<PortPool>,
    /// Encoding turns: the calls' Opus encoding, encryption and spool writes run on blocking
    /// threads, at most this many at once (one per core), so the runtime threads that read
    /// the media sockets and answer SIP never queue behind CPU-heavy work.
    pub encoders: Semaphore,
}

/// Why the call's recording stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Bye,
    Cancelled,
    AckTimeout,
    /// The recorder is shutting down with the call still live (drain grace ran out).
    Shutdown,
}

impl Stop {
    fn release_cause(self) -> ReleaseCause {
        match self {
            Stop::Bye => ReleaseCause::Normal,
            Stop::Cancelled => ReleaseCause::Abandoned,
            Stop::AckTimeout | Stop::Shutdown => ReleaseCause::Failure,
        }
    }
}

/// Messages from the SIP side to a call.
#[derive(Debug)]
pub enum Control {
    /// A new m-line to receive (initial offer, or added by a re-INVITE).
    AddStream {
        index: usize,
        pair: PortPair,
        config: StreamConfig,
    },
    /// The m-line's codecs changed.
    UpdateStream {
        index: usize,
        config: StreamConfig,
    },
    /// The source removed the m-line (port 0).
    CloseStream {
        index: usize,
    },
    /// Metadata changed: JSON for the row and the participants.
    Metadata {
        raw: String,
        participants: Vec<Party>,
    },
    /// Pause (`true`) or resume the recording: paused audio is recorded as silence.
    Pause(bool),
    Stop(Stop),
}

struct Slot {
    port: u16,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    config: StreamConfig,
}

struct Segment {
    manifest: Manifest,
    recording: Recording<RecordingWriter<File>>,
    started: Instant,
    /// Stream id in this segment's timeline, per m-line.
    streams: Vec<Option<StreamId>>,
}

/// Processing tick: the media sockets are drained and audio whose playout point passed is
/// encoded this often. The sockets are read on the tick rather than woken per packet: a
/// call's task then runs 25 times a second instead of 100 (two streams of 20 ms packets), and
/// a packet waits at most one tick, well inside the timeline's jitter delay (120 ms).
const TICK: Duration = Duration::from_millis(40);

/// Datagrams kept while the segment is away being encoded; past this (an encoder backlog of
/// seconds) the rest wait in the sockets' own buffers.
const MAX_HELD: usize = 1024;

/// A segment on an encoder thread, and what its encoding returned.
type Encoding = JoinHandle<(Segment, Result<(), String>)>;

/// A datagram read while its segment was being encoded: pushed when the segment is back.
struct Held {
    index: usize,
    data: Vec<u8>,
    arrival: Instant,
}

pub struct Call {
    ctx: Arc<CallContext>,
    row: RowFacts,
    slots: Vec<Option<Slot>>,
    segment: Option<Segment>,
    /// The live segment while it is away on an encoder thread (`segment` is `None` then).
    encoding: Option<Encoding>,
    held: Vec<Held>,
    paused: bool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("call_id", &self.row.sip_call_id)
            .finish_non_exhaustive()
    }
}

impl Call {
    /// Opens the first segment (manifest, then the encrypted spool file) so a failure shows
    /// before the call is answered.
    pub fn start(ctx: Arc<CallContext>, row: RowFacts) -> Result<Call, String> {
        let mut call = Call {
            ctx,
            row,
            slots: Vec::new(),
            segment: None,
            encoding: None,
            held: Vec::new(),
            paused: false,
        };
        call.segment = Some(call.open_segment()?);
        Ok(call)
    }

    fn open_segment(&mut self) -> Result<Segment, String> {
        let ctx = &self.ctx;
        let manifest = Manifest {
            tenant: ctx.tenant.clone(),
            id: Uuid::new_v4(),
            row: self.row.clone(),
            ended: None,
        };
        ctx.spool.save(&manifest).map_err(|e| e.to_string())?;
        let file = ctx
            .spool
            .create_media(manifest.id)
            .map_err(|e| e.to_string())?;
        let writer = RecordingWriter::new(
            file,
            &ctx.key,
            WriterOptions {
                chunk_size: ctx.chunk_size,
            },
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut recording =
            Recording::new(TimelineConfig::default(), ctx.opus.clone(), started, writer)
                .map_err(|e| e.to_string())?;
        let streams = self
            .slots
            .iter()
            .map(|s| s.as_ref().map(|s| recording.add_stream(s.config.clone())))
            .collect();
        if self.paused {
            recording.set_paused(true, started);
        }
        metrics::inc(&ctx.metrics.segments_total);
        let db = ctx.db.clone();
        let (tenant, id, new) = (
            manifest.tenant.clone(),
            manifest.id,
            manifest.row.new_recording(manifest.id),
        );
        // The row shows the call as active; when the database is down the committer creates
        // it later, so the call does not wait for it.
        tokio::spawn(async move {
            let created = match db.get().await {
                Ok(db) => db.create_recording(&tenant, &new).await.map(|_| ()),
                Err(e) => Err(callvault_store::db::DbError::Conflict(e.to_string())),
            };
            if let Err(e) = created {
                tracing::warn!(recording = %id, error = %e, "row not created at call start; the commit will create it");
            }
        });
        tracing::info!(recording = %manifest.id, segment = manifest.row.segment, "segment started");
        Ok(Segment {
            manifest,
            recording,
            started,
            streams,
        })
    }

    /// Runs the call until it is stopped; every segment ends up with the committer.
    pub async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 2048];
        let mut stamps = crate::ports::stamp_buffer();
        let stop = loop {
            tokio::select! {
                biased;
                msg = control.recv() => match msg {
                    Some(Control::Stop(stop)) => break stop,
                    None => break Stop::Shutdown,
                    Some(msg) => {
                        // Control changes the segment: it must be back from its encoder.
                        self.settle().await;
                        self.on_control(msg);
                    }
                },
                done = async { self.encoding.as_mut().expect("guarded").await },
                    if self.encoding.is_some() =>
                {
                    self.encoding = None;
                    self.encoded(done);
                }
                _ = tick.tick() => {
                    // Reading the sockets is cheap and stays on the runtime, so they never
                    // overflow while encoders are busy; encoding goes to an encoder thread.
                    self.drain_sockets(&mut buf, &mut stamps);
                    if self.encoding.is_none() {
                        self = self.on_tick().await;
                    }
                }
            }
        };
        self.settle().await;
        // What arrived since the last tick belongs to the recording too.
        self.drain_sockets(&mut buf, &mut stamps);
        let end = Instant::now();
        // Sealing ends with an fsync: on a busy disk it can take long, and it must not hold a
        // runtime thread that SIP and the other calls' media need (a burst of BYEs would
        // otherwise stall every call).
        let finished = tokio::task::spawn_blocking(move || {
            self.finish_segment(end, stop);
            self
        })
        .await;
        let Ok(mut call) = finished else {
            tracing::error!("sealing the recording failed");
            return;
        };
        for slot in call.slots.drain(..).flatten() {
            let port = slot.port;
            drop(slot);
            call.ctx.ports.release(port);
        }
    }

    /// Waits for the segment to come back from its encoder, if it is away.
    async fn settle(&mut self) {
        if let Some(encoding) = self.encoding.take() {
            let done = encoding.await;
            self.encoded(done);
        }
    }

    /// Takes the segment back from its encoder and pushes what arrived meanwhile.
    fn encoded(&mut self, done: Result<(Segment, Result<(), String>), tokio::task::JoinError>) {
        let (seg, result) = match done {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: the spool keeps the segment for the next start.
            Err(_) => return,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "spool write failed: keeping what was written");
            self.ctx
                .committer
                .submit(recover(&self.ctx.spool, seg.manifest));
            self.held.clear();
            return;
        }
        self.segment = Some(seg);
        for held in std::mem::take(&mut self.held) {
            self.on_datagram(held.index, &held.data, held.arrival);
        }
    }

    fn on_control(&mut self, msg: Control) {
        match msg {
            Control::AddStream {
                index,
                pair,
                config,
            } => {
                let (rtp, rtcp) = (pair.rtp, pair.rtcp);
                if self.slots.len() <= index {
                    self.slots.resize_with(index + 1, || None);
                }
                if let Some(seg) = self.segment.as_mut() {
                    let id = seg.recording.add_stream(config.clone());
                    if seg.streams.len() <= index {
                        seg.streams.resize(index + 1, None);
                    }
                    seg.streams[index] = Some(id);
                }
                self.slots[index] = Some(Slot {
                    port: pair.port,
                    rtp,
                    rtcp,
                    config,
                });
            }
            Control::UpdateStream { index, config } => {
                if let Some(Some(slot)) = self.slots.get_mut(index) {
                    slot.config = config.clone();
                }
                if let Some(seg) = self.segment.as_mut()
                    && let Some(Some(id)) = seg.streams.get(index)
                {
                    let _ = seg
                        .recording
                        .timeline_mut()
                        .set_payload_types(*id, config.payload_types);
                }
            }
            Control::CloseStream { index } => {
                if let Some(slot) = self.slots.get_mut(index).and_then(Option::take) {
                    let port = slot.port;
                    drop(slot);
                    self.ctx.ports.release(port);
                }
                if let Some(seg) = self.segment.as_mut()
                    && let Some(s) = seg.streams.get_mut(index)
                {
                    *s = None;
                }
            }
            Control::Metadata { raw, participants } => {
                self.row.raw_metadata = raw.clone();
                self.row.participants = participants.clone();
                if let Some(seg) = self.segment.as_mut() {
                    seg.manifest.row.raw_metadata = raw.clone();
                    seg.manifest.row.participants = participants.clone();
                    let (db, tenant, id) = (
                        self.ctx.db.clone(),
                        self.ctx.tenant.clone(),
                        seg.manifest.id,
                    );
                    tokio::spawn(async move {
                        if let Ok(db) = db.get().await
                            && let Err(e) = db
                                .update_recording_metadata(&tenant, id, &participants, &raw)
                                .await
                        {
                            tracing::debug!(error = %e, "metadata update deferred to the commit");
                        }
                    });
                }
            }
            Control::Pause(paused) => {
                if paused != self.paused {
                    tracing::info!(
                        paused,
                        "recording {}",
                        if paused { "paused" } else { "resumed" }
                    );
                }
                self.paused = paused;
                if let Some(seg) = self.segment.as_mut() {
                    seg.recording.set_paused(paused, Instant::now());
                }
            }
            Control::Stop(_) => {}
        }
    }

    /// Reads every datagram waiting on the media sockets (non-blocking), stream by stream.
    /// RTCP is read and dropped: tolerated, not needed. Each RTP datagram goes to the timeline
    /// with the time the kernel received it, not the time of this read.
    fn drain_sockets(&mut self, buf: &mut [u8], control: &mut [u8]) {
        for index in 0..self.slots.len() {
            if self.held.len() >= MAX_HELD {
                return;
            }
            let mut errors = 0;
            while let Some(slot) = &self.slots[index] {
                while slot.rtcp.recv_from(buf).is_ok() {}
                match crate::ports::recv_stamped(&slot.rtp, buf, control) {
                    Ok((len, arrival)) => self.on_datagram(index, &buf[..len], arrival),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP errors and the like are reported once: the socket may still hold
                    // datagrams behind them. A socket that keeps failing waits for the next tick.
                    Err(_) if errors < 8 => errors += 1,
                    Err(_) => break,
                }
            }
        }
    }

    fn on_datagram(&mut self, index: usize, data: &[u8], arrival: Instant) {
        if self.encoding.is_some() {
            self.held.push(Held {
                index,
                data: data.to_vec(),
                arrival,
            });
            return;
        }
        metrics::inc(&self.ctx.metrics.rtp_packets);
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        let Some(Some(stream)) = seg.streams.get(index) else {
            return;
        };
        if let Err(e) = seg.recording.push(*stream, data, arrival) {
            tracing::debug!(error = %e, "datagram dropped");
        }
    }

    /// Rolls over to a new segment at the maximum duration, or hands the segment to an
    /// encoder thread to encode what passed its playout point.
    async fn on_tick(mut self) -> Self {
        let now = Instant::now();
        let Some(seg) = self.segment.as_ref() else {
            return self;
        };
        if now.duration_since(seg.started) >= self.ctx.max_duration {
            // Sealing and opening segments fsync: off the runtime, like the call's end.
            let rolled = tokio::task::spawn_blocking(move || {
                self.roll_over(now);
                self
            })
            .await;
            return match rolled {
                Ok(call) => call,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
        }
        let Some(mut seg) = self.segment.take() else {
            return self;
        };
        let ctx = self.ctx.clone();
        self.encoding = Some(tokio::spawn(async move {
            let Ok(_turn) = ctx.encoders.acquire().await else {
                return (seg, Ok(()));
            };
            match tokio::task::spawn_blocking(move || {
                let result = seg.recording.advance(now).map_err(|e| e.to_string());
                (seg, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }));
        self
    }

    /// Ends the live segment and continues the call in a new one (`maxDurationSeconds`).
    fn roll_over(&mut self, now: Instant) {
        tracing::info!("maximum duration reached: continuing in a new segment");
        self.finish_segment(now, Stop::Bye);
        self.row.segment += 1;
        self.row.start_time = now_micros();
        match self.open_segment() {
            Ok(seg) => self.segment = Some(seg),
            Err(e) => tracing::error!(error = %e, "cannot open the next segment"),
        }
    }

    /// Ends the live segment at `end` and hands it to the committer.
    fn finish_segment(&mut self, end: Instant, stop: Stop) {
        let Some(seg) = self.segment.take() else {
            return;
        };
        let ctx = &self.ctx;
        let Segment {
            mut manifest,
            recording,
            started,
            ..
        } = seg;
        let end_time = manifest.row.start_time
            + i64::try_from(end.saturating_duration_since(started).as_micros()).unwrap_or(0);
        // The seal covers the call's details as its row will hold them (recording format §5).
        let digest = manifest
            .row
            .new_recording(manifest.id)
            .sealed_digest(end_time);
        let metadata_digest = hex::encode(digest);
        let sealed = recording
            .finish(end)
            .map_err(|e| e.to_string())
            .and_then(|(writer, summary)| {
                for s in &summary.streams {
                    metrics::add(&ctx.metrics.rtp_lost, s.lost);
                    metrics::add(&ctx.metrics.rtp_late, s.late);
                    metrics::add(&ctx.metrics.rtp_malformed, s.malformed);
                }
                writer.finish(&digest).map_err(|e| e.to_string())
            })
            .and_then(|(mut file, summary)| {
                file.flush()
                    .and_then(|()| file.sync_data())
                    .map_err(|e| e.to_string())?;
                Ok(summary)
            });
        manifest = match sealed {
            Ok(summary) => {
                manifest.ended = Some(Ended::Sealed {
                    end_time,
                    release_cause: stop.release_cause(),
                    sha256: hex::encode(summary.plaintext_sha256),
                    metadata_digest,
                    signature: summary.seal.to_hex(),
                    raw_metadata: manifest.row.raw_metadata.clone(),
                    participants: manifest.row.participants.clone(),
                });
                if let Err(e) = ctx.spool.save(&manifest) {
                    tracing::error!(error = %e, "cannot record the segment's end in the spool");
                }
                manifest
            }
            Err(e) => {
                tracing::error!(error = %e, "recording could not be finished: keeping what was written");
                recover(&ctx.spool, manifest)
            }
        };
        tracing::info!(recording = %manifest.id, ?stop, "segment ended");
        ctx.committer.submit(manifest);
    }
}

/// Marks a segment whose writer died as recovered: its file is cut after the last whole
/// chunk and committed `incomplete`.
pub fn recover(spool: &Spool, mut manifest: Manifest) -> Manifest {
    let path = spool.media_path(manifest.id);
    match trim_to_whole_chunks(&path) {
        Ok(Some(len)) => {
            tracing::info!(recording = %manifest.id, bytes = len, "spool file recovered")
        }
        Ok(None) => tracing::warn!(recording = %manifest.id, "spool file has no complete header"),
        Err(e) => tracing::error!(recording = %manifest.id, error = %e, "spool file unreadable"),
    }
    let end_time = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .unwrap_or_else(now_micros)
        .max(manifest.row.start_time);
    manifest.ended = Some(Ended::Recovered {
        end_time,
        metadata_digest: hex::encode(
            manifest
                .row
                .new_recording(manifest.id)
                .sealed_digest(end_time),
        ),
    });
    if let Err(e) = spool.save(&manifest) {
        tracing::error!(error = %e, "cannot record the recovery in the spool");
    }
    manifest
}
