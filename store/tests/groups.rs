//! Group scope from a call's parties, on both backends: each party's number is matched to a
//! user, and the recording keeps the groups those users were in when it was made; a later move
//! of a user to another group neither takes old calls from the old group nor gives them to the
//! new one. Searches in OwnAndGroups scope, the group filter and a SpeechJob's group filter
//! read those groups; recordings made before they were captured are backfilled by migration.

use std::collections::BTreeSet;

use callvault_store::db::testing::TestDb;
use callvault_store::db::{
    AccessScope, Db, Direction, FinishRecording, NewRecording, NewUser, Party, RecordingStatus,
    ReleaseCause, SearchQuery, SpeechSelection,
};
use uuid::Uuid;

callvault_store::on_both_backends!(
    a_recording_keeps_its_parties_groups_of_call_time,
    backfill_gives_old_recordings_their_parties_groups,
);

const T: &str = "bank";
const T0: i64 = 1_750_000_000_000_000;

async fn raw(db: &Db, sql: &str) -> u64 {
    match db {
        Db::Postgres(p) => sqlx::query(sql)
            .execute(p)
            .await
            .expect("sql")
            .rows_affected(),
        Db::Sqlite(p) => sqlx::query(sql)
            .execute(p)
            .await
            .expect("sql")
            .rows_affected(),
    }
}

struct Directory {
    ann: Uuid,
    desk: Uuid,
    sales: Uuid,
    audit: Uuid,
}

/// ann (desk, 201), bob (sales, 202), cy (audit, no number).
async fn directory(db: &Db) -> Directory {
    let desk = db.create_group(T, "desk", "").await.expect("group").id;
    let sales = db.create_group(T, "sales", "").await.expect("group").id;
    let audit = db.create_group(T, "audit", "").await.expect("group").id;
    let mut ids = Vec::new();
    for (name, group, number) in [
        ("ann", desk, Some("201")),
        ("bob", sales, Some("202")),
        ("cy", audit, None),
    ] {
        let u = db
            .create_user(T, &NewUser::local(name, name))
            .await
            .expect("user");
        db.add_member(T, group, u.id).await.expect("member");
        if let Some(n) = number {
            db.add_extension(T, n, u.id).await.expect("extension");
        }
        ids.push(u.id);
    }
    Directory {
        ann: ids[0],
        desk,
        sales,
        audit,
    }
}

/// A finished call between `calling` and `called`, with `more` listed as further participants.
async fn call(db: &Db, n: i64, calling: &str, called: &str, more: &[&str]) -> Uuid {
    let mut rec = NewRecording::new(format!("call-{n}"), T0 + n * 1_000_000, Direction::Inbound);
    rec.calling = Party::new(calling, "");
    rec.called = Party::new(called, "");
    rec.participants = std::iter::once(calling)
        .chain(std::iter::once(called))
        .chain(more.iter().copied())
        .map(|p| Party::new(p, ""))
        .collect();
    rec.answer_time = Some(rec.start_time);
    let id = rec.id;
    db.create_recording(T, &rec).await.expect("create");
    db.finish_recording(
        T,
        id,
        &FinishRecording {
            status: RecordingStatus::Available,
            end_time: rec.start_time + 60_000_000,
            answer_time: Some(rec.start_time),
            release_cause: Some(ReleaseCause::Normal),
            stop_reason: None,
            answering: None,
            object_key: format!("{T}/{id}.cvr"),
            size_bytes: 1,
            codec: "opus".into(),
            channels: 2,
            sha256: "ab".repeat(32),
            metadata_digest: "cd".repeat(32),
            signature: "ef".into(),
            key_id: "12".repeat(32),
        },
    )
    .await
    .expect("finish");
    id
}

async fn groups(db: &Db, id: Uuid) -> BTreeSet<Uuid> {
    db.recording_group_ids(T, id)
        .await
        .expect("groups")
        .into_iter()
        .collect()
}

async fn found(db: &Db, scope: &AccessScope, q: &SearchQuery) -> BTreeSet<Uuid> {
    db.search_recordings(T, scope, q, 100, None)
        .await
        .expect("search")
        .items
        .into_iter()
        .map(|r| r.id)
        .collect()
}

async fn a_recording_keeps_its_parties_groups_of_call_time(t: TestDb) {
    let db = &t.db;
    let d = directory(db).await;
    // ann calls out; bob is a third party on a call between outsiders; nobody known.
    let ann_out = call(db, 1, "201", "+15550001", &[]).await;
    let bob_joined = call(db, 2, "+15550002", "+15550003", &["202"]).await;
    let strangers = call(db, 3, "+15550004", "+15550005", &[]).await;
    assert_eq!(groups(db, ann_out).await, BTreeSet::from([d.desk]));
    assert_eq!(groups(db, bob_joined).await, BTreeSet::from([d.sales]));
    assert!(groups(db, strangers).await.is_empty());

    // ann moves from desk to audit: her old call stays with desk, her next one is audit's.
    db.remove_member(T, d.desk, d.ann).await.expect("leave");
    db.add_member(T, d.audit, d.ann).await.expect("join");
    let ann_later = call(db, 4, "+15550006", "201", &[]).await;
    assert_eq!(groups(db, ann_out).await, BTreeSet::from([d.desk]));
    assert_eq!(groups(db, ann_later).await, BTreeSet::from([d.audit]));

    // A supervisor of desk (OwnAndGroups, owning nothing) sees exactly desk's calls.
    let supervisor = |groups: Vec<Uuid>| AccessScope::OwnAndGroups {
        user_id: Uuid::new_v4(),
        groups,
    };
    let all = SearchQuery::default();
    assert_eq!(
        found(db, &supervisor(vec![d.desk]), &all).await,
        BTreeSet::from([ann_out])
    );
    assert_eq!(
        found(db, &supervisor(vec![d.audit]), &all).await,
        BTreeSet::from([ann_later])
    );
    assert!(found(db, &supervisor(vec![]), &all).await.is_empty());
    // The group filter of a search.
    let by_group = SearchQuery {
        groups: vec![d.sales, d.audit],
        ..SearchQuery::default()
    };
    assert_eq!(
        found(db, &AccessScope::All, &by_group).await,
        BTreeSet::from([bob_joined, ann_later])
    );
    // A SpeechJob's group filter (by group name).
    let sel = SpeechSelection {
        groups: vec!["desk".into()],
        ..SpeechSelection::default()
    };
    let picked: BTreeSet<Uuid> = db
        .speech_candidates(T, "job", &sel, false, None, 100)
        .await
        .expect("candidates")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(picked, BTreeSet::from([ann_out]));

    // A party who joins during the call (new metadata) brings their groups; none are lost.
    let mut live = NewRecording::new("live", T0 + 10_000_000, Direction::Inbound);
    live.calling = Party::new("+15550007", "");
    live.called = Party::new("201", "");
    db.create_recording(T, &live).await.expect("live");
    db.update_recording_metadata(
        T,
        live.id,
        &[Party::new("+15550007", ""), Party::new("202", "")],
        "<md/>",
    )
    .await
    .expect("metadata");
    assert_eq!(
        groups(db, live.id).await,
        BTreeSet::from([d.audit, d.sales])
    );
}

async fn backfill_gives_old_recordings_their_parties_groups(t: TestDb) {
    let db = &t.db;
    let d = directory(db).await;
    let ann_out = call(db, 1, "201", "+15550001", &[]).await;
    let bob_joined = call(db, 2, "+15550002", "+15550003", &["202"]).await;
    let strangers = call(db, 3, "+15550004", "+15550005", &[]).await;
    // As recordings made before parties' groups were captured: none at all.
    raw(db, "DELETE FROM recording_groups").await;
    let migration = match db {
        Db::Postgres(_) => {
            include_str!("../migrations/postgres/0550_recording_groups_backfill.sql")
        }
        Db::Sqlite(_) => include_str!("../migrations/sqlite/0550_recording_groups_backfill.sql"),
    };
    assert_eq!(raw(db, migration).await, 2);
    assert_eq!(groups(db, ann_out).await, BTreeSet::from([d.desk]));
    assert_eq!(groups(db, bob_joined).await, BTreeSet::from([d.sales]));
    assert!(groups(db, strangers).await.is_empty());
    // Run again (as after a restore), it adds nothing.
    assert_eq!(raw(db, migration).await, 0);
}
