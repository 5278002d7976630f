//! What a Connector owns: the archive job's configuration (a ConfigMap holding the typed
//! [`ArchiveJobConfig`]) and the CronJob running `callvault job archive` with it.

use callvault_config::ArchiveJobConfig;
use callvault_crds::{Connector, StorageTarget};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;

use super::job::{
    JobBuildError, JobPod, KeyRingSecret, Schedule, config_map, cron_job, source_bindings,
    storage_binding,
};
use super::meta::Owner;
use super::names::child_name;
use super::pod::DatabaseSecret;

/// Component label of the archive CronJob and its pods.
pub const ARCHIVE: &str = "archive";
/// Where the destination StorageTarget's credentials are mounted in the archive job.
pub const ARCHIVE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/archive-storage";

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
/// StorageTargets of the profiles it archives), checked as the job checks it at start. Only
/// plaintext archives (`encrypt: false`) get the private keys.
pub fn job_config(
    connector: &Connector,
    destination: &StorageTarget,
    sources: &[&StorageTarget],
    key_ring: &KeyRingSecret,
) -> Result<ArchiveJobConfig, JobBuildError> {
    let owner = Owner::of(connector)?;
    let config = ArchiveJobConfig {
        tenant: owner.namespace.clone(),
        connector: owner.name.clone(),
        database_url_file: crate::render::paths::DATABASE_URL_FILE.into(),
        recording_profiles: connector.spec.source.recording_profiles.clone(),
        sources: source_bindings(sources)?,
        destination: storage_binding(destination, ARCHIVE_CREDENTIALS_DIR)?,
        encrypt: connector.spec.encrypt,
        key_ring: (!connector.spec.encrypt).then(|| key_ring.config()),
        batch_size: 500,
        concurrency: 4,
        smtp: None,
    };
    config.validate().map_err(|source| JobBuildError::Invalid {
        job: ARCHIVE,
        source,
    })?;
    Ok(config)
}

/// The ConfigMap and the CronJob of `connector`.
pub fn build(
    connector: &Connector,
    destination: &StorageTarget,
    sources: &[&StorageTarget],
    image: &str,
    database: &DatabaseSecret,
    key_ring: &KeyRingSecret,
) -> Result<ArchiveChildren, JobBuildError> {
    let owner = Owner::of(connector)?;
    let config = job_config(connector, destination, sources, key_ring)?;
    let config_map_name = config_map_name(&owner.name);
    let config_map = config_map(&owner, &config_map_name, ARCHIVE, &config)?;
    // The job writes its counters to the Connector's status.
    let mut pod = JobPod::new(
        ARCHIVE,
        image,
        &["archive", "--connector", &owner.name],
        database,
    )
    .writing_status()
    .with_config(&config_map_name)
    .with_storage(destination, &config.destination, true);
    for (source, bound) in sources.iter().zip(&config.sources) {
        pod = pod.with_storage(source, bound, false);
    }
    if config.key_ring.is_some() {
        pod = pod.with_key_ring(key_ring);
    }
    let cron_job = cron_job(
        &owner,
        &cron_job_name(&owner.name),
        ARCHIVE,
        Schedule::of_spec(&connector.spec.schedule, !connector.spec.active)?,
        pod.job_spec(&owner),
    );
    Ok(ArchiveChildren {
        config_map,
        cron_job,
    })
}
