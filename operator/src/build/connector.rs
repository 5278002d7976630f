//! What a Connector owns: the archive job's configuration (a ConfigMap holding the typed
//! [`ArchiveJobConfig`]) and the CronJob running `callvault job archive` with it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use callvault_config::{ArchiveJobConfig, Invalid, StorageBinding};
use callvault_crds::{Connector, StorageTarget};
use callvault_store::objstore::{ConfigError, StorageConfig};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::meta::{MissingMetadata, Owner};
use super::names::child_name;
use super::pod::{
    DatabaseSecret, container_security, database_volume, mount, pod_security, secret_volume,
};
use crate::render::paths;

/// Component label of the archive CronJob and its pods.
pub const ARCHIVE: &str = "archive";
/// Where the destination StorageTarget's credentials are mounted in the archive job.
pub const ARCHIVE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/archive-storage";
/// Under this directory each source StorageTarget's credentials are mounted, by target name.
pub const SOURCE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/storage";
/// ConfigMap key (and file name under [`paths::CONFIG_DIR`]) of the job's configuration.
pub const JOB_CONFIG_KEY: &str = "job.yaml";

/// Why a Connector's children could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveBuildError {
    /// The Connector lacks metadata the API server always sets.
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
    #[error("the archive job configuration is invalid: {0}")]
    Invalid(#[from] Invalid),
    /// The configuration could not be written as YAML.
    #[error("cannot write the archive job configuration: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Everything a Connector owns.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveChildren {
    /// The job's configuration.
    pub config_map: ConfigMap,
    /// The scheduled job.
    pub cron_job: CronJob,
}

/// Name of the archive CronJob of the Connector called `connector`.
pub fn cron_job_name(connector: &str) -> String {
    child_name(connector, "archive")
}

/// Name of the archive job's ConfigMap.
pub fn config_map_name(connector: &str) -> String {
    child_name(connector, "archive-config")
}

/// The job configuration for `connector`, copying to `destination` from the `sources` (the
/// StorageTargets of the profiles it archives), checked as the job checks it at start.
pub fn job_config(
    connector: &Connector,
    destination: &StorageTarget,
    sources: &[&StorageTarget],
) -> Result<ArchiveJobConfig, ArchiveBuildError> {
    let owner = Owner::of(connector)?;
    let config = ArchiveJobConfig {
        tenant: owner.namespace.clone(),
        connector: owner.name.clone(),
        database_url_file: paths::DATABASE_URL_FILE.into(),
        recording_profiles: connector.spec.source.recording_profiles.clone(),
        sources: sources
            .iter()
            .map(|t| binding(t, |name| format!("{SOURCE_CREDENTIALS_DIR}/{name}")))
            .collect::<Result<_, _>>()?,
        destination: binding(destination, |_| ARCHIVE_CREDENTIALS_DIR.to_owned())?,
        encrypt: connector.spec.encrypt,
        // Plaintext archives need private keys, which no Connector field names yet: the
        // job's own check refuses such a configuration, and the condition says so.
        key_ring: None,
        batch_size: 500,
        concurrency: 4,
        smtp: None,
    };
    config.validate()?;
    Ok(config)
}

fn binding(
    target: &StorageTarget,
    credentials_dir: impl Fn(&str) -> String,
) -> Result<StorageBinding, ArchiveBuildError> {
    let name = target.metadata.name.clone().unwrap_or_default();
    let storage = serde_json::to_value(&target.spec)
        .map_err(|e| ConfigError::Invalid {
            field: "spec",
            problem: e.to_string(),
        })
        .and_then(|v| StorageConfig::from_spec(&v))
        .map_err(|source| ArchiveBuildError::Storage {
            target: name.clone(),
            source,
        })?;
    Ok(StorageBinding {
        credentials_dir: target
            .spec
            .credentials_secret_ref
            .as_ref()
            .map(|_| PathBuf::from(credentials_dir(&name))),
        name,
        storage,
    })
}

/// The ConfigMap and the CronJob of `connector`.
pub fn build(
    connector: &Connector,
    destination: &StorageTarget,
    sources: &[&StorageTarget],
    image: &str,
    database: &DatabaseSecret,
) -> Result<ArchiveChildren, ArchiveBuildError> {
    let owner = Owner::of(connector)?;
    let config = job_config(connector, destination, sources)?;
    let config_map = ConfigMap {
        metadata: owner.meta(&config_map_name(&owner.name), ARCHIVE),
        data: Some(BTreeMap::from([(
            JOB_CONFIG_KEY.to_owned(),
            serde_yaml::to_string(&config)?,
        )])),
        ..ConfigMap::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(&owner.name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        database_volume(database),
    ];
    let mut mounts = vec![
        mount("config", paths::CONFIG_DIR),
        mount("database", paths::DATABASE_DIR),
    ];
    let mut credentials = |secret: &str, dir: &std::path::Path| {
        let volume = format!("credentials-{}", volumes.len());
        volumes.push(secret_volume(&volume, secret));
        mounts.push(mount(&volume, &dir.display().to_string()));
    };
    for (target, bound) in std::iter::once((destination, &config.destination))
        .chain(sources.iter().copied().zip(&config.sources))
    {
        if let (Some(secret), Some(dir)) =
            (&target.spec.credentials_secret_ref, &bound.credentials_dir)
        {
            credentials(&secret.name, dir);
        }
    }
    let config_file = format!("{}/{JOB_CONFIG_KEY}", paths::CONFIG_DIR);
    let container = Container {
        name: ARCHIVE.to_owned(),
        image: Some(image.to_owned()),
        command: Some(
            [
                "callvault",
                "job",
                "archive",
                "--connector",
                &owner.name,
                "--config",
                &config_file,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let pod_labels = owner.labels(ARCHIVE);
    let cron_job = CronJob {
        metadata: owner.meta(&cron_job_name(&owner.name), ARCHIVE),
        spec: CronJobSpec {
            schedule: connector.spec.schedule.clone(),
            time_zone: Some("Etc/UTC".to_owned()),
            suspend: Some(!connector.spec.active),
            // Two runs copying the same recordings would race on the archive marks.
            concurrency_policy: Some("Forbid".to_owned()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(PodSpec {
                            containers: vec![container],
                            volumes: Some(volumes),
                            restart_policy: Some("OnFailure".to_owned()),
                            // The job writes its counters to the Connector's status.
                            automount_service_account_token: Some(true),
                            enable_service_links: Some(false),
                            security_context: Some(pod_security()),
                            ..PodSpec::default()
                        }),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        },
        status: None,
    };
    Ok(ArchiveChildren {
        config_map,
        cron_job,
    })
}
