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
    /// Whether the pod could store its last recording (absent from older recorders).
    #[serde(default)]
    pub storage: Option<StorageReport>,
    /// The pod's spool volume against its thresholds.
    #[serde(default)]
    pub spool: Option<SpoolReport>,
}

/// A recorder's last attempt to store a recording.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum StorageReport {
    Unknown,
    Reachable,
    #[serde(rename_all = "camelCase")]
    Unreachable {
        target: String,
        error: String,
    },
}

/// A recorder's spool volume: `level` is `normal`, `warning`, `critical` or `full` (new calls
/// refused).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpoolReport {
    pub level: String,
    pub free_bytes: u64,
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
    /// Why a recorder cannot store recordings now (they wait in its spool), if one cannot.
    pub storage_failure: Option<String>,
    /// Why a recorder refuses new calls for a full spool, if one does.
    pub spool_full: Option<String>,
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
        if load.storage_failure.is_none()
            && let Some(StorageReport::Unreachable { target, error }) = &r.storage
        {
            load.storage_failure = Some(format!(
                "a recorder cannot store recordings in StorageTarget {target} ({error}); they wait in its spool"
            ));
        }
        if load.spool_full.is_none()
            && let Some(spool) = r.spool.as_ref().filter(|s| s.level == "full")
        {
            load.spool_full = Some(format!(
                "a recorder's spool is full ({} MiB free): it refuses new calls with 503",
                spool.free_bytes >> 20
            ));
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
    fn a_recorder_that_cannot_store_or_spool_is_reported() {
        let a = report(
            r#"{"profile":"sales","activeSessions":1,"capacity":20,"draining":false,
                "usersMatched":0,"lastRecordingTime":null,
                "storage":{"state":"unreachable","target":"local","error":"not a directory","since":1},
                "spool":{"level":"full","freeBytes":104857600,"totalBytes":1,"usedPercent":99}}"#,
        );
        let load = aggregate(&[a]);
        let storage = load.storage_failure.expect("storage failure reported");
        assert!(
            storage.contains("local") && storage.contains("not a directory"),
            "{storage}"
        );
        assert!(
            load.spool_full
                .expect("spool full")
                .contains("100 MiB free")
        );
        let fine = report(
            r#"{"profile":"sales","activeSessions":0,"capacity":20,"draining":false,
                "usersMatched":0,"lastRecordingTime":null,
                "storage":{"state":"reachable"},"spool":{"level":"warning","freeBytes":1}}"#,
        );
        let load = aggregate(&[fine]);
        assert_eq!((load.storage_failure, load.spool_full), (None, None));
    }

    #[test]
    fn no_pods_means_no_load() {
        assert_eq!(aggregate(&[]), PoolLoad::default());
    }
}
