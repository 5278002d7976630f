//! What the scheduled jobs (archive, transcribe, retention) share: one pod template, its Job and
//! CronJob wrappers, the job configuration ConfigMap, and the StorageTargets and private keys
//! that configuration points into (Secrets mounted into the pod, never copied into the
//! ConfigMap).

use std::collections::BTreeMap;
use std::path::PathBuf;

use callvault_config::{Invalid, KeyRingConfig, StorageBinding};
use callvault_crds::StorageTarget;
use callvault_store::objstore::{ConfigError, StorageConfig};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::meta::{MissingMetadata, Owner};
use super::pod::{
    DatabaseSecret, container_security, database_volume, mount, pod_security, secret_volume,
};
use crate::render::paths;

/// ConfigMap key (and file name under [`paths::CONFIG_DIR`]) of a job's configuration.
/// Times a failed job pod is run again (the Job's `backoffLimit`); standalone retries as often.
pub const JOB_RETRIES: i32 = 2;
pub const JOB_CONFIG_KEY: &str = "job.yaml";
/// Under this directory each source StorageTarget's credentials are mounted, by target name.
pub const SOURCE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/storage";
/// Where the private keys Secret is mounted in the jobs that decrypt.
pub const KEY_RING_DIR: &str = "/run/secrets/callvault/keys";
/// The ServiceAccount the jobs that write their owner's status run as, in the owner's
/// namespace: the chart creates it, bound to exactly the rights `callvault job` uses (read the
/// resource, apply its status, record Events). A fixed name, like the database Secret's, so that
/// a namespace prepared once serves every release.
pub const JOB_SERVICE_ACCOUNT: &str = "callvault-job";

/// The Secret holding the private keys (one `<key-id>.pem` item each, PKCS#8) that the jobs
/// which must decrypt mount; one per watched namespace, named by the operator's installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingSecret {
    /// The Secret's name.
    pub name: String,
}

impl KeyRingSecret {
    /// The key ring as the job configuration names it: the directory the Secret is mounted at.
    pub fn config(&self) -> KeyRingConfig {
        KeyRingConfig {
            dir: KEY_RING_DIR.into(),
            passphrase_file: None,
        }
    }
}

/// Why a job's children could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JobBuildError {
    /// The owner lacks metadata the API server always sets.
    #[error(transparent)]
    Metadata(#[from] MissingMetadata),
    /// A StorageTarget's spec cannot be read as a storage configuration.
    #[error("StorageTarget {target}: {source}")]
    Storage {
        /// The target.
        target: String,
        /// The problem.
        source: ConfigError,
    },
    /// The rendered configuration fails the job's own checks.
    #[error("the {job} job configuration is invalid: {source}")]
    Invalid {
        /// Which job (`archive`, `transcribe`).
        job: &'static str,
        /// What the job's check found.
        source: Invalid,
    },
    /// The SpeechJob cannot be rendered into a transcription job configuration.
    #[error(transparent)]
    Speech(#[from] crate::speech_config::SpeechConfigError),
    /// The configuration could not be written as YAML.
    #[error("cannot write the job configuration: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// `spec.schedule` is not one the jobs can run on.
    #[error("spec.schedule: {0}")]
    Schedule(#[from] callvault_crds::CronError),
}

/// `target` bound into a job, its credentials (if any) at `credentials_dir`.
pub fn storage_binding(
    target: &StorageTarget,
    credentials_dir: &str,
) -> Result<StorageBinding, JobBuildError> {
    let name = target.metadata.name.clone().unwrap_or_default();
    let storage = serde_json::to_value(&target.spec)
        .map_err(|e| ConfigError::Invalid {
            field: "spec",
            problem: e.to_string(),
        })
        .and_then(|v| StorageConfig::from_spec(&v))
        .map_err(|source| JobBuildError::Storage {
            target: name.clone(),
            source,
        })?;
    Ok(StorageBinding {
        credentials_dir: target
            .spec
            .credentials_secret_ref
            .as_ref()
            .map(|_| PathBuf::from(credentials_dir)),
        name,
        storage,
    })
}

/// The StorageTargets recordings are read from, each one's credentials under
/// [`SOURCE_CREDENTIALS_DIR`]`/<name>`.
pub fn source_bindings(sources: &[&StorageTarget]) -> Result<Vec<StorageBinding>, JobBuildError> {
    sources
        .iter()
        .map(|t| {
            let name = t.metadata.name.as_deref().unwrap_or_default();
            storage_binding(t, &format!("{SOURCE_CREDENTIALS_DIR}/{name}"))
        })
        .collect()
}

/// The ConfigMap holding a job's configuration under [`JOB_CONFIG_KEY`].
pub fn config_map(
    owner: &Owner,
    name: &str,
    component: &str,
    config: &impl Serialize,
) -> Result<ConfigMap, JobBuildError> {
    Ok(ConfigMap {
        metadata: owner.meta(name, component),
        data: Some(BTreeMap::from([(
            JOB_CONFIG_KEY.to_owned(),
            serde_yaml::to_string(config)?,
        )])),
        ..ConfigMap::default()
    })
}

/// A job's pod: `callvault job <command>` in the operator's image, with volumes added one by
/// one (each with its mount) and the database URL always mounted.
#[derive(Debug, Clone)]
pub struct JobPod {
    component: &'static str,
    image: String,
    command: Vec<String>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    writes_status: bool,
}

impl JobPod {
    /// A pod of `component` running `command` (after `callvault job`).
    pub fn new(
        component: &'static str,
        image: &str,
        command: &[&str],
        database: &DatabaseSecret,
    ) -> Self {
        let mut pod = Self {
            component,
            image: image.to_owned(),
            command: ["callvault", "job"]
                .iter()
                .chain(command)
                .map(|s| (*s).to_owned())
                .collect(),
            volumes: Vec::new(),
            mounts: Vec::new(),
            writes_status: false,
        };
        pod.add(database_volume(database), paths::DATABASE_DIR);
        pod
    }

    /// The job writes counters to its owner's status: it runs as [`JOB_SERVICE_ACCOUNT`] with
    /// its token, and is told its namespace.
    pub fn writing_status(mut self) -> Self {
        self.writes_status = true;
        self
    }

    /// Mounts `volume` read-only at `path`.
    pub fn add(&mut self, volume: Volume, path: &str) {
        self.mounts.push(mount(&volume.name, path));
        self.volumes.push(volume);
    }

    /// Mounts `volume` writable at `path`.
    pub fn add_writable(&mut self, volume: Volume, path: &str) {
        self.mounts.push(VolumeMount {
            read_only: None,
            ..mount(&volume.name, path)
        });
        self.volumes.push(volume);
    }

    /// Mounts the ConfigMap `name` at [`paths::CONFIG_DIR`] and passes its job file as
    /// `--config`.
    pub fn with_config(mut self, name: &str) -> Self {
        self.add(
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.to_owned(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            paths::CONFIG_DIR,
        );
        self.command.push("--config".to_owned());
        self.command
            .push(format!("{}/{JOB_CONFIG_KEY}", paths::CONFIG_DIR));
        self
    }

    /// Mounts the private keys Secret where [`KeyRingSecret::config`] says.
    pub fn with_key_ring(mut self, ring: &KeyRingSecret) -> Self {
        self.add(secret_volume("keys", &ring.name), KEY_RING_DIR);
        self
    }

    /// Mounts what `binding` of `target` needs: its credentials Secret at the binding's
    /// credentials directory and, for a filesystem target on a claim, the claim at its path
    /// (writable only when the job writes there).
    pub fn with_storage(
        mut self,
        target: &StorageTarget,
        binding: &StorageBinding,
        writable: bool,
    ) -> Self {
        let n = self.volumes.len();
        if let (Some(secret), Some(dir)) = (
            &target.spec.credentials_secret_ref,
            &binding.credentials_dir,
        ) {
            self.add(
                secret_volume(&format!("credentials-{n}"), &secret.name),
                &dir.display().to_string(),
            );
        }
        if let (Some(claim), Some(path)) = (&target.spec.claim_name, &target.spec.path) {
            let volume = Volume {
                name: format!("claim-{n}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: (!writable).then_some(true),
                }),
                ..Volume::default()
            };
            if writable {
                self.add_writable(volume, path);
            } else {
                self.add(volume, path);
            }
        }
        self
    }

    /// The Job spec running this pod under `owner`'s labels: retried twice, restarted on
    /// failure, non-root.
    pub fn job_spec(self, owner: &Owner) -> JobSpec {
        let labels = owner.labels(self.component);
        let container = Container {
            name: self.component.to_owned(),
            image: Some(self.image),
            command: Some(self.command),
            volume_mounts: Some(self.mounts),
            security_context: Some(container_security()),
            env: self.writes_status.then(|| {
                vec![EnvVar {
                    name: callvault_config::JOB_NAMESPACE_ENV.to_owned(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.namespace".to_owned(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    }),
                    value: None,
                }]
            }),
            ..Container::default()
        };
        JobSpec {
            backoff_limit: Some(JOB_RETRIES),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(self.volumes),
                    restart_policy: Some("OnFailure".to_owned()),
                    service_account_name: self
                        .writes_status
                        .then(|| JOB_SERVICE_ACCOUNT.to_owned()),
                    automount_service_account_token: Some(self.writes_status),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }
    }
}

/// How a CronJob schedules its Job.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Cron expression, 5 fields, UTC.
    pub cron: String,
    /// No new runs start.
    pub suspend: bool,
    /// A run that could not start this many seconds after its time is skipped.
    pub starting_deadline_seconds: Option<i64>,
}

impl Schedule {
    /// A resource's own `spec.schedule`, checked by the parser standalone admits and runs
    /// schedules with: the CRD's CEL pattern lets through what never runs (`*/0`, 30
    /// February), and a cluster must refuse that as standalone does, not make a CronJob of it.
    pub fn of_spec(cron: &str, suspend: bool) -> Result<Self, JobBuildError> {
        callvault_crds::Cron::parse(cron)?;
        Ok(Self {
            cron: cron.to_owned(),
            suspend,
            starting_deadline_seconds: None,
        })
    }
}

/// The CronJob `name` of `owner` running `job` on `schedule`. Runs never overlap: two would
/// work on the same recordings.
pub fn cron_job(
    owner: &Owner,
    name: &str,
    component: &str,
    schedule: Schedule,
    job: JobSpec,
) -> CronJob {
    CronJob {
        metadata: owner.meta(name, component),
        spec: CronJobSpec {
            schedule: schedule.cron,
            time_zone: Some("Etc/UTC".to_owned()),
            suspend: Some(schedule.suspend),
            concurrency_policy: Some("Forbid".to_owned()),
            starting_deadline_seconds: schedule.starting_deadline_seconds,
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(owner.labels(component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(job),
            },
        },
        status: None,
    }
}
