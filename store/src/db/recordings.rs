//! Recording lifecycle: created at call start, finished when the object is committed, archived,
//! deletion requested, expired.

use uuid::Uuid;

use super::exec::{Arg, DbRow, Tx, args, conflict_on_unique};
use super::model::{
    ArchiveCopy, DeleteMode, FinishRecording, NewRecording, Party, Recording, RecordingStatus,
    parse,
};
use super::{Db, DbError, Result, invalid, now_micros, word_norm};

/// The recording columns (alias `r`, owner alias `u`), in the order [`recording_from_row`] reads.
pub(crate) const RECORDING_COLUMNS: &str = "r.tenant, r.id, r.call_id, r.sip_call_id, \
    r.session_id, r.segment, r.start_time, r.answer_time, r.end_time, r.duration_ms, r.wait_ms, \
    r.direction, r.call_type, r.calling_number, r.calling_name, r.called_number, r.called_name, \
    r.answering_number, r.answering_name, r.on_behalf_of, r.transferred_by, r.transferred_to, \
    r.queue_name, r.participants, r.release_cause, r.stop_reason, r.owner_user_id, r.owner_item, r.agents, \
    r.skills, r.profile, r.storage_target, r.object_key, r.size_bytes, r.codec, r.channels, \
    r.sha256, r.metadata_digest, r.signature, r.key_id, r.expires_at, r.legal_hold, r.assurance, \
    (CASE WHEN r.legal_hold OR COALESCE(u.legal_hold, FALSE) THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END) AS hold_effective, \
    r.delete_mode, r.delete_requested_by, r.delete_authorised_by, r.delete_note, \
    r.delete_requested_at, r.deleted_at, r.status, r.raw_metadata, r.created_at, r.updated_at";

/// `FROM` clause joining the owner (for the derived legal hold), tenant-safe.
pub(crate) const RECORDING_FROM: &str =
    "recordings r LEFT JOIN users u ON u.tenant = r.tenant AND u.id = r.owner_user_id";

fn json_list<T: serde::de::DeserializeOwned>(column: &'static str, text: String) -> Result<T> {
    serde_json::from_str(&text).map_err(|_| DbError::Corrupt {
        column,
        value: text,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Vec<String> / Vec<Party> always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn recording_from_row(r: &dyn DbRow) -> Result<Recording> {
    Ok(Recording {
        tenant: r.text("tenant")?,
        id: r.uuid("id")?,
        call_id: r.text("call_id")?,
        sip_call_id: r.text("sip_call_id")?,
        session_id: r.text("session_id")?,
        segment: r.i64("segment")?,
        start_time: r.i64("start_time")?,
        answer_time: r.opt_i64("answer_time")?,
        end_time: r.opt_i64("end_time")?,
        duration_ms: r.i64("duration_ms")?,
        wait_ms: r.opt_i64("wait_ms")?,
        direction: parse("direction", r.text("direction")?)?,
        call_type: parse("call_type", r.text("call_type")?)?,
        calling: Party::new(r.text("calling_number")?, r.text("calling_name")?),
        called: Party::new(r.text("called_number")?, r.text("called_name")?),
        answering: Party::new(r.text("answering_number")?, r.text("answering_name")?),
        on_behalf_of: r.text("on_behalf_of")?,
        transferred_by: r.text("transferred_by")?,
        transferred_to: r.text("transferred_to")?,
        queue_name: r.text("queue_name")?,
        participants: json_list("participants", r.text("participants")?)?,
        release_cause: r
            .opt_text("release_cause")?
            .map(|v| parse("release_cause", v))
            .transpose()?,
        stop_reason: r.opt_text("stop_reason")?,
        owner_user_id: r.opt_uuid("owner_user_id")?,
        owner_item: r.text("owner_item")?,
        agents: json_list("agents", r.text("agents")?)?,
        skills: json_list("skills", r.text("skills")?)?,
        profile: r.text("profile")?,
        storage_target: r.text("storage_target")?,
        object_key: r.opt_text("object_key")?,
        size_bytes: r.opt_i64("size_bytes")?,
        codec: r.text("codec")?,
        channels: r.i64("channels")?,
        sha256: r.opt_text("sha256")?,
        metadata_digest: r.opt_text("metadata_digest")?,
        signature: r.opt_text("signature")?,
        key_id: r.opt_text("key_id")?,
        expires_at: r.opt_i64("expires_at")?,
        legal_hold: r.bool("legal_hold")?,
        legal_hold_effective: r.i64("hold_effective")? != 0,
        assurance: r.bool("assurance")?,
        delete_mode: r
            .opt_text("delete_mode")?
            .map(|v| parse::<DeleteMode>("delete_mode", v))
            .transpose()?,
        delete_requested_by: r.opt_text("delete_requested_by")?,
        delete_authorised_by: r.opt_text("delete_authorised_by")?,
        delete_note: r.opt_text("delete_note")?,
        delete_requested_at: r.opt_i64("delete_requested_at")?,
        deleted_at: r.opt_i64("deleted_at")?,
        status: parse("status", r.text("status")?)?,
        raw_metadata: r.opt_text("raw_metadata")?,
        created_at: r.i64("created_at")?,
        updated_at: r.i64("updated_at")?,
    })
}

/// Lower-cased text of every field the free-text search covers (media-manager F-71: parties,
/// agents, owner, targets, skills, call id), one field per line.
fn search_text(rec: &NewRecording) -> String {
    let mut fields: Vec<&str> = vec![
        &rec.call_id,
        &rec.sip_call_id,
        &rec.calling.number,
        &rec.calling.name,
        &rec.called.number,
        &rec.called.name,
        &rec.answering.number,
        &rec.answering.name,
        &rec.owner_item,
        &rec.queue_name,
        &rec.on_behalf_of,
        &rec.transferred_by,
        &rec.transferred_to,
    ];
    for p in &rec.participants {
        fields.push(&p.number);
        fields.push(&p.name);
    }
    fields.extend(rec.agents.iter().map(String::as_str));
    fields.extend(rec.skills.iter().map(String::as_str));
    fields
        .into_iter()
        .filter(|f| !f.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Participants as lower-cased "name number" lines, for the participants filter.
fn participants_norm(participants: &[Party]) -> String {
    let lines: Vec<String> = participants
        .iter()
        .map(|p| format!("{} {}", p.name, p.number).to_lowercase())
        .collect();
    format!("\n{}\n", lines.join("\n"))
}

/// The statement that gives a recording the groups of its owner and of every user whose
/// number is one of `numbers`, as the memberships are when it runs: a later move of a user to
/// another group leaves the recording where it was (DESIGN §6), so the old group's supervisor
/// keeps the call and the new one does not get it.
pub(crate) fn participant_groups<'a>(
    tenant: &str,
    id: Uuid,
    owner: Option<Uuid>,
    numbers: impl IntoIterator<Item = &'a str>,
) -> (String, Vec<Arg>) {
    let mut numbers: Vec<&str> = numbers
        .into_iter()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    let mut params = vec![Arg::from(tenant), Arg::from(id), Arg::from(owner)];
    let mut users = "m.user_id = $3".to_owned();
    if !numbers.is_empty() {
        let list: Vec<String> = numbers
            .iter()
            .map(|n| {
                params.push(Arg::from(*n));
                format!("${}", params.len())
            })
            .collect();
        users = format!(
            "({users} OR m.user_id IN (SELECT e.user_id FROM extensions e \
             WHERE e.tenant = $1 AND e.number IN ({})))",
            list.join(", ")
        );
    }
    (
        format!(
            "INSERT INTO recording_groups (tenant, recording_id, group_id) \
             SELECT DISTINCT m.tenant, $2, m.group_id FROM memberships m \
             WHERE m.tenant = $1 AND {users} ON CONFLICT DO NOTHING"
        ),
        params,
    )
}

/// Records which users attend a meeting and the part each attended, from its participants
/// (matched to users by extension, as they are now). Only a conference's participants attend:
/// on a two-party call the owner and the groups decide who sees it.
pub(crate) async fn record_attendees(
    tx: &mut Tx,
    tenant: &str,
    id: Uuid,
    participants: &[Party],
) -> Result<()> {
    for p in participants.iter().filter(|p| !p.number.is_empty()) {
        tx.exec(
            "INSERT INTO recording_attendees (tenant, recording_id, user_id, joined_ms, left_ms) \
             SELECT r.tenant, r.id, e.user_id, $4, $5 FROM recordings r \
             JOIN extensions e ON e.tenant = r.tenant AND e.number = $3 \
             WHERE r.tenant = $1 AND r.id = $2 AND r.direction = 'conference' \
             ON CONFLICT (tenant, recording_id, user_id) \
             DO UPDATE SET joined_ms = excluded.joined_ms, left_ms = excluded.left_ms",
            &args![
                tenant,
                id,
                p.number.as_str(),
                p.joined_ms.unwrap_or(0),
                p.left_ms
            ],
        )
        .await?;
    }
    Ok(())
}

fn check_tenant(tenant: &str) -> Result<()> {
    if tenant.is_empty() {
        return Err(invalid("tenant", "must not be empty"));
    }
    Ok(())
}

impl Db {
    /// What still depends on a declared resource, so that removing it would orphan them:
    /// `(recordings, archive copies)` not deleted. For a RecordingProfile its recordings, for a
    /// StorageTarget the recordings and copies on it, for a Connector the copies it made;
    /// nothing for any other kind.
    pub async fn holdings(&self, tenant: &str, kind: &str, name: &str) -> Result<(i64, i64)> {
        let count = |sql: &'static str| async move {
            self.row(sql, &args![tenant, name], |r| r.i64("n"))
                .await
                .map(Option::unwrap_or_default)
        };
        Ok(match kind {
            "RecordingProfile" => (
                count(
                    "SELECT COUNT(*) AS n FROM recordings \
                     WHERE tenant = $1 AND profile = $2 AND status <> 'deleted'",
                )
                .await?,
                0,
            ),
            "StorageTarget" => (
                count(
                    "SELECT COUNT(*) AS n FROM recordings \
                     WHERE tenant = $1 AND storage_target = $2 AND status <> 'deleted'",
                )
                .await?,
                count(
                    "SELECT COUNT(*) AS n FROM recording_copies c JOIN recordings r \
                     ON r.tenant = c.tenant AND r.id = c.recording_id \
                     WHERE c.tenant = $1 AND c.target = $2 AND r.status <> 'deleted'",
                )
                .await?,
            ),
            "Connector" => (
                0,
                count(
                    "SELECT COUNT(*) AS n FROM recording_copies c JOIN recordings r \
                     ON r.tenant = c.tenant AND r.id = c.recording_id \
                     WHERE c.tenant = $1 AND c.connector = $2 AND r.status <> 'deleted'",
                )
                .await?,
            ),
            _ => (0, 0),
        })
    }

    /// Creates the row of a call that is being recorded (status `recording`).
    pub async fn create_recording(&self, tenant: &str, rec: &NewRecording) -> Result<Recording> {
        check_tenant(tenant)?;
        if rec.call_id.is_empty() {
            return Err(invalid("call_id", "must not be empty"));
        }
        let now = now_micros();
        let mut tx = self.begin().await?;
        tx.exec(
            "INSERT INTO recordings (tenant, id, call_id, sip_call_id, session_id, segment, \
             start_time, answer_time, direction, call_type, calling_number, calling_name, \
             calling_norm, called_number, called_name, called_norm, answering_number, \
             answering_name, answering_norm, on_behalf_of, transferred_by, transferred_to, \
             queue_name, participants, participants_norm, owner_user_id, owner_item, agents, \
             skills, profile, storage_target, key_id, expires_at, status, raw_metadata, \
             search_text, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, \
             $27, $28, $29, $30, $31, $32, $33, 'recording', $34, $35, $36, $36)",
            &args![
                tenant,
                rec.id,
                &rec.call_id,
                &rec.sip_call_id,
                &rec.session_id,
                rec.segment,
                rec.start_time,
                rec.answer_time,
                rec.direction.as_str(),
                rec.call_type.as_str(),
                &rec.calling.number,
                &rec.calling.name,
                word_norm(&rec.calling.name),
                &rec.called.number,
                &rec.called.name,
                word_norm(&rec.called.name),
                &rec.answering.number,
                &rec.answering.name,
                word_norm(&rec.answering.name),
                &rec.on_behalf_of,
                &rec.transferred_by,
                &rec.transferred_to,
                &rec.queue_name,
                to_json(&rec.participants),
                participants_norm(&rec.participants),
                rec.owner_user_id,
                &rec.owner_item,
                to_json(&rec.agents),
                to_json(&rec.skills),
                &rec.profile,
                &rec.storage_target,
                rec.key_id.clone(),
                rec.expires_at,
                rec.raw_metadata.clone(),
                search_text(rec),
                now,
            ],
        )
        .await
        .map_err(|e| conflict_on_unique(e, || format!("recording {} already exists", rec.id)))?;
        for g in &rec.groups {
            tx.exec(
                "INSERT INTO recording_groups (tenant, recording_id, group_id) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &args![tenant, rec.id, *g],
            )
            .await?;
        }
        let numbers = std::iter::once(&rec.calling)
            .chain([&rec.called, &rec.answering])
            .chain(&rec.participants)
            .map(|p| p.number.as_str());
        let (sql, params) = participant_groups(tenant, rec.id, rec.owner_user_id, numbers);
        tx.exec(&sql, &params).await?;
        record_attendees(&mut tx, tenant, rec.id, &rec.participants).await?;
        tx.commit().await?;
        self.recording(tenant, rec.id)
            .await?
            .ok_or_else(|| not_found(tenant, rec.id))
    }

    /// One recording of the tenant.
    pub async fn recording(&self, tenant: &str, id: Uuid) -> Result<Option<Recording>> {
        self.row(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 AND r.id = $2"
            ),
            &args![tenant, id],
            recording_from_row,
        )
        .await
    }

    /// Commits a finished recording: object key, size, digests, signature. Only a row that is
    /// still `recording` or `pending` can be finished, so a late retry never overwrites a
    /// finished or deleted recording.
    pub async fn finish_recording(
        &self,
        tenant: &str,
        id: Uuid,
        fin: &FinishRecording,
    ) -> Result<Recording> {
        if !matches!(
            fin.status,
            RecordingStatus::Available | RecordingStatus::Incomplete | RecordingStatus::Pending
        ) {
            return Err(invalid(
                "status",
                format!(
                    "a finished recording is available, incomplete or pending, not {}",
                    fin.status
                ),
            ));
        }
        if fin.object_key.is_empty() || fin.sha256.len() != 64 {
            return Err(invalid(
                "finish",
                "object key and a hex SHA-256 of the plaintext are required",
            ));
        }
        let (ans_num, ans_name) = match &fin.answering {
            Some(p) => (Some(p.number.clone()), Some(p.name.clone())),
            None => (None, None),
        };
        let ans_norm = fin.answering.as_ref().map(|p| word_norm(&p.name));
        let n = self
            .exec(
                "UPDATE recordings SET status = $3, end_time = $4, \
                 answer_time = COALESCE($5, answer_time), \
                 duration_ms = CASE WHEN COALESCE($5, answer_time) IS NULL THEN 0 \
                     WHEN $4 > COALESCE($5, answer_time) \
                     THEN ($4 - COALESCE($5, answer_time)) / 1000 ELSE 0 END, \
                 wait_ms = CASE WHEN COALESCE($5, answer_time) IS NULL THEN NULL \
                     ELSE (COALESCE($5, answer_time) - start_time) / 1000 END, \
                 release_cause = $6, \
                 answering_number = COALESCE($7, answering_number), \
                 answering_name = COALESCE($8, answering_name), \
                 answering_norm = COALESCE($9, answering_norm), \
                 object_key = $10, size_bytes = $11, codec = $12, channels = $13, sha256 = $14, \
                 metadata_digest = $15, signature = $16, key_id = $17, updated_at = $18, \
                 stop_reason = $19 \
                 WHERE tenant = $1 AND id = $2 AND status IN ('recording', 'pending')",
                &args![
                    tenant,
                    id,
                    fin.status.as_str(),
                    fin.end_time,
                    fin.answer_time,
                    fin.release_cause.map(|c| c.as_str()),
                    ans_num,
                    ans_name,
                    ans_norm,
                    &fin.object_key,
                    fin.size_bytes,
                    &fin.codec,
                    fin.channels,
                    &fin.sha256,
                    &fin.metadata_digest,
                    &fin.signature,
                    &fin.key_id,
                    now_micros(),
                    fin.stop_reason.as_deref(),
                ],
            )
            .await?;
        let rec = self
            .recording(tenant, id)
            .await?
            .ok_or_else(|| not_found(tenant, id))?;
        if n == 0 {
            return Err(DbError::Conflict(format!(
                "recording {id} is {} and cannot be finished again",
                rec.status
            )));
        }
        Ok(rec)
    }

    /// Calls being recorded now, oldest first.
    pub async fn active_recordings(&self, tenant: &str) -> Result<Vec<Recording>> {
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} \
                 WHERE r.tenant = $1 AND r.status = 'recording' ORDER BY r.start_time, r.id"
            ),
            &args![tenant],
            recording_from_row,
        )
        .await
    }

    /// Records (or refreshes) the archive copy a Connector made.
    pub async fn mark_archived(&self, tenant: &str, id: Uuid, copy: &ArchiveCopy) -> Result<()> {
        let n = self
            .exec(
                "INSERT INTO recording_copies (tenant, recording_id, connector, target, \
                 object_key, sha256, archived_at) \
                 SELECT tenant, id, $3, $4, $5, $6, $7 FROM recordings WHERE tenant = $1 AND id = $2 \
                 ON CONFLICT (tenant, recording_id, connector) DO UPDATE SET \
                 target = excluded.target, object_key = excluded.object_key, \
                 sha256 = excluded.sha256, archived_at = excluded.archived_at",
                &args![
                    tenant,
                    id,
                    &copy.connector,
                    &copy.target,
                    &copy.object_key,
                    &copy.sha256,
                    copy.archived_at
                ],
            )
            .await?;
        if n == 0 {
            return Err(not_found(tenant, id));
        }
        Ok(())
    }

    pub async fn archive_copies(&self, tenant: &str, id: Uuid) -> Result<Vec<ArchiveCopy>> {
        self.rows(
            "SELECT connector, target, object_key, sha256, archived_at FROM recording_copies \
             WHERE tenant = $1 AND recording_id = $2 ORDER BY connector",
            &args![tenant, id],
            |r| {
                Ok(ArchiveCopy {
                    connector: r.text("connector")?,
                    target: r.text("target")?,
                    object_key: r.text("object_key")?,
                    sha256: r.text("sha256")?,
                    archived_at: r.i64("archived_at")?,
                })
            },
        )
        .await
    }

    /// Finished recordings without a copy from `connector`, oldest first, at most `limit`.
    pub async fn recordings_to_archive(
        &self,
        tenant: &str,
        connector: &str,
        limit: i64,
    ) -> Result<Vec<Recording>> {
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND r.status IN ('available', 'incomplete') AND NOT r.assurance \
                 AND NOT EXISTS (SELECT 1 FROM \
                 recording_copies c WHERE c.tenant = r.tenant AND c.recording_id = r.id \
                 AND c.connector = $2) ORDER BY r.start_time, r.id LIMIT $3"
            ),
            &args![tenant, connector, limit],
            recording_from_row,
        )
        .await
    }

    /// Requests deletion (carried out by the next retention run). Refused for held recordings.
    pub async fn request_deletion(
        &self,
        tenant: &str,
        ids: &[Uuid],
        mode: DeleteMode,
        requested_by: &str,
        authorised_by: &str,
        note: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_micros();
        for id in ids {
            let held = tx
                .row(
                    "SELECT (CASE WHEN r.legal_hold OR COALESCE(u.legal_hold, FALSE) THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END) \
                     AS held, r.status FROM recordings r LEFT JOIN users u ON u.tenant = r.tenant \
                     AND u.id = r.owner_user_id WHERE r.tenant = $1 AND r.id = $2",
                    &args![tenant, *id],
                    |r| Ok((r.i64("held")? != 0, r.text("status")?)),
                )
                .await?
                .ok_or_else(|| not_found(tenant, *id))?;
            if held.0 {
                return Err(DbError::Conflict(format!(
                    "recording {id} is under legal hold and cannot be deleted"
                )));
            }
            if held.1 == "recording" {
                return Err(DbError::Conflict(format!(
                    "recording {id} is still being recorded"
                )));
            }
            tx.exec(
                "UPDATE recordings SET delete_mode = $3, delete_requested_by = $4, \
                 delete_authorised_by = $5, delete_note = $6, delete_requested_at = $7, \
                 updated_at = $7 WHERE tenant = $1 AND id = $2",
                &args![
                    tenant,
                    *id,
                    mode.as_str(),
                    requested_by,
                    authorised_by,
                    note,
                    now
                ],
            )
            .await?;
        }
        tx.commit().await
    }

    /// Recordings whose deletion was requested and not yet carried out, oldest request first.
    pub async fn pending_deletions(&self, tenant: &str, limit: i64) -> Result<Vec<Recording>> {
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND r.delete_requested_at IS NOT NULL AND r.status <> 'deleted' \
                 AND NOT (r.legal_hold OR COALESCE(u.legal_hold, FALSE)) \
                 ORDER BY r.delete_requested_at, r.id LIMIT $2"
            ),
            &args![tenant, limit],
            recording_from_row,
        )
        .await
    }

    /// Recordings that expired before `before` and may go: not held (by the recording or its
    /// owner), not already deleted, not being recorded. Ordered by expiry then id; pass the last
    /// row's `(expires_at, id)` as `after` to get the next batch.
    pub async fn expired_recordings(
        &self,
        tenant: &str,
        before: i64,
        after: Option<(i64, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Recording>> {
        let (after_t, after_id) = match after {
            Some((t, id)) => (Some(t), Some(id)),
            None => (None, None),
        };
        self.rows(
            &format!(
                "SELECT {RECORDING_COLUMNS} FROM {RECORDING_FROM} WHERE r.tenant = $1 \
                 AND r.expires_at < $2 AND r.status NOT IN ('deleted', 'recording') \
                 AND NOT (r.legal_hold OR COALESCE(u.legal_hold, FALSE)) \
                 AND ($3 IS NULL OR r.expires_at > $3 OR (r.expires_at = $3 AND r.id > $4)) \
                 ORDER BY r.expires_at, r.id LIMIT $5"
            ),
            &args![tenant, before, after_t, after_id, limit],
            recording_from_row,
        )
        .await
    }

    /// Marks a recording deleted once its media is gone. `DeleteMode::All` also removes the
    /// metadata row (and, by cascade, its tags, notes and transcripts); archive copies are
    /// listed before so the caller keeps them.
    pub async fn mark_deleted(&self, tenant: &str, id: Uuid, mode: DeleteMode) -> Result<()> {
        let n = match mode {
            DeleteMode::MediaOnly => {
                self.exec(
                    "UPDATE recordings SET status = 'deleted', object_key = NULL, deleted_at = $3, \
                     updated_at = $3 WHERE tenant = $1 AND id = $2",
                    &args![tenant, id, now_micros()],
                )
                .await?
            }
            DeleteMode::All => {
                self.exec(
                    "DELETE FROM recordings WHERE tenant = $1 AND id = $2",
                    &args![tenant, id],
                )
                .await?
            }
        };
        if n == 0 {
            return Err(not_found(tenant, id));
        }
        Ok(())
    }

    /// Sets or clears the legal hold of one recording.
    pub async fn set_recording_hold(&self, tenant: &str, id: Uuid, hold: bool) -> Result<()> {
        let n = self
            .exec(
                "UPDATE recordings SET legal_hold = $3, updated_at = $4 WHERE tenant = $1 AND id = $2",
                &args![tenant, id, hold, now_micros()],
            )
            .await?;
        if n == 0 {
            return Err(not_found(tenant, id));
        }
        Ok(())
    }

    /// Assigns every unassigned call of `number` (as calling or called party) to `user_id`.
    /// Returns how many calls were assigned.
    pub async fn assign_unassigned_calls(
        &self,
        tenant: &str,
        number: &str,
        user_id: Uuid,
    ) -> Result<u64> {
        self.exec(
            "UPDATE recordings SET owner_user_id = $3, updated_at = $4 WHERE tenant = $1 \
             AND owner_user_id IS NULL AND (calling_number = $2 OR called_number = $2)",
            &args![tenant, number, user_id, now_micros()],
        )
        .await
    }
}

fn not_found(tenant: &str, id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "recording",
        tenant: tenant.to_owned(),
        id: id.to_string(),
    }
}
