//! Pieces every pod the operator builds shares: security contexts, volumes and mounts.

use k8s_openapi::api::core::v1::{
    Capabilities, KeyToPath, PodSecurityContext, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};

use crate::render::paths;

/// The non-root user every CallVault container runs as.
const RUN_AS: i64 = 65532;

/// Where the operator's installation keeps the database URL the workloads read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSecret {
    /// Secret (in each watched namespace) holding the database URL.
    pub name: String,
    /// Key of the URL in that Secret.
    pub key: String,
}

/// The database Secret's URL item only, mounted at [`paths::DATABASE_DIR`].
pub fn database_volume(secret: &DatabaseSecret) -> Volume {
    Volume {
        name: "database".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            items: Some(vec![KeyToPath {
                key: secret.key.clone(),
                path: paths::DATABASE_URL_FILE_NAME.to_owned(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A whole Secret as a read-only volume.
pub fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// A read-only mount; writable ones override `read_only`.
pub fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Non-root, default seccomp; volumes writable by the same user.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        // The spool volume must be writable by that user.
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// No privilege escalation, read-only root, no capabilities.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}
