//! The web UI in a real browser: a portal on SQLite with recordings written by the store's
//! writer, served on loopback, driven by Chromium through Playwright (tests/ui/ui.mjs).
//!
//! Needs `CALLVAULT_TEST_CHROMIUM` and `CALLVAULT_TEST_PLAYWRIGHT` (set by `ensure_browser` in
//! scripts/services.d/browser.sh); without them the test says so and does nothing.

mod common;

use axum::http::Method;
use common::{Fixture, PASSWORD, T};
use serde_json::json;

const PROFILES: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: supervisors}
spec:
  subjects: {groups: [supervisors]}
  calls:
    scope: All
    actions: {play: true, download: true, tag: true, addNotes: true}
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

/// A playable recording as the recorder writes it: Ogg/Opus, two uncoupled mono streams (a
/// tone per party), so Chromium has to demux and decode what the portal really serves.
fn ogg_opus(seconds: u32) -> Vec<u8> {
    use callvault_recorder::media::ogg::{OggOpusWriter, OpusConfig};
    let config = OpusConfig::default();
    let (rate, frame) = (config.input_rate, config.frame_len);
    let mut w = OggOpusWriter::new(Vec::new(), config).expect("opus encoder");
    let total = u64::from(rate * seconds);
    let mut pcm = vec![0i16; 2 * frame];
    let mut n = 0u64;
    while n < total {
        for (i, pair) in pcm.chunks_mut(2).enumerate() {
            let t = (n + i as u64) as f64 / f64::from(rate);
            for (s, hz) in pair.iter_mut().zip([440.0, 660.0]) {
                *s = ((t * hz * std::f64::consts::TAU).sin() * 8000.0) as i16;
            }
        }
        w.write_frame(&pcm).expect("encode");
        n += frame as u64;
    }
    w.finish(total).expect("finish").0
}

/// Where the screenshots go: `$CALLVAULT_ARTIFACTS/portal-ui`, else `target/artifacts/portal-ui`
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
    let (Ok(chromium), Ok(playwright)) = (
        std::env::var("CALLVAULT_TEST_CHROMIUM"),
        std::env::var("CALLVAULT_TEST_PLAYWRIGHT"),
    ) else {
        eprintln!(
            "skipped: CALLVAULT_TEST_CHROMIUM/CALLVAULT_TEST_PLAYWRIGHT not set (see scripts/services.d/browser.sh)"
        );
        return;
    };
    let f = Fixture::sqlite().await;
    f.profiles(&PROFILES.replace("KEY", &f.key_id));
    f.user("supervisor", &["supervisors"]).await;
    f.user("reviewer", &["reviewers"]).await;
    let audio = ogg_opus(8);
    assert_eq!(&audio[..4], b"OggS");
    let matching = f
        .recording_lasting(None, vec![], "1001", "2002", &audio, 8)
        .await;
    f.recording_lasting(None, vec![], "3003", "4004", &audio, 8)
        .await;
    let mut admin = f.login("supervisor").await;
    let (status, body) = admin
        .json(Method::POST, "/api/v1/tags", json!({"name": "Escalated"}))
        .await;
    assert!(status.is_success(), "create tag: {body}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(callvault_portal::serve(listener, f.router.clone(), async {
        let _ = stopped.await;
    }));

    let screenshots = screenshot_dir();
    std::fs::create_dir_all(&screenshots).expect("screenshot directory");
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&audio))
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/ui.mjs");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(script)
            .env("BASE_URL", &base)
            .env("CHROMIUM", &chromium)
            .env("PLAYWRIGHT", &playwright)
            .env("PASSWORD", PASSWORD)
            .env("CALL_ID", matching.id.to_string())
            .env("MEDIA_SHA256", &sha256)
            .env("SCREENSHOTS", &screenshots)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run finishes in time")
    .expect("run node");
    let _ = stop.send(());
    let _ = server.await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("{stdout}");

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
        "login", "search", "view", "play", "download", "tag.set", "note.add",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "no {a} in the audit trail: {actions:?}"
        );
    }
}
