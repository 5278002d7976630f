//! What each resource's conditions say, as pure functions of what was observed: the operator's
//! reconciles and standalone's status loop both call these, so a resource reads the same in
//! `kubectl get` and in the standalone portal.

use callvault_crds::{Condition, ConditionStatus, SpeechJob, condition_type as ct, reason};
use callvault_store::objstore::{ProbeReport, Usage};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::conditions::Observed;
use crate::load::PoolLoad;

/// StorageTarget `Reachable` from a connection test: the reason names the failed step and
/// its cause (`ConnectNotFound`, `WriteAccessDenied`), the message what failed where.
pub fn reachable(report: &ProbeReport) -> Observed {
    if report.succeeded() {
        Observed::yes(
            ct::REACHABLE,
            report.condition_reason(),
            report.condition_message(),
        )
    } else {
        Observed::no(
            ct::REACHABLE,
            report.condition_reason(),
            report.condition_message(),
        )
    }
}

/// StorageTarget `Ready`, which follows `Reachable`.
pub fn storage_target_ready(reachable: &Observed) -> Observed {
    if reachable.status == ConditionStatus::True {
        Observed::yes(ct::READY, reason::RECONCILED, reachable.message.clone())
    } else {
        Observed::no(
            ct::READY,
            reachable.reason.clone(),
            reachable.message.clone(),
        )
    }
}

/// The `Reachable` condition a StorageTarget's status holds, if it was probed.
pub fn reachable_of(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == ct::REACHABLE)
}

/// RecordingProfile `StorageBound` once its key is resolved (`key_id`): the target's
/// reachability, or that it does not exist (`target` is `None`); `Some(None)` is a target
/// not probed yet.
pub fn storage_bound(
    target_name: &str,
    namespace: &str,
    target: Option<Option<&Condition>>,
    key_id: &str,
) -> Observed {
    match target {
        None => Observed::no(
            ct::STORAGE_BOUND,
            reason::STORAGE_TARGET_NOT_FOUND,
            format!("StorageTarget {target_name} does not exist in namespace {namespace}"),
        ),
        Some(Some(c)) if c.status == ConditionStatus::False => Observed::no(
            ct::STORAGE_BOUND,
            reason::STORAGE_TARGET_UNREACHABLE,
            format!(
                "StorageTarget {target_name} is not reachable ({}: {}); recorders keep recordings in their spool until it is",
                c.reason, c.message
            ),
        ),
        Some(Some(c)) if c.status == ConditionStatus::True => Observed::yes(
            ct::STORAGE_BOUND,
            reason::RECONCILED,
            format!(
                "StorageTarget {target_name} is reachable; recordings are encrypted with key {key_id}"
            ),
        ),
        Some(_) => Observed::yes(
            ct::STORAGE_BOUND,
            reason::RECONCILED,
            format!(
                "StorageTarget {target_name} bound (not probed yet); recordings are encrypted with key {key_id}"
            ),
        ),
    }
}

/// RecordingProfile `StorageBound` corrected by what its recorders found: a commit fails at
/// once while the target's probe runs only every few minutes, so a recorder that cannot store
/// makes the binding false at once.
pub fn storage_bound_as_recorded(bound: Observed, load: &PoolLoad) -> Observed {
    match &load.storage_failure {
        Some(why) if bound.status == ConditionStatus::True => Observed::no(
            ct::STORAGE_BOUND,
            reason::STORAGE_TARGET_UNREACHABLE,
            why.clone(),
        ),
        _ => bound,
    }
}

/// What stops the recorders from recording new calls, for [`profile_ready`]: a full spool, or
/// every session slot in use while the pool cannot grow (`can_scale` false: at
/// `maxReplicas`, or standalone's single recorder). `fail_closed` says what then happens to a
/// new call.
pub fn recorder_problem(load: &PoolLoad, can_scale: bool, fail_closed: bool) -> Option<Observed> {
    if let Some(why) = &load.spool_full {
        return Some(Observed::no(ct::READY, reason::SPOOL_FULL, why.clone()));
    }
    let full = load.capacity > 0 && load.active_sessions >= load.capacity;
    (full && !can_scale).then(|| {
        let outcome = if fail_closed {
            "new calls are refused with 503"
        } else {
            "new calls are answered without being recorded (failClosed is off)"
        };
        Observed::no(
            ct::READY,
            reason::CAPACITY_EXCEEDED,
            format!(
                "every recorder is full ({} of {} sessions) and the pool cannot grow: \
                 {outcome} until calls end; raise spec.recorder.maxReplicas or \
                 sessionsPerReplica",
                load.active_sessions, load.capacity
            ),
        )
    })
}

/// RecordingProfile `RecordersAvailable`: `ready` of `replicas` recorders take calls.
/// `not_ready` says why none does, when the recorder itself can tell (standalone reads its
/// recorder's health; a cluster has the pods' readiness only).
pub fn recorders_available(
    disabled: bool,
    ready: i32,
    replicas: i32,
    not_ready: Option<&str>,
) -> Observed {
    if disabled {
        Observed::no(
            ct::RECORDERS_AVAILABLE,
            reason::DISABLED,
            "the profile is disabled: recorders scaled to 0, recordings kept",
        )
    } else if ready > 0 {
        Observed::yes(
            ct::RECORDERS_AVAILABLE,
            reason::RECONCILED,
            format!("{ready} of {replicas} recorders ready"),
        )
    } else {
        let why = not_ready.map(|w| format!(": {w}")).unwrap_or_default();
        Observed::no(
            ct::RECORDERS_AVAILABLE,
            reason::RECORDERS_UNAVAILABLE,
            format!("0 of {replicas} recorders ready{why}"),
        )
    }
}

/// RecordingProfile `Ready`: the first of disabled, a `problem` applying its children, its
/// storage binding and its recorders that does not hold; else recording.
pub fn profile_ready(
    disabled: bool,
    problem: Option<Observed>,
    storage_bound: &Observed,
    recorders: &Observed,
) -> Observed {
    if disabled {
        Observed::no(
            ct::READY,
            reason::DISABLED,
            "the profile is disabled; nothing more is recorded",
        )
    } else if let Some(p) = problem {
        p
    } else if storage_bound.status != ConditionStatus::True {
        Observed::no(
            ct::READY,
            storage_bound.reason.clone(),
            storage_bound.message.clone(),
        )
    } else if recorders.status != ConditionStatus::True {
        Observed::no(
            ct::READY,
            recorders.reason.clone(),
            recorders.message.clone(),
        )
    } else {
        Observed::yes(ct::READY, reason::RECONCILED, "recording")
    }
}

/// Connector `Reachable`: its destination's; `target` as in [`storage_bound`].
pub fn connector_reachable(
    target_name: &str,
    namespace: &str,
    target: Option<Option<&Condition>>,
) -> Observed {
    match target {
        None => Observed::no(
            ct::REACHABLE,
            reason::STORAGE_TARGET_NOT_FOUND,
            format!("StorageTarget {target_name} does not exist in namespace {namespace}"),
        ),
        Some(Some(c)) if c.status == ConditionStatus::True => Observed::yes(
            ct::REACHABLE,
            reason::PROBE_SUCCEEDED,
            format!("StorageTarget {target_name} is reachable"),
        ),
        Some(Some(c)) if c.status == ConditionStatus::False => Observed::no(
            ct::REACHABLE,
            reason::STORAGE_TARGET_UNREACHABLE,
            format!("StorageTarget {target_name}: {}", c.message),
        ),
        Some(_) => Observed::unknown(
            ct::REACHABLE,
            reason::PENDING,
            format!("StorageTarget {target_name} has not been probed yet"),
        ),
    }
}

/// Connector `Ready`: its destination exists (`reachable` says otherwise), its schedule was
/// accepted (`invalid` says why not), active or suspended.
pub fn connector_ready(
    target_exists: bool,
    reachable: &Observed,
    invalid: Option<String>,
    active: bool,
    schedule: &str,
) -> Observed {
    if !target_exists {
        Observed::no(
            ct::READY,
            reachable.reason.clone(),
            reachable.message.clone(),
        )
    } else if let Some(problem) = invalid {
        Observed::no(ct::READY, reason::INVALID_SPEC, problem)
    } else if active {
        Observed::yes(
            ct::READY,
            reason::RECONCILED,
            format!("archiving on schedule {schedule}"),
        )
    } else {
        Observed::yes(
            ct::READY,
            reason::RECONCILED,
            "inactive: the archive CronJob is suspended",
        )
    }
}

/// SpeechJob `Ready` once its workload is in place: suspended, on its schedule, or run once
/// (`once` names how: the Job in a cluster).
pub fn speech_job_ready(job: &SpeechJob, once: &str) -> Observed {
    match &job.spec.schedule {
        Some(_) if job.spec.suspend => Observed::yes(
            ct::READY,
            reason::RECONCILED,
            "suspended: no new runs start",
        ),
        Some(schedule) => Observed::yes(
            ct::READY,
            reason::RECONCILED,
            format!("transcribing on schedule {schedule}"),
        ),
        None => Observed::yes(ct::READY, reason::RECONCILED, format!("runs once {once}")),
    }
}

/// A StorageTarget's status fields after a probe at `now`: its conditions, when it was probed
/// and, when the probe could count them, what the target holds.
pub fn storage_target_status(
    generation: Option<i64>,
    conditions: &[Condition],
    now: &Time,
    usage: Option<&Usage>,
) -> Value {
    let mut status = json!({
        "observedGeneration": generation,
        "conditions": conditions,
        "lastProbeTime": now,
    });
    if let Some(u) = usage {
        status["usedBytes"] = json!(u.bytes);
        status["objects"] = json!(u.objects);
    }
    status
}

/// A RecordingProfile's status fields: its conditions, its recorders (`replicas` running,
/// `ready` of them taking calls) and the load they report.
pub fn profile_status(
    generation: Option<i64>,
    conditions: &[Condition],
    replicas: i32,
    ready: i32,
    load: &PoolLoad,
    endpoints: &[String],
) -> Value {
    let mut status = json!({
        "observedGeneration": generation,
        "conditions": conditions,
        "replicas": replicas,
        "readyReplicas": ready,
        "activeSessions": load.active_sessions,
        "capacity": load.capacity,
        "usersMatched": load.users_matched,
        "conflicts": load.conflicts,
    });
    if let Some(t) = &load.last_recording_time {
        status["lastRecordingTime"] = json!(t);
    }
    if !endpoints.is_empty() {
        status["endpoints"] = json!(endpoints);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::merge;
    use callvault_store::objstore::{FailureReason, ProbeFailure, ProbeStep, StepOutcome};

    fn report(failure: Option<(ProbeStep, FailureReason)>) -> ProbeReport {
        ProbeReport {
            target: "filesystem /srv/rec".into(),
            steps: vec![StepOutcome {
                step: ProbeStep::Connect,
                ok: failure.is_none(),
                duration_ms: 1,
            }],
            failure: failure.map(|(step, reason)| ProbeFailure {
                step,
                reason,
                message: "not found: /srv/rec".into(),
            }),
            usage: None,
            notes: Vec::new(),
        }
    }

    fn condition(o: &Observed) -> Condition {
        let now = crate::conditions::now();
        merge(&[], std::slice::from_ref(o), None, &now).remove(0)
    }

    #[test]
    fn a_failed_probe_names_its_step_in_reachable_and_ready() {
        let r = reachable(&report(Some((ProbeStep::Connect, FailureReason::NotFound))));
        assert_eq!(r.status, ConditionStatus::False);
        assert_eq!(r.reason, "ConnectNotFound");
        assert!(
            r.message.starts_with("connect step failed"),
            "{}",
            r.message
        );
        let ready = storage_target_ready(&r);
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, "ConnectNotFound")
        );
        let ok = reachable(&report(None));
        assert_eq!(ok.reason, reason::PROBE_SUCCEEDED);
        assert_eq!(storage_target_ready(&ok).reason, reason::RECONCILED);
    }

    #[test]
    fn what_the_recorders_report_overrides_a_probe_that_passed() {
        let bound = storage_bound("local", "default", Some(None), "k1");
        let recorders = recorders_available(false, 1, 1, None);
        let load = PoolLoad {
            storage_failure: Some("a recorder cannot store recordings".into()),
            spool_full: Some("a recorder's spool is full".into()),
            ..PoolLoad::default()
        };
        let bound = storage_bound_as_recorded(bound, &load);
        assert_eq!(
            (bound.status, bound.reason.as_str()),
            (ConditionStatus::False, reason::STORAGE_TARGET_UNREACHABLE)
        );
        let ready = profile_ready(
            false,
            recorder_problem(&load, true, true),
            &bound,
            &recorders,
        );
        assert_eq!(ready.reason, reason::SPOOL_FULL);
        let fine = storage_bound("local", "default", Some(None), "k1");
        let fine = storage_bound_as_recorded(fine, &PoolLoad::default());
        assert_eq!(fine.status, ConditionStatus::True);
        assert!(recorder_problem(&PoolLoad::default(), false, true).is_none());
    }

    #[test]
    fn full_recorders_are_a_problem_only_when_the_pool_cannot_grow() {
        let full = PoolLoad {
            active_sessions: 400,
            capacity: 400,
            ..PoolLoad::default()
        };
        assert!(
            recorder_problem(&full, true, true).is_none(),
            "the operator adds a recorder"
        );
        let stuck = recorder_problem(&full, false, true).expect("at maxReplicas");
        assert_eq!(
            (stuck.status, stuck.reason.as_str()),
            (ConditionStatus::False, reason::CAPACITY_EXCEEDED)
        );
        assert!(
            stuck.message.contains("400 of 400") && stuck.message.contains("refused with 503"),
            "{}",
            stuck.message
        );
        let open = recorder_problem(&full, false, false).expect("fail-open");
        assert!(
            open.message.contains("without being recorded"),
            "{}",
            open.message
        );
        let room = PoolLoad {
            active_sessions: 399,
            ..full
        };
        assert!(recorder_problem(&room, false, true).is_none());
    }

    #[test]
    fn a_profile_is_ready_only_with_storage_and_recorders() {
        let down = condition(&reachable(&report(Some((
            ProbeStep::Write,
            FailureReason::AccessDenied,
        )))));
        let bound = storage_bound("local", "default", Some(Some(&down)), "k1");
        assert_eq!(bound.reason, reason::STORAGE_TARGET_UNREACHABLE);
        assert!(
            bound.message.contains("WriteAccessDenied"),
            "{}",
            bound.message
        );
        let recorders = recorders_available(false, 1, 1, None);
        let ready = profile_ready(false, None, &bound, &recorders);
        assert_eq!(ready.reason, reason::STORAGE_TARGET_UNREACHABLE);

        let unprobed = storage_bound("local", "default", Some(None), "k1");
        assert_eq!(unprobed.status, ConditionStatus::True);
        let none = recorders_available(false, 0, 1, Some("not listening for SIP on 0.0.0.0:5060"));
        assert!(
            none.message
                .ends_with("not listening for SIP on 0.0.0.0:5060")
        );
        let ready = profile_ready(false, None, &unprobed, &none);
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (ConditionStatus::False, reason::RECORDERS_UNAVAILABLE)
        );
        let ready = profile_ready(false, None, &unprobed, &recorders);
        assert_eq!(ready.status, ConditionStatus::True);
        let missing = storage_bound("gone", "default", None, "k1");
        assert_eq!(missing.reason, reason::STORAGE_TARGET_NOT_FOUND);
        assert_eq!(
            profile_ready(true, None, &missing, &none).reason,
            reason::DISABLED
        );
    }

    #[test]
    fn a_connector_follows_its_destination() {
        let pending = connector_reachable("vault", "default", Some(None));
        assert_eq!(pending.status, ConditionStatus::Unknown);
        let up = condition(&reachable(&report(None)));
        let r = connector_reachable("vault", "default", Some(Some(&up)));
        assert_eq!(r.status, ConditionStatus::True);
        assert!(
            connector_ready(true, &r, None, true, "0 3 * * *")
                .message
                .contains("0 3 * * *")
        );
        let missing = connector_reachable("gone", "default", None);
        let ready = connector_ready(false, &missing, None, true, "0 3 * * *");
        assert_eq!(ready.reason, reason::STORAGE_TARGET_NOT_FOUND);
    }
}
