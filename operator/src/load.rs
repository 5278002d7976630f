//! The load a recorder pool reports: each ready recorder pod's `GET /status`, summed.

use callvault_crds::recording_profile::UserConflict;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

/// A recorder pod's `GET /status` (the agreed contract).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecorderStatus {
    /// The profile the pod records for.
    pub profile: String,
    /// Calls being recorded now.
    pub active_sessions: u32,
    /// Calls the pod can record at once.
    pub capacity: u32,
    /// True while the pod drains (rolling upgrade, scale-down).
    pub draining: bool,
    /// Users the profile matches.
    pub users_matched: u32,
    /// Users also matched by another profile.
    #[serde(default)]
    pub conflicts: Vec<Conflict>,
    /// Start of the most recent recording.
    pub last_recording_time: Option<Time>,
}

/// A user matched by another profile too.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Conflict {
    /// User name.
    pub user: String,
    /// The other profile.
    pub profile: String,
}

/// The pool's load: sums over the pods, the directory figures from any pod, the latest
/// recording time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolLoad {
    /// Calls being recorded now.
    pub active_sessions: u64,
    /// Calls the pods can record at once.
    pub capacity: u64,
    /// Users the profile matches.
    pub users_matched: u32,
    /// Users also matched by another profile.
    pub conflicts: Vec<UserConflict>,
    /// Start of the most recent recording.
    pub last_recording_time: Option<Time>,
}

/// Sums the reports of the ready pods. A draining pod's calls still count (they are still
/// being recorded) but its capacity does not (it takes no new calls).
pub fn aggregate(reports: &[RecorderStatus]) -> PoolLoad {
    let mut load = PoolLoad::default();
    for r in reports {
        load.active_sessions += u64::from(r.active_sessions);
        if !r.draining {
            load.capacity += u64::from(r.capacity);
        }
        load.users_matched = load.users_matched.max(r.users_matched);
        if load.conflicts.is_empty() {
            load.conflicts = r
                .conflicts
                .iter()
                .map(|c| UserConflict {
                    user: c.user.clone(),
                    profile: c.profile.clone(),
                })
                .collect();
        }
        if let Some(t) = &r.last_recording_time
            && load.last_recording_time.as_ref().is_none_or(|l| l.0 < t.0)
        {
            load.last_recording_time = Some(t.clone());
        }
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(json: &str) -> RecorderStatus {
        serde_json::from_str(json).expect("contract JSON parses")
    }

    #[test]
    fn sessions_and_capacity_are_summed_and_the_latest_recording_wins() {
        let a = report(
            r#"{"profile":"sales","activeSessions":150,"capacity":200,"draining":false,
                "usersMatched":40,"conflicts":[{"user":"ann","profile":"collections"}],
                "lastRecordingTime":"2026-01-02T10:00:00Z"}"#,
        );
        let b = report(
            r#"{"profile":"sales","activeSessions":30,"capacity":200,"draining":true,
                "usersMatched":40,"conflicts":[],"lastRecordingTime":"2026-01-02T11:00:00Z"}"#,
        );
        let c = report(
            r#"{"profile":"sales","activeSessions":0,"capacity":200,"draining":false,
                "usersMatched":40,"conflicts":[],"lastRecordingTime":null}"#,
        );
        let load = aggregate(&[a, b, c]);
        assert_eq!(load.active_sessions, 180);
        // The draining pod takes no new calls.
        assert_eq!(load.capacity, 400);
        assert_eq!(load.users_matched, 40);
        assert_eq!(load.conflicts.len(), 1);
        assert_eq!(load.conflicts[0].profile, "collections");
        let t = load.last_recording_time.expect("a recording");
        assert_eq!(t.0.to_string(), "2026-01-02T11:00:00Z");
        // 180 calls at 200 per pod need ceil(180 / 160) = 2 pods.
        assert_eq!(crate::desired_replicas(load.active_sessions, 200, 1, 4), 2);
    }

    #[test]
    fn no_pods_means_no_load() {
        assert_eq!(aggregate(&[]), PoolLoad::default());
    }
}
