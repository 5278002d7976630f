//! Recording rows and the closed vocabularies of their fields.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DbError, Result};

/// Declares a string-backed enum with its database spelling and a parser that names bad values.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::db::DbError;
            fn from_str(s: &str) -> $crate::db::Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::db::DbError::Invalid {
                        field: stringify!($name),
                        reason: format!("unknown value {other:?}"),
                    }),
                }
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// Direction seen from the recorded (targeted) user.
    Direction {
        Inbound => "inbound",
        Outbound => "outbound",
        Internal => "internal",
        Conference => "conference",
    }
);

text_enum!(
    /// Call type (compliance-recorder F-72).
    CallType {
        Unknown => "unknown",
        InternalP2p => "internal_p2p",
        ExternalP2p => "external_p2p",
        PstnP2p => "pstn_p2p",
        InternalMeeting => "internal_meeting",
        ExternalMeeting => "external_meeting",
        InternalMeetingExternalParticipants => "internal_meeting_external_participants",
        Queue => "queue",
    }
);

text_enum!(
    /// Why the call ended (compliance-recorder F-61).
    ReleaseCause {
        Normal => "normal",
        Failure => "failure",
        Missed => "missed",
        Abandoned => "abandoned",
        Transferred => "transferred",
    }
);

text_enum!(
    /// Lifecycle of a recording row.
    RecordingStatus {
        Recording => "recording",
        Pending => "pending",
        Available => "available",
        Incomplete => "incomplete",
        Deleted => "deleted",
    }
);

text_enum!(
    /// What a requested deletion removes (compliance-recorder F-80).
    DeleteMode {
        MediaOnly => "media_only",
        All => "all",
    }
);

pub(crate) fn parse<T: std::str::FromStr<Err = DbError>>(
    column: &'static str,
    value: String,
) -> Result<T> {
    value
        .parse()
        .map_err(|_| DbError::Corrupt { column, value })
}

/// Who a call reaches besides its owner: the groups captured on it (OwnAndGroups) and, on a
/// meeting, the users who attended it with the part each attended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    pub groups: Vec<Uuid>,
    pub attendees: Vec<Attendance>,
}

impl Audience {
    /// The part of the meeting `user` attended, if they attended it.
    pub fn attendance(&self, user: Uuid) -> Option<&Attendance> {
        self.attendees.iter().find(|a| a.user_id == user)
    }
}

/// A user's attendance of a meeting, in ms from the recording's start; `left_ms` is `None`
/// when they stayed to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendance {
    pub user_id: Uuid,
    pub joined_ms: i64,
    pub left_ms: Option<i64>,
}

/// A party of a call: number (or SIP URI user part) and display name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Party {
    pub number: String,
    pub name: String,
    /// A participant who joined after the recording started: when, in ms from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_ms: Option<i64>,
    /// A participant who left before the recording ended: when, in ms from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_ms: Option<i64>,
}

impl Party {
    pub fn new(number: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            number: number.into(),
            name: name.into(),
            joined_ms: None,
            left_ms: None,
        }
    }
}

/// What the recorder knows when a call starts; the row is created with status `recording`.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub id: Uuid,
    pub call_id: String,
    pub sip_call_id: String,
    pub session_id: String,
    pub segment: i64,
    pub start_time: i64,
    pub answer_time: Option<i64>,
    pub direction: Direction,
    pub call_type: CallType,
    pub calling: Party,
    pub called: Party,
    pub answering: Party,
    pub on_behalf_of: String,
    pub transferred_by: String,
    pub transferred_to: String,
    pub queue_name: String,
    pub participants: Vec<Party>,
    /// The user the call is recorded for; `None` = not assigned to a user.
    pub owner_user_id: Option<Uuid>,
    /// The extension, hunt group, line or account code that triggered the recording.
    pub owner_item: String,
    /// The owner's groups at call time: they decide OwnAndGroups visibility for this row.
    pub groups: Vec<Uuid>,
    pub agents: Vec<String>,
    pub skills: Vec<String>,
    pub profile: String,
    pub storage_target: String,
    pub key_id: Option<String>,
    pub expires_at: Option<i64>,
    /// Vendor metadata (SIPREC rs-metadata rendered as JSON), kept verbatim.
    pub raw_metadata: Option<String>,
}

impl NewRecording {
    /// A recording with the required fields and everything else empty.
    pub fn new(call_id: impl Into<String>, start_time: i64, direction: Direction) -> Self {
        Self {
            id: Uuid::new_v4(),
            call_id: call_id.into(),
            sip_call_id: String::new(),
            session_id: String::new(),
            segment: 0,
            start_time,
            answer_time: None,
            direction,
            call_type: CallType::Unknown,
            calling: Party::default(),
            called: Party::default(),
            answering: Party::default(),
            on_behalf_of: String::new(),
            transferred_by: String::new(),
            transferred_to: String::new(),
            queue_name: String::new(),
            participants: Vec::new(),
            owner_user_id: None,
            owner_item: String::new(),
            groups: Vec::new(),
            agents: Vec::new(),
            skills: Vec::new(),
            profile: String::new(),
            storage_target: String::new(),
            key_id: None,
            expires_at: None,
            raw_metadata: None,
        }
    }
}

/// What the recorder knows once the object is committed to storage.
#[derive(Debug, Clone)]
pub struct FinishRecording {
    /// `Available`, or `Incomplete` for recordings recovered from a crash or cut short.
    pub status: RecordingStatus,
    pub end_time: i64,
    pub answer_time: Option<i64>,
    pub release_cause: Option<ReleaseCause>,
    pub answering: Option<Party>,
    pub object_key: String,
    pub size_bytes: i64,
    pub codec: String,
    pub channels: i64,
    /// Hex SHA-256 of the plaintext media.
    pub sha256: String,
    pub metadata_digest: String,
    pub signature: String,
    pub key_id: String,
    /// Why the recording stopped when its call did not end normally (the recorder ended a
    /// dead session: `media-timeout`, `session-timer-expired`, `peer-unreachable`).
    pub stop_reason: Option<String>,
}

/// A copy of a recording made by a Connector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCopy {
    pub connector: String,
    pub target: String,
    pub object_key: String,
    pub sha256: String,
    pub archived_at: i64,
}

/// A recording row as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recording {
    pub tenant: String,
    pub id: Uuid,
    pub call_id: String,
    pub sip_call_id: String,
    pub session_id: String,
    pub segment: i64,
    pub start_time: i64,
    pub answer_time: Option<i64>,
    pub end_time: Option<i64>,
    /// Answer to release, milliseconds; 0 for unanswered calls.
    pub duration_ms: i64,
    pub wait_ms: Option<i64>,
    pub direction: Direction,
    pub call_type: CallType,
    pub calling: Party,
    pub called: Party,
    pub answering: Party,
    pub on_behalf_of: String,
    pub transferred_by: String,
    pub transferred_to: String,
    pub queue_name: String,
    pub participants: Vec<Party>,
    pub release_cause: Option<ReleaseCause>,
    /// Why the recording stopped when that was not the call's end, and when.
    pub stop_reason: Option<String>,
    pub owner_user_id: Option<Uuid>,
    pub owner_item: String,
    pub agents: Vec<String>,
    pub skills: Vec<String>,
    pub profile: String,
    pub storage_target: String,
    pub object_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub codec: String,
    pub channels: i64,
    pub sha256: Option<String>,
    pub metadata_digest: Option<String>,
    pub signature: Option<String>,
    pub key_id: Option<String>,
    pub expires_at: Option<i64>,
    /// Hold set on this recording itself.
    pub legal_hold: bool,
    /// This recording's hold or its owner's (a held user's calls never expire).
    pub legal_hold_effective: bool,
    /// A recording assurance test call: hidden from the normal list and search.
    #[serde(default)]
    pub assurance: bool,
    pub delete_mode: Option<DeleteMode>,
    pub delete_requested_by: Option<String>,
    pub delete_authorised_by: Option<String>,
    pub delete_note: Option<String>,
    pub delete_requested_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub status: RecordingStatus,
    pub raw_metadata: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}
