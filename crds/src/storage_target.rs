//! StorageTarget: where recordings live.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretRef;
use crate::status::Condition;

/// An object store or directory recordings are written to (primary) or archived to (Connector).
/// Each `type` takes its own fields and no others. The operator probes it (write, read, delete a
/// probe object) and reports the result in the `Reachable` condition, which `Ready` follows.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "callvault.io",
    version = "v1alpha1",
    kind = "StorageTarget",
    plural = "storagetargets",
    shortname = "st",
    shortname = "store",
    category = "callvault",
    namespaced,
    doc = "A StorageTarget: an object store or directory that holds recordings.",
    status = "StorageTargetStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Reachable","type":"string","jsonPath":".status.conditions[?(@.type==\"Reachable\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Failing probe step, if any","jsonPath":".status.conditions[?(@.type==\"Reachable\")].reason"}"#,
    printcolumn = r#"{"name":"Bucket","type":"string","priority":1,"jsonPath":".spec.bucket"}"#,
    printcolumn = r#"{"name":"Path","type":"string","priority":1,"jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"Used","type":"integer","format":"int64","description":"Bytes stored","jsonPath":".status.usedBytes"}"#,
    printcolumn = r#"{"name":"Objects","type":"integer","jsonPath":".status.objects"}"#,
    printcolumn = r#"{"name":"Last Probe","type":"date","jsonPath":".status.lastProbeTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(self.type in ['s3', 'gcs']) || has(self.bucket)",
     "message": "spec.bucket is required when spec.type is s3 or gcs",
     "fieldPath": ".bucket", "reason": "FieldValueRequired"},
    {"rule": "!has(self.bucket) || self.type in ['s3', 'gcs']",
     "message": "spec.bucket is only allowed when spec.type is s3 or gcs",
     "fieldPath": ".bucket", "reason": "FieldValueForbidden"},
    {"rule": "self.type != 'azure' || has(self.container)",
     "message": "spec.container is required when spec.type is azure",
     "fieldPath": ".container", "reason": "FieldValueRequired"},
    {"rule": "!has(self.container) || self.type == 'azure'",
     "message": "spec.container is only allowed when spec.type is azure",
     "fieldPath": ".container", "reason": "FieldValueForbidden"},
    {"rule": "self.type != 'azure' || has(self.account)",
     "message": "spec.account is required when spec.type is azure",
     "fieldPath": ".account", "reason": "FieldValueRequired"},
    {"rule": "!has(self.account) || self.type == 'azure'",
     "message": "spec.account is only allowed when spec.type is azure",
     "fieldPath": ".account", "reason": "FieldValueForbidden"},
    {"rule": "self.type != 'filesystem' || has(self.path)",
     "message": "spec.path is required when spec.type is filesystem",
     "fieldPath": ".path", "reason": "FieldValueRequired"},
    {"rule": "!has(self.path) || self.type == 'filesystem'",
     "message": "spec.path is only allowed when spec.type is filesystem",
     "fieldPath": ".path", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.claimName) || self.type == 'filesystem'",
     "message": "spec.claimName is only allowed when spec.type is filesystem",
     "fieldPath": ".claimName", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.endpoint) || self.type != 'filesystem'",
     "message": "spec.endpoint is not allowed when spec.type is filesystem",
     "fieldPath": ".endpoint", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.region) || self.type == 's3'",
     "message": "spec.region is only allowed when spec.type is s3",
     "fieldPath": ".region", "reason": "FieldValueForbidden"},
    {"rule": "!self.virtualHostedStyle || self.type == 's3'",
     "message": "spec.virtualHostedStyle is only allowed when spec.type is s3",
     "fieldPath": ".virtualHostedStyle", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.credentialsSecretRef) || self.type != 'filesystem'",
     "message": "spec.credentialsSecretRef is not allowed when spec.type is filesystem",
     "fieldPath": ".credentialsSecretRef", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.spaceCleanup) || self.type == 'filesystem'",
     "message": "spec.spaceCleanup is only allowed when spec.type is filesystem (object stores do not fill up)",
     "fieldPath": ".spaceCleanup", "reason": "FieldValueForbidden"}
]))]
pub struct StorageTargetSpec {
    /// Kind of storage: `s3` (AWS S3 or any S3-compatible store), `azure` (Blob Storage), `gcs`
    /// (Google Cloud Storage) or `filesystem` (a directory on a mounted volume).
    #[serde(rename = "type")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.type is immutable: recordings already stored there would be orphaned; create a new StorageTarget instead",
        "reason": "FieldValueForbidden"
    }]))]
    pub type_: StorageType,
    /// Bucket name (s3 and gcs; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 222),
        regex(pattern = r"^[a-z0-9][a-z0-9._\-]*[a-z0-9]$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.bucket is immutable: recordings already stored there would be orphaned; create a new StorageTarget instead",
        "reason": "FieldValueForbidden"
    }]))]
    pub bucket: Option<String>,
    /// Blob container name (azure; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9\-]*[a-z0-9]$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.container is immutable: recordings already stored there would be orphaned; create a new StorageTarget instead",
        "reason": "FieldValueForbidden"
    }]))]
    pub container: Option<String>,
    /// Storage account name (azure; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 24), regex(pattern = r"^[a-z0-9]+$"))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.account is immutable: recordings already stored there would be orphaned; create a new StorageTarget instead",
        "reason": "FieldValueForbidden"
    }]))]
    pub account: Option<String>,
    /// Directory recordings are written under (filesystem; required there). In a cluster it is
    /// where `claimName` (or a host path) is mounted; standalone may use a relative path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!('/' + self + '/').contains('/../')",
        "message": "spec.path must not contain '..' segments"
    }, {
        "rule": "self == oldSelf",
        "message": "spec.path is immutable: recordings already stored there would be orphaned; create a new StorageTarget instead",
        "reason": "FieldValueForbidden"
    }]))]
    pub path: Option<String>,
    /// PersistentVolumeClaim mounted at `path` (filesystem only, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub claim_name: Option<String>,
    /// Service URL, for S3-compatible stores, emulators or sovereign clouds (s3, azure, gcs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+[^\s]*$")
    )]
    pub endpoint: Option<String>,
    /// Region, e.g. `eu-west-2` (s3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[a-z0-9\-]+$"))]
    pub region: Option<String>,
    /// Address buckets as `bucket.endpoint` instead of `endpoint/bucket` (s3 only).
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Parent folder inside the bucket, container or path, e.g. `recordings/emea`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[A-Za-z0-9!_.*'()\-]+(/[A-Za-z0-9!_.*'()\-]+)*$")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!('/' + self + '/').contains('/../') && !('/' + self + '/').contains('/./')",
        "message": "spec.prefix must not contain '.' or '..' segments"
    }]))]
    pub prefix: Option<String>,
    /// Secret with the credentials (s3, azure, gcs; optional: without it the workload identity
    /// of the pod is used). Keys: `accessKeyId` and `secretAccessKey` (s3), `accountKey`
    /// (azure), `serviceAccountJson` (gcs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Raise the CapacityAlarm condition when usage reaches this percentage of capacity.
    #[serde(default = "default_alarm")]
    #[schemars(range(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1 && self <= 100",
        "message": "spec.capacityAlarmPercent must be between 1 and 100"
    }]))]
    pub capacity_alarm_percent: i32,
    /// Space-based cleanup (filesystem only; off when absent). When a limit is crossed an
    /// alarm is raised, then the oldest recordings not under legal hold are deleted until the
    /// limit holds again. Their media goes; the call details stay in the catalogue and archive
    /// copies are kept. A recording's retention period does not protect it: only legal hold
    /// does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_cleanup: Option<SpaceCleanup>,
}

fn default_alarm() -> i32 {
    90
}

/// Limits of space-based cleanup; at least one is required, and either crossed starts it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.maxUsedBytes) || has(self.minFreePercent)",
     "message": "spec.spaceCleanup needs maxUsedBytes or minFreePercent (or both)",
     "reason": "FieldValueRequired"}
]))]
pub struct SpaceCleanup {
    /// The space allocated to recordings: when the files under `path` (and `prefix`) take more
    /// than this many bytes, the oldest are deleted until they take no more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_used_bytes: Option<i64>,
    /// When the volume holding `path` has less than this percentage of its space free, the
    /// oldest recordings are deleted until it has this much again (1-99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1 && self <= 99",
        "message": "spec.spaceCleanup.minFreePercent must be between 1 and 99"
    }]))]
    pub min_free_percent: Option<i32>,
}

/// Kind of storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// AWS S3 or an S3-compatible object store.
    S3,
    /// Azure Blob Storage.
    Azure,
    /// Google Cloud Storage.
    Gcs,
    /// A directory on a mounted volume.
    Filesystem,
}

/// Observed state of a StorageTarget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageTargetStatus {
    /// Ready (follows Reachable), Reachable (reason names the failing probe step), CapacityAlarm.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last probe ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Bytes stored under the prefix.
    #[serde(default)]
    pub used_bytes: i64,
    /// Objects stored under the prefix.
    #[serde(default)]
    pub objects: i64,
}
