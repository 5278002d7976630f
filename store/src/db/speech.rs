//! Transcription (SpeechJob) bookkeeping: which recordings a job selects, what it did with
//! each, and its Incremental watermark.
//!
//! A job's truth is `speech_job_records` (one row per recording attempted: complete or
//! failed). The watermark only bounds the scan: recordings at or before it were all settled,
//! so an Incremental run reads past it plus the failed ones it must retry. It never passes a
//! recording that is still being recorded or uploaded, because such a call can start before
//! the watermark and become available after it.

use uuid::Uuid;

use super::exec::{Arg, args};
use super::model::{Direction, Recording};
use super::recordings::{RECORDING_COLUMNS, RECORDING_FROM, recording_from_row};
use super::{Db, Result, invalid, now_micros};

/// Which recordings a SpeechJob transcribes; empty lists and `None` match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeechSelection {
    /// RecordingProfile names.
    pub profiles: Vec<String>,
    /// Group names: a recording matches when it belongs to any of them.
    pub groups: Vec<String>,
    /// Shortest duration (answer to release), milliseconds, inclusive.
    pub min_duration_ms: Option<i64>,
    /// Longest duration, milliseconds, inclusive.
    pub max_duration_ms: Option<i64>,
    /// Calls that started at or after this instant (µs).
    pub from: Option<i64>,
    /// Calls that started before this instant (µs).
    pub to: Option<i64>,
    /// Only calls of this direction.
    pub direction: Option<Direction>,
}

/// A recording's position in the (start_time, id) order the job walks.
pub type SpeechPosition = (i64, Uuid);

/// The job's saved state; all `None` before its first run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeechJobState {
    pub watermark: Option<SpeechPosition>,
    pub last_run_time: Option<i64>,
    pub last_success_time: Option<i64>,
}

/// The job's counters over the recordings its selection matches now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeechCounts {
    /// Transcribed by this job.
    pub processed: i64,
    /// Attempted and failed (retried by the next run).
    pub failed: i64,
    /// Not attempted yet.
    pub pending: i64,
}

/// Appends the selection's predicates on `r` (a finished recording with media) to `sql`.
fn push_selection(sql: &mut String, params: &mut Vec<Arg>, sel: &SpeechSelection) {
    // Recording assurance test calls are never transcribed: tones, and gone within days.
    sql.push_str(
        " AND r.status IN ('available', 'incomplete') AND r.object_key IS NOT NULL \
         AND r.deleted_at IS NULL AND NOT r.assurance",
    );
    if !sel.profiles.is_empty() {
        sql.push_str(" AND r.profile IN (");
        list(sql, params, &sel.profiles);
        sql.push(')');
    }
    if !sel.groups.is_empty() {
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM recording_groups rg JOIN groups g ON g.tenant = \
             rg.tenant AND g.id = rg.group_id WHERE rg.tenant = r.tenant AND rg.recording_id = \
             r.id AND g.name IN (",
        );
        list(sql, params, &sel.groups);
        sql.push_str("))");
    }
    cmp(sql, params, "r.duration_ms >=", sel.min_duration_ms);
    cmp(sql, params, "r.duration_ms <=", sel.max_duration_ms);
    cmp(sql, params, "r.start_time >=", sel.from);
    cmp(sql, params, "r.start_time <", sel.to);
    if let Some(d) = sel.direction {
        params.push(Arg::from(d.as_str()));
        sql.push_str(&format!(" AND r.direction = ${}", params.len()));
    }
}

/// Appends `$N, $N+1, ...` for `items` to `sql`, binding each.
fn list(sql: &mut String, params: &mut Vec<Arg>, items: &[String]) {
    let marks: Vec<String> = items
        .iter()
        .map(|item| {
            params.push(Arg::from(item));
            format!("${}", params.len())
        })
        .collect();
    sql.push_str(&marks.join(", "));
}

/// Appends ` AND <expr> $N` binding `v`, when there is a bound.
fn cmp(sql: &mut String, params: &mut Vec<Arg>, expr: &str, v: Option<i64>) {
    if let Some(v) = v {
        params.push(Arg::from(v));
        sql.push_str(&format!(" AND {expr} ${}", params.len()));
    }
}

fn check_scope(tenant: &str, job: &str) -> Result<()> {
    if tenant.is_empty() || job.is_empty() {
        return Err(invalid(
            "speech job",
            "tenant and job name must not be empty",
        ));
    }
    Ok(())
}

impl Db {
    /// The job's watermark and run times (defaults before its first run).
    pub async fn speech_job_state(&self, tenant: &str, job: &str) -> Result<SpeechJobState> {
        check_scope(tenant, job)?;
        let state = self
            .row(
                "SELECT watermark_start, watermark_id, last_run_time, last_success_time \
                 FROM speech_job_state WHERE tenant = $1 AND job = $2",
                &args![tenant, job],
                |r| {
                    let watermark =
                        match (r.opt_i64("watermark_start")?, r.opt_uuid("watermark_id")?) {
                            (Some(t), Some(id)) => Some((t, id)),
                            _ => None,
                        };
                    Ok(SpeechJobState {
                        watermark,
                        last_run_time: r.opt_i64("last_run_time")?,
                        last_success_time: r.opt_i64("last_success_time")?,
                    })
                },
            )
            .await?;
        Ok(state.unwrap_or_default())
    }

    /// The next batch of recordings for a run, in (start_time, id) order after `after`, at most
    /// `limit`. `incremental`: only those this job has not transcribed, and of those only the
    /// ones past the job's watermark or failed before (retried). Otherwise (Backfill): every
    /// matching recording.
    pub async fn speech_candidates(
        &self,
        tenant: &str,
        job: &str,
        sel: &SpeechSelection,
        incremental: bool,
        after: Option<SpeechPosition>,
        limit: i64,
    ) -> Result<Vec<Recording>> {
        check_scope(tenant, job)?;
        let mut params = vec![Arg::from(tenant), Arg::from(job)];
        let mut sql =
            format!("SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1");
        push_selection(&mut sql, &mut params, sel);
        if incremental {
            sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM speech_job_records k WHERE k.tenant = r.tenant \
                 AND k.job = $2 AND k.recording_id = r.id AND k.status = 'complete') \
                 AND (NOT EXISTS (SELECT 1 FROM speech_job_state s WHERE s.tenant = r.tenant \
                 AND s.job = $2 AND s.watermark_start IS NOT NULL) \
                 OR EXISTS (SELECT 1 FROM speech_job_state s WHERE s.tenant = r.tenant \
                 AND s.job = $2 AND (r.start_time > s.watermark_start OR (r.start_time = \
                 s.watermark_start AND r.id > s.watermark_id))) \
                 OR EXISTS (SELECT 1 FROM speech_job_records k WHERE k.tenant = r.tenant \
                 AND k.job = $2 AND k.recording_id = r.id AND k.status = 'failed'))",
            );
        }
        if let Some((t, id)) = after {
            params.push(Arg::from(t));
            let n = params.len();
            params.push(Arg::from(id));
            sql.push_str(&format!(
                " AND (r.start_time > ${n} OR (r.start_time = ${n} AND r.id > ${}))",
                n + 1
            ));
        }
        params.push(Arg::from(limit.max(1)));
        sql.push_str(&format!(
            " ORDER BY r.start_time, r.id LIMIT ${}",
            params.len()
        ));
        self.rows(&sql, &params, recording_from_row).await
    }

    /// The earliest recording of the tenant that is still being recorded or uploaded: the
    /// watermark must stay before it.
    pub async fn earliest_open_recording(&self, tenant: &str) -> Result<Option<SpeechPosition>> {
        self.row(
            "SELECT start_time, id FROM recordings WHERE tenant = $1 \
             AND status IN ('recording', 'pending') ORDER BY start_time, id LIMIT 1",
            &args![tenant],
            |r| Ok((r.i64("start_time")?, r.uuid("id")?)),
        )
        .await
    }

    /// Records the outcome of one attempt: `error` is `None` when the transcripts are stored.
    pub async fn record_speech_result(
        &self,
        tenant: &str,
        job: &str,
        recording: Uuid,
        error: Option<&str>,
    ) -> Result<()> {
        check_scope(tenant, job)?;
        let status = if error.is_some() {
            "failed"
        } else {
            "complete"
        };
        let n = self
            .exec(
                "INSERT INTO speech_job_records (tenant, job, recording_id, status, attempts, \
                 error, updated_at) SELECT tenant, $2, id, $4, 1, $5, $6 FROM recordings \
                 WHERE tenant = $1 AND id = $3 \
                 ON CONFLICT (tenant, job, recording_id) DO UPDATE SET status = excluded.status, \
                 attempts = speech_job_records.attempts + 1, error = excluded.error, \
                 updated_at = excluded.updated_at",
                &args![
                    tenant,
                    job,
                    recording,
                    status,
                    error.unwrap_or(""),
                    now_micros()
                ],
            )
            .await?;
        if n == 0 {
            return Err(super::DbError::NotFound {
                kind: "recording",
                tenant: tenant.to_owned(),
                id: recording.to_string(),
            });
        }
        Ok(())
    }

    /// The failure message and attempt count of a recording this job failed on, if it did.
    pub async fn speech_failure(
        &self,
        tenant: &str,
        job: &str,
        recording: Uuid,
    ) -> Result<Option<(String, i64)>> {
        self.row(
            "SELECT error, attempts FROM speech_job_records WHERE tenant = $1 AND job = $2 \
             AND recording_id = $3 AND status = 'failed'",
            &args![tenant, job, recording],
            |r| Ok((r.text("error")?, r.i64("attempts")?)),
        )
        .await
    }

    /// Saves the end of a run: the watermark reached (kept when `None`), the run's start, and
    /// the same as the last successful run when `succeeded`.
    pub async fn finish_speech_run(
        &self,
        tenant: &str,
        job: &str,
        watermark: Option<SpeechPosition>,
        run_started: i64,
        succeeded: bool,
    ) -> Result<()> {
        check_scope(tenant, job)?;
        let (wt, wid) = match watermark {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        let success = succeeded.then_some(run_started);
        self.exec(
            "INSERT INTO speech_job_state (tenant, job, watermark_start, watermark_id, \
             last_run_time, last_success_time) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant, job) DO UPDATE SET \
             watermark_start = COALESCE(excluded.watermark_start, speech_job_state.watermark_start), \
             watermark_id = COALESCE(excluded.watermark_id, speech_job_state.watermark_id), \
             last_run_time = excluded.last_run_time, \
             last_success_time = COALESCE(excluded.last_success_time, speech_job_state.last_success_time)",
            &args![tenant, job, wt, wid, run_started, success],
        )
        .await?;
        Ok(())
    }

    /// Counters over the recordings the selection matches now.
    pub async fn speech_counts(
        &self,
        tenant: &str,
        job: &str,
        sel: &SpeechSelection,
    ) -> Result<SpeechCounts> {
        check_scope(tenant, job)?;
        let mut params = vec![Arg::from(tenant), Arg::from(job)];
        let mut sql = String::from(
            "SELECT COALESCE(SUM(CASE WHEN k.status = 'complete' THEN 1 ELSE 0 END), 0) AS done, \
             COALESCE(SUM(CASE WHEN k.status = 'failed' THEN 1 ELSE 0 END), 0) AS failed, \
             COALESCE(SUM(CASE WHEN k.status IS NULL THEN 1 ELSE 0 END), 0) AS pending \
             FROM recordings r LEFT JOIN speech_job_records k ON k.tenant = r.tenant \
             AND k.job = $2 AND k.recording_id = r.id WHERE r.tenant = $1",
        );
        push_selection(&mut sql, &mut params, sel);
        let counts = self
            .row(&sql, &params, |r| {
                Ok(SpeechCounts {
                    processed: r.i64("done")?,
                    failed: r.i64("failed")?,
                    pending: r.i64("pending")?,
                })
            })
            .await?;
        Ok(counts.unwrap_or_default())
    }
}
