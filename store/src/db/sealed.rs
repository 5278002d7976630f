//! What a recording's seal covers of its row: the metadata digest (recording format §5).
//!
//! Version 1 digested the SIPREC metadata alone, so the row's parties, times, direction and
//! owner could be edited without breaking the seal. Version 2 digests what users see: start,
//! answer and end times, duration, direction, the calling, called and answering parties,
//! every participant, the owner, and the SIPREC metadata. The version is not stored: a row
//! whose digest is the version 2 digest of its fields is version 2; one whose digest is the
//! SHA-256 of its metadata alone was sealed before version 2. Since the seal covers the
//! digest, a row cannot be moved from one version to the other without breaking it.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::audit::put;
use super::model::{Direction, NewRecording, Party, Recording};

/// What a row's digest was found to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SealedFields {
    /// Version 2: every field users see, as they are now.
    CallDetails,
    /// Version 2, sealed while unassigned; assigned to its owner afterwards (an audited
    /// portal action). Every other field is as sealed.
    CallDetailsAssignedLater,
    /// Version 1 (recorded before call details were sealed): only the SIPREC metadata.
    MetadataOnly,
}

impl SealedFields {
    /// A sentence for the integrity screen and the CLI.
    pub fn describe(self) -> &'static str {
        match self {
            SealedFields::CallDetails => {
                "the audio and the call's details (parties, times, duration, direction, owner)"
            }
            SealedFields::CallDetailsAssignedLater => {
                "the audio and the call's details (parties, times, duration, direction); \
                 the owner was assigned after recording"
            }
            SealedFields::MetadataOnly => {
                "the audio and the SIPREC metadata only: recorded before call details were \
                 sealed, so edits to its parties, times or owner cannot be detected"
            }
        }
    }
}

/// The version 1 digest: SHA-256 of the SIPREC metadata as stored.
pub fn raw_metadata_digest(raw_metadata: &str) -> [u8; 32] {
    Sha256::digest(raw_metadata.as_bytes()).into()
}

/// The sealed fields of a row, borrowed.
struct Fields<'a> {
    start_time: i64,
    answer_time: Option<i64>,
    end_time: i64,
    duration_ms: i64,
    direction: Direction,
    calling: &'a Party,
    called: &'a Party,
    answering: &'a Party,
    participants: &'a [Party],
    owner: Option<Uuid>,
    raw_metadata: &'a str,
}

fn put_party(h: &mut Sha256, p: &Party) {
    put(h, p.number.as_bytes());
    put(h, p.name.as_bytes());
}

fn put_opt_i64(h: &mut Sha256, v: Option<i64>) {
    match v {
        None => h.update([0u8]),
        Some(v) => {
            h.update([1u8]);
            h.update(v.to_be_bytes());
        }
    }
}

/// The version 2 digest: a version tag, then every field, length-prefixed, in a fixed order.
fn digest(f: &Fields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    put(&mut h, b"callvault-row-v2");
    h.update(f.start_time.to_be_bytes());
    put_opt_i64(&mut h, f.answer_time);
    h.update(f.end_time.to_be_bytes());
    h.update(f.duration_ms.to_be_bytes());
    put(&mut h, f.direction.as_str().as_bytes());
    put_party(&mut h, f.calling);
    put_party(&mut h, f.called);
    put_party(&mut h, f.answering);
    h.update((f.participants.len() as u64).to_be_bytes());
    for p in f.participants {
        put_party(&mut h, p);
    }
    match f.owner {
        None => h.update([0u8]),
        Some(u) => {
            h.update([1u8]);
            h.update(u.as_bytes());
        }
    }
    put(&mut h, &raw_metadata_digest(f.raw_metadata));
    // A meeting's attendance decides what each attendee hears, so it is sealed too: appended
    // only when a participant joined late or left early, which leaves every earlier row's
    // digest as it was.
    if f.participants
        .iter()
        .any(|p| p.joined_ms.is_some() || p.left_ms.is_some())
    {
        put(&mut h, b"attendance");
        for p in f.participants {
            put_opt_i64(&mut h, p.joined_ms);
            put_opt_i64(&mut h, p.left_ms);
        }
    }
    h.finalize().into()
}

/// Answer to release in milliseconds, as the database computes it when a recording is
/// finished (0 when unanswered or when the end is not after the answer).
pub(crate) fn duration_ms(answer_time: Option<i64>, end_time: i64) -> i64 {
    match answer_time {
        Some(a) if end_time > a => (end_time - a) / 1000,
        _ => 0,
    }
}

impl NewRecording {
    /// The metadata digest to seal for this row once it ends at `end_time` (the recorder's
    /// finish, with the answer time it created the row with).
    pub fn sealed_digest(&self, end_time: i64) -> [u8; 32] {
        digest(&Fields {
            start_time: self.start_time,
            answer_time: self.answer_time,
            end_time,
            duration_ms: duration_ms(self.answer_time, end_time),
            direction: self.direction,
            calling: &self.calling,
            called: &self.called,
            answering: &self.answering,
            participants: &self.participants,
            owner: self.owner_user_id,
            raw_metadata: self.raw_metadata.as_deref().unwrap_or_default(),
        })
    }
}

impl Recording {
    fn fields(&self, owner: Option<Uuid>) -> Fields<'_> {
        Fields {
            start_time: self.start_time,
            answer_time: self.answer_time,
            end_time: self.end_time.unwrap_or(self.start_time),
            duration_ms: self.duration_ms,
            direction: self.direction,
            calling: &self.calling,
            called: &self.called,
            answering: &self.answering,
            participants: &self.participants,
            owner,
            raw_metadata: self.raw_metadata.as_deref().unwrap_or_default(),
        }
    }

    /// What `metadata_sha256` (the digest the seal covers) covers of this row as it is now;
    /// `None` when it matches no version: a sealed field was edited.
    pub fn sealed_fields(&self, metadata_sha256: &[u8; 32]) -> Option<SealedFields> {
        if digest(&self.fields(self.owner_user_id)) == *metadata_sha256 {
            Some(SealedFields::CallDetails)
        } else if self.owner_user_id.is_some() && digest(&self.fields(None)) == *metadata_sha256 {
            Some(SealedFields::CallDetailsAssignedLater)
        } else if raw_metadata_digest(self.raw_metadata.as_deref().unwrap_or_default())
            == *metadata_sha256
        {
            Some(SealedFields::MetadataOnly)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{CallType, RecordingStatus};

    /// A new recording and its row as committed at `end`.
    fn committed(end: i64) -> (NewRecording, Recording) {
        let mut n = NewRecording::new("c", 1_000_000, Direction::Inbound);
        n.answer_time = Some(1_000_000);
        n.calling = Party::new("+15550100", "Alice");
        n.called = Party::new("2001", "Agent");
        n.participants = vec![n.calling.clone(), n.called.clone()];
        n.owner_user_id = Some(Uuid::from_u128(7));
        n.raw_metadata = Some("{\"x\":1}".into());
        let r = Recording {
            tenant: "t".into(),
            id: n.id,
            call_id: n.call_id.clone(),
            sip_call_id: String::new(),
            session_id: String::new(),
            segment: 0,
            start_time: n.start_time,
            answer_time: n.answer_time,
            end_time: Some(end),
            duration_ms: duration_ms(n.answer_time, end),
            wait_ms: Some(0),
            direction: n.direction,
            call_type: CallType::Unknown,
            calling: n.calling.clone(),
            called: n.called.clone(),
            answering: Party::default(),
            on_behalf_of: String::new(),
            transferred_by: String::new(),
            transferred_to: String::new(),
            queue_name: String::new(),
            participants: n.participants.clone(),
            release_cause: None,
            stop_reason: None,
            owner_user_id: n.owner_user_id,
            owner_item: String::new(),
            agents: vec![],
            skills: vec![],
            profile: String::new(),
            storage_target: String::new(),
            object_key: None,
            size_bytes: None,
            codec: String::new(),
            channels: 2,
            sha256: None,
            metadata_digest: None,
            signature: None,
            key_id: None,
            expires_at: None,
            legal_hold: false,
            legal_hold_effective: false,
            assurance: false,
            delete_mode: None,
            delete_requested_by: None,
            delete_authorised_by: None,
            delete_note: None,
            delete_requested_at: None,
            deleted_at: None,
            status: RecordingStatus::Available,
            raw_metadata: n.raw_metadata.clone(),
            created_at: 0,
            updated_at: 0,
        };
        (n, r)
    }

    #[test]
    fn every_field_users_see_is_sealed() {
        let end = 61_000_000;
        let (n, row) = committed(end);
        let d = n.sealed_digest(end);
        assert_eq!(row.sealed_fields(&d), Some(SealedFields::CallDetails));
        type Edit<'a> = Box<dyn Fn(&mut Recording) + 'a>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "calling number",
                Box::new(|r| r.calling.number = "+15550199".into()),
            ),
            (
                "calling name",
                Box::new(|r| r.calling.name = "Mallory".into()),
            ),
            (
                "called number",
                Box::new(|r| r.called.number = "2002".into()),
            ),
            ("answering", Box::new(|r| r.answering.name = "X".into())),
            (
                "participant",
                Box::new(|r| r.participants[1].name = "Eve".into()),
            ),
            (
                "participant removed",
                Box::new(|r| drop(r.participants.pop())),
            ),
            (
                "participant's attendance",
                Box::new(|r| r.participants[1].joined_ms = Some(0)),
            ),
            ("start", Box::new(|r| r.start_time += 1)),
            ("answer", Box::new(|r| r.answer_time = None)),
            ("end", Box::new(|r| r.end_time = Some(end + 1_000_000))),
            ("duration", Box::new(|r| r.duration_ms += 1)),
            ("direction", Box::new(|r| r.direction = Direction::Outbound)),
            (
                "owner",
                Box::new(|r| r.owner_user_id = Some(Uuid::from_u128(8))),
            ),
            ("owner removed", Box::new(|r| r.owner_user_id = None)),
            ("metadata", Box::new(|r| r.raw_metadata = Some("{}".into()))),
        ];
        for (what, edit) in edits {
            let mut r = row.clone();
            edit(&mut r);
            assert_eq!(
                r.sealed_fields(&d),
                None,
                "editing the {what} went unnoticed"
            );
        }
    }

    #[test]
    fn later_assignment_and_version_1_rows_are_told_apart() {
        let end = 5_000_000;
        let (mut n, mut row) = committed(end);
        n.owner_user_id = None;
        let d = n.sealed_digest(end);
        assert_eq!(
            row.sealed_fields(&d),
            Some(SealedFields::CallDetailsAssignedLater)
        );
        // A row sealed before version 2: its digest covers the SIPREC metadata alone.
        let v1 = raw_metadata_digest(row.raw_metadata.as_deref().unwrap_or_default());
        row.calling.number = "edited".into();
        assert_eq!(row.sealed_fields(&v1), Some(SealedFields::MetadataOnly));
        assert_eq!(row.sealed_fields(&[0u8; 32]), None);
    }
}
