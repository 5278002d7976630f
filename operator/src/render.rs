//! Renders a RecordingProfile and its StorageTarget into the [`RecorderConfig`] the recorder
//! pods load from their ConfigMap.

use callvault_config::rules::{
    CallTypes, Directions, ListType, NumberFilter, NumberFilters, RecordingMode, Schedule, Weekday,
    Window,
};
use callvault_config::{
    Advertise, ChannelLayout, EncryptionConfig, Invalid, MediaAddress, MediaConfig, PortRange,
    RecorderConfig, Rules, SipConfig, SipTransport, SpoolLimits, SrtpPolicy,
};
use callvault_crds::recording_profile as rp;
use callvault_crds::{RecordingProfile, StorageTarget};
use callvault_store::objstore::{ConfigError as StorageError, StorageConfig};

/// Where the recorder pods find their files. The StatefulSet mounts exactly these paths, and
/// the rendered configuration names them, so both read them from here.
pub mod paths {
    /// Directory the ConfigMap is mounted at.
    pub const CONFIG_DIR: &str = "/etc/callvault";
    /// ConfigMap key (and file name) of the rendered configuration.
    pub const CONFIG_KEY: &str = "recorder.yaml";
    /// The configuration file the recorder is started with.
    pub const CONFIG_FILE: &str = "/etc/callvault/recorder.yaml";
    /// ConfigMap key (and file name) of the other profiles' user selections.
    pub const OTHER_PROFILES_KEY: &str = "other-profiles.json";
    /// The other profiles' selections, reread by the recorder every minute.
    pub const OTHER_PROFILES_FILE: &str = "/etc/callvault/other-profiles.json";
    /// Directory the profile's public-key Secret is mounted at (only the public key's item).
    pub const PUBLIC_KEY_DIR: &str = "/run/secrets/callvault/encryption";
    /// File name of the public key inside [`PUBLIC_KEY_DIR`].
    pub const PUBLIC_KEY_FILE: &str = "public.pem";
    /// The public key.
    pub const PUBLIC_KEY_PATH: &str = "/run/secrets/callvault/encryption/public.pem";
    /// Directory the StorageTarget's credentials Secret is mounted at.
    pub const STORAGE_CREDENTIALS_DIR: &str = "/run/secrets/callvault/storage";
    /// Directory the SIP TLS Secret (`tls.crt`, `tls.key`) is mounted at.
    pub const SIP_TLS_DIR: &str = "/run/secrets/callvault/sip-tls";
    /// Directory the database Secret is mounted at (only the URL's item).
    pub const DATABASE_DIR: &str = "/run/secrets/callvault/database";
    /// File name of the database URL inside [`DATABASE_DIR`].
    pub const DATABASE_URL_FILE_NAME: &str = "url";
    /// The database URL file.
    pub const DATABASE_URL_FILE: &str = "/run/secrets/callvault/database/url";
    /// The spool volume (a volumeClaimTemplate), the recorder's default spool directory.
    pub const SPOOL_DIR: &str = "/var/lib/callvault/spool";
    /// Environment variable carrying the pod's IP (downward API), advertised in SDP answers.
    pub const POD_IP_ENV: &str = "POD_IP";
}

/// How long live calls may continue after SIGTERM when the profile does not say
/// (`spec.recorder.drainGraceSeconds`): long enough for most calls to end on their own.
pub const DRAIN_GRACE_SECONDS: u32 = 600;

/// Why a profile could not be rendered into a recorder configuration.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The RecordingProfile has no name.
    #[error("the RecordingProfile has no metadata.name")]
    MissingName,
    /// A number in the profile does not fit the recorder's type.
    #[error("spec.{field} = {value} is out of range")]
    OutOfRange {
        /// The field, as in the CRD.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// The StorageTarget's spec cannot be read as a storage configuration.
    #[error("StorageTarget spec: {0}")]
    Storage(#[from] StorageError),
    /// The StorageTarget's spec could not be turned into JSON.
    #[error("StorageTarget spec: {0}")]
    StorageJson(#[from] serde_json::Error),
    /// The rendered configuration fails the recorder's own checks.
    #[error("rendered recorder configuration is invalid: {0}")]
    Invalid(#[from] Invalid),
}

/// Maps the profile and its StorageTarget onto the recorder's configuration and checks it with
/// the same [`RecorderConfig::validate`] the recorder runs at start-up, so a profile the
/// recorder would reject never reaches a ConfigMap.
pub fn render_recorder_config(
    namespace: &str,
    profile: &RecordingProfile,
    storage: &StorageTarget,
    key_id: &str,
) -> Result<RecorderConfig, RenderError> {
    let name = profile
        .metadata
        .name
        .clone()
        .ok_or(RenderError::MissingName)?;
    let spec = &profile.spec;
    let pool = &spec.recorder;
    let storage_config = StorageConfig::from_spec(&serde_json::to_value(&storage.spec)?)?;

    let config = RecorderConfig {
        tenant: namespace.to_owned(),
        profile: name,
        sip: SipConfig {
            port: fit("recorder.sip.port", pool.sip.port)?,
            tls_port: fit("recorder.sip.tlsPort", pool.sip.tls_port)?,
            tls_verify_client: pool.sip.tls_verify_client,
            transports: pool.sip.transports.iter().map(|t| transport(*t)).collect(),
            tls_dir: pool
                .sip
                .tls_secret_ref
                .as_ref()
                .map(|_| paths::SIP_TLS_DIR.into()),
            ..SipConfig::default()
        },
        media_address: MediaAddress {
            // One ConfigMap serves every pod, so each pod advertises its own IP from the env.
            bind: "0.0.0.0".to_owned(),
            advertise: Advertise {
                from_env: Some(paths::POD_IP_ENV.to_owned()),
                address: None,
            },
        },
        rtp_port_range: PortRange {
            start: fit("recorder.rtpPortRange.start", pool.rtp_port_range.start)?,
            end: fit("recorder.rtpPortRange.end", pool.rtp_port_range.end)?,
        },
        sessions_per_replica: fit("recorder.sessionsPerReplica", pool.sessions_per_replica)?,
        fail_closed: pool.fail_closed,
        media: MediaConfig {
            bitrate: fit("media.bitrate", spec.media.bitrate)?,
            complexity: fit("media.complexity", spec.media.complexity)?,
            channels: match spec.media.channels {
                rp::ChannelLayout::Mono => ChannelLayout::Mono,
                rp::ChannelLayout::Stereo => ChannelLayout::Stereo,
                rp::ChannelLayout::PerStream => ChannelLayout::PerStream,
            },
        },
        max_duration_seconds: fit("maxDurationSeconds", spec.max_duration_seconds)?,
        retention_days: fit("retention.days", spec.retention.days)?,
        storage_credentials_dir: storage
            .spec
            .credentials_secret_ref
            .as_ref()
            .map(|_| paths::STORAGE_CREDENTIALS_DIR.into()),
        storage_target: storage.metadata.name.clone().unwrap_or_default(),
        storage: storage_config,
        encryption: EncryptionConfig {
            public_key_path: paths::PUBLIC_KEY_PATH.into(),
            key_id: key_id.to_owned(),
        },
        spool_dir: paths::SPOOL_DIR.into(),
        spool: SpoolLimits {
            alarm_percent: fit("recorder.spool.alarmPercent", pool.spool.alarm_percent)?,
            critical_percent: fit(
                "recorder.spool.criticalPercent",
                pool.spool.critical_percent,
            )?,
            min_free_mib: fit("recorder.spool.minFreeMiB", pool.spool.min_free_mib)?,
        },
        database_url_file: paths::DATABASE_URL_FILE.into(),
        drain_grace_seconds: match pool.drain_grace_seconds {
            Some(seconds) => fit("recorder.drainGraceSeconds", seconds)?,
            None => DRAIN_GRACE_SECONDS,
        },
        media_timeout_seconds: fit("recorder.mediaTimeoutSeconds", pool.media_timeout_seconds)?,
        options_probe_seconds: fit("recorder.optionsProbeSeconds", pool.options_probe_seconds)?,
        srtp: match pool.srtp {
            rp::SrtpPolicy::Required => SrtpPolicy::Required,
            rp::SrtpPolicy::Preferred => SrtpPolicy::Preferred,
            rp::SrtpPolicy::Disabled => SrtpPolicy::Disabled,
        },
        rules: rules(&spec.selector)?,
        other_profiles_file: Some(paths::OTHER_PROFILES_FILE.into()),
        profile_created: created(profile),
    };
    config.validate()?;
    Ok(config)
}

/// The profile's user selection and age, for deciding which profile records a user.
pub fn selection(profile: &RecordingProfile) -> callvault_config::profiles::Selection {
    callvault_config::profiles::Selection {
        name: profile.metadata.name.clone().unwrap_or_default(),
        all_users: profile.spec.selector.all_users,
        groups: profile.spec.selector.groups.clone(),
        created: created(profile),
    }
}

/// The profile's creation time (RFC 3339): of two profiles selecting a user, the older
/// records them.
pub fn created(profile: &RecordingProfile) -> Option<String> {
    let t = profile.metadata.creation_timestamp.as_ref()?;
    serde_json::to_value(t).ok()?.as_str().map(str::to_owned)
}

fn fit<T: TryFrom<i64>>(field: &'static str, value: impl Into<i64>) -> Result<T, RenderError> {
    let value = value.into();
    T::try_from(value).map_err(|_| RenderError::OutOfRange { field, value })
}

fn transport(t: rp::SipTransport) -> SipTransport {
    match t {
        rp::SipTransport::Udp => SipTransport::Udp,
        rp::SipTransport::Tcp => SipTransport::Tcp,
        rp::SipTransport::Tls => SipTransport::Tls,
    }
}

// Field by field rather than through serde, so a field added to one side and not the other
// fails to compile instead of being dropped silently.
fn rules(s: &rp::RecordingSelector) -> Result<Rules, RenderError> {
    let directions = |d: &rp::Directions| Directions {
        inbound: d.inbound,
        outbound: d.outbound,
    };
    let filter = |f: &rp::NumberFilter| NumberFilter {
        list_type: match f.list_type {
            rp::ListType::Allow => ListType::Allow,
            rp::ListType::Block => ListType::Block,
        },
        numbers: f.numbers.clone(),
        regex: f.regex.clone(),
    };
    Ok(Rules {
        all_users: s.all_users,
        groups: s.groups.clone(),
        call_types: CallTypes {
            internal: directions(&s.call_types.internal),
            external: directions(&s.call_types.external),
            pstn: directions(&s.call_types.pstn),
            conferences: s.call_types.conferences,
            queues: s.call_types.queues,
            queue_ids: s.call_types.queue_ids.clone(),
        },
        numbers: NumberFilters {
            received: filter(&s.numbers.received),
            placed: filter(&s.numbers.placed),
        },
        schedule: Schedule {
            time_zone: s.schedule.time_zone.clone(),
            windows: s
                .schedule
                .windows
                .iter()
                .map(|w| Window {
                    day: weekday(w.day),
                    start: w.start.clone(),
                    end: w.end.clone(),
                })
                .collect(),
        },
        mode: match s.mode {
            rp::RecordingMode::Always => RecordingMode::Always,
            rp::RecordingMode::OnDemand => RecordingMode::OnDemand,
            rp::RecordingMode::Mandatory => RecordingMode::Mandatory,
        },
        sample_percent: fit("selector.samplePercent", s.sample_percent)?,
    })
}

fn weekday(d: rp::Weekday) -> Weekday {
    match d {
        rp::Weekday::Monday => Weekday::Monday,
        rp::Weekday::Tuesday => Weekday::Tuesday,
        rp::Weekday::Wednesday => Weekday::Wednesday,
        rp::Weekday::Thursday => Weekday::Thursday,
        rp::Weekday::Friday => Weekday::Friday,
        rp::Weekday::Saturday => Weekday::Saturday,
        rp::Weekday::Sunday => Weekday::Sunday,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(yaml: &str) -> RecordingProfile {
        serde_yaml::from_str(yaml).expect("test profile parses")
    }

    fn storage(yaml: &str) -> StorageTarget {
        serde_yaml::from_str(yaml).expect("test storage target parses")
    }

    const KEY_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    const S3: &str = "
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: primary, namespace: bank}
spec: {type: s3, bucket: recordings, credentialsSecretRef: {name: s3-creds}}
";

    #[test]
    fn a_profile_with_all_defaults_renders_to_the_recorders_own_defaults() {
        let p = profile(
            "
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: everyone, namespace: bank}
spec:
  selector: {allUsers: true}
  storageTargetRef: {name: primary}
  encryption: {keySecretRef: {name: key}}
",
        );
        let fs = storage(
            "
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: primary, namespace: bank}
spec: {type: filesystem, path: /recordings}
",
        );
        let rendered = render_recorder_config("bank", &p, &fs, KEY_ID).expect("renders");
        // Only what has no default is given (the storage section is the StorageTarget's spec,
        // defaults included): the rest comes from RecorderConfig's defaults.
        let defaults = RecorderConfig::parse(&format!(
            "
tenant: bank
profile: everyone
storageTarget: primary
storage: {{type: filesystem, path: /recordings, capacityAlarmPercent: 90}}
encryption: {{publicKeyPath: {key}, keyId: {KEY_ID}}}
databaseUrlFile: {db}
otherProfilesFile: {others}
rules: {{allUsers: true}}
",
            key = paths::PUBLIC_KEY_PATH,
            db = paths::DATABASE_URL_FILE,
            others = paths::OTHER_PROFILES_FILE,
        ))
        .expect("defaults parse");
        assert_eq!(rendered, defaults);
    }

    #[test]
    fn secrets_are_referenced_by_their_mount_paths_never_inline() {
        let p = profile(
            "
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: sales, namespace: bank}
spec:
  selector: {groups: [sales], mode: Mandatory, samplePercent: 50}
  storageTargetRef: {name: primary}
  encryption: {keySecretRef: {name: key}}
  recorder:
    sip: {transports: [TLS], tlsSecretRef: {name: sip-tls}}
",
        );
        let c = render_recorder_config("bank", &p, &storage(S3), KEY_ID).expect("renders");
        assert_eq!(c.tenant, "bank");
        assert_eq!(c.profile, "sales");
        assert_eq!(
            c.storage_credentials_dir.as_deref(),
            Some(std::path::Path::new(paths::STORAGE_CREDENTIALS_DIR))
        );
        assert_eq!(
            c.sip.tls_dir.as_deref(),
            Some(std::path::Path::new(paths::SIP_TLS_DIR))
        );
        assert_eq!(c.rules.mode, RecordingMode::Mandatory);
        assert_eq!(c.rules.sample_percent, 50);
        let yaml = serde_yaml::to_string(&c).expect("serializes");
        assert!(!yaml.contains("s3-creds"), "{yaml}");
    }

    #[test]
    fn a_profile_the_recorder_would_reject_is_not_rendered() {
        let p = profile(
            "
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: sales, namespace: bank}
spec:
  selector: {groups: [sales], schedule: {timeZone: Not/AZone}}
  storageTargetRef: {name: primary}
  encryption: {keySecretRef: {name: key}}
",
        );
        let err = render_recorder_config("bank", &p, &storage(S3), KEY_ID).expect_err("rejected");
        assert!(err.to_string().contains("rules.schedule"), "{err}");
        let err =
            render_recorder_config("bank", &p, &storage(S3), "not-a-key-id").expect_err("rejected");
        assert!(err.to_string().contains("encryption.keyId"), "{err}");
    }

    #[test]
    fn an_out_of_range_port_is_reported_with_its_field() {
        let p = profile(
            "
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: sales, namespace: bank}
spec:
  selector: {allUsers: true}
  storageTargetRef: {name: primary}
  encryption: {keySecretRef: {name: key}}
  recorder: {sip: {port: 70000}}
",
        );
        let err = render_recorder_config("bank", &p, &storage(S3), KEY_ID).expect_err("rejected");
        assert!(
            matches!(
                err,
                RenderError::OutOfRange {
                    field: "recorder.sip.port",
                    value: 70000
                }
            ),
            "{err}"
        );
    }
}
