//! The transcription workload a SpeechJob owns: a CronJob on its schedule, or one Job when it
//! has none (run once).

use callvault_crds::SpeechJob;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{MissingMetadata, Owner};
use super::names::child_name;
use super::pod::{
    DatabaseSecret, container_security, database_volume, mount, pod_security, secret_volume,
};
use crate::render::paths;

/// Component label of the transcription CronJob/Job and their pods.
pub const TRANSCRIBE: &str = "transcribe";
/// Where the engine's credentials Secret is mounted.
pub const ENGINE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/speech";

/// The child of a SpeechJob.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Runs on `spec.schedule`.
    Scheduled(Box<CronJob>),
    /// Runs once (no schedule).
    Once(Box<Job>),
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

/// The CronJob (scheduled) or Job (run once) running `callvault job transcribe`.
pub fn workload(
    speech_job: &SpeechJob,
    image: &str,
    database: &DatabaseSecret,
) -> Result<Workload, MissingMetadata> {
    let owner = Owner::of(speech_job)?;
    let spec = &speech_job.spec;
    let mut volumes = vec![database_volume(database)];
    let mut mounts = vec![mount("database", paths::DATABASE_DIR)];
    if let Some(creds) = &spec.engine.credentials_secret_ref {
        volumes.push(secret_volume("engine-credentials", &creds.name));
        mounts.push(mount("engine-credentials", ENGINE_CREDENTIALS_DIR));
    }
    // The Whisper model's claim is mounted read-only at the model file's directory.
    if let (Some(claim), Some(model_path)) = (&spec.engine.claim_name, &spec.engine.model_path) {
        let dir = std::path::Path::new(model_path)
            .parent()
            .map(|p| p.display().to_string())
            .filter(|p| !p.is_empty() && p != "/")
            .unwrap_or_else(|| "/models".to_owned());
        volumes.push(Volume {
            name: "model".to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
        mounts.push(mount("model", &dir));
    }
    let container = Container {
        name: TRANSCRIBE.to_owned(),
        image: Some(image.to_owned()),
        command: Some(
            [
                "callvault",
                "job",
                "transcribe",
                "--speech-job",
                &owner.name,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let labels = owner.labels(TRANSCRIBE);
    let job_spec = JobSpec {
        backoff_limit: Some(2),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels.clone()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![container],
                volumes: Some(volumes),
                restart_policy: Some("OnFailure".to_owned()),
                // The job writes its counters to the SpeechJob's status.
                automount_service_account_token: Some(true),
                enable_service_links: Some(false),
                security_context: Some(pod_security()),
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    };
    Ok(match &spec.schedule {
        Some(schedule) => Workload::Scheduled(Box::new(CronJob {
            metadata: owner.meta(&cron_job_name(&owner.name), TRANSCRIBE),
            spec: CronJobSpec {
                schedule: schedule.clone(),
                time_zone: Some("Etc/UTC".to_owned()),
                suspend: Some(spec.suspend),
                concurrency_policy: Some("Forbid".to_owned()),
                successful_jobs_history_limit: Some(3),
                failed_jobs_history_limit: Some(3),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(job_spec),
                },
                ..CronJobSpec::default()
            },
            status: None,
        })),
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
    })
}
