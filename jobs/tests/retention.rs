//! The retention job against real databases and a real filesystem storage target: every test
//! runs once on a fresh SQLite file and once on a fresh PostgreSQL database
//! (CALLVAULT_TEST_DATABASE_URL, a superuser URL; `source scripts/services.sh && start_postgres`
//! provides one). PostgreSQL tests never skip.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use callvault_jobs::retention::{
    DELETE_ACTION, EXPIRE_ACTION, FailedStep, RetentionError, RetentionOptions, SYSTEM_ACTOR,
    Target, run_retention,
};
use callvault_store::db::{
    ArchiveCopy, AuditEntry, AuditFilter, Db, DeleteMode, Direction, FinishRecording, NewRecording,
    NewUser, PURGE_ACTION, RecordingStatus, ReleaseCause, now_micros,
};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};
use uuid::Uuid;

const T: &str = "bank";
const P: &str = "sales";
const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;
const T0: i64 = 1_750_000_000 * SEC;
/// The run's clock: 30 days after the calls.
const NOW: i64 = T0 + 30 * DAY;

use callvault_store::db::testing::TestDb as Fixture;

callvault_store::on_both_backends!(
    expires_only_unheld_recordings_of_the_profile,
    deferred_deletions_follow_the_request_and_keep_archive_copies,
    run_killed_after_deleting_media_completes,
    storage_failure_leaves_rows_for_the_next_run,
    media_on_another_target_is_left_alone,
    audit_purge_is_audited_and_chain_verifies,
);

/// A filesystem storage target in its own temp directory.
struct Media {
    dir: tempfile::TempDir,
    storage: Storage,
}

impl Media {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("media")).expect("media dir");
        let storage = open_fs(&dir.path().join("media"));
        Media { dir, storage }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// The target every test call's media is stored on.
    fn target(&self) -> Target<'_> {
        Target {
            name: "primary",
            storage: &self.storage,
        }
    }

    async fn exists(&self, key: &str) -> bool {
        match self.storage.get(key).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => panic!("get {key}: {e}"),
        }
    }
}

fn open_fs(path: &Path) -> Storage {
    let spec = serde_json::json!({"type": "filesystem", "path": path});
    let config = StorageConfig::from_spec(&spec).expect("spec parses");
    objstore::open(&config, &Credentials::none()).expect("target opens")
}

fn opts(batch_size: u32) -> RetentionOptions {
    RetentionOptions {
        batch_size,
        audit_retention_days: 365,
    }
}

fn key_of(id: Uuid) -> String {
    format!("{T}/2025/06/{id}.cvr")
}

/// A finished call of `profile` expiring at `expires_at`, its media stored in `media`.
async fn call(db: &Db, media: &Media, profile: &str, expires_at: i64, owner: Option<Uuid>) -> Uuid {
    let mut rec = NewRecording::new(format!("call-{}", Uuid::new_v4()), T0, Direction::Inbound);
    rec.profile = profile.to_owned();
    rec.storage_target = "primary".to_owned();
    rec.expires_at = Some(expires_at);
    rec.owner_user_id = owner;
    db.create_recording(T, &rec).await.expect("create");
    let key = key_of(rec.id);
    db.finish_recording(
        T,
        rec.id,
        &FinishRecording {
            status: RecordingStatus::Available,
            end_time: T0 + 60 * SEC,
            answer_time: Some(T0),
            release_cause: Some(ReleaseCause::Normal),
            answering: None,
            object_key: key.clone(),
            size_bytes: 5,
            codec: "opus".into(),
            channels: 2,
            sha256: "ab".repeat(32),
            metadata_digest: "cd".repeat(32),
            signature: "sig".into(),
            key_id: "k1".into(),
            stop_reason: None,
        },
    )
    .await
    .expect("finish");
    media
        .storage
        .put(&key, Bytes::from_static(b"audio"))
        .await
        .expect("put media");
    rec.id
}

async fn status(db: &Db, id: Uuid) -> Option<RecordingStatus> {
    db.recording(T, id).await.expect("get").map(|r| r.status)
}

async fn audit_for(db: &Db, id: Uuid) -> Vec<AuditEntry> {
    let f = AuditFilter {
        item_id: Some(id.to_string()),
        ..AuditFilter::default()
    };
    db.query_audit(T, &f, 100).await.expect("audit")
}

async fn audit_count(db: &Db) -> usize {
    db.query_audit(T, &AuditFilter::default(), 10_000)
        .await
        .expect("audit")
        .len()
}

fn details(e: &AuditEntry) -> serde_json::Value {
    serde_json::from_str(&e.details).expect("details are JSON")
}

async fn expires_only_unheld_recordings_of_the_profile(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let held_user = db
        .create_user(T, &NewUser::local("held", "Held User"))
        .await
        .expect("user");
    db.set_user_legal_hold(T, held_user.id, true)
        .await
        .expect("hold user");
    let mut expired = Vec::new();
    for _ in 0..5 {
        expired.push(call(db, &media, P, T0 + DAY, None).await);
    }
    let fresh = call(db, &media, P, NOW + DAY, None).await;
    let owner_held = call(db, &media, P, T0 + DAY, Some(held_user.id)).await;
    let rec_held = call(db, &media, P, T0 + 2 * DAY, None).await;
    db.set_recording_hold(T, rec_held, true)
        .await
        .expect("hold recording");
    let other_profile = call(db, &media, "support", T0 + DAY, None).await;

    // Batches of 2: the held and other-profile rows interleave with the expired ones.
    let summary = run_retention(db, media.target(), T, P, NOW, opts(2))
        .await
        .expect("run");
    assert_eq!(summary.expired, 5, "{summary:?}");
    assert!(summary.failures.is_empty(), "{summary:?}");
    assert_eq!(summary.deferred_deleted, 0);
    // The profile's status reports what the holds keep and how far back its media goes.
    assert_eq!(summary.held_past_expiry, 2, "{summary:?}");
    assert_eq!(summary.oldest_start_time, Some(T0));
    for id in &expired {
        assert_eq!(status(db, *id).await, Some(RecordingStatus::Deleted));
        assert!(!media.exists(&key_of(*id)).await, "media of {id} is gone");
        let audit = audit_for(db, *id).await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0].actor, SYSTEM_ACTOR);
        assert_eq!(audit[0].action, EXPIRE_ACTION);
        assert_eq!(details(&audit[0])["object_key"], key_of(*id));
    }
    for id in [fresh, owner_held, rec_held, other_profile] {
        assert_eq!(status(db, id).await, Some(RecordingStatus::Available));
        assert!(media.exists(&key_of(id)).await, "media of {id} is kept");
        assert!(audit_for(db, id).await.is_empty());
    }

    // A second run finds nothing and writes nothing.
    let before = audit_count(db).await;
    let again = run_retention(db, media.target(), T, P, NOW, opts(2))
        .await
        .expect("second run");
    assert_eq!(
        (again.expired, again.failures.len(), again.audit_purged),
        (0, 0, 0)
    );
    assert_eq!(audit_count(db).await, before);

    // When the user's hold ends, the call already past its expiry goes at the next run.
    db.set_user_legal_hold(T, held_user.id, false)
        .await
        .expect("release");
    let released = run_retention(db, media.target(), T, P, NOW, opts(2))
        .await
        .expect("third run");
    assert_eq!(released.expired, 1);
    assert_eq!(released.held_past_expiry, 1, "{released:?}");
    assert_eq!(status(db, owner_held).await, Some(RecordingStatus::Deleted));
    assert!(!media.exists(&key_of(owner_held)).await);
    assert_eq!(status(db, rec_held).await, Some(RecordingStatus::Available));
}

async fn deferred_deletions_follow_the_request_and_keep_archive_copies(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let archive = Media::new();
    // None of these has expired: only the requests remove them.
    let media_only = call(db, &media, P, NOW + DAY, None).await;
    let everything = call(db, &media, P, NOW + DAY, None).await;
    let held_later = call(db, &media, P, NOW + DAY, None).await;
    let other_profile = call(db, &media, "support", NOW + DAY, None).await;
    archive
        .storage
        .put("copies/everything.cvr", Bytes::from_static(b"audio"))
        .await
        .expect("archive copy");
    db.mark_archived(
        T,
        everything,
        &ArchiveCopy {
            connector: "offsite".into(),
            target: "archive".into(),
            object_key: "copies/everything.cvr".into(),
            sha256: "ab".repeat(32),
            archived_at: T0 + DAY,
        },
    )
    .await
    .expect("archived");
    let req = |ids: Vec<Uuid>, mode| async move {
        db.request_deletion(T, &ids, mode, "alice", "bob", "customer asked")
            .await
            .expect("request")
    };
    req(
        vec![media_only, held_later, other_profile],
        DeleteMode::MediaOnly,
    )
    .await;
    req(vec![everything], DeleteMode::All).await;
    db.set_recording_hold(T, held_later, true)
        .await
        .expect("hold after request");

    let summary = run_retention(db, media.target(), T, P, NOW, opts(1))
        .await
        .expect("run");
    assert_eq!(summary.deferred_deleted, 2, "{summary:?}");
    assert_eq!(summary.expired, 0);
    assert!(summary.failures.is_empty(), "{summary:?}");

    // Media only: the catalogue entry stays, the media is gone.
    assert_eq!(status(db, media_only).await, Some(RecordingStatus::Deleted));
    assert!(!media.exists(&key_of(media_only)).await);
    // Metadata and media: the row is gone; the archive copy is kept and named in the audit.
    assert_eq!(status(db, everything).await, None);
    assert!(!media.exists(&key_of(everything)).await);
    assert!(archive.exists("copies/everything.cvr").await);
    let audit = audit_for(db, everything).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].action, DELETE_ACTION);
    let d = details(&audit[0]);
    assert_eq!(d["mode"], "all");
    assert_eq!(d["requested_by"], "alice");
    assert_eq!(d["authorised_by"], "bob");
    assert_eq!(
        d["archive_copies_kept"][0]["object_key"],
        "copies/everything.cvr"
    );
    assert_eq!(audit_for(db, media_only).await[0].action, DELETE_ACTION);

    // Held after the request, and another profile's request: untouched.
    for id in [held_later, other_profile] {
        assert_eq!(status(db, id).await, Some(RecordingStatus::Available));
        assert!(media.exists(&key_of(id)).await);
    }
    let again = run_retention(db, media.target(), T, P, NOW, opts(1))
        .await
        .expect("second run");
    assert_eq!((again.deferred_deleted, again.expired), (0, 0));
}

async fn run_killed_after_deleting_media_completes(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let a = call(db, &media, P, T0 + DAY, None).await;
    let b = call(db, &media, P, T0 + DAY, None).await;
    // What a run killed between the two steps leaves: media gone, rows still available.
    for id in [a, b] {
        media.storage.delete(&key_of(id)).await.expect("delete");
    }
    let summary = run_retention(db, media.target(), T, P, NOW, opts(10))
        .await
        .expect("run");
    assert_eq!(summary.expired, 2, "{summary:?}");
    assert!(summary.failures.is_empty(), "{summary:?}");
    for id in [a, b] {
        assert_eq!(status(db, id).await, Some(RecordingStatus::Deleted));
        assert_eq!(audit_for(db, id).await.len(), 1);
    }
}

/// A profile moved to a new storage target: its older recordings' media is still on the old
/// one. A run given the new target must neither report them removed nor mark their rows
/// deleted, since the media would survive unaccounted for.
async fn media_on_another_target_is_left_alone(f: Fixture) {
    let db = &f.db;
    let old = Media::new();
    let id = call(db, &old, P, T0 + DAY, None).await;
    let new = Media::new();
    let moved = Target {
        name: "secondary",
        storage: &new.storage,
    };

    let summary = run_retention(db, moved, T, P, NOW, opts(10))
        .await
        .expect("run");
    assert_eq!(summary.expired, 0, "{summary:?}");
    let failed: Vec<_> = summary
        .failures
        .iter()
        .map(|f| (f.recording_id, f.step))
        .collect();
    assert_eq!(failed, vec![(id, FailedStep::WrongTarget)]);
    assert_eq!(status(db, id).await, Some(RecordingStatus::Available));
    assert!(old.exists(&key_of(id)).await, "the media is untouched");
    assert!(
        audit_for(db, id).await.is_empty(),
        "nothing removed, nothing audited"
    );

    // Run against the target the media is really on: it goes.
    let right = run_retention(db, old.target(), T, P, NOW, opts(10))
        .await
        .expect("run");
    assert_eq!(right.expired, 1, "{right:?}");
    assert_eq!(status(db, id).await, Some(RecordingStatus::Deleted));
    assert!(!old.exists(&key_of(id)).await);
}

async fn storage_failure_leaves_rows_for_the_next_run(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let a = call(db, &media, P, T0 + DAY, None).await;
    let b = call(db, &media, P, T0 + 2 * DAY, None).await;
    // The target's directory is replaced by a regular file: every delete fails.
    let moved = media.dir.path().join("media.moved");
    std::fs::rename(media.root(), &moved).expect("move media away");
    std::fs::write(media.root(), b"not a directory").expect("block");

    let summary = run_retention(db, media.target(), T, P, NOW, opts(1))
        .await
        .expect("a storage outage does not fail the run");
    assert_eq!(summary.expired, 0, "{summary:?}");
    let mut failed: Vec<_> = summary
        .failures
        .iter()
        .map(|f| (f.recording_id, f.step))
        .collect();
    failed.sort_by_key(|f| f.0);
    let mut want = vec![(a, FailedStep::DeleteMedia), (b, FailedStep::DeleteMedia)];
    want.sort_by_key(|f| f.0);
    assert_eq!(failed, want);
    for id in [a, b] {
        let rec = db.recording(T, id).await.expect("get").expect("row kept");
        assert_eq!(rec.status, RecordingStatus::Available);
        assert_eq!(rec.object_key, Some(key_of(id)));
        assert!(
            audit_for(db, id).await.is_empty(),
            "nothing removed, nothing audited"
        );
    }

    // The storage is back: the next run removes both.
    std::fs::remove_file(media.root()).expect("unblock");
    std::fs::rename(&moved, media.root()).expect("move media back");
    let retry = run_retention(db, media.target(), T, P, NOW, opts(1))
        .await
        .expect("retry");
    assert_eq!(retry.expired, 2, "{retry:?}");
    assert!(retry.failures.is_empty());
    for id in [a, b] {
        assert_eq!(status(db, id).await, Some(RecordingStatus::Deleted));
        assert!(!media.exists(&key_of(id)).await);
    }
}

async fn audit_purge_is_audited_and_chain_verifies(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let ids = [
        call(db, &media, P, T0 + DAY, None).await,
        call(db, &media, P, T0 + DAY, None).await,
    ];
    let first = run_retention(db, media.target(), T, P, NOW, opts(10))
        .await
        .expect("run");
    assert_eq!(first.expired, 2);
    assert_eq!(first.audit_purged, 0, "fresh entries are kept");
    let entries = audit_count(db).await;
    assert_eq!(entries, 2);

    // 400 days on, with entries kept 365 days: every entry so far goes.
    let later = now_micros() + 400 * DAY;
    let purge = run_retention(db, media.target(), T, P, later, opts(10))
        .await
        .expect("purge run");
    assert_eq!(purge.audit_purged, entries as u64);
    for id in ids {
        assert!(audit_for(db, id).await.is_empty());
    }
    let f = AuditFilter {
        action: Some(PURGE_ACTION.into()),
        ..AuditFilter::default()
    };
    let purges = db.query_audit(T, &f, 10).await.expect("audit");
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0].actor, SYSTEM_ACTOR);
    let check = db.verify_audit_chain(T).await.expect("verify");
    assert!(check.is_intact(), "{check:?}");
    assert_eq!(check.anchor_seq, 2);
}

#[tokio::test]
async fn out_of_range_options_are_refused_before_anything_is_removed() {
    let f = Fixture::sqlite().await;
    let media = Media::new();
    let id = call(&f.db, &media, P, T0 + DAY, None).await;
    for (batch_size, audit_retention_days) in [(0, 365), (10, 0), (10, 3651)] {
        let o = RetentionOptions {
            batch_size,
            audit_retention_days,
        };
        let r = run_retention(&f.db, media.target(), T, P, NOW, o).await;
        assert!(
            matches!(r, Err(RetentionError::InvalidOption { .. })),
            "{r:?}"
        );
    }
    assert_eq!(status(&f.db, id).await, Some(RecordingStatus::Available));
    assert!(media.exists(&key_of(id)).await);
}
