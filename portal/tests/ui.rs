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

/// A playable recording: 8 s of 16-bit PCM WAV, a tone on each channel (the portal serves the
/// decrypted bytes as they were written; Chromium identifies the container by its content).
fn wav(seconds: u32) -> Vec<u8> {
    let rate = 8000u32;
    let frames = rate * seconds;
    let data_len = frames * 4;
    let mut b = Vec::with_capacity(44 + data_len as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&2u16.to_le_bytes()); // channels
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 4).to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..frames {
        let t = f64::from(i) / f64::from(rate);
        for hz in [440.0, 660.0] {
            let s = (t * hz * std::f64::consts::TAU).sin() * 8000.0;
            b.extend_from_slice(&(s as i16).to_le_bytes());
        }
    }
    b
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
    let audio = wav(8);
    let matching = f.recording(None, vec![], "1001", "2002", &audio).await;
    f.recording(None, vec![], "3003", "4004", &audio).await;
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
    for a in ["login", "search", "view", "play", "tag.set", "note.add"] {
        assert!(
            actions.iter().any(|x| x == a),
            "no {a} in the audit trail: {actions:?}"
        );
    }
}
