//! The access matrix, exhaustively, on real PostgreSQL: for every call scope × call action
//! (none or one) × admin permission (none or one) × key grant (none or the recordings' key),
//! the subject's AccessProfile is replaced live and every endpoint is requested on every kind
//! of call (own, a managed group member's, another user's, unassigned) and for every user's
//! legal hold; the active-call lists show exactly the live calls in scope (and "my active
//! call" exactly the subject's own), and tags, notes and export on live calls (each, and the
//! list's export) follow the same rules; each admin view needs exactly one of its permissions.
//! The expected answer comes from an oracle written here from the rules, not from
//! the portal's code: invisible → 404, visible but not allowed → 403 `forbidden`, allowed but
//! key not granted (audio) → 403 `key_not_granted`, else success. Then every endpoint without
//! a session (401) and every unsafe one without the CSRF header (403); and every SCIM endpoint
//! (bearer token, never a session) without or with a wrong token, or with a session, 401.
//! Last, the escalation paths: every admin permission × key grant against impersonation,
//! account creation and password resets, with 0 escalations.

mod common;

use axum::http::{Method, StatusCode};
use callvault_portal::PortalConfig;
use callvault_portal::oidc::Secret;
use callvault_store::db::testing::TestDb;
use common::{Client, Fixture, audio};
use serde_json::json;
use uuid::Uuid;

const SCOPES: [&str; 4] = ["None", "Own", "OwnAndGroups", "All"];
const ACTIONS: [&str; 9] = [
    "",
    "play",
    "download",
    "export",
    "tag",
    "addNotes",
    "deleteOthersNotes",
    "deleteCalls",
    "legalHold",
];
const ADMIN: [&str; 6] = [
    "",
    "manageRecordingProfiles",
    "manageAccessProfiles",
    "manageTags",
    "configureSystem",
    "auditTrail",
];

/// Which call a case is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Own,
    Team,
    Other,
    Unassigned,
}

fn visible(scope: &str, kind: Kind) -> bool {
    match scope {
        "Own" => kind == Kind::Own,
        "OwnAndGroups" => matches!(kind, Kind::Own | Kind::Team),
        "All" => true,
        _ => false,
    }
}

/// The oracle: the status an action on a call must get.
fn expect(
    scope: &str,
    granted: &str,
    key: bool,
    kind: Kind,
    action: &str,
    audio_needed: bool,
) -> u16 {
    if !visible(scope, kind) {
        return 404;
    }
    if !action.is_empty() && granted != action {
        return 403;
    }
    if audio_needed && !key {
        return 403;
    }
    200
}

fn profile(scope: &str, action: &str, admin: &str, key: Option<&str>) -> String {
    let groups = if scope == "OwnAndGroups" {
        "[team]"
    } else {
        "[]"
    };
    let actions = if action.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{{action}: true}}")
    };
    let admin = if admin.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{{admin}: true}}")
    };
    let keys = key.map_or_else(|| "[]".to_owned(), |k| format!("[{k}]"));
    format!(
        "apiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: subject}}\n\
         spec:\n  subjects: {{users: [subject]}}\n  calls: {{scope: {scope}, groups: {groups}, actions: {actions}}}\n\
         \x20 admin: {admin}\n  keys: {keys}\n"
    )
}

#[derive(Debug, Clone, Copy)]
struct Case {
    scope: &'static str,
    action: &'static str,
    admin: &'static str,
    key: bool,
}

/// Concurrent workers, each with its own seeded database, sharing the cases round-robin: most
/// of a case's time is spent waiting on PostgreSQL, so they overlap well even on few cores.
const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_action_admin_permission_and_key_grant_on_every_endpoint() {
    let started = std::time::Instant::now();
    let cases: Vec<Case> = SCOPES
        .iter()
        .flat_map(|&scope| {
            ACTIONS.iter().flat_map(move |&action| {
                ADMIN.iter().flat_map(move |&admin| {
                    [false, true].map(|key| Case {
                        scope,
                        action,
                        admin,
                        key,
                    })
                })
            })
        })
        .collect();
    assert_eq!(cases.len(), SCOPES.len() * ACTIONS.len() * ADMIN.len() * 2);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let mine: Vec<Case> = cases.iter().skip(w).step_by(WORKERS).copied().collect();
        workers.spawn(worker(mine));
    }
    let (mut checked, mut failures) = (0u64, Vec::new());
    while let Some(done) = workers.join_next().await {
        let (n, f) = done.expect("worker");
        checked += n;
        failures.extend(f);
    }
    println!(
        "access matrix: {} profiles, {checked} cases checked in {:.1} s, {} failures",
        cases.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} access cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 4 scopes × 9 actions × 6 admin × 2 keys × (4 calls × 12 call endpoints + 4 live calls ×
    // 3 actions + the live calls' export + 3 holds + list + 5 admin + 2 active-call lists + 9
    // admin views).
    assert_eq!(
        checked,
        4 * 9 * 6 * 2 * (4 * 12 + 4 * 3 + 1 + 3 + 1 + 5 + 2 + 9)
    );
}

/// Seeds a database (the subject, a member of the managed group `team`, another user, a call
/// of each kind, a tag), signs the subject in once and runs `cases`, replacing the subject's
/// AccessProfile live before each.
async fn worker(cases: Vec<Case>) -> (u64, Vec<String>) {
    let f = Fixture::postgres().await;
    let subject = f.user("subject", &["home"]).await;
    let member = f.user("member", &["team"]).await;
    let other = f.user("other", &["elsewhere"]).await;
    let (home, elsewhere) = (f.group("home").await, f.group("elsewhere").await);
    // The member's calls get the team's group from the member's number, as the recorder's
    // calls do: no group is given here.
    f.db.add_extension(common::T, "102", member)
        .await
        .expect("extension");
    let plain = audio(3000, 42);
    let calls = [
        (
            Kind::Own,
            f.recording(Some(subject), vec![home], "101", "+1555", &plain)
                .await
                .id,
        ),
        (
            Kind::Team,
            f.recording(Some(member), vec![], "102", "+1555", &plain)
                .await
                .id,
        ),
        (
            Kind::Other,
            f.recording(Some(other), vec![elsewhere], "103", "+1555", &plain)
                .await
                .id,
        ),
        (
            Kind::Unassigned,
            f.recording(None, vec![], "104", "+1555", &plain).await.id,
        ),
    ];
    // A live call of each kind too: the active-call lists, and the Interactions list, show them.
    let mut active = Vec::new();
    for (kind, owner, groups) in [
        (Kind::Own, Some(subject), vec![home]),
        (Kind::Team, Some(member), vec![]),
        (Kind::Other, Some(other), vec![elsewhere]),
        (Kind::Unassigned, None, vec![]),
    ] {
        active.push((
            kind,
            f.active_recording(owner, groups, "105", "+1666").await.id,
        ));
    }
    f.declare(common::declared_resources());
    let users = [
        (Kind::Own, subject),
        (Kind::Team, member),
        (Kind::Other, other),
    ];
    let tag =
        f.db.create_tag(common::T, "Matrix", "")
            .await
            .expect("tag")
            .id;

    f.profiles(&profile("None", "", "", None));
    let mut c = f.login("subject").await;
    let mut checked = 0u64;
    let mut failures = Vec::new();
    for case in &cases {
        f.profiles(&profile(
            case.scope,
            case.action,
            case.admin,
            case.key.then_some(f.key_id.as_str()),
        ));
        run_case(
            &f,
            &mut c,
            case,
            &calls,
            &active,
            &users,
            tag,
            &mut checked,
            &mut failures,
        )
        .await;
    }
    (checked, failures)
}

#[allow(clippy::too_many_arguments)]
async fn run_case(
    f: &Fixture,
    c: &mut Client,
    case: &Case,
    calls: &[(Kind, Uuid)],
    active: &[(Kind, Uuid)],
    users: &[(Kind, Uuid)],
    tag: Uuid,
    checked: &mut u64,
    failures: &mut Vec<String>,
) {
    let label = format!(
        "scope={} action={:?} admin={:?} key={}",
        case.scope, case.action, case.admin, case.key
    );
    // One tally for every assertion of the case, so checks and plain failures share it.
    // A Mutex, not a RefCell: the case's future is sent between the runtime's threads.
    let tally = std::sync::Mutex::new((checked, failures));
    let fail = |message: String| tally.lock().expect("tally").1.push(message);
    let count = || *tally.lock().expect("tally").0 += 1;
    let check = |what: String, got: u16, want: u16, code: String| {
        count();
        // 403s must say which: a missing key grant is `key_not_granted`, else `forbidden`.
        let code_ok = match (got, want) {
            (403, 403) => code == "forbidden" || code == "key_not_granted",
            _ => true,
        };
        if got != want || !code_ok {
            fail(format!("{label} {what}: got {got} ({code}), want {want}"));
        }
    };
    let e = |kind, action: &str, audio_needed: bool| {
        expect(
            case.scope,
            case.action,
            case.key,
            kind,
            action,
            audio_needed,
        )
    };

    // The list shows exactly the visible calls.
    let (s, page) = c
        .json(
            Method::POST,
            "/api/v1/recordings/search",
            json!({"query": {}}),
        )
        .await;
    let got: std::collections::BTreeSet<String> = page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let want: std::collections::BTreeSet<String> = calls
        .iter()
        .chain(active)
        .filter(|(k, _)| visible(case.scope, *k))
        .map(|(_, id)| id.to_string())
        .collect();
    count();
    if s != StatusCode::OK || got != want {
        fail(format!("{label} list: got {got:?}, want {want:?}"));
    }

    for (kind, id) in calls {
        let kind = *kind;
        let key_code = |r: &common::Resp| r.code();
        // Reading.
        for (name, path, action, audio_needed) in [
            ("detail", format!("/api/v1/recordings/{id}"), "", false),
            ("notes", format!("/api/v1/recordings/{id}/notes"), "", false),
            (
                "integrity",
                format!("/api/v1/recordings/{id}/integrity"),
                "",
                false,
            ),
            (
                "media",
                format!("/api/v1/recordings/{id}/media"),
                "play",
                true,
            ),
            (
                "download",
                format!("/api/v1/recordings/{id}/download"),
                "download",
                true,
            ),
        ] {
            let r = c
                .send(Method::GET, &path, None, &[("range", "bytes=0-15")])
                .await;
            let want = e(kind, action, audio_needed);
            // 206 for the Range request counts as success.
            let got = if r.status.is_success() {
                200
            } else {
                r.status.as_u16()
            };
            check(format!("{name} {kind:?}"), got, want, key_code(&r));
            if r.status.is_success() && audio_needed {
                let n = r.body.len();
                if plain_prefix_mismatch(&r.body, n) {
                    fail(format!("{label} {name} {kind:?}: wrong bytes"));
                }
            }
        }
        // Writing and exporting.
        let posts = [
            (
                "note.add",
                Method::POST,
                format!("/api/v1/recordings/{id}/notes"),
                json!({"body": "matrix note"}),
                "addNotes",
                false,
            ),
            (
                "tags",
                Method::PUT,
                "/api/v1/recordings/tags".to_owned(),
                json!({"recordings": [id], "tags": [tag]}),
                "tag",
                false,
            ),
            (
                "delete",
                Method::POST,
                "/api/v1/recordings/delete".to_owned(),
                json!({"recordings": [id], "authorized_by": "matrix"}),
                "deleteCalls",
                false,
            ),
            (
                "export.csv",
                Method::POST,
                "/api/v1/recordings/export".to_owned(),
                json!({"format": "csv", "recordings": [id]}),
                "export",
                false,
            ),
            (
                "zip",
                Method::POST,
                "/api/v1/recordings/zip".to_owned(),
                json!({"recordings": [id]}),
                "export",
                true,
            ),
        ];
        for (name, method, path, body, action, audio_needed) in posts {
            let r = c.send(method, &path, Some(body), &[]).await;
            check(
                format!("{name} {kind:?}"),
                r.status.as_u16(),
                e(kind, action, audio_needed),
                r.code(),
            );
        }
        // Deleting a note: another user's needs deleteOthersNotes; one's own needs addNotes.
        for (name, author, action) in [
            ("note.delete.others", "member", "deleteOthersNotes"),
            ("note.delete.own", "subject", "addNotes"),
        ] {
            let author_id =
                f.db.user_by_username(common::T, author)
                    .await
                    .expect("db")
                    .expect("user")
                    .id;
            let note =
                f.db.add_note(common::T, *id, Some(author_id), author, "to delete")
                    .await
                    .expect("note");
            let r = c
                .send(
                    Method::DELETE,
                    &format!("/api/v1/notes/{}", note.id),
                    None,
                    &[],
                )
                .await;
            check(
                format!("{name} {kind:?}"),
                r.status.as_u16(),
                e(kind, action, false),
                r.code(),
            );
        }
    }

    // Live calls, straight from the active-calls list: tags and notes on each, and its export,
    // go through the same check as on a recorded call (none of them needs the audio).
    for (kind, id) in active {
        for (name, method, path, body, action) in [
            (
                "live note.add",
                Method::POST,
                format!("/api/v1/recordings/{id}/notes"),
                json!({"body": "live note"}),
                "addNotes",
            ),
            (
                "live tags",
                Method::PUT,
                "/api/v1/recordings/tags".to_owned(),
                json!({"recordings": [id], "tags": [tag]}),
                "tag",
            ),
            (
                "live export.csv",
                Method::POST,
                "/api/v1/recordings/export".to_owned(),
                json!({"format": "csv", "recordings": [id]}),
                "export",
            ),
        ] {
            let r = c.send(method, &path, Some(body), &[]).await;
            check(
                format!("{name} {kind:?}"),
                r.status.as_u16(),
                e(*kind, action, false),
                r.code(),
            );
        }
    }
    // The active-calls list's Export: exactly the live calls the export action covers.
    let r = c.export_active_calls().await;
    let exports = case.action == "export" && case.scope != "None";
    count();
    let body = String::from_utf8_lossy(&r.body);
    let listed: Vec<String> = active
        .iter()
        .filter(|(_, id)| body.contains(&id.to_string()))
        .map(|(k, _)| format!("{k:?}"))
        .collect();
    let want: Vec<String> = active
        .iter()
        .filter(|(k, _)| exports && visible(case.scope, *k))
        .map(|(k, _)| format!("{k:?}"))
        .collect();
    let leaked = calls.iter().any(|(_, id)| body.contains(&id.to_string()));
    if r.status.as_u16() != if exports { 200 } else { 403 } || listed != want || leaked {
        fail(format!(
            "{label} active export: got {} {listed:?} (recorded calls leaked: {leaked}), want {want:?}",
            r.status
        ));
    }

    // Legal hold per user (lifting it, so no case changes what the next one sees).
    for (kind, uid) in users {
        let r = c
            .send(
                Method::PUT,
                &format!("/api/v1/users/{uid}/legal-hold"),
                Some(json!({"hold": false})),
                &[],
            )
            .await;
        check(
            format!("legal-hold {kind:?}"),
            r.status.as_u16(),
            e(*kind, "legalHold", false),
            r.code(),
        );
    }

    // Active calls: exactly the live calls in scope; "my active call" exactly the subject's
    // own, whatever the scope (and never another user's).
    let ids = |r: &common::Resp| -> Option<std::collections::BTreeSet<String>> {
        r.json().as_array().map(|a| {
            a.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .collect()
        })
    };
    for (name, path, own_only) in [
        ("active-calls", "/api/v1/active-calls", false),
        ("active-calls.mine", "/api/v1/active-calls/mine", true),
    ] {
        let r = c.get(path).await;
        let want: std::collections::BTreeSet<String> = active
            .iter()
            .filter(|(k, _)| {
                if own_only {
                    *k == Kind::Own
                } else {
                    visible(case.scope, *k)
                }
            })
            .map(|(_, id)| id.to_string())
            .collect();
        count();
        if r.status != StatusCode::OK || ids(&r).as_ref() != Some(&want) {
            fail(format!(
                "{label} {name}: got {} {:?}, want {want:?}",
                r.status,
                ids(&r)
            ));
        }
    }

    // Admin views: each needs one of its permissions; a refusal discloses nothing.
    for (path, perms) in [
        ("/api/v1/groups", &["configureSystem"][..]),
        (
            "/api/v1/resources/recording-profiles",
            &["manageRecordingProfiles", "configureSystem"][..],
        ),
        (
            "/api/v1/resources/access-profiles",
            &["manageAccessProfiles", "configureSystem"][..],
        ),
        (
            "/api/v1/resources/storage-targets",
            &["configureSystem"][..],
        ),
        ("/api/v1/resources/connectors", &["configureSystem"][..]),
        ("/api/v1/resources/speech-jobs", &["configureSystem"][..]),
        ("/api/v1/alarms", &["configureSystem"][..]),
        ("/api/v1/alarms?history=true", &["configureSystem"][..]),
        ("/api/v1/activity", &["configureSystem"][..]),
    ] {
        let r = c.get(path).await;
        let want = if perms.contains(&case.admin) {
            200
        } else {
            403
        };
        check(path.to_owned(), r.status.as_u16(), want, r.code());
        let listed = r.json().as_array().map_or(0, Vec::len);
        if want == 200 && path.starts_with("/api/v1/resources/") && listed == 0 {
            fail(format!("{label} {path}: allowed but empty"));
        }
        if want == 403 && String::from_utf8_lossy(&r.body).contains("subject") {
            fail(format!("{label} {path}: refusal discloses data"));
        }
    }

    // Administration: each endpoint needs exactly its permission; none needs a call scope.
    let admin_ok = |perm: &str| if case.admin == perm { 200 } else { 403 };
    let r = c.get("/api/v1/audit?limit=1").await;
    check(
        "audit".into(),
        r.status.as_u16(),
        admin_ok("auditTrail"),
        r.code(),
    );
    let r = c.get("/api/v1/audit/verify").await;
    check(
        "audit.verify".into(),
        r.status.as_u16(),
        admin_ok("auditTrail"),
        r.code(),
    );
    let r = c.get("/api/v1/users").await;
    check(
        "users".into(),
        r.status.as_u16(),
        admin_ok("configureSystem"),
        r.code(),
    );
    let r = c.get("/api/v1/admin/sessions").await;
    check(
        "sessions.all".into(),
        r.status.as_u16(),
        admin_ok("configureSystem"),
        r.code(),
    );
    let name = format!("t-{}", Uuid::new_v4().simple());
    let r = c
        .send(
            Method::POST,
            "/api/v1/tags",
            Some(json!({"name": name})),
            &[],
        )
        .await;
    check(
        "tag.create".into(),
        r.status.as_u16(),
        admin_ok("manageTags"),
        r.code(),
    );
}

/// The recordings' plaintext starts with `audio(3000, 42)`; a Range 0-15 must return its
/// first 16 bytes and a full download all of it.
fn plain_prefix_mismatch(body: &[u8], n: usize) -> bool {
    let plain = audio(3000, 42);
    n == 0 || body[..] != plain[..n]
}

/// Every endpoint the OpenAPI document lists as needing a session, requested with no cookie,
/// a forged session cookie and the cookie of a session that was signed out, answers 401 and
/// discloses nothing; every unsafe one, with a live session but no CSRF
/// header, answers 403 `csrf_failed`. Public endpoints are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_every_endpoint_answers_401_and_without_csrf_403() {
    let f = Fixture::postgres().await;
    let owner = f.user("subject", &[]).await;
    f.profiles(&profile("All", "play", "configureSystem", None));
    let call = f
        .recording(Some(owner), vec![], "101", "+1555", &audio(100, 1))
        .await
        .id;
    let mut signed_out = f.login("subject").await;
    let stale = signed_out.cookie.clone().expect("session cookie");
    let r = signed_out
        .send(Method::POST, "/api/v1/auth/logout", None, &[])
        .await;
    assert!(r.status.is_success(), "logout: {}", r.status);
    let mut live = f.login("subject").await;
    live.send_csrf = false;
    let forged = format!("cv_session={}.{}", common::T, "ab".repeat(32));

    let mut checked = 0u64;
    let mut failures = Vec::new();
    let endpoints = callvault_portal::openapi::ENDPOINTS;
    for ep in endpoints.iter().filter(|e| e.authenticated) {
        let path = format!("/api/v1{}", ep.path.replace("{id}", &call.to_string()));
        let method = Method::from_bytes(ep.method.to_ascii_uppercase().as_bytes()).expect("method");
        let body = (method != Method::GET).then(|| json!({}));
        for (who, cookie) in [
            ("no cookie", None),
            ("forged session", Some(forged.clone())),
            ("signed-out session", Some(stale.clone())),
        ] {
            let mut c = Client::new(f.router.clone());
            c.cookie = cookie;
            let r = c.send(method.clone(), &path, body.clone(), &[]).await;
            checked += 1;
            // A signed-out session may say so (`session_expired`); either way 401 and no data.
            let code_ok = matches!(r.code().as_str(), "unauthenticated" | "session_expired");
            if r.status != StatusCode::UNAUTHORIZED
                || !code_ok
                || r.body.windows(3).any(|w| w == b"101")
            {
                failures.push(format!(
                    "{} {path} with {who}: {} {}",
                    ep.method,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
        if method != Method::GET {
            let r = live.send(method.clone(), &path, body.clone(), &[]).await;
            checked += 1;
            if (r.status, r.code().as_str()) != (StatusCode::FORBIDDEN, "csrf_failed") {
                failures.push(format!(
                    "{} {path} without CSRF header: {} {}",
                    ep.method,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    println!("unauthenticated and CSRF: {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let authenticated = endpoints.iter().filter(|e| e.authenticated).count();
    assert!(
        authenticated >= 30,
        "{authenticated} authenticated endpoints"
    );
    assert!(checked >= 3 * authenticated as u64);
}

/// SCIM is authorized by its bearer token alone. Every SCIM endpoint of the OpenAPI document,
/// requested without a token, with a wrong one (as long as the right one, or one character
/// short), and with a live session and its CSRF header instead, answers 401 in the SCIM error
/// schema and discloses no user; with the token, no cookie and no CSRF header it is served (a
/// bearer token is not sent by the browser on its own, so CSRF does not apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_endpoints_answer_401_without_their_bearer_token_whatever_the_session() {
    const TOKEN: &str = "access-matrix-scim-token-0123456789abcdef";
    let f = Fixture::with(
        TestDb::postgres().await,
        PortalConfig {
            scim_token: Some(Secret::new(TOKEN)),
            ..common::config()
        },
    )
    .await;
    let subject = f.user("subject", &["subject-group"]).await;
    f.profiles(&profile("All", "play", "configureSystem", None));
    let group = f.group("subject-group").await;
    let mut live = f.login("subject").await;
    let wrong_same_length = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let one_short = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let right = format!("Bearer {TOKEN}");

    let mut checked = 0u64;
    let mut failures = Vec::new();
    let endpoints = callvault_portal::openapi::SCIM_ENDPOINTS;
    for ep in endpoints {
        let id = if ep.path.starts_with("/Groups") {
            group
        } else {
            subject
        };
        let path = format!("/scim/v2{}", ep.path.replace("{id}", &id.to_string()));
        let method = Method::from_bytes(ep.method.to_ascii_uppercase().as_bytes()).expect("method");
        let body = (method != Method::GET).then(|| json!({}));
        let cases: [(&str, bool, Option<&str>); 5] = [
            ("no token", false, None),
            ("a wrong token", false, Some(wrong_same_length.as_str())),
            (
                "the token one character short",
                false,
                Some(one_short.as_str()),
            ),
            (
                "a basic credential",
                false,
                Some("Basic c3ViamVjdDpwYXNzd29yZA=="),
            ),
            ("a live session with its CSRF header", true, None),
        ];
        for (who, session, auth) in cases {
            let r = if session {
                live.send(method.clone(), &path, body.clone(), &[]).await
            } else {
                let headers: Vec<(&str, &str)> =
                    auth.map(|a| ("authorization", a)).into_iter().collect();
                Client::new(f.router.clone())
                    .send(method.clone(), &path, body.clone(), &headers)
                    .await
            };
            checked += 1;
            let v = r.json();
            let scim_error = v["schemas"][0] == "urn:ietf:params:scim:api:messages:2.0:Error"
                && v["status"] == "401";
            if r.status != StatusCode::UNAUTHORIZED
                || !scim_error
                || r.body.windows(7).any(|w| w == b"subject")
            {
                failures.push(format!(
                    "{} {path} with {who}: {} {}",
                    ep.method,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    // Nothing a refused request sent was applied.
    let u =
        f.db.user(common::T, subject)
            .await
            .expect("db")
            .expect("subject");
    assert!(!u.disabled, "the subject is still enabled");
    assert!(f.db.group(common::T, group).await.expect("db").is_some());
    let by_scim =
        f.db.query_audit(common::T, &Default::default(), 10_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.actor == "scim")
            .count();
    assert_eq!(by_scim, 0, "no SCIM change was recorded");

    // The token alone: served, whatever the body's validity (no 401, no CSRF refusal). The
    // table lists each resource's DELETE last.
    for ep in endpoints {
        let id = if ep.path.starts_with("/Groups") {
            group
        } else {
            subject
        };
        let path = format!("/scim/v2{}", ep.path.replace("{id}", &id.to_string()));
        let method = Method::from_bytes(ep.method.to_ascii_uppercase().as_bytes()).expect("method");
        let body = (method != Method::GET).then(|| json!({}));
        let r = Client::new(f.router.clone())
            .send(
                method.clone(),
                &path,
                body.clone(),
                &[("authorization", right.as_str())],
            )
            .await;
        checked += 1;
        let served = if method == Method::GET {
            r.status == StatusCode::OK
        } else {
            !matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        };
        if !served {
            failures.push(format!(
                "{} {path} with the token: {} {}",
                ep.method,
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
    }
    println!("SCIM without its token: {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(endpoints.len() >= 15, "{} SCIM endpoints", endpoints.len());
    assert!(checked >= 6 * endpoints.len() as u64);
}

/// The profiles of the escalation matrix: `boss` (also anyone named `heir` and every member of
/// `admins` or `owners`) holds every right and the key; `auditor` only the audit trail;
/// `keyholder` only the key grant; `agent` plays and downloads their own calls with the key;
/// `crewsup` deletes the calls of the group `crew`; the subject (the admin under test) sees
/// every call but may do nothing with them, and holds the admin permissions `admin` and, with
/// `key`, the key grant.
fn escalation_profiles(admin: &[&str], key: Option<&str>, key_id: &str) -> String {
    let actions = "{play: true, download: true, export: true, tag: true, addNotes: true, \
                   deleteOthersNotes: true, deleteCalls: true, legalHold: true}";
    let all_admin = "{manageRecordingProfiles: true, manageAccessProfiles: true, manageTags: true, \
                     configureSystem: true, auditTrail: true}";
    let subject_admin = format!(
        "{{{}}}",
        admin
            .iter()
            .map(|p| format!("{p}: true"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let subject_keys = key.map_or_else(|| "[]".to_owned(), |k| format!("[{k}]"));
    format!(
        "apiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: boss}}\n\
         spec:\n  subjects: {{users: [boss, heir], groups: [admins, owners]}}\n\
         \x20 calls: {{scope: All, groups: [], actions: {actions}}}\n\
         \x20 admin: {all_admin}\n  keys: [{key_id}]\n\
         ---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: auditor}}\n\
         spec:\n  subjects: {{users: [auditor]}}\n  calls: {{scope: None, groups: [], actions: {{}}}}\n\
         \x20 admin: {{auditTrail: true}}\n  keys: []\n\
         ---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: keyholder}}\n\
         spec:\n  subjects: {{users: [keyholder, later]}}\n  calls: {{scope: Own, groups: [], actions: {{}}}}\n\
         \x20 admin: {{}}\n  keys: [{key_id}]\n\
         ---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: agent}}\n\
         spec:\n  subjects: {{users: [agent]}}\n  calls: {{scope: Own, groups: [], actions: {{play: true, download: true}}}}\n\
         \x20 admin: {{}}\n  keys: [{key_id}]\n\
         ---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: crew-supervisor}}\n\
         spec:\n  subjects: {{users: [crewsup]}}\n  calls: {{scope: OwnAndGroups, groups: [crew], actions: {{deleteCalls: true}}}}\n\
         \x20 admin: {{}}\n  keys: []\n\
         ---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: subject}}\n\
         spec:\n  subjects: {{users: [subject]}}\n  calls: {{scope: All, groups: [], actions: {{}}}}\n\
         \x20 admin: {subject_admin}\n  keys: {subject_keys}\n"
    )
}

const NEW_PASSWORD: &str = "an escalation test passphrase";
const ESCALATION_SCIM_TOKEN: &str = "escalation-matrix-scim-token-0123456789abcdef";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A SCIM request with the escalation matrix's token.
async fn scim(f: &Fixture, method: Method, path: &str, body: serde_json::Value) -> common::Resp {
    Client::new(f.router.clone())
        .send(
            method,
            &format!("/scim/v2{path}"),
            Some(body),
            &[(
                "authorization",
                format!("Bearer {ESCALATION_SCIM_TOKEN}").as_str(),
            )],
        )
        .await
}

/// No escalation: for every admin permission (each alone, and configureSystem with the audit
/// trail) × key grant (none, or the recordings' key), the subject tries every path to a right
/// it does not hold: impersonating the all-powerful user and playing, downloading, zipping or
/// reading the audit trail as them; creating an account in a group that carries admin rights,
/// or under a name a profile grants rights to; resetting the password (set, or a token) of
/// the all-powerful user, the key holder, or an auditor; redeeming a token minted for an
/// account that has since been promoted; assigning an unassigned call to a user who may play
/// their own calls, or to a member of a group a supervisor's scope names; writing an
/// AccessProfile; and, with the identity provider's SCIM token, adding the subject to the
/// admins' group, renaming its group to one a profile names, or renaming it to a user a
/// profile names. Every such attempt must be refused (0 escalations), while the same paths
/// that give nothing new keep working (a control for each), so the refusals are not blanket
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_permission_escalates_through_any_path() {
    let f = Fixture::with(
        TestDb::postgres().await,
        PortalConfig {
            scim_token: Some(Secret::new(ESCALATION_SCIM_TOKEN)),
            ..common::config()
        },
    )
    .await;
    let subject = f.user("subject", &["home"]).await;
    let boss = f.user("boss", &[]).await;
    let auditor = f.user("auditor", &[]).await;
    let keyholder = f.user("keyholder", &[]).await;
    let agent = f.user("agent", &[]).await;
    let crewman = f.user("crewman", &["crew"]).await;
    let (admins, home) = (f.group("admins").await, f.group("home").await);
    let r = scim(&f, Method::POST, "/Users", json!({"userName": "provided"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    let provided: Uuid = r.json()["id"].as_str().expect("id").parse().expect("uuid");
    let boss_call = f
        .recording(Some(boss), vec![], "201", "+1777", &audio(2000, 9))
        .await
        .id;
    let own_call = f
        .recording(Some(subject), vec![], "202", "+1777", &audio(2000, 10))
        .await
        .id;
    let key_id = f.key_id.clone();
    let mut cases: Vec<Vec<&str>> = ADMIN.iter().map(|p| vec![*p]).collect();
    cases.push(vec!["configureSystem", "auditTrail"]);
    let (mut tried, mut escalations, mut wrong) = (0u64, Vec::new(), Vec::new());
    let mut c = f.login("subject").await;
    for (i, perms) in cases.iter().enumerate() {
        for key in [false, true] {
            let perms: Vec<&str> = perms.iter().copied().filter(|p| !p.is_empty()).collect();
            f.profiles(&escalation_profiles(
                &perms,
                key.then_some(key_id.as_str()),
                &key_id,
            ));
            let label = format!("admin={perms:?} key={key}");
            let has = |p: &str| perms.contains(&p);
            let configure = has("configureSystem");
            // One attempt at a path: an escalation when it succeeded and gave a right the
            // subject does not hold.
            let mut attempt = |what: &str, ok: bool, escalates: bool, detail: String| {
                tried += 1;
                if ok && escalates {
                    escalations.push(format!("{label} {what}: {detail}"));
                }
            };
            let said =
                |r: &common::Resp| format!("{} {}", r.status, String::from_utf8_lossy(&r.body));

            // Impersonation never widens rights: the boss's audio and admin views stay shut.
            let r = c
                .send(
                    Method::POST,
                    &format!("/api/v1/users/{boss}/impersonate"),
                    None,
                    &[],
                )
                .await;
            attempt("impersonate", r.status.is_success(), false, said(&r));
            if r.status.is_success() != configure {
                wrong.push(format!("{label} impersonate: {}", r.status));
            }
            if r.status.is_success() {
                for (what, method, path, body) in [
                    (
                        "play as boss",
                        Method::GET,
                        format!("/api/v1/recordings/{boss_call}/media"),
                        None,
                    ),
                    (
                        "download as boss",
                        Method::GET,
                        format!("/api/v1/recordings/{boss_call}/download"),
                        None,
                    ),
                    (
                        "play own call as boss",
                        Method::GET,
                        format!("/api/v1/recordings/{own_call}/media"),
                        None,
                    ),
                    (
                        "audit trail as boss",
                        Method::GET,
                        "/api/v1/audit".to_owned(),
                        None,
                    ),
                    (
                        "access profiles as boss",
                        Method::GET,
                        "/api/v1/resources/access-profiles".to_owned(),
                        None,
                    ),
                ] {
                    let r = c.send(method, &path, body, &[]).await;
                    let held = match what {
                        "audit trail as boss" => has("auditTrail"),
                        "access profiles as boss" => {
                            has("manageAccessProfiles") || has("configureSystem")
                        }
                        _ => false,
                    };
                    attempt(what, r.status.is_success(), !held, said(&r));
                }
                // The boss's view itself is shown (read-only impersonation still works).
                let r = c.get(&format!("/api/v1/recordings/{boss_call}")).await;
                attempt("view as boss", r.status.is_success(), false, said(&r));
                if !r.status.is_success() {
                    wrong.push(format!("{label} view as boss: {}", r.status));
                }
                let r = c
                    .send(Method::POST, "/api/v1/auth/impersonation/stop", None, &[])
                    .await;
                assert!(r.status.is_success(), "stop: {}", r.status);
            }
            // A posteriori view as the subject: the impersonation probe left it as it was.
            let r = c
                .get(&format!("/api/v1/recordings/{boss_call}/media"))
                .await;
            attempt(
                "play boss call as self",
                r.status.is_success(),
                true,
                said(&r),
            );

            // Accounts: into a group with admin rights, or under a name a profile grants.
            for (what, name, groups, escalates) in [
                (
                    "create in admins",
                    format!("puppet{i}{key}"),
                    vec!["admins"],
                    true,
                ),
                ("create as heir", "heir".to_owned(), vec![], true),
                ("create plain", format!("plain{i}{key}"), vec![], false),
            ] {
                let (s, body) = c
                    .json(
                        Method::POST,
                        "/api/v1/users",
                        json!({"username": name, "password": NEW_PASSWORD, "groups": groups}),
                    )
                    .await;
                attempt(what, s.is_success(), escalates, format!("{s} {body}"));
                if !escalates && s.is_success() != configure {
                    wrong.push(format!("{label} {what}: {s} {body}"));
                }
                if s.is_success() && escalates {
                    // Signing in as the new account is the escalation itself.
                    let mut puppet = Client::new(f.router.clone());
                    let (s, _) = puppet
                        .json(
                            Method::POST,
                            "/api/v1/auth/login",
                            json!({"username": name, "password": NEW_PASSWORD}),
                        )
                        .await;
                    attempt(
                        &format!("sign in as {name}"),
                        s.is_success(),
                        true,
                        s.to_string(),
                    );
                }
            }

            // Password resets: never of a key holder, never of anyone with more rights.
            for (what, target, mode, escalates) in [
                ("reset boss", boss, "set", true),
                ("reset token boss", boss, "token", true),
                ("reset keyholder", keyholder, "set", true),
                ("reset token keyholder", keyholder, "token", true),
                ("reset auditor", auditor, "set", !has("auditTrail")),
            ] {
                let body = if mode == "set" {
                    json!({"mode": "set", "new_password": NEW_PASSWORD, "must_change": false})
                } else {
                    json!({"mode": "token"})
                };
                let r = c
                    .send(
                        Method::POST,
                        &format!("/api/v1/users/{target}/password-reset"),
                        Some(body),
                        &[],
                    )
                    .await;
                attempt(what, r.status.is_success(), escalates, said(&r));
                if !escalates && r.status.is_success() != configure {
                    wrong.push(format!("{label} {what}: {}", r.status));
                }
                if what.contains("keyholder") && configure && !r.status.is_success() {
                    let text = String::from_utf8_lossy(&r.body);
                    if !text.contains("key grant") {
                        wrong.push(format!("{label} {what}: the refusal must say why: {text}"));
                    }
                }
            }

            // A reset token stops opening an account that got a right its issuer lacks after
            // it was minted (here from another admin, straight in the database).
            for (what, promote) in [("redeem after promotion", true), ("redeem", false)] {
                let name = format!("target{i}{key}{promote}");
                let target = f.user(&name, &[]).await;
                let (s, minted) = c
                    .json(
                        Method::POST,
                        &format!("/api/v1/users/{target}/password-reset"),
                        json!({"mode": "token"}),
                    )
                    .await;
                if s.is_success() != configure {
                    wrong.push(format!("{label} mint for {name}: {s} {minted}"));
                }
                if !s.is_success() {
                    attempt(what, false, promote, format!("{s} {minted}"));
                    continue;
                }
                if promote {
                    f.db.add_member(common::T, admins, target)
                        .await
                        .expect("member");
                }
                let (s, body) = Client::new(f.router.clone())
                    .json(
                        Method::POST,
                        "/api/v1/auth/password-reset",
                        json!({"token": minted["token"], "new_password": NEW_PASSWORD}),
                    )
                    .await;
                attempt(what, s.is_success(), promote, format!("{s} {body}"));
                if !promote && !s.is_success() {
                    wrong.push(format!("{label} {what}: {s} {body}"));
                }
            }

            // Assigning an unassigned call: refused when it gives its new owner, or those whose
            // scope names the owner's groups, an action the subject does not hold on it.
            for (j, (what, to, escalates)) in [
                ("assign to agent", agent, true),
                ("assign to a crew member", crewman, true),
                ("assign to self", subject, false),
            ]
            .into_iter()
            .enumerate()
            {
                let number = format!("5{i:02}{}{j}", u8::from(key));
                let call = f
                    .recording(None, vec![], &number, "+1888", &audio(800, 11))
                    .await
                    .id;
                let r = c
                    .send(
                        Method::POST,
                        &format!("/api/v1/recordings/{call}/assign"),
                        Some(json!({"user_id": to, "number": number})),
                        &[],
                    )
                    .await;
                attempt(what, r.status.is_success(), escalates, said(&r));
                if !escalates && r.status.is_success() != configure {
                    wrong.push(format!("{label} {what}: {}", said(&r)));
                }
                if escalates
                    && configure
                    && !String::from_utf8_lossy(&r.body).contains("do not hold")
                {
                    wrong.push(format!(
                        "{label} {what}: the refusal must say why: {}",
                        said(&r)
                    ));
                }
            }

            // AccessProfiles: the portal has no way to write one.
            for (method, path) in [
                (Method::POST, "/api/v1/resources/access-profiles"),
                (Method::PUT, "/api/v1/resources/access-profiles/subject"),
                (Method::DELETE, "/api/v1/resources/access-profiles/boss"),
            ] {
                let r = c
                    .send(
                        method.clone(),
                        path,
                        Some(json!({"spec": {"subjects": {"users": ["subject"]}}})),
                        &[],
                    )
                    .await;
                attempt(
                    &format!("{method} {path}"),
                    r.status.is_success(),
                    true,
                    said(&r),
                );
            }

            // SCIM (the identity provider's token) never widens a local account, the subject's
            // included, and a rename never widens any account; the provider's own accounts
            // follow its groups (a control), as do renames that give nothing.
            let home_name = format!("home-{i}-{key}");
            for (what, method, path, body, escalates) in [
                (
                    "SCIM: subject into admins",
                    Method::PATCH,
                    format!("/Groups/{admins}"),
                    json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": subject.to_string()}]}]}),
                    true,
                ),
                (
                    "SCIM: subject's group renamed owners",
                    Method::PATCH,
                    format!("/Groups/{home}"),
                    json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": "replace", "value": {"displayName": "owners"}}]}),
                    true,
                ),
                (
                    "SCIM: subject renamed heir",
                    Method::PATCH,
                    format!("/Users/{subject}"),
                    json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": "replace", "value": {"userName": "heir"}}]}),
                    true,
                ),
                (
                    "SCIM: subject's group renamed",
                    Method::PATCH,
                    format!("/Groups/{home}"),
                    json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": "replace", "value": {"displayName": home_name}}]}),
                    false,
                ),
                (
                    "SCIM: provider's account into admins",
                    Method::PATCH,
                    format!("/Groups/{admins}"),
                    json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": provided.to_string()}]}]}),
                    false,
                ),
            ] {
                let r = scim(&f, method, &path, body).await;
                attempt(what, r.status.is_success(), escalates, said(&r));
                if escalates && r.status != StatusCode::FORBIDDEN {
                    wrong.push(format!("{label} {what}: want 403, {}", said(&r)));
                }
                if !escalates && !r.status.is_success() {
                    wrong.push(format!("{label} {what}: {}", said(&r)));
                }
            }
            // Undo the control (and any escalation) so that every case starts alike.
            f.db.set_group_members(common::T, admins, &[])
                .await
                .expect("members");
            f.db.update_group(common::T, home, "home", None)
                .await
                .expect("group");
            f.db.update_user_profile(
                common::T,
                subject,
                &callvault_store::db::UserProfile {
                    username: "subject".into(),
                    display_name: "subject display".into(),
                    email: String::new(),
                    external_id: None,
                },
            )
            .await
            .expect("user");
        }
    }
    println!(
        "escalation matrix: {tried} attempts over {} admin permission sets × 2 key grants, {} escalations",
        cases.len(),
        escalations.len()
    );
    assert!(
        escalations.is_empty(),
        "{} escalations:\n{}",
        escalations.len(),
        escalations.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // 14 cases × (impersonate, play as self, 3 accounts, 5 resets, 2 redeems, 3 assignments,
    // 3 profile writes, 5 SCIM changes); the 4 with configureSystem also try 5 rights as the
    // boss and view as them.
    assert_eq!(tried, 14 * (10 + 2 + 3 + 3 + 5) + 4 * 6);
}

/// A reset token minted for an account without a key grant stops working once the account
/// gets one: the only key holder's password is never set through the portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_token_does_not_open_an_account_that_since_got_a_key_grant() {
    let f = Fixture::postgres().await;
    f.user("subject", &[]).await;
    let later = f.user("nobody-yet", &[]).await;
    let key_id = f.key_id.clone();
    f.profiles(&escalation_profiles(&["configureSystem"], None, &key_id));
    let mut c = f.login("subject").await;
    let (s, minted) = c
        .json(
            Method::POST,
            &format!("/api/v1/users/{later}/password-reset"),
            json!({"mode": "token"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{minted}");
    // The account is renamed into the key holder's profile (as a directory rename would).
    f.db.update_user_profile(
        common::T,
        later,
        &callvault_store::db::UserProfile {
            username: "later".into(),
            display_name: "Later".into(),
            email: String::new(),
            external_id: None,
        },
    )
    .await
    .expect("rename");
    let (s, body) = Client::new(f.router.clone())
        .json(
            Method::POST,
            "/api/v1/auth/password-reset",
            json!({"token": minted["token"], "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.to_string().contains("key grant"), "{body}");
}
