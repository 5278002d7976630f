//! Queries of the retention and archive jobs, scoped to one RecordingProfile or Connector and
//! walked with keyset cursors, so a run over millions of rows reads each row once and a row
//! that keeps failing never blocks the ones behind it.

use uuid::Uuid;

use super::exec::Arg;
use super::model::Recording;
use super::recordings::{RECORDING_COLUMNS, RECORDING_FROM, recording_from_row};
use super::{Db, Result};

/// What retention leaves behind in one profile, for the profile's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOverview {
    /// Recordings past their expiry that a legal hold (their own or their owner's) keeps.
    pub held_past_expiry: i64,
    /// Start time of the oldest recording whose media is still stored.
    pub oldest_start_time: Option<i64>,
    /// Recordings of the profile not deleted: while there are any, the profile stays.
    pub stored: i64,
}

/// Pending and archived counts of one Connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveCounts {
    /// Finished recordings of the source profiles with media and no copy from the connector.
    pub pending: i64,
    /// Recordings with a copy from the connector.
    pub archived: i64,
}

/// `AND r.profile IN ($n, …)` for a non-empty list (empty = every profile), binding the names.
fn profile_clause(profiles: &[String], args: &mut Vec<Arg>) -> String {
    if profiles.is_empty() {
        return String::new();
    }
    let mut marks = Vec::with_capacity(profiles.len());
    for p in profiles {
        args.push(Arg::from(p));
        marks.push(format!("${}", args.len()));
    }
    format!(" AND r.profile IN ({})", marks.join(", "))
}

/// Finished recordings with media still stored, no copy from the connector yet.
/// What an archive run copies: stored recordings not yet copied by the connector, except
/// recording assurance test calls (they prove the recorder, and expire within days).
const TO_ARCHIVE: &str = "r.status IN ('available', 'incomplete') AND r.object_key IS NOT NULL \
     AND NOT r.assurance AND NOT EXISTS (SELECT 1 FROM recording_copies c WHERE c.tenant = r.tenant \
     AND c.recording_id = r.id AND c.connector = $2)";

impl Db {
    /// Recordings of `profile` that expired before `before` and may go (not held, not deleted,
    /// not being recorded), ordered by expiry then id, after the cursor `after`.
    pub async fn expired_recordings_of_profile(
        &self,
        tenant: &str,
        profile: &str,
        before: i64,
        after: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Recording>> {
        let (after_t, after_id) = after.unzip();
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND r.profile = $2 AND r.expires_at < $3 AND r.status NOT IN ('deleted', 'recording') \
                 AND NOT (r.legal_hold OR COALESCE(u.legal_hold, FALSE)) \
                 AND ($4 IS NULL OR r.expires_at > $4 OR (r.expires_at = $4 AND r.id > $5)) \
                 ORDER BY r.expires_at, r.id LIMIT $6"
            ),
            &[
                tenant.into(),
                profile.into(),
                before.into(),
                after_t.into(),
                after_id.into(),
                limit.into(),
            ],
            recording_from_row,
        )
        .await
    }

    /// Recordings whose media is on `target` and that space-based cleanup may remove: finished
    /// (not being recorded or committed), not deleted, not held (their own hold or their
    /// owner's), oldest first by start time then id, after the cursor `after`.
    pub async fn oldest_removable_on_target(
        &self,
        tenant: &str,
        target: &str,
        after: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Recording>> {
        let (after_t, after_id) = after.unzip();
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND r.storage_target = $2 AND r.object_key IS NOT NULL \
                 AND r.status IN ('available', 'incomplete') \
                 AND NOT (r.legal_hold OR COALESCE(u.legal_hold, FALSE)) \
                 AND ($3 IS NULL OR r.start_time > $3 OR (r.start_time = $3 AND r.id > $4)) \
                 ORDER BY r.start_time, r.id LIMIT $5"
            ),
            &[
                tenant.into(),
                target.into(),
                after_t.into(),
                after_id.into(),
                limit.into(),
            ],
            recording_from_row,
        )
        .await
    }

    /// Marks the rows of the recording assurance test call `sip_call_id` in `profile` as test
    /// recordings, hidden from search, that expire `keep` µs after their start (or sooner, as
    /// the profile's own retention says). Returns them, oldest segment first; none while the
    /// recorder has not created the row yet. Only the job that placed the call knows its
    /// random Call-ID, so no call source can hide a real call this way.
    pub async fn mark_assurance(
        &self,
        tenant: &str,
        profile: &str,
        sip_call_id: &str,
        keep: i64,
    ) -> Result<Vec<Recording>> {
        self.exec(
            "UPDATE recordings SET assurance = TRUE, updated_at = $5, expires_at = \
             CASE WHEN expires_at IS NULL OR expires_at > start_time + $4 \
             THEN start_time + $4 ELSE expires_at END \
             WHERE tenant = $1 AND profile = $2 AND sip_call_id = $3",
            &[
                tenant.into(),
                profile.into(),
                sip_call_id.into(),
                keep.into(),
                super::now_micros().into(),
            ],
        )
        .await?;
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND r.profile = $2 AND r.sip_call_id = $3 ORDER BY r.segment, r.id"
            ),
            &[tenant.into(), profile.into(), sip_call_id.into()],
            recording_from_row,
        )
        .await
    }

    /// Held recordings past expiry and the oldest stored start time of `profile` at `now`.
    pub async fn retention_overview(
        &self,
        tenant: &str,
        profile: &str,
        now: i64,
    ) -> Result<RetentionOverview> {
        let held = self
            .row(
                "SELECT COUNT(*) AS n FROM recordings r LEFT JOIN users u ON u.tenant = r.tenant \
                 AND u.id = r.owner_user_id WHERE r.tenant = $1 AND r.profile = $2 \
                 AND r.expires_at < $3 AND r.status <> 'deleted' \
                 AND (r.legal_hold OR COALESCE(u.legal_hold, FALSE))",
                &[tenant.into(), profile.into(), now.into()],
                |r| r.i64("n"),
            )
            .await?
            .unwrap_or(0);
        let oldest = self
            .row(
                "SELECT r.start_time FROM recordings r WHERE r.tenant = $1 AND r.profile = $2 \
                 AND r.status IN ('available', 'incomplete') ORDER BY r.start_time, r.id LIMIT 1",
                &[tenant.into(), profile.into()],
                |r| r.i64("start_time"),
            )
            .await?;
        let stored = self.holdings(tenant, "RecordingProfile", profile).await?.0;
        Ok(RetentionOverview {
            held_past_expiry: held,
            oldest_start_time: oldest,
            stored,
        })
    }

    /// The next recordings `connector` has not archived, of the given profiles (empty = all),
    /// oldest first after the cursor `after` = `(start_time, id)` of the last row seen.
    pub async fn recordings_to_archive_after(
        &self,
        tenant: &str,
        connector: &str,
        profiles: &[String],
        after: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Recording>> {
        let (after_t, after_id) = after.unzip();
        let mut args: Vec<Arg> = vec![
            tenant.into(),
            connector.into(),
            after_t.into(),
            after_id.into(),
            limit.into(),
        ];
        let profiles = profile_clause(profiles, &mut args);
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND {TO_ARCHIVE}{profiles} \
                 AND ($3 IS NULL OR r.start_time > $3 OR (r.start_time = $3 AND r.id > $4)) \
                 ORDER BY r.start_time, r.id LIMIT $5"
            ),
            &args,
            recording_from_row,
        )
        .await
    }

    /// How many recordings `connector` still has to archive and has archived.
    pub async fn archive_counts(
        &self,
        tenant: &str,
        connector: &str,
        profiles: &[String],
    ) -> Result<ArchiveCounts> {
        let mut args: Vec<Arg> = vec![tenant.into(), connector.into()];
        let clause = profile_clause(profiles, &mut args);
        let pending = self
            .row(
                &format!(
                    "SELECT COUNT(*) AS n FROM recordings r WHERE r.tenant = $1 AND {TO_ARCHIVE}{clause}"
                ),
                &args,
                |r| r.i64("n"),
            )
            .await?
            .unwrap_or(0);
        let archived = self
            .row(
                "SELECT COUNT(*) AS n FROM recording_copies WHERE tenant = $1 AND connector = $2",
                &[tenant.into(), connector.into()],
                |r| r.i64("n"),
            )
            .await?
            .unwrap_or(0);
        Ok(ArchiveCounts { pending, archived })
    }
}
