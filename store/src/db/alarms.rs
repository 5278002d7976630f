//! Alarms (conditions an admin must see until cleared) and the activity log (operational events).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exec::{DbRow, args};
use super::model::{parse, text_enum};
use super::{Db, Result, invalid, now_micros};

text_enum!(
    AlarmSeverity {
        Info => "info",
        Minor => "minor",
        Major => "major",
        Critical => "critical",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: Uuid,
    pub alarm_type: String,
    /// What raised it (a storage target, a recorder pod...).
    pub source: String,
    pub severity: AlarmSeverity,
    pub message: String,
    pub raised_at: i64,
    pub cleared_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityEntry {
    pub id: i64,
    pub time: i64,
    pub kind: String,
    pub message: String,
}

fn alarm_from_row(r: &dyn DbRow) -> Result<Alarm> {
    Ok(Alarm {
        id: r.uuid("id")?,
        alarm_type: r.text("alarm_type")?,
        source: r.text("source")?,
        severity: parse("severity", r.text("severity")?)?,
        message: r.text("message")?,
        raised_at: r.i64("raised_at")?,
        cleared_at: r.opt_i64("cleared_at")?,
    })
}

const ALARM_COLUMNS: &str = "id, alarm_type, source, severity, message, raised_at, cleared_at";

impl Db {
    /// Raises an alarm. While one of the same type and source is active, raising again updates its
    /// severity and message instead of adding a duplicate.
    pub async fn raise_alarm(
        &self,
        tenant: &str,
        alarm_type: &str,
        source: &str,
        severity: AlarmSeverity,
        message: &str,
    ) -> Result<Alarm> {
        if alarm_type.is_empty() {
            return Err(invalid("alarm type", "must not be empty"));
        }
        let mut tx = self.begin().await?;
        let updated = tx
            .row(
                &format!(
                    "UPDATE alarms SET severity = $4, message = $5 WHERE tenant = $1 \
                     AND alarm_type = $2 AND source = $3 AND cleared_at IS NULL \
                     RETURNING {ALARM_COLUMNS}"
                ),
                &args![tenant, alarm_type, source, severity.as_str(), message],
                alarm_from_row,
            )
            .await?;
        let alarm = match updated {
            Some(a) => a,
            None => tx
                .row(
                    &format!(
                        "INSERT INTO alarms (tenant, id, alarm_type, source, severity, message, \
                         raised_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ALARM_COLUMNS}"
                    ),
                    &args![
                        tenant,
                        Uuid::new_v4(),
                        alarm_type,
                        source,
                        severity.as_str(),
                        message,
                        now_micros()
                    ],
                    alarm_from_row,
                )
                .await?
                .ok_or_else(|| invalid("alarm", "insert returned no row"))?,
        };
        tx.commit().await?;
        Ok(alarm)
    }

    /// Clears the active alarm of this type and source; returns whether one was active.
    pub async fn clear_alarm(&self, tenant: &str, alarm_type: &str, source: &str) -> Result<bool> {
        let n = self
            .exec(
                "UPDATE alarms SET cleared_at = $4 WHERE tenant = $1 AND alarm_type = $2 \
                 AND source = $3 AND cleared_at IS NULL",
                &args![tenant, alarm_type, source, now_micros()],
            )
            .await?;
        Ok(n > 0)
    }

    /// Alarms, newest first: only active ones unless `include_cleared`.
    pub async fn list_alarms(
        &self,
        tenant: &str,
        include_cleared: bool,
        limit: i64,
    ) -> Result<Vec<Alarm>> {
        self.rows(
            &format!(
                "SELECT {ALARM_COLUMNS} FROM alarms WHERE tenant = $1 \
                 AND ($2 OR cleared_at IS NULL) ORDER BY raised_at DESC, id LIMIT $3"
            ),
            &args![tenant, include_cleared, limit],
            alarm_from_row,
        )
        .await
    }

    pub async fn log_activity(&self, tenant: &str, kind: &str, message: &str) -> Result<()> {
        self.exec(
            "INSERT INTO activity_log (tenant, time, kind, message) VALUES ($1, $2, $3, $4)",
            &args![tenant, now_micros(), kind, message],
        )
        .await?;
        Ok(())
    }

    /// Activity entries, newest first; `before_id` pages backwards.
    pub async fn activity(
        &self,
        tenant: &str,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ActivityEntry>> {
        self.rows(
            "SELECT id, time, kind, message FROM activity_log WHERE tenant = $1 \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            &args![tenant, before_id, limit],
            |r| {
                Ok(ActivityEntry {
                    id: r.i64("id")?,
                    time: r.i64("time")?,
                    kind: r.text("kind")?,
                    message: r.text("message")?,
                })
            },
        )
        .await
    }
}
