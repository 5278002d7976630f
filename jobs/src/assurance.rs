//! Recording assurance: daily evidence that recording works. A SIPREC test call with known
//! audio on each channel goes through a RecordingProfile's own SIP entry point; its recording
//! is then found in the catalogue, its seal verified, decrypted, and each channel compared with
//! what was sent. One run gives one [`AssuranceReport`], from which the `Assured` condition
//! ([`crate::cluster::assurance_status`]), the alarm ([`crate::alarms::assurance`]) and the
//! audit entry come, in a cluster (the profile's CronJob) and standalone alike.
//!
//! The test recording is marked by the random Call-ID only this run knows, as soon as the
//! recorder creates its row: from then on it is hidden from search and expires on the
//! assurance's own retention.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use callvault_caller::{Audio, CallIds, CallOptions, CallOutcome, G711};
use callvault_config::ValidAssuranceJobConfig;
use callvault_crds::reason;
use callvault_store::db::{Db, NewAuditEntry, Recording, RecordingStatus, now_micros};
use callvault_store::format::{self, Header, Layout, Seal, SealFacts, Verdict};
use callvault_store::keys::KeyRing;
use callvault_store::objstore::Storage;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use crate::retention::SYSTEM_ACTOR;
use crate::transcribe::audio::{self, Channels16k};

/// Audit action of every run, passed or failed.
pub const AUDIT_ACTION: &str = "recording_assurance";
/// Least correlation of a recorded channel's energy envelope with what was sent on it.
pub const MIN_MATCH: f64 = 0.8;
/// Least margin by which a channel matches its own party better than the other one: swapped or
/// mixed channels fail even when both carry sound.
pub const MIN_MARGIN: f64 = 0.3;
/// Sample rate of the known audio (what G.711 carries).
const SENT_RATE: usize = 8000;
/// The known audio switches each channel's tone on or off every slot.
const SLOT_MS: usize = 100;
/// One tone per channel, so a channel carrying the other party's audio is told apart.
const TONE_HZ: [f64; 2] = [480.0, 1020.0];
/// About -12 dBFS.
const AMPLITUDE: f64 = 8000.0;
/// Seeds of each channel's on/off pattern.
const SEEDS: [u32; 2] = [0x2545_f491, 0x9e37_79b9];
/// A channel quieter than this (RMS of 16-bit samples) is silent.
const SILENT_RMS: f64 = 50.0;
/// Envelope frames (20 ms) cut from each end of the sent audio before comparing: the first and
/// last packets may fall outside the recording by a hair.
const EDGE_FRAMES: usize = 10;
/// Call set-up delay tolerated between the recording's start and the first audio (20 ms frames).
const MAX_LAG_FRAMES: usize = 150;
const POLL: Duration = Duration::from_millis(250);

/// Why a run failed: the `Assured` condition's reason and what to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One of the recording assurance reasons in [`callvault_crds::reason`].
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// How well one recorded channel matches what was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelMatch {
    /// Correlation with what its own party sent (1.0 = the same).
    pub own: f64,
    /// Correlation with what the other party sent.
    pub other: f64,
}

/// What one run found.
#[derive(Debug, Clone, PartialEq)]
pub struct AssuranceReport {
    pub profile: String,
    /// The test call's SIP Call-ID.
    pub sip_call_id: String,
    /// Start and end of the run (µs since the Unix epoch).
    pub started_at: i64,
    pub finished_at: i64,
    /// The test call's recording, once found.
    pub recording_id: Option<Uuid>,
    /// Each channel's match, once compared.
    pub channels: Vec<ChannelMatch>,
    /// `None` when the call was recorded intact.
    pub failure: Option<Failure>,
}

impl AssuranceReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// A run that could not even start (its configuration, storage or keys): a failed check
    /// ([`audit`] it like the others).
    pub fn not_run(profile: &str, why: String) -> Self {
        let now = now_micros();
        Self {
            profile: profile.to_owned(),
            sip_call_id: String::new(),
            started_at: now,
            finished_at: now,
            recording_id: None,
            channels: Vec::new(),
            failure: Some(Failure::new(
                reason::CHECK_FAILED,
                format!("the check could not run: {why}"),
            )),
        }
    }

    /// The condition reason of this run.
    pub fn reason(&self) -> &'static str {
        self.failure
            .as_ref()
            .map_or(reason::TEST_CALL_RECORDED, |f| f.reason)
    }

    /// One line on the run, for the condition, the Event and the log.
    pub fn message(&self) -> String {
        match &self.failure {
            Some(f) => f.message.clone(),
            None => {
                let channels: Vec<String> = self
                    .channels
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("channel {} matched at {:.2}", i + 1, c.own))
                    .collect();
                format!(
                    "test call {} recorded as {}: seal valid, {}",
                    self.sip_call_id,
                    self.recording_id
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    channels.join(", ")
                )
            }
        }
    }

    /// The audit entry of this run: the evidence, whatever it found.
    pub fn audit_entry(&self) -> NewAuditEntry {
        NewAuditEntry::new(SYSTEM_ACTOR, AUDIT_ACTION)
            .item("recording_profile", self.profile.clone())
            .details(json!({
                "result": if self.passed() { "passed" } else { "failed" },
                "reason": self.reason(),
                "message": self.message(),
                "sip_call_id": self.sip_call_id,
                "recording_id": self.recording_id,
                "channels": self.channels.iter().map(|c| json!({"own": c.own, "other": c.other})).collect::<Vec<_>>(),
                "started_at": self.started_at,
                "finished_at": self.finished_at,
            }))
    }
}

/// What a run works with: the validated job configuration, the database, the profile's
/// storage and the private keys.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub db: &'a Db,
    pub config: &'a ValidAssuranceJobConfig,
    pub storage: &'a Storage,
    pub ring: &'a KeyRing,
}

/// Places the test call, checks its recording and audits the run. Never fails: whatever goes
/// wrong is the report's failure (a check that cannot run says nothing good about recording).
pub async fn run_assurance(check: Check<'_>) -> AssuranceReport {
    let c = &check.config.config;
    let sip_call_id = format!("{}@assurance.callvault", Uuid::new_v4().simple());
    let mut report = AssuranceReport {
        profile: c.profile.clone(),
        sip_call_id: sip_call_id.clone(),
        started_at: now_micros(),
        finished_at: 0,
        recording_id: None,
        channels: Vec::new(),
        failure: None,
    };
    let span = tracing::info_span!("assurance", profile = %c.profile, call_id = %sip_call_id);
    let result = tracing::Instrument::instrument(steps(check, &mut report), span).await;
    report.failure = result.err();
    report.finished_at = now_micros();
    audit(check.db, &c.tenant, &report).await;
    report
}

/// Audits a run (and logs it): a failure to audit is logged, never hides the run's result.
pub async fn audit(db: &Db, tenant: &str, report: &AssuranceReport) {
    let profile = &report.profile;
    if let Err(e) = db.append_audit(tenant, &report.audit_entry()).await {
        tracing::error!(%profile, error = %e, "the recording assurance run could not be audited");
    }
    if report.passed() {
        tracing::info!(%profile, "{}", report.message());
    } else {
        tracing::warn!(%profile, reason = report.reason(), "recording assurance failed: {}", report.message());
    }
}

async fn steps(check: Check<'_>, report: &mut AssuranceReport) -> Result<(), Failure> {
    let c = &check.config.config;
    let seconds = c.duration_seconds;
    let config = CallOptions {
        to: c.sip_uri.clone(),
        transport: c.transport.clone(),
        from_number: c.from_number.clone(),
        to_number: c.to_number.clone(),
        caller_name: "Recording assurance".to_owned(),
        callee_name: "Recording assurance".to_owned(),
        duration: Some(f64::from(seconds)),
        ..CallOptions::default()
    }
    .validate()
    .map_err(|e| Failure::new(reason::CHECK_FAILED, format!("the test call: {e}")))?;
    let sent = known_audio(seconds);
    let audio = Audio::encode(&sent[0], &sent[1], G711::Pcmu);
    let mut ids = CallIds::random(&IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    ids.call_id = report.sip_call_id.clone();

    let keep = i64::from(c.retention_days) * 86_400_000_000;
    let mark = || {
        check
            .db
            .mark_assurance(&c.tenant, &c.profile, &report.sip_call_id, keep)
    };
    // The row is marked while the call is live, so it is never listed as a real call.
    let call = callvault_caller::place_one(config, audio, ids);
    tokio::pin!(call);
    let mut rows: Vec<Recording> = Vec::new();
    let outcome = loop {
        tokio::select! {
            outcome = &mut call => break outcome,
            () = tokio::time::sleep(POLL), if rows.is_empty() => {
                rows = mark().await.unwrap_or_default();
            }
        }
    };
    let outcome: CallOutcome = outcome.map_err(|e| {
        Failure::new(
            reason::TEST_CALL_FAILED,
            format!("the test call to {} could not start: {e}", c.sip_uri),
        )
    })?;
    if !outcome.completed {
        let why = outcome
            .error
            .map_or_else(|| "it did not complete".to_owned(), |e| e.to_string());
        return Err(Failure::new(
            reason::TEST_CALL_FAILED,
            format!("the test call to {} failed: {why}", c.sip_uri),
        ));
    }

    let timeout = Duration::from_secs(u64::from(c.commit_timeout_seconds));
    let deadline = Instant::now() + timeout;
    let rec = loop {
        rows = mark()
            .await
            .map_err(|e| Failure::new(reason::CHECK_FAILED, format!("the catalogue: {e}")))?;
        let committed = rows.first().filter(|r| {
            !matches!(
                r.status,
                RecordingStatus::Recording | RecordingStatus::Pending
            )
        });
        if let Some(rec) = committed {
            break rec.clone();
        }
        if Instant::now() >= deadline {
            return Err(match rows.first() {
                None => Failure::new(
                    reason::RECORDING_NOT_FOUND,
                    format!(
                        "the test call was answered but no recording of it ({}) is in the catalogue {} s after it ended",
                        report.sip_call_id,
                        timeout.as_secs()
                    ),
                ),
                Some(r) => {
                    report.recording_id = Some(r.id);
                    Failure::new(
                        reason::RECORDING_NOT_COMMITTED,
                        format!(
                            "the test call's recording {} is still {} {} s after the call ended: it was not committed to storage",
                            r.id,
                            r.status,
                            timeout.as_secs()
                        ),
                    )
                }
            });
        }
        tokio::time::sleep(POLL).await;
    };
    report.recording_id = Some(rec.id);
    if rec.status != RecordingStatus::Available {
        return Err(Failure::new(
            reason::RECORDING_INCOMPLETE,
            format!(
                "the test call's recording {} is {}{}",
                rec.id,
                rec.status,
                rec.stop_reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let storage_name = &check.config.storage.binding.name;
    if &rec.storage_target != storage_name {
        return Err(Failure::new(
            reason::CHECK_FAILED,
            format!(
                "the recording is on StorageTarget {:?}, not the profile's {storage_name:?}",
                rec.storage_target
            ),
        ));
    }
    let key = rec.object_key.clone().ok_or_else(|| {
        Failure::new(
            reason::RECORDING_NOT_FOUND,
            format!("recording {} has no media object", rec.id),
        )
    })?;
    let object = check.storage.get(&key).await.map_err(|e| {
        Failure::new(
            reason::RECORDING_NOT_FOUND,
            format!("recording {} could not be read from storage: {e}", rec.id),
        )
    })?;
    let ring = check.ring.clone();
    // Decryption and decoding are CPU work: off the async threads.
    let pcm = tokio::task::spawn_blocking(move || open(&object, &ring, &rec))
        .await
        .map_err(|e| Failure::new(reason::CHECK_FAILED, format!("decoder task: {e}")))??;
    report.channels = compare(&pcm, &sent)?;
    Ok(())
}

/// Verifies the recording against its row (seal, every chunk, length, digest), decrypts it and
/// decodes each channel.
fn open(object: &[u8], ring: &KeyRing, rec: &Recording) -> Result<Channels16k, Failure> {
    let tampered =
        |why: String| Failure::new(reason::SEAL_INVALID, format!("recording {}: {why}", rec.id));
    let digest = |text: Option<&str>| -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text?, &mut out).ok()?;
        Some(out)
    };
    let (Some(plaintext_sha256), Some(metadata_sha256), Some(seal)) = (
        digest(rec.sha256.as_deref()),
        digest(rec.metadata_digest.as_deref()),
        rec.signature.as_deref().and_then(Seal::from_hex),
    ) else {
        return Err(tampered("the row carries no valid digest and seal".into()));
    };
    if rec.sealed_fields(&metadata_sha256).is_none() {
        return Err(tampered(
            "the row's call details differ from what was sealed".into(),
        ));
    }
    let header = Header::parse(object).map_err(|e| tampered(e.to_string()))?;
    let layout =
        Layout::complete(&header, object.len() as u64).map_err(|e| tampered(e.to_string()))?;
    let facts = SealFacts {
        plaintext_len: layout.plaintext_len(),
        plaintext_sha256,
        metadata_sha256,
        complete: true,
    };
    match format::verify(object, ring, &facts, &seal) {
        Ok(Verdict::Authenticated(_)) => {}
        Ok(Verdict::Tampered(e)) => return Err(tampered(e.to_string())),
        Err(e) => {
            return Err(Failure::new(
                reason::CHECK_FAILED,
                format!("recording {} cannot be decrypted here: {e}", rec.id),
            ));
        }
    }
    let mut plain = Vec::with_capacity(object.len());
    format::decrypt_stream(object, ring, &mut plain).map_err(|e| tampered(e.to_string()))?;
    audio::decode_ogg_opus(&plain).map_err(|e| {
        Failure::new(
            reason::AUDIO_MISMATCH,
            format!("recording {} is not the expected audio: {e}", rec.id),
        )
    })
}

/// The known audio of a test call of `seconds`, at 8 kHz: each channel a tone of its own,
/// switched on and off every [`SLOT_MS`] by a pattern of its own.
pub fn known_audio(seconds: u32) -> [Vec<i16>; 2] {
    let per_slot = SENT_RATE * SLOT_MS / 1000;
    let slots = seconds as usize * 1000 / SLOT_MS;
    [0, 1].map(|ch| {
        let mut state = SEEDS[ch];
        let mut out = Vec::with_capacity(slots * per_slot);
        for slot in 0..slots {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            // The first slot always sounds, so the call opens with audio.
            let on = slot == 0 || (state >> 16) & 1 == 1;
            for n in 0..per_slot {
                let t = (slot * per_slot + n) as f64 / SENT_RATE as f64;
                let v = if on {
                    AMPLITUDE * (2.0 * std::f64::consts::PI * TONE_HZ[ch] * t).sin()
                } else {
                    0.0
                };
                out.push(v.round() as i16);
            }
        }
        out
    })
}

/// Each recorded channel against what was sent: its own party's pattern must be there, clearly
/// better than the other party's.
pub fn compare(recorded: &Channels16k, sent: &[Vec<i16>; 2]) -> Result<Vec<ChannelMatch>, Failure> {
    if recorded.channels.len() < 2 {
        return Err(Failure::new(
            reason::AUDIO_MISMATCH,
            format!(
                "the recording has {} channel(s); the test call sent 2",
                recorded.channels.len()
            ),
        ));
    }
    let rate = audio::RATE as usize;
    let reference = sent.each_ref().map(|s| envelope(s, SENT_RATE));
    let mut matches = Vec::with_capacity(2);
    let mut problems = Vec::new();
    for (i, channel) in recorded.channels.iter().take(2).enumerate() {
        let rec = envelope(channel, rate);
        // The other party's audio is compared where this party's was found.
        let (own, lag) = best_match(&rec, &reference[i]);
        let other = lag.map_or(-1.0, |lag| pearson(&rec[lag..], trimmed(&reference[1 - i])));
        let m = ChannelMatch { own, other };
        let party = if i == 0 { "caller" } else { "callee" };
        if rms(channel) < SILENT_RMS {
            problems.push(format!("channel {} ({party}) is silent", i + 1));
        } else if m.own < MIN_MATCH || m.own - m.other < MIN_MARGIN {
            problems.push(format!(
                "channel {} ({party}) matches what was sent on it at {:.2} (at least {MIN_MATCH:.2} needed) and the other party's at {:.2}",
                i + 1,
                m.own,
                m.other
            ));
        }
        matches.push(m);
    }
    if problems.is_empty() {
        Ok(matches)
    } else {
        Err(Failure::new(reason::AUDIO_MISMATCH, problems.join("; ")))
    }
}

/// Log energy per 20 ms of a signal at `rate` Hz.
fn envelope(x: &[i16], rate: usize) -> Vec<f64> {
    x.chunks(rate / 50)
        .map(|c| {
            let energy = c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
            (energy / c.len() as f64 + 1.0).ln()
        })
        .collect()
}

fn rms(x: &[i16]) -> f64 {
    let energy = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
    (energy / x.len().max(1) as f64).sqrt()
}

/// Pearson correlation of the overlap of `a` and `b`.
fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let n = len.max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt().max(1e-9)
}

/// The sent envelope without its edges.
fn trimmed(sent: &[f64]) -> &[f64] {
    sent.get(EDGE_FRAMES..sent.len().saturating_sub(EDGE_FRAMES))
        .unwrap_or_default()
}

/// Best correlation of a recorded envelope with the sent one (its edges cut), over the lags a
/// call's set-up introduces, and that lag; -1 and none when the recording is too short to hold
/// it.
fn best_match(recorded: &[f64], sent: &[f64]) -> (f64, Option<usize>) {
    let sent = trimmed(sent);
    (0..=MAX_LAG_FRAMES)
        .filter(|lag| !sent.is_empty() && lag + sent.len() <= recorded.len())
        .map(|lag| (pearson(&recorded[lag..lag + sent.len()], sent), Some(lag)))
        .fold((-1.0, None), |best, m| if m.0 > best.0 { m } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sent` as the recording would hold it at 16 kHz, `delay_ms` late.
    fn recorded(sent: &[Vec<i16>; 2], delay_ms: usize, swap: bool) -> Channels16k {
        let up = |x: &[i16]| -> Vec<i16> {
            std::iter::repeat_n(0, delay_ms * 16)
                .chain(x.iter().flat_map(|&s| [s, s]))
                .chain(std::iter::repeat_n(0, 8000))
                .collect()
        };
        let (a, b) = if swap { (1, 0) } else { (0, 1) };
        Channels16k {
            channels: vec![up(&sent[a]), up(&sent[b])],
        }
    }

    #[test]
    fn the_channels_as_sent_match_even_late() {
        let sent = known_audio(6);
        assert_eq!(sent[0].len(), 6 * 8000);
        let m = compare(&recorded(&sent, 340, false), &sent).expect("matches");
        assert!(m.iter().all(|c| c.own > 0.95 && c.other < 0.5), "{m:?}");
    }

    #[test]
    fn swapped_silent_short_or_mono_recordings_fail_saying_why() {
        let sent = known_audio(6);
        let swapped = compare(&recorded(&sent, 0, true), &sent).expect_err("swapped");
        assert_eq!(swapped.reason, reason::AUDIO_MISMATCH);
        assert!(
            swapped.message.contains("channel 1 (caller)"),
            "{swapped:?}"
        );

        let mut silent = recorded(&sent, 0, false);
        silent.channels[1].iter_mut().for_each(|s| *s = 0);
        let e = compare(&silent, &sent).expect_err("silent");
        assert_eq!(e.message, "channel 2 (callee) is silent");

        let mut short = recorded(&sent, 0, false);
        short
            .channels
            .iter_mut()
            .for_each(|c| c.truncate(16_000 * 3));
        let e = compare(&short, &sent).expect_err("short");
        assert!(e.message.contains("at -1.00"), "{e:?}");

        let mut mono = recorded(&sent, 0, false);
        mono.channels.truncate(1);
        let e = compare(&mono, &sent).expect_err("mono");
        assert!(e.message.contains("1 channel(s)"), "{e:?}");
    }
}
