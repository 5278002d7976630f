//! What a SpeechJob owns: the transcription job's configuration (a ConfigMap holding the typed
//! [`TranscribeJobConfig`]) and the workload running `callvault job transcribe` with it: a
//! CronJob on its schedule, or one Job when it has none (run once).
//!
//! The configuration names files only: the engine's credentials, the sources' credentials and
//! the private keys stay in their Secrets, which are mounted into the job's pod.

use callvault_config::TranscribeJobConfig;
use callvault_crds::{SpeechJob, StorageTarget};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaimVolumeSource, Volume};

use super::job::{
    JobBuildError, JobPod, KeyRingSecret, Schedule, config_map, cron_job, source_bindings,
};
use super::meta::Owner;
use super::names::child_name;
use super::pod::{DatabaseSecret, secret_volume};
use crate::render::paths;
use crate::speech_config::{JobFiles, transcribe_job_config};

/// Component label of the transcription CronJob/Job, its ConfigMap and its pods.
pub const TRANSCRIBE: &str = "transcribe";
/// Where the engine's credentials Secret is mounted.
pub const ENGINE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/speech";

/// The workload of a SpeechJob.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Runs on `spec.schedule`.
    Scheduled(Box<CronJob>),
    /// Runs once (no schedule).
    Once(Box<Job>),
}

/// Everything a SpeechJob owns.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechJobChildren {
    /// The job's configuration.
    pub config_map: ConfigMap,
    /// The CronJob or Job.
    pub workload: Workload,
}

/// Name of the CronJob of a scheduled SpeechJob.
pub fn cron_job_name(speech_job: &str) -> String {
    child_name(speech_job, "transcribe")
}

/// Name of the Job of a run-once SpeechJob at `generation`: a changed spec is a new run (a
/// Job's pod template cannot be changed in place).
pub fn job_name(speech_job: &str, generation: i64) -> String {
    child_name(speech_job, &format!("transcribe-{generation}"))
}

/// Name of the transcription job's ConfigMap.
pub fn config_map_name(speech_job: &str) -> String {
    child_name(speech_job, "transcribe-config")
}

/// The job configuration for `speech_job`, reading recordings from `sources` (the
/// StorageTargets of the profiles it transcribes), with every Secret replaced by where this
/// pod mounts it, checked as the job checks it at start.
pub fn job_config(
    speech_job: &SpeechJob,
    sources: &[&StorageTarget],
    key_ring: &KeyRingSecret,
) -> Result<TranscribeJobConfig, JobBuildError> {
    let owner = Owner::of(speech_job)?;
    let files = JobFiles {
        database_url_file: paths::DATABASE_URL_FILE.into(),
        key_ring: key_ring.config(),
        engine_credentials_dir: Some(ENGINE_CREDENTIALS_DIR.into()),
    };
    let config = transcribe_job_config(
        &owner.namespace,
        speech_job,
        source_bindings(sources)?,
        files,
    )?;
    config.validate().map_err(|source| JobBuildError::Invalid {
        job: TRANSCRIBE,
        source,
    })?;
    Ok(config)
}

/// The ConfigMap and the CronJob (scheduled) or Job (run once) of `speech_job`.
pub fn build(
    speech_job: &SpeechJob,
    sources: &[&StorageTarget],
    image: &str,
    database: &DatabaseSecret,
    key_ring: &KeyRingSecret,
) -> Result<SpeechJobChildren, JobBuildError> {
    let owner = Owner::of(speech_job)?;
    let spec = &speech_job.spec;
    let config = job_config(speech_job, sources, key_ring)?;
    let config_map_name = config_map_name(&owner.name);
    let config_map = config_map(&owner, &config_map_name, TRANSCRIBE, &config)?;
    // The job writes its counters to the SpeechJob's status.
    let mut pod = JobPod::new(
        TRANSCRIBE,
        image,
        &["transcribe", "--speech-job", &owner.name],
        database,
    )
    .writing_status()
    .with_config(&config_map_name)
    .with_key_ring(key_ring);
    for (source, bound) in sources.iter().zip(&config.sources) {
        pod = pod.with_storage(source, bound, false);
    }
    if let Some(creds) = &spec.engine.credentials_secret_ref {
        pod.add(
            secret_volume("engine-credentials", &creds.name),
            ENGINE_CREDENTIALS_DIR,
        );
    }
    // The Whisper model's claim is mounted read-only at the model file's directory.
    if let (Some(claim), Some(model_path)) = (&spec.engine.claim_name, &spec.engine.model_path) {
        let dir = std::path::Path::new(model_path)
            .parent()
            .map(|p| p.display().to_string())
            .filter(|p| !p.is_empty() && p != "/")
            .unwrap_or_else(|| "/models".to_owned());
        let model = Volume {
            name: "model".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        };
        pod.add(model, &dir);
    }
    let job_spec = pod.job_spec(&owner);
    let workload = match &spec.schedule {
        Some(schedule) => Workload::Scheduled(Box::new(cron_job(
            &owner,
            &cron_job_name(&owner.name),
            TRANSCRIBE,
            Schedule {
                cron: schedule.clone(),
                suspend: spec.suspend,
                starting_deadline_seconds: None,
            },
            job_spec,
        ))),
        None => {
            let generation = speech_job.metadata.generation.unwrap_or(1);
            Workload::Once(Box::new(Job {
                metadata: owner.meta(&job_name(&owner.name, generation), TRANSCRIBE),
                spec: Some(JobSpec {
                    suspend: Some(spec.suspend),
                    ..job_spec
                }),
                status: None,
            }))
        }
    };
    Ok(SpeechJobChildren {
        config_map,
        workload,
    })
}
