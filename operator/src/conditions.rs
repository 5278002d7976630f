//! Status conditions: what a reconcile concluded, merged with what the resource already says so
//! that `lastTransitionTime` only moves when a condition's status changes.

use callvault_crds::{Condition, ConditionStatus, condition_type};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// One condition as a reconcile concludes it, before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Condition type.
    pub type_: &'static str,
    /// Its status.
    pub status: ConditionStatus,
    /// CamelCase reason.
    pub reason: String,
    /// What a person should know.
    pub message: String,
}

impl Observed {
    /// A condition that holds.
    pub fn yes(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::True, reason, message)
    }

    /// A condition that does not hold.
    pub fn no(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::False, reason, message)
    }

    /// A condition the operator cannot decide yet.
    pub fn unknown(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, ConditionStatus::Unknown, reason, message)
    }

    fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The conditions to write: one per `observed`, keeping the current `lastTransitionTime` of
/// each whose status did not change, `now` for the others.
pub fn merge(
    current: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let previous = current.iter().find(|c| c.type_ == o.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == o.status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: o.type_.to_owned(),
                status: o.status,
                reason: o.reason.clone(),
                message: o.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// A change an SRE should see as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// True when the new state needs attention.
    pub warning: bool,
    /// The condition's new reason.
    pub reason: String,
    /// `<type> is now <status>: <message>`.
    pub note: String,
}

/// Conditions whose status or reason changed from `current` to `next` (a profile whose Ready
/// goes from `KeySecretNotFound` to `StorageTargetUnreachable` has a new problem worth an
/// Event), one per reason. A condition seen for the first time is a transition only when it is
/// bad news (a healthy start is not worth an Event).
pub fn transitions(current: &[Condition], next: &[Condition]) -> Vec<Transition> {
    let mut all: Vec<Transition> = next
        .iter()
        .filter_map(|n| {
            let before = current.iter().find(|c| c.type_ == n.type_);
            let bad = is_bad(&n.type_, n.status);
            let changed = match before {
                Some(b) => b.status != n.status || b.reason != n.reason,
                None => bad,
            };
            (changed && n.status != ConditionStatus::Unknown).then(|| Transition {
                warning: bad,
                reason: n.reason.clone(),
                note: format!("{} is now {:?}: {}", n.type_, n.status, n.message),
            })
        })
        .collect();
    // Ready repeats the reason of the condition it follows: one Event per cause.
    let mut seen = Vec::new();
    all.retain(|t| {
        let first = !seen.contains(&(t.reason.clone(), t.warning));
        seen.push((t.reason.clone(), t.warning));
        first
    });
    all
}

/// Whether `status` of condition `type_` needs attention. Most conditions are good when True;
/// these are alarms.
fn is_bad(type_: &str, status: ConditionStatus) -> bool {
    let alarm = type_ == condition_type::DELETION_BLOCKED
        || type_ == condition_type::CAPACITY_ALARM
        || type_ == condition_type::CONFLICT;
    match status {
        ConditionStatus::True => alarm,
        ConditionStatus::False => !alarm,
        ConditionStatus::Unknown => false,
    }
}

/// The current time, as the API server stores it (whole seconds).
pub fn now() -> Time {
    let ts = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use callvault_crds::reason;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid"))
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge(
            &[],
            &[
                Observed::yes("Ready", reason::RECONCILED, "ok"),
                Observed::no("StorageBound", reason::KEY_SECRET_NOT_FOUND, "no key"),
            ],
            Some(1),
            &at(100),
        );
        assert_eq!(first[0].last_transition_time, at(100));
        assert_eq!(first[0].observed_generation, Some(1));

        let second = merge(
            &first,
            &[
                Observed::yes("Ready", reason::RECONCILED, "still ok, new words"),
                Observed::yes("StorageBound", reason::RECONCILED, "key found"),
            ],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].message, "still ok, new words");
        assert_eq!(second[0].observed_generation, Some(2));
        assert_eq!(second[1].last_transition_time, at(200));
    }

    #[test]
    fn status_and_reason_changes_and_bad_first_news_are_events() {
        let before = merge(
            &[],
            &[Observed::yes("Reachable", "ProbeSucceeded", "ok")],
            Some(1),
            &at(1),
        );
        let same = merge(
            &before,
            &[Observed::yes("Reachable", "ProbeSucceeded", "ok again")],
            Some(1),
            &at(2),
        );
        assert!(transitions(&before, &same).is_empty());

        let down = merge(
            &before,
            &[Observed::no("Reachable", "ConnectUnreachable", "refused")],
            Some(1),
            &at(3),
        );
        let t = transitions(&before, &down);
        assert_eq!(t.len(), 1);
        assert!(t[0].warning);
        assert_eq!(t[0].reason, "ConnectUnreachable");
        assert!(
            t[0].note.contains("Reachable is now False: refused"),
            "{t:?}"
        );

        // Still False, for another reason: a new problem, a new Event.
        let other = merge(
            &down,
            &[Observed::no("Reachable", "WriteFailed", "denied")],
            Some(1),
            &at(4),
        );
        let t = transitions(&down, &other);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].reason, "WriteFailed");
        assert!(t[0].warning);

        // Ready following Reachable for the same cause: one Event, Ready's.
        let both = merge(
            &[],
            &[
                Observed::no("Ready", "ConnectUnreachable", "refused"),
                Observed::no("Reachable", "ConnectUnreachable", "refused"),
            ],
            Some(1),
            &at(5),
        );
        let t = transitions(&[], &both);
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(t[0].note.starts_with("Ready is now False"), "{t:?}");

        // First sight: healthy is quiet, unhealthy is reported; DeletionBlocked=True is bad.
        let fresh_ok = merge(
            &[],
            &[Observed::yes("Ready", "Reconciled", "")],
            None,
            &at(1),
        );
        assert!(transitions(&[], &fresh_ok).is_empty());
        let blocked = merge(
            &[],
            &[Observed::yes(
                condition_type::DELETION_BLOCKED,
                reason::ARCHIVES_EXIST,
                "3 archived",
            )],
            None,
            &at(1),
        );
        let t = transitions(&[], &blocked);
        assert_eq!(t.len(), 1);
        assert!(t[0].warning);
    }
}
