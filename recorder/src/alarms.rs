//! Alarms the recorder raises about itself: its storage failing and its spool filling. They
//! are listed in its `/status` and, in a cluster, go into the alarms table and the activity
//! log (the portal lists them) under the same types the other components use; the recorder has
//! no mail settings or Kubernetes client. Standalone stores and mails them from `/status`.

use std::collections::HashMap;

use callvault_config::SpoolLimits;
use callvault_store::db::{AlarmSeverity, Db, DbError};
use serde::{Deserialize, Serialize};

use crate::commit::StorageHealth;
use crate::spool::{Space, SpoolLevel};

/// Recordings cannot be stored: they wait in the spool.
pub const STORAGE_UNREACHABLE: &str = "STORAGE_UNREACHABLE";
/// The spool volume is above its thresholds, or too full to take a new call.
pub const SPOOL_DISK_FULL: &str = "SPOOL_DISK_FULL";

/// Every alarm a recorder raises about itself.
pub const KINDS: [&str; 2] = [STORAGE_UNREACHABLE, SPOOL_DISK_FULL];

/// An alarm's severity and text, or `None` when its condition is clear.
pub type Raised = Option<(AlarmSeverity, String)>;

/// One of the recorder's alarms as its `/status` lists it: a process that embeds recorders
/// (standalone) stores and mails these with its own alarms, so its recorders do not store them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// One of [`KINDS`].
    #[serde(rename = "type")]
    pub alarm_type: String,
    /// The recorder it is about.
    pub source: String,
    /// Severity and text while raised; `None` when clear.
    pub raised: Option<ListedRaise>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedRaise {
    pub severity: AlarmSeverity,
    pub message: String,
}

/// Critical while the last attempt to store a recording (or to open the storage) failed.
pub fn storage(recorder: &str, health: &StorageHealth, pending: u64) -> Raised {
    let StorageHealth::Unreachable { target, error, .. } = health else {
        return None;
    };
    Some((
        AlarmSeverity::Critical,
        format!(
            "{recorder} cannot store recordings in StorageTarget {target}: {error}; \
             {pending} recordings wait in the spool and are retried until it can"
        ),
    ))
}

/// Major at `alarmPercent`, Critical at `criticalPercent` or when new calls are refused.
pub fn spool(recorder: &str, space: Space, limits: &SpoolLimits) -> Raised {
    let level = SpoolLevel::of(space, limits);
    let percent = space.used_percent();
    let mib = space.free_bytes >> 20;
    let severity = match level {
        SpoolLevel::Normal => return None,
        SpoolLevel::Warning => AlarmSeverity::Major,
        SpoolLevel::Critical | SpoolLevel::Full => AlarmSeverity::Critical,
    };
    let consequence = if level == SpoolLevel::Full {
        format!(
            "new calls are refused (503) while less than {} MiB is free",
            limits.min_free_mib
        )
    } else {
        format!(
            "new calls are refused when less than {} MiB is free",
            limits.min_free_mib
        )
    };
    Some((
        severity,
        format!("Spool disk of {recorder} is {percent}% full ({mib} MiB free); {consequence}"),
    ))
}

/// Keeps one recorder's alarms in the table in step with what it observes: a raise, a change
/// of severity and a clear are stored and logged once; a changed text only updates the alarm.
/// What could not be stored is tried again at the next report.
#[derive(Debug)]
pub struct Reporter {
    tenant: String,
    source: String,
    last: HashMap<&'static str, Raised>,
}

impl Reporter {
    pub fn new(tenant: String, source: String) -> Self {
        Reporter {
            tenant,
            source,
            last: HashMap::new(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Stores `now` for alarm `kind` if it changed since the last report.
    pub async fn report(&mut self, db: &Db, kind: &'static str, now: Raised) {
        let last = self.last.get(kind);
        if last == Some(&now) {
            return;
        }
        let was_severity = last.and_then(|r| r.as_ref().map(|(s, _)| *s));
        let stored = self.store(db, kind, &now, was_severity).await;
        match stored {
            Ok(()) => {
                self.last.insert(kind, now);
            }
            Err(e) => tracing::warn!(alarm = kind, error = %e,
                "alarm not stored yet (retried at the next check)"),
        }
    }

    async fn store(
        &self,
        db: &Db,
        kind: &'static str,
        now: &Raised,
        was: Option<AlarmSeverity>,
    ) -> Result<(), DbError> {
        let (tenant, source) = (&self.tenant, &self.source);
        match now {
            Some((severity, message)) if was != Some(*severity) => {
                tracing::error!(alarm = kind, %source, "{message}");
                raise(db, tenant, kind, source, *severity, message).await
            }
            // Only the text changed: no news for the activity log.
            Some((severity, message)) => db
                .raise_alarm(tenant, kind, source, *severity, message)
                .await
                .map(|_| ()),
            None => clear(
                db,
                tenant,
                kind,
                source,
                &format!("{kind} ({source}) cleared"),
            )
            .await
            .map(|_| ()),
        }
    }
}

/// Raises (or updates) an alarm and notes it in the activity log.
pub async fn raise(
    db: &Db,
    tenant: &str,
    kind: &str,
    source: &str,
    severity: AlarmSeverity,
    message: &str,
) -> Result<(), DbError> {
    db.raise_alarm(tenant, kind, source, severity, message)
        .await?;
    db.log_activity(tenant, "alarm", message).await
}

/// Clears an alarm; if one was active, notes `text` in the activity log. Returns whether one
/// was active.
pub async fn clear(
    db: &Db,
    tenant: &str,
    kind: &str,
    source: &str,
    text: &str,
) -> Result<bool, DbError> {
    let was = db.clear_alarm(tenant, kind, source).await?;
    if was {
        tracing::info!(alarm = kind, %source, "{text}");
        db.log_activity(tenant, "alarm Clear", text).await?;
    }
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn space(free_mib: u64, total_mib: u64) -> Space {
        Space {
            free_bytes: free_mib * MIB,
            total_bytes: total_mib * MIB,
        }
    }

    #[test]
    fn spool_thresholds_raise_major_then_critical_then_refuse() {
        let limits = SpoolLimits {
            alarm_percent: 80,
            critical_percent: 95,
            min_free_mib: 256,
        };
        let level = |free, total| SpoolLevel::of(space(free, total), &limits);
        assert_eq!(level(10_000, 20_000), SpoolLevel::Normal);
        assert_eq!(level(4_001, 20_000), SpoolLevel::Normal, "79.995 % used");
        assert_eq!(level(4_000, 20_000), SpoolLevel::Warning);
        assert_eq!(level(1_000, 20_000), SpoolLevel::Critical);
        assert_eq!(level(255, 20_000), SpoolLevel::Full);
        // A small volume is refused by its free space before any percentage says so.
        assert_eq!(level(200, 1_000), SpoolLevel::Full);
        assert_eq!(level(0, 0), SpoolLevel::Full, "a volume of no size is full");
        assert_eq!(spool("r", space(10_000, 20_000), &limits), None);
        let major = spool("r", space(3_000, 20_000), &limits).expect("raised");
        assert_eq!(major.0, AlarmSeverity::Major);
        assert!(major.1.contains("85% full (3000 MiB free)"), "{}", major.1);
        let full = spool("r", space(100, 20_000), &limits).expect("raised");
        assert_eq!(full.0, AlarmSeverity::Critical);
        assert!(full.1.contains("new calls are refused (503)"), "{}", full.1);
    }

    #[test]
    fn storage_alarm_names_the_target_and_the_waiting_recordings() {
        assert_eq!(storage("r", &StorageHealth::Reachable, 3), None);
        assert_eq!(storage("r", &StorageHealth::Unknown, 0), None);
        let raised = storage(
            "compliance",
            &StorageHealth::Unreachable {
                target: "vault".into(),
                error: "connection refused".into(),
                since: 0,
            },
            2,
        )
        .expect("raised");
        assert_eq!(raised.0, AlarmSeverity::Critical);
        assert!(
            raised.1.contains("StorageTarget vault: connection refused")
                && raised.1.contains("2 recordings wait in the spool"),
            "{}",
            raised.1
        );
    }
}
