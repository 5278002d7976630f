//! The recorder's database calls, on SQLite and PostgreSQL: metadata replaced while a call is
//! recorded, and crash-recovered recordings committed `incomplete` without a seal.

use callvault_store::db::testing::TestDb as Fixture;
use callvault_store::db::{
    DbError, Direction, NewRecording, Party, RecordingStatus, RecoveredRecording, now_micros,
};

callvault_store::on_both_backends!(metadata_changes_only_while_recording, recovered_commit);

const T: &str = "bank";

async fn metadata_changes_only_while_recording(f: Fixture) {
    let db = &f.db;
    let mut rec = NewRecording::new("call-1", now_micros(), Direction::Inbound);
    rec.raw_metadata = Some("{}".into());
    let row = db.create_recording(T, &rec).await.expect("create");
    let parties = [
        Party::new("+4420", "Alice Agent"),
        Party::new("1001", "Bob"),
    ];
    db.update_recording_metadata(T, row.id, &parties, r#"{"participants":2}"#)
        .await
        .expect("update while recording");
    let got = db.recording(T, row.id).await.expect("read").expect("row");
    assert_eq!(got.participants, parties);
    assert_eq!(got.raw_metadata.as_deref(), Some(r#"{"participants":2}"#));
    // Another tenant's id is never touched.
    let other = db
        .update_recording_metadata("other", row.id, &parties, "{}")
        .await;
    assert!(matches!(other, Err(DbError::Conflict(_))), "{other:?}");

    let fin = recovered("k1");
    db.commit_recovered_recording(T, row.id, &fin)
        .await
        .expect("commit");
    let late = db.update_recording_metadata(T, row.id, &[], "{}").await;
    assert!(matches!(late, Err(DbError::Conflict(_))), "{late:?}");
}

fn recovered(key: &str) -> RecoveredRecording {
    RecoveredRecording {
        end_time: now_micros(),
        object_key: key.into(),
        size_bytes: 4242,
        codec: "opus".into(),
        channels: 2,
        metadata_digest: "ab".repeat(32),
        key_id: "cd".repeat(32),
        stop_reason: Some("recovered after crash at 2026-01-01T00:00:00Z".into()),
    }
}

async fn recovered_commit(f: Fixture) {
    let db = &f.db;
    let mut rec = NewRecording::new("call-2", now_micros() - 5_000_000, Direction::Outbound);
    rec.answer_time = Some(rec.start_time);
    let row = db.create_recording(T, &rec).await.expect("create");
    let got = db
        .commit_recovered_recording(T, row.id, &recovered("2026/01/01/x.cvr"))
        .await
        .expect("commit");
    assert_eq!(got.status, RecordingStatus::Incomplete);
    assert_eq!(got.object_key.as_deref(), Some("2026/01/01/x.cvr"));
    assert_eq!(got.size_bytes, Some(4242));
    assert_eq!(got.sha256, None, "no digest without the private key");
    assert_eq!(got.signature, None, "no seal without the private key");
    assert!(got.duration_ms >= 4_900, "duration {}", got.duration_ms);
    assert_eq!(
        got.stop_reason.as_deref(),
        Some("recovered after crash at 2026-01-01T00:00:00Z")
    );
    assert_eq!(
        got.release_cause, None,
        "how the call itself ended is unknown"
    );
    assert_eq!(db.active_recordings(T).await.expect("active").len(), 0);
    // A second commit (a retry after the first one landed) is refused, not applied twice.
    let again = db
        .commit_recovered_recording(T, row.id, &recovered("other"))
        .await;
    assert!(matches!(again, Err(DbError::Conflict(_))), "{again:?}");
    let empty = db
        .commit_recovered_recording(T, row.id, &recovered(""))
        .await;
    assert!(matches!(empty, Err(DbError::Invalid { .. })), "{empty:?}");
}
