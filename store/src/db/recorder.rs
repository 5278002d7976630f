//! What the recorder needs beyond the common recording lifecycle: metadata that changed during
//! the call (re-INVITE/UPDATE), and commits of recordings recovered from a crashed recorder,
//! which the recorder cannot seal (it never holds the private key).

use uuid::Uuid;

use super::exec::args;
use super::model::{Party, Recording, RecordingStatus};
use super::recordings::participant_groups;
use super::{Db, DbError, Result, invalid, now_micros};

/// A recording recovered from a spool whose writer was killed: the media is a prefix of whole
/// encrypted chunks. Its plaintext digest and seal are left empty: only a private-key holder
/// can decrypt the prefix and compute them (see the recording format's crash recovery).
#[derive(Debug, Clone)]
pub struct RecoveredRecording {
    pub end_time: i64,
    pub object_key: String,
    pub size_bytes: i64,
    pub codec: String,
    pub channels: i64,
    pub metadata_digest: String,
    pub key_id: String,
    /// What happened and when (e.g. "recovered after crash at …").
    pub stop_reason: Option<String>,
}

impl Db {
    /// Replaces the participants and raw metadata of a recording that is still being recorded
    /// (a re-INVITE or UPDATE carried new rs-metadata). Finished rows are never changed.
    pub async fn update_recording_metadata(
        &self,
        tenant: &str,
        id: Uuid,
        participants: &[Party],
        raw_metadata: &str,
    ) -> Result<()> {
        let json = serde_json::to_string(participants)
            .map_err(|e| invalid("participants", e.to_string()))?;
        let norm = format!(
            "\n{}\n",
            participants
                .iter()
                .map(|p| format!("{} {}", p.name, p.number).to_lowercase())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let mut tx = self.begin().await?;
        let n = tx
            .exec(
                "UPDATE recordings SET participants = $3, participants_norm = $4, \
                 raw_metadata = $5, updated_at = $6 \
                 WHERE tenant = $1 AND id = $2 AND status = 'recording'",
                &args![tenant, id, json, norm, raw_metadata, now_micros()],
            )
            .await?;
        if n == 0 {
            return Err(DbError::Conflict(format!(
                "recording {id} is not being recorded in tenant {tenant}"
            )));
        }
        // A party who joined during the call brings their groups, as they are now; groups the
        // recording already has stay (whoever was on the call stays visible to their team).
        let (sql, params) = participant_groups(
            tenant,
            id,
            None,
            participants.iter().map(|p| p.number.as_str()),
        );
        tx.exec(&sql, &params).await?;
        super::recordings::record_attendees(&mut tx, tenant, id, participants).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Commits a recovered recording as `incomplete`, without plaintext digest or seal.
    pub async fn commit_recovered_recording(
        &self,
        tenant: &str,
        id: Uuid,
        rec: &RecoveredRecording,
    ) -> Result<Recording> {
        if rec.object_key.is_empty() {
            return Err(invalid("object_key", "must not be empty"));
        }
        let n = self
            .exec(
                "UPDATE recordings SET status = $3, end_time = $4, \
                 duration_ms = CASE WHEN answer_time IS NOT NULL AND $4 > answer_time \
                     THEN ($4 - answer_time) / 1000 ELSE 0 END, \
                 wait_ms = CASE WHEN answer_time IS NULL THEN NULL \
                     ELSE (answer_time - start_time) / 1000 END, \
                 release_cause = NULL, stop_reason = $12, object_key = $5, size_bytes = $6, codec = $7, \
                 channels = $8, sha256 = NULL, metadata_digest = $9, signature = NULL, \
                 key_id = $10, updated_at = $11 \
                 WHERE tenant = $1 AND id = $2 AND status IN ('recording', 'pending')",
                &args![
                    tenant,
                    id,
                    RecordingStatus::Incomplete.as_str(),
                    rec.end_time,
                    &rec.object_key,
                    rec.size_bytes,
                    &rec.codec,
                    rec.channels,
                    &rec.metadata_digest,
                    &rec.key_id,
                    now_micros(),
                    rec.stop_reason.as_deref(),
                ],
            )
            .await?;
        let row = self
            .recording(tenant, id)
            .await?
            .ok_or_else(|| DbError::NotFound {
                kind: "recording",
                tenant: tenant.to_owned(),
                id: id.to_string(),
            })?;
        if n == 0 {
            return Err(DbError::Conflict(format!(
                "recording {id} is {} and cannot be committed again",
                row.status
            )));
        }
        Ok(row)
    }
}
