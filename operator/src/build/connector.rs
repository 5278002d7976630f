//! The archive CronJob a Connector owns.

use callvault_crds::{Connector, StorageTarget};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
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

/// Name of the archive CronJob of the Connector called `connector`.
pub fn cron_job_name(connector: &str) -> String {
    child_name(connector, "archive")
}

/// The CronJob running `callvault job archive` on the Connector's schedule; suspended while
/// the Connector is inactive. `destination` is the Connector's StorageTarget, when it exists.
pub fn cron_job(
    connector: &Connector,
    destination: Option<&StorageTarget>,
    image: &str,
    database: &DatabaseSecret,
) -> Result<CronJob, MissingMetadata> {
    let owner = Owner::of(connector)?;
    let mut volumes = vec![database_volume(database)];
    let mut mounts = vec![mount("database", paths::DATABASE_DIR)];
    if let Some(creds) = destination.and_then(|d| d.spec.credentials_secret_ref.as_ref()) {
        volumes.push(secret_volume("archive-credentials", &creds.name));
        mounts.push(mount("archive-credentials", ARCHIVE_CREDENTIALS_DIR));
    }
    let container = Container {
        name: ARCHIVE.to_owned(),
        image: Some(image.to_owned()),
        command: Some(
            ["callvault", "job", "archive", "--connector", &owner.name]
                .map(str::to_owned)
                .to_vec(),
        ),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let pod_labels = owner.labels(ARCHIVE);
    Ok(CronJob {
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
    })
}
