//! The recording session layer: the [`SessionHandler`] the SIP server calls. An offer is
//! decided by the profile's rules, gets RTP ports from the profile's range and a recvonly
//! answer, and starts a [`Call`]; re-offers add, change or remove streams; the end of the
//! dialog finishes the recording and hands it to the committer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use callvault_config::profiles::{Conflict, Directory, Selection, ownership};
use callvault_config::rules::RecordingRules;
use callvault_config::{ChannelLayout, OtherProfile, SpoolLimits, Timestamp};
use callvault_store::db::{CallType, Db, Direction, Party};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::call::{Attendee, Call, CallContext, Control, MediaWatch, Stop, stamp_attendance};
use crate::media::{Channel, Codec, PayloadType, StreamConfig};
use crate::metadata::{self, RecordingMetadata};
use crate::metrics::{self, Metrics};
use crate::rules::{self, CallFacts, Decision, MatchedUser};
use crate::sdp::{self, AnswerParams, MediaPlan, SessionDescription};
use crate::sip::DialogId;
use crate::sip::server::{EndReason, Rejection, SessionHandler, SessionOffer};
use crate::spool::{RowFacts, SpoolLevel};

/// The profile's settings the session layer applies.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub profile: String,
    pub storage_target: String,
    pub key_id: String,
    pub media_bind: IpAddr,
    /// Address written into SDP answers.
    pub advertise: IpAddr,
    pub capacity: u32,
    pub fail_closed: bool,
    pub retention_days: u32,
    pub rules: RecordingRules,
    /// When the spool is too full to take a new call.
    pub spool: SpoolLimits,
    /// No RTP for this long on a stream the source sends on ends the session (`None`: off).
    pub media_timeout: Option<Duration>,
    /// The in-dialog OPTIONS probe's interval (`None`: off).
    pub options_probe: Option<Duration>,
    /// When the profile was created: of two profiles selecting a user, the older records them.
    pub created: Option<String>,
    /// Whether sources must, may or must not send SRTP.
    pub srtp: sdp::SrtpPolicy,
    /// How a call's streams map to its recording's channels.
    pub channels: ChannelLayout,
}

enum Entry {
    Recorded {
        control: mpsc::UnboundedSender<Control>,
        task: JoinHandle<()>,
        /// Port per offered m-line (`None`: rejected or removed).
        ports: Vec<Option<u16>>,
        session_id: u64,
        version: u64,
        /// The recording metadata as the source's documents built it up (partial updates
        /// are merged into it), and the SDP's stream labels.
        metadata: Option<RecordingMetadata>,
        labels: Vec<String>,
    },
    /// Answered without recording (rules left it out, or no capacity with fail-open).
    Unrecorded { media: usize },
}

/// How long stopping waits for sessions that are still ending.
const STOP_ALL_LIMIT: Duration = Duration::from_secs(30);

/// What a new session takes at its INVITE: replaced as a whole when the configuration
/// changes, while each live session keeps the snapshot it started with.
#[derive(Debug, Clone)]
pub struct Live {
    pub settings: Arc<SessionSettings>,
    pub ctx: Arc<CallContext>,
}

/// The recorder's [`SessionHandler`].
pub struct Recorder {
    live: RwLock<Live>,
    /// Shared by every configuration the recorder runs with.
    metrics: Arc<Metrics>,
    calls: Mutex<HashMap<DialogId, Entry>>,
    active: AtomicU32,
    /// Notified whenever a session's reservation is given back.
    released: tokio::sync::Notify,
    /// Users this profile selects that an older profile records, from the last directory
    /// pass: reported on `/status`, and not recorded here (one profile per user).
    conflicts: Mutex<Vec<Conflict>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("profile", &self.settings().profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// `GET /status`, as the operator reads it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub profile: String,
    pub active_sessions: u32,
    pub capacity: u32,
    pub draining: bool,
    pub users_matched: u32,
    pub conflicts: Vec<Conflict>,
    pub last_recording_time: Option<String>,
}

/// The matched users less those `kept` by an older profile (one profile per user).
fn without_kept(users: Vec<MatchedUser>, kept: impl Fn(&str) -> bool) -> Vec<MatchedUser> {
    users.into_iter().filter(|u| !kept(&u.user)).collect()
}

fn reject(status: u16, reason: impl Into<String>) -> Rejection {
    Rejection::new(status, reason)
}

/// The 488 of an offer none of whose streams the recorder takes. When the profile's SRTP
/// policy or the offer's keys are why, the reason phrase and a Warning say so, so that the
/// source's operator knows which way to change the offer.
fn no_stream(plans: &[MediaPlan]) -> Rejection {
    let why = plans.iter().find_map(|p| match p {
        MediaPlan::Reject { reason } => reason.refusal(),
        MediaPlan::Accept { .. } => None,
    });
    match why {
        Some(why) => reject(488, format!("Not Acceptable Here ({why})")).warning(why),
        None => reject(
            488,
            "Not Acceptable Here (no audio stream the recorder decodes)",
        ),
    }
}

/// Retry-After of a call refused for its spool: about when a freed spool is noticed.
const SPOOL_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why the spool cannot take a new call now, if it cannot. A volume that cannot be measured
/// is not refused for it: opening the call's spool files says whether it can be written.
pub fn spool_full(live: &Live) -> Option<String> {
    let space = match live.ctx.spool.space() {
        Ok(space) => space,
        Err(e) => {
            tracing::warn!(error = %e, "spool space not measured");
            return None;
        }
    };
    (SpoolLevel::of(space, &live.settings.spool) == SpoolLevel::Full).then(|| {
        format!(
            "spool full: {} MiB free, {} MiB needed",
            space.free_bytes >> 20,
            live.settings.spool.min_free_mib
        )
    })
}

impl Recorder {
    pub fn new(settings: SessionSettings, ctx: Arc<CallContext>) -> Self {
        Recorder {
            metrics: ctx.metrics.clone(),
            live: RwLock::new(Live {
                settings: Arc::new(settings),
                ctx,
            }),
            calls: Mutex::new(HashMap::new()),
            active: AtomicU32::new(0),
            released: tokio::sync::Notify::new(),
            conflicts: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<DialogId, Entry>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The settings and context sessions start with now.
    pub fn live(&self) -> Live {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn settings(&self) -> Arc<SessionSettings> {
        self.live().settings
    }

    /// New sessions take `live` from now on; live ones finish with what they started with.
    pub fn reconfigure(&self, live: Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
    }

    pub fn active_sessions(&self) -> u32 {
        self.active.load(Ordering::SeqCst)
    }

    pub fn status(&self, draining: bool) -> Status {
        let settings = self.settings();
        Status {
            profile: settings.profile.clone(),
            active_sessions: self.active_sessions(),
            capacity: settings.capacity,
            draining,
            users_matched: u32::try_from(self.metrics.users_matched.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX),
            conflicts: self
                .conflicts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            last_recording_time: self
                .metrics
                .last_recording_time()
                .and_then(|t| Timestamp::from_microsecond(t).ok())
                .map(|t| t.to_string()),
        }
    }

    /// Stops every live call (after the drain grace ran out); their recordings are committed.
    pub async fn stop_all(&self) {
        // Calls ended by BYE are out of the map but may still be sealing their segment, and
        // an INVITE may still be being answered: wait for every reservation to come back, so
        // each segment is with the committer before the recorder waits for its commits.
        let deadline = tokio::time::Instant::now() + STOP_ALL_LIMIT;
        loop {
            let released = self.released.notified();
            let entries: Vec<Entry> = self.calls().drain().map(|(_, e)| e).collect();
            for e in entries {
                if let Entry::Recorded { control, task, .. } = e {
                    let _ = control.send(Control::Stop(Stop::Shutdown));
                    let _ = task.await;
                    self.unreserve();
                    metrics::dec(&self.metrics.sessions_active);
                }
            }
            if self.active_sessions() == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    sessions = self.active_sessions(),
                    "sessions still ending at exit: the spool keeps them for the next start"
                );
                return;
            }
            // Re-checked on a short period too: a session answered meanwhile is in the map.
            let _ = tokio::time::timeout(Duration::from_millis(100), released).await;
        }
    }

    /// Reads the directory: the users the profile records (returned, for `/status`), and
    /// those of them an older profile records, kept for `/status` and left out of recording.
    pub async fn refresh_directory(
        &self,
        db: &Db,
        others: &[OtherProfile],
    ) -> Result<u32, callvault_store::db::DbError> {
        let live = self.live();
        let directory = Directory::load(db, &live.ctx.tenant).await?;
        let settings = &live.settings;
        let mut profiles: Vec<Selection> = others
            .iter()
            .filter(|p| p.name != settings.profile)
            .cloned()
            .collect();
        profiles.push(Selection {
            name: settings.profile.clone(),
            all_users: settings.rules.all_users,
            groups: settings.rules.groups.iter().cloned().collect(),
            created: settings.created.clone(),
        });
        let mine = ownership(&profiles, &directory)
            .remove(&settings.profile)
            .unwrap_or_default();
        if !mine.conflicts.is_empty() {
            tracing::warn!(
                conflicts = mine.conflicts.len(),
                "users this profile selects are recorded by an older profile (one profile per user)"
            );
        }
        *self.conflicts.lock().unwrap_or_else(|e| e.into_inner()) = mine.conflicts;
        Ok(u32::try_from(mine.users.len()).unwrap_or(u32::MAX))
    }

    /// Whether an older profile records `user` (so this one must not).
    fn kept_by_older(&self, user: &str) -> bool {
        self.conflicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|c| c.user == user)
    }

    fn reserve(&self) -> bool {
        let cap = self.settings().capacity;
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    fn unreserve(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    async fn start_session(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        let live = self.live();
        let settings = &live.settings;
        let parsed = sdp::parse(&offer.sdp)
            .map_err(|e| reject(488, format!("Not Acceptable Here (SDP: {e})")))?;
        let md = match offer.metadata.as_deref() {
            Some(xml) => Some(
                metadata::parse(xml)
                    .map_err(|e| reject(400, format!("Bad Request (rs-metadata: {e})")))?,
            ),
            None => None,
        };
        let plans = sdp::plan(&parsed, settings.srtp);
        if !plans.iter().any(|p| matches!(p, MediaPlan::Accept { .. })) {
            return Err(no_stream(&plans));
        }
        let parties = parties(&offer, md.as_ref());
        let (decision, owner) = self.decide(&live, &parties).await;
        let session_id = u64::from_be_bytes(
            Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        ) >> 1;
        let record = match decision {
            Ok(d) => d,
            Err(reason) => {
                tracing::info!(reason, "call not recorded by the profile's rules");
                metrics::inc(&self.metrics.sessions_not_recorded);
                return self.answer_unrecorded(&offer, &parsed, session_id);
            }
        };
        if let Some(full) = spool_full(&live) {
            if settings.fail_closed {
                metrics::inc(&self.metrics.spool_refusals);
                tracing::warn!(reason = %full, "spool full: call refused so its source fails over");
                return Err(reject(503, format!("Service Unavailable ({full})"))
                    .retry_after(SPOOL_RETRY_AFTER));
            }
            tracing::warn!(reason = %full,
                "spool full: call answered without recording (failClosed is off)");
            metrics::inc(&self.metrics.sessions_not_recorded);
            return self.answer_unrecorded(&offer, &parsed, session_id);
        }
        if !self.reserve() {
            if settings.fail_closed {
                return Err(reject(503, "Service Unavailable (recorder at capacity)"));
            }
            tracing::warn!("at capacity: call answered without recording (failClosed is off)");
            metrics::inc(&self.metrics.sessions_not_recorded);
            return self.answer_unrecorded(&offer, &parsed, session_id);
        }
        let labels = sdp_labels(&parsed);
        let (raw, participants) = metadata_json(md.as_ref(), &labels);
        let participants = stamp_attendance(&[], participants, None);
        let row = RowFacts {
            call_id: md
                .as_ref()
                .and_then(|m| m.sessions.first().map(|s| s.id.clone()))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| offer.dialog.call_id.clone()),
            sip_call_id: offer.dialog.call_id.clone(),
            session_id: md
                .as_ref()
                .and_then(|m| m.groups.first().map(|g| g.id.clone()))
                .unwrap_or_default(),
            segment: 0,
            start_time: callvault_store::db::now_micros(),
            direction: record.direction,
            call_type: record.call_type,
            calling: parties.calling.clone(),
            called: parties.called.clone(),
            participants,
            owner_user_id: owner,
            owner_item: record.owner_item,
            profile: settings.profile.clone(),
            storage_target: settings.storage_target.clone(),
            key_id: settings.key_id.clone(),
            expires_at: Some(
                callvault_store::db::now_micros()
                    + i64::from(settings.retention_days) * 86_400_000_000,
            ),
            raw_metadata: raw,
            channels: settings.channels.channels(accepted(&plans)) as u8,
        };
        // Opening the spool files fsyncs them and their directory: on a blocking thread, so
        // a busy disk does not hold up the runtime threads every live call's media needs.
        let ctx = live.ctx.clone();
        let started = tokio::task::spawn_blocking(move || Call::start(ctx, row))
            .await
            .unwrap_or_else(|e| Err(format!("opening the spool: {e}")));
        let call = match started {
            Ok(c) => c,
            Err(e) => {
                self.unreserve();
                tracing::error!(error = %e, "cannot open the spool");
                // 503, not 500: another recorder can take the call.
                return Err(reject(503, "Service Unavailable (spool unavailable)")
                    .retry_after(SPOOL_RETRY_AFTER));
            }
        };
        let (control, rx) = mpsc::unbounded_channel();
        let _ = control.send(Control::Held(!sends_media(&plans)));
        if record.start_paused {
            // OnDemand: nothing is recorded until the source resumes (a re-offer with a
            // stream it sends on). Sent before the streams so no packet beats it.
            tracing::info!("on-demand profile: recording starts paused");
            let _ = control.send(Control::Pause(true));
        }
        let ports = match self.open_streams(&live, &parsed, &plans, md.as_ref(), &[], &control) {
            Ok(p) => p,
            Err(rej) => {
                let _ = control.send(Control::Stop(Stop::Cancelled));
                tokio::spawn(call.run(rx, None));
                self.unreserve();
                return Err(rej);
            }
        };
        let answer = self.answer(settings, &parsed, &plans, &ports, session_id, 1)?;
        let watch = settings.media_timeout.map(|timeout| {
            let (hangup, dialog) = (offer.hangup.clone(), offer.dialog.clone());
            MediaWatch {
                timeout,
                expired: Box::new(move || hangup.end(&dialog, EndReason::MediaTimeout)),
            }
        });
        let (hangup, dialog) = (offer.hangup.clone(), offer.dialog.clone());
        let task = tokio::spawn(
            async move {
                // A call whose recording failed is ended: the source must not believe it is
                // still recorded.
                if call.run(rx, watch).await.is_some() {
                    hangup.end(&dialog, EndReason::RecordingFailed);
                }
            }
            .in_current_span(),
        );
        metrics::inc(&self.metrics.sessions_total);
        metrics::inc(&self.metrics.sessions_active);
        self.calls().insert(
            offer.dialog.clone(),
            Entry::Recorded {
                control,
                task,
                ports,
                session_id,
                version: 1,
                metadata: md,
                labels,
            },
        );
        Ok(answer)
    }

    /// Binds a port pair per accepted m-line that has none yet, and tells the call about
    /// new, changed and removed streams. Returns the port per m-line.
    fn open_streams(
        &self,
        live: &Live,
        offer: &SessionDescription,
        plans: &[MediaPlan],
        md: Option<&RecordingMetadata>,
        current: &[Option<u16>],
        control: &mpsc::UnboundedSender<Control>,
    ) -> Result<Vec<Option<u16>>, Rejection> {
        let accepted = accepted(plans);
        let layout = live.settings.channels;
        let mut ports = Vec::with_capacity(plans.len());
        let mut nth = 0usize;
        for (index, (m, plan)) in offer.media.iter().zip(plans).enumerate() {
            let existing = current.get(index).copied().flatten();
            match plan {
                MediaPlan::Accept { label, srtp, .. } => {
                    let srtp = srtp.as_ref().map(|keys| keys.remote.key.clone());
                    let channel = channel_for(layout, nth, accepted, label.as_deref(), md);
                    nth += 1;
                    let config = stream_config(m, channel);
                    let peer = m.effective_connection(offer).and_then(sdp::Connection::ip);
                    if let Some(port) = existing {
                        let _ = control.send(Control::UpdateStream {
                            index,
                            config,
                            peer,
                            srtp,
                        });
                        ports.push(Some(port));
                        continue;
                    }
                    let Some(pair) = live.ctx.ports.allocate(live.settings.media_bind) else {
                        // Free what this offer already took.
                        for (i, p) in ports.iter().enumerate() {
                            if p.is_some() && current.get(i).copied().flatten().is_none() {
                                let _ = control.send(Control::CloseStream { index: i });
                            }
                        }
                        return Err(reject(503, "Service Unavailable (no free RTP ports)"));
                    };
                    ports.push(Some(pair.port));
                    let _ = control.send(Control::AddStream {
                        index,
                        pair,
                        config,
                        peer,
                        srtp,
                    });
                }
                MediaPlan::Reject { .. } => {
                    if existing.is_some() {
                        let _ = control.send(Control::CloseStream { index });
                    }
                    ports.push(None);
                }
            }
        }
        // m-lines the new offer no longer lists.
        for (index, port) in current.iter().enumerate().skip(plans.len()) {
            if port.is_some() {
                let _ = control.send(Control::CloseStream { index });
            }
        }
        Ok(ports)
    }

    fn answer(
        &self,
        settings: &SessionSettings,
        offer: &SessionDescription,
        plans: &[MediaPlan],
        ports: &[Option<u16>],
        session_id: u64,
        version: u64,
    ) -> Result<Vec<u8>, Rejection> {
        let ports: Vec<u16> = ports.iter().flatten().copied().collect();
        sdp::build_answer(
            offer,
            plans,
            &AnswerParams {
                address: settings.advertise,
                ports: &ports,
                session_id,
                session_version: version,
            },
        )
        .map(String::into_bytes)
        .map_err(|e| reject(500, format!("Server Internal Error ({e})")))
    }

    /// Accepts the session but declines every stream (port 0): the call goes on, unrecorded.
    fn answer_unrecorded(
        &self,
        offer: &SessionOffer,
        parsed: &SessionDescription,
        session_id: u64,
    ) -> Result<Vec<u8>, Rejection> {
        let plans: Vec<MediaPlan> = parsed
            .media
            .iter()
            .map(|_| MediaPlan::Reject {
                reason: sdp::RejectReason::Disabled,
            })
            .collect();
        let answer = self.answer(&self.settings(), parsed, &plans, &[], session_id, 1)?;
        self.calls().insert(
            offer.dialog.clone(),
            Entry::Unrecorded {
                media: parsed.media.len(),
            },
        );
        Ok(answer)
    }

    async fn update_session(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        let parsed = sdp::parse(&offer.sdp)
            .map_err(|e| reject(488, format!("Not Acceptable Here (SDP: {e})")))?;
        let md = match offer.metadata.as_deref() {
            Some(xml) => Some(
                metadata::parse(xml)
                    .map_err(|e| reject(400, format!("Bad Request (rs-metadata: {e})")))?,
            ),
            None => None,
        };
        let plans = sdp::plan(&parsed, self.settings().srtp);
        let mut calls = self.calls();
        let Some(entry) = calls.get_mut(&offer.dialog) else {
            return Err(reject(481, "Call/Transaction Does Not Exist"));
        };
        match entry {
            Entry::Unrecorded { media } => {
                *media = parsed.media.len();
                let plans: Vec<MediaPlan> = parsed
                    .media
                    .iter()
                    .map(|_| MediaPlan::Reject {
                        reason: sdp::RejectReason::Disabled,
                    })
                    .collect();
                drop(calls);
                self.answer(&self.settings(), &parsed, &plans, &[], 1, 2)
            }
            Entry::Recorded {
                control,
                ports,
                session_id,
                version,
                metadata,
                labels,
                ..
            } => {
                let live = self.live();
                let new_ports =
                    self.open_streams(&live, &parsed, &plans, md.as_ref(), ports, control)?;
                // SIPREC pause and resume (RFC 7866): every stream inactive pauses the
                // recording, a stream the source sends on again resumes it.
                let _ = control.send(Control::Pause(!sends_media(&plans)));
                // Hold (RFC 3264: the source sends on no stream) is no inactivity.
                let _ = control.send(Control::Held(!sends_media(&plans)));
                *labels = sdp_labels(&parsed);
                if let Some(update) = md {
                    merge_metadata(metadata, update, labels, control);
                }
                *ports = new_ports.clone();
                *version += 1;
                let (sid, ver) = (*session_id, *version);
                drop(calls);
                self.answer(&live.settings, &parsed, &plans, &new_ports, sid, ver)
            }
        }
    }

    async fn end_session(&self, dialog: DialogId, reason: EndReason) {
        let entry = self.calls().remove(&dialog);
        if let Some(Entry::Recorded { control, task, .. }) = entry {
            let stop = match reason {
                EndReason::Bye => Stop::Bye,
                EndReason::Cancelled => Stop::Cancelled,
                EndReason::AckTimeout => Stop::AckTimeout,
                // The call stopped itself before asking for the hang-up.
                EndReason::RecordingFailed => Stop::Failed,
                EndReason::MediaTimeout => Stop::MediaTimeout,
                EndReason::SessionTimerExpired => Stop::SessionTimerExpired,
                EndReason::PeerUnreachable => Stop::PeerUnreachable,
                EndReason::Shutdown => Stop::Shutdown,
            };
            if reason == EndReason::AckTimeout {
                tracing::warn!(
                    "the source never acknowledged the answer: keeping what was recorded"
                );
            }
            let _ = control.send(Control::Stop(stop));
            let _ = task.await;
            self.unreserve();
            metrics::dec(&self.metrics.sessions_active);
        }
    }

    /// Applies the rules. `Err(reason)`: not recorded. The owner is the first selected user.
    async fn decide(
        &self,
        live: &Live,
        parties: &Parties,
    ) -> (Result<RecordFacts, &'static str>, Option<Uuid>) {
        let matched = match live.ctx.db.get().await {
            Ok(db) => tokio::time::timeout(
                Duration::from_secs(2),
                resolve(&db, &live.ctx.tenant, parties),
            )
            .await
            .ok()
            .and_then(Result::ok),
            Err(_) => None,
        };
        let Some(matched) = matched else {
            // No directory: record (a compliance recorder errs on the side of recording).
            tracing::warn!("user directory unreachable: recording the call unassigned");
            let on_demand =
                live.settings.rules.mode == callvault_config::rules::RecordingMode::OnDemand;
            return (Ok(RecordFacts::unassigned(on_demand)), None);
        };
        let (calling_user, called_user) = (&matched.calling, &matched.called);
        let conference = !parties.others.is_empty();
        let (direction, row_direction) = match (calling_user.is_some(), called_user.is_some()) {
            // A meeting has no direction; its rules are the conference switch alone.
            _ if conference => (rules::Direction::Received, Direction::Conference),
            (true, false) => (rules::Direction::Placed, Direction::Outbound),
            (true, true) => (rules::Direction::Placed, Direction::Internal),
            _ => (rules::Direction::Received, Direction::Inbound),
        };
        let remote = match direction {
            rules::Direction::Placed => &parties.called.number,
            rules::Direction::Received => &parties.calling.number,
        };
        let (call_type, row_type) = if conference {
            (rules::CallType::Conference, meeting_type(&matched))
        } else if calling_user.is_some() && called_user.is_some() {
            (rules::CallType::Internal, CallType::InternalP2p)
        } else if is_pstn_number(remote) {
            (rules::CallType::Pstn, CallType::PstnP2p)
        } else {
            (rules::CallType::External, CallType::ExternalP2p)
        };
        let users: Vec<MatchedUser> = matched.all().flatten().map(|(_, u)| u.clone()).collect();
        let any_matched = !users.is_empty();
        let users = without_kept(users, |u| self.kept_by_older(u));
        if any_matched && users.is_empty() {
            // Not even as an unassigned call: the older profile records it.
            return (
                Err("its users are recorded by an older profile (one profile per user)"),
                None,
            );
        }
        // Number lists filter the remote party of a two-party call; a meeting has none.
        fn number(p: &Party, conference: bool) -> Option<&str> {
            Some(p.number.as_str()).filter(|s| !s.is_empty() && !conference)
        }
        let facts = CallFacts {
            direction,
            call_type,
            calling_number: number(&parties.calling, conference),
            called_number: number(&parties.called, conference),
            users: &users,
            start: Timestamp::now(),
        };
        let bytes = Uuid::new_v4();
        let draw = (u16::from_be_bytes([bytes.as_bytes()[0], bytes.as_bytes()[1]]) % 100) as u8;
        match rules::decide(&live.settings.rules, &facts, draw) {
            Decision::Record(r) => {
                // The first selected party owns the call (a meeting's organiser is listed
                // first); the others who are users attend it.
                let owner = parties.all().zip(matched.all()).find_map(|(p, m)| {
                    m.as_ref()
                        .filter(|(_, u)| r.users.contains(&u.user))
                        .map(|(id, _)| (*id, p.number.clone()))
                });
                let owner_item = owner.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
                (
                    Ok(RecordFacts {
                        direction: row_direction,
                        call_type: row_type,
                        owner_item,
                        start_paused: r.start_paused,
                    }),
                    owner.map(|(id, _)| id),
                )
            }
            Decision::DontRecord(reason) => (Err(reason.as_str()), None),
        }
    }
}

struct RecordFacts {
    direction: Direction,
    call_type: CallType,
    owner_item: String,
    /// OnDemand: recorded paused until the source resumes.
    start_paused: bool,
}

impl RecordFacts {
    fn unassigned(start_paused: bool) -> Self {
        RecordFacts {
            direction: Direction::Inbound,
            call_type: CallType::Unknown,
            owner_item: String::new(),
            start_paused,
        }
    }
}

/// Whether the source sends on any accepted stream (its offer says sendonly or sendrecv, so
/// the answer says recvonly).
fn sends_media(plans: &[MediaPlan]) -> bool {
    plans.iter().any(|p| {
        matches!(
            p,
            MediaPlan::Accept {
                direction: sdp::Direction::RecvOnly,
                ..
            }
        )
    })
}

/// A public number: `+` and digits, or more digits than an extension has.
fn is_pstn_number(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or(n);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (n.starts_with('+') || digits.len() > 6)
}

#[derive(Debug, Clone, Default)]
struct Parties {
    calling: Party,
    called: Party,
    /// The metadata's participants after the first two: a call that has any is a conference.
    others: Vec<Party>,
}

impl Parties {
    fn all(&self) -> impl Iterator<Item = &Party> {
        [&self.calling, &self.called]
            .into_iter()
            .chain(&self.others)
    }
}

struct Matched {
    calling: Option<(Uuid, MatchedUser)>,
    called: Option<(Uuid, MatchedUser)>,
    /// For each of [`Parties::others`], its user if it is one.
    others: Vec<Option<(Uuid, MatchedUser)>>,
}

impl Matched {
    /// Each party's user, in the parties' order (calling, called, then the others).
    fn all(&self) -> impl Iterator<Item = &Option<(Uuid, MatchedUser)>> {
        [&self.calling, &self.called]
            .into_iter()
            .chain(&self.others)
    }
}

/// A conference's call type (compliance-recorder F-72): internal when every participant is a
/// user of the organisation, with external participants when only some are, external (a
/// bridge of another organisation) when none is.
fn meeting_type(matched: &Matched) -> CallType {
    let (users, total) = matched
        .all()
        .fold((0, 0), |(u, t), m| (u + usize::from(m.is_some()), t + 1));
    match users {
        0 => CallType::ExternalMeeting,
        n if n == total => CallType::InternalMeeting,
        _ => CallType::InternalMeetingExternalParticipants,
    }
}

async fn resolve(
    db: &Db,
    tenant: &str,
    parties: &Parties,
) -> Result<Matched, callvault_store::db::DbError> {
    async fn one(
        db: &Db,
        tenant: &str,
        number: &str,
    ) -> Result<Option<(Uuid, MatchedUser)>, callvault_store::db::DbError> {
        if number.is_empty() {
            return Ok(None);
        }
        let Some(id) = db.extension_owner(tenant, number).await? else {
            return Ok(None);
        };
        let Some(user) = db.user(tenant, id).await? else {
            return Ok(None);
        };
        let groups = db
            .user_groups(tenant, id)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect();
        Ok(Some((
            id,
            MatchedUser {
                user: user.username,
                groups,
            },
        )))
    }
    let mut others = Vec::with_capacity(parties.others.len());
    for p in &parties.others {
        others.push(one(db, tenant, &p.number).await?);
    }
    Ok(Matched {
        calling: one(db, tenant, &parties.calling.number).await?,
        called: one(db, tenant, &parties.called.number).await?,
        others,
    })
}

/// The user part of a SIP/tel URI (`sip:+4420@sbc` → `+4420`).
fn uri_user(uri: &str) -> String {
    let s = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let s = s
        .strip_prefix("sips:")
        .or_else(|| s.strip_prefix("sip:"))
        .or_else(|| s.strip_prefix("tel:"))
        .unwrap_or(s);
    let s = s.split(['@', ';', '?']).next().unwrap_or_default();
    s.to_owned()
}

/// Calling and called party of an offer: see [`parties_from`].
fn parties(offer: &SessionOffer, md: Option<&RecordingMetadata>) -> Parties {
    let header = |h: Result<crate::sip::NameAddr, _>| {
        h.map(|n| Party::new(uri_user(&n.uri), n.display.unwrap_or_default()))
            .unwrap_or_default()
    };
    parties_from(
        md,
        offer.siprec,
        header(offer.request.from()),
        header(offer.request.to()),
    )
}

/// The party a SIPREC call's metadata does not name.
const UNKNOWN_PARTY: &str = "unknown";

/// Calling and called party: the first two participants of the metadata (the source lists the
/// caller first), each `unknown` when the metadata names fewer; a SIPREC request's From and To
/// are the recording dialog's own ends (the source and the recorder), never a party of the
/// call. Only a plain INVITE's From and To name the parties.
fn parties_from(md: Option<&RecordingMetadata>, siprec: bool, from: Party, to: Party) -> Parties {
    if md.is_none() && !siprec {
        return Parties {
            calling: from,
            called: to,
            others: Vec::new(),
        };
    }
    let mut named = md
        .into_iter()
        .flat_map(|m| m.participants.iter().map(party_of));
    let unknown = || Party::new(UNKNOWN_PARTY, "");
    Parties {
        calling: named.next().unwrap_or_else(unknown),
        called: named.next().unwrap_or_else(unknown),
        others: named.collect(),
    }
}

/// A metadata participant as a party of the row: the user part of its address, its name.
fn party_of(p: &metadata::Participant) -> Party {
    Party::new(
        p.aor.as_deref().map(uri_user).unwrap_or_default(),
        p.name.clone().unwrap_or_default(),
    )
}

/// The m-lines a plan accepts.
fn accepted(plans: &[MediaPlan]) -> usize {
    plans
        .iter()
        .filter(|p| matches!(p, MediaPlan::Accept { .. }))
        .count()
}

/// Which output channel the `nth` accepted m-line feeds. Per stream: its own. Stereo: a lone
/// stream is the mix (both channels); otherwise the first party's streams go left and the
/// others right, the party coming from the metadata's label association when there is one,
/// else the stream's order. Mono: the one channel.
fn channel_for(
    layout: ChannelLayout,
    nth: usize,
    accepted: usize,
    label: Option<&str>,
    md: Option<&RecordingMetadata>,
) -> Channel {
    match layout {
        ChannelLayout::PerStream => return Channel::Nth(nth),
        ChannelLayout::Mono => return Channel::Both,
        ChannelLayout::Stereo if accepted == 1 => return Channel::Both,
        ChannelLayout::Stereo => {}
    }
    if let (Some(md), Some(label)) = (md, label)
        && let Some(sender) = md.sender_of_label(label)
        && let Some(first) = md.participants.first()
    {
        return if sender.id == first.id {
            Channel::A
        } else {
            Channel::B
        };
    }
    if nth.is_multiple_of(2) {
        Channel::A
    } else {
        Channel::B
    }
}

/// Every decodable format of the m-line (a source may switch among those it offered).
fn stream_config(m: &sdp::MediaDescription, channel: Channel) -> StreamConfig {
    let mut config = StreamConfig::new(channel);
    for f in &m.formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        if let Some(map) = m.rtpmap(pt)
            && let Some(codec) = Codec::from_rtpmap(&map.encoding, map.clock_rate)
        {
            config = config.with_payload_type(PayloadType::dynamic(pt, codec, map.clock_rate));
        }
    }
    config
}

/// The `a=label` of each m-line that has one.
fn sdp_labels(sdp: &SessionDescription) -> Vec<String> {
    sdp.media.iter().filter_map(|m| m.label.clone()).collect()
}

/// Merges a later metadata document into a live call's (a partial one updates what it names,
/// RFC 7866 §7.1.2) and gives the call the result: its row shows every participant so far.
fn merge_metadata(
    metadata: &mut Option<RecordingMetadata>,
    update: RecordingMetadata,
    labels: &[String],
    control: &mpsc::UnboundedSender<Control>,
) {
    let merged = match metadata.take() {
        Some(mut current) => {
            current.apply(update);
            current
        }
        None => update,
    };
    let (raw, participants) = metadata_json(Some(&merged), labels);
    *metadata = Some(merged);
    let _ = control.send(Control::Metadata { raw, participants });
}

/// The row's raw metadata (JSON: participants, stream ↔ participant associations by label,
/// session and group ids, unknown extensions as raw XML) and its participants.
fn metadata_json(md: Option<&RecordingMetadata>, labels: &[String]) -> (String, Vec<Attendee>) {
    let Some(md) = md else {
        return (json!({ "sdpLabels": labels }).to_string(), Vec::new());
    };
    let participants = md
        .participants
        .iter()
        .map(|p| Attendee {
            party: party_of(p),
            present: p.left != Some(true),
        })
        .collect();
    let doc = json!({
        "groups": md.groups.iter().map(|g| json!({
            "id": g.id, "associateTime": g.associate_time, "extensions": g.extensions,
        })).collect::<Vec<_>>(),
        "sessions": md.sessions.iter().map(|s| json!({
            "id": s.id, "groupRef": s.group_ref, "sipSessionIds": s.sip_session_ids,
            "startTime": s.start_time, "stopTime": s.stop_time, "extensions": s.extensions,
        })).collect::<Vec<_>>(),
        "participants": md.participants.iter().map(|p| json!({
            "id": p.id, "aor": p.aor, "name": p.name, "send": p.send, "recv": p.recv,
            "extensions": p.extensions,
        })).collect::<Vec<_>>(),
        "streams": md.streams.iter().map(|s| json!({
            "id": s.id, "label": s.label, "sessionId": s.session_id,
            "sender": s.label.as_deref().and_then(|l| md.sender_of_label(l)).map(|p| p.id.clone()),
            "extensions": s.extensions,
        })).collect::<Vec<_>>(),
        "extensions": md.extensions,
        "sdpLabels": labels,
    });
    (doc.to_string(), participants)
}

impl SessionHandler for Recorder {
    async fn offer(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        let result = self.start_session(offer).await;
        if let Err(r) = &result {
            metrics::inc(&self.metrics.sessions_rejected);
            tracing::info!(status = r.status, reason = %r.reason, "offer refused");
        }
        result
    }

    async fn reoffer(&self, offer: SessionOffer) -> Result<Vec<u8>, Rejection> {
        self.update_session(offer).await
    }

    async fn metadata(&self, dialog: DialogId, xml: Vec<u8>) -> Result<(), Rejection> {
        let update = metadata::parse(&xml)
            .map_err(|e| reject(400, format!("Bad Request (rs-metadata: {e})")))?;
        match self.calls().get_mut(&dialog) {
            None => Err(reject(481, "Call/Transaction Does Not Exist")),
            Some(Entry::Unrecorded { .. }) => Ok(()),
            Some(Entry::Recorded {
                metadata,
                labels,
                control,
                ..
            }) => {
                merge_metadata(metadata, update, labels, control);
                Ok(())
            }
        }
    }

    async fn ended(&self, dialog: DialogId, reason: EndReason) {
        self.end_session(dialog, reason).await;
    }

    fn has_capacity(&self) -> bool {
        let settings = self.settings();
        !settings.fail_closed || self.active_sessions() < settings.capacity
    }

    fn records_new_calls(&self) -> bool {
        let live = self.live();
        !live.settings.fail_closed || spool_full(&live).is_none()
    }

    fn probe_interval(&self) -> Option<Duration> {
        self.settings().options_probe
    }

    fn refused(&self) {
        metrics::inc(&self.metrics.sessions_rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(participants: &[(&str, &str)]) -> RecordingMetadata {
        let people: String = participants
            .iter()
            .enumerate()
            .map(|(i, (aor, name))| {
                format!(
                    "<participant participant_id=\"cA{i}\"><nameID aor=\"{aor}\"><name>{name}</name></nameID></participant>"
                )
            })
            .collect();
        let xml = format!(
            "<?xml version=\"1.0\"?><recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\
             <datamode>complete</datamode>{people}</recording>"
        );
        metadata::parse(xml.as_bytes()).expect("metadata")
    }

    #[test]
    fn parties_come_from_the_metadata_and_never_from_the_recording_dialog() {
        let src = || Party::new("src", "");
        let srs = || Party::new("recorder", "");
        let numbers = |p: Parties| (p.calling.number, p.called.number);
        let two = metadata(&[("sip:1001@bank.example", "Ann"), ("tel:+15550100", "")]);
        assert_eq!(
            numbers(parties_from(Some(&two), true, src(), srs())),
            ("1001".into(), "+15550100".into())
        );
        let one = metadata(&[("sip:1001@bank.example", "Ann")]);
        assert_eq!(
            numbers(parties_from(Some(&one), true, src(), srs())),
            ("1001".into(), "unknown".into())
        );
        assert_eq!(
            numbers(parties_from(None, true, src(), srs())),
            ("unknown".into(), "unknown".into())
        );
        // A plain INVITE (no SIPREC): its From and To are the call's parties.
        assert_eq!(
            numbers(parties_from(None, false, src(), srs())),
            ("src".into(), "recorder".into())
        );
    }

    #[test]
    fn users_an_older_profile_records_are_left_out() {
        let users = vec![
            MatchedUser {
                user: "ann".into(),
                groups: vec!["traders".into()],
            },
            MatchedUser {
                user: "bob".into(),
                groups: vec!["traders".into()],
            },
        ];
        let kept: Vec<String> = without_kept(users, |u| u == "bob")
            .into_iter()
            .map(|u| u.user)
            .collect();
        assert_eq!(kept, ["ann"]);
    }
}
