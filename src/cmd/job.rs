//! `callvault job …`: the scheduled workloads, each one run of a CronJob.
//!
//! In a cluster (`CALLVAULT_POD_NAMESPACE` set) each job writes its summary into its
//! resource's status under its own field manager and emits an Event; otherwise it prints the
//! summary. The exit status is 0 when everything was done, 1 when some items failed (they are
//! retried by the next run), and an error when the run could not start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use callvault_config::{
    ArchiveJobConfig, AssuranceJobConfig, DEFAULT_JOB_CONFIG_PATH, RecorderConfig,
    SpaceCleanupJobConfig, TranscribeJobConfig,
};
use callvault_crds::{Connector, RecordingProfile, StorageTarget};
use callvault_jobs::alarms::{self, Alarms, Mailer};
use callvault_jobs::archive::{ArchiveJob, ArchiveMode, RunOutcome, run_archive};
use callvault_jobs::assurance::{Check, run_assurance};
use callvault_jobs::cluster::{
    ARCHIVE_FIELD_MANAGER, ASSURANCE_FIELD_MANAGER, Cluster, SPACE_CLEANUP_FIELD_MANAGER,
    retention_note, transcribe_note,
};
use callvault_jobs::retention::{RetentionOptions, Target, run_retention};
use callvault_jobs::space::{SpaceJob, SpaceLimits, run_space_cleanup, space_note};
use callvault_jobs::vault;
use callvault_store::objstore::{self, Credentials};

/// Where the operator mounts a RecordingProfile's recorder configuration.
const RECORDER_CONFIG_PATH: &str = "/etc/callvault/recorder.yaml";

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Remove expired recordings and carry out deferred deletions for one RecordingProfile,
    /// and purge old audit entries.
    Retention(RetentionArgs),
    /// Place a recording assurance test call through a RecordingProfile and check its
    /// recording end to end (found, sealed, decrypted, each channel as sent).
    Assurance(AssuranceArgs),
    /// Copy recordings to a Connector's destination.
    Archive(ArchiveArgs),
    /// Transcribe recordings for a SpeechJob.
    Transcribe(TranscribeArgs),
    /// Free space on a filesystem StorageTarget over its `spaceCleanup` limits: raise the
    /// alarm, then delete the oldest recordings not under legal hold.
    SpaceCleanup(SpaceCleanupArgs),
}

#[derive(Debug, clap::Args)]
pub struct SpaceCleanupArgs {
    /// The StorageTarget (it must be the one the configuration file is for).
    #[arg(long)]
    storage_target: String,
    /// The space cleanup job configuration the operator renders from the StorageTarget.
    #[arg(long, default_value = DEFAULT_JOB_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// The RecordingProfile (it must be the one the configuration file is for).
    #[arg(long)]
    profile: String,
    /// The profile's recorder configuration (storage, database URL file, retention days).
    #[arg(long, default_value = RECORDER_CONFIG_PATH)]
    config: PathBuf,
    /// Audit entries older than this many days are purged (1-3650).
    #[arg(long, env = "CALLVAULT_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    audit_retention_days: u32,
    /// Recordings read per database query.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
}

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// The Connector (it must be the one the configuration file is for).
    #[arg(long)]
    connector: String,
    /// The archive job configuration the operator renders from the Connector.
    #[arg(long, default_value = DEFAULT_JOB_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    /// The SpeechJob (it must be the one the configuration file is for).
    #[arg(long)]
    speech_job: String,
    /// The transcription job configuration the operator renders from the SpeechJob.
    #[arg(long, default_value = DEFAULT_JOB_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AssuranceArgs {
    /// The RecordingProfile (it must be the one the configuration file is for).
    #[arg(long)]
    profile: String,
    /// The assurance job configuration the operator renders from the RecordingProfile.
    #[arg(long, default_value = DEFAULT_JOB_CONFIG_PATH)]
    config: PathBuf,
}

pub fn run(job: JobCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match job {
        JobCommand::Retention(args) => runtime.block_on(retention(args)),
        JobCommand::Archive(args) => runtime.block_on(archive(args)),
        JobCommand::Transcribe(args) => runtime.block_on(transcribe(args)),
        JobCommand::Assurance(args) => runtime.block_on(assurance(args)),
        JobCommand::SpaceCleanup(args) => runtime.block_on(space_cleanup(args)),
    }
}

fn exit(all_done: bool) -> ExitCode {
    if all_done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn retention(args: RetentionArgs) -> anyhow::Result<ExitCode> {
    let valid = RecorderConfig::load(&args.config)
        .with_context(|| format!("recorder configuration {}", args.config.display()))?;
    let config = &valid.config;
    configuration_of(
        "RecordingProfile",
        &args.config,
        &config.profile,
        &args.profile,
    )?;
    let span = tracing::info_span!("retention", tenant = %config.tenant, profile = %config.profile);
    let _guard = span.enter();
    let cluster = Cluster::from_env().await?;
    let db = vault::connect_db(&config.database_url_file).await?;
    let credentials = match &config.storage_credentials_dir {
        Some(dir) => Credentials::from_dir(dir)?,
        None => Credentials::none(),
    };
    let storage = objstore::open(&config.storage, &credentials).context("storage target")?;
    // Recording rows name their StorageTarget, which the recorder configuration carries.
    let target = Target {
        name: &config.storage_target,
        storage: &storage,
    };
    let now = callvault_store::db::now_micros();
    let summary = run_retention(
        &db,
        target,
        &config.tenant,
        &config.profile,
        now,
        RetentionOptions {
            batch_size: args.batch_size,
            audit_retention_days: args.audit_retention_days,
        },
    )
    .await?;
    let finished = callvault_store::db::now_micros();
    match &cluster {
        Some(c) => c
            .report_retention(&config.profile, config.retention_days, &summary, finished)
            .await
            .context("reporting to the RecordingProfile")?,
        None => println!("retention {}: {}", config.profile, retention_note(&summary)),
    }
    db.close().await;
    Ok(exit(summary.failures.is_empty()))
}

async fn archive(args: ArchiveArgs) -> anyhow::Result<ExitCode> {
    let valid = ArchiveJobConfig::load(&args.config)
        .with_context(|| format!("archive job configuration {}", args.config.display()))?;
    let config = &valid.config;
    configuration_of(
        "Connector",
        &args.config,
        &config.connector,
        &args.connector,
    )?;
    let span =
        tracing::info_span!("archive", tenant = %config.tenant, connector = %config.connector);
    let _guard = span.enter();
    let cluster = Cluster::from_env().await?;
    let db = vault::connect_db(&config.database_url_file).await?;
    let sources = vault::open_bindings(&valid.sources)?;
    let destination = vault::open_binding(&valid.destination)?;
    let ring = config
        .key_ring
        .as_ref()
        .map(vault::load_key_ring)
        .transpose()?;
    let mode = match &ring {
        Some(ring) => ArchiveMode::Plaintext(ring),
        None => ArchiveMode::Envelope,
    };
    let summary = run_archive(&ArchiveJob {
        db: &db,
        tenant: &config.tenant,
        connector: &config.connector,
        profiles: &config.recording_profiles,
        sources: &sources,
        destination_name: &valid.destination.binding.name,
        destination: &destination,
        mode,
        batch_size: config.batch_size,
        concurrency: config.concurrency as usize,
    })
    .await?;
    let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
    let alarms = Alarms {
        db: &db,
        tenant: &config.tenant,
        mailer: mailer.as_ref(),
    };
    for obs in [
        alarms::connector(&config.connector, &summary),
        alarms::archive_destination(&valid.destination.binding.name, &summary),
    ] {
        if let Some(t) = alarms.apply(&obs).await?
            && let Some(c) = &cluster
        {
            c.alarm_event::<Connector>(
                &config.connector,
                ARCHIVE_FIELD_MANAGER,
                &config.tenant,
                &t,
            )
            .await
            .context("alarm Event")?;
        }
    }
    match &cluster {
        Some(c) => c
            .report_archive(&config.connector, &summary)
            .await
            .context("reporting to the Connector")?,
        None => println!(
            "archive {}: {:?}, archived {}, failed {}, {} pending, {} archived in all{}",
            config.connector,
            summary.outcome(),
            summary.archived,
            summary.failures.len(),
            summary.counts.pending,
            summary.counts.archived,
            summary
                .message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
    }
    db.close().await;
    Ok(exit(summary.outcome() == RunOutcome::Succeeded))
}

async fn space_cleanup(args: SpaceCleanupArgs) -> anyhow::Result<ExitCode> {
    let valid = SpaceCleanupJobConfig::load(&args.config)
        .with_context(|| format!("space cleanup job configuration {}", args.config.display()))?;
    let config = &valid.config;
    let name = &config.storage_target.name;
    configuration_of("StorageTarget", &args.config, name, &args.storage_target)?;
    let span =
        tracing::info_span!("space_cleanup", tenant = %config.tenant, storage_target = %name);
    let _guard = span.enter();
    let cluster = Cluster::from_env().await?;
    let db = vault::connect_db(&config.database_url_file).await?;
    let storage = vault::open_binding(&valid.storage_target)?;
    let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
    let alarms = Alarms {
        db: &db,
        tenant: &config.tenant,
        mailer: mailer.as_ref(),
    };
    let summary = run_space_cleanup(&SpaceJob {
        db: &db,
        tenant: &config.tenant,
        target: Target {
            name,
            storage: &storage,
        },
        root: &valid.root,
        limits: SpaceLimits {
            max_used_bytes: config.max_used_bytes,
            min_free_percent: config.min_free_percent,
        },
        batch_size: config.batch_size,
        alarms: &alarms,
    })
    .await?;
    match &cluster {
        Some(c) => {
            for t in &summary.alarms {
                c.alarm_event::<StorageTarget>(
                    name,
                    SPACE_CLEANUP_FIELD_MANAGER,
                    &config.tenant,
                    t,
                )
                .await
                .context("alarm Event")?;
            }
            c.report_space_cleanup(name, &summary)
                .await
                .context("reporting to the StorageTarget")?;
        }
        None => println!("space cleanup {name}: {}", space_note(&summary)),
    }
    db.close().await;
    Ok(exit(summary.failures.is_empty() && summary.still_over == 0))
}

async fn transcribe(args: TranscribeArgs) -> anyhow::Result<ExitCode> {
    let valid = TranscribeJobConfig::load(&args.config)
        .with_context(|| format!("transcription job configuration {}", args.config.display()))?;
    let config = &valid.config;
    configuration_of(
        "SpeechJob",
        &args.config,
        &config.speech_job,
        &args.speech_job,
    )?;
    let span =
        tracing::info_span!("transcribe", tenant = %config.tenant, speech_job = %config.speech_job);
    let _guard = span.enter();
    let cluster = Cluster::from_env().await?;
    // The whisper engine's interpreter comes from CALLVAULT_WHISPER_PYTHON (default python3).
    let summary = callvault_jobs::transcribe::run(&valid).await?;
    match &cluster {
        Some(c) => c
            .report_transcribe(&config.speech_job, &summary)
            .await
            .context("reporting to the SpeechJob")?,
        None => println!(
            "transcribe {}: {}",
            config.speech_job,
            transcribe_note(&summary)
        ),
    }
    Ok(exit(summary.failures.is_empty()))
}

async fn assurance(args: AssuranceArgs) -> anyhow::Result<ExitCode> {
    let valid = AssuranceJobConfig::load(&args.config)
        .with_context(|| format!("assurance job configuration {}", args.config.display()))?;
    let config = &valid.config;
    configuration_of(
        "RecordingProfile",
        &args.config,
        &config.profile,
        &args.profile,
    )?;
    let span = tracing::info_span!("assurance", tenant = %config.tenant, profile = %config.profile);
    let _guard = span.enter();
    let cluster = Cluster::from_env().await?;
    let db = vault::connect_db(&config.database_url_file).await?;
    let storage = vault::open_binding(&valid.storage)?;
    let ring = vault::load_key_ring(&config.key_ring)?;
    let report = run_assurance(Check {
        db: &db,
        config: &valid,
        storage: &storage,
        ring: &ring,
    })
    .await;
    let mailer = config.smtp.as_ref().map(Mailer::new).transpose()?;
    let alarms = Alarms {
        db: &db,
        tenant: &config.tenant,
        mailer: mailer.as_ref(),
    };
    if let Some(t) = alarms.apply(&alarms::assurance(&report)).await?
        && let Some(c) = &cluster
    {
        c.alarm_event::<RecordingProfile>(
            &config.profile,
            ASSURANCE_FIELD_MANAGER,
            &config.tenant,
            &t,
        )
        .await
        .context("alarm Event")?;
    }
    match &cluster {
        Some(c) => c
            .report_assurance(&report)
            .await
            .context("reporting to the RecordingProfile")?,
        None => println!(
            "assurance {}: {} ({}): {}",
            config.profile,
            if report.passed() { "passed" } else { "FAILED" },
            report.reason(),
            report.message()
        ),
    }
    db.close().await;
    Ok(exit(report.passed()))
}

/// A job's configuration file names the resource it was rendered for: running it for another
/// would act on the wrong one.
fn configuration_of(kind: &str, file: &Path, configured: &str, asked: &str) -> anyhow::Result<()> {
    if configured != asked {
        bail!(
            "{} is the configuration of {kind} {configured:?}, not {asked:?}",
            file.display()
        );
    }
    Ok(())
}
