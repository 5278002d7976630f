//! Typed StorageTarget configuration and credentials, validated in one place.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

/// The kind of object store a StorageTarget points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    S3,
    Azure,
    Gcs,
    Filesystem,
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageKind::S3 => "s3",
            StorageKind::Azure => "azure",
            StorageKind::Gcs => "gcs",
            StorageKind::Filesystem => "filesystem",
        })
    }
}

/// A StorageTarget's `spec`, deserialized directly from the resource JSON.
///
/// Unknown fields (`credentialsSecretRef`, anything added later) are ignored: credentials
/// arrive separately as [`Credentials`], mounted from the Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageConfig {
    #[serde(rename = "type")]
    pub kind: StorageKind,
    /// Bucket name (s3, gcs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Blob container name (azure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Storage account name (azure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Directory that holds the recordings (filesystem): where the PVC or host path is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The PVC backing a filesystem target. Only the operator uses it (to mount the volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Service URL. S3: e.g. `http://127.0.0.1:9000`; Azure: the account URL (for Azurite
    /// `http://127.0.0.1:10000/devstoreaccount1`); GCS: the JSON API base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 virtual-hosted-style requests (`bucket.host`); default path style (`host/bucket`).
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Parent folder prepended to every object key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Usage percentage at which the operator raises a capacity alarm (1-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_alarm_percent: Option<u8>,
}

/// A configuration that passed [`StorageConfig::validate`]: exactly what [`super::open`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedConfig {
    pub backend: Backend,
    /// Normalised prefix without leading/trailing `/`; `None` when empty.
    pub prefix: Option<String>,
}

/// The validated location of a store, per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    S3 {
        bucket: String,
        endpoint: Option<Url>,
        region: String,
        virtual_hosted_style: bool,
    },
    Azure {
        account: String,
        container: String,
        endpoint: Option<Url>,
    },
    Gcs {
        bucket: String,
        endpoint: Option<Url>,
    },
    Filesystem {
        path: PathBuf,
    },
}

impl Backend {
    pub fn kind(&self) -> StorageKind {
        match self {
            Backend::S3 { .. } => StorageKind::S3,
            Backend::Azure { .. } => StorageKind::Azure,
            Backend::Gcs { .. } => StorageKind::Gcs,
            Backend::Filesystem { .. } => StorageKind::Filesystem,
        }
    }
}

/// A StorageTarget spec that cannot be used, naming the field and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{field}` is required for a {kind} storage target")]
    Missing {
        field: &'static str,
        kind: StorageKind,
    },
    #[error("`{field}` does not apply to a {kind} storage target")]
    NotApplicable {
        field: &'static str,
        kind: StorageKind,
    },
    #[error("`{field}` is invalid: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl StorageConfig {
    /// Parses a StorageTarget `spec` JSON value.
    pub fn from_spec(spec: &serde_json::Value) -> Result<Self, ConfigError> {
        serde_json::from_value(spec.clone()).map_err(|e| ConfigError::Invalid {
            field: "spec",
            problem: e.to_string(),
        })
    }

    /// Checks every rule for the target's kind and returns what [`super::open`] uses.
    pub fn validate(&self) -> Result<ValidatedConfig, ConfigError> {
        let kind = self.kind;
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        let forbid = |field: &'static str, set: bool| {
            if set {
                Err(ConfigError::NotApplicable { field, kind })
            } else {
                Ok(())
            }
        };
        let require = |field: &'static str, v: &Option<String>| -> Result<String, ConfigError> {
            match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => Err(ConfigError::Missing { field, kind }),
            }
        };

        if kind != StorageKind::S3 {
            forbid("region", given(&self.region))?;
            forbid("virtualHostedStyle", self.virtual_hosted_style)?;
        }
        if !matches!(kind, StorageKind::S3 | StorageKind::Gcs) {
            forbid("bucket", given(&self.bucket))?;
        }
        if kind != StorageKind::Azure {
            forbid("container", given(&self.container))?;
            forbid("account", given(&self.account))?;
        }
        if kind != StorageKind::Filesystem {
            forbid("path", given(&self.path))?;
            forbid("claimName", given(&self.claim_name))?;
        } else {
            forbid("endpoint", given(&self.endpoint))?;
        }
        if let Some(p) = self.capacity_alarm_percent
            && !(1..=100).contains(&p)
        {
            return Err(ConfigError::Invalid {
                field: "capacityAlarmPercent",
                problem: format!("{p} is not between 1 and 100"),
            });
        }
        let endpoint = self.endpoint.as_deref().map(parse_endpoint).transpose()?;

        let backend = match kind {
            StorageKind::S3 => {
                let bucket = require("bucket", &self.bucket)?;
                check_s3_bucket(&bucket)?;
                let region = match self.region.as_deref().map(str::trim) {
                    Some(r) if !r.is_empty() => {
                        if !r
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        {
                            return Err(ConfigError::Invalid {
                                field: "region",
                                problem: format!("{r:?} is not a region name like us-east-1"),
                            });
                        }
                        r.to_owned()
                    }
                    _ => "us-east-1".to_owned(),
                };
                Backend::S3 {
                    bucket,
                    endpoint,
                    region,
                    virtual_hosted_style: self.virtual_hosted_style,
                }
            }
            StorageKind::Azure => {
                let account = require("account", &self.account)?;
                check_azure_account(&account)?;
                let container = require("container", &self.container)?;
                check_azure_container(&container)?;
                Backend::Azure {
                    account,
                    container,
                    endpoint,
                }
            }
            StorageKind::Gcs => {
                let bucket = require("bucket", &self.bucket)?;
                check_gcs_bucket(&bucket)?;
                Backend::Gcs { bucket, endpoint }
            }
            StorageKind::Filesystem => {
                let path = require("path", &self.path)?;
                Backend::Filesystem {
                    path: PathBuf::from(path),
                }
            }
        };
        Ok(ValidatedConfig {
            backend,
            prefix: normalise_prefix(self.prefix.as_deref())?,
        })
    }
}

fn parse_endpoint(raw: &str) -> Result<Url, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        field: "endpoint",
        problem,
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{raw:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        // A query here would most likely be a SAS token pasted into the wrong field.
        return Err(invalid(
            "must not contain a query or fragment (put SAS tokens in the credentials Secret)"
                .into(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not contain credentials (use the credentials Secret)".into(),
        ));
    }
    Ok(url)
}

/// Trims slashes and checks each segment: the prefix becomes the first part of every key.
fn normalise_prefix(raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(trimmed) = raw.map(|p| p.trim().trim_matches('/')) else {
        return Ok(None);
    };
    if trimmed.is_empty() {
        return Ok(None);
    }
    for segment in trimmed.split('/') {
        let problem = if segment.is_empty() {
            Some("contains an empty segment (`//`)".to_owned())
        } else if segment == "." || segment == ".." {
            Some(format!("contains the segment {segment:?}"))
        } else if segment.chars().any(|c| c.is_control() || c == '\\') {
            Some(format!(
                "segment {segment:?} contains a control character or backslash"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ConfigError::Invalid {
                field: "prefix",
                problem,
            });
        }
    }
    Ok(Some(trimmed.to_owned()))
}

fn name_error(field: &'static str, name: &str, rule: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        problem: format!("{name:?} {rule}"),
    }
}

fn check_s3_bucket(name: &str) -> Result<(), ConfigError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&name.len()) || !ok_chars || !ok_ends || name.contains("..") {
        return Err(name_error(
            "bucket",
            name,
            "is not a DNS-compliant S3 bucket name (3-63 lowercase letters, digits, '-' or '.', \
             starting and ending with a letter or digit)",
        ));
    }
    Ok(())
}

fn check_gcs_bucket(name: &str) -> Result<(), ConfigError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !(3..=222).contains(&name.len()) || !ok_chars || !ok_ends {
        return Err(name_error(
            "bucket",
            name,
            "is not a GCS bucket name (3-222 lowercase letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit)",
        ));
    }
    Ok(())
}

fn check_azure_account(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=24).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        return Err(name_error(
            "account",
            name,
            "is not an Azure storage account name (3-24 lowercase letters and digits)",
        ));
    }
    Ok(())
}

fn check_azure_container(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--");
    if !ok {
        return Err(name_error(
            "container",
            name,
            "is not an Azure container name (3-63 lowercase letters, digits and single '-', \
             starting and ending with a letter or digit)",
        ));
    }
    Ok(())
}

/// A secret string. Its `Debug` never shows the value, so credentials cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value; call only where it is handed to the storage client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for a storage target, as mounted from its Secret.
///
/// Secret keys (file names in the mounted directory): `accessKeyId` + `secretAccessKey` (s3),
/// `accountKey` or `sasToken` (azure), `serviceAccountJson` (gcs). A filesystem target needs none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub account_key: Option<Secret>,
    pub sas_token: Option<Secret>,
    pub service_account_json: Option<Secret>,
}

/// A credentials directory that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read credentials file {path}: {source}")]
pub struct CredentialsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Credentials {
    pub const ACCESS_KEY_ID: &'static str = "accessKeyId";
    pub const SECRET_ACCESS_KEY: &'static str = "secretAccessKey";
    pub const ACCOUNT_KEY: &'static str = "accountKey";
    pub const SAS_TOKEN: &'static str = "sasToken";
    pub const SERVICE_ACCOUNT_JSON: &'static str = "serviceAccountJson";

    /// No credentials (filesystem targets).
    pub fn none() -> Self {
        Self::default()
    }

    pub fn s3(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: Some(Secret::new(access_key_id)),
            secret_access_key: Some(Secret::new(secret_access_key)),
            ..Self::default()
        }
    }

    pub fn azure_key(account_key: impl Into<String>) -> Self {
        Credentials {
            account_key: Some(Secret::new(account_key)),
            ..Self::default()
        }
    }

    pub fn gcs(service_account_json: impl Into<String>) -> Self {
        Credentials {
            service_account_json: Some(Secret::new(service_account_json)),
            ..Self::default()
        }
    }

    /// Reads the files of a mounted Secret. Missing files leave their field empty; a file that
    /// exists but cannot be read is an error. Trailing newlines are trimmed (editors add them).
    pub fn from_dir(dir: &Path) -> Result<Self, CredentialsError> {
        let read = |name: &str| -> Result<Option<Secret>, CredentialsError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => {
                    let s = s.trim_end_matches(['\n', '\r']);
                    Ok((!s.is_empty()).then(|| Secret::new(s)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(CredentialsError { path, source }),
            }
        };
        Ok(Credentials {
            access_key_id: read(Self::ACCESS_KEY_ID)?,
            secret_access_key: read(Self::SECRET_ACCESS_KEY)?,
            account_key: read(Self::ACCOUNT_KEY)?,
            sas_token: read(Self::SAS_TOKEN)?,
            service_account_json: read(Self::SERVICE_ACCOUNT_JSON)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Result<ValidatedConfig, ConfigError> {
        StorageConfig::from_spec(&v)?.validate()
    }

    #[test]
    fn s3_spec_with_unknown_fields_parses_with_defaults() {
        let v = cfg(json!({
            "type": "s3", "bucket": "calls", "endpoint": "http://127.0.0.1:9000",
            "prefix": "/tenant-a/rec/", "credentialsSecretRef": {"name": "s3"},
            "capacityAlarmPercent": 80, "somethingNew": true
        }))
        .expect("valid");
        assert_eq!(v.prefix.as_deref(), Some("tenant-a/rec"));
        match v.backend {
            Backend::S3 {
                bucket,
                region,
                virtual_hosted_style,
                endpoint,
            } => {
                assert_eq!(bucket, "calls");
                assert_eq!(region, "us-east-1");
                assert!(!virtual_hosted_style);
                assert_eq!(
                    endpoint.map(|u| u.to_string()).as_deref(),
                    Some("http://127.0.0.1:9000/")
                );
            }
            other => panic!("wrong backend {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"type": "s3"}), "`bucket` is required for a s3"),
            (
                json!({"type": "azure", "container": "rec"}),
                "`account` is required",
            ),
            (
                json!({"type": "azure", "account": "acct", "container": "rec", "bucket": "b"}),
                "`bucket` does not apply to a azure",
            ),
            (
                json!({"type": "filesystem"}),
                "`path` is required for a filesystem",
            ),
            (
                json!({"type": "filesystem", "path": "/d", "endpoint": "http://x"}),
                "`endpoint` does not apply",
            ),
            (
                json!({"type": "s3", "bucket": "Calls_Bad"}),
                "`bucket` is invalid",
            ),
            (
                json!({"type": "s3", "bucket": "calls", "endpoint": "ftp://h"}),
                "`endpoint` is invalid: scheme \"ftp\"",
            ),
            (
                json!({"type": "s3", "bucket": "calls", "endpoint": "http://h/?sv=1"}),
                "`endpoint` is invalid: must not contain a query",
            ),
            (
                json!({"type": "s3", "bucket": "calls", "prefix": "a/../b"}),
                "`prefix` is invalid",
            ),
            (
                json!({"type": "s3", "bucket": "calls", "prefix": "a//b"}),
                "empty segment",
            ),
            (
                json!({"type": "gcs", "bucket": "calls", "capacityAlarmPercent": 0}),
                "`capacityAlarmPercent` is invalid",
            ),
            (
                json!({"type": "gcs", "bucket": "calls", "region": "eu"}),
                "`region` does not apply",
            ),
            (json!({"type": "ftp"}), "`spec` is invalid"),
        ];
        for (spec, want) in cases {
            let err = cfg(spec.clone()).expect_err(&format!("{spec} should be rejected"));
            assert!(
                err.to_string().contains(want),
                "{spec}: got {err}, want {want}"
            );
        }
    }

    #[test]
    fn credentials_debug_is_redacted_and_read_from_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("accessKeyId"), "AKIDEXAMPLE\n").expect("write");
        std::fs::write(dir.path().join("secretAccessKey"), "very-secret-value").expect("write");
        let c = Credentials::from_dir(dir.path()).expect("read");
        assert_eq!(
            c.access_key_id.as_ref().map(Secret::expose),
            Some("AKIDEXAMPLE")
        );
        assert!(c.account_key.is_none());
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-value") && !shown.contains("AKIDEXAMPLE"));
    }
}
