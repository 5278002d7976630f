//! Reporting a run to Kubernetes: the job's own part of its resource's status, written with
//! server-side apply under the job's field manager (so the operator's reconciles, under
//! `callvault-operator`, never erase it and the job never erases theirs), and an Event on
//! the resource for what an SRE must see.
//!
//! The status documents are built by pure functions ([`archive_status`],
//! [`retention_status`]) that carry a condition's `lastTransitionTime` over while its status
//! does not change.

use callvault_crds::connector::{Connector, ConnectorStatus};
use callvault_crds::recording_profile::{
    AssuranceStatus, RecordingProfile, RecordingProfileStatus,
};
use callvault_crds::speech_job::SpeechJob;
use callvault_crds::status::{Condition, ConditionStatus, condition_type, reason};
use callvault_crds::storage_target::StorageTarget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::alarms::Transition;
use crate::archive::{ArchiveSummary, RunOutcome};
use crate::assurance::AssuranceReport;
use crate::retention::RetentionSummary;
use crate::space::{SpaceSummary, space_note};
use crate::transcribe::{self, TranscribeSummary};

/// Field manager of the archive job's status fields.
pub const ARCHIVE_FIELD_MANAGER: &str = "callvault-job-archive";
/// Field manager of the recording assurance job's status fields.
pub const ASSURANCE_FIELD_MANAGER: &str = "callvault-job-assurance";
/// Reporter of the space cleanup job's Events.
pub const SPACE_CLEANUP_FIELD_MANAGER: &str = "callvault-job-space-cleanup";
/// Field manager of the retention job's status fields.
pub const RETENTION_FIELD_MANAGER: &str = "callvault-job-retention";
/// Environment variable naming the namespace the job runs in (the downward API).
pub use callvault_config::JOB_NAMESPACE_ENV as NAMESPACE_ENV;

/// Errors talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach the Kubernetes API server: {0}")]
    Connect(#[source] kube::Error),
    #[error("{kind} {namespace}/{name}: {source}")]
    Api {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The API server and the namespace a job reports into.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    /// Pod name, reported as the Event's instance.
    instance: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects when running in a cluster (`CALLVAULT_POD_NAMESPACE` set, in-cluster service
    /// account or `KUBECONFIG`); `None` otherwise (standalone, or by hand).
    pub async fn from_env() -> Result<Option<Cluster>, ClusterError> {
        let Ok(namespace) = std::env::var(NAMESPACE_ENV) else {
            return Ok(None);
        };
        let client = Client::try_default().await.map_err(ClusterError::Connect)?;
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "callvault-job".to_owned());
        Ok(Some(Cluster::new(client, namespace, instance)))
    }

    pub fn new(client: Client, namespace: String, instance: String) -> Cluster {
        Cluster {
            client,
            namespace,
            instance,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Writes the archive run into the Connector's status and emits an Event on it.
    pub async fn report_archive(
        &self,
        connector: &str,
        summary: &ArchiveSummary,
    ) -> Result<(), ClusterError> {
        let current: Connector = self.get(connector).await?;
        let previous = current.status.clone().unwrap_or_default();
        let status = archive_status(summary, &previous, current.metadata.generation);
        self.apply_status::<Connector>(connector, ARCHIVE_FIELD_MANAGER, status)
            .await?;
        let (type_, reason) = match summary.outcome() {
            RunOutcome::Succeeded => (EventType::Normal, "Archived"),
            RunOutcome::PartiallyFailed => (EventType::Warning, "ArchivePartiallyFailed"),
            RunOutcome::Failed => (EventType::Warning, "ArchiveFailed"),
        };
        let note = match summary.message() {
            Some(m) => format!("archived {}; {m}", summary.archived),
            None => format!(
                "archived {}; {} pending, {} archived in all",
                summary.archived, summary.counts.pending, summary.counts.archived
            ),
        };
        self.event(
            &current,
            ARCHIVE_FIELD_MANAGER,
            type_,
            reason,
            "Archive",
            note,
        )
        .await
    }

    /// Writes the retention run into the RecordingProfile's `status.retention` and emits an
    /// Event on it.
    pub async fn report_retention(
        &self,
        profile: &str,
        retention_days: u32,
        summary: &RetentionSummary,
        finished_at: i64,
    ) -> Result<(), ClusterError> {
        let current: RecordingProfile = self.get(profile).await?;
        let status = retention_status(retention_days, summary, finished_at);
        self.apply_status::<RecordingProfile>(profile, RETENTION_FIELD_MANAGER, status)
            .await?;
        let type_ = if summary.failures.is_empty() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let reason = if summary.failures.is_empty() {
            "RetentionRun"
        } else {
            "RetentionPartiallyFailed"
        };
        self.event(
            &current,
            RETENTION_FIELD_MANAGER,
            type_,
            reason,
            "Retention",
            retention_note(summary),
        )
        .await
    }

    /// Emits the space cleanup run as an Event on its StorageTarget: Normal when within the
    /// limits or freed, Warning when still over them or when some deletions failed.
    pub async fn report_space_cleanup(
        &self,
        target: &str,
        summary: &SpaceSummary,
    ) -> Result<(), ClusterError> {
        let current: StorageTarget = self.get(target).await?;
        let (type_, reason) = if summary.still_over > 0 || !summary.failures.is_empty() {
            (EventType::Warning, "SpaceCleanupIncomplete")
        } else if summary.to_free > 0 {
            (EventType::Normal, "SpaceFreed")
        } else {
            (EventType::Normal, "SpaceWithinLimits")
        };
        self.event(
            &current,
            SPACE_CLEANUP_FIELD_MANAGER,
            type_,
            reason,
            "SpaceCleanup",
            space_note(summary),
        )
        .await
    }

    /// Writes the assurance run into the RecordingProfile's `Assured` condition and
    /// `status.assurance`, and emits an Event on it.
    pub async fn report_assurance(&self, report: &AssuranceReport) -> Result<(), ClusterError> {
        let current: RecordingProfile = self.get(&report.profile).await?;
        let previous = current.status.clone().unwrap_or_default();
        let status = assurance_status(report, &previous, current.metadata.generation);
        self.apply_status::<RecordingProfile>(&report.profile, ASSURANCE_FIELD_MANAGER, status)
            .await?;
        let (type_, reason) = if report.passed() {
            (EventType::Normal, "Assured")
        } else {
            (EventType::Warning, "AssuranceFailed")
        };
        self.event(
            &current,
            ASSURANCE_FIELD_MANAGER,
            type_,
            reason,
            "Assurance",
            report.message(),
        )
        .await
    }

    /// Writes the transcription run's counters into the SpeechJob's status (under
    /// [`transcribe::FIELD_MANAGER`]) and emits an Event on it.
    pub async fn report_transcribe(
        &self,
        speech_job: &str,
        summary: &TranscribeSummary,
    ) -> Result<(), ClusterError> {
        let current: SpeechJob = self.get(speech_job).await?;
        let status = summary.status_patch()["status"].take();
        self.apply_status::<SpeechJob>(speech_job, transcribe::FIELD_MANAGER, status)
            .await?;
        let (type_, reason) = if summary.failures.is_empty() {
            (EventType::Normal, "Transcribed")
        } else {
            (EventType::Warning, "TranscriptionPartiallyFailed")
        };
        self.event(
            &current,
            transcribe::FIELD_MANAGER,
            type_,
            reason,
            "Transcribe",
            transcribe_note(summary),
        )
        .await
    }

    /// Emits an alarm's raise (Warning) or clear (Normal) as an Event on the resource `name`
    /// of kind `K` it is about.
    pub async fn alarm_event<K>(
        &self,
        name: &str,
        controller: &str,
        tenant: &str,
        transition: &Transition,
    ) -> Result<(), ClusterError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let object: K = self.get(name).await?;
        let (type_, reason, note) = match transition {
            Transition::Raised { message, .. } => {
                (EventType::Warning, "AlarmRaised", message.clone())
            }
            Transition::Cleared { .. } => (
                EventType::Normal,
                "AlarmCleared",
                transition.subject(tenant),
            ),
        };
        self.event(&object, controller, type_, reason, "Alarm", note)
            .await
    }

    async fn get<K>(&self, name: &str) -> Result<K, ClusterError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .map_err(|source| self.api_error::<K>(name, source))
    }

    /// Server-side applies `status` (only the fields this job owns) to `name`'s status.
    pub async fn apply_status<K>(
        &self,
        name: &str,
        field_manager: &str,
        status: Value,
    ) -> Result<(), ClusterError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        Api::<K>::namespaced(self.client.clone(), &self.namespace)
            .patch_status(
                name,
                &PatchParams::apply(field_manager).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
            .map_err(|source| self.api_error::<K>(name, source))
    }

    /// Emits an Event on `object`, reported by `controller`.
    pub async fn event<K>(
        &self,
        object: &K,
        controller: &str,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), ClusterError>
    where
        K: Resource<DynamicType = ()>,
    {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: controller.to_owned(),
                instance: Some(self.instance.clone()),
            },
        );
        let name = object.meta().name.clone().unwrap_or_default();
        recorder
            .publish(
                &Event {
                    type_,
                    reason: reason.to_owned(),
                    // The API server refuses notes over 1 kB.
                    note: Some(truncate(note, 1000)),
                    action: action.to_owned(),
                    secondary: None,
                },
                &object.object_ref(&()),
            )
            .await
            .map_err(|source| ClusterError::Api {
                kind: "Event".to_owned(),
                namespace: self.namespace.clone(),
                name,
                source,
            })
    }

    fn api_error<K: Resource<DynamicType = ()>>(
        &self,
        name: &str,
        source: kube::Error,
    ) -> ClusterError {
        ClusterError::Api {
            kind: K::kind(&()).into_owned(),
            namespace: self.namespace.clone(),
            name: name.to_owned(),
            source,
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn time(us: i64) -> Option<Time> {
    jiff::Timestamp::from_microsecond(us).ok().map(Time)
}

/// One line on a transcription run, for its Event and the standalone output.
pub fn transcribe_note(s: &TranscribeSummary) -> String {
    let mut note = format!(
        "transcribed {} recordings ({:.0} s of audio) in {:.0} s; {} pending, {} failed, {} \
         processed in all",
        s.transcribed,
        s.audio_seconds,
        s.elapsed.as_secs_f64(),
        s.counts.pending,
        s.counts.failed,
        s.counts.processed
    );
    if let Some(f) = s.failures.first() {
        note.push_str(&format!(
            "; {} failed this run, first: {}: {}",
            s.failures.len(),
            f.recording_id,
            f.error
        ));
    }
    note
}

/// A condition whose `lastTransitionTime` is kept from `previous` while its status holds.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    now: i64,
    generation: Option<i64>,
) -> Condition {
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        last_transition_time: since
            .or_else(|| time(now))
            .unwrap_or(Time(jiff::Timestamp::UNIX_EPOCH)),
        observed_generation: generation,
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The archive job's part of a Connector's status: Reachable and LastRunSucceeded, the
/// counters, the last run and (when it succeeded) the last successful archive time.
pub fn archive_status(
    summary: &ArchiveSummary,
    previous: &ConnectorStatus,
    generation: Option<i64>,
) -> Value {
    let now = summary.finished_at;
    let reachable = match &summary.unreachable {
        None => condition(
            &previous.conditions,
            condition_type::REACHABLE,
            ConditionStatus::True,
            reason::PROBE_SUCCEEDED,
            "the destination passed its connection test".to_owned(),
            now,
            generation,
        ),
        Some(why) => condition(
            &previous.conditions,
            condition_type::REACHABLE,
            ConditionStatus::False,
            reason::CONNECT_FAILED,
            why.clone(),
            now,
            generation,
        ),
    };
    let outcome = summary.outcome();
    let last_run = condition(
        &previous.conditions,
        condition_type::LAST_RUN_SUCCEEDED,
        if outcome == RunOutcome::Succeeded {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        if outcome == RunOutcome::Succeeded {
            reason::RUN_SUCCEEDED
        } else {
            reason::RUN_FAILED
        },
        summary
            .message()
            .unwrap_or_else(|| format!("archived {} recordings", summary.archived)),
        now,
        generation,
    );
    let result = match outcome {
        RunOutcome::Succeeded => "Succeeded",
        RunOutcome::PartiallyFailed => "PartiallyFailed",
        RunOutcome::Failed => "Failed",
    };
    let mut status = json!({
        "conditions": [to_value(&reachable), to_value(&last_run)],
        "pendingFiles": summary.counts.pending,
        "archivedFiles": summary.counts.archived,
        "lastRun": {
            "startTime": time(summary.started_at),
            "completionTime": time(summary.finished_at),
            "result": result,
            "succeeded": summary.archived,
            "failed": summary.failures.len(),
        },
    });
    if let Some(message) = summary.message() {
        status["lastRun"]["message"] = Value::String(truncate(message, 4000));
    }
    // Kept (not re-applied) when this run failed: a field left out of an apply would be
    // removed, so carry the previous value over.
    let last_success = if outcome == RunOutcome::Succeeded {
        time(summary.finished_at)
    } else {
        previous.last_successful_archive_time.clone()
    };
    if let Some(t) = last_success {
        status["lastSuccessfulArchiveTime"] = to_value(&t);
    }
    status
}

/// The retention job's part of a RecordingProfile's status: `status.retention`.
pub fn retention_status(days: u32, summary: &RetentionSummary, finished_at: i64) -> Value {
    let mut retention = json!({
        "days": days,
        "lastRunTime": time(finished_at),
        "lastRunDeleted": summary.removed(),
        "held": summary.held_past_expiry,
        "storedRecordings": summary.stored,
    });
    if let Some(t) = summary.oldest_start_time.and_then(time) {
        retention["oldestRecordingTime"] = to_value(&t);
    }
    json!({ "retention": retention })
}

/// The assurance job's part of a RecordingProfile's status: the `Assured` condition and
/// `status.assurance`, the last success and the last failure carried over from `previous`
/// (standalone's board and the job's server-side apply alike write the whole part).
pub fn assurance_status(
    report: &AssuranceReport,
    previous: &RecordingProfileStatus,
    generation: Option<i64>,
) -> Value {
    let now = report.finished_at;
    let assured = condition(
        &previous.conditions,
        condition_type::ASSURED,
        if report.passed() {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        report.reason(),
        report.message(),
        now,
        generation,
    );
    let before = previous.assurance.clone().unwrap_or_default();
    let (last_success, last_failure, why) = match &report.failure {
        None => (
            time(now),
            before.last_failure_time,
            before.last_failure_reason,
        ),
        Some(f) => (
            before.last_success_time,
            time(now),
            Some(truncate(format!("{}: {}", f.reason, f.message), 4096)),
        ),
    };
    let assurance = AssuranceStatus {
        last_run_time: time(now),
        last_success_time: last_success,
        last_failure_time: last_failure,
        last_failure_reason: why,
        last_recording_id: report
            .recording_id
            .map(|id| id.to_string())
            .or(before.last_recording_id),
    };
    json!({
        "conditions": [to_value(&assured)],
        "assurance": to_value(&assurance),
    })
}

/// One line for the Event and the log.
pub fn retention_note(s: &RetentionSummary) -> String {
    let mut note = format!(
        "removed {} expired and {} requested recordings; {} kept under legal hold past expiry; \
         {} audit entries purged",
        s.expired, s.deferred_deleted, s.held_past_expiry, s.audit_purged
    );
    if let Some(f) = s.failures.first() {
        note.push_str(&format!(
            "; {} could not be removed (retried next run), first {}: {}",
            s.failures.len(),
            f.recording_id,
            f.error
        ));
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::ArchiveFailure;
    use callvault_store::db::ArchiveCounts;

    const NOW: i64 = 1_750_000_000_000_000;

    fn summary(unreachable: Option<&str>, failures: usize) -> ArchiveSummary {
        ArchiveSummary {
            started_at: NOW - 5_000_000,
            finished_at: NOW,
            unreachable: unreachable.map(str::to_owned),
            archived: 3,
            failures: (0..failures)
                .map(|_| ArchiveFailure {
                    recording_id: uuid::Uuid::nil(),
                    error: "get failed".into(),
                })
                .collect(),
            counts: ArchiveCounts {
                pending: failures as i64,
                archived: 10,
            },
        }
    }

    fn conditions(v: &Value) -> Vec<Condition> {
        serde_json::from_value(v["conditions"].clone()).expect("conditions")
    }

    #[test]
    fn a_successful_run_sets_counters_and_last_success() {
        let v = archive_status(&summary(None, 0), &ConnectorStatus::default(), Some(4));
        assert_eq!(v["pendingFiles"], 0);
        assert_eq!(v["archivedFiles"], 10);
        assert_eq!(v["lastRun"]["result"], "Succeeded");
        assert_eq!(v["lastRun"]["succeeded"], 3);
        assert_eq!(v["lastSuccessfulArchiveTime"], "2025-06-15T15:06:40Z");
        let c = conditions(&v);
        assert_eq!(c[0].type_, "Reachable");
        assert_eq!(c[0].status, ConditionStatus::True);
        assert_eq!(c[0].observed_generation, Some(4));
        assert_eq!(c[1].type_, "LastRunSucceeded");
        assert_eq!(c[1].status, ConditionStatus::True);
        // The status the API server would store parses as the CRD's status type.
        let parsed: ConnectorStatus = serde_json::from_value(v).expect("a ConnectorStatus");
        assert_eq!(parsed.archived_files, 10);
    }

    #[test]
    fn an_unreachable_destination_keeps_the_last_success_and_says_why() {
        let ok = archive_status(&summary(None, 0), &ConnectorStatus::default(), None);
        let before: ConnectorStatus = serde_json::from_value(ok).expect("status");
        let mut failed_run = summary(Some("write step failed on s3://vault: refused"), 0);
        failed_run.finished_at = NOW + 300_000_000;
        let v = archive_status(&failed_run, &before, None);
        assert_eq!(v["lastRun"]["result"], "Failed");
        assert_eq!(
            v["lastSuccessfulArchiveTime"], "2025-06-15T15:06:40Z",
            "a failed run does not move the last success"
        );
        let c = conditions(&v);
        assert_eq!(c[0].status, ConditionStatus::False);
        assert_eq!(c[0].reason, "ConnectFailed");
        assert!(c[0].message.contains("refused"));
        assert_eq!(
            c[0].last_transition_time.0.to_string(),
            "2025-06-15T15:11:40Z"
        );
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let first = archive_status(&summary(None, 0), &ConnectorStatus::default(), None);
        let before: ConnectorStatus = serde_json::from_value(first).expect("status");
        let mut later = summary(None, 2);
        later.finished_at = NOW + 600_000_000;
        let v = archive_status(&later, &before, None);
        let c = conditions(&v);
        assert_eq!(
            c[0].last_transition_time.0.to_string(),
            "2025-06-15T15:06:40Z"
        );
        assert_eq!(
            c[1].status,
            ConditionStatus::False,
            "LastRunSucceeded flips"
        );
        assert_eq!(
            c[1].last_transition_time.0.to_string(),
            "2025-06-15T15:16:40Z"
        );
        assert_eq!(v["lastRun"]["result"], "PartiallyFailed");
        assert!(
            v["lastRun"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("2 of 5"))
        );
    }

    #[test]
    fn retention_status_fills_only_the_retention_summary() {
        let s = RetentionSummary {
            expired: 7,
            deferred_deleted: 2,
            held_past_expiry: 3,
            oldest_start_time: Some(NOW),
            ..RetentionSummary::default()
        };
        let v = retention_status(90, &s, NOW);
        assert_eq!(v.as_object().map(|o| o.len()), Some(1));
        assert_eq!(v["retention"]["days"], 90);
        assert_eq!(v["retention"]["lastRunDeleted"], 9);
        assert_eq!(v["retention"]["held"], 3);
        assert_eq!(
            v["retention"]["oldestRecordingTime"],
            "2025-06-15T15:06:40Z"
        );
        assert!(retention_note(&s).contains("removed 7 expired and 2 requested"));
    }
}
