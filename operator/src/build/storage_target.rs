//! What a filesystem StorageTarget with `spec.spaceCleanup` owns: the space cleanup job's
//! configuration (a ConfigMap holding the typed [`SpaceCleanupJobConfig`]) and the CronJob
//! running `callvault job space-cleanup` with it. Other targets own nothing.

use callvault_config::SpaceCleanupJobConfig;
use callvault_crds::StorageTarget;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;

use super::job::{JobBuildError, JobPod, Schedule, config_map, cron_job, storage_binding};
use super::meta::Owner;
use super::names::child_name;
use super::pod::DatabaseSecret;

/// Component label of the space cleanup CronJob and its pods.
pub const SPACE_CLEANUP: &str = "space-cleanup";
/// How often a target's space is checked (UTC): often enough that a filling volume is caught
/// between two checks, rarely enough that a check costs nothing.
pub const SPACE_CLEANUP_SCHEDULE: &str = "*/10 * * * *";
/// Where the target's credentials would be mounted (filesystem targets have none).
const CREDENTIALS_DIR: &str = "/run/secrets/callvault/storage";

/// Everything a StorageTarget with space cleanup owns.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceCleanupChildren {
    /// The job's configuration.
    pub config_map: ConfigMap,
    /// The scheduled job.
    pub cron_job: CronJob,
}

/// Name of the space cleanup CronJob of the StorageTarget called `target`.
pub fn cron_job_name(target: &str) -> String {
    child_name(target, "space-cleanup")
}

/// Name of the space cleanup job's ConfigMap.
pub fn config_map_name(target: &str) -> String {
    child_name(target, "space-cleanup-config")
}

/// The job configuration of `target` in `tenant` (in a cluster its namespace; standalone
/// builds it too), checked as the job checks it at start; `None` when the target asks for no
/// space cleanup.
pub fn job_config(
    target: &StorageTarget,
    tenant: &str,
    database_url_file: std::path::PathBuf,
) -> Result<Option<SpaceCleanupJobConfig>, JobBuildError> {
    let Some(limits) = &target.spec.space_cleanup else {
        return Ok(None);
    };
    let config = SpaceCleanupJobConfig {
        tenant: tenant.to_owned(),
        database_url_file,
        storage_target: storage_binding(target, CREDENTIALS_DIR)?,
        // Out-of-range values (the API server's rules prevent them) fail the check below.
        max_used_bytes: limits.max_used_bytes.map(|v| u64::try_from(v).unwrap_or(0)),
        min_free_percent: limits
            .min_free_percent
            .map(|v| u8::try_from(v).unwrap_or(0)),
        batch_size: 500,
        smtp: None,
    };
    config.validate().map_err(|source| JobBuildError::Invalid {
        job: SPACE_CLEANUP,
        source,
    })?;
    Ok(Some(config))
}

/// The ConfigMap and the CronJob of `target`, or `None` when it asks for no space cleanup.
pub fn build(
    target: &StorageTarget,
    image: &str,
    database: &DatabaseSecret,
) -> Result<Option<SpaceCleanupChildren>, JobBuildError> {
    let owner = Owner::of(target)?;
    let url_file = crate::render::paths::DATABASE_URL_FILE.into();
    let Some(config) = job_config(target, &owner.namespace, url_file)? else {
        return Ok(None);
    };
    let config_map_name = config_map_name(&owner.name);
    let config_map = config_map(&owner, &config_map_name, SPACE_CLEANUP, &config)?;
    let pod = JobPod::new(
        SPACE_CLEANUP,
        image,
        &["space-cleanup", "--storage-target", &owner.name],
        database,
    )
    // The run's Event and alarm Events go on the StorageTarget.
    .writing_status()
    .with_config(&config_map_name)
    // Deleting recordings writes there.
    .with_storage(target, &config.storage_target, true);
    let cron_job = cron_job(
        &owner,
        &cron_job_name(&owner.name),
        SPACE_CLEANUP,
        Schedule {
            cron: SPACE_CLEANUP_SCHEDULE.to_owned(),
            suspend: false,
            starting_deadline_seconds: Some(600),
        },
        pod.job_spec(&owner),
    );
    Ok(Some(SpaceCleanupChildren {
        config_map,
        cron_job,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn target(spec: serde_json::Value) -> StorageTarget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "callvault.io/v1alpha1",
            "kind": "StorageTarget",
            "metadata": {"name": "local", "namespace": "bank", "uid": "u-1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn db() -> DatabaseSecret {
        DatabaseSecret {
            name: "callvault-database".into(),
            key: "url".into(),
        }
    }

    #[test]
    fn only_a_target_with_space_cleanup_owns_a_cron_job() {
        let plain = target(serde_json::json!({"type": "filesystem", "path": "/recordings"}));
        assert!(build(&plain, "callvault:1", &db()).unwrap().is_none());

        let full = target(serde_json::json!({
            "type": "filesystem", "path": "/recordings", "claimName": "recordings",
            "spaceCleanup": {"maxUsedBytes": 1_000_000_000, "minFreePercent": 10}
        }));
        let children = build(&full, "callvault:1", &db()).unwrap().unwrap();
        let spec = children.cron_job.spec;
        assert_eq!(spec.schedule, SPACE_CLEANUP_SCHEDULE);
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.command.as_deref().unwrap()[..5],
            [
                "callvault",
                "job",
                "space-cleanup",
                "--storage-target",
                "local"
            ]
        );
        let claim = pod
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(claim.claim_name, "recordings");
        assert_eq!(claim.read_only, None, "the job deletes there");

        let yaml = &children.config_map.data.unwrap()["job.yaml"];
        let config = SpaceCleanupJobConfig::parse(yaml).unwrap();
        assert_eq!(config.tenant, "bank");
        assert_eq!(config.max_used_bytes, Some(1_000_000_000));
        assert_eq!(config.min_free_percent, Some(10));
        let valid = config.validate().unwrap();
        assert_eq!(valid.root, std::path::PathBuf::from("/recordings"));
    }
}
