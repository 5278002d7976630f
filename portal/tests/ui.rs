//! The web UI in a real browser: a portal on SQLite with recordings written by the store's
//! writer, served on loopback, driven by Chromium through Playwright (tests/ui/ui.mjs): the
//! supervisor's workflow on a call, then every admin screen and the active calls; and single
//! sign-on from the sign-in page (tests/ui/sso.mjs) against the provider `start_idp` runs.
//!
//! Needs `CALLVAULT_TEST_CHROMIUM` and `CALLVAULT_TEST_PLAYWRIGHT` (set by `ensure_browser` in
//! scripts/services.d/browser.sh), and for single sign-on `CALLVAULT_TEST_OIDC_ISSUER`
//! (`start_idp`); without them a test says so and does nothing.

mod common;

use axum::http::Method;
use callvault_store::db::{AlarmSeverity, CallType, Direction, NewRecording, Party};
use common::{Fixture, IDP_PASSWORD, PASSWORD, T, ogg_opus};
use serde_json::json;

/// Calling numbers of the two calls being recorded during the run.
const SUPERVISOR_LIVE: &str = "7001";
const REVIEWER_LIVE: &str = "7002";
const ALARM_MESSAGE: &str = "StorageTarget primary-s3 cannot be written: access denied";
const CLEARED_ALARM_MESSAGE: &str = "recorder-0 spool 91 % full";

const PROFILES: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: supervisors}
spec:
  subjects: {groups: [supervisors]}
  calls:
    scope: All
    actions: {play: true, download: true, export: true, tag: true, addNotes: true}
  admin: {manageTags: true, configureSystem: true, auditTrail: true}
  keys: [KEY]
---
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: reviewers}
spec:
  subjects: {groups: [reviewers]}
  calls: {scope: All, actions: {}}
"#;

/// Staff play and download their own calls, a meeting they attended among them.
const ATTENDEES: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: staff}
spec:
  subjects: {groups: [staff]}
  calls: {scope: Own, actions: {play: true, download: true}}
  keys: [KEY]
"#;

/// How a browser script under tests/ui ended, with its output.
struct BrowserRun {
    success: bool,
    log: String,
}

/// Serves `router` on `listener` while the Playwright script `script` of tests/ui runs with
/// `env`, `BASE_URL` and `SCREENSHOTS`, within `seconds`; then stops the portal.
async fn run_in_chromium(
    router: &axum::Router,
    listener: tokio::net::TcpListener,
    script: &str,
    seconds: u64,
    env: &[(&str, &str)],
) -> BrowserRun {
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let screenshots = screenshot_dir();
    std::fs::create_dir_all(&screenshots).expect("screenshot directory");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(callvault_portal::serve(
        listener,
        router.clone(),
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(seconds),
        tokio::process::Command::new("node")
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/ui")
                    .join(script),
            )
            .envs(env.iter().copied())
            .env("BASE_URL", &base)
            .env("SCREENSHOTS", &screenshots)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run finishes in time")
    .expect("run node");
    let _ = stop.send(());
    let _ = server.await;
    BrowserRun {
        success: out.status.success(),
        log: format!(
            "--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A user who attended the second half of a meeting plays that half in Chromium: the cut Ogg
/// Opus stream the portal serves is demuxed and decoded by the browser (tests/ui/meeting.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_attendee_plays_their_part_in_chromium() {
    let Some((chromium, playwright)) = browser() else {
        return;
    };
    let f = Fixture::sqlite().await;
    f.profiles(&ATTENDEES.replace("KEY", &f.key_id));
    let mut people = Vec::new();
    for (name, number) in [("alice", "1001"), ("dave", "3003")] {
        let id = f.user(name, &["staff"]).await;
        f.db.add_extension(T, number, id).await.expect("extension");
        people.push(id);
    }
    let mut rec = NewRecording::new("meeting", 1_750_000_000_000_000, Direction::Conference);
    rec.call_type = CallType::InternalMeeting;
    rec.calling = Party::new("1001", "Alice");
    rec.called = Party::new("2002", "Carol");
    let mut carol = rec.called.clone();
    carol.left_ms = Some(3_000);
    let mut dave = Party::new("3003", "Dave");
    dave.joined_ms = Some(4_000);
    rec.participants = vec![rec.calling.clone(), carol, dave];
    rec.owner_user_id = Some(people[0]);
    let meeting = f.store_recording(rec, &ogg_opus(8), 8, false).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let out = run_in_chromium(
        &f.router,
        listener,
        "meeting.mjs",
        120,
        &[
            ("CHROMIUM", &chromium),
            ("PLAYWRIGHT", &playwright),
            ("PASSWORD", PASSWORD),
            ("MEETING_ID", &meeting.id.to_string()),
        ],
    )
    .await;
    assert!(out.success, "browser run failed\n{}", out.log);
    eprintln!("{}", out.log);
}

/// Chromium and playwright-core from the environment (`ensure_browser` sets them); `None`, said
/// so, when they are not there.
fn browser() -> Option<(String, String)> {
    let found = std::env::var("CALLVAULT_TEST_CHROMIUM")
        .ok()
        .zip(std::env::var("CALLVAULT_TEST_PLAYWRIGHT").ok());
    if found.is_none() {
        eprintln!(
            "skipped: CALLVAULT_TEST_CHROMIUM/CALLVAULT_TEST_PLAYWRIGHT not set (see scripts/services.d/browser.sh)"
        );
    }
    found
}

/// Where the screenshots go:/// Where the screenshots go: `$CALLVAULT_ARTIFACTS/portal-ui`, else `target/artifacts/portal-ui`
/// in the workspace (CI keeps that directory).
fn screenshot_dir() -> std::path::PathBuf {
    std::env::var_os("CALLVAULT_ARTIFACTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts")
        })
        .join("portal-ui")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_workflow_in_chromium() {
    let Some((chromium, playwright)) = browser() else {
        return;
    };
    let f = Fixture::sqlite().await;
    f.profiles(&PROFILES.replace("KEY", &f.key_id));
    let supervisor = f.user("supervisor", &["supervisors"]).await;
    let reviewer = f.user("reviewer", &["reviewers"]).await;
    let audio = ogg_opus(8);
    assert_eq!(&audio[..4], b"OggS");
    let matching = f
        .recording_lasting(None, vec![], "1001", "2002", &audio, 8)
        .await;
    f.recording_lasting(None, vec![], "3003", "4004", &audio, 8)
        .await;
    // What the admin screens show: declared resources with their status, an alarm raised and
    // one cleared, an activity entry, and two calls being recorded now (one the supervisor's).
    f.declare(common::declared_resources());
    f.db.raise_alarm(
        T,
        "storage_unreachable",
        "primary-s3",
        AlarmSeverity::Critical,
        ALARM_MESSAGE,
    )
    .await
    .expect("raise alarm");
    f.db.raise_alarm(
        T,
        "spool_usage",
        "recorder-0",
        AlarmSeverity::Major,
        CLEARED_ALARM_MESSAGE,
    )
    .await
    .expect("raise alarm");
    f.db.clear_alarm(T, "spool_usage", "recorder-0")
        .await
        .expect("clear alarm");
    f.db.log_activity(T, "alarm", ALARM_MESSAGE)
        .await
        .expect("activity");
    let supervisor_live = f
        .active_recording(Some(supervisor), vec![], SUPERVISOR_LIVE, "+4420700")
        .await;
    let reviewer_live = f
        .active_recording(Some(reviewer), vec![], REVIEWER_LIVE, "+4420701")
        .await;
    let mut admin = f.login("supervisor").await;
    let (status, body) = admin
        .json(Method::POST, "/api/v1/tags", json!({"name": "Escalated"}))
        .await;
    assert!(status.is_success(), "create tag: {body}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");

    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&audio))
    };
    let out = run_in_chromium(
        &f.router,
        listener,
        "ui.mjs",
        180,
        &[
            ("CHROMIUM", &chromium),
            ("PLAYWRIGHT", &playwright),
            ("PASSWORD", PASSWORD),
            ("CALL_ID", &matching.id.to_string()),
            ("SUPERVISOR_LIVE", SUPERVISOR_LIVE),
            ("SUPERVISOR_LIVE_ID", &supervisor_live.id.to_string()),
            ("REVIEWER_LIVE", REVIEWER_LIVE),
            ("REVIEWER_LIVE_ID", &reviewer_live.id.to_string()),
            ("ALARM_MESSAGE", ALARM_MESSAGE),
            ("CLEARED_ALARM_MESSAGE", CLEARED_ALARM_MESSAGE),
            ("MEDIA_SHA256", &sha256),
        ],
    )
    .await;
    assert!(out.success, "browser run failed\n{}", out.log);
    eprintln!("{}", out.log);

    // What the browser did is in the audit trail, as the supervisor (not the test client).
    let actions: Vec<String> =
        f.db.query_audit(T, &Default::default(), 10_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.actor == "supervisor")
            .map(|e| e.action)
            .collect();
    for a in [
        "login",
        "search",
        "view",
        "play",
        "download",
        "tag.set",
        "note.add",
        "export.csv",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "no {a} in the audit trail: {actions:?}"
        );
    }
}

/// The provider account of tests/idp/idp.mjs that signs in, and its groups' profile.
const IDP_USER: &str = "alice";
const PROVIDER: &str = "CallVault Test IdP";
const SSO_PROFILE: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: sso-agents}
spec:
  subjects: {groups: [sso-agents]}
  calls: {scope: All, actions: {play: true}}
"#;

/// Single sign-on from the web UI: the sign-in page's provider button, the provider's own
/// login and consent pages (the real `oidc-provider` started by `start_idp`), and back signed in
/// on the interactions list. (Without single sign-on there is no button: tests/ui/ui.mjs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_button_in_chromium() {
    let (Ok(chromium), Ok(playwright), Ok(issuer)) = (
        std::env::var("CALLVAULT_TEST_CHROMIUM"),
        std::env::var("CALLVAULT_TEST_PLAYWRIGHT"),
        std::env::var("CALLVAULT_TEST_OIDC_ISSUER"),
    ) else {
        eprintln!(
            "skipped: CALLVAULT_TEST_CHROMIUM/CALLVAULT_TEST_PLAYWRIGHT/CALLVAULT_TEST_OIDC_ISSUER not set (see scripts/services.d)"
        );
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("client-secret");
    // The test client of tests/idp/idp.mjs.
    std::fs::write(&secret_file, "callvault-test-client-secret\n").expect("secret file");
    let mut oidc = callvault_portal::oidc::OidcConfig::new(
        issuer,
        "callvault-portal",
        &secret_file,
        format!("{base}/api/v1/auth/oidc/callback"),
    )
    .expect("oidc config");
    oidc.scopes.push("groups".into());
    oidc.display_name = PROVIDER.into();
    let f = Fixture::with(
        callvault_store::db::testing::TestDb::sqlite().await,
        callvault_portal::PortalConfig {
            oidc: Some(oidc),
            ..common::config()
        },
    )
    .await;
    f.profiles(SSO_PROFILE);
    let call = f
        .recording(None, vec![], "5005", "6006", &common::audio(4096, 3))
        .await;

    let out = run_in_chromium(
        &f.router,
        listener,
        "sso.mjs",
        120,
        &[
            ("CHROMIUM", &chromium),
            ("PLAYWRIGHT", &playwright),
            ("PROVIDER", PROVIDER),
            ("IDP_USER", IDP_USER),
            ("IDP_PASSWORD", IDP_PASSWORD),
            ("CALL_ID", &call.id.to_string()),
        ],
    )
    .await;
    assert!(out.success, "browser run failed\n{}", out.log);
    eprintln!("{}", out.log);

    // The browser's sign-in made the provider's user a single sign-on account of the portal.
    let user =
        f.db.user_by_username(T, IDP_USER)
            .await
            .expect("db")
            .expect("the provider's user is provisioned");
    assert_eq!(user.source, callvault_store::db::UserSource::Oidc);
    let logins: Vec<_> =
        f.db.query_audit(T, &Default::default(), 10_000)
            .await
            .expect("audit")
            .into_iter()
            .filter(|e| e.actor == IDP_USER && e.action == "login" && e.details.contains("oidc"))
            .collect();
    assert_eq!(logins.len(), 1, "one sign-in audited: {logins:?}");
}
