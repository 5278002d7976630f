//! Space-based cleanup against real databases (SQLite and PostgreSQL, as in retention.rs) and a
//! real filesystem storage target whose files exceed the target's `maxUsedBytes`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use callvault_jobs::alarms::Alarms;
use callvault_jobs::retention::Target;
use callvault_jobs::space::{
    CLEANUP_ACTION, SYSTEM_ACTOR, SpaceJob, SpaceLimits, run_space_cleanup,
};
use callvault_store::db::testing::TestDb as Fixture;
use callvault_store::db::{
    AlarmSeverity, AuditFilter, Db, Direction, FinishRecording, NewRecording, NewUser,
    RecordingStatus, ReleaseCause,
};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};
use uuid::Uuid;

const T: &str = "bank";
const SEC: i64 = 1_000_000;
const DAY: i64 = 86_400 * SEC;
const T0: i64 = 1_750_000_000 * SEC;
/// Every recording's media is this big.
const SIZE: usize = 1000;

callvault_store::on_both_backends!(
    oldest_unheld_recordings_go_first_after_the_alarm,
    within_the_limit_nothing_is_deleted,
);

struct Media {
    _dir: tempfile::TempDir,
    root: PathBuf,
    storage: Storage,
}

impl Media {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("recordings");
        std::fs::create_dir(&root).expect("recordings dir");
        let spec = serde_json::json!({"type": "filesystem", "path": root});
        let config = StorageConfig::from_spec(&spec).expect("spec parses");
        let storage = objstore::open(&config, &Credentials::none()).expect("target opens");
        Media {
            _dir: dir,
            root,
            storage,
        }
    }

    fn file(&self, id: Uuid) -> PathBuf {
        self.root.join(key_of(id))
    }
}

fn key_of(id: Uuid) -> String {
    format!("{T}/2025/06/{id}.cvr")
}

/// A finished call started `days` days after T0 (profile retention far in the future), its
/// media stored on the target.
async fn call(db: &Db, media: &Media, days: i64, owner: Option<Uuid>) -> Uuid {
    let start = T0 + days * DAY;
    let mut rec = NewRecording::new(
        format!("call-{}", Uuid::new_v4()),
        start,
        Direction::Inbound,
    );
    rec.profile = "sales".to_owned();
    rec.storage_target = "primary".to_owned();
    rec.expires_at = Some(start + 3650 * DAY);
    rec.owner_user_id = owner;
    db.create_recording(T, &rec).await.expect("create");
    let key = key_of(rec.id);
    db.finish_recording(
        T,
        rec.id,
        &FinishRecording {
            status: RecordingStatus::Available,
            end_time: start + 60 * SEC,
            answer_time: Some(start),
            release_cause: Some(ReleaseCause::Normal),
            answering: None,
            object_key: key.clone(),
            size_bytes: SIZE as i64,
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
        .put(&key, Bytes::from(vec![7u8; SIZE]))
        .await
        .expect("put media");
    rec.id
}

async fn run(db: &Db, media: &Media, max_used_bytes: u64) -> callvault_jobs::space::SpaceSummary {
    let alarms = Alarms {
        db,
        tenant: T,
        mailer: None,
    };
    run_space_cleanup(&SpaceJob {
        db,
        tenant: T,
        target: Target {
            name: "primary",
            storage: &media.storage,
        },
        root: &media.root,
        limits: SpaceLimits {
            max_used_bytes: Some(max_used_bytes),
            min_free_percent: None,
        },
        batch_size: 2,
        alarms: &alarms,
    })
    .await
    .expect("cleanup runs")
}

fn exists(path: &Path) -> bool {
    path.try_exists().expect("stat")
}

async fn oldest_unheld_recordings_go_first_after_the_alarm(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let held_user = db
        .create_user(T, &NewUser::local("trader", "Trader"))
        .await
        .expect("user");
    db.set_user_legal_hold(T, held_user.id, true)
        .await
        .expect("hold");
    // Oldest first: a, then b (its owner on legal hold), then c, d, e; inserted out of order.
    let c = call(db, &media, 3, None).await;
    let a = call(db, &media, 1, None).await;
    let e = call(db, &media, 5, None).await;
    let b = call(db, &media, 2, Some(held_user.id)).await;
    let d = call(db, &media, 4, None).await;

    // 5000 bytes stored, 2500 allowed: 2500 must go, three unheld recordings of 1000 each.
    let summary = run(db, &media, 2500).await;
    assert_eq!(summary.before.used_bytes, 5 * SIZE as u64);
    assert_eq!(summary.to_free, 2500);
    assert_eq!(summary.removed, 3);
    assert_eq!(summary.freed, 3000);
    assert_eq!(summary.still_over, 0);
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(summary.after.used_bytes, 2 * SIZE as u64);

    for (id, gone) in [(a, true), (b, false), (c, true), (d, true), (e, false)] {
        assert_eq!(!exists(&media.file(id)), gone, "media of {id}");
        let rec = db.recording(T, id).await.expect("get").expect("row kept");
        assert_eq!(
            rec.status == RecordingStatus::Deleted,
            gone,
            "status of {id}: {:?}",
            rec.status
        );
    }

    // Each deletion audited, oldest first, by the cleanup's own actor.
    let entries = db
        .query_audit(
            T,
            &AuditFilter {
                action: Some(CLEANUP_ACTION.to_owned()),
                ..AuditFilter::default()
            },
            100,
        )
        .await
        .expect("audit");
    let mut audited: Vec<_> = entries.iter().collect();
    audited.sort_by_key(|e| e.seq);
    let ids: Vec<String> = audited.iter().map(|e| e.item_id.clone()).collect();
    assert_eq!(ids, [a.to_string(), c.to_string(), d.to_string()]);
    for entry in &audited {
        assert_eq!(entry.actor, SYSTEM_ACTOR);
        let details: serde_json::Value = serde_json::from_str(&entry.details).expect("JSON");
        assert_eq!(details["size_bytes"], SIZE);
        assert_eq!(details["storage_target"], "primary");
    }

    // The alarm was raised before the first deletion and cleared once space was freed.
    let alarms = db.list_alarms(T, true, 50).await.expect("alarms");
    let alarm = alarms
        .iter()
        .find(|a| a.alarm_type == "STORAGE_SPACE_LOW" && a.source == "primary")
        .unwrap_or_else(|| panic!("a space alarm: {alarms:?}"));
    assert_eq!(alarm.severity, AlarmSeverity::Major);
    assert!(
        alarm.message.contains("Will attempt to free 2500 bytes"),
        "{}",
        alarm.message
    );
    assert!(alarm.raised_at <= audited[0].time, "raised before deleting");
    assert!(alarm.cleared_at.is_some(), "cleared when within the limit");
    assert_eq!(summary.alarms.len(), 2, "raised, then cleared");
    assert!(summary.alarms[0].is_raise());

    // Only the held recording and the newest are left: a limit below them cannot be met, and
    // the held one is never touched.
    let summary = run(db, &media, 500).await;
    assert_eq!(summary.removed, 1, "the newest unheld one goes");
    assert!(!exists(&media.file(e)));
    assert!(exists(&media.file(b)), "legal hold wins over space");
    assert_eq!(summary.still_over, 500);
    let active = db.list_alarms(T, false, 50).await.expect("alarms");
    let critical = active
        .iter()
        .find(|a| a.alarm_type == "STORAGE_SPACE_LOW")
        .expect("still raised");
    assert_eq!(critical.severity, AlarmSeverity::Critical);
    assert!(
        critical.message.contains("under legal hold"),
        "{}",
        critical.message
    );
}

async fn within_the_limit_nothing_is_deleted(f: Fixture) {
    let db = &f.db;
    let media = Media::new();
    let a = call(db, &media, 1, None).await;
    let summary = run(db, &media, SIZE as u64).await;
    assert_eq!(summary.to_free, 0);
    assert_eq!(summary.removed, 0);
    assert!(exists(&media.file(a)));
    assert!(
        summary.alarms.is_empty(),
        "nothing raised, nothing to clear"
    );
    assert!(
        db.list_alarms(T, true, 50)
            .await
            .expect("alarms")
            .is_empty()
    );
}
