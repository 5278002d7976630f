//! SpeechJob: transcription of recordings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CRON_MESSAGE, CRON_RULE, SecretRef};
use crate::status::Condition;

/// Transcribes recordings (per channel, with word timings) with a local or remote engine, on a
/// cron schedule or once.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "callvault.io",
    version = "v1alpha1",
    kind = "SpeechJob",
    plural = "speechjobs",
    shortname = "sj",
    shortname = "stt",
    category = "callvault",
    namespaced,
    doc = "A SpeechJob: transcribes recordings on a schedule or once.",
    status = "SpeechJobStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".spec.engine.type"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Processed","type":"integer","jsonPath":".status.processed"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessfulRunTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SpeechJobSpec {
    /// The speech-to-text engine.
    pub engine: Engine,
    /// Spoken language, BCP 47 (e.g. `en-US`, `de-DE`).
    #[serde(default = "default_language")]
    #[schemars(
        length(min = 2, max = 35),
        regex(pattern = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    )]
    pub language: String,
    /// Words and phrases the engine should expect (product names, domain terms). Keep it short.
    #[serde(default)]
    #[schemars(length(max = 500), inner(length(min = 1, max = 100)))]
    pub phrase_hints: Vec<String>,
    /// Which recordings are transcribed.
    #[serde(default)]
    pub filter: SpeechFilter,
    /// `Incremental` transcribes recordings not yet transcribed by this job; `Backfill` also
    /// re-transcribes those already done (e.g. after changing the engine).
    #[serde(default)]
    pub mode: SpeechMode,
    /// Cron schedule (5 fields, UTC). Without it the job runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 7, max = 128),
        extend("x-kubernetes-validations" = [{"rule": CRON_RULE, "message": format!("spec.schedule {CRON_MESSAGE}"), "reason": "FieldValueInvalid"}])
    )]
    pub schedule: Option<String>,
    /// Recordings transcribed in parallel.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: i32,
    /// Stop scheduling new runs; a running one finishes.
    #[serde(default)]
    pub suspend: bool,
}

fn default_language() -> String {
    "en-US".to_owned()
}
fn default_concurrency() -> i32 {
    2
}

/// Engine settings; each `type` takes its own fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'whisper' || has(self.modelPath)",
     "message": "spec.engine.modelPath is required when spec.engine.type is whisper",
     "fieldPath": ".modelPath", "reason": "FieldValueRequired"},
    {"rule": "!has(self.modelPath) || self.type == 'whisper'",
     "message": "spec.engine.modelPath is only allowed when spec.engine.type is whisper",
     "fieldPath": ".modelPath", "reason": "FieldValueForbidden"},
    {"rule": "!has(self.claimName) || self.type == 'whisper'",
     "message": "spec.engine.claimName is only allowed when spec.engine.type is whisper",
     "fieldPath": ".claimName", "reason": "FieldValueForbidden"},
    {"rule": "self.type != 'google' || has(self.credentialsSecretRef)",
     "message": "spec.engine.credentialsSecretRef is required when spec.engine.type is google",
     "fieldPath": ".credentialsSecretRef", "reason": "FieldValueRequired"},
    {"rule": "self.type != 'whisper' || !has(self.credentialsSecretRef)",
     "message": "spec.engine.credentialsSecretRef is not allowed when spec.engine.type is whisper (it runs offline)",
     "fieldPath": ".credentialsSecretRef", "reason": "FieldValueForbidden"},
    {"rule": "self.type != 'whisper' || !has(self.endpoint)",
     "message": "spec.engine.endpoint is not allowed when spec.engine.type is whisper (it runs offline)",
     "fieldPath": ".endpoint", "reason": "FieldValueForbidden"},
    {"rule": "self.type != 'openai' || has(self.endpoint) || has(self.credentialsSecretRef)",
     "message": "spec.engine.credentialsSecretRef is required when spec.engine.type is openai and no endpoint is set",
     "fieldPath": ".credentialsSecretRef", "reason": "FieldValueRequired"}
]))]
pub struct Engine {
    /// `whisper` (local, offline model), `openai` (any OpenAI-compatible
    /// `/v1/audio/transcriptions`) or `google` (Cloud Speech-to-Text).
    #[serde(rename = "type")]
    pub type_: EngineType,
    /// Model name, e.g. `whisper-1` (openai), `latest_long` (google), `base.en` (whisper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub model: Option<String>,
    /// Path of the model file inside the job pod (whisper; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub model_path: Option<String>,
    /// PersistentVolumeClaim holding the model, mounted read-only (whisper only, optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub claim_name: Option<String>,
    /// Service base URL (openai, google; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+[^\s]*$")
    )]
    pub endpoint: Option<String>,
    /// Secret with the credentials: key `apiKey` (openai) or `serviceAccountJson` (google).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// Speech-to-text engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineType {
    /// Local Whisper model, offline.
    Whisper,
    /// An OpenAI-compatible transcription API.
    Openai,
    /// Google Cloud Speech-to-Text.
    Google,
}

/// Transcription mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SpeechMode {
    /// Only recordings this job has not transcribed yet.
    #[default]
    Incremental,
    /// Every matching recording, including those already transcribed.
    Backfill,
}

/// Which recordings a SpeechJob transcribes; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.minDurationSeconds) || !has(self.maxDurationSeconds) || self.minDurationSeconds <= self.maxDurationSeconds",
     "message": "spec.filter.minDurationSeconds must not exceed spec.filter.maxDurationSeconds",
     "fieldPath": ".minDurationSeconds"},
    {"rule": "!has(self.from) || !has(self.to) || self.from < self.to",
     "message": "spec.filter.from must be before spec.filter.to",
     "fieldPath": ".from"}
]))]
pub struct SpeechFilter {
    /// RecordingProfiles whose recordings are transcribed.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub recording_profiles: Vec<String>,
    /// Groups whose members' recordings are transcribed.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub groups: Vec<String>,
    /// Shortest call transcribed, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub min_duration_seconds: Option<i64>,
    /// Longest call transcribed, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub max_duration_seconds: Option<i64>,
    /// Only calls that started at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Time>,
    /// Only calls that started before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Time>,
    /// Call direction.
    #[serde(default)]
    pub direction: DirectionFilter,
}

/// Call direction filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DirectionFilter {
    /// Every direction.
    #[default]
    Any,
    /// Calls received.
    Inbound,
    /// Calls placed.
    Outbound,
    /// Calls between users.
    Internal,
}

/// Observed state of a SpeechJob.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeechJobStatus {
    /// Ready, LastRunSucceeded.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Recordings transcribed.
    #[serde(default)]
    pub processed: i64,
    /// Recordings that failed (retried next run).
    #[serde(default)]
    pub failed: i64,
    /// Matching recordings not yet transcribed.
    #[serde(default)]
    pub pending: i64,
    /// Start of the most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// Start of the most recent run that finished without errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run_time: Option<Time>,
}
