//! The jobs' schedules in one process: retention per RecordingProfile at the time the operator's
//! CronJob uses, space cleanup per filesystem StorageTarget with `spaceCleanup` as often as the
//! operator's, recording assurance per RecordingProfile on `spec.assurance.schedule` (its test
//! call to the profile's local listener), archive per active Connector on its cron schedule,
//! and transcription per SpeechJob on its schedule or, without one, once (as the operator's
//! Job). Jobs run one at a time on a whole-minute tick, against the resources in force at that
//! minute, so a reload takes effect at the next run and never in the middle of one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Context as _;
use callvault_config::{KeyRingConfig, StorageBinding};
use callvault_crds::{Cron, RecordingProfile, ResourceSet};
use callvault_jobs::alarms::Alarms;
use callvault_jobs::archive::{ArchiveJob, ArchiveMode, run_archive};
use callvault_jobs::assurance::{self, AssuranceReport, Check, run_assurance};
use callvault_jobs::retention::{RetentionOptions, Target, run_retention};
use callvault_jobs::space::{SpaceJob, SpaceLimits, run_space_cleanup, space_note};
use callvault_jobs::transcribe::{build_engine, job_spec, transcribe_job};
use callvault_operator::build::job::JOB_RETRIES;
use callvault_operator::build::recording_profile::RETENTION_SCHEDULE;
use callvault_operator::build::storage_target::{SPACE_CLEANUP_SCHEDULE, job_config};
use callvault_operator::speech_config::{JobFiles, transcribe_job_config};
use callvault_portal::jobs::{JobRunner, Started};
use callvault_store::backup::BackupSecret;
use callvault_store::db::{Db, now_micros};
use callvault_store::keys::KeyRing;
use callvault_store::objstore::{Storage, StorageConfig};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::TENANT;

/// Rows read per query by retention and archive: small enough to keep memory flat.
const BATCH: u32 = 500;
/// Archive copies in flight at once: one machine, shared with live calls.
const ARCHIVE_CONCURRENCY: usize = 2;

/// What the jobs share with the rest of the process.
#[derive(Debug, Clone)]
pub struct Context {
    pub db: Db,
    pub data: std::path::PathBuf,
    /// Private keys, for Connectors that write decrypted copies.
    pub ring: Arc<KeyRing>,
    /// How long audit entries are kept, as the portal was told (validated there).
    pub audit_retention_days: u32,
    /// Where each run reports its part of its resource's status (and its alarm).
    pub board: super::status::Board,
    /// The user's resource directory, backed up with `<data>`'s configuration.
    pub resources: std::path::PathBuf,
    /// With a key, the daily backup runs.
    pub backup_key: Option<Arc<BackupSecret>>,
    /// The address the recorders listen on: where assurance test calls go.
    pub media_address: String,
}

/// When the daily backup runs (UTC), after retention has removed what expired.
const BACKUP_SCHEDULE: &str = "15 3 * * *";
/// Daily backups kept in `<data>/backups/`; older ones are removed.
const BACKUPS_KEPT: usize = 7;

/// One scheduled job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Job {
    Retention { profile: String },
    SpaceCleanup { storage_target: String },
    Assurance { profile: String },
    Archive { connector: String },
    Transcribe { speech_job: String },
    Backup,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Retention { profile } => write!(f, "retention of RecordingProfile {profile:?}"),
            Job::SpaceCleanup { storage_target } => {
                write!(f, "space cleanup of StorageTarget {storage_target:?}")
            }
            Job::Assurance { profile } => {
                write!(f, "recording assurance of RecordingProfile {profile:?}")
            }
            Job::Archive { connector } => write!(f, "archive of Connector {connector:?}"),
            Job::Transcribe { speech_job } => {
                write!(f, "transcription of SpeechJob {speech_job:?}")
            }
            Job::Backup => f.write_str("backup of the catalogue and configuration"),
        }
    }
}

/// The jobs a resource set schedules, with their schedules (pure). A schedule that does not
/// parse is reported and its job skipped; the others still run. SpeechJobs without a schedule
/// are in [`run_once`] instead.
pub fn planned(set: &ResourceSet) -> (Vec<(Job, Cron)>, Vec<String>) {
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    let mut add = |job: Job, schedule: &str| match Cron::parse(schedule) {
        Ok(cron) => jobs.push((job, cron)),
        Err(e) => problems.push(format!("{job}: {e}")),
    };
    // Disabled profiles keep their recordings, and those still expire.
    for name in set.recording_profiles.keys() {
        add(
            Job::Retention {
                profile: name.clone(),
            },
            RETENTION_SCHEDULE,
        );
    }
    for (name, target) in &set.storage_targets {
        if target.spec.space_cleanup.is_some() {
            add(
                Job::SpaceCleanup {
                    storage_target: name.clone(),
                },
                SPACE_CLEANUP_SCHEDULE,
            );
        }
    }
    // A disabled profile has no recorder to call (its CronJob is suspended in a cluster).
    for (name, profile) in &set.recording_profiles {
        if let (Some(a), false) = (&profile.spec.assurance, profile.spec.disabled) {
            add(
                Job::Assurance {
                    profile: name.clone(),
                },
                &a.schedule,
            );
        }
    }
    for (name, connector) in &set.connectors {
        if connector.spec.active {
            add(
                Job::Archive {
                    connector: name.clone(),
                },
                &connector.spec.schedule,
            );
        }
    }
    for (name, job) in &set.speech_jobs {
        if let (Some(schedule), false) = (&job.spec.schedule, job.spec.suspend) {
            add(
                Job::Transcribe {
                    speech_job: name.clone(),
                },
                schedule,
            );
        }
    }
    (jobs, problems)
}

/// SpeechJobs without a schedule, each with its spec as JSON: a Job in a cluster runs once per
/// spec, so here one runs once per spec seen by this process (a restart runs it again, which
/// in Incremental mode finds nothing new to do).
pub fn run_once(set: &ResourceSet) -> Vec<(Job, String)> {
    set.speech_jobs
        .iter()
        .filter(|(_, j)| j.spec.schedule.is_none() && !j.spec.suspend)
        .map(|(name, j)| {
            (
                Job::Transcribe {
                    speech_job: name.clone(),
                },
                serde_json::to_string(&j.spec).unwrap_or_default(),
            )
        })
        .collect()
}

/// Failed runs, run again as a cluster's Job runs a failed pod again: [`JOB_RETRIES`] times,
/// each after a longer pause (1, then 2 minutes: the scheduler ticks once a minute). A job
/// that is no longer planned (its resource removed or suspended) is not retried.
#[derive(Debug, Default)]
pub struct Retries {
    pending: BTreeMap<Job, (u32, DateTime)>,
}

impl Retries {
    /// Records a failed run at `now`; returns when it runs again, or `None` when it gave up.
    pub fn failed(&mut self, job: &Job, now: DateTime) -> Option<DateTime> {
        let failures = self.pending.get(job).map_or(0, |(n, _)| *n) + 1;
        if failures > JOB_RETRIES.unsigned_abs() {
            self.pending.remove(job);
            return None;
        }
        let pause = i64::from(1u32 << (failures - 1));
        let at = now.checked_add(pause.minutes()).ok()?;
        self.pending.insert(job.clone(), (failures, at));
        Some(at)
    }

    /// Records a successful run: the next failure starts counting again.
    pub fn succeeded(&mut self, job: &Job) {
        self.pending.remove(job);
    }

    /// The retries due at `now` among the jobs `planned` still names.
    pub fn due(&mut self, now: DateTime, planned: impl Fn(&Job) -> bool) -> Vec<Job> {
        self.pending.retain(|job, _| planned(job));
        self.pending
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(job, _)| job.clone())
            .collect()
    }
}

/// The jobs due in the minutes after `last` up to and including `now` (both UTC).
pub fn due(jobs: &[(Job, Cron)], last: DateTime, now: DateTime) -> Vec<Job> {
    jobs.iter()
        .filter(|(_, cron)| cron.next_after(last).is_some_and(|next| next <= now))
        .map(|(job, _)| job.clone())
        .collect()
}

/// "Run now" from the portal: the job goes to the scheduler, which runs it next (jobs run one
/// at a time, so one in progress finishes first).
#[derive(Debug, Clone)]
pub struct RunNow(mpsc::UnboundedSender<Job>);

/// The portal's side of "Run now", and the scheduler's.
pub fn run_now() -> (RunNow, mpsc::UnboundedReceiver<Job>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (RunNow(tx), rx)
}

impl JobRunner for RunNow {
    fn run_speech_job<'a>(&'a self, tenant: &'a str, name: &'a str) -> Started<'a> {
        Box::pin(async move {
            if tenant != TENANT {
                return Err(format!("standalone has no tenant {tenant:?}"));
            }
            self.0
                .send(Job::Transcribe {
                    speech_job: name.to_owned(),
                })
                .map_err(|_| "the scheduler has stopped".to_owned())?;
            Ok("in this process, now".to_owned())
        })
    }
}

/// Runs the schedules, and each job asked for by `requests`, until `stop` turns true; a run
/// in progress finishes first.
pub async fn run(
    ctx: Context,
    mut resources: watch::Receiver<Arc<ResourceSet>>,
    mut stop: watch::Receiver<bool>,
    mut requests: mpsc::UnboundedReceiver<Job>,
) {
    let mut last = utc_now();
    let mut ran_once = BTreeSet::new();
    let mut retries = Retries::default();
    loop {
        let wait = seconds_to_next_minute();
        let asked = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            Some(job) = requests.recv() => Some(job),
            _ = tokio::time::sleep(wait) => None,
        };
        if let Some(job) = asked {
            let set = resources.borrow().clone();
            run_counting_failures(&ctx, &set, job, &mut retries, utc_now()).await;
            continue;
        }
        let now = utc_now();
        let set = resources.borrow_and_update().clone();
        let (mut jobs, problems) = planned(&set);
        if ctx.backup_key.is_some()
            && let Ok(cron) = Cron::parse(BACKUP_SCHEDULE)
        {
            jobs.push((Job::Backup, cron));
        }
        for p in problems {
            tracing::error!("{p}: not scheduled");
        }
        let once = run_once(&set);
        let is_planned =
            |job: &Job| jobs.iter().any(|(j, _)| j == job) || once.iter().any(|(j, _)| j == job);
        let mut todo: BTreeSet<Job> = retries.due(now, is_planned).into_iter().collect();
        todo.extend(due(&jobs, last, now));
        todo.extend(
            once.into_iter()
                .filter(|key| ran_once.insert(key.clone()))
                .map(|(job, _)| job),
        );
        for job in todo {
            run_counting_failures(&ctx, &set, job, &mut retries, now).await;
        }
        last = now;
    }
}

/// Runs `job`; a failure is retried later ([`Retries`]).
async fn run_counting_failures(
    ctx: &Context,
    set: &ResourceSet,
    job: Job,
    retries: &mut Retries,
    now: DateTime,
) {
    let span = tracing::info_span!("job", job = %job);
    match run_job(ctx, set, &job).instrument(span).await {
        Ok(()) => retries.succeeded(&job),
        Err(e) => {
            let error = format!("{e:#}");
            match retries.failed(&job, now) {
                Some(at) => tracing::error!(%error, "{job} failed; it runs again at {at} UTC"),
                None => tracing::error!(
                    %error,
                    "{job} failed {} times in a row; no more retries until its next scheduled run",
                    JOB_RETRIES + 1
                ),
            }
        }
    }
}

fn utc_now() -> DateTime {
    Timestamp::now().to_zoned(TimeZone::UTC).datetime()
}

fn seconds_to_next_minute() -> std::time::Duration {
    let now = Timestamp::now();
    let into_minute = now.as_millisecond().rem_euclid(60_000);
    // A little past the minute, so the tick's clock reading is inside the new minute.
    std::time::Duration::from_millis(u64::try_from(60_000 - into_minute).unwrap_or(0) + 50)
}

/// One run of one job, with the storage targets opened from `set`.
pub async fn run_job(ctx: &Context, set: &ResourceSet, job: &Job) -> anyhow::Result<()> {
    match job {
        Job::Retention { profile } => {
            let p = set
                .recording_profiles
                .get(profile)
                .context("the profile is gone")?;
            let name = &p.spec.storage_target_ref.name;
            let storage = open(ctx, set, name)?;
            let summary = run_retention(
                &ctx.db,
                Target {
                    name,
                    storage: &storage,
                },
                TENANT,
                profile,
                now_micros(),
                RetentionOptions {
                    batch_size: BATCH,
                    audit_retention_days: ctx.audit_retention_days,
                },
            )
            .await?;
            tracing::info!(
                removed = summary.removed(),
                failures = summary.failures.len(),
                "retention done"
            );
            let days = u32::try_from(p.spec.retention.days).unwrap_or(0);
            ctx.board.retention_ran(
                profile,
                &callvault_jobs::cluster::retention_status(days, &summary, now_micros()),
            );
        }
        Job::SpaceCleanup { storage_target } => {
            let target = set
                .storage_targets
                .get(storage_target)
                .context("the StorageTarget is gone")?;
            let config = job_config(target, TENANT, ctx.data.join("database-url"))?
                .context("the StorageTarget no longer asks for space cleanup")?;
            let valid = config
                .validate()
                .map_err(|e| anyhow::anyhow!("StorageTarget {storage_target:?}: {e}"))?;
            let storage = open(ctx, set, storage_target)?;
            let summary = run_space_cleanup(&SpaceJob {
                db: &ctx.db,
                tenant: TENANT,
                target: Target {
                    name: storage_target,
                    storage: &storage,
                },
                root: &valid.root,
                limits: SpaceLimits {
                    max_used_bytes: config.max_used_bytes,
                    min_free_percent: config.min_free_percent,
                },
                batch_size: BATCH,
                // Standalone sends no mail: alarms are listed in the portal.
                alarms: &Alarms {
                    db: &ctx.db,
                    tenant: TENANT,
                    mailer: None,
                },
            })
            .await?;
            tracing::info!("space cleanup done: {}", space_note(&summary));
        }
        Job::Backup => {
            let key = ctx.backup_key.as_ref().context("no backup key")?;
            let dir = ctx.data.join("backups");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let name = format!(
                "callvault-{}.cvbackup",
                Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
            );
            let system = crate::cmd::backup::SystemArgs {
                data: Some(ctx.data.clone()),
                database_url_file: None,
                resources: Some(ctx.resources.clone()),
            };
            let summary =
                crate::cmd::backup::write_backup(&ctx.db, &system, &dir.join(&name), key).await?;
            // Names sort by time: keep the newest.
            let mut old: Vec<_> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "cvbackup"))
                .collect();
            old.sort();
            old.reverse();
            for stale in old.into_iter().skip(BACKUPS_KEPT) {
                std::fs::remove_file(&stale)
                    .with_context(|| format!("removing {}", stale.display()))?;
            }
            tracing::info!(
                file = %name,
                rows = summary.catalogue.rows,
                files = summary.files,
                "backup done"
            );
        }
        Job::Assurance { profile } => {
            let p = set
                .recording_profiles
                .get(profile)
                .context("the profile is gone")?;
            // A check that cannot even start is a failed check: it shows as one.
            let report = match assurance_check(ctx, set, p).await {
                Ok(report) => report,
                Err(e) => {
                    let report = AssuranceReport::not_run(profile, format!("{e:#}"));
                    assurance::audit(&ctx.db, TENANT, &report).await;
                    report
                }
            };
            ctx.board.assurance_ran(&report, p.metadata.generation);
        }
        Job::Archive { connector } => {
            let c = set
                .connectors
                .get(connector)
                .context("the Connector is gone")?;
            let destination_name = &c.spec.storage_target_ref.name;
            let destination = open(ctx, set, destination_name)?;
            let mut sources = BTreeMap::new();
            for name in set.storage_targets.keys() {
                if name != destination_name {
                    sources.insert(name.clone(), open(ctx, set, name)?);
                }
            }
            let summary = run_archive(&ArchiveJob {
                db: &ctx.db,
                tenant: TENANT,
                connector,
                profiles: &c.spec.source.recording_profiles,
                sources: &sources,
                destination_name,
                destination: &destination,
                mode: if c.spec.encrypt {
                    ArchiveMode::Envelope
                } else {
                    ArchiveMode::Plaintext(&ctx.ring)
                },
                batch_size: BATCH,
                concurrency: ARCHIVE_CONCURRENCY,
            })
            .await?;
            ctx.board
                .archive_ran(connector, &summary, c.metadata.generation);
            tracing::info!(
                outcome = ?summary.outcome(),
                archived = summary.archived,
                failures = summary.failures.len(),
                pending = summary.counts.pending,
                "archive done"
            );
        }
        Job::Transcribe { speech_job } => {
            let job = set
                .speech_jobs
                .get(speech_job)
                .context("the SpeechJob is gone")?;
            let mut bindings = Vec::new();
            let mut sources = BTreeMap::new();
            for (name, target) in &set.storage_targets {
                bindings.push(StorageBinding {
                    name: name.clone(),
                    storage: StorageConfig::from_spec(&serde_json::to_value(&target.spec)?)?,
                    credentials_dir: super::credentials_dir(&ctx.data, target),
                });
                sources.insert(name.clone(), open(ctx, set, name)?);
            }
            let creds = job
                .spec
                .engine
                .credentials_secret_ref
                .as_ref()
                .map(|r| ctx.data.join("secrets").join(&r.name));
            let config = transcribe_job_config(
                TENANT,
                job,
                bindings,
                JobFiles {
                    database_url_file: ctx.data.join("database-url"),
                    // Unused here: the keys are already unlocked in `ctx.ring`.
                    key_ring: KeyRingConfig {
                        dir: ctx.data.join("keys"),
                        passphrase_file: None,
                    },
                    engine_credentials_dir: creds,
                },
            )?;
            let valid = config
                .validate()
                .map_err(|e| anyhow::anyhow!("SpeechJob {speech_job:?}: {e}"))?;
            let engine = build_engine(&valid).await?;
            let spec = job_spec(&valid);
            // The job's inner stream of futures borrows with lifetimes the compiler cannot
            // prove `Send` inside `tokio::spawn`; this thread runs it to the end instead (the
            // runtime has others for the calls and the portal).
            let summary = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(transcribe_job(&ctx.db, &sources, &ctx.ring, &engine, &spec))
            })?;
            ctx.board
                .transcription_ran(speech_job, &summary.status_patch());
            tracing::info!(
                transcribed = summary.transcribed,
                failures = summary.failures.len(),
                "transcription done"
            );
        }
    }
    Ok(())
}

/// One assurance run of `profile`: its test call to the local listener, its recording read
/// from the profile's StorageTarget and decrypted with the keys already unlocked.
async fn assurance_check(
    ctx: &Context,
    set: &ResourceSet,
    profile: &RecordingProfile,
) -> anyhow::Result<AssuranceReport> {
    let target_name = &profile.spec.storage_target_ref.name;
    let target = set
        .storage_targets
        .get(target_name)
        .with_context(|| format!("no StorageTarget {target_name:?}"))?;
    let binding = StorageBinding {
        name: target_name.clone(),
        storage: StorageConfig::from_spec(&serde_json::to_value(&target.spec)?)?,
        credentials_dir: super::credentials_dir(&ctx.data, target),
    };
    let config = callvault_operator::build::assurance::job_config(
        TENANT,
        profile,
        format!(
            "sip:{}:{}",
            ctx.media_address, profile.spec.recorder.sip.port
        ),
        binding,
        ctx.data.join("database-url"),
        // Unused here: the keys are already unlocked in `ctx.ring`.
        KeyRingConfig {
            dir: ctx.data.join("keys"),
            passphrase_file: None,
        },
    )?
    .context("the profile has no spec.assurance")?;
    let valid = config
        .validate()
        .map_err(|e| anyhow::anyhow!("recording assurance: {e}"))?;
    let storage = open(ctx, set, target_name)?;
    Ok(run_assurance(Check {
        db: &ctx.db,
        config: &valid,
        storage: &storage,
        ring: &ctx.ring,
    })
    .await)
}

fn open(ctx: &Context, set: &ResourceSet, name: &str) -> anyhow::Result<Storage> {
    let target = set
        .storage_targets
        .get(name)
        .with_context(|| format!("no StorageTarget {name:?}"))?;
    let dir = super::credentials_dir(&ctx.data, target);
    crate::cmd::portal::open_storage(name, target, dir.as_deref())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn set(yaml: &str) -> ResourceSet {
        ResourceSet::from_files([(std::path::Path::new("jobs.yaml"), yaml)]).unwrap()
    }

    const RESOURCES: &str = "
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: local, namespace: default}
spec: {type: filesystem, path: /var/lib/callvault/recordings}
---
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: archive, namespace: default}
spec: {type: filesystem, path: /var/lib/callvault/archive}
---
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: agents, namespace: default}
spec:
  selector: {allUsers: true}
  retention: {days: 30}
  storageTargetRef: {name: local}
  encryption: {keySecretRef: {name: k, key: public.pem}}
---
apiVersion: callvault.io/v1alpha1
kind: Connector
metadata: {name: nightly, namespace: default}
spec:
  storageTargetRef: {name: archive}
  schedule: '0 3 * * *'
---
apiVersion: callvault.io/v1alpha1
kind: Connector
metadata: {name: paused, namespace: default}
spec:
  storageTargetRef: {name: archive}
  active: false
";

    #[test]
    fn retention_daily_and_active_connectors_on_their_schedules() {
        let (jobs, problems) = planned(&set(RESOURCES));
        assert!(problems.is_empty(), "{problems:?}");
        let retention = Job::Retention {
            profile: "agents".into(),
        };
        let nightly = Job::Archive {
            connector: "nightly".into(),
        };
        let names: Vec<&Job> = jobs.iter().map(|(j, _)| j).collect();
        assert_eq!(
            names,
            [&retention, &nightly],
            "the inactive Connector is not scheduled"
        );

        let day = date(2026, 11, 24);
        assert_eq!(due(&jobs, day.at(2, 0, 0, 0), day.at(2, 29, 0, 0)), []);
        assert_eq!(
            due(&jobs, day.at(2, 29, 0, 0), day.at(2, 30, 0, 0)),
            std::slice::from_ref(&retention)
        );
        // A tick that came late still runs what fell due in between, once.
        assert_eq!(
            due(&jobs, day.at(2, 29, 0, 0), day.at(3, 1, 0, 0)),
            [retention, nightly]
        );
    }

    #[test]
    fn a_target_with_space_cleanup_is_checked_every_ten_minutes() {
        let yaml = RESOURCES.replace(
            "spec: {type: filesystem, path: /var/lib/callvault/recordings}",
            "spec: {type: filesystem, path: /var/lib/callvault/recordings, \
             spaceCleanup: {maxUsedBytes: 1000000}}",
        );
        let (jobs, problems) = planned(&set(&yaml));
        assert!(problems.is_empty(), "{problems:?}");
        let cleanup = Job::SpaceCleanup {
            storage_target: "local".into(),
        };
        let day = date(2026, 11, 24);
        assert_eq!(
            due(&jobs, day.at(9, 9, 0, 0), day.at(9, 10, 0, 0)),
            std::slice::from_ref(&cleanup)
        );
        assert_eq!(due(&jobs, day.at(9, 10, 0, 0), day.at(9, 19, 0, 0)), []);
    }

    #[test]
    fn assurance_is_planned_on_its_schedule_unless_the_profile_is_disabled() {
        let with = RESOURCES.replace(
            "  encryption: {keySecretRef: {name: k, key: public.pem}}\n",
            "  encryption: {keySecretRef: {name: k, key: public.pem}}\n  assurance: {schedule: '0 6 * * *'}\n",
        );
        let assurance = Job::Assurance {
            profile: "agents".into(),
        };
        let (jobs, problems) = planned(&set(&with));
        assert!(problems.is_empty(), "{problems:?}");
        let day = date(2026, 11, 24);
        assert_eq!(
            due(&jobs, day.at(5, 59, 0, 0), day.at(6, 0, 0, 0)),
            std::slice::from_ref(&assurance)
        );
        let disabled = with.replace(
            "  retention: {days: 30}\n",
            "  retention: {days: 30}\n  disabled: true\n",
        );
        let (jobs, _) = planned(&set(&disabled));
        assert!(
            !jobs.iter().any(|(j, _)| *j == assurance),
            "a disabled profile has no recorder to call"
        );
    }

    #[test]
    fn a_failed_run_is_retried_twice_with_back_off_while_still_planned() {
        let job = Job::Transcribe {
            speech_job: "once".into(),
        };
        let t = date(2026, 11, 24).at(10, 0, 0, 0);
        let mut r = Retries::default();
        assert_eq!(r.failed(&job, t), Some(t.checked_add(1.minute()).unwrap()));
        assert_eq!(r.due(t, |_| true), []);
        let t2 = date(2026, 11, 24).at(10, 1, 0, 0);
        assert_eq!(r.due(t2, |_| true), std::slice::from_ref(&job));
        assert_eq!(
            r.failed(&job, t2),
            Some(t2.checked_add(2.minutes()).unwrap())
        );
        let t3 = date(2026, 11, 24).at(10, 3, 0, 0);
        assert_eq!(r.due(t3, |_| true), std::slice::from_ref(&job));
        assert_eq!(r.failed(&job, t3), None, "three failures: given up");
        assert_eq!(r.due(t3.checked_add(1.hour()).unwrap(), |_| true), []);

        // A success starts the count again; a job no longer planned is dropped.
        r.failed(&job, t);
        r.succeeded(&job);
        assert_eq!(r.due(t3, |_| true), []);
        r.failed(&job, t);
        assert_eq!(r.due(t3, |_| false), []);
        assert_eq!(r.due(t3, |_| true), [], "dropped for good");
    }

    #[test]
    fn a_bad_schedule_is_refused_when_the_resources_load() {
        // The CRD's rule, as the API server applies it: the set never reaches the scheduler.
        let yaml = RESOURCES.replace("'0 3 * * *'", "'0 25 * * *'");
        let err = ResourceSet::from_files([(std::path::Path::new("jobs.yaml"), yaml.as_str())])
            .expect_err("an hour of 25 is refused")
            .to_string();
        assert!(err.contains("nightly") && err.contains("schedule"), "{err}");
    }
}
