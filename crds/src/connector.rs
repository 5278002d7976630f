//! Connector: archive copies of recordings to a second StorageTarget.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CRON_MESSAGE, CRON_RULE, LocalObjectRef};
use crate::status::{Condition, RunResult};

/// Copies recordings to an archive StorageTarget on a schedule, including older recordings not
/// yet copied. Archive copies are never deleted by the portal, playback falls back to them when
/// the primary copy is gone, and a Connector that archived anything cannot be deleted.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "callvault.io",
    version = "v1alpha1",
    kind = "Connector",
    plural = "connectors",
    shortname = "conn",
    category = "callvault",
    namespaced,
    doc = "A Connector: archives copies of recordings to a second StorageTarget.",
    status = "ConnectorStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.storageTargetRef.name"}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","jsonPath":".spec.active"}"#,
    printcolumn = r#"{"name":"Encrypt","type":"boolean","jsonPath":".spec.encrypt"}"#,
    printcolumn = r#"{"name":"Reachable","type":"string","jsonPath":".status.conditions[?(@.type==\"Reachable\")].status"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","description":"Recordings not yet archived","jsonPath":".status.pendingFiles"}"#,
    printcolumn = r#"{"name":"Archived","type":"integer","jsonPath":".status.archivedFiles"}"#,
    printcolumn = r#"{"name":"Last Archive","type":"date","description":"Last successful archive","jsonPath":".status.lastSuccessfulArchiveTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSpec {
    /// Destination StorageTarget (same namespace) the archive copies go to.
    pub storage_target_ref: LocalObjectRef,
    /// Which recordings are archived (default: all).
    #[serde(default)]
    pub source: ConnectorSource,
    /// Cron schedule (5 fields, UTC) of the archive run.
    #[serde(default = "default_schedule")]
    #[schemars(
        length(min = 7, max = 128),
        extend("x-kubernetes-validations" = [{"rule": CRON_RULE, "message": format!("spec.schedule {CRON_MESSAGE}"), "reason": "FieldValueInvalid"}])
    )]
    pub schedule: String,
    /// Only an active Connector archives; an inactive one keeps its copies readable.
    #[serde(default = "yes")]
    pub active: bool,
    /// Keep archive copies encrypted exactly as stored (true), or write decrypted Ogg files
    /// (false; the archive job then needs the private key). One-way: once true it stays true.
    #[serde(default = "yes")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!oldSelf || self",
        "message": "spec.encrypt is one-way: an encrypting Connector cannot be switched to plaintext archives",
        "reason": "FieldValueForbidden"
    }]))]
    pub encrypt: bool,
}

fn default_schedule() -> String {
    "*/5 * * * *".to_owned()
}

fn yes() -> bool {
    true
}

/// Recordings a Connector archives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorSource {
    /// RecordingProfiles whose recordings are archived; empty means all of the namespace.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub recording_profiles: Vec<String>,
}

/// Observed state of a Connector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorStatus {
    /// Ready, Reachable, DeletionBlocked, LastRunSucceeded.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Recordings not yet archived.
    #[serde(default)]
    pub pending_files: i64,
    /// Recordings archived through this Connector.
    #[serde(default)]
    pub archived_files: i64,
    /// End of the last run that archived without errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_archive_time: Option<Time>,
    /// The most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunSummary>,
}

/// One archive or transcription run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// When the run started.
    pub start_time: Time,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Outcome.
    pub result: RunResult,
    /// Items processed successfully.
    #[serde(default)]
    pub succeeded: i64,
    /// Items that failed (retried next run).
    #[serde(default)]
    pub failed: i64,
    /// First error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
