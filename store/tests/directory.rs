//! Directory rules on both backends: user names are unique regardless of case (with the
//! upgrade renaming accounts that already clash, in the activity log), and a user on legal hold
//! cannot be deleted, whether by an admin or by an identity provider.

use callvault_store::db::testing::TestDb;
use callvault_store::db::{Db, DbError, NewUser, UserProfile};

callvault_store::on_both_backends!(
    user_names_are_unique_regardless_of_case,
    the_upgrade_renames_accounts_whose_names_clash_by_case,
    a_user_on_legal_hold_cannot_be_deleted_by_any_path,
);

const T: &str = "bank";

async fn raw(db: &Db, sql: &str) -> u64 {
    match db {
        Db::Postgres(p) => sqlx::raw_sql(sql)
            .execute(p)
            .await
            .expect("sql")
            .rows_affected(),
        Db::Sqlite(p) => sqlx::raw_sql(sql)
            .execute(p)
            .await
            .expect("sql")
            .rows_affected(),
    }
}

fn conflict(e: DbError) -> String {
    match e {
        DbError::Conflict(m) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn user_names_are_unique_regardless_of_case(t: TestDb) {
    let db = &t.db;
    let alice = db
        .create_user(T, &NewUser::local("alice", "Alice"))
        .await
        .expect("alice");
    let m = conflict(
        db.create_user(T, &NewUser::local("ALICE", "Other"))
            .await
            .expect_err("a name in another case is taken"),
    );
    assert!(
        m.contains("\"alice\"") && m.contains("regardless of case"),
        "{m}"
    );
    // Another tenant has its own names.
    db.create_user("other", &NewUser::local("Alice", "Alice"))
        .await
        .expect("other tenant");
    // Sign-in and lookups find the one account whatever the case typed.
    let found = db
        .user_by_username(T, "Alice")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.id, alice.id);
    // A rename (an identity provider's update) into a taken name is refused too.
    let bob = db
        .create_user(T, &NewUser::local("bob", "Bob"))
        .await
        .expect("bob");
    let profile = UserProfile {
        username: "Alice".into(),
        display_name: "Bob".into(),
        email: String::new(),
        external_id: None,
    };
    let m = conflict(
        db.update_user_profile(T, bob.id, &profile)
            .await
            .expect_err("rename into a taken name"),
    );
    assert!(m.contains("\"alice\""), "{m}");
    // Changing only the case of one's own name is fine.
    let own = UserProfile {
        username: "Bob".into(),
        ..profile
    };
    db.update_user_profile(T, bob.id, &own)
        .await
        .expect("own name in another case");
}

async fn the_upgrade_renames_accounts_whose_names_clash_by_case(t: TestDb) {
    let db = &t.db;
    let alice = db
        .create_user(T, &NewUser::local("alice", "Alice"))
        .await
        .expect("alice");
    let later = db
        .create_user(T, &NewUser::local("later", "Later"))
        .await
        .expect("later");
    // As before the rule: two accounts whose names differ only by case.
    raw(db, "DROP INDEX users_username_folded").await;
    raw(
        db,
        "UPDATE users SET username = 'Alice' WHERE username = 'later'",
    )
    .await;
    let migration = match db {
        Db::Postgres(_) => {
            include_str!("../migrations/postgres/0551_user_names_case_insensitive.sql")
        }
        Db::Sqlite(_) => include_str!("../migrations/sqlite/0551_user_names_case_insensitive.sql"),
    };
    raw(db, migration).await;
    let kept = db.user(T, alice.id).await.expect("db").expect("alice");
    assert_eq!(kept.username, "alice", "the oldest keeps its name");
    let renamed = db.user(T, later.id).await.expect("db").expect("later");
    let suffix = &later.id.simple().to_string()[..8];
    assert_eq!(renamed.username, format!("Alice~{suffix}"));
    let log = db.activity(T, None, 10).await.expect("activity");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].kind, "directory");
    assert!(
        log[0]
            .message
            .contains(&format!("renamed to {}", renamed.username))
            && log[0]
                .message
                .contains("its name Alice differed only by case"),
        "{log:?}"
    );
    // And the rule holds from now on.
    conflict(
        db.create_user(T, &NewUser::local("ALICE", "x"))
            .await
            .expect_err("taken"),
    );
}

async fn a_user_on_legal_hold_cannot_be_deleted_by_any_path(t: TestDb) {
    let db = &t.db;
    let held = db
        .create_user(T, &NewUser::local("held", "Held"))
        .await
        .expect("user");
    db.add_extension(T, "201", held.id).await.expect("number");
    db.set_user_legal_hold(T, held.id, true)
        .await
        .expect("hold");
    for m in [
        conflict(db.delete_user(T, held.id).await.expect_err("delete")),
        conflict(
            db.deprovision_user(T, held.id)
                .await
                .expect_err("deprovision"),
        ),
    ] {
        assert!(m.contains("legal hold") && m.contains("held"), "{m}");
    }
    // Nothing changed: still enabled, still has the number.
    let u = db.user(T, held.id).await.expect("db").expect("still there");
    assert!(!u.disabled);
    assert_eq!(
        db.extension_owner(T, "201").await.expect("db"),
        Some(held.id)
    );
    assert!(!db.is_deprovisioned(T, held.id).await.expect("db"));
    // Once the hold is lifted, deleting works.
    db.set_user_legal_hold(T, held.id, false)
        .await
        .expect("lift");
    db.deprovision_user(T, held.id).await.expect("deprovision");
    db.delete_user(T, held.id).await.expect("delete");
}
