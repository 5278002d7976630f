//! What only the portal needs: live web-session lookup with the idle timeout, read-only
//! impersonation bound to a session, one-time password reset tokens, the groups captured on a
//! recording, and assigning unassigned calls to a user.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::exec::{DbRow, args};
use super::model::{Attendance, Audience};
use super::{Db, DbError, Result, invalid, now_micros};

/// A live web session as the portal sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    pub id_hash: String,
    pub user_id: Uuid,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub ip: String,
    pub user_agent: String,
    /// The user an admin is viewing the portal as (read-only).
    pub impersonating: Option<Uuid>,
}

/// Outcome of [`Db::use_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLookup {
    Live(LiveSession),
    /// Idle too long or past its absolute end: it is revoked now.
    Expired,
    /// Unknown or revoked.
    Missing,
}

const LIVE_COLUMNS: &str =
    "id_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent, impersonating";

fn live_from_row(r: &dyn DbRow) -> Result<LiveSession> {
    Ok(LiveSession {
        id_hash: r.text("id_hash")?,
        user_id: r.uuid("user_id")?,
        created_at: r.i64("created_at")?,
        last_seen_at: r.i64("last_seen_at")?,
        expires_at: r.i64("expires_at")?,
        ip: r.text("ip")?,
        user_agent: r.text("user_agent")?,
        impersonating: r.opt_uuid("impersonating")?,
    })
}

impl Db {
    /// Looks up a session for a request at `now`. A session idle for more than `idle_micros`
    /// or past its `expires_at` (the absolute timeout) is revoked and reported `Expired`;
    /// a live one has its last use set to `now`.
    pub async fn use_session(
        &self,
        tenant: &str,
        id_hash: &str,
        now: i64,
        idle_micros: i64,
    ) -> Result<SessionLookup> {
        let found = self
            .row(
                &format!(
                    "SELECT {LIVE_COLUMNS} FROM web_sessions WHERE tenant = $1 AND id_hash = $2 \
                     AND revoked_at IS NULL"
                ),
                &args![tenant, id_hash],
                live_from_row,
            )
            .await?;
        let Some(mut s) = found else {
            return Ok(SessionLookup::Missing);
        };
        if s.expires_at <= now || s.last_seen_at.saturating_add(idle_micros) < now {
            self.revoke_session(tenant, id_hash).await?;
            return Ok(SessionLookup::Expired);
        }
        self.exec(
            "UPDATE web_sessions SET last_seen_at = $3 WHERE tenant = $1 AND id_hash = $2",
            &args![tenant, id_hash, now],
        )
        .await?;
        s.last_seen_at = now;
        Ok(SessionLookup::Live(s))
    }

    /// Live sessions of the tenant (every user), newest first: the "User Web Sessions" view.
    pub async fn live_sessions(&self, tenant: &str, now: i64) -> Result<Vec<LiveSession>> {
        self.rows(
            &format!(
                "SELECT {LIVE_COLUMNS} FROM web_sessions WHERE tenant = $1 \
                 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC"
            ),
            &args![tenant, now],
            live_from_row,
        )
        .await
    }

    /// Live sessions of one user, newest first.
    pub async fn live_user_sessions(
        &self,
        tenant: &str,
        user_id: Uuid,
        now: i64,
    ) -> Result<Vec<LiveSession>> {
        self.rows(
            &format!(
                "SELECT {LIVE_COLUMNS} FROM web_sessions WHERE tenant = $1 AND user_id = $2 \
                 AND revoked_at IS NULL AND expires_at > $3 ORDER BY created_at DESC"
            ),
            &args![tenant, user_id, now],
            live_from_row,
        )
        .await
    }

    /// Starts (`Some`) or ends (`None`) impersonation on a live session.
    pub async fn set_impersonation(
        &self,
        tenant: &str,
        id_hash: &str,
        target: Option<Uuid>,
    ) -> Result<()> {
        let n = self
            .exec(
                "UPDATE web_sessions SET impersonating = $3 WHERE tenant = $1 AND id_hash = $2 \
                 AND revoked_at IS NULL",
                &args![tenant, id_hash, target],
            )
            .await?;
        if n == 0 {
            return Err(DbError::NotFound {
                kind: "web session",
                tenant: tenant.to_owned(),
                id: id_hash.to_owned(),
            });
        }
        Ok(())
    }

    /// Stores a one-time password reset token (its hash) for a user.
    pub async fn create_password_reset(
        &self,
        tenant: &str,
        token_hash: &str,
        user_id: Uuid,
        created_by: &str,
        expires_at: i64,
    ) -> Result<()> {
        self.exec(
            "INSERT INTO password_resets (tenant, token_hash, user_id, created_by, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &args![
                tenant,
                token_hash,
                user_id,
                created_by,
                now_micros(),
                expires_at
            ],
        )
        .await?;
        Ok(())
    }

    /// Consumes a reset token: returns its user and the username of who minted it if the
    /// token exists, is unused and unexpired at `now`, and marks it used so it never works
    /// twice.
    pub async fn consume_password_reset(
        &self,
        tenant: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(Uuid, String)>> {
        self.row(
            "UPDATE password_resets SET used_at = $3 WHERE tenant = $1 AND token_hash = $2 \
             AND used_at IS NULL AND expires_at > $3 RETURNING user_id, created_by",
            &args![tenant, token_hash, now],
            |r| Ok((r.uuid("user_id")?, r.text("created_by")?)),
        )
        .await
    }

    /// Groups captured on a recording at call time (they decide OwnAndGroups visibility).
    pub async fn recording_group_ids(&self, tenant: &str, recording: Uuid) -> Result<Vec<Uuid>> {
        self.rows(
            "SELECT group_id FROM recording_groups WHERE tenant = $1 AND recording_id = $2 \
             ORDER BY group_id",
            &args![tenant, recording],
            |r| r.uuid("group_id"),
        )
        .await
    }

    /// Who a recording reaches besides its owner: its groups and a meeting's attendees.
    pub async fn recording_audience(&self, tenant: &str, recording: Uuid) -> Result<Audience> {
        Ok(self
            .audiences_of(tenant, &[recording])
            .await?
            .remove(&recording)
            .unwrap_or_default())
    }

    /// [`Self::recording_audience`] of each of `recordings` (those with none are left out);
    /// two queries per 500 recordings (for access decisions on a whole list).
    pub async fn audiences_of(
        &self,
        tenant: &str,
        recordings: &[Uuid],
    ) -> Result<HashMap<Uuid, Audience>> {
        let mut out: HashMap<Uuid, Audience> = HashMap::new();
        let groups = self
            .rows_for_ids(
                "SELECT recording_id, group_id FROM recording_groups WHERE tenant = $1 \
                 AND recording_id IN ({ids}) ORDER BY recording_id, group_id",
                tenant,
                recordings,
                |r| Ok((r.uuid("recording_id")?, r.uuid("group_id")?)),
            )
            .await?;
        for (rec, group) in groups {
            out.entry(rec).or_default().groups.push(group);
        }
        let attendees = self
            .rows_for_ids(
                "SELECT recording_id, user_id, joined_ms, left_ms FROM recording_attendees \
                 WHERE tenant = $1 AND recording_id IN ({ids}) ORDER BY recording_id, user_id",
                tenant,
                recordings,
                |r| {
                    Ok((
                        r.uuid("recording_id")?,
                        Attendance {
                            user_id: r.uuid("user_id")?,
                            joined_ms: r.i64("joined_ms")?,
                            left_ms: r.opt_i64("left_ms")?,
                        },
                    ))
                },
            )
            .await?;
        for (rec, a) in attendees {
            out.entry(rec).or_default().attendees.push(a);
        }
        Ok(out)
    }

    /// The unassigned calls an assignment would take: the call `recording` (if still
    /// unassigned), and with `similar` every other unassigned call whose calling or called
    /// number is `number`.
    pub async fn assignable_calls(
        &self,
        tenant: &str,
        recording: Uuid,
        number: &str,
        similar: bool,
    ) -> Result<Vec<Uuid>> {
        if number.trim().is_empty() {
            return Err(invalid("number", "must not be empty"));
        }
        let mut candidates = Vec::new();
        candidates.extend(
            self.row(
                "SELECT id FROM recordings WHERE tenant = $1 AND id = $2 AND owner_user_id IS NULL",
                &args![tenant, recording],
                |r| r.uuid("id"),
            )
            .await?,
        );
        if similar {
            candidates.extend(
                self.rows(
                    "SELECT id FROM recordings WHERE tenant = $1 AND owner_user_id IS NULL \
                     AND (calling_number = $2 OR called_number = $2) AND id <> $3",
                    &args![tenant, number.trim(), recording],
                    |r| r.uuid("id"),
                )
                .await?,
            );
        }
        Ok(candidates)
    }

    /// Assigns the unassigned calls `candidates` (from [`Db::assignable_calls`]) to `user_id`.
    /// Each assigned call gets the user's current groups (so group scopes see it). A call
    /// assigned to someone meanwhile is never touched. Returns the ids assigned.
    pub async fn assign_calls(
        &self,
        tenant: &str,
        candidates: &[Uuid],
        user_id: Uuid,
    ) -> Result<Vec<Uuid>> {
        let mut tx = self.begin().await?;
        let now = now_micros();
        let mut ids = Vec::new();
        for &id in candidates {
            let n = tx
                .exec(
                    "UPDATE recordings SET owner_user_id = $3, updated_at = $4 WHERE tenant = $1 \
                     AND id = $2 AND owner_user_id IS NULL",
                    &args![tenant, id, user_id, now],
                )
                .await?;
            if n == 0 {
                continue;
            }
            tx.exec(
                "INSERT INTO recording_groups (tenant, recording_id, group_id) \
                 SELECT m.tenant, $2, m.group_id FROM memberships m WHERE m.tenant = $1 \
                 AND m.user_id = $3 ON CONFLICT DO NOTHING",
                &args![tenant, id, user_id],
            )
            .await?;
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }
}
