//! RecordingProfile: what to record, how long to keep it, where, and the recorder pool for it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CRON_MESSAGE, CRON_RULE, LocalObjectRef, Names, SecretKeyRef};
use crate::status::Condition;

/// What to record, how long to keep it, where to store it, and the recorder pool that records it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "callvault.io",
    version = "v1alpha1",
    kind = "RecordingProfile",
    plural = "recordingprofiles",
    shortname = "rp",
    shortname = "recprof",
    category = "callvault",
    namespaced,
    doc = "A RecordingProfile: what is recorded, retention, storage, encryption key and recorder pool.",
    status = "RecordingProfileStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.selector.mode"}"#,
    printcolumn = r#"{"name":"Recorders","type":"string","description":"Ready recorder pods","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Sessions","type":"integer","description":"Calls being recorded now","jsonPath":".status.activeSessions"}"#,
    printcolumn = r#"{"name":"Users","type":"integer","jsonPath":".status.usersMatched"}"#,
    printcolumn = r#"{"name":"Retention","type":"integer","description":"Days recordings are kept","jsonPath":".spec.retention.days"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","priority":1,"jsonPath":".spec.storageTargetRef.name"}"#,
    printcolumn = r#"{"name":"Disabled","type":"boolean","jsonPath":".spec.disabled"}"#,
    printcolumn = r#"{"name":"Last Recording","type":"date","priority":1,"jsonPath":".status.lastRecordingTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RecordingProfileSpec {
    /// Free-text description shown in the portal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Whose calls, which calls and when they are recorded. Required: its rules (at least one
    /// group unless `allUsers`) leave no valid default.
    pub selector: RecordingSelector,
    /// How long recordings are kept before the daily retention run deletes them.
    #[serde(default)]
    pub retention: Retention,
    /// StorageTarget (same namespace) the recordings are written to.
    pub storage_target_ref: LocalObjectRef,
    /// Encryption of every recording. There is no off switch.
    pub encryption: Encryption,
    /// Audio encoding of the stored recording (Opus in Ogg, a mono encoder per channel).
    #[serde(default)]
    pub media: Media,
    /// Longest single recording segment in seconds; longer calls continue in a new segment.
    #[serde(default = "default_max_duration")]
    #[schemars(range(min = 60, max = 86400))]
    pub max_duration_seconds: i64,
    /// The recorder pool (StatefulSet) that records calls for this profile.
    #[serde(default)]
    pub recorder: RecorderPool,
    /// Disable the profile: its users are released and nothing more is recorded. One-way: a
    /// disabled profile cannot be re-enabled (create a new one); existing recordings are kept.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "!oldSelf || self",
        "message": "spec.disabled is one-way: a disabled RecordingProfile cannot be re-enabled; create a new profile instead",
        "reason": "FieldValueForbidden"
    }]))]
    pub disabled: bool,
    /// Recording assurance: on this schedule a test call with known audio goes through the
    /// profile's own SIP entry point, and its recording is found, its seal verified, and each
    /// channel compared with what was sent. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assurance: Option<Assurance>,
}

/// Recording assurance of a profile (see `spec.assurance`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assurance {
    /// Cron schedule (5 fields, UTC) of the test call, e.g. `0 6 * * *` for daily evidence.
    #[schemars(
        length(min = 7, max = 128),
        extend("x-kubernetes-validations" = [{"rule": CRON_RULE, "message": format!("spec.assurance.schedule {CRON_MESSAGE}"), "reason": "FieldValueInvalid"}])
    )]
    pub schedule: String,
    /// Calling number of the test call, as its recording names it (digits, `+` or a `sip:` URI).
    #[serde(default = "default_assurance_from")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9+*#.:@_-]+$"))]
    pub from_number: String,
    /// Called number of the test call.
    #[serde(default = "default_assurance_to")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9+*#.:@_-]+$"))]
    pub to_number: String,
    /// Seconds of known audio the test call carries.
    #[serde(default = "default_assurance_seconds")]
    #[schemars(range(min = 3, max = 60))]
    pub duration_seconds: i32,
    /// Seconds the check waits for the recording to be committed after the call ends.
    #[serde(default = "default_assurance_commit")]
    #[schemars(range(min = 10, max = 3600))]
    pub commit_timeout_seconds: i32,
    /// Days a test recording is kept (never longer than `spec.retention` keeps recordings):
    /// the evidence is the audit entry and the status, the recording itself is only a sample.
    #[serde(default = "default_assurance_retention")]
    #[schemars(range(min = 1, max = 365))]
    pub retention_days: i32,
}

// Numbers from the ranges reserved for fiction (+1 555 01xx), so no real party is named.
fn default_assurance_from() -> String {
    "+15550100901".to_owned()
}
fn default_assurance_to() -> String {
    "+15550100902".to_owned()
}
fn default_assurance_seconds() -> i32 {
    6
}
fn default_assurance_commit() -> i32 {
    120
}
fn default_assurance_retention() -> i32 {
    7
}

fn default_max_duration() -> i64 {
    18000
}

/// Whose calls, which calls and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.allUsers || size(self.groups) > 0",
    "message": "spec.selector.groups must name at least one group unless spec.selector.allUsers is true",
    "fieldPath": ".groups",
    "reason": "FieldValueRequired"
}]))]
pub struct RecordingSelector {
    /// Record every user of the namespace (tenant) instead of listing groups.
    #[serde(default)]
    pub all_users: bool,
    /// Directory groups whose members are recorded. A user may be matched by one profile only.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub groups: Names,
    /// Which kinds of calls are recorded.
    #[serde(default)]
    pub call_types: CallTypes,
    /// Allow/block filters on the remote party's number.
    #[serde(default)]
    pub numbers: NumberFilters,
    /// When calls are recorded (default: always, 24/7).
    #[serde(default)]
    pub schedule: Schedule,
    /// `Always` records every matching call; `OnDemand` records when a user starts it;
    /// `Mandatory` records every matching call and fails the call when it cannot be recorded.
    #[serde(default)]
    pub mode: RecordingMode,
    /// Percentage of matching calls to record (quality-assurance sampling), 1 to 100.
    #[serde(default = "default_sample")]
    #[schemars(range(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1 && self <= 100",
        "message": "spec.selector.samplePercent must be between 1 and 100"
    }]))]
    pub sample_percent: i32,
}

impl Default for RecordingSelector {
    fn default() -> Self {
        Self {
            all_users: false,
            groups: Vec::new(),
            call_types: CallTypes::default(),
            numbers: NumberFilters::default(),
            schedule: Schedule::default(),
            mode: RecordingMode::default(),
            sample_percent: default_sample(),
        }
    }
}

fn default_sample() -> i32 {
    100
}

/// Recording mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RecordingMode {
    /// Record every matching call.
    #[default]
    Always,
    /// Record only when a user starts recording during the call.
    OnDemand,
    /// Record every matching call; a call that cannot be recorded is failed.
    Mandatory,
}

/// Inbound/outbound switch for one class of call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Directions {
    /// Record calls the user receives.
    #[serde(default = "yes")]
    pub inbound: bool,
    /// Record calls the user places.
    #[serde(default = "yes")]
    pub outbound: bool,
}

impl Default for Directions {
    fn default() -> Self {
        Self {
            inbound: true,
            outbound: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// Which kinds of calls are recorded (all by default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallTypes {
    /// Peer-to-peer calls between users of the same organisation.
    #[serde(default)]
    pub internal: Directions,
    /// Calls with another SIP domain or trunk that is not the PSTN (federated partners).
    #[serde(default)]
    pub external: Directions,
    /// Calls with the public telephone network.
    #[serde(default)]
    pub pstn: Directions,
    /// Conference and meeting calls the user takes part in.
    #[serde(default = "yes")]
    pub conferences: bool,
    /// Calls the user answers from a queue (hunt group, ACD).
    #[serde(default = "yes")]
    pub queues: bool,
    /// Restrict queue calls to these queue ids; empty records calls from every queue.
    #[serde(default)]
    #[schemars(length(max = 128), inner(length(min = 1, max = 128)))]
    pub queue_ids: Vec<String>,
}

impl Default for CallTypes {
    fn default() -> Self {
        Self {
            internal: Directions::default(),
            external: Directions::default(),
            pstn: Directions::default(),
            conferences: true,
            queues: true,
            queue_ids: Vec::new(),
        }
    }
}

/// Number filters for received and placed calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberFilters {
    /// Filter on the calling number of calls the user receives.
    #[serde(default)]
    pub received: NumberFilter,
    /// Filter on the called number of calls the user places.
    #[serde(default)]
    pub placed: NumberFilter,
}

/// An allow or block list of remote numbers. The regular expression is checked first, then the
/// numbers. Numbers are digits only, without `+`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.listType != 'Allow' || size(self.numbers) > 0 || has(self.regex)",
    "message": "spec.selector.numbers: an Allow filter needs at least one number or a regex; empty, it would record no call",
    "fieldPath": ".numbers",
    "reason": "FieldValueRequired"
}]))]
pub struct NumberFilter {
    /// `Block` records all calls except matches; `Allow` records only matches.
    #[serde(default)]
    pub list_type: ListType,
    /// Remote numbers, digits only (E.164 without `+`), e.g. `17326524689`.
    #[serde(default)]
    #[schemars(
        length(max = 128),
        inner(length(min = 1, max = 15), regex(pattern = r"^[0-9]+$"))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub numbers: Vec<String>,
    /// Regular expression (RE2 syntax) on the remote number, e.g. `^1?(732|609)[0-9]*$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub regex: Option<String>,
}

/// Kind of number list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ListType {
    /// Record only calls that match.
    Allow,
    /// Record all calls except those that match.
    #[default]
    Block,
}

/// Weekly recording windows in a time zone. No windows means 24/7.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// IANA time zone the windows are read in, e.g. `Europe/London`.
    #[serde(default = "default_tz")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")
    )]
    pub time_zone: String,
    /// Windows in which calls are recorded; a call is judged by its start time. Windows do not
    /// cross midnight: split an overnight window in two. Empty means always.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub windows: Vec<Window>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            time_zone: default_tz(),
            windows: Vec::new(),
        }
    }
}

fn default_tz() -> String {
    "UTC".to_owned()
}

/// One recording window on one weekday.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.start < self.end",
    "message": "spec.selector.schedule.windows: end must be after start (a window cannot cross midnight; split it in two)",
    "fieldPath": ".end"
}]))]
pub struct Window {
    /// Day of the week.
    pub day: Weekday,
    /// Start time, `HH:MM` (24-hour, zero-padded), inclusive.
    #[schemars(
        length(min = 5, max = 5),
        regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    )]
    pub start: String,
    /// End time, `HH:MM` (24-hour, zero-padded, `24:00` for end of day), exclusive.
    #[schemars(
        length(min = 5, max = 5),
        regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
    )]
    pub end: String,
}

/// Day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// Retention of recordings. There is no keep-forever: use legal hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Days a recording is kept after the call started (7, 30, 90, 180, 365, 730 are the usual
    /// presets; any value from 1 to 36500 is allowed). Legal hold suspends expiry.
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1, max = 36500))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= 1",
        "message": "spec.retention.days must be at least 1 (keep-forever is not allowed; use legal hold)"
    }]))]
    pub days: i32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            days: default_retention_days(),
        }
    }
}

fn default_retention_days() -> i32 {
    365
}

/// Encryption settings. The recorder only ever gets the public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Secret key holding the RSA public key (PEM, SPKI; 2048, 3072 or 4096 bits) that wraps
    /// each recording's key. Never put the private key here.
    pub key_secret_ref: SecretKeyRef,
}

/// Opus encoding of the stored recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// Opus bitrate in bits per second of two channels: each channel is encoded at half of it.
    #[serde(default = "default_bitrate")]
    #[schemars(range(min = 6000, max = 510000))]
    pub bitrate: i32,
    /// Opus encoder complexity, 0 (fastest) to 10 (best).
    #[serde(default = "default_complexity")]
    #[schemars(range(min = 0, max = 10))]
    pub complexity: i32,
    /// How the call's streams map to the recording's channels.
    #[serde(default)]
    pub channels: ChannelLayout,
}

impl Default for Media {
    fn default() -> Self {
        Self {
            bitrate: default_bitrate(),
            complexity: default_complexity(),
            channels: ChannelLayout::default(),
        }
    }
}

/// How a call's streams map to its recording's channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ChannelLayout {
    /// One channel: every stream mixed.
    Mono,
    /// Two channels: the first party's streams left, the others right.
    #[default]
    Stereo,
    /// A channel per stream the call starts with, up to eight: each SIPREC stream kept
    /// apart (conferences, multi-party calls); streams added later share the last channel.
    PerStream,
}

fn default_bitrate() -> i32 {
    32000
}
fn default_complexity() -> i32 {
    5
}

/// The recorder pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "spec.recorder.minReplicas must not exceed spec.recorder.maxReplicas",
        "fieldPath": ".minReplicas"
    },
    {
        "rule": "self.rtpPortRange.end - self.rtpPortRange.start + 1 >= 4 * self.sessionsPerReplica",
        "message": "spec.recorder.rtpPortRange is too small: each session needs 4 ports (RTP and RTCP for both directions), so it must hold at least 4 * spec.recorder.sessionsPerReplica ports",
        "fieldPath": ".rtpPortRange"
    },
    {
        "rule": "self.sip.port < self.rtpPortRange.start || self.sip.port > self.rtpPortRange.end",
        "message": "spec.recorder.sip.port must lie outside spec.recorder.rtpPortRange",
        "fieldPath": ".sip.port"
    }
]))]
pub struct RecorderPool {
    /// Recorder pods kept running even when idle.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Upper bound the operator scales to with load.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Concurrent calls one pod records before it reports itself full.
    #[serde(default = "default_sessions")]
    #[schemars(range(min = 1, max = 5000))]
    pub sessions_per_replica: i32,
    /// SIP listener of each recorder pod.
    #[serde(default)]
    pub sip: SipListener,
    /// UDP ports each pod uses for RTP/RTCP.
    #[serde(default)]
    pub rtp_port_range: PortRange,
    /// When no recorder has capacity, answer 503 so the call source can fail the call
    /// (compliance) instead of letting it continue unrecorded.
    #[serde(default = "yes")]
    pub fail_closed: bool,
    /// Seconds without RTP on every stream the source sends on before the recorder ends the
    /// session (BYE to the source; the recording is committed with stop reason
    /// `media-timeout`). A held call (streams `inactive`, or `recvonly` from the source) is
    /// not counted. 60 is what media relays use by default (rtpengine, rtpproxy); 0 turns
    /// the check off.
    #[serde(default = "default_media_timeout")]
    #[schemars(range(min = 0, max = 3600))]
    pub media_timeout_seconds: i32,
    /// Seconds between the recorder's in-dialog OPTIONS to the source; a 481, a 408 or no
    /// answer ends the session (stop reason `peer-unreachable`). 0 turns the probe off.
    #[serde(default = "default_options_probe")]
    #[schemars(range(min = 0, max = 3600))]
    pub options_probe_seconds: i32,
    /// SRTP (SDES keys, RFC 4568) on the media sources send. `Preferred` takes `RTP/SAVP` and
    /// plain RTP offers alike, answering each in kind; `Required` refuses plain RTP offers and
    /// `Disabled` refuses `RTP/SAVP` ones, with 488 and a Warning saying why.
    #[serde(default)]
    pub srtp: SrtpPolicy,
    /// Each pod's spool volume: its size and class, when it raises alarms and when it refuses
    /// new calls.
    #[serde(default)]
    pub spool: SpoolLimits,
    /// Seconds a stopping recorder (rolling update, node drain, scale-down) lets live calls
    /// run to their end while it answers new ones 503; what is still live then is cut and
    /// committed. Absent: 600 in a cluster, 30 in standalone (someone at a terminal waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_grace_seconds: Option<i32>,
    /// CPU and memory of each recorder container (cluster only). Absent: sized from
    /// `sessionsPerReplica` with the measured cost of a call (docs/operations.md, "Sizing
    /// recorders"); set, it replaces that whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<RecorderResources>,
}

/// A Kubernetes quantity: digits with an optional fraction and unit (`500m`, `2`, `512Mi`,
/// `1.5Gi`).
const QUANTITY: &str = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";

/// Requests and limits of the recorder container, as Kubernetes takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecorderResources {
    /// Reserved for each pod: the scheduler places it only where this much is free.
    #[serde(default)]
    pub requests: ResourceAmounts,
    /// The most each pod may use. Above its memory limit a pod is killed (its live calls are
    /// recovered from the spool, cut where the kill fell); a CPU limit throttles the pod, and
    /// a throttled recorder drops packets as late, so leave CPU unlimited unless you must.
    #[serde(default)]
    pub limits: ResourceAmounts,
}

/// CPU and memory amounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// Cores, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = QUANTITY))]
    pub cpu: Option<String>,
    /// Bytes, e.g. `256Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = QUANTITY))]
    pub memory: Option<String>,
}

/// The spool volume: calls are written there first, so a full spool loses audio. Above
/// `alarmPercent` used a Major alarm is raised, above `criticalPercent` a Critical one; with
/// less than `minFreeMiB` free, new calls are refused with 503 (the source fails over to
/// another recorder) while live calls go on into the space left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.alarmPercent <= self.criticalPercent",
    "message": "spec.recorder.spool.criticalPercent must not be below spec.recorder.spool.alarmPercent",
    "fieldPath": ".criticalPercent",
    "reason": "FieldValueInvalid"
}, {
    "rule": "(has(self.size) ? self.size : '') == (has(oldSelf.size) ? oldSelf.size : '') && (has(self.storageClassName) ? self.storageClassName : '') == (has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')",
    "message": "spec.recorder.spool.size and storageClassName cannot change: each recorder's spool volume is made once, when the recorder is; create a new RecordingProfile for other volumes",
    "reason": "FieldValueForbidden"
}]))]
pub struct SpoolLimits {
    /// Size of each recorder's spool volume, a PersistentVolumeClaim per pod (cluster only:
    /// standalone spools under its data directory). Absent: the operator's default (chart
    /// value `recorder.spool.size`, 20Gi). Fixed once the profile exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = QUANTITY))]
    pub size: Option<String>,
    /// StorageClass of the spool volumes (cluster only). Absent: the operator's default
    /// (chart value `recorder.spool.storageClassName`), else the cluster's default class.
    /// Fixed once the profile exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Percent of the volume used at which the Major alarm is raised.
    #[serde(default = "default_spool_alarm_percent")]
    #[schemars(range(min = 1, max = 99))]
    pub alarm_percent: i32,
    /// Percent used at which the alarm turns Critical.
    #[serde(default = "default_spool_critical_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub critical_percent: i32,
    /// Free space (MiB) below which new calls are refused; 64 MiB hold about 4.5 hours of
    /// one call at 32 kbit/s.
    #[serde(default = "default_spool_min_free", rename = "minFreeMiB")]
    #[schemars(range(min = 0, max = 1048576))]
    pub min_free_mib: i64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        Self {
            size: None,
            storage_class_name: None,
            alarm_percent: default_spool_alarm_percent(),
            critical_percent: default_spool_critical_percent(),
            min_free_mib: default_spool_min_free(),
        }
    }
}

fn default_spool_alarm_percent() -> i32 {
    80
}
fn default_spool_critical_percent() -> i32 {
    95
}
fn default_spool_min_free() -> i64 {
    256
}

/// Whether the media sources send must, may or must not be SRTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SrtpPolicy {
    /// Only SRTP (`RTP/SAVP`): plain RTP offers are refused.
    Required,
    /// SRTP or plain RTP, as the source offers.
    #[default]
    Preferred,
    /// Only plain RTP: SRTP offers are refused. (Not `Off`: YAML 1.1 readers such as kubectl
    /// and helm read a bare `Off` as the boolean false.)
    Disabled,
}

impl Default for RecorderPool {
    fn default() -> Self {
        Self {
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            sessions_per_replica: default_sessions(),
            sip: SipListener::default(),
            rtp_port_range: PortRange::default(),
            fail_closed: true,
            media_timeout_seconds: default_media_timeout(),
            options_probe_seconds: default_options_probe(),
            srtp: SrtpPolicy::default(),
            spool: SpoolLimits::default(),
            drain_grace_seconds: None,
            resources: None,
        }
    }
}

fn default_media_timeout() -> i32 {
    60
}
fn default_options_probe() -> i32 {
    60
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    4
}
fn default_sessions() -> i32 {
    200
}

/// SIP listener settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!('TLS' in self.transports) || has(self.tlsSecretRef)",
    "message": "spec.recorder.sip.tlsSecretRef is required when transports include TLS",
    "fieldPath": ".tlsSecretRef",
    "reason": "FieldValueRequired"
}, {
    "rule": "!('TLS' in self.transports && 'TCP' in self.transports) || self.tlsPort != self.port",
    "message": "spec.recorder.sip.tlsPort must differ from spec.recorder.sip.port when both TCP and TLS listen (both are TCP ports)",
    "fieldPath": ".tlsPort",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!self.tlsVerifyClient || 'TLS' in self.transports",
    "message": "spec.recorder.sip.tlsVerifyClient needs TLS in transports",
    "fieldPath": ".tlsVerifyClient",
    "reason": "FieldValueInvalid"
}]))]
pub struct SipListener {
    /// SIP port for UDP and TCP.
    #[serde(default = "default_sip_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// SIP port for TLS (RFC 3261: 5061).
    #[serde(default = "default_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub tls_port: i32,
    /// Mutual TLS: a call source must present a certificate signed by the `ca.crt` of the TLS
    /// Secret, or its connection is refused.
    #[serde(default)]
    pub tls_verify_client: bool,
    /// Transports to listen on.
    #[serde(default = "default_transports")]
    #[schemars(length(min = 1, max = 3))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub transports: Vec<SipTransport>,
    /// Secret of type kubernetes.io/tls with the certificate for SIP over TLS (`tls.crt`,
    /// `tls.key`; `ca.crt` for `tlsVerifyClient`). A renewed certificate is served without a
    /// restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<crate::common::SecretRef>,
}

impl Default for SipListener {
    fn default() -> Self {
        Self {
            port: default_sip_port(),
            tls_port: default_tls_port(),
            tls_verify_client: false,
            transports: default_transports(),
            tls_secret_ref: None,
        }
    }
}

fn default_sip_port() -> i32 {
    5060
}
fn default_tls_port() -> i32 {
    5061
}
fn default_transports() -> Vec<SipTransport> {
    vec![SipTransport::Udp, SipTransport::Tcp]
}

/// SIP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum SipTransport {
    Udp,
    Tcp,
    Tls,
}

/// A UDP port range for RTP. RTP uses the even port and RTCP the next odd one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.start < self.end",
        "message": "spec.recorder.rtpPortRange.start must be below spec.recorder.rtpPortRange.end",
        "fieldPath": ".start"
    },
    {
        "rule": "self.start % 2 == 0",
        "message": "spec.recorder.rtpPortRange.start must be even (RTP uses even ports, RTCP the next odd one)",
        "fieldPath": ".start"
    }
]))]
pub struct PortRange {
    /// First port (even, at least 1024).
    #[serde(default = "default_rtp_start")]
    #[schemars(range(min = 1024, max = 65535))]
    pub start: i32,
    /// Last port (inclusive, at most 65535).
    #[serde(default = "default_rtp_end")]
    #[schemars(range(min = 1024, max = 65535))]
    pub end: i32,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            start: default_rtp_start(),
            end: default_rtp_end(),
        }
    }
}

fn default_rtp_start() -> i32 {
    20000
}
fn default_rtp_end() -> i32 {
    29999
}

/// Observed state of a RecordingProfile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingProfileStatus {
    /// Ready, RecordersAvailable, StorageBound, Conflict and, with `spec.assurance`, Assured.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Recorder pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Recorder pods ready to take calls.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Calls being recorded now across the pool.
    #[serde(default)]
    pub active_sessions: i64,
    /// Concurrent calls the ready pods can record.
    #[serde(default)]
    pub capacity: i64,
    /// Users matched by this profile.
    #[serde(default)]
    pub users_matched: i64,
    /// Users this profile matches that an older profile records (one profile per user): this
    /// profile does not record them.
    #[serde(default)]
    pub conflicts: Vec<UserConflict>,
    /// Start time of the most recent recording stored for this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recording_time: Option<Time>,
    /// SIP addresses of the recorders taking calls now (ready, not draining, not full), as
    /// call sources dial them; also in the ConfigMap `<profile>-recorder-endpoints` in the
    /// formats SBC front ends read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// What retention did last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSummary>,
    /// What recording assurance found last (with the `Assured` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assurance: Option<AssuranceStatus>,
}

/// Results of the profile's recording assurance runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssuranceStatus {
    /// When the last run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// When a run last found the test call recorded, sealed and intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// When a run last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Why the last failed run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub last_failure_reason: Option<String>,
    /// The last test call's recording, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recording_id: Option<String>,
}

/// A user matched by more than one profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserConflict {
    /// User name.
    pub user: String,
    /// The older RecordingProfile that records the user.
    pub profile: String,
}

/// Summary of the retention job for this profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSummary {
    /// Retention in days currently applied.
    #[serde(default)]
    pub days: i32,
    /// When the retention job last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<Time>,
    /// Recordings deleted by the last run.
    #[serde(default)]
    pub last_run_deleted: i64,
    /// Recordings past expiry kept because of legal hold.
    #[serde(default)]
    pub held: i64,
    /// Start time of the oldest recording still stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_recording_time: Option<Time>,
    /// Recordings of the profile not deleted: while there are any, the profile cannot be
    /// deleted (its finalizer stays).
    #[serde(default)]
    pub stored_recordings: i64,
}
