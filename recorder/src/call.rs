//! One recorded call: its media sockets, the live segment (timeline → Opus/Ogg → encrypted
//! spool file) and segment rotation at `maxDurationSeconds`. Runs as one task that owns
//! everything, driven by datagrams, a tick and control messages from the SIP side.

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault_store::db::{AlarmSeverity, Party, ReleaseCause, now_micros};
use callvault_store::format::{RecordingWriter, WriterOptions};
use callvault_store::keys::PublicKey;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::commit::{Committer, DbSlot};
use crate::media::latch::Source;
use crate::media::rtp::{self, Packet};
use crate::media::{Latch, OpusConfig, Recording, StreamConfig, StreamId, TimelineConfig, Verdict};
use crate::metrics::{self, Metrics};
use crate::ports::{PortPair, PortPool};
use crate::spool::{AudioProgress, Ended, Manifest, Recovery, RowFacts, Spool, SpoolFile};
use crate::srtp::{Inbound, MasterKey, Rejected, Unprotected};

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
    /// The recording failed (its spool write); the recorder ends the call.
    Failed,
    /// No RTP on any stream the source sends on for the profile's media timeout.
    MediaTimeout,
    /// The source asked for RFC 4028 session timers and did not refresh the session.
    SessionTimerExpired,
    /// The recorder's in-dialog probe got 481 or 408, or no answer.
    PeerUnreachable,
}

impl Stop {
    fn release_cause(self) -> ReleaseCause {
        match self {
            Stop::Bye => ReleaseCause::Normal,
            Stop::Cancelled => ReleaseCause::Abandoned,
            Stop::AckTimeout
            | Stop::Shutdown
            | Stop::Failed
            | Stop::MediaTimeout
            | Stop::SessionTimerExpired
            | Stop::PeerUnreachable => ReleaseCause::Failure,
        }
    }

    /// The label of `callvault_recorder_sessions_ended_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Bye => "bye",
            Stop::Cancelled => "cancelled",
            Stop::AckTimeout => "ack-timeout",
            Stop::Shutdown => "shutdown",
            Stop::MediaTimeout => "media-timeout",
            Stop::SessionTimerExpired => "session-timer-expired",
            Stop::PeerUnreachable => "peer-unreachable",
            Stop::Failed => "spool-write-failed",
        }
    }

    /// The row's stop reason: set when the recorder itself ended a session, because its
    /// source had left or because the recorder stopped (its drain grace ran out with the call
    /// still live), so the recording says why it ends without a BYE.
    fn stop_reason(self) -> Option<String> {
        matches!(
            self,
            Stop::MediaTimeout | Stop::SessionTimerExpired | Stop::PeerUnreachable | Stop::Shutdown
        )
        .then(|| self.as_str().to_owned())
    }
}

/// The media inactivity check of one call: after `timeout` without RTP on any stream the
/// source sends on, the call stops and `expired` asks the SIP side to end the dialog.
pub struct MediaWatch {
    pub timeout: Duration,
    pub expired: Box<dyn FnOnce() + Send>,
}

impl std::fmt::Debug for MediaWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaWatch")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Messages from the SIP side to a call.
#[derive(Debug)]
pub enum Control {
    /// A new m-line to receive (initial offer, or added by a re-INVITE).
    /// `peer`: the address the offer names for the stream's media (see [`crate::media::latch`]).
    /// `srtp`: the source's key, for an SRTP stream.
    AddStream {
        index: usize,
        pair: PortPair,
        config: StreamConfig,
        peer: Option<IpAddr>,
        srtp: Option<MasterKey>,
    },
    /// A re-offer of the m-line: its codecs or its key may have changed, and it latches again.
    UpdateStream {
        index: usize,
        config: StreamConfig,
        peer: Option<IpAddr>,
        srtp: Option<MasterKey>,
    },
    /// The source removed the m-line (port 0).
    CloseStream {
        index: usize,
    },
    /// Metadata changed: JSON for the row and the participants.
    Metadata {
        raw: String,
        participants: Vec<Attendee>,
    },
    /// Pause (`true`) or resume the recording: paused audio is recorded as silence.
    Pause(bool),
    /// Whether the source holds the call (it sends on no stream: every stream `inactive` or
    /// `recvonly` from its side): no media is expected, so the media timeout does not run.
    Held(bool),
    Stop(Stop),
}

struct Slot {
    port: u16,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    config: StreamConfig,
    latch: Latch,
    /// An SRTP stream's decryption: nothing reaches the latch or the recording unless it
    /// authenticated.
    srtp: Option<Inbound>,
}

/// Foreign datagrams a call drops before it raises an alarm: a few strays (late packets of a
/// port's previous call) are no attack; a second of a stream's packets is.
pub const FOREIGN_ALARM_THRESHOLD: u64 = 50;

/// The alarm's type in the alarms table; its source is `call <SIP Call-ID>`.
pub const FOREIGN_ALARM: &str = "RTP_FOREIGN_SOURCE";

/// At most one log line per call and interval about its foreign datagrams.
const FOREIGN_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// SRTP datagrams a call dropped: replayed or not authentic. Logged like foreign ones.
#[derive(Debug, Default)]
struct SrtpDrops {
    unlogged: u64,
    logged_at: Option<Instant>,
}

/// Datagrams a call dropped because they came from a source its stream is not latched to.
#[derive(Debug, Default)]
struct Foreign {
    total: u64,
    /// In the live segment (written into its metadata).
    segment: u64,
    last_source: Option<SocketAddr>,
    /// Dropped since the last log line, and when that was.
    unlogged: u64,
    logged_at: Option<Instant>,
    /// The alarm, raised in the background; cleared when the call ends.
    alarm: Option<JoinHandle<()>>,
}

struct Segment {
    manifest: Manifest,
    recording: Recording<AudioProgress<RecordingWriter<SpoolFile>>>,
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
    on_hold: bool,
    /// When media last arrived, or when the media timeout last restarted (call start, end
    /// of a hold).
    last_media: Instant,
    foreign: Foreign,
    srtp_drops: SrtpDrops,
    /// Why recording failed: the call ends and the source is sent a BYE.
    failed: Option<String>,
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
            on_hold: false,
            last_media: Instant::now(),
            foreign: Foreign::default(),
            srtp_drops: SrtpDrops::default(),
            failed: None,
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
        let writer = AudioProgress::new(
            writer,
            ctx.spool.create_audio_notes(manifest.id),
            ctx.chunk_size,
        );
        let started = Instant::now();
        let timeline = TimelineConfig {
            channels: usize::from(manifest.row.channels),
            ..TimelineConfig::default()
        };
        let mut recording = Recording::new(timeline, ctx.opus.clone(), started, writer)
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

    /// Runs the call until it is stopped, until `watch` finds its media gone, or until its
    /// recording fails; every segment ends up with the committer. Returns why recording
    /// failed, if it did: the source must be told the call is no longer recorded.
    pub async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        watch: Option<MediaWatch>,
    ) -> Option<String> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 2048];
        let mut stamps = crate::ports::stamp_buffer();
        let stop = loop {
            if self.failed.is_some() {
                break Stop::Failed;
            }
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
                    if let Some(w) = &watch
                        && self.media_expired(w.timeout)
                    {
                        break Stop::MediaTimeout;
                    }
                    if self.encoding.is_none() {
                        self = self.on_tick().await;
                    }
                }
            }
        };
        metrics::ended(&self.ctx.metrics, stop.as_str());
        if stop == Stop::MediaTimeout
            && let Some(w) = watch
        {
            tracing::warn!(timeout = ?w.timeout, "no media from the source: ending the session");
            (w.expired)();
        }
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
            return None;
        };
        for slot in call.slots.drain(..).flatten() {
            let port = slot.port;
            drop(slot);
            call.ctx.ports.release(port);
        }
        if let Some(raised) = call.foreign.alarm.take() {
            call.clear_foreign_alarm(raised);
        }
        call.failed.take()
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
            self.write_failed(seg.manifest, e);
            self.held.clear();
            return;
        }
        self.segment = Some(seg);
        for held in std::mem::take(&mut self.held) {
            self.on_datagram(held.index, &held.data, held.arrival);
        }
    }

    /// The spool cannot be written: what was written is committed `incomplete` with the
    /// error, and the call ends (a recording that silently stops while the call goes on is
    /// the loss this prevents).
    fn write_failed(&mut self, manifest: Manifest, error: String) {
        tracing::error!(recording = %manifest.id, %error,
            "spool write failed: keeping what was written and ending the call");
        metrics::inc(&self.ctx.metrics.spool_write_failures);
        let recovered = self
            .ctx
            .spool
            .recover(manifest, Recovery::WriteFailed(error.clone()));
        self.ctx.committer.submit(recovered);
        self.failed = Some(format!("spool write failed: {error}"));
    }

    fn on_control(&mut self, msg: Control) {
        match msg {
            Control::AddStream {
                index,
                pair,
                config,
                peer,
                srtp,
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
                    latch: Latch::new(peer),
                    srtp: srtp.map(Inbound::new),
                });
            }
            Control::UpdateStream {
                index,
                config,
                peer,
                srtp,
            } => {
                if let Some(Some(slot)) = self.slots.get_mut(index) {
                    slot.config = config.clone();
                    slot.latch.relatch(peer);
                    // The same key keeps its state (rollover counters, replay windows).
                    if slot.srtp.as_ref().map(Inbound::key) != srtp.as_ref() {
                        slot.srtp = srtp.map(Inbound::new);
                    }
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
                let since_start = self.segment.as_ref().map_or(0, |seg| {
                    i64::try_from(seg.started.elapsed().as_millis()).unwrap_or(i64::MAX)
                });
                let participants =
                    stamp_attendance(&self.row.participants, participants, Some(since_start));
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
            Control::Held(held) => {
                if held != self.on_hold {
                    tracing::info!(
                        held,
                        "the source {} the call",
                        if held { "holds" } else { "resumes" }
                    );
                    // Media is expected again from now, not from before the hold.
                    self.last_media = Instant::now();
                }
                self.on_hold = held;
            }
            Control::Stop(_) => {}
        }
    }

    /// Whether the source sent nothing for `timeout` on a stream it sends on. A held call, or
    /// one with no stream left, expects no media.
    fn media_expired(&self, timeout: Duration) -> bool {
        let expecting = !self.on_hold && self.slots.iter().any(Option::is_some);
        expecting && self.last_media.elapsed() >= timeout
    }

    /// Reads every datagram waiting on the media sockets (non-blocking), stream by stream.
    /// RTCP is read and dropped: tolerated, not needed. Each RTP datagram the stream's latch
    /// admits goes to the timeline with the time the kernel received it, not the time of this
    /// read; the others are dropped as foreign.
    fn drain_sockets(&mut self, buf: &mut [u8], control: &mut [u8]) {
        for index in 0..self.slots.len() {
            if self.held.len() >= MAX_HELD {
                return;
            }
            let mut errors = 0;
            while let Some(slot) = self.slots[index].as_mut() {
                while let Ok((len, from)) = slot.rtcp.recv_from(buf) {
                    // SRTCP is authenticated (and counted when it is not), then dropped as
                    // RTCP is: the recording needs none of it.
                    if let Some(Err(r)) = slot.srtp.as_mut().map(|s| s.unprotect_rtcp(&buf[..len]))
                    {
                        self.on_srtp_rejected(index, Some(from), r);
                        break;
                    }
                }
                let Some(slot) = self.slots[index].as_mut() else {
                    break;
                };
                match crate::ports::recv_stamped(&slot.rtp, buf, control) {
                    Ok((len, from, arrival)) => {
                        let clear = match slot.srtp.as_mut().map(|s| s.unprotect(&buf[..len])) {
                            None => None,
                            Some(Ok(Unprotected::Rtp(packet))) => Some(packet),
                            Some(Ok(Unprotected::Rtcp)) => continue,
                            Some(Err(r)) => {
                                self.on_srtp_rejected(index, from, r);
                                continue;
                            }
                        };
                        let data = clear.as_deref().unwrap_or(&buf[..len]);
                        match admit(slot, from, data) {
                            Verdict::Foreign { latched } => self.on_foreign(index, from, latched),
                            verdict => {
                                log_latch(index, from, verdict, slot.latch.source());
                                self.last_media = self.last_media.max(arrival);
                                self.on_datagram(index, data, arrival);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP errors and the like are reported once: the socket may still hold
                    // datagrams behind them. A socket that keeps failing waits for the next tick.
                    Err(_) if errors < 8 => errors += 1,
                    Err(_) => break,
                }
            }
        }
    }

    /// Counts and logs (rate-limited) a foreign datagram; past the threshold, raises the alarm.
    fn on_foreign(&mut self, index: usize, from: Option<SocketAddr>, latched: Source) {
        metrics::inc(&self.ctx.metrics.rtp_foreign);
        let f = &mut self.foreign;
        f.total += 1;
        f.segment += 1;
        f.unlogged += 1;
        f.last_source = from;
        let now = Instant::now();
        if f.logged_at
            .is_none_or(|t| now.duration_since(t) >= FOREIGN_LOG_INTERVAL)
        {
            tracing::warn!(stream = index, source = ?from, latched = %latched.address,
                dropped = f.unlogged, "RTP from a source the stream is not latched to: dropped");
            f.unlogged = 0;
            f.logged_at = Some(now);
        }
        if f.alarm.is_none() && f.total >= FOREIGN_ALARM_THRESHOLD {
            metrics::inc(&self.ctx.metrics.rtp_foreign_alarms);
            let message = format!(
                "Foreign RTP on call {}: {} datagrams dropped, the last from {}; the stream \
                 records only its latched source {} (a spoof of that address needs SRTP to stop)",
                self.row.sip_call_id,
                f.total,
                from.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string()),
                latched.address,
            );
            tracing::error!(alarm = FOREIGN_ALARM, "{message}");
            let (db, tenant, source) = (
                self.ctx.db.clone(),
                self.ctx.tenant.clone(),
                alarm_source(&self.row.sip_call_id),
            );
            f.alarm = Some(tokio::spawn(async move {
                let raised = match db.get().await {
                    Ok(db) => crate::alarms::raise(
                        &db,
                        &tenant,
                        FOREIGN_ALARM,
                        &source,
                        AlarmSeverity::Major,
                        &message,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = raised {
                    tracing::error!(error = %e, "the foreign-RTP alarm could not be stored");
                }
            }));
        }
    }

    /// Counts and logs (rate-limited) an SRTP datagram that was replayed or did not
    /// authenticate: it never reaches the latch or the recording.
    fn on_srtp_rejected(&mut self, index: usize, from: Option<SocketAddr>, why: Rejected) {
        let metrics = &self.ctx.metrics;
        metrics::inc(match why {
            Rejected::Replayed => &metrics.srtp_replayed,
            Rejected::Unauthenticated => &metrics.srtp_unauthenticated,
        });
        let d = &mut self.srtp_drops;
        d.unlogged += 1;
        let now = Instant::now();
        if d.logged_at
            .is_none_or(|t| now.duration_since(t) >= FOREIGN_LOG_INTERVAL)
        {
            tracing::warn!(stream = index, source = ?from, last = ?why, dropped = d.unlogged,
                "SRTP packets replayed or failing authentication: dropped");
            d.unlogged = 0;
            d.logged_at = Some(now);
        }
    }

    /// The call ended: its foreign-RTP alarm clears (the recording's metadata keeps the count).
    fn clear_foreign_alarm(&self, raised: JoinHandle<()>) {
        let (db, tenant, source) = (
            self.ctx.db.clone(),
            self.ctx.tenant.clone(),
            alarm_source(&self.row.sip_call_id),
        );
        tokio::spawn(async move {
            let _ = raised.await;
            let text = format!("Foreign RTP ({source}) cleared: the call ended");
            let cleared = match db.get().await {
                Ok(db) => crate::alarms::clear(&db, &tenant, FOREIGN_ALARM, &source, &text)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = cleared {
                tracing::warn!(error = %e, "the foreign-RTP alarm could not be cleared");
            }
        });
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
        // The next segment starts with whoever is still on the call.
        for p in &mut self.row.participants {
            p.joined_ms = None;
            p.left_ms = p.left_ms.map(|_| 0);
        }
        match self.open_segment() {
            Ok(seg) => self.segment = Some(seg),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the next segment: ending the call");
                metrics::inc(&self.ctx.metrics.spool_write_failures);
                self.failed = Some(format!("cannot open the next segment: {e}"));
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
        let dropped = std::mem::take(&mut self.foreign.segment);
        if dropped > 0 {
            manifest.row.raw_metadata = with_foreign(
                &manifest.row.raw_metadata,
                dropped,
                self.foreign.last_source,
            );
        }
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
                writer
                    .into_inner()
                    .finish(&digest)
                    .map_err(|e| e.to_string())
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
                    stop_reason: stop.stop_reason(),
                });
                if let Err(e) = ctx.spool.save(&manifest) {
                    tracing::error!(error = %e, "cannot record the segment's end in the spool");
                }
                manifest
            }
            Err(e) => {
                tracing::error!(error = %e, "recording could not be finished: keeping what was written");
                metrics::inc(&ctx.metrics.spool_write_failures);
                ctx.spool.recover(manifest, Recovery::WriteFailed(e))
            }
        };
        tracing::info!(recording = %manifest.id, ?stop, "segment ended");
        ctx.committer.submit(manifest);
    }
}

/// What the foreign-RTP alarm of a call is about.
fn alarm_source(sip_call_id: &str) -> String {
    format!("call {sip_call_id}")
}

/// The latch's verdict on a datagram from `from`. Only RTP with one of the stream's payload
/// types may latch; anything else (RTCP, garbage, other payload types) passes to the timeline,
/// which counts and drops it, when it comes from the latched source or before any latch.
fn admit(slot: &mut Slot, from: Option<SocketAddr>, data: &[u8]) -> Verdict {
    let recordable = match rtp::parse(data) {
        Ok(Packet::Rtp(p)) if slot.config.lookup(p.payload_type).is_some() => Some(p.ssrc),
        _ => None,
    };
    match (from, recordable, slot.latch.source()) {
        (Some(from), Some(ssrc), _) => slot.latch.check(from, ssrc),
        (_, _, None) => Verdict::Accept,
        (Some(from), None, Some(_)) if slot.latch.admits(from) => Verdict::Accept,
        (_, _, Some(latched)) => Verdict::Foreign { latched },
    }
}

/// Logs a latch or SSRC change (accepted packets are not logged).
fn log_latch(index: usize, from: Option<SocketAddr>, verdict: Verdict, now: Option<Source>) {
    let basis = now.map(|s| s.basis);
    match verdict {
        Verdict::Latched { replaced: None } => {
            tracing::info!(stream = index, source = ?from, ?basis, "RTP latched")
        }
        Verdict::Latched {
            replaced: Some(old),
        } => tracing::warn!(stream = index, source = ?from, ?basis, replaced = %old.address,
            "RTP latched to a better source (the one it replaces was recorded until now)"),
        Verdict::SsrcChanged { from: old } => {
            tracing::info!(stream = index, old_ssrc = old, ssrc = ?now.map(|s| s.ssrc),
                "the latched source changed its SSRC")
        }
        Verdict::Accept | Verdict::Foreign { .. } => {}
    }
}

/// The row's metadata JSON with the count of foreign datagrams the segment dropped and the last
/// one's source, so the recording itself shows it was targeted.
fn with_foreign(raw: &str, dropped: u64, last: Option<SocketAddr>) -> String {
    let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_str(raw) else {
        tracing::warn!(
            dropped,
            "metadata is not a JSON object: foreign RTP count not recorded in it"
        );
        return raw.to_owned();
    };
    doc.insert(
        "rtpForeign".to_owned(),
        serde_json::json!({
            "dropped": dropped,
            "lastSource": last.map(|a| a.to_string()),
        }),
    );
    serde_json::Value::Object(doc).to_string()
}

/// A participant as the metadata states them now; the call stamps when they came and went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    pub party: Party,
    /// Still in the session (the metadata gave them no `disassociate-time`).
    pub present: bool,
}

/// The row's participants with their windows (F-40: a user sees the part of a meeting they
/// attended). `now_ms` is the time since the segment started, `None` at the start: a party
/// first seen later joined then; one the metadata says left, left when it first said so; one
/// back again is on until the end (one window per party, from first join).
pub fn stamp_attendance(previous: &[Party], now: Vec<Attendee>, now_ms: Option<i64>) -> Vec<Party> {
    now.into_iter()
        .map(|Attendee { mut party, present }| {
            let before = previous
                .iter()
                .find(|p| p.number == party.number && p.name == party.name);
            party.joined_ms = match before {
                Some(p) => p.joined_ms,
                None => now_ms,
            };
            party.left_ms = if present {
                None
            } else {
                before.and_then(|p| p.left_ms).or(now_ms).or(Some(0))
            };
            party
        })
        .collect()
}
