//! Space-based cleanup of a filesystem StorageTarget (media-manager F-85: "starts deleting call
//! recordings as soon as the allocated storage is full"): when the recordings under the target
//! take more than `maxUsedBytes`, or its volume has less than `minFreePercent` free, an alarm is
//! raised first, then the oldest recordings not under legal hold are removed until enough is
//! freed, each removal audited.
//!
//! Removal is retention's (media, then audit entry, then row marked deleted, media only: the
//! call details stay in the catalogue and archive copies elsewhere are untouched), so a run
//! killed part-way is completed by the next one and a hold placed during the run still wins.
//! Retention days do not protect a recording from this cleanup: they bound how long a
//! recording is kept, not how long it must be; legal hold is what keeps one.

use std::path::{Path, PathBuf};

use callvault_store::db::{AlarmSeverity, Db, DbError};
use uuid::Uuid;

use crate::alarms::{AlarmError, AlarmKind, Alarms, Observation, Transition};
use crate::retention::{Outcome, Reason, RetentionFailure, Run, Target};

/// Actor of every audit entry the cleanup writes.
pub const SYSTEM_ACTOR: &str = "system:space-cleanup";
/// Audit action of a recording removed to free space.
pub const CLEANUP_ACTION: &str = "recording.space_cleanup";

/// The limits of one target (from `spec.spaceCleanup`); at least one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpaceLimits {
    /// Bytes the files under the target's directory may take.
    pub max_used_bytes: Option<u64>,
    /// Percentage of the volume that must stay free (1-99).
    pub min_free_percent: Option<u8>,
}

/// What was measured: the target's own files and the volume they are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the files under the target's directory.
    pub used_bytes: u64,
    /// Bytes free on the volume (for unprivileged writers).
    pub free_bytes: u64,
    /// Size of the volume.
    pub total_bytes: u64,
}

/// How many bytes must go for `usage` to be within `limits` (0 when it is), and why.
pub fn bytes_to_free(limits: &SpaceLimits, usage: &Usage) -> (u64, Vec<String>) {
    let mut need = 0;
    let mut why = Vec::new();
    if let Some(max) = limits.max_used_bytes
        && usage.used_bytes > max
    {
        need = need.max(usage.used_bytes - max);
        why.push(format!(
            "recordings take {} bytes, more than the {max} allowed",
            usage.used_bytes
        ));
    }
    if let Some(percent) = limits.min_free_percent {
        let wanted = u64::try_from(u128::from(usage.total_bytes) * u128::from(percent) / 100)
            .unwrap_or(u64::MAX);
        if usage.free_bytes < wanted {
            need = need.max(wanted - usage.free_bytes);
            why.push(format!(
                "{} of {} bytes free on the volume, less than {percent}%",
                usage.free_bytes, usage.total_bytes
            ));
        }
    }
    (need, why)
}

/// Measures the files under `root` and the volume holding it.
pub async fn measure(root: &Path) -> Result<Usage, SpaceError> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || measure_blocking(&root))
        .await
        .map_err(|e| SpaceError::Measure {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
}

// The block counts' types differ between platforms (u64 on 64-bit Linux).
#[allow(clippy::useless_conversion)]
fn measure_blocking(root: &Path) -> Result<Usage, SpaceError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source: std::io::Error| SpaceError::Measure { path, source }
    };
    let mut used: u64 = 0;
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(fail(&dir))? {
            let entry = entry.map_err(fail(&dir))?;
            let meta = entry.metadata().map_err(fail(&entry.path()))?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                used = used.saturating_add(meta.len());
            }
        }
    }
    let stat = nix::sys::statvfs::statvfs(root).map_err(|e| fail(root)(e.into()))?;
    let unit = u64::from(stat.fragment_size());
    let blocks_used = u64::from(stat.blocks()).saturating_sub(u64::from(stat.blocks_free()));
    let available = u64::from(stat.blocks_available());
    Ok(Usage {
        used_bytes: used,
        free_bytes: available.saturating_mul(unit),
        total_bytes: blocks_used.saturating_add(available).saturating_mul(unit),
    })
}

/// One run over one target.
#[derive(Debug)]
pub struct SpaceJob<'a> {
    pub db: &'a Db,
    pub tenant: &'a str,
    /// The target's name (as recordings carry it) and its opened binding.
    pub target: Target<'a>,
    /// The directory the target's objects are under (its `path` and `prefix`).
    pub root: &'a Path,
    pub limits: SpaceLimits,
    /// Recordings read per query (at least 1).
    pub batch_size: u32,
    /// Where the alarm goes.
    pub alarms: &'a Alarms<'a>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceSummary {
    /// Usage when the run started.
    pub before: Usage,
    /// Bytes the run set out to free (0: within the limits, nothing was done).
    pub to_free: u64,
    /// Bytes of the recordings removed.
    pub freed: u64,
    /// Recordings removed.
    pub removed: u64,
    /// Candidates left alone because a legal hold was found when re-read.
    pub skipped_under_hold: u64,
    /// Recordings that could not be removed; the next run retries them.
    pub failures: Vec<RetentionFailure>,
    /// Usage after the run.
    pub after: Usage,
    /// Bytes still over the limits after the run (only held recordings, or failures, left).
    pub still_over: u64,
    /// Alarm transitions the run caused, in order (raise first, then clear or escalation).
    pub alarms: Vec<Transition>,
}

/// Errors that stop a run (per-recording problems are in the summary instead).
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("invalid space cleanup setting {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("cannot measure {}: {source}", path.display())]
    Measure {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("space cleanup query failed: {0}")]
    Db(#[from] DbError),
    /// Nothing is deleted unless the alarm announcing it was stored.
    #[error("the space alarm could not be raised, so nothing was deleted: {0}")]
    Alarm(#[from] AlarmError),
}

/// The alarm of a target over its limits: Major while cleanup frees space, Critical when it
/// could not (what is left is held or failed); cleared when within the limits.
fn observation(target: &str, raised: Option<(AlarmSeverity, String)>) -> Observation {
    Observation {
        kind: AlarmKind::StorageSpaceLow,
        source: target.to_owned(),
        raised,
    }
}

/// Runs space-based cleanup for `job.target`.
pub async fn run_space_cleanup(job: &SpaceJob<'_>) -> Result<SpaceSummary, SpaceError> {
    if job.batch_size == 0 {
        return Err(SpaceError::Invalid {
            field: "batch_size",
            reason: "must be at least 1".to_owned(),
        });
    }
    if job.limits.max_used_bytes.is_none() && job.limits.min_free_percent.is_none() {
        return Err(SpaceError::Invalid {
            field: "limits",
            reason: "set maxUsedBytes, minFreePercent or both".to_owned(),
        });
    }
    if let Some(p) = job.limits.min_free_percent
        && !(1..=99).contains(&p)
    {
        return Err(SpaceError::Invalid {
            field: "minFreePercent",
            reason: format!("{p} is outside 1..=99"),
        });
    }
    let name = job.target.name;
    let mut summary = SpaceSummary {
        before: measure(job.root).await?,
        ..SpaceSummary::default()
    };
    let (need, why) = bytes_to_free(&job.limits, &summary.before);
    summary.to_free = need;
    if need == 0 {
        summary.after = summary.before;
        summary
            .alarms
            .extend(job.alarms.apply(&observation(name, None)).await?);
        return Ok(summary);
    }
    // The alarm first: an admin learns that recordings are about to go before any does.
    let message = format!(
        "Not enough space on storage target {name}: {}. Will attempt to free {need} bytes by \
         deleting the oldest recordings not under legal hold.",
        why.join("; ")
    );
    summary.alarms.extend(
        job.alarms
            .apply(&observation(name, Some((AlarmSeverity::Major, message))))
            .await?,
    );

    let run = Run {
        db: job.db,
        target: job.target,
        tenant: job.tenant,
        profile: "",
        limit: i64::from(job.batch_size),
    };
    let mut after: Option<(i64, Uuid)> = None;
    'walk: while summary.freed < need {
        let rows = job
            .db
            .oldest_removable_on_target(job.tenant, name, after, run.limit)
            .await?;
        let Some(last) = rows.last() else { break };
        // Failed rows stay in place; the cursor moves past them so the run terminates.
        after = Some((last.start_time, last.id));
        for rec in rows {
            let size = rec
                .size_bytes
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0);
            match run.remove(rec.id, Reason::Space).await {
                Outcome::Removed => {
                    summary.removed += 1;
                    summary.freed = summary.freed.saturating_add(size);
                }
                Outcome::Held => summary.skipped_under_hold += 1,
                Outcome::Gone => {}
                Outcome::Failed(f) => summary.failures.push(f),
            }
            if summary.freed >= need {
                break 'walk;
            }
        }
    }

    summary.after = measure(job.root).await?;
    let (still, why) = bytes_to_free(&job.limits, &summary.after);
    summary.still_over = still;
    let outcome = (still > 0).then(|| {
        (
            AlarmSeverity::Critical,
            format!(
                "Storage target {name} is still over its space limit after deleting {} \
                 recordings ({} bytes): {}. What is left is under legal hold or could not be \
                 deleted ({} failures); recordings may soon be refused.",
                summary.removed,
                summary.freed,
                why.join("; "),
                summary.failures.len()
            ),
        )
    });
    summary
        .alarms
        .extend(job.alarms.apply(&observation(name, outcome)).await?);
    tracing::info!(
        tenant = job.tenant,
        storage_target = name,
        to_free = summary.to_free,
        freed = summary.freed,
        removed = summary.removed,
        skipped_under_hold = summary.skipped_under_hold,
        failures = summary.failures.len(),
        still_over = summary.still_over,
        "space cleanup finished"
    );
    Ok(summary)
}

/// One line on a run, for its Event and the standalone output.
pub fn space_note(s: &SpaceSummary) -> String {
    if s.to_free == 0 {
        return format!(
            "within limits: {} bytes used, {} of {} bytes free on the volume",
            s.before.used_bytes, s.before.free_bytes, s.before.total_bytes
        );
    }
    let mut note = format!(
        "freed {} of {} bytes by deleting {} recordings; {} kept under legal hold",
        s.freed, s.to_free, s.removed, s.skipped_under_hold
    );
    if s.still_over > 0 {
        note.push_str(&format!("; still {} bytes over the limit", s.still_over));
    }
    if let Some(f) = s.failures.first() {
        note.push_str(&format!(
            "; {} could not be deleted (retried next run), first {}: {}",
            s.failures.len(),
            f.recording_id,
            f.error
        ));
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64, free: u64, total: u64) -> Usage {
        Usage {
            used_bytes: used,
            free_bytes: free,
            total_bytes: total,
        }
    }

    #[test]
    fn the_larger_shortfall_of_either_limit_is_freed() {
        let both = SpaceLimits {
            max_used_bytes: Some(1000),
            min_free_percent: Some(10),
        };
        assert_eq!(bytes_to_free(&both, &usage(900, 500, 1000)).0, 0);
        let (need, why) = bytes_to_free(&both, &usage(1300, 500, 10_000));
        assert_eq!(need, 500, "300 over the quota, 500 short of 10% free");
        assert_eq!(why.len(), 2, "{why:?}");
        assert_eq!(bytes_to_free(&both, &usage(1001, 50, 1000)).0, 50);
        let quota = SpaceLimits {
            max_used_bytes: Some(1000),
            min_free_percent: None,
        };
        assert_eq!(bytes_to_free(&quota, &usage(1000, 0, 1000)).0, 0);
    }
}
