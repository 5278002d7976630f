//! What a RecordingProfile with `spec.assurance` also owns: the recording assurance job's
//! configuration (a ConfigMap holding the typed [`AssuranceJobConfig`]) and the CronJob running
//! `callvault job assurance` with it. The job config is rendered here for both modes:
//! standalone builds the same one with its local paths.

use std::path::PathBuf;

use callvault_config::{AssuranceJobConfig, KeyRingConfig, StorageBinding};
use callvault_crds::recording_profile::SipTransport;
use callvault_crds::{RecordingProfile, StorageTarget};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ConfigMap;

use super::job::{
    JobBuildError, JobPod, KeyRingSecret, Schedule, config_map, cron_job, source_bindings,
};
use super::meta::Owner;
use super::names::child_name;
use super::pod::DatabaseSecret;
use crate::render::paths;

/// Component label of the assurance CronJob, its ConfigMap and pods.
pub const ASSURANCE: &str = "assurance";

/// Name of the assurance CronJob of the profile called `profile`.
pub fn cron_job_name(profile: &str) -> String {
    child_name(profile, "assurance")
}

/// Name of the assurance job's ConfigMap.
pub fn config_map_name(profile: &str) -> String {
    child_name(profile, "assurance-config")
}

/// Everything assurance adds to a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct AssuranceChildren {
    /// The job's configuration.
    pub config_map: ConfigMap,
    /// The scheduled test call.
    pub cron_job: CronJob,
}

/// The SIP transport the test call uses: UDP when the recorders listen on it (what most call
/// sources send), else TCP; `None` for a TLS-only profile, which the test client cannot call.
pub fn transport(profile: &RecordingProfile) -> Option<&'static str> {
    let t = &profile.spec.recorder.sip.transports;
    if t.contains(&SipTransport::Udp) {
        Some("udp")
    } else if t.contains(&SipTransport::Tcp) {
        Some("tcp")
    } else {
        None
    }
}

/// The assurance job configuration of `profile` in `tenant` (`None` without
/// `spec.assurance`): the test call goes to `sip_uri` (the profile's entry point), the
/// recording is read from `storage`, decrypted with `key_ring`. Checked as the job checks it.
pub fn job_config(
    tenant: &str,
    profile: &RecordingProfile,
    sip_uri: String,
    storage: StorageBinding,
    database_url_file: PathBuf,
    key_ring: KeyRingConfig,
) -> Result<Option<AssuranceJobConfig>, JobBuildError> {
    let Some(a) = &profile.spec.assurance else {
        return Ok(None);
    };
    let config = AssuranceJobConfig {
        tenant: tenant.to_owned(),
        profile: profile.metadata.name.clone().unwrap_or_default(),
        database_url_file,
        sip_uri,
        // Refused by validation below, naming the field.
        transport: transport(profile).unwrap_or("tls").to_owned(),
        from_number: a.from_number.clone(),
        to_number: a.to_number.clone(),
        duration_seconds: u32::try_from(a.duration_seconds).unwrap_or(0),
        commit_timeout_seconds: u32::try_from(a.commit_timeout_seconds).unwrap_or(0),
        retention_days: u32::try_from(a.retention_days).unwrap_or(0),
        storage,
        key_ring,
        smtp: None,
    };
    config.validate().map_err(|source| JobBuildError::Invalid {
        job: ASSURANCE,
        source,
    })?;
    Ok(Some(config))
}

/// The ConfigMap and CronJob of `profile`'s assurance, or `None` without `spec.assurance`.
/// The test call goes to the profile's SIP Service `sip_service`; the pod mounts the private
/// keys (the recorders never do) and reads the profile's storage.
pub fn build(
    profile: &RecordingProfile,
    storage: &StorageTarget,
    sip_service: &str,
    image: &str,
    database: &DatabaseSecret,
    key_ring: &KeyRingSecret,
) -> Result<Option<AssuranceChildren>, JobBuildError> {
    let owner = Owner::of(profile)?;
    let Some(assurance) = &profile.spec.assurance else {
        return Ok(None);
    };
    let sip_uri = format!(
        "sip:{sip_service}.{}.svc:{}",
        owner.namespace, profile.spec.recorder.sip.port
    );
    let mut bindings = source_bindings(&[storage])?;
    let binding = bindings.remove(0);
    let Some(config) = job_config(
        &owner.namespace,
        profile,
        sip_uri,
        binding,
        paths::DATABASE_URL_FILE.into(),
        key_ring.config(),
    )?
    else {
        return Ok(None);
    };
    let config_map_name = config_map_name(&owner.name);
    let config_map = config_map(&owner, &config_map_name, ASSURANCE, &config)?;
    // The job writes the Assured condition to the profile's status.
    let pod = JobPod::new(
        ASSURANCE,
        image,
        &["assurance", "--profile", &owner.name],
        database,
    )
    .writing_status()
    .with_config(&config_map_name)
    .with_storage(storage, &config.storage, false)
    .with_key_ring(key_ring);
    let cron_job = cron_job(
        &owner,
        &cron_job_name(&owner.name),
        ASSURANCE,
        Schedule {
            cron: assurance.schedule.clone(),
            // A disabled profile has no recorders to call.
            suspend: profile.spec.disabled,
            // A missed run is reported by the next one; none is made up for hours later.
            starting_deadline_seconds: Some(600),
        },
        pod.job_spec(&owner),
    );
    Ok(Some(AssuranceChildren {
        config_map,
        cron_job,
    }))
}
