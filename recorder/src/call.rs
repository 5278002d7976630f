//! One recorded call: its media sockets, the live segment (timeline → Opus/Ogg → encrypted
//! spool file) and segment rotation at `maxDurationSeconds`. Runs as one task that owns
//! everything, driven by datagrams, a tick and control messages from the SIP side.

use std::fs::File;
use std::future::poll_fn;
use std::io::Write;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use callvault_store::db::{Party, ReleaseCause, now_micros};
use callvault_store::format::{RecordingWriter, WriterOptions, sha256};
use callvault_store::keys::PublicKey;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
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

/// Processing tick: audio whose playout point passed is encoded this often.
const TICK: Duration = Duration::from_millis(100);

pub struct Call {
    ctx: Arc<CallContext>,
    row: RowFacts,
    slots: Vec<Option<Slot>>,
    segment: Option<Segment>,
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
        let mut next = 0usize;
        let stop = loop {
            tokio::select! {
                biased;
                msg = control.recv() => match msg {
                    Some(Control::Stop(stop)) => break stop,
                    None => break Stop::Shutdown,
                    Some(msg) => self.on_control(msg),
                },
                _ = tick.tick() => self.on_tick(),
                (index, len) = recv_any(&self.slots, &mut buf, &mut next) => {
                    self.on_datagram(index, &buf[..len]);
                }
            }
        };
        self.finish_segment(Instant::now(), stop);
        for slot in self.slots.drain(..).flatten() {
            let port = slot.port;
            drop(slot);
            self.ctx.ports.release(port);
        }
    }

    fn on_control(&mut self, msg: Control) {
        match msg {
            Control::AddStream {
                index,
                pair,
                config,
            } => {
                let (Ok(rtp), Ok(rtcp)) = (
                    UdpSocket::from_std(pair.rtp),
                    UdpSocket::from_std(pair.rtcp),
                ) else {
                    tracing::error!(port = pair.port, "cannot register RTP sockets");
                    self.ctx.ports.release(pair.port);
                    return;
                };
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
            Control::Stop(_) => {}
        }
    }

    fn on_datagram(&mut self, index: usize, data: &[u8]) {
        metrics::inc(&self.ctx.metrics.rtp_packets);
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        let Some(Some(stream)) = seg.streams.get(index) else {
            return;
        };
        if let Err(e) = seg.recording.push(*stream, data, Instant::now()) {
            tracing::debug!(error = %e, "datagram dropped");
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        if now.duration_since(seg.started) >= self.ctx.max_duration {
            tracing::info!("maximum duration reached: continuing in a new segment");
            self.finish_segment(now, Stop::Bye);
            self.row.segment += 1;
            self.row.start_time = now_micros();
            match self.open_segment() {
                Ok(seg) => self.segment = Some(seg),
                Err(e) => tracing::error!(error = %e, "cannot open the next segment"),
            }
            return;
        }
        if let Err(e) = seg.recording.advance(now) {
            tracing::error!(error = %e, "spool write failed: keeping what was written");
            if let Some(seg) = self.segment.take() {
                self.ctx
                    .committer
                    .submit(recover(&self.ctx.spool, seg.manifest));
            }
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
        let metadata_digest = hex::encode(sha256(manifest.row.raw_metadata.as_bytes()));
        let sealed = recording
            .finish(end)
            .map_err(|e| e.to_string())
            .and_then(|(writer, summary)| {
                for s in &summary.streams {
                    metrics::add(&ctx.metrics.rtp_lost, s.lost);
                    metrics::add(&ctx.metrics.rtp_late, s.late);
                    metrics::add(&ctx.metrics.rtp_malformed, s.malformed);
                }
                let digest = sha256(manifest.row.raw_metadata.as_bytes());
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
        metadata_digest: hex::encode(sha256(manifest.row.raw_metadata.as_bytes())),
    });
    if let Err(e) = spool.save(&manifest) {
        tracing::error!(error = %e, "cannot record the recovery in the spool");
    }
    manifest
}

/// Receives one datagram from any stream's RTP socket (RTCP is read and dropped: tolerated,
/// not needed). Sockets are polled round-robin from `next` so no stream starves another.
async fn recv_any(slots: &[Option<Slot>], buf: &mut [u8], next: &mut usize) -> (usize, usize) {
    poll_fn(|cx| {
        let n = slots.len();
        for k in 0..n {
            let i = (*next + k) % n;
            let Some(slot) = &slots[i] else { continue };
            // RTCP first, until it would block.
            loop {
                let mut rb = ReadBuf::new(buf);
                match slot.rtcp.poll_recv_from(cx, &mut rb) {
                    Poll::Ready(_) => continue,
                    Poll::Pending => break,
                }
            }
            loop {
                let mut rb = ReadBuf::new(buf);
                match slot.rtp.poll_recv_from(cx, &mut rb) {
                    Poll::Ready(Ok(_)) => {
                        *next = i + 1;
                        return Poll::Ready((i, rb.filled().len()));
                    }
                    // ICMP errors and the like: this socket has nothing; try again.
                    Poll::Ready(Err(_)) => continue,
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    })
    .await
}
