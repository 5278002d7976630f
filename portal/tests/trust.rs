//! What users see of a recording, and the audit trail, cannot be rewritten in the database
//! unnoticed: an edited call detail makes playback, downloads and the integrity check refuse
//! the recording; recordings sealed before call details were sealed still play and say what
//! their seal covers; the audit chain is checkpointed with the audit key and a chain cut in
//! the database is reported, with an alarm. Each runs on SQLite and PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use callvault_portal::{AuditKey, PortalConfig};
use callvault_store::db::Db;
use callvault_store::db::testing::TestDb;
use callvault_store::keys::PrivateKey;
use common::{Client, Fixture, audio};
use serde_json::Value;
use uuid::Uuid;

/// Executes raw SQL as someone with direct database access would.
async fn raw(db: &Db, sql: &str) {
    let r = match db {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
    };
    r.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A UUID as a literal of the backend (PostgreSQL `UUID`, SQLite 16-byte `BLOB`).
fn uuid_literal(db: &Db, id: Uuid) -> String {
    match db {
        Db::Postgres(_) => format!("'{id}'"),
        Db::Sqlite(_) => format!("X'{}'", hex::encode(id.as_bytes())),
    }
}

fn profile(key_id: &str) -> String {
    format!(
        "apiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: alice}}\n\
         spec:\n  subjects: {{users: [alice]}}\n\
         \x20 calls: {{scope: All, groups: [], actions: {{play: true, download: true}}}}\n\
         \x20 admin: {{auditTrail: true, configureSystem: true}}\n  keys: [{key_id}]\n"
    )
}

async fn fixtures(config: PortalConfig) -> [Fixture; 2] {
    [
        Fixture::with(TestDb::sqlite().await, config.clone()).await,
        Fixture::with(TestDb::postgres().await, config).await,
    ]
}

/// The integrity verdict, and whether playback and download are served.
async fn verdict(c: &mut Client, id: Uuid) -> (Value, StatusCode, StatusCode) {
    let integrity = c.get(&format!("/api/v1/recordings/{id}/integrity")).await;
    assert_eq!(integrity.status, StatusCode::OK);
    let play = c
        .get(&format!("/api/v1/recordings/{id}/media"))
        .await
        .status;
    let download = c
        .get(&format!("/api/v1/recordings/{id}/download"))
        .await
        .status;
    (integrity.json(), play, download)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_call_details_are_refused_by_playback_and_reported_by_the_integrity_check() {
    for f in fixtures(common::config()).await {
        let alice = f.user("alice", &[]).await;
        f.profiles(&profile(&f.key_id));
        let mut c = f.login("alice").await;
        let plain = audio(20_000, 5);

        let genuine = f
            .recording(Some(alice), vec![], "+15550100", "2001", &plain)
            .await;
        let (v, play, download) = verdict(&mut c, genuine.id).await;
        assert_eq!(v["result"], "authenticated", "{v}");
        assert_eq!(v["sealed"], "call_details", "{v}");
        assert_eq!((play, download), (StatusCode::OK, StatusCode::OK));

        for (what, set) in [
            ("calling number", "calling_number = '+15550199'"),
            ("calling name", "calling_name = 'Someone Else'"),
            ("called number", "called_number = '2002'"),
            ("start time", "start_time = start_time - 3600000000"),
            ("end time", "end_time = end_time + 1000000"),
            ("duration", "duration_ms = duration_ms + 1000"),
            ("direction", "direction = 'outbound'"),
            (
                "participants",
                "participants = '[{\"number\":\"+15550199\",\"name\":\"x\"}]'",
            ),
        ] {
            let rec = f
                .recording(Some(alice), vec![], "+15550100", "2001", &plain)
                .await;
            raw(
                &f.db,
                &format!(
                    "UPDATE recordings SET {set} WHERE id = {}",
                    uuid_literal(&f.db, rec.id)
                ),
            )
            .await;
            let (v, play, download) = verdict(&mut c, rec.id).await;
            assert_eq!(v["result"], "tampered", "editing the {what}: {v}");
            assert!(
                v["reason"].as_str().is_some_and(|r| r.contains("details")),
                "editing the {what}: {v}"
            );
            assert_eq!(
                (play, download),
                (StatusCode::CONFLICT, StatusCode::CONFLICT),
                "editing the {what}"
            );
        }

        // The owner, moved to someone else.
        let bob = f.user("bob", &[]).await;
        let rec = f
            .recording(Some(alice), vec![], "+15550100", "2001", &plain)
            .await;
        raw(
            &f.db,
            &format!(
                "UPDATE recordings SET owner_user_id = {} WHERE id = {}",
                uuid_literal(&f.db, bob),
                uuid_literal(&f.db, rec.id)
            ),
        )
        .await;
        let (v, play, _) = verdict(&mut c, rec.id).await;
        assert_eq!(
            (v["result"].as_str(), play),
            (Some("tampered"), StatusCode::CONFLICT)
        );

        // Recorded unassigned, assigned later through the portal: still authenticated.
        let rec = f.recording(None, vec![], "+15550177", "2001", &plain).await;
        f.db.assign_unassigned_calls(common::T, "+15550177", alice)
            .await
            .expect("assign");
        let (v, play, _) = verdict(&mut c, rec.id).await;
        assert_eq!(v["result"], "authenticated", "{v}");
        assert_eq!(v["sealed"], "call_details_assigned_later", "{v}");
        assert_eq!(play, StatusCode::OK);

        // Sealed before call details were: still plays, and says what its seal covers.
        let old = f
            .recording_sealed(Some(alice), vec![], "+15550100", "2001", &plain, 60, true)
            .await;
        let (v, play, _) = verdict(&mut c, old.id).await;
        assert_eq!(v["result"], "authenticated", "{v}");
        assert_eq!(v["sealed"], "metadata_only", "{v}");
        assert!(
            v["covers"]
                .as_str()
                .is_some_and(|s| s.contains("cannot be detected")),
            "{v}"
        );
        assert_eq!(play, StatusCode::OK);
    }
}

/// Drops the append-only guard as an attacker with database access would.
async fn drop_guard(db: &Db) {
    match db {
        Db::Postgres(_) => raw(db, "DROP TRIGGER audit_log_append_only ON audit_log").await,
        Db::Sqlite(_) => {
            raw(db, "DROP TRIGGER audit_log_no_update").await;
            raw(db, "DROP TRIGGER audit_log_no_delete").await;
        }
    }
}

/// Polls `check` (every 20 ms, at most 20 s) until it yields a value.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_checkpoints_the_audit_chain_and_reports_a_cut_tail_with_an_alarm() {
    let key = PrivateKey::generate(2048).expect("audit key");
    let config = PortalConfig {
        audit_key: Some(AuditKey(Arc::new(key))),
        audit_checkpoint_interval: Duration::from_millis(200),
        ..common::config()
    };
    for f in fixtures(config).await {
        f.user("alice", &[]).await;
        f.profiles(&profile(&f.key_id));
        let mut c = f.login("alice").await;
        // A few more audited actions; wait until a checkpoint covers them.
        for i in 0..5 {
            f.db.append_audit(
                common::T,
                &callvault_store::db::NewAuditEntry::new("alice", "view")
                    .item("call", i.to_string()),
            )
            .await
            .expect("append");
        }
        let db = f.db.clone();
        let last = until("the chain head", || {
            let db = db.clone();
            async move {
                db.query_audit(common::T, &Default::default(), 1)
                    .await
                    .ok()
                    .and_then(|e| e.first().map(|e| e.seq))
            }
        })
        .await;
        let proven = until("a checkpoint", || {
            let router = f.router.clone();
            let cookie = c.cookie.clone();
            async move {
                let mut c = Client::new(router);
                c.cookie = cookie;
                let v = c.get("/api/v1/audit/verify").await.json();
                let p = v["proven_through"].as_i64().unwrap_or(0);
                (p >= last).then_some(v)
            }
        })
        .await;
        assert!(proven["first_break"].is_null(), "{proven}");
        assert!(proven["checkpoint"]["signature"].is_string(), "{proven}");

        // Cut the tail and move the head back: the chain alone still looks intact.
        drop_guard(&f.db).await;
        let keep = last - 2;
        let kept_hash =
            f.db.query_audit(
                common::T,
                &callvault_store::db::AuditFilter {
                    before_seq: Some(keep + 1),
                    ..Default::default()
                },
                1,
            )
            .await
            .expect("entry")[0]
                .hash
                .clone();
        raw(
            &f.db,
            &format!("DELETE FROM audit_log WHERE tenant = 'default' AND seq > {keep}"),
        )
        .await;
        raw(
            &f.db,
            &format!(
                "UPDATE audit_head SET seq = {keep}, hash = '{kept_hash}' WHERE tenant = 'default'"
            ),
        )
        .await;
        assert!(
            f.db.verify_audit_chain(common::T)
                .await
                .expect("verify")
                .is_intact()
        );
        let v = c.get("/api/v1/audit/verify").await.json();
        assert!(
            v["first_break"]["Truncated"]["checkpoint_seq"].as_i64() >= Some(last),
            "{v}"
        );
        // The signer refuses to sign the shortened chain and raises an alarm instead.
        let router = f.router.clone();
        let cookie = c.cookie.clone();
        let alarm = until("the AuditChainBroken alarm", || {
            let mut c = Client::new(router.clone());
            c.cookie = cookie.clone();
            async move {
                let alarms = c.get("/api/v1/alarms").await.json();
                alarms
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["alarm_type"] == "AuditChainBroken"))
                    .cloned()
            }
        })
        .await;
        assert_eq!(alarm["severity"], "critical", "{alarm}");
    }
}
