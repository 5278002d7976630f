//! The retention job of one RecordingProfile: carries out deferred "delete calls" requests,
//! expires recordings past their retention, and purges old audit entries.
//!
//! Order per recording: the media object is deleted first, then the removal is audited, then
//! the row is marked deleted. A run killed anywhere in between leaves a row that the next run
//! selects again; deleting an object that is already gone succeeds, so the retry completes. An
//! interrupted run may leave a duplicate audit entry, never a removal without one.
//!
//! Legal hold: the store's queries never return held recordings, and each candidate is read
//! again just before its media is touched, so a hold placed during the run still protects it.
//! Archive copies made by Connectors live in other targets and are never touched here.

use std::collections::HashSet;

use callvault_store::db::{Db, DbError, DeleteMode, NewAuditEntry, Recording, RecordingStatus};
use callvault_store::objstore::Storage;
use serde_json::json;
use uuid::Uuid;

/// Actor of every audit entry the job writes.
pub const SYSTEM_ACTOR: &str = "system:retention";
/// Audit action of a recording removed because its retention ended.
pub const EXPIRE_ACTION: &str = "recording.expire";
/// Audit action of a deferred "delete calls" request carried out.
pub const DELETE_ACTION: &str = "recording.delete";
/// Audit action of a removal skipped because a legal hold was placed during the run.
pub const HOLD_SKIP_ACTION: &str = "recording.retention_skipped";

/// Audit retention bounds (DESIGN §6: `auditRetentionDays`, 1–3650).
const AUDIT_DAYS: std::ops::RangeInclusive<u32> = 1..=3650;
const DAY_MICROS: i64 = 86_400_000_000;

/// Tuning and policy of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOptions {
    /// Recordings read per query (at least 1).
    pub batch_size: u32,
    /// Audit entries older than this many days are purged (1–3650).
    pub audit_retention_days: u32,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSummary {
    /// Recordings removed because their retention ended.
    pub expired: u64,
    /// Deferred deletion requests carried out.
    pub deferred_deleted: u64,
    /// Candidates left alone because a legal hold was found when re-read.
    pub skipped_under_hold: u64,
    /// Recordings that could not be removed this run; they are retried by the next one.
    pub failures: Vec<RetentionFailure>,
    /// Audit entries removed by the purge.
    pub audit_purged: u64,
    /// Recordings of the profile past expiry that a legal hold keeps, after the run.
    pub held_past_expiry: u64,
    /// Start time (µs) of the oldest recording of the profile still stored, after the run.
    pub oldest_start_time: Option<i64>,
    /// Recordings of the profile not deleted, after the run.
    pub stored: u64,
}

impl RetentionSummary {
    /// Recordings removed by this run (expired and deferred deletions).
    pub fn removed(&self) -> u64 {
        self.expired + self.deferred_deleted
    }
}

/// The step at which a recording's removal failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedStep {
    /// Re-reading the row before acting on it.
    Lookup,
    /// Deleting the media object (the row is intact).
    DeleteMedia,
    /// Writing the audit entry (the media is gone, the row is intact).
    Audit,
    /// Marking the row deleted (the media is gone and the removal audited).
    MarkDeleted,
    /// The media is on another storage target than the one this run was given (the profile
    /// moved): deleting the key here would remove nothing and lose track of the media.
    WrongTarget,
}

/// The storage target a run removes media from: its name as recorded on each recording, and
/// the opened binding.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub name: &'a str,
    pub storage: &'a Storage,
}

/// One recording the run could not remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionFailure {
    pub recording_id: Uuid,
    pub step: FailedStep,
    pub error: String,
}

/// Errors that stop a run (per-recording problems are reported in the summary instead).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("invalid retention option {field}: {reason}")]
    InvalidOption { field: &'static str, reason: String },
    #[error("empty tenant or profile: a run is scoped to one profile of one tenant")]
    MissingScope,
    #[error("retention query failed: {0}")]
    Db(#[from] DbError),
}

/// Why a recording is being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Expired,
    Requested(DeleteMode),
    /// Space-based cleanup of a full storage target (see [`crate::space`]).
    Space,
}

impl Reason {
    fn actor(self) -> &'static str {
        match self {
            Reason::Space => crate::space::SYSTEM_ACTOR,
            Reason::Expired | Reason::Requested(_) => SYSTEM_ACTOR,
        }
    }
}

/// Runs retention for `profile` of `tenant` at `now` (µs since the Unix epoch). `target` is
/// the profile's storage target, holding the primary copies.
pub async fn run_retention(
    db: &Db,
    target: Target<'_>,
    tenant: &str,
    profile: &str,
    now: i64,
    opts: RetentionOptions,
) -> Result<RetentionSummary, RetentionError> {
    if opts.batch_size == 0 {
        return Err(RetentionError::InvalidOption {
            field: "batch_size",
            reason: "must be at least 1".to_owned(),
        });
    }
    if !AUDIT_DAYS.contains(&opts.audit_retention_days) {
        return Err(RetentionError::InvalidOption {
            field: "audit_retention_days",
            reason: format!(
                "{} is outside {}..={}",
                opts.audit_retention_days,
                AUDIT_DAYS.start(),
                AUDIT_DAYS.end()
            ),
        });
    }
    if tenant.is_empty() || profile.is_empty() {
        return Err(RetentionError::MissingScope);
    }
    let run = Run {
        db,
        target,
        tenant,
        profile,
        limit: i64::from(opts.batch_size),
    };
    let mut summary = RetentionSummary::default();
    // Deferred requests first, so a "metadata and media" request is not pre-empted by an
    // expiry that would keep the metadata.
    run.deferred(&mut summary).await?;
    run.expire(now, &mut summary).await?;

    let cutoff = now.saturating_sub(i64::from(opts.audit_retention_days) * DAY_MICROS);
    let purge = db.purge_audit(tenant, cutoff, SYSTEM_ACTOR).await?;
    summary.audit_purged = purge.purged;
    let overview = db.retention_overview(tenant, profile, now).await?;
    summary.held_past_expiry = u64::try_from(overview.held_past_expiry).unwrap_or(0);
    summary.oldest_start_time = overview.oldest_start_time;
    summary.stored = u64::try_from(overview.stored).unwrap_or(0);

    tracing::info!(
        tenant,
        profile,
        expired = summary.expired,
        deferred_deleted = summary.deferred_deleted,
        skipped_under_hold = summary.skipped_under_hold,
        failures = summary.failures.len(),
        audit_purged = summary.audit_purged,
        held_past_expiry = summary.held_past_expiry,
        "retention run finished"
    );
    Ok(summary)
}

pub(crate) struct Run<'a> {
    pub(crate) db: &'a Db,
    pub(crate) target: Target<'a>,
    pub(crate) tenant: &'a str,
    pub(crate) profile: &'a str,
    pub(crate) limit: i64,
}

pub(crate) enum Outcome {
    Removed,
    Held,
    /// Already removed (by a concurrent run, or the request was withdrawn).
    Gone,
    Failed(RetentionFailure),
}

impl Run<'_> {
    async fn deferred(&self, summary: &mut RetentionSummary) -> Result<(), RetentionError> {
        // The store's query has no cursor: rows left behind (other profiles, failures) stay at
        // the front, so each query reaches past every row already seen.
        let mut seen: HashSet<Uuid> = HashSet::new();
        loop {
            let window = i64::try_from(seen.len())
                .unwrap_or(i64::MAX)
                .saturating_add(self.limit);
            let rows = self.db.pending_deletions(self.tenant, window).await?;
            let fresh: Vec<Recording> =
                rows.into_iter().filter(|r| !seen.contains(&r.id)).collect();
            if fresh.is_empty() {
                return Ok(());
            }
            for rec in fresh {
                seen.insert(rec.id);
                if rec.profile != self.profile {
                    continue;
                }
                let mode = rec.delete_mode.unwrap_or(DeleteMode::MediaOnly);
                match self.remove(rec.id, Reason::Requested(mode)).await {
                    Outcome::Removed => summary.deferred_deleted += 1,
                    Outcome::Held => summary.skipped_under_hold += 1,
                    Outcome::Gone => {}
                    Outcome::Failed(f) => summary.failures.push(f),
                }
            }
        }
    }

    async fn expire(&self, now: i64, summary: &mut RetentionSummary) -> Result<(), RetentionError> {
        // A recording that failed as a deferred deletion was already counted this run.
        let failed: HashSet<Uuid> = summary.failures.iter().map(|f| f.recording_id).collect();
        let mut after = None;
        loop {
            let rows = self
                .db
                .expired_recordings_of_profile(self.tenant, self.profile, now, after, self.limit)
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            // Failed rows stay in place; the cursor moves past them so the run terminates.
            after = last.expires_at.map(|t| (t, last.id));
            let done = rows.len() < usize::try_from(self.limit).unwrap_or(usize::MAX);
            for rec in rows {
                if failed.contains(&rec.id) {
                    continue;
                }
                match self.remove(rec.id, Reason::Expired).await {
                    Outcome::Removed => summary.expired += 1,
                    Outcome::Held => summary.skipped_under_hold += 1,
                    Outcome::Gone => {}
                    Outcome::Failed(f) => summary.failures.push(f),
                }
            }
            if done || after.is_none() {
                return Ok(());
            }
        }
    }

    /// Removes one recording: media, then audit entry, then row.
    pub(crate) async fn remove(&self, id: Uuid, reason: Reason) -> Outcome {
        let fail = |step: FailedStep, error: String| {
            tracing::warn!(tenant = self.tenant, recording = %id, ?step, %error,
                "retention could not remove a recording; the next run retries it");
            Outcome::Failed(RetentionFailure {
                recording_id: id,
                step,
                error,
            })
        };
        // Re-read: a hold or a withdrawn request since the listing must win.
        let rec = match self.db.recording(self.tenant, id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return Outcome::Gone,
            Err(e) => return fail(FailedStep::Lookup, e.to_string()),
        };
        if rec.status == RecordingStatus::Deleted {
            return Outcome::Gone;
        }
        if matches!(reason, Reason::Requested(_)) && rec.delete_requested_at.is_none() {
            return Outcome::Gone;
        }
        if rec.legal_hold_effective {
            let entry = NewAuditEntry::new(reason.actor(), HOLD_SKIP_ACTION)
                .item("recording", id.to_string())
                .details(json!({ "reason": "legal_hold", "profile": rec.profile }));
            if let Err(e) = self.db.append_audit(self.tenant, &entry).await {
                tracing::warn!(tenant = self.tenant, recording = %id, error = %e,
                    "could not audit a retention skip under legal hold");
            }
            return Outcome::Held;
        }

        if rec.object_key.is_some() && rec.storage_target != self.target.name {
            return fail(
                FailedStep::WrongTarget,
                format!(
                    "the media is on storage target {:?}, this run removes from {:?}",
                    rec.storage_target, self.target.name
                ),
            );
        }
        if let Some(key) = &rec.object_key
            && let Err(e) = self.target.storage.delete(key).await
        {
            return fail(FailedStep::DeleteMedia, e.to_string());
        }

        let (action, mode, details) = match reason {
            Reason::Space => (
                crate::space::CLEANUP_ACTION,
                DeleteMode::MediaOnly,
                json!({
                    "object_key": rec.object_key,
                    "profile": rec.profile,
                    "storage_target": rec.storage_target,
                    "size_bytes": rec.size_bytes,
                    "start_time": rec.start_time,
                    "expires_at": rec.expires_at,
                    "reason": "the storage target crossed its space limit; oldest recordings not under legal hold go first",
                }),
            ),
            Reason::Expired => (
                EXPIRE_ACTION,
                DeleteMode::MediaOnly,
                json!({
                    "object_key": rec.object_key,
                    "profile": rec.profile,
                    "storage_target": rec.storage_target,
                    "expires_at": rec.expires_at,
                }),
            ),
            Reason::Requested(listed) => {
                // The request as it stands now, should it have been changed since the listing.
                let mode = rec.delete_mode.unwrap_or(listed);
                // Removing the row drops its list of archive copies: keep where they are.
                let copies = match self.db.archive_copies(self.tenant, id).await {
                    Ok(c) => c,
                    Err(e) => return fail(FailedStep::Audit, e.to_string()),
                };
                let copies: Vec<_> = copies
                    .iter()
                    .map(|c| json!({ "connector": c.connector, "target": c.target, "object_key": c.object_key }))
                    .collect();
                (
                    DELETE_ACTION,
                    mode,
                    json!({
                        "mode": mode.as_str(),
                        "object_key": rec.object_key,
                        "profile": rec.profile,
                        "storage_target": rec.storage_target,
                        "requested_by": rec.delete_requested_by,
                        "authorised_by": rec.delete_authorised_by,
                        "note": rec.delete_note,
                        "requested_at": rec.delete_requested_at,
                        "archive_copies_kept": copies,
                    }),
                )
            }
        };
        let entry = NewAuditEntry::new(reason.actor(), action)
            .item("recording", id.to_string())
            .details(details);
        if let Err(e) = self.db.append_audit(self.tenant, &entry).await {
            return fail(FailedStep::Audit, e.to_string());
        }
        match self.db.mark_deleted(self.tenant, id, mode).await {
            Ok(()) => Outcome::Removed,
            Err(DbError::NotFound { .. }) => Outcome::Gone,
            Err(e) => fail(FailedStep::MarkDeleted, e.to_string()),
        }
    }
}
