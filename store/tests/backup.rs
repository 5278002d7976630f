//! The catalogue exported and imported on both backends, and across them: every row back, the
//! audit chain intact, new rows after the restored ones, and a used database refused.
#![allow(clippy::unwrap_used)]

use callvault_store::db::testing::TestDb;
use callvault_store::db::{
    CatalogueItem, Db, DbError, Direction, NewAuditEntry, NewRecording, NewUser,
};

const T: &str = "bank";

callvault_store::on_both_backends!(
    restores_into_the_same_backend,
    restores_into_the_other_backend
);

async fn populate(db: &Db) -> (uuid::Uuid, uuid::Uuid) {
    let user = db
        .create_user(T, &NewUser::local("alice", "Alice"))
        .await
        .unwrap();
    let group = db.create_group(T, "traders", "the desk").await.unwrap();
    db.add_member(T, group.id, user.id).await.unwrap();
    let mut rec = NewRecording::new("call-1", 1_750_000_000_000_000, Direction::Inbound);
    rec.owner_user_id = Some(user.id);
    rec.profile = "sales".into();
    db.create_recording(T, &rec).await.unwrap();
    for i in 0..3 {
        db.append_audit(T, &NewAuditEntry::new("admin", format!("test.{i}")))
            .await
            .unwrap();
    }
    db.log_activity(T, "alarm", "before the backup")
        .await
        .unwrap();
    (user.id, rec.id)
}

async fn export(db: &Db) -> (i64, Vec<CatalogueItem>) {
    let mut items = Vec::new();
    let counts = db
        .export_catalogue(&mut |i| {
            items.push(i.clone());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(counts.rows as usize + counts.tables as usize, items.len());
    (db.schema_version().await.unwrap(), items)
}

async fn check(from: &Db, to: &Db) {
    let (user, rec) = populate(from).await;
    let (version, items) = export(from).await;
    let counts = to
        .import_catalogue(version, &mut items.clone().into_iter().map(Ok))
        .await
        .unwrap();
    assert!(counts.rows >= 8, "{counts:?}");
    assert_eq!(
        to.recording(T, rec).await.unwrap(),
        from.recording(T, rec).await.unwrap()
    );
    assert_eq!(
        to.user(T, user).await.unwrap().map(|u| u.username),
        Some("alice".to_owned())
    );
    let chain = to.verify_audit_chain(T).await.unwrap();
    assert_eq!(chain.first_break, None);
    assert_eq!(chain.last_seq, 3);
    // Identity columns continue after the restored rows.
    to.log_activity(T, "alarm", "after the restore")
        .await
        .unwrap();
    assert_eq!(to.activity(T, None, 10).await.unwrap().len(), 2);

    // A used database is refused, and keeps what it has.
    let again = to
        .import_catalogue(version, &mut items.into_iter().map(Ok))
        .await
        .unwrap_err();
    assert!(
        matches!(&again, DbError::Conflict(m) if m.contains("not empty")),
        "{again}"
    );
    // A stream cut mid-way restores nothing.
    let fresh = TestDb::sqlite().await;
    let (_, items) = export(from).await;
    let cut = items.len() - 1;
    let mut broken = items
        .into_iter()
        .take(cut)
        .map(Ok)
        .chain(std::iter::once(Err(std::io::Error::other("damaged"))));
    assert!(
        fresh
            .db
            .import_catalogue(version, &mut broken)
            .await
            .is_err()
    );
    assert_eq!(fresh.db.user(T, user).await.unwrap(), None, "rolled back");
}

async fn restores_into_the_same_backend(f: TestDb) {
    let to = match f.db.backend() {
        callvault_store::db::Backend::Sqlite => TestDb::sqlite().await,
        callvault_store::db::Backend::Postgres => TestDb::postgres().await,
    };
    check(&f.db, &to.db).await;
}

async fn restores_into_the_other_backend(f: TestDb) {
    let to = match f.db.backend() {
        callvault_store::db::Backend::Sqlite => TestDb::postgres().await,
        callvault_store::db::Backend::Postgres => TestDb::sqlite().await,
    };
    check(&f.db, &to.db).await;
}
