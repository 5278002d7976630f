//! What a SpeechJob owns: the transcription job's configuration (a ConfigMap holding the typed
//! [`TranscribeJobConfig`]) and the workload running `callvault job transcribe` with it: a
//! CronJob on its schedule, or one Job when it has none (run once).
//!
//! The configuration names files only: the engine's credentials, the sources' credentials and
//! the private keys stay in their Secrets, which are mounted into the job's pod.

use callvault_config::TranscribeJobConfig;
use callvault_crds::{RUN_NOW_ANNOTATION, SpeechJob, StorageTarget};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaimVolumeSource, Volume};

use super::job::{
    JobBuildError, JobPod, KeyRingSecret, Schedule, config_map, cron_job, source_bindings,
};
use super::meta::Owner;
use super::names::{child_name, fnv1a};
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
    /// The run asked for by the run-now annotation, outside the schedule.
    pub run_now: Option<Box<Job>>,
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

/// Name of the Job run for the run-now annotation's `value`: each new value is a new run, and
/// the same value always names the same Job (applying it again starts nothing).
pub fn run_now_job_name(speech_job: &str, value: &str) -> String {
    child_name(
        speech_job,
        &format!("transcribe-now-{:08x}", fnv1a(value.as_bytes()) as u32),
    )
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
    let run_now = speech_job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUN_NOW_ANNOTATION))
        .map(|value| {
            Box::new(Job {
                metadata: owner.meta(&run_now_job_name(&owner.name, value), TRANSCRIBE),
                spec: Some(job_spec.clone()),
                status: None,
            })
        });
    let workload = match &spec.schedule {
        Some(schedule) => Workload::Scheduled(Box::new(cron_job(
            &owner,
            &cron_job_name(&owner.name),
            TRANSCRIBE,
            Schedule::of_spec(schedule, spec.suspend)?,
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
        run_now,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::build::job::JOB_CONFIG_KEY;
    use k8s_openapi::api::core::v1::PodSpec;

    fn resource<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn speech_job(schedule: &str) -> SpeechJob {
        resource(&format!(
            "apiVersion: callvault.io/v1alpha1
kind: SpeechJob
metadata: {{name: complaints, namespace: bank, uid: 7d1c, generation: 4}}
spec:
  engine: {{type: openai, endpoint: 'http://speech.local:8000/v1', credentialsSecretRef: {{name: speech-api}}}}
  filter: {{recordingProfiles: [agents]}}
  {schedule}"
        ))
    }

    fn s3_target() -> StorageTarget {
        resource(
            "apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: primary, namespace: bank}
spec: {type: s3, bucket: calls, region: eu-west-2, credentialsSecretRef: {name: s3-credentials}}",
        )
    }

    fn try_build(job: &SpeechJob) -> Result<SpeechJobChildren, JobBuildError> {
        let database = DatabaseSecret {
            name: "callvault-database".to_owned(),
            key: "url".to_owned(),
        };
        let ring = KeyRingSecret {
            name: "private-keys".to_owned(),
        };
        build(job, &[&s3_target()], "callvault:test", &database, &ring)
    }

    fn build_it(job: &SpeechJob) -> SpeechJobChildren {
        try_build(job).unwrap()
    }

    #[test]
    fn a_schedule_that_never_runs_gets_no_cron_job_but_a_reason() {
        // The CRD's pattern admits both; neither would ever run.
        for schedule in ["0 0 30 2 *", "*/0 * * * *"] {
            let e = try_build(&speech_job(&format!("schedule: '{schedule}'"))).unwrap_err();
            let text = e.to_string();
            assert!(
                text.starts_with("spec.schedule: invalid cron schedule") && text.contains(schedule),
                "{text}"
            );
        }
    }

    /// The mount path of the volume that holds Secret `secret`.
    fn secret_mount(pod: &PodSpec, secret: &str) -> String {
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
            .unwrap_or_else(|| panic!("Secret {secret} is not a volume"));
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == volume.name)
            .unwrap_or_else(|| panic!("Secret {secret} is not mounted"));
        assert_eq!(mount.read_only, Some(true), "{secret} mounted writable");
        mount.mount_path.clone()
    }

    #[test]
    fn every_file_the_configuration_names_is_mounted_into_the_pod() {
        let children = build_it(&speech_job("schedule: '*/15 * * * *'"));
        let text = &children.config_map.data.as_ref().unwrap()[JOB_CONFIG_KEY];
        let config = TranscribeJobConfig::parse(text).unwrap();
        config.validate().unwrap();
        assert_eq!(
            (config.tenant.as_str(), config.speech_job.as_str()),
            ("bank", "complaints")
        );
        let Workload::Scheduled(cron) = children.workload else {
            panic!("a scheduled SpeechJob runs as a CronJob");
        };
        assert_eq!(cron.spec.schedule, "*/15 * * * *");
        let pod = cron.spec.job_template.spec.unwrap().template.spec.unwrap();

        // The ConfigMap is at the path the command reads.
        let command = pod.containers[0].command.clone().unwrap();
        let config_arg = Path::new(command.last().unwrap());
        let volume = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| {
                v.config_map.as_ref().map(|c| c.name.as_str())
                    == Some("complaints-transcribe-config")
            })
            .expect("the ConfigMap is a volume");
        let mount = pod.containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == volume.name)
            .unwrap();
        assert_eq!(
            config_arg,
            Path::new(&mount.mount_path).join(JOB_CONFIG_KEY)
        );
        assert_eq!(
            children.config_map.metadata.name.as_deref(),
            Some("complaints-transcribe-config")
        );

        // Each Secret the configuration points into is mounted where it points.
        let key_dir = secret_mount(&pod, "private-keys");
        assert_eq!(config.key_ring.dir, Path::new(&key_dir));
        let engine_dir = secret_mount(&pod, "speech-api");
        assert_eq!(
            config.engine.api_key_file.as_deref(),
            Some(Path::new(&engine_dir).join("apiKey").as_path())
        );
        let source_dir = secret_mount(&pod, "s3-credentials");
        assert_eq!(config.sources.len(), 1);
        assert_eq!(config.sources[0].name, "primary");
        assert_eq!(
            config.sources[0].credentials_dir.as_deref(),
            Some(Path::new(&source_dir))
        );
        let database_dir = secret_mount(&pod, "callvault-database");
        assert_eq!(
            config.database_url_file.parent(),
            Some(Path::new(&database_dir))
        );
        // The job writes its counters to the SpeechJob's status: it runs as the job
        // ServiceAccount with its token and knows its namespace.
        assert_eq!(pod.automount_service_account_token, Some(true));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(crate::build::job::JOB_SERVICE_ACCOUNT)
        );
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let namespace = env
            .iter()
            .find(|e| e.name == callvault_config::JOB_NAMESPACE_ENV)
            .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(namespace, Some("metadata.namespace"));
    }

    #[test]
    fn the_run_now_annotation_is_a_job_of_its_own_per_value() {
        let scheduled = speech_job("schedule: '0 2 * * *'");
        assert_eq!(build_it(&scheduled).run_now, None);
        let annotated = |value: &str| {
            let mut job = scheduled.clone();
            job.metadata.annotations = Some(
                [(RUN_NOW_ANNOTATION.to_owned(), value.to_owned())]
                    .into_iter()
                    .collect(),
            );
            build_it(&job).run_now.expect("a run-now Job")
        };
        let first = annotated("2026-12-07T19:00:00Z");
        let again = annotated("2026-12-07T19:00:00Z");
        let second = annotated("2026-12-07T19:05:00Z");
        assert_eq!(first.metadata.name, again.metadata.name);
        assert_ne!(first.metadata.name, second.metadata.name);
        let name = first.metadata.name.clone().unwrap();
        assert!(name.starts_with("complaints-transcribe-now-"), "{name}");
        // The same pod as the scheduled runs: the same command, and not suspended.
        let Workload::Scheduled(cron) = build_it(&scheduled).workload else {
            panic!("scheduled");
        };
        let scheduled_pod = cron.spec.job_template.spec.unwrap().template;
        let spec = first.spec.unwrap();
        assert_eq!(spec.template, scheduled_pod);
        assert_eq!(spec.suspend, None);
    }

    #[test]
    fn without_a_schedule_it_runs_once_as_a_job_named_by_generation() {
        let children = build_it(&speech_job(""));
        let Workload::Once(job) = children.workload else {
            panic!("an unscheduled SpeechJob runs once as a Job");
        };
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("complaints-transcribe-4")
        );
    }
}
