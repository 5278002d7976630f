//! Status types every CallVault resource shares: conditions and their vocabulary.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One observation of the resource's state, keyed by `type` (the Kubernetes convention).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`, `Reachable` (see the `condition_type` constants).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the last transition (see the `reason` constants).
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Human-readable detail: what failed and what to do about it.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When the status last changed.
    pub last_transition_time: Time,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell yet.
    Unknown,
}

/// Condition types used across the CallVault resources.
pub mod condition_type {
    /// The resource is fully reconciled and serving.
    pub const READY: &str = "Ready";
    /// RecordingProfile: at least one recorder pod accepts calls.
    pub const RECORDERS_AVAILABLE: &str = "RecordersAvailable";
    /// RecordingProfile: the StorageTarget and encryption key are resolved and usable.
    pub const STORAGE_BOUND: &str = "StorageBound";
    /// StorageTarget / Connector: the probe (write, read, delete) succeeded.
    pub const REACHABLE: &str = "Reachable";
    /// Connector: the finalizer blocks deletion because archive copies exist.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    /// AccessProfile: subjects were resolved against the user directory.
    pub const SUBJECTS_RESOLVED: &str = "SubjectsResolved";
    /// StorageTarget: usage crossed `capacityAlarmPercent`.
    pub const CAPACITY_ALARM: &str = "CapacityAlarm";
    /// SpeechJob / Connector: the last run succeeded.
    pub const LAST_RUN_SUCCEEDED: &str = "LastRunSucceeded";
    /// RecordingProfile: users it selects are recorded by an older profile (one profile per
    /// user), so it does not record them; the message names them.
    pub const CONFLICT: &str = "Conflict";
    /// RecordingProfile: the last recording assurance test call was recorded intact (its
    /// recording found, sealed, decrypted and each channel as sent).
    pub const ASSURED: &str = "Assured";
}

/// Reasons for condition transitions (CamelCase, as Kubernetes expects).
pub mod reason {
    /// Everything reconciled as declared.
    pub const RECONCILED: &str = "Reconciled";
    /// The controller has not finished its first reconcile.
    pub const PENDING: &str = "Pending";
    /// The profile was disabled (one-way).
    pub const DISABLED: &str = "Disabled";
    /// Fewer recorder pods are ready than `minReplicas`.
    pub const RECORDERS_UNAVAILABLE: &str = "RecordersUnavailable";
    /// The referenced StorageTarget does not exist.
    pub const STORAGE_TARGET_NOT_FOUND: &str = "StorageTargetNotFound";
    /// The referenced StorageTarget exists but is not Reachable.
    pub const STORAGE_TARGET_UNREACHABLE: &str = "StorageTargetUnreachable";
    /// A recorder's spool has less free space than its `minFreeMiB`: new calls are refused.
    pub const SPOOL_FULL: &str = "SpoolFull";
    /// The encryption public-key Secret (or its key) is missing.
    pub const KEY_SECRET_NOT_FOUND: &str = "KeySecretNotFound";
    /// The encryption public key cannot be parsed or is too weak.
    pub const INVALID_KEY: &str = "InvalidKey";
    /// The credentials Secret is missing or lacks a required key.
    pub const CREDENTIALS_NOT_FOUND: &str = "CredentialsNotFound";
    /// Probe step failed: connecting or authenticating.
    pub const CONNECT_FAILED: &str = "ConnectFailed";
    /// Probe step failed: writing the probe object.
    pub const WRITE_FAILED: &str = "WriteFailed";
    /// Probe step failed: reading the probe object back.
    pub const READ_FAILED: &str = "ReadFailed";
    /// Probe step failed: deleting the probe object.
    pub const DELETE_FAILED: &str = "DeleteFailed";
    /// Probe succeeded.
    pub const PROBE_SUCCEEDED: &str = "ProbeSucceeded";
    /// Every recorder is full and the pool cannot grow: new calls are refused (or go
    /// unrecorded without failClosed).
    pub const CAPACITY_EXCEEDED: &str = "CapacityExceeded";
    /// The Secret with the database URL, which the resource's pods mount, does not exist in
    /// its namespace.
    pub const DATABASE_SECRET_NOT_FOUND: &str = "DatabaseSecretNotFound";
    /// Users matched by this profile are also matched by another one.
    pub const USER_CONFLICT: &str = "UserConflict";
    /// Every user this profile matches is its own.
    pub const NO_CONFLICT: &str = "NoConflict";
    /// Connector: recordings were archived through it, so it cannot be deleted.
    pub const ARCHIVES_EXIST: &str = "ArchivesExist";
    /// RecordingProfile: recordings of it are still stored, so it cannot be deleted.
    pub const RECORDINGS_EXIST: &str = "RecordingsExist";
    /// StorageTarget: a RecordingProfile or Connector stores on it, so it cannot be deleted.
    pub const STORAGE_IN_USE: &str = "StorageInUse";
    /// A scheduled run failed.
    pub const RUN_FAILED: &str = "RunFailed";
    /// A scheduled run succeeded.
    pub const RUN_SUCCEEDED: &str = "RunSucceeded";
    /// Some referenced groups or users are unknown to the directory.
    pub const UNKNOWN_SUBJECTS: &str = "UnknownSubjects";
    /// The resource is invalid in a way only the controller can see (e.g. a bad regex).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Recording assurance: the test call was recorded, sealed and each channel as sent.
    pub const TEST_CALL_RECORDED: &str = "TestCallRecorded";
    /// Recording assurance: the test call was refused, not answered or cut.
    pub const TEST_CALL_FAILED: &str = "TestCallFailed";
    /// Recording assurance: no recording of the test call was found.
    pub const RECORDING_NOT_FOUND: &str = "RecordingNotFound";
    /// Recording assurance: the test call's recording was not committed in time.
    pub const RECORDING_NOT_COMMITTED: &str = "RecordingNotCommitted";
    /// Recording assurance: the test call's recording was committed incomplete.
    pub const RECORDING_INCOMPLETE: &str = "RecordingIncomplete";
    /// Recording assurance: the recording failed its seal or did not decrypt.
    pub const SEAL_INVALID: &str = "SealInvalid";
    /// Recording assurance: a channel of the recording is not what was sent.
    pub const AUDIO_MISMATCH: &str = "AudioMismatch";
    /// Recording assurance: the check itself could not run (database, storage, keys).
    pub const CHECK_FAILED: &str = "CheckFailed";
}

/// Result of one scheduled run (Connector, SpeechJob).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunResult {
    /// The run is in progress.
    Running,
    /// The run finished and every item succeeded.
    Succeeded,
    /// The run finished with some items failed (see `message`).
    PartiallyFailed,
    /// The run failed.
    Failed,
}
