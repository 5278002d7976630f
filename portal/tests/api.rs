//! API tests per feature, on real PostgreSQL (and SQLite where cheap): sign-in and sessions,
//! playback with Range, downloads, exports, annotations, deletion, legal hold, integrity,
//! assignment, impersonation, the audit trail, and the admin views (groups, declared
//! resources, alarms, activity, active calls).

mod common;

use std::io::Read;

use axum::http::{Method, StatusCode};
use callvault_store::db::{
    AlarmSeverity, ArchiveCopy, AuditFilter, CallType, Direction, NewRecording, Party, now_micros,
};
use common::{Client, Fixture, PASSWORD, T, audio, ogg_opus};
use serde_json::json;
use uuid::Uuid;

const ADMIN_PROFILE: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: admins}
spec:
  subjects: {groups: [admins]}
  calls:
    scope: All
    actions: {play: true, download: true, export: true, tag: true, addNotes: true,
              deleteOthersNotes: true, deleteCalls: true, legalHold: true}
  admin: {manageTags: true, configureSystem: true, auditTrail: true}
  keys: [KEY]
---
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: agents}
spec:
  subjects: {groups: [agents]}
  calls: {scope: Own, actions: {play: true}}
  keys: [KEY]
"#;

async fn setup(f: &Fixture) {
    f.profiles(&ADMIN_PROFILE.replace("KEY", &f.key_id));
    f.user("admin", &["admins"]).await;
}

async fn audit_actions(f: &Fixture) -> Vec<(String, String, Option<String>)> {
    f.db.query_audit(T, &AuditFilter::default(), 10_000)
        .await
        .expect("audit")
        .into_iter()
        .map(|e| (e.actor, e.action, e.impersonator))
        .collect()
}

async fn sign_in_and_sessions(f: Fixture) {
    setup(&f).await;
    // Unauthenticated: 401 with a stable code.
    let mut anon = Client::new(f.router.clone());
    let r = anon.get("/api/v1/recordings").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthenticated");

    // Wrong password: 401, audited; the cookie is HttpOnly and SameSite.
    let (s, b) = anon
        .json(
            Method::POST,
            "/api/v1/auth/login",
            json!({"username": "admin", "password": "nope nope nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["code"], "invalid_credentials");
    let r = anon
        .send(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "admin", "password": PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let cookies: Vec<String> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    assert!(cookies.iter().any(|c| c.starts_with("cv_session=")
        && c.contains("HttpOnly")
        && c.contains("SameSite=Lax")));
    assert_eq!(r.json()["csrf_token"].as_str(), anon.csrf.as_deref());
    let me = anon.get("/api/v1/auth/me").await.json();
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["scope"], "All");

    // Unsafe request without the CSRF header: 403.
    anon.send_csrf = false;
    let (s, b) = anon
        .json(Method::POST, "/api/v1/tags", json!({"name": "x"}))
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf_failed"))
    );
    anon.send_csrf = true;

    // Sessions: list, terminate another one of mine; it stops working at once.
    let mut second = f.login("admin").await;
    let sessions = anon.get("/api/v1/sessions").await.json();
    assert_eq!(sessions.as_array().map(Vec::len), Some(2));
    assert_eq!(second.get("/api/v1/auth/me").await.status, StatusCode::OK);
    // The newest session is `second`'s; from it, end the older one (`anon`'s).
    let older = sessions[1]["id_hash"].as_str().expect("id").to_owned();
    let r = second
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{older}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        anon.get("/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(second.get("/api/v1/auth/me").await.status, StatusCode::OK);
    let all = second.get("/api/v1/admin/sessions").await.json();
    assert_eq!(all.as_array().map(Vec::len), Some(1));

    // Logout ends the session.
    let mut c = f.login("admin").await;
    assert_eq!(
        c.send(Method::POST, "/api/v1/auth/logout", None, &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.get("/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );

    let actions = audit_actions(&f).await;
    assert!(actions.iter().any(|(a, x, _)| a == "admin" && x == "login"));
    assert!(
        actions
            .iter()
            .any(|(a, x, _)| a == "admin" && x == "login.failed")
    );
    assert!(
        actions
            .iter()
            .any(|(a, x, _)| a == "admin" && x == "logout")
    );
    assert!(actions.iter().any(|(_, x, _)| x == "session.terminate"));
}

async fn lockout_must_change_and_reset(f: Fixture) {
    setup(&f).await;
    // Not an agent: the agents' profile grants a key, and a key holder's password is never
    // reset in the portal.
    let bob = f.user("bob", &["interns"]).await;
    let carol = f.user("carol", &["agents"]).await;
    let mut anon = Client::new(f.router.clone());
    for _ in 0..5 {
        let (s, _) = anon
            .json(
                Method::POST,
                "/api/v1/auth/login",
                json!({"username": "bob", "password": "wrong wrong wrong"}),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Locked: even the right password is refused.
    let (s, b) = anon
        .json(
            Method::POST,
            "/api/v1/auth/login",
            json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_locked"))
    );

    // An admin resets the password (must change): the lock is lifted.
    let mut admin = f.login("admin").await;
    let (s, b) = admin
        .json(
            Method::POST,
            &format!("/api/v1/users/{carol}/password-reset"),
            json!({"mode": "set", "new_password": "temporary password 1"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a key holder: {b}");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("key grant")),
        "{b}"
    );
    let (s, b) = admin
        .json(
            Method::POST,
            &format!("/api/v1/users/{bob}/password-reset"),
            json!({"mode": "set", "new_password": "temporary password 1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut bobc = Client::new(f.router.clone());
    let (s, b) = bobc
        .json(
            Method::POST,
            "/api/v1/auth/login",
            json!({"username": "bob", "password": "temporary password 1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["must_change_password"], true);
    // Nothing but the password change until it is done.
    let r = bobc.get("/api/v1/recordings").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "password_change_required")
    );
    let (s, b) = bobc
        .json(
            Method::POST,
            "/api/v1/auth/password",
            json!({"current_password": "temporary password 1", "new_password": "short"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "policy: {b}");
    let (s, _) = bobc
        .json(Method::POST, "/api/v1/auth/password", json!({"current_password": "temporary password 1", "new_password": "bob's own new passphrase"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bobc.get("/api/v1/recordings").await.status, StatusCode::OK);

    // A one-time reset token works once.
    let (s, b) = admin
        .json(
            Method::POST,
            &format!("/api/v1/users/{bob}/password-reset"),
            json!({"mode": "token"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let token = b["token"].as_str().expect("token").to_owned();
    // The reset ended bob's sessions.
    assert_eq!(
        bobc.get("/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    let body = json!({"token": token, "new_password": "bob's reset passphrase"});
    let (s, _) = anon
        .json(Method::POST, "/api/v1/auth/password-reset", body.clone())
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = anon
        .json(Method::POST, "/api/v1/auth/password-reset", body)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a token works once");
    let (s, _) = anon
        .json(
            Method::POST,
            "/api/v1/auth/login",
            json!({"username": "bob", "password": "bob's reset passphrase"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_answers_429() {
    let f = Fixture::with(
        callvault_store::db::testing::TestDb::sqlite().await,
        callvault_portal::PortalConfig {
            login_attempts_per_minute: 3,
            ..common::config()
        },
    )
    .await;
    setup(&f).await;
    let mut anon = Client::new(f.router.clone());
    for _ in 0..3 {
        let (s, _) = anon
            .json(
                Method::POST,
                "/api/v1/auth/login",
                json!({"username": "ghost", "password": "whatever whatever"}),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let r = anon
        .send(
            Method::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "ghost", "password": "x"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.code(), "too_many_attempts");
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait));
}

async fn idle_and_absolute_timeouts(f: Fixture) {
    setup(&f).await;
    let mut c = f.login("admin").await;
    assert_eq!(c.get("/api/v1/auth/me").await.status, StatusCode::OK);
    // Age the session's last use past the idle timeout (15 minutes).
    let old = now_micros() - 16 * 60 * 1_000_000;
    raw(&f, &format!("UPDATE web_sessions SET last_seen_at = {old}")).await;
    let r = c.get("/api/v1/auth/me").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "session_expired")
    );
    // Absolute: a fresh session past its end.
    let mut c = f.login("admin").await;
    raw(
        &f,
        &format!(
            "UPDATE web_sessions SET expires_at = {} WHERE revoked_at IS NULL",
            now_micros() - 1
        ),
    )
    .await;
    assert_eq!(
        c.get("/api/v1/auth/me").await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn raw(f: &Fixture, sql: &str) {
    match &f.db {
        callvault_store::db::Db::Postgres(p) => {
            sqlx::query(sql).execute(p).await.expect("sql");
        }
        callvault_store::db::Db::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.expect("sql");
        }
    }
}

async fn playback_seeks_with_range_and_falls_back_to_archive(f: Fixture) {
    setup(&f).await;
    let plain = audio(100_000, 1);
    let rec = f.recording(None, vec![], "+15550001", "2001", &plain).await;
    let mut c = f.login("admin").await;
    let url = format!("/api/v1/recordings/{}/media", rec.id);

    let full = c.get(&url).await;
    assert_eq!(full.status, StatusCode::OK);
    assert_eq!(full.headers["accept-ranges"], "bytes");
    assert_eq!(full.headers["content-type"], "audio/ogg");
    assert_eq!(&full.body[..], &plain[..]);

    // Seeks: inside a chunk, across chunk boundaries, open-ended and suffix ranges.
    for (range, want) in [
        ("bytes=0-0", 0..1),
        ("bytes=4090-4100", 4090..4101),
        ("bytes=50000-71234", 50_000..71_235),
        ("bytes=99990-", 99_990..100_000),
        ("bytes=-7", 99_993..100_000),
    ] {
        let r = c.send(Method::GET, &url, None, &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&r.body[..], &plain[want.clone()], "{range}");
        assert_eq!(
            r.headers["content-range"],
            format!("bytes {}-{}/100000", want.start, want.end - 1).as_str()
        );
    }
    let r = c
        .send(Method::GET, &url, None, &[("range", "bytes=100000-")])
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers["content-range"], "bytes */100000");

    // The primary copy is gone: the archive copy plays.
    let key = rec.object_key.clone().expect("key");
    let bytes = f.storage.get(&key).await.expect("get");
    f.archive.put("copy.cvr", bytes).await.expect("put");
    f.db.mark_archived(
        T,
        rec.id,
        &ArchiveCopy {
            connector: "nas".into(),
            target: common::ARCHIVE.into(),
            object_key: "copy.cvr".into(),
            sha256: rec.sha256.clone().expect("sha"),
            archived_at: now_micros(),
        },
    )
    .await
    .expect("archive");
    f.storage.delete(&key).await.expect("delete primary");
    let r = c
        .send(Method::GET, &url, None, &[("range", "bytes=12345-23456")])
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &plain[12_345..23_457]);

    // Without any copy: 410.
    f.archive.delete("copy.cvr").await.expect("delete archive");
    let r = c.get(&url).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::GONE, "media_gone")
    );

    let actions = audit_actions(&f).await;
    let plays = actions.iter().filter(|(_, a, _)| a == "play").count();
    assert!(plays >= 2, "a play is audited once per playback start");
}

async fn download_integrity_and_tamper(f: Fixture) {
    setup(&f).await;
    let plain = audio(20_000, 2);
    let rec = f.recording(None, vec![], "100", "200", &plain).await;
    let mut c = f.login("admin").await;
    let r = c
        .get(&format!("/api/v1/recordings/{}/download", rec.id))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &plain[..]);
    let cd = r.headers["content-disposition"].to_str().expect("header");
    assert!(cd.starts_with("attachment;") && cd.contains(".ogg"));

    let r = c
        .get(&format!("/api/v1/recordings/{}/integrity", rec.id))
        .await;
    assert_eq!(r.json()["result"], "authenticated", "{}", r.json());

    // Flip one ciphertext byte: tampered, and playback refuses that chunk.
    let key = rec.object_key.clone().expect("key");
    let mut bytes = f.storage.get(&key).await.expect("get").to_vec();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    f.storage.put(&key, bytes.into()).await.expect("put");
    let r = c
        .get(&format!("/api/v1/recordings/{}/integrity", rec.id))
        .await;
    assert_eq!(r.json()["result"], "tampered", "{}", r.json());

    // The row's digest changed in the database: tampered too.
    let rec2 = f.recording(None, vec![], "100", "200", &plain).await;
    raw(
        &f,
        &format!(
            "UPDATE recordings SET sha256 = '{}' WHERE call_id = '{}'",
            "00".repeat(32),
            rec2.call_id
        ),
    )
    .await;
    let r = c
        .get(&format!("/api/v1/recordings/{}/integrity", rec2.id))
        .await;
    assert_eq!(r.json()["result"], "tampered");
}

async fn tags_notes_delete_and_legal_hold(f: Fixture) {
    setup(&f).await;
    let bob = f.user("bob", &["agents"]).await;
    let a = f
        .recording(Some(bob), vec![], "1", "2", &audio(100, 3))
        .await;
    let b = f
        .recording(Some(bob), vec![], "1", "3", &audio(100, 4))
        .await;
    let mut c = f.login("admin").await;
    let (_, t1) = c
        .json(Method::POST, "/api/v1/tags", json!({"name": "Sales"}))
        .await;
    let (_, t2) = c
        .json(Method::POST, "/api/v1/tags", json!({"name": "Help Desk"}))
        .await;
    let (s, _) = c
        .json(
            Method::PUT,
            "/api/v1/recordings/tags",
            json!({"recordings": [a.id], "tags": [t1["id"]]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Setting tags on several calls replaces what they had.
    let (s, _) = c
        .json(
            Method::PUT,
            "/api/v1/recordings/tags",
            json!({"recordings": [a.id, b.id], "tags": [t2["id"]]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    for id in [a.id, b.id] {
        let d = c.get(&format!("/api/v1/recordings/{id}")).await.json();
        let names: Vec<&str> = d["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, vec!["Help Desk"]);
    }
    // Notes with author and time; whole-word search finds them.
    let (s, n) = c
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/notes", a.id),
            json!({"body": "Customer asked for a refund."}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(n["author_name"], "admin display");
    let (_, page) = c
        .json(
            Method::POST,
            "/api/v1/recordings/search",
            json!({"query": {"notes": "refund"}}),
        )
        .await;
    assert_eq!(page["total"], 1);
    let (_, page) = c
        .json(
            Method::POST,
            "/api/v1/recordings/search",
            json!({"query": {"notes": "refu"}}),
        )
        .await;
    assert_eq!(page["total"], 0, "whole words only");

    // Legal hold on bob: deletion refused, nothing requested.
    let (s, _) = c
        .json(
            Method::PUT,
            &format!("/api/v1/users/{bob}/legal-hold"),
            json!({"hold": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let del = json!({"recordings": [a.id], "mode": "all", "authorized_by": "GlobalAdmin", "note": "Purging call data"});
    let (s, e) = c
        .json(Method::POST, "/api/v1/recordings/delete", del.clone())
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("legal_hold"))
    );
    let (s, _) = c
        .json(
            Method::PUT,
            &format!("/api/v1/users/{bob}/legal-hold"),
            json!({"hold": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = c
        .json(
            Method::POST,
            "/api/v1/recordings/delete",
            json!({"recordings": [a.id]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "authorized_by is required: {e}");
    let (s, _) = c.json(Method::POST, "/api/v1/recordings/delete", del).await;
    assert_eq!(s, StatusCode::OK);
    let row = f.db.recording(T, a.id).await.expect("db").expect("row");
    assert_eq!(row.delete_authorised_by.as_deref(), Some("GlobalAdmin"));
    assert_eq!(row.delete_note.as_deref(), Some("Purging call data"));
    assert!(row.deleted_at.is_none(), "deferred to the retention run");

    let actions: Vec<String> = audit_actions(&f).await.into_iter().map(|x| x.1).collect();
    for want in [
        "tag.create",
        "tag.set",
        "note.add",
        "legal_hold.set",
        "legal_hold.clear",
        "delete.request",
        "search",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} audited");
    }
}

async fn assign_unassigned_calls(f: Fixture) {
    setup(&f).await;
    let carol = f.user("carol", &["agents"]).await;
    let dave = f.user("dave", &[]).await;
    f.db.add_extension(T, "5555", dave).await.expect("ext");
    let x = f
        .recording(None, vec![], "+1999", "7777", &audio(10, 5))
        .await;
    let y = f
        .recording(None, vec![], "7777", "+1888", &audio(10, 6))
        .await;
    let z = f
        .recording(None, vec![], "5555", "+1888", &audio(10, 7))
        .await;
    let mut c = f.login("admin").await;
    let (_, page) = c
        .json(
            Method::POST,
            "/api/v1/recordings/search",
            json!({"query": {"unassigned": true}}),
        )
        .await;
    assert_eq!(page["total"], 3);
    // Another user's number: refused with a conflict naming them.
    let (s, e) = c
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/assign", z.id),
            json!({"user_id": carol, "number": "5555"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        e["message"].as_str().unwrap_or_default().contains("dave"),
        "{e}"
    );
    // Without "apply to similar": that one call only, and the number stays nobody's.
    let (s, b) = c
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/assign", y.id),
            json!({"user_id": dave, "number": "7777"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["assigned"], json!([y.id]));
    assert_eq!(f.db.extension_owner(T, "7777").await.expect("db"), None);
    assert_eq!(
        f.db.recording(T, x.id)
            .await
            .expect("db")
            .expect("row")
            .owner_user_id,
        None,
        "the similar call is untouched"
    );
    // Assign, and apply to all similar calls.
    let (s, b) = c
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/assign", x.id),
            json!({"user_id": carol, "number": "7777", "apply_to_similar": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["assigned"], json!([x.id]), "y is dave's already");
    for (id, owner) in [(x.id, carol), (y.id, dave)] {
        assert_eq!(
            f.db.recording(T, id)
                .await
                .expect("db")
                .expect("row")
                .owner_user_id,
            Some(owner)
        );
    }
    assert_eq!(
        f.db.extension_owner(T, "7777").await.expect("db"),
        Some(carol)
    );
    // Carol (scope Own) now sees hers.
    let mut cc = f.login("carol").await;
    let (_, page) = cc
        .json(Method::POST, "/api/v1/recordings/search", json!({}))
        .await;
    assert_eq!(page["total"], 1);
}

/// Group scope from a call's parties: a supervisor with OwnAndGroups sees the calls of the
/// users of their groups, found by the users' numbers, as the groups were at call time; a
/// user's later move does not give old calls to the new group's supervisor.
async fn supervisors_see_their_groups_calls_as_the_groups_were_then(f: Fixture) {
    setup(&f).await;
    let key = f.key_id.clone();
    f.profiles(&format!(
        "{}---\n{}---\n{}",
        ADMIN_PROFILE.replace("KEY", &key),
        supervisor_profile("deskboss", "desk", &key),
        supervisor_profile("auditboss", "audit", &key),
    ));
    let ann = f.user("ann", &["desk"]).await;
    let bob = f.user("bob", &["sales"]).await;
    f.db.add_extension(T, "201", ann).await.expect("ext");
    f.db.add_extension(T, "202", bob).await.expect("ext");
    f.user("deskboss", &[]).await;
    f.user("auditboss", &[]).await;
    let (desk, audit) = (f.group("desk").await, f.group("audit").await);
    // Bob's call (recorded for him) with ann on the other end: desk's, through ann's number.
    let old = f
        .recording(Some(bob), vec![], "202", "201", &audio(10, 1))
        .await;
    let mut deskboss = f.login("deskboss").await;
    let mut auditboss = f.login("auditboss").await;
    assert_eq!(found(&mut deskboss, json!({})).await, [old.id.to_string()]);
    let r = deskboss
        .get(&format!("/api/v1/recordings/{}/media", old.id))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the supervisor plays the team's call"
    );
    assert!(found(&mut auditboss, json!({})).await.is_empty());

    // Ann moves from desk to audit: the old call stays desk's; her next call is audit's.
    f.db.remove_member(T, desk, ann).await.expect("leave");
    f.db.add_member(T, audit, ann).await.expect("join");
    let new = f
        .recording(None, vec![], "+15550100", "201", &audio(10, 2))
        .await;
    assert!(
        found(&mut auditboss, json!({}))
            .await
            .iter()
            .all(|id| *id != old.id.to_string()),
        "the old call is not exposed to the new group's supervisor"
    );
    let r = auditboss
        .get(&format!("/api/v1/recordings/{}", old.id))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(found(&mut deskboss, json!({})).await, [old.id.to_string()]);
    assert_eq!(found(&mut auditboss, json!({})).await, [new.id.to_string()]);
    // The admin's group filter finds each call under the group it was made in.
    let mut admin = f.login("admin").await;
    assert_eq!(
        found(&mut admin, json!({ "groups": [desk] })).await,
        [old.id.to_string()]
    );
    assert_eq!(
        found(&mut admin, json!({ "groups": [audit] })).await,
        [new.id.to_string()]
    );
}

/// A meeting (compliance-recorder F-40): Alice owns it, Carol attended the first four seconds,
/// Dave joined at six. With their Own scope each finds the meeting and plays the part they
/// attended (an Ogg Opus stream of its own, to the second), and neither may download the whole
/// meeting; Alice, its owner, and an admin play and download all of it. A user who was not
/// there does not see it.
async fn meeting_attendees_play_the_part_they_attended(f: Fixture) {
    setup(&f).await;
    let key = f.key_id.clone();
    f.profiles(&format!(
        "{}---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: staff}}\n\
         spec:\n  subjects: {{groups: [staff]}}\n  calls: {{scope: Own, actions: {{play: true, download: true}}}}\n\
         \x20 keys: [{key}]\n",
        ADMIN_PROFILE.replace("KEY", &key),
    ));
    let mut people = Vec::new();
    for (name, number) in [
        ("alice", "1001"),
        ("carol", "2002"),
        ("dave", "3003"),
        ("erin", "4004"),
    ] {
        let id = f.user(name, &["staff"]).await;
        f.db.add_extension(T, number, id).await.expect("ext");
        people.push(id);
    }
    let whole = ogg_opus(10);
    let mut rec = NewRecording::new("meeting-1", 1_750_000_000_000_000, Direction::Conference);
    rec.call_type = CallType::InternalMeeting;
    rec.calling = Party::new("1001", "Alice");
    rec.called = Party::new("2002", "Carol");
    let mut carol = rec.called.clone();
    carol.left_ms = Some(4_000);
    let mut dave = Party::new("3003", "Dave");
    dave.joined_ms = Some(6_000);
    rec.participants = vec![rec.calling.clone(), carol, dave];
    rec.owner_user_id = Some(people[0]);
    let meeting = f.store_recording(rec, &whole, 10, false).await;
    let media = format!("/api/v1/recordings/{}/media", meeting.id);
    let download = format!("/api/v1/recordings/{}/download", meeting.id);
    let seconds = |ogg: &[u8]| {
        // The last page's granule, less the 312-sample pre-skip the recorder's encoder uses.
        let at = ogg.windows(4).rposition(|w| w == b"OggS").expect("a page");
        let granule = u64::from_le_bytes(ogg[at + 6..at + 14].try_into().expect("8 bytes"));
        (granule - 312) as f64 / 48_000.0
    };
    for (name, from, to) in [("carol", 0.0, 4.0), ("dave", 6.0, 10.0)] {
        let mut c = f.login(name).await;
        assert_eq!(
            found(&mut c, json!({})).await,
            [meeting.id.to_string()],
            "{name}"
        );
        let r = c.get(&media).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert!(
            r.body.starts_with(b"OggS") && r.body.len() < whole.len() * 6 / 10,
            "{name}"
        );
        let len = seconds(&r.body);
        assert!(
            (to - from - 1.0..=to - from + 1.0).contains(&len),
            "{name} attended {from}-{to} s and hears {len} s"
        );
        let d = c.get(&download).await;
        assert_eq!(d.status, StatusCode::FORBIDDEN, "{name}: {}", d.code());
    }
    for name in ["alice", "admin"] {
        let mut c = f.login(name).await;
        let r = c.get(&media).await;
        assert_eq!(r.status, StatusCode::OK, "{name}");
        assert_eq!(&r.body[..], &whole[..], "{name} hears the whole meeting");
        assert_eq!(c.get(&download).await.status, StatusCode::OK, "{name}");
    }
    let mut erin = f.login("erin").await;
    assert!(found(&mut erin, json!({})).await.is_empty());
    assert_eq!(erin.get(&media).await.status, StatusCode::NOT_FOUND);
}

/// The ids a search with `query` lists, sorted.
async fn found(c: &mut Client, query: serde_json::Value) -> Vec<String> {
    let (s, page) = c
        .json(
            Method::POST,
            "/api/v1/recordings/search",
            json!({ "query": query }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn supervisor_profile(user: &str, group: &str, key: &str) -> String {
    format!(
        "apiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: {user}}}\n\
         spec:\n  subjects: {{users: [{user}]}}\n  calls: {{scope: OwnAndGroups, groups: [{group}], actions: {{play: true}}}}\n\
         \x20 keys: [{key}]\n"
    )
}

/// Directory rules through the admin API: user names are unique regardless of case, and a
/// user on legal hold cannot be deleted (409 `legal_hold`, saying why) until the hold is lifted.
async fn directory_rules(f: Fixture) {
    setup(&f).await;
    f.user("carol", &[]).await;
    let mut admin = f.login("admin").await;
    let (s, e) = admin
        .json(
            Method::POST,
            "/api/v1/users",
            json!({"username": "Carol", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["code"], "conflict");
    let m = e["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("\"carol\"") && m.contains("regardless of case"),
        "{e}"
    );

    let held = f.user("held", &["agents"]).await;
    f.db.add_extension(T, "4444", held).await.expect("ext");
    let hold = |on: bool| json!({ "hold": on });
    let (s, b) = admin
        .json(
            Method::PUT,
            &format!("/api/v1/users/{held}/legal-hold"),
            hold(true),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = admin
        .send(Method::DELETE, &format!("/api/v1/users/{held}"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.code(), "legal_hold");
    assert!(
        r.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("legal hold") && m.contains("held")),
        "{}",
        r.json()
    );
    let row = f.db.user(T, held).await.expect("db").expect("row");
    assert!(!row.disabled, "nothing changed");
    assert_eq!(
        f.db.extension_owner(T, "4444").await.expect("db"),
        Some(held)
    );
    // Lifted: the delete goes through; the account is disabled and its number released.
    let (s, _) = admin
        .json(
            Method::PUT,
            &format!("/api/v1/users/{held}/legal-hold"),
            hold(false),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = admin
        .send(Method::DELETE, &format!("/api/v1/users/{held}"), None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    assert!(f.db.user(T, held).await.expect("db").expect("row").disabled);
    assert_eq!(f.db.extension_owner(T, "4444").await.expect("db"), None);
    let actions: Vec<String> = audit_actions(&f).await.into_iter().map(|a| a.1).collect();
    assert!(actions.iter().any(|a| a == "user.delete"), "{actions:?}");
}

/// Requests the API refuses before any handler runs (malformed JSON, a missing or mistyped
/// field, no JSON content type, an id that is no UUID, a bad query value, a wrong method)
/// answer like every other error: JSON with a code and a message naming the problem.
async fn every_error_body_is_json_with_a_code(f: Fixture) {
    setup(&f).await;
    let mut admin = f.login("admin").await;
    let user = Uuid::new_v4();
    let hold = format!("/api/v1/users/{user}/legal-hold");
    let mut answers = vec![
        (
            "malformed JSON",
            admin
                .send_raw(
                    Method::POST,
                    "/api/v1/tags",
                    "application/json",
                    "{\"name\":",
                )
                .await,
            StatusCode::BAD_REQUEST,
        ),
        (
            "not JSON",
            admin
                .send_raw(Method::POST, "/api/v1/tags", "text/plain", "name=x")
                .await,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, method, path, body, want) in [
        (
            "missing field",
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "x"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "mistyped field",
            Method::PUT,
            hold.as_str(),
            Some(json!({"hold": "yes"})),
            StatusCode::BAD_REQUEST,
        ),
        (
            "id not a UUID",
            Method::GET,
            "/api/v1/recordings/not-a-uuid",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad query value",
            Method::GET,
            "/api/v1/alarms?limit=many",
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong method",
            Method::DELETE,
            "/api/v1/tags",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        answers.push((what, admin.send(method, path, body, &[]).await, want));
    }
    for (what, r, want) in answers {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, want, "{what}: {body}");
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}: {body}"
        );
        let v = r.json();
        assert!(
            v["code"].as_str().is_some_and(|c| !c.is_empty())
                && v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
}

/// One RecordingProfile per user: a user two profiles select stays with the older one; the
/// newer one shows a Conflict condition naming them, as soon as the directory changes.
async fn overlapping_recording_profiles_show_a_conflict_on_the_newer_one(f: Fixture) {
    setup(&f).await;
    let profile = |name: &str, created: &str, groups: &str| {
        format!(
            "apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\n\
             metadata: {{name: {name}, creationTimestamp: \"{created}\"}}\n\
             spec:\n  selector: {{groups: {groups}}}\n  storageTargetRef: {{name: primary-s3}}\n\
             \x20 encryption: {{keySecretRef: {{name: recording-key, key: public.pem}}}}\n"
        )
    };
    // The newer one is declared first: age decides, not order.
    f.declare(common::parse_resources(&format!(
        "{}---\n{}",
        profile("desk", "2026-02-01T00:00:00Z", "[desk]"),
        profile("sales", "2026-01-01T00:00:00Z", "[sales, desk]"),
    )));
    let bob = f.user("bob", &["desk"]).await;
    let ann = f.user("ann", &["sales"]).await;
    let mut admin = f.login("admin").await;
    let conflict = |list: &serde_json::Value, name: &str| {
        let p = list
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {list}"));
        let c = p["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Conflict"))
            .cloned()
            .unwrap_or_else(|| panic!("a Conflict condition on {name}: {p}"));
        (c, p["status"]["conflicts"].clone())
    };
    let r = admin.get("/api/v1/resources/recording-profiles").await;
    assert_eq!(r.status, StatusCode::OK);
    let (c, users) = conflict(&r.json(), "desk");
    assert_eq!(c["status"], "True", "{c}");
    assert_eq!(c["reason"], "UserConflict");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|m| m.contains("bob recorded by the older profile sales")),
        "{c}"
    );
    assert_eq!(users, json!([{"user": "bob", "profile": "sales"}]));
    let (c, users) = conflict(&r.json(), "sales");
    assert_eq!(
        c["status"], "False",
        "the older profile keeps its users: {c}"
    );
    assert_eq!(users, json!([]));
    // Groups change: ann joins desk (a conflict too), bob leaves it (his is resolved).
    let desk = f.group("desk").await;
    f.db.add_member(T, desk, ann).await.expect("join");
    f.db.remove_member(T, desk, bob).await.expect("leave");
    let r = admin.get("/api/v1/resources/recording-profiles").await;
    let (_, users) = conflict(&r.json(), "desk");
    assert_eq!(users, json!([{"user": "ann", "profile": "sales"}]));
}

async fn zip_csv_and_xlsx_exports(f: Fixture) {
    setup(&f).await;
    let p1 = audio(9000, 8);
    let p2 = audio(5000, 9);
    let r1 = f.recording(None, vec![], "+15551", "100", &p1).await;
    let r2 = f.recording(None, vec![], "=cmd", "200", &p2).await;
    let mut c = f.login("admin").await;
    let r = c
        .send(
            Method::POST,
            "/api/v1/recordings/zip",
            Some(json!({"recordings": [r1.id, r2.id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).expect("zip");
    let mut html = String::new();
    z.by_name("index.html")
        .expect("index")
        .read_to_string(&mut html)
        .expect("read");
    for (rec, plain) in [(&r1, &p1), (&r2, &p2)] {
        let name = (0..z.len())
            .filter_map(|i| z.by_index(i).ok().map(|f| f.name().to_owned()))
            .find(|n| n.contains(&rec.id.to_string()))
            .expect("file in zip");
        assert!(name.ends_with(".ogg"));
        assert!(
            html.contains(&format!("src=\"{name}\"")),
            "the index plays {name}"
        );
        let mut got = Vec::new();
        z.by_name(&name)
            .expect("entry")
            .read_to_end(&mut got)
            .expect("read");
        assert_eq!(&got, plain);
    }
    // More than 50: refused.
    let many: Vec<String> = (0..51).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let r = c
        .send(
            Method::POST,
            "/api/v1/recordings/zip",
            Some(json!({"recordings": many})),
            &[],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_many_items")
    );

    // CSV of a search: report header, the 27 columns, formulas defused.
    let r = c
        .send(
            Method::POST,
            "/api/v1/recordings/export",
            Some(json!({"format": "csv", "query": {}})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let csv = String::from_utf8(r.body.to_vec()).expect("utf8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "Report Header");
    assert_eq!(lines[1], "Requested By,admin display");
    assert!(lines[2].starts_with("Created At,") && lines[2].ends_with('Z'));
    assert!(lines[3].starts_with("Search Criteria,"));
    assert!(lines[4].starts_with("Call Id,Target Display Name,Target Upn,OnBehalfOf"));
    assert_eq!(lines[4].split(',').count(), 27);
    assert!(lines[4].ends_with("Tags,Call Link"));
    assert_eq!(lines.len(), 7);
    assert!(csv.contains("'=cmd"));
    // Each Call Link opens that call: the UI page, routed by its fragment to the call screen.
    for line in &lines[5..] {
        let link = line.rsplit(',').next().expect("a Call Link");
        let (page, fragment) = link.split_once('#').expect("a UI route");
        let id = fragment.strip_prefix("/calls/").expect("the call screen");
        assert!(line.starts_with(id), "{line}");
        let page = c.send(Method::GET, page, None, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{link}");
        assert!(
            String::from_utf8_lossy(&page.body).contains("app.js"),
            "{link}"
        );
    }

    let r = c
        .send(
            Method::POST,
            "/api/v1/recordings/export",
            Some(json!({"format": "xlsx", "recordings": [r1.id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..2], b"PK", "an XLSX is a ZIP package");
    let mut x = zip::ZipArchive::new(std::io::Cursor::new(r.body.to_vec())).expect("xlsx");
    let mut strings = String::new();
    x.by_name("xl/sharedStrings.xml")
        .expect("strings")
        .read_to_string(&mut strings)
        .expect("read");
    assert!(strings.contains("Call Link") && strings.contains(&r1.id.to_string()));

    let actions: Vec<String> = audit_actions(&f).await.into_iter().map(|x| x.1).collect();
    for want in ["export.zip", "export.csv", "export.xlsx"] {
        assert!(actions.iter().any(|a| a == want), "{want} audited");
    }
}

async fn impersonation_is_read_only_and_audited(f: Fixture) {
    setup(&f).await;
    let bob = f.user("bob", &["agents"]).await;
    let mine = f
        .recording(Some(bob), vec![], "1", "2", &audio(10, 10))
        .await;
    f.recording(None, vec![], "1", "2", &audio(10, 11)).await;
    let mut c = f.login("admin").await;
    let (_, all) = c
        .json(Method::POST, "/api/v1/recordings/search", json!({}))
        .await;
    assert_eq!(all["total"], 2);
    let (s, _) = c
        .json(
            Method::POST,
            &format!("/api/v1/users/{bob}/impersonate"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Bob's view: his call only.
    let (_, page) = c
        .json(Method::POST, "/api/v1/recordings/search", json!({}))
        .await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["id"], mine.id.to_string());
    let me = c.get("/api/v1/auth/me").await.json();
    assert_eq!(
        (
            me["impersonating"].as_bool(),
            me["user"]["username"].as_str(),
            me["actor"]["username"].as_str()
        ),
        (Some(true), Some("bob"), Some("admin"))
    );
    // Read-only.
    let (s, e) = c
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/notes", mine.id),
            json!({"body": "x"}),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("impersonation_read_only"))
    );
    let (s, _) = c
        .json(Method::POST, "/api/v1/auth/impersonation/stop", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, all) = c
        .json(Method::POST, "/api/v1/recordings/search", json!({}))
        .await;
    assert_eq!(all["total"], 2);

    let entries = audit_actions(&f).await;
    assert!(
        entries
            .iter()
            .any(|(a, x, _)| a == "admin" && x == "impersonation.start")
    );
    assert!(
        entries
            .iter()
            .any(|(a, x, _)| a == "admin" && x == "impersonation.end")
    );
    assert!(entries.iter().any(|(a, x, i)| a == "bob"
        && x == "impersonation.request"
        && i.as_deref() == Some("admin")));
    assert!(
        entries
            .iter()
            .any(|(a, x, i)| a == "bob" && x == "search" && i.as_deref() == Some("admin"))
    );
}

async fn audit_trail_api(f: Fixture) {
    setup(&f).await;
    f.user("bob", &["agents"]).await;
    let mut c = f.login("admin").await;
    let mut bob = f.login("bob").await;
    // Bob has no auditTrail permission.
    let r = bob.get("/api/v1/audit").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let r = c.get("/api/v1/audit?actor=bob&action=login").await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    let list = list.as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["actor"], "bob");
    let r = c.get("/api/v1/audit/export.csv?action=login").await;
    let csv = String::from_utf8(r.body.to_vec()).expect("utf8");
    assert!(csv.contains("Seq,Date and Time,Name"));
    assert_eq!(csv.lines().filter(|l| l.contains(",login,")).count(), 2);
    let v = c.get("/api/v1/audit/verify").await.json();
    assert!(v["first_break"].is_null(), "{v}");
    // No endpoint changes or deletes entries.
    for m in [Method::PUT, Method::DELETE, Method::PATCH] {
        let r = c.send(m.clone(), "/api/v1/audit", None, &[]).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
}

async fn openapi_lists_every_route_and_probes_work(f: Fixture) {
    setup(&f).await;
    let mut c = Client::new(f.router.clone());
    let doc = c.get("/api/v1/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"].clone();
    assert!(
        codes
            .as_array()
            .expect("codes")
            .iter()
            .any(|c| c == "key_not_granted")
    );
    for e in callvault_portal::openapi::ENDPOINTS {
        assert!(doc["paths"][format!("/api/v1{}", e.path)][e.method].is_object());
        let path = format!(
            "/api/v1{}",
            e.path.replace("{id}", &uuid::Uuid::new_v4().to_string())
        );
        let method: Method = e.method.to_uppercase().parse().expect("method");
        let r = c.send(method, &path, Some(json!({})), &[]).await;
        // The route exists: whatever the answer, it is not the router's "no such endpoint".
        assert!(
            !(r.status == StatusCode::NOT_FOUND && r.json()["message"] == "no such API endpoint")
                && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {} is routed",
            e.method,
            e.path
        );
        if e.authenticated {
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{} {}",
                e.method,
                e.path
            );
        }
    }
    // SCIM endpoints: documented under /scim/v2 with the bearer scheme, and routed (the
    // router's own fallback would answer 404, not 401).
    assert_eq!(
        doc["components"]["securitySchemes"]["scimBearer"]["scheme"],
        "bearer"
    );
    // Without single sign-on the sign-in page is told local accounts only (so no SSO button).
    assert_eq!(
        c.get("/api/v1/auth/providers").await.json(),
        json!({"local": true, "oidc": null})
    );
    for e in callvault_portal::openapi::SCIM_ENDPOINTS {
        let op = &doc["paths"][format!("/scim/v2{}", e.path)][e.method];
        assert_eq!(
            op["security"][0]["scimBearer"],
            json!([]),
            "{} {}",
            e.method,
            e.path
        );
        let path = format!(
            "/scim/v2{}",
            e.path.replace("{id}", &uuid::Uuid::new_v4().to_string())
        );
        let method: Method = e.method.to_uppercase().parse().expect("method");
        let r = c.send(method, &path, Some(json!({})), &[]).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{} {}",
            e.method,
            e.path
        );
    }
    let r = c.send(Method::GET, "/scim/v2/Nope", None, &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "an unknown SCIM path");
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(c.get("/readyz").await.status, StatusCode::OK);
    // Metrics are served on the operations address only.
    assert_eq!(c.get("/metrics").await.status, StatusCode::NOT_FOUND);
    let mut ops = Client::new(f.ops.clone());
    let m = String::from_utf8(ops.get("/metrics").await.body.to_vec()).expect("utf8");
    assert!(m.contains(
        "callvault_portal_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
    ));
    let r = c.get("/api/v1/nope").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

fn names(v: &serde_json::Value, field: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn declared_resources_groups_alarms_and_activity(f: Fixture) {
    setup(&f).await;
    f.user("agent", &["agents"]).await;
    f.user("agent2", &["agents"]).await;
    f.declare(common::declared_resources());
    let mut admin = f.login("admin").await;

    // Each kind with its spec and the status the controller reported.
    let rp = admin.get("/api/v1/resources/recording-profiles").await;
    assert_eq!(rp.status, StatusCode::OK);
    let rp = rp.json();
    assert_eq!(names(&rp, "name"), ["retail-banking-agents"]);
    assert_eq!(rp[0]["kind"], "RecordingProfile");
    assert_eq!(rp[0]["spec"]["storageTargetRef"]["name"], "primary-s3");
    assert_eq!(rp[0]["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(rp[0]["status"]["conditions"][0]["status"], "True");
    assert_eq!(rp[0]["status"]["readyReplicas"], 2);
    let ap = admin.get("/api/v1/resources/access-profiles").await.json();
    assert_eq!(names(&ap, "name"), ["admins", "agents"]);
    assert_eq!(ap[1]["spec"]["calls"]["scope"], "Own");
    let st = admin.get("/api/v1/resources/storage-targets").await.json();
    assert_eq!(names(&st, "name"), ["primary-s3"]);
    assert_eq!(st[0]["status"]["usedBytes"], 123_456);
    let cn = admin.get("/api/v1/resources/connectors").await.json();
    assert_eq!(names(&cn, "name"), ["offsite-archive"]);
    // No controller reported a status: shown as such, not invented.
    assert!(cn[0]["status"].is_null());
    let sj = admin.get("/api/v1/resources/speech-jobs").await.json();
    assert_eq!(names(&sj, "name"), ["complaints-transcription"]);
    assert_eq!(sj[0]["spec"]["language"], "en-GB");

    // A change of the declared resources shows on the next request.
    f.declare(vec![]);
    let rp = admin
        .get("/api/v1/resources/recording-profiles")
        .await
        .json();
    assert_eq!(rp, json!([]));
    f.declare(common::declared_resources());

    // Groups with their members.
    let g = admin.get("/api/v1/groups").await;
    assert_eq!(g.status, StatusCode::OK);
    let g = g.json();
    assert_eq!(names(&g, "name"), ["admins", "agents"]);
    assert_eq!(g[1]["members"], json!(["agent", "agent2"]));
    assert_eq!(g[0]["members"], json!(["admin"]));

    // Alarms as the jobs raise and clear them: active ones, then the history.
    f.db.raise_alarm(
        T,
        "storage_unreachable",
        "primary-s3",
        AlarmSeverity::Critical,
        "primary-s3 cannot be written",
    )
    .await
    .expect("raise");
    f.db.raise_alarm(
        T,
        "spool_usage",
        "recorder-0",
        AlarmSeverity::Major,
        "spool 91 % full",
    )
    .await
    .expect("raise");
    assert!(
        f.db.clear_alarm(T, "spool_usage", "recorder-0")
            .await
            .expect("clear")
    );
    let active = admin.get("/api/v1/alarms").await.json();
    assert_eq!(names(&active, "source"), ["primary-s3"]);
    assert_eq!(active[0]["severity"], "critical");
    assert!(active[0]["cleared_at"].is_null());
    let history = admin.get("/api/v1/alarms?history=true").await.json();
    let mut sources = names(&history, "source");
    sources.sort();
    assert_eq!(sources, ["primary-s3", "recorder-0"]);
    assert!(
        history
            .as_array()
            .expect("list")
            .iter()
            .any(|a| a["source"] == "recorder-0" && a["cleared_at"].is_i64())
    );
    let r = admin.get("/api/v1/alarms?limit=0").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );

    // The activity log, newest first, paged backwards.
    for m in ["archive run: 3 copied", "retention run: 2 deleted"] {
        f.db.log_activity(T, "job", m).await.expect("log");
    }
    let log = admin.get("/api/v1/activity").await.json();
    assert_eq!(
        names(&log, "message"),
        ["retention run: 2 deleted", "archive run: 3 copied"]
    );
    let newest = log[0]["id"].as_i64().expect("id");
    let older = admin
        .get(&format!("/api/v1/activity?before={newest}"))
        .await
        .json();
    assert_eq!(names(&older, "message"), ["archive run: 3 copied"]);

    // An agent (scope Own, no admin permission) sees none of it.
    let mut agent = f.login("agent").await;
    for path in [
        "/api/v1/groups",
        "/api/v1/resources/recording-profiles",
        "/api/v1/resources/access-profiles",
        "/api/v1/resources/storage-targets",
        "/api/v1/resources/connectors",
        "/api/v1/resources/speech-jobs",
        "/api/v1/alarms",
        "/api/v1/activity",
    ] {
        let r = agent.get(path).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
        assert!(!String::from_utf8_lossy(&r.body).contains("primary-s3"));
    }
}

/// Resource files (standalone): every kind is read from the directory and re-read on reload.
#[test]
fn resource_files_yield_every_kind() {
    use callvault_portal::{AccessSource, FileAccessSource};
    let dir = tempfile::tempdir().expect("tempdir");
    let profiles = ADMIN_PROFILE.replace("KEY", &"0".repeat(64));
    std::fs::write(dir.path().join("access.yaml"), &profiles).expect("write");
    let source = FileAccessSource::load_dir(dir.path(), T).expect("load");
    let kinds = |s: &FileAccessSource| -> Vec<String> {
        let mut k: Vec<String> = s
            .resources(T)
            .iter()
            .map(|r| format!("{} {}", r.kind(), r.name()))
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        kinds(&source),
        ["AccessProfile admins", "AccessProfile agents"]
    );
    std::fs::write(dir.path().join("system.yml"), common::RESOURCES).expect("write");
    assert_eq!(source.reload().expect("reload"), 2);
    assert_eq!(
        kinds(&source),
        [
            "AccessProfile admins",
            "AccessProfile agents",
            "Connector offsite-archive",
            "RecordingProfile retail-banking-agents",
            "SpeechJob complaints-transcription",
            "StorageTarget primary-s3",
        ]
    );
    assert_eq!(source.profiles(T).len(), 2);
    assert!(source.resources("another-tenant").is_empty());
}

async fn active_calls_and_my_active_call(f: Fixture) {
    setup(&f).await;
    let agent = f.user("agent", &["agents"]).await;
    let agent2 = f.user("agent2", &["agents"]).await;
    let mine = f
        .active_recording(Some(agent), vec![], "201", "+4420")
        .await;
    let theirs = f
        .active_recording(Some(agent2), vec![], "202", "+4421")
        .await;
    let unassigned = f.active_recording(None, vec![], "203", "+4422").await;
    // A finished call of the agent's is not active.
    f.recording(Some(agent), vec![], "201", "+4423", &audio(100, 3))
        .await;

    let ids = |v: &serde_json::Value| -> Vec<String> {
        let mut ids = names(v, "id");
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // The admin (scope All) sees every active call, with its user.
    let mut admin = f.login("admin").await;
    let all = admin.get("/api/v1/active-calls").await;
    assert_eq!(all.status, StatusCode::OK);
    let all = all.json();
    assert_eq!(
        ids(&all),
        sorted(vec![
            mine.id.to_string(),
            theirs.id.to_string(),
            unassigned.id.to_string()
        ])
    );
    let row = all
        .as_array()
        .expect("list")
        .iter()
        .find(|r| r["id"] == mine.id.to_string())
        .expect("agent's call")
        .clone();
    assert_eq!(row["user_name"], "agent");
    assert_eq!(row["status"], "recording");
    assert_eq!(row["calling"]["number"], "201");
    // The admin has no call of their own.
    assert_eq!(
        admin.get("/api/v1/active-calls/mine").await.json(),
        json!([])
    );

    // The agent (scope Own) sees only their own, in both lists; never another agent's.
    let mut a = f.login("agent").await;
    for path in ["/api/v1/active-calls", "/api/v1/active-calls/mine"] {
        let r = a.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(ids(&r.json()), [mine.id.to_string()], "{path}");
        // Not even the other agent's number, anywhere (a JSON string "202", not digits
        // inside an id or a timestamp).
        assert!(
            !String::from_utf8_lossy(&r.body).contains("\"202\""),
            "{path}"
        );
    }

    // Shown so long as the call lasts: once committed, it leaves both lists.
    f.end_live_call(&mine).await;
    assert_eq!(a.get("/api/v1/active-calls/mine").await.json(), json!([]));
    assert_eq!(a.get("/api/v1/active-calls").await.json(), json!([]));

    // While impersonating the agent, the admin sees what the agent sees.
    let r = admin
        .send(
            Method::POST,
            &format!("/api/v1/users/{agent2}/impersonate"),
            None,
            &[],
        )
        .await;
    assert!(r.status.is_success(), "impersonate: {}", r.status);
    assert_eq!(
        ids(&admin.get("/api/v1/active-calls/mine").await.json()),
        [theirs.id.to_string()]
    );
}

/// Tags, notes and export straight from the active-calls list (compliance-recorder F-86–F-88):
/// each goes through the same access check as on a recorded call, the list shows what was
/// set, and what was set on a live call stays on its recording.
async fn tags_notes_and_export_on_active_calls(f: Fixture) {
    setup(&f).await;
    let agent = f.user("agent", &["agents"]).await;
    let live = f
        .active_recording(Some(agent), vec![], "301", "+4430")
        .await;
    let unassigned = f.active_recording(None, vec![], "302", "+4431").await;
    let recorded = f
        .recording(Some(agent), vec![], "303", "+4432", &audio(100, 4))
        .await;

    let mut admin = f.login("admin").await;
    let (s, tag) = admin
        .json(
            Method::POST,
            "/api/v1/tags",
            json!({"name": "Live follow-up"}),
        )
        .await;
    assert!(s.is_success(), "{tag}");
    let (s, b) = admin
        .json(
            Method::PUT,
            "/api/v1/recordings/tags",
            json!({"recordings": [live.id], "tags": [tag["id"]]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "tags on a live call: {b}");
    let (s, note) = admin
        .json(
            Method::POST,
            &format!("/api/v1/recordings/{}/notes", live.id),
            json!({"body": "callback requested"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "a note on a live call: {note}");

    // The list shows them, and what the admin may do on each call.
    let list = admin.get("/api/v1/active-calls").await.json();
    let row = |id: uuid::Uuid| {
        list.as_array()
            .expect("list")
            .iter()
            .find(|r| r["id"] == id.to_string())
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
            .clone()
    };
    let mine = row(live.id);
    assert_eq!(names(&mine["tags"], "name"), ["Live follow-up"]);
    assert_eq!(names(&mine["notes"], "body"), ["callback requested"]);
    assert_eq!(mine["notes"][0]["author_name"], "admin display");
    for a in ["tag", "addNotes", "export"] {
        assert!(
            mine["allowed"]
                .as_array()
                .expect("allowed")
                .contains(&json!(a)),
            "{a}: {mine}"
        );
    }
    assert_eq!(row(unassigned.id)["tags"], json!([]));
    assert_eq!(row(unassigned.id)["notes"], json!([]));

    // The list's Export: the live calls, each an entry, with their tags and notes; not the
    // recorded call.
    let r = admin.export_active_calls().await;
    assert_eq!(r.status, StatusCode::OK);
    let csv = String::from_utf8_lossy(&r.body).into_owned();
    assert!(csv.contains("Search Criteria"), "{csv}");
    assert!(csv.contains(&live.id.to_string()), "{csv}");
    assert!(csv.contains(&unassigned.id.to_string()), "{csv}");
    assert!(!csv.contains(&recorded.id.to_string()), "{csv}");
    assert!(
        csv.contains("Live follow-up") && csv.contains("callback requested"),
        "{csv}"
    );
    // As the spec's active-calls export: status "Recording", no release time yet, and the
    // expiry already known.
    let lines: Vec<&str> = csv.lines().collect();
    let header: Vec<&str> = lines[4].split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&live.id.to_string()))
        .expect("the live call's row")
        .split(',')
        .collect();
    assert_eq!(row.len(), 27, "{csv}");
    assert_eq!(row[column("Media Audio Status")], "Recording");
    assert_eq!(row[column("Release Time")], "");
    assert_eq!(
        row[column("Expiration")],
        callvault_portal::export::iso(live.expires_at.expect("expiry"))
    );
    // One selected live call exports too.
    let r = admin
        .send(
            Method::POST,
            "/api/v1/recordings/export",
            Some(json!({"format": "csv", "recordings": [unassigned.id]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&r.body).contains(&unassigned.id.to_string()));

    // The agent (scope Own, play only) sees their live call but may do none of it: 403; the
    // unassigned live call is not theirs to see: 404.
    let mut a = f.login("agent").await;
    let list = a.get("/api/v1/active-calls").await.json();
    assert_eq!(names(&list, "id"), [live.id.to_string()]);
    assert_eq!(list[0]["allowed"], json!(["play"]));
    for (id, want) in [
        (live.id, StatusCode::FORBIDDEN),
        (unassigned.id, StatusCode::NOT_FOUND),
    ] {
        let (s, _) = a
            .json(
                Method::PUT,
                "/api/v1/recordings/tags",
                json!({"recordings": [id], "tags": []}),
            )
            .await;
        assert_eq!(s, want, "tags {id}");
        let (s, _) = a
            .json(
                Method::POST,
                &format!("/api/v1/recordings/{id}/notes"),
                json!({"body": "x"}),
            )
            .await;
        assert_eq!(s, want, "note {id}");
        let r = a
            .send(
                Method::POST,
                "/api/v1/recordings/export",
                Some(json!({"format": "csv", "recordings": [id]})),
                &[],
            )
            .await;
        assert_eq!(r.status, want, "export {id}");
    }
    let r = a
        .send(
            Method::POST,
            "/api/v1/recordings/export",
            Some(json!({"format": "csv", "query": {"statuses": ["recording"]}})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Audited like any other, and kept on the recording once the call ends.
    let actions = audit_actions(&f).await;
    for action in ["tag.set", "note.add", "export.csv"] {
        assert!(
            actions
                .iter()
                .any(|(who, a, _)| who == "admin" && a == action),
            "{action}: {actions:?}"
        );
    }
    f.end_live_call(&live).await;
    let d = admin
        .get(&format!("/api/v1/recordings/{}", live.id))
        .await
        .json();
    assert_eq!(names(&d["tags"], "name"), ["Live follow-up"]);
    assert_eq!(names(&d["notes"], "body"), ["callback requested"]);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Fixture::postgres().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Fixture::sqlite().await).await
            }
        }
    )*};
}

suite!(
    sign_in_and_sessions,
    lockout_must_change_and_reset,
    idle_and_absolute_timeouts,
    playback_seeks_with_range_and_falls_back_to_archive,
    download_integrity_and_tamper,
    tags_notes_delete_and_legal_hold,
    assign_unassigned_calls,
    supervisors_see_their_groups_calls_as_the_groups_were_then,
    meeting_attendees_play_the_part_they_attended,
    directory_rules,
    every_error_body_is_json_with_a_code,
    overlapping_recording_profiles_show_a_conflict_on_the_newer_one,
    zip_csv_and_xlsx_exports,
    impersonation_is_read_only_and_audited,
    audit_trail_api,
    openapi_lists_every_route_and_probes_work,
    declared_resources_groups_alarms_and_activity,
    active_calls_and_my_active_call,
    tags_notes_and_export_on_active_calls,
);
