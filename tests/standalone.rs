//! `callvault standalone` run as a user runs it: in a fresh directory, from resource YAML, with
//! sipp (Debian `sip-tester`) and `callvault call` placing calls. Each step is checked through
//! the portal's API as an admin would see it: sign-in and a password change, both
//! calls found, one played (HTTP Range) and downloaded as Ogg/Opus, its integrity, the audit
//! trail, the archive Connector's scheduled copy, the SpeechJob's transcript of each party, an
//! invalid resource file rejected while the last good configuration keeps recording, and a
//! Ctrl-C (SIGINT) and restart that keeps it all.
//!
//! Needs `ensure_recorder_test_tools` and `start_speech_server` (an OpenAI-compatible speech
//! server, CALLVAULT_TEST_OPENAI_ENDPOINT) from scripts/services.sh; scripts/test does both.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test: `CALLVAULT_BIN` (a release build, or a copy kept apart from a
/// target directory that other builds rewrite), else the one cargo built.
fn bin() -> String {
    std::env::var("CALLVAULT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_callvault").to_owned())
}
const FIRST_PASSWORD: &str = "first-Password-4-admin";
const NEW_PASSWORD: &str = "changed-Password-4-admin";

/// A UDP port whose TCP twin is free too: SIP listens on both, and a port free for UDP may be
/// the local end of one of this test's TCP connections.
fn free_udp_port() -> u16 {
    loop {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = s.local_addr().unwrap().port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

fn free_tcp_port() -> u16 {
    let s = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some`, failing with `what` (and the process log) after `limit`.
async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    log: &Log,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; standalone's log:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything the process wrote to stderr.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// The installation: a working directory with resources, passphrase and admin password files.
struct Install {
    dir: tempfile::TempDir,
    http: SocketAddr,
    sip: SocketAddr,
}

impl Install {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
        // Below the ephemeral ports (32768 up) that the free SIP and HTTP ports come from.
        let rtp = 20_000 + (std::process::id() % 40) as u16 * 100;
        let root = dir.path();
        std::fs::create_dir_all(root.join("resources")).unwrap();
        std::fs::write(
            root.join("passphrase"),
            "a passphrase for the recording keys\n",
        )
        .unwrap();
        std::fs::write(root.join("admin-password"), format!("{FIRST_PASSWORD}\n")).unwrap();
        let resources = format!(
            "apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {{name: local, namespace: default}}
spec: {{type: filesystem, path: {recordings}}}
---
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {{name: archive, namespace: default}}
spec: {{type: filesystem, path: {archive}}}
---
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {{name: everyone, namespace: default}}
spec:
  selector: {{allUsers: true}}
  retention: {{days: 365}}
  storageTargetRef: {{name: local}}
  encryption: {{keySecretRef: {{name: recording-key, key: public.pem}}}}
  recorder:
    sessionsPerReplica: 20
    sip: {{port: {sip_port}}}
    rtpPortRange: {{start: {rtp}, end: {rtp_end}}}
---
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {{name: admins, namespace: default}}
spec:
  subjects: {{users: [admin]}}
  calls:
    scope: All
    actions: {{play: true, download: true, export: true, tag: true, addNotes: true}}
  admin: {{auditTrail: true, configureSystem: true}}
---
apiVersion: callvault.io/v1alpha1
kind: Connector
metadata: {{name: offsite, namespace: default}}
spec:
  storageTargetRef: {{name: archive}}
  schedule: '* * * * *'
  encrypt: false
---
apiVersion: callvault.io/v1alpha1
kind: SpeechJob
metadata: {{name: transcripts, namespace: default}}
spec:
  engine: {{type: openai, endpoint: '{speech}', model: whisper-1}}
  schedule: '* * * * *'
",
            recordings = root.join("data/recordings").display(),
            archive = root.join("archive").display(),
            sip_port = sip.port(),
            rtp_end = rtp + 99,
            speech = std::env::var("CALLVAULT_TEST_OPENAI_ENDPOINT").expect(
                "CALLVAULT_TEST_OPENAI_ENDPOINT is not set: run `source scripts/services.sh; \
                 start_speech_server` first"
            ),
        );
        std::fs::write(root.join("resources/callvault.yaml"), resources).unwrap();
        Self { dir, http, sip }
    }

    /// An installation with one RecordingProfile and its StorageTarget only (no speech server
    /// needed); `profile(edit)` rewrites the profile.
    fn minimal() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let sip = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
        let root = dir.path();
        std::fs::create_dir_all(root.join("resources")).unwrap();
        std::fs::write(root.join("passphrase"), "a passphrase for the keys\n").unwrap();
        std::fs::write(root.join("admin-password"), format!("{FIRST_PASSWORD}\n")).unwrap();
        let install = Self { dir, http, sip };
        install.profile(&Edit::default());
        install
    }

    /// Writes the minimal installation's resources with the profile as `edit` says.
    fn profile(&self, edit: &Edit) {
        // Below the ephemeral ports, apart from the other test's range (20000–24000), and
        // apart from the other minimal installations running at the same time.
        let rtp = 24_000 + self.sip.port() % 80 * 100;
        let resources = format!(
            "apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {{name: local, namespace: default}}
spec: {{type: filesystem, path: {recordings}}}
---
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {{name: everyone, namespace: default}}
spec:
  selector: {{allUsers: true, mode: {mode}}}
  retention: {{days: {days}}}
  media: {{bitrate: {bitrate}}}
  storageTargetRef: {{name: local}}
  encryption: {{keySecretRef: {{name: recording-key, key: public.pem}}}}
  recorder:
    minReplicas: 1
    maxReplicas: {max_replicas}
    sessionsPerReplica: {capacity}
    sip: {{port: {sip_port}}}
    rtpPortRange: {{start: {rtp}, end: {rtp_end}}}
    mediaTimeoutSeconds: {MEDIA_TIMEOUT_SECONDS}
    spool: {{alarmPercent: 99, criticalPercent: 100, minFreeMiB: {min_free}}}
{drain_grace}{assurance}---
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {{name: admins, namespace: default}}
spec:
  subjects: {{users: [admin]}}
  calls:
    scope: All
    actions: {{play: true, download: true}}
  admin: {{auditTrail: true, configureSystem: true}}
",
            drain_grace = edit
                .drain_grace_seconds
                .map(|s| format!("    drainGraceSeconds: {s}\n"))
                .unwrap_or_default(),
            assurance = if edit.assurance {
                "  assurance: {schedule: '* * * * *', durationSeconds: 4, commitTimeoutSeconds: 10}\n"
            } else {
                ""
            },
            recordings = self.path("data/recordings").display(),
            mode = if edit.n.is_multiple_of(2) {
                "Always"
            } else {
                "Mandatory"
            },
            days = 30 + edit.n,
            bitrate = 24_000 + edit.n * 1_000,
            capacity = edit.sessions.unwrap_or(10 + edit.n % 10),
            sip_port = edit.sip_port.unwrap_or(self.sip.port()),
            rtp_end = rtp + 99,
            max_replicas = 2 + edit.replicas % 90,
            min_free = edit.min_free_mib,
        );
        // Written whole and renamed, as an editor or a deployment tool replaces a file.
        let tmp = self.path("resources/.callvault.yaml.tmp");
        std::fs::write(&tmp, resources).unwrap();
        std::fs::rename(tmp, self.path("resources/callvault.yaml")).unwrap();
    }

    /// The installation's database, as the portal reads it.
    async fn db(&self) -> callvault_store::db::Db {
        let url = format!("sqlite://{}", self.path("data/callvault.db").display());
        callvault_store::db::Db::connect(&url).await.unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts `callvault standalone` in the installation directory.
    fn spawn(&self) -> (Child, Log) {
        self.spawn_with(&[])
    }

    /// Starts `callvault standalone` with `extra` options.
    fn spawn_with(&self, extra: &[&str]) -> (Child, Log) {
        let mut child = Command::new(bin())
            .current_dir(self.dir.path())
            .args(["standalone", "--resources", "resources", "--data", "data"])
            .args(extra)
            .args(["--http", &self.http.to_string()])
            .args(["--passphrase-file", "passphrase"])
            .args(["--admin-password-file", "admin-password"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Log::default();
        let sink = log.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        (child, log)
    }

    /// Starts standalone and waits until it says it is running.
    async fn start(&self) -> (Child, Log) {
        self.start_with(&[]).await
    }

    /// Starts standalone with `extra` options and waits until it says it is running.
    async fn start_with(&self, extra: &[&str]) -> (Child, Log) {
        let (mut child, log) = self.spawn_with(extra);
        let deadline = Instant::now() + Duration::from_secs(120);
        // The last line of the start-up message.
        while !log.text().contains("stop with Ctrl-C") {
            if let Some(exit) = child.try_wait().unwrap() {
                panic!("standalone exited ({exit}) at start; log:\n{}", log.text());
            }
            assert!(
                Instant::now() < deadline,
                "standalone did not start:\n{}",
                log.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (child, log)
    }
}

/// One version of the minimal installation's profile: `n` varies the recorder-relevant
/// settings (mode, retention, bitrate, capacity), `sip_port` moves the listener.
#[derive(Debug, Default)]
struct Edit {
    n: u32,
    sip_port: Option<u16>,
    /// A recording assurance test call every minute.
    assurance: bool,
    /// Varies what standalone's recorder does not use (the cluster's replica bound).
    replicas: u32,
    /// `spool.minFreeMiB` (0: never refused for space).
    min_free_mib: u64,
    /// `drainGraceSeconds`, when the profile sets it.
    drain_grace_seconds: Option<u32>,
    /// `sessionsPerReplica`, instead of the one `n` varies.
    sessions: Option<u32>,
}

/// Seconds without RTP after which the minimal profile's recorder ends a session.
const MEDIA_TIMEOUT_SECONDS: u32 = 5;

/// Stops the process as Ctrl-C does and waits for a clean exit.
async fn interrupt(child: &mut Child, log: &Log) {
    stop_with(child, log, "-INT").await;
}

/// Sends `signal` and waits for a clean exit.
async fn stop_with(child: &mut Child, log: &Log, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .unwrap_or_else(|_| panic!("standalone did not stop on {signal}; log:\n{}", log.text()))
        .unwrap();
    assert!(exit.success(), "exit {exit}; log:\n{}", log.text());
}

/// A signed-in portal session: its cookies and CSRF token.
struct Session {
    base: String,
    http: reqwest::Client,
    cookies: String,
    csrf: String,
}

fn cookies_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Session {
    async fn login(addr: SocketAddr, password: &str) -> (Self, Value) {
        let base = format!("http://{addr}/api/v1");
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{base}/auth/login"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "sign-in refused");
        let cookies = cookies_of(&resp);
        let body: Value = resp.json().await.unwrap();
        let csrf = body["csrf_token"].as_str().unwrap().to_owned();
        (
            Self {
                base,
                http,
                cookies,
                csrf,
            },
            body,
        )
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookies)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookies)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// The recordings an empty search finds, newest first.
    async fn recordings(&self) -> Vec<Value> {
        let resp = self.post("/recordings/search", json!({"query": {}})).await;
        assert_eq!(resp.status(), 200);
        let page: Value = resp.json().await.unwrap();
        page["items"].as_array().unwrap().clone()
    }

    async fn bytes(&self, path: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
        let mut req = self.get(path);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let kind = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, kind, resp.bytes().await.unwrap().to_vec())
    }
}

/// Says `text` into a WAV file with espeak-ng.
fn speech(dir: &Path, name: &str, text: &str) -> String {
    let wav = dir.join(name);
    let status = std::process::Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng is not installed (Debian package espeak-ng)");
    assert!(status.success());
    wav.display().to_string()
}

/// Places a call with `callvault call` and `args`; returns its JSON summary.
async fn call_with_client(sip: SocketAddr, args: &[&str]) -> Value {
    let out = Command::new(bin())
        .args(["call", "--to", &format!("sip:{sip}")])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "callvault call failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Offers one call of `seconds` with `callvault call` and says how it ended: `Ok(true)`
/// recorded to the end, `Ok(false)` refused with 503 at INVITE, `Err` anything else (no
/// answer, cut, another status): a call lost without a word.
async fn offer_call(sip: SocketAddr, seconds: &str) -> Result<bool, String> {
    offer_call_from(sip, seconds, "+15550100001").await
}

/// [`offer_call`] from the calling number `from`, which the recording names.
async fn offer_call_from(sip: SocketAddr, seconds: &str, from: &str) -> Result<bool, String> {
    let out = Command::new(bin())
        .args(["call", "--to", &format!("sip:{sip}"), "--duration", seconds])
        .args(["--from-number", from])
        .args(["--answer-timeout", "10"])
        .output()
        .await
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("no summary ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    if summary["callsCompleted"] == 1 {
        return Ok(true);
    }
    let failures = summary["failures"].to_string();
    if failures.contains("503") {
        Ok(false)
    } else {
        Err(failures)
    }
}

/// Places a SIPREC call with sipp (metadata, two streams, no RTP: the recorder must still
/// record the session's length).
async fn call_with_sipp(sip: SocketAddr, dir: &Path) {
    let template = format!(
        "{}/tests/sipp/record_no_rtp.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let scenario = dir.join("sipp-call.xml");
    let text = std::fs::read_to_string(template)
        .unwrap()
        .replace("@PAUSE_MS@", "2000");
    std::fs::write(&scenario, text).unwrap();
    let out = Command::new("sipp")
        .arg(sip.to_string())
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error"])
        .args(["-t", "u1", "-i", "127.0.0.1"])
        .args(["-p", &free_udp_port().to_string()])
        .args(["-mp", &free_udp_port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("sipp is not installed (Debian package sip-tester)");
    assert!(
        out.status.success(),
        "sipp failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn available(recordings: &[Value]) -> usize {
    recordings
        .iter()
        .filter(|r| r["status"] == "available")
        .count()
}

fn archived_oggs(dir: &Path) -> Vec<PathBuf> {
    walkdir(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "ogg"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_records_plays_archives_and_keeps_everything_across_a_restart() {
    let install = Install::new();
    let (mut child, log) = install.start().await;
    assert!(
        log.text().contains(&format!("sip:{}", install.sip)),
        "the start-up message names the SIP address:\n{}",
        log.text()
    );

    // Two calls, from two independent clients.
    call_with_sipp(install.sip, install.dir.path()).await;
    let dir = install.dir.path();
    let agent = speech(dir, "agent.wav", "thank you for calling, how can I help");
    let customer = speech(
        dir,
        "customer.wav",
        "I would like to check my balance please",
    );
    let summary = call_with_client(install.sip, &["--left", &agent, "--right", &customer]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");

    // The first admin's password came from a file the user wrote: no forced change, but a
    // change made now must hold after the restart.
    let (first, body) = Session::login(install.http, FIRST_PASSWORD).await;
    assert_eq!(body["must_change_password"], false);
    let changed = first
        .post(
            "/auth/password",
            json!({"current_password": FIRST_PASSWORD, "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let (admin, _) = Session::login(install.http, NEW_PASSWORD).await;

    let recordings = poll(
        "both calls to be available",
        Duration::from_secs(60),
        &log,
        || async {
            let r = admin.recordings().await;
            (available(&r) == 2).then_some(r)
        },
    )
    .await;
    // The sipp call carried metadata: its participants are searchable by name.
    let parties: String = recordings
        .iter()
        .map(|r| r["participants"].to_string())
        .collect();
    assert!(parties.contains("Alice Agent"), "{parties}");

    // Download and play the `callvault call` recording (newest).
    let id = recordings[0]["id"].as_str().unwrap().to_owned();
    let (status, kind, whole) = admin
        .bytes(&format!("/recordings/{id}/download"), None)
        .await;
    assert_eq!(status, 200);
    assert!(whole.starts_with(b"OggS"), "a decrypted Ogg file");
    assert!(
        whole.len() > 4096,
        "{} bytes for a call of two sentences",
        whole.len()
    );
    assert!(kind.starts_with("audio/ogg"), "{kind}");
    // A player's first request starts at 0 (the audited play), then it seeks.
    let (status, _, played) = admin
        .bytes(&format!("/recordings/{id}/media"), Some("bytes=0-"))
        .await;
    assert_eq!(status, 206);
    assert_eq!(played, whole, "what plays is what downloads");
    let (status, _, part) = admin
        .bytes(&format!("/recordings/{id}/media"), Some("bytes=1000-1999"))
        .await;
    assert_eq!(status, 206);
    assert_eq!(
        part,
        whole[1000..2000],
        "a seek gets the file's bytes at that offset"
    );
    let (status, _, integrity) = admin
        .bytes(&format!("/recordings/{id}/integrity"), None)
        .await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&integrity).contains("authenticated"),
        "{}",
        String::from_utf8_lossy(&integrity)
    );

    // The audit trail has the sign-ins, the search, the play and the download.
    let audit: Vec<Value> = admin
        .get("/audit?limit=500")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    for action in ["search", "play", "download", "integrity.check"] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }
    let played = audit
        .iter()
        .find(|e| e["action"] == "play")
        .map(|e| e["item_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(played.as_deref(), Some(id.as_str()));

    // The admin screens list the resources from the files.
    for (kind, name) in [
        ("recording-profiles", "everyone"),
        ("storage-targets", "local"),
        ("access-profiles", "admins"),
    ] {
        let listed: Vec<Value> = admin
            .get(&format!("/resources/{kind}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            listed.iter().any(|r| r["name"] == name),
            "{name} missing from {kind}: {listed:?}"
        );
    }

    // The Connector runs every minute: both calls arrive in the archive as decrypted Ogg.
    let archive = install.path("archive");
    let copies = poll(
        "the scheduled archive run",
        Duration::from_secs(150),
        &log,
        || {
            let found = archived_oggs(&archive);
            async move { (found.len() == 2).then_some(found) }
        },
    )
    .await;
    for copy in copies {
        assert!(
            std::fs::read(&copy).unwrap().starts_with(b"OggS"),
            "{copy:?}"
        );
    }

    // The SpeechJob runs every minute: each party's words are in the call's transcript.
    let transcripts = poll(
        "the scheduled transcription",
        Duration::from_secs(180),
        &log,
        || async {
            let detail: Value = admin
                .get(&format!("/recordings/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let t = detail["transcripts"].as_array()?.clone();
            (t.len() == 2).then_some(t)
        },
    )
    .await;
    let said = |channel: i64| {
        transcripts
            .iter()
            .find(|t| t["channel"] == channel)
            .and_then(|t| t["body"].as_str())
            .unwrap_or_default()
            .to_lowercase()
    };
    assert!(said(0).contains("help"), "agent: {:?}", said(0));
    assert!(said(1).contains("check"), "customer: {:?}", said(1));

    // A broken file is refused, named, and the last good configuration keeps recording.
    std::fs::write(
        install.path("resources/broken.yaml"),
        "apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {name: bad}\nspec: [",
    )
    .unwrap();
    let l = log.clone();
    poll(
        "the invalid file to be reported",
        Duration::from_secs(30),
        &log,
        || {
            let text = l.text();
            let seen = text.contains("keeping the last good configuration")
                && text.contains("broken.yaml");
            async move { seen.then_some(()) }
        },
    )
    .await;
    let summary = call_with_client(install.sip, &["--duration", "2"]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");
    poll(
        "the call placed after the bad edit",
        Duration::from_secs(60),
        &log,
        || async { (available(&admin.recordings().await) == 3).then_some(()) },
    )
    .await;

    // Ctrl-C stops cleanly; with the broken file still there the next start is refused, naming
    // it; without it everything is back.
    interrupt(&mut child, &log).await;
    let (mut refused, refused_log) = install.spawn();
    let exit = tokio::time::timeout(Duration::from_secs(60), refused.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!exit.success());
    assert!(
        refused_log.text().contains("broken.yaml"),
        "{}",
        refused_log.text()
    );
    std::fs::remove_file(install.path("resources/broken.yaml")).unwrap();

    let (mut child, log) = install.start().await;
    assert!(
        !log.text().contains("sign in as \"admin\" with password"),
        "no new admin on restart"
    );
    let (admin, body) = Session::login(install.http, NEW_PASSWORD).await;
    assert_eq!(body["must_change_password"], false);
    let after = admin.recordings().await;
    assert_eq!(available(&after), 3, "{after:?}");
    let (status, _, again) = admin
        .bytes(&format!("/recordings/{id}/download"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, whole, "the same recording after the restart");
    interrupt(&mut child, &log).await;
}

/// Calls offered during profile edits, and how they ended.
#[derive(Debug, Default)]
struct Tally {
    offered: usize,
    recorded: usize,
    refused: usize,
    lost: Vec<String>,
}

impl Tally {
    async fn add(&mut self, calls: Vec<tokio::task::JoinHandle<Result<bool, String>>>) {
        for call in calls {
            self.offered += 1;
            match call.await.unwrap() {
                Ok(true) => self.recorded += 1,
                Ok(false) => self.refused += 1,
                Err(e) => self.lost.push(e),
            }
        }
    }
}

/// Starts a call of 2 s to `sip` and waits until the recorder has started recording it
/// (the `started`-th recording of the installation), so the edit that follows finds it live.
async fn call_in_flight(
    sip: SocketAddr,
    db: &callvault_store::db::Db,
    log: &Log,
    started: usize,
) -> tokio::task::JoinHandle<Result<bool, String>> {
    let call = tokio::spawn(offer_call(sip, "2"));
    poll("the call in flight", Duration::from_secs(20), log, || {
        let db = db.clone();
        async move {
            let live = db.active_recordings("default").await.ok()?.len();
            let done = db
                .recordings_to_archive("default", "none", 1000)
                .await
                .ok()?
                .len();
            (live + done >= started).then_some(())
        }
    })
    .await;
    call
}

/// Waits until standalone's log shows `n` configurations applied in place, and `/readyz`
/// says every recorder can take calls.
async fn applied(install: &Install, log: &Log, n: usize) {
    let http = install.http;
    poll(
        &format!("configuration change {n} applied and the recorder ready"),
        Duration::from_secs(60),
        log,
        || async move {
            let done = log.text().matches("configuration applied").count() >= n;
            let ready = reqwest::get(format!("http://{http}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200);
            (done && ready).then_some(())
        },
    )
    .await;
}

/// Issue 15: editing a RecordingProfile never opens a gap. With calls in flight, 20 edits
/// of recorder settings (mode, retention, bitrate, capacity) and 20 SIP port moves (back and
/// forth between two ports, so a port is often still held by the listener that drains its
/// calls): every call offered ends recorded or refused with 503 at INVITE, never silence,
/// and a call placed after each edit is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_edits_with_calls_in_flight_lose_no_call() {
    const EDITS: u32 = 20;
    let install = Install::minimal();
    let (mut child, log) = install.start().await;
    let db = install.db().await;
    let mut tally = Tally::default();
    let mut in_flight = Vec::new();
    let mut edits = 0usize;
    let mut started = 0;

    for n in 1..=EDITS {
        started += 1;
        in_flight.push(call_in_flight(install.sip, &db, &log, started).await);
        install.profile(&Edit {
            n,
            ..Edit::default()
        });
        edits += 1;
        applied(&install, &log, edits).await;
        // Answered right after the edit, on the new settings.
        assert_eq!(
            offer_call(install.sip, "0.5").await,
            Ok(true),
            "after edit {n}"
        );
        started += 1;
        tally.offered += 1;
        tally.recorded += 1;
    }
    tally.add(std::mem::take(&mut in_flight)).await;

    let other = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()));
    let mut at = install.sip;
    for n in 1..=EDITS {
        let to = if at == install.sip {
            other
        } else {
            install.sip
        };
        started += 1;
        in_flight.push(call_in_flight(at, &db, &log, started).await);
        install.profile(&Edit {
            n: EDITS + n,
            sip_port: Some(to.port()),
            ..Edit::default()
        });
        edits += 1;
        applied(&install, &log, edits).await;
        at = to;
        assert_eq!(offer_call(at, "0.5").await, Ok(true), "after port move {n}");
        started += 1;
        tally.offered += 1;
        tally.recorded += 1;
    }
    tally.add(in_flight).await;
    assert!(
        log.text().contains("taken back into service"),
        "moving back to a port reuses the listener still open there:\n{}",
        log.text()
    );

    eprintln!(
        "profile edits: {} calls offered, {} recorded, {} refused with 503, {} lost",
        tally.offered,
        tally.recorded,
        tally.refused,
        tally.lost.len()
    );
    assert!(tally.lost.is_empty(), "calls lost: {:?}", tally.lost);
    // Every call answered is a committed recording.
    poll(
        "every answered call committed",
        Duration::from_secs(60),
        &log,
        || {
            let db = db.clone();
            async move {
                let rows = db
                    .recordings_to_archive("default", "none", 1000)
                    .await
                    .ok()?;
                (rows.len() == tally.recorded).then_some(())
            }
        },
    )
    .await;
    assert!(!log.text().contains("recorder failed"), "{}", log.text());
    interrupt(&mut child, &log).await;
}

/// Issue 15: SIGTERM (what systemd, Docker and Kubernetes send) drains like Ctrl-C: live
/// calls go on to their end and are committed before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_live_calls_in_standalone() {
    let install = Install::minimal();
    let (mut child, log) = install.start().await;
    let db = install.db().await;
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(offer_call(install.sip, "4")))
        .collect();
    poll("three live calls", Duration::from_secs(20), &log, || {
        let db = db.clone();
        async move { (db.active_recordings("default").await.ok()?.len() == 3).then_some(()) }
    })
    .await;
    stop_with(&mut child, &log, "-TERM").await;
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(true), "log:\n{}", log.text());
    }
    let rows = db
        .recordings_to_archive("default", "none", 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "every live call committed before exit");
    for row in &rows {
        assert_eq!(
            row.status,
            callvault_store::db::RecordingStatus::Available,
            "{row:?}"
        );
    }
}

/// The profile's drain grace holds in standalone too: with `drainGraceSeconds: 1`, calls
/// meant to last a minute are cut a second after SIGTERM (not after standalone's default 30 s):
/// each source gets the recorder's BYE, and each recording is committed with stop reason
/// `shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiles_drain_grace_holds_in_standalone() {
    let install = Install::minimal();
    install.profile(&Edit {
        drain_grace_seconds: Some(1),
        ..Edit::default()
    });
    let (mut child, log) = install.start().await;
    let db = install.db().await;
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(offer_call(install.sip, "60")))
        .collect();
    poll("two live calls", Duration::from_secs(20), &log, || {
        let db = db.clone();
        async move { (db.active_recordings("default").await.ok()?.len() == 2).then_some(()) }
    })
    .await;
    stop_with(&mut child, &log, "-TERM").await;
    // The sources are told: the recorder's BYE ends each call.
    for call in calls {
        let ended = call.await.unwrap();
        assert!(
            ended
                .as_ref()
                .is_err_and(|e| e.contains("recorder ended the call early with BYE")),
            "{ended:?}; log:\n{}",
            log.text()
        );
    }
    let rows = db
        .recordings_to_archive("default", "none", 10)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        2,
        "every live call committed; log:\n{}",
        log.text()
    );
    for row in &rows {
        assert_eq!(row.stop_reason.as_deref(), Some("shutdown"), "{row:?}");
        let seconds = (row.end_time.unwrap() - row.start_time) / 1_000_000;
        assert!(
            seconds < 20,
            "cut after the profile's grace, not 30 s: {seconds} s"
        );
    }
}

/// A recorder whose every session slot is in use, with no other recorder to take calls (the
/// one recorder of a standalone profile), says so: Ready False `CapacityExceeded` naming the
/// count, the next call is refused with 503, and Ready comes back when the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_recorder_says_capacity_exceeded_and_refuses_the_next_call() {
    let install = Install::minimal();
    install.profile(&Edit {
        sessions: Some(1),
        ..Edit::default()
    });
    let (mut child, log) = install.start().await;
    let (admin, _) = Session::login(install.http, FIRST_PASSWORD).await;
    let first = tokio::spawn(offer_call(install.sip, "6"));
    profile_condition_within_30s(&admin, &log, "Ready", "CapacityExceeded").await;
    let profile = resource(&admin, "recording-profiles", "everyone")
        .await
        .unwrap();
    let message = condition(&profile, "Ready").unwrap()["message"].to_string();
    assert!(
        message.contains("1 of 1 sessions") && message.contains("refused with 503"),
        "{message}"
    );
    assert_eq!(
        offer_call_from(install.sip, "1", "+15550440001").await,
        Ok(false),
        "a call offered to a full recorder gets 503"
    );
    assert_eq!(
        first.await.unwrap(),
        Ok(true),
        "the call in progress goes on"
    );
    profile_ready_again(&admin, &log).await;
    interrupt(&mut child, &log).await;
}

/// Audit retention is a setting (DESIGN §6: 1-3650 days, default 365), as in a cluster; a value
/// out of range is refused with its name before anything is created on disk.
#[tokio::test]
async fn an_audit_retention_out_of_range_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for days in ["0", "3651"] {
        let out = Command::new(bin())
            .current_dir(dir.path())
            .args([
                "standalone",
                "--data",
                "data",
                "--audit-retention-days",
                days,
            ])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{days} accepted: {stderr}");
        assert!(
            stderr.contains("CALLVAULT_AUDIT_RETENTION_DAYS")
                && stderr.contains(&format!("{days} is not within 1..=3650")),
            "{stderr}"
        );
        assert!(!dir.path().join("data").exists(), "nothing created");
    }
}

/// The resource of `kind` (its portal path) named `name`, as an admin sees it.
async fn resource(admin: &Session, kind: &str, name: &str) -> Option<Value> {
    let resp = admin.get(&format!("/resources/{kind}")).send().await.ok()?;
    let all: Vec<Value> = resp.json().await.ok()?;
    all.into_iter().find(|r| r["name"] == name)
}

/// The condition `type_` of a resource's status.
fn condition<'a>(resource: &'a Value, type_: &str) -> Option<&'a Value> {
    resource["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The active alarm of `alarm_type` for `source`.
async fn active_alarm(admin: &Session, alarm_type: &str, source: &str) -> Option<Value> {
    let resp = admin.get("/alarms").send().await.ok()?;
    let all: Vec<Value> = resp.json().await.ok()?;
    all.into_iter().find(|a| {
        a["alarm_type"] == alarm_type && a["source"] == source && a["cleared_at"].is_null()
    })
}

impl Install {
    /// Writes `smtp.yaml` (for `--smtp-config`) sending alarm mail through the test SMTP server
    /// to a recipient of this test's own, which it returns. Needs `start_smtp`.
    fn smtp_config(&self, who: &str) -> String {
        let to = format!("{who}-{}@bank.example", std::process::id());
        let smtp_port = std::env::var("CALLVAULT_TEST_SMTP_PORT").expect(
            "CALLVAULT_TEST_SMTP_PORT is not set: run `source scripts/services.sh; start_smtp`",
        );
        std::fs::write(
            self.path("smtp.yaml"),
            format!(
                "host: 127.0.0.1\nport: {smtp_port}\nsecurity: None\nfrom: callvault@bank.example\nto: [{to}]\n"
            ),
        )
        .unwrap();
        to
    }
}

/// Waits (at most 30 s) for a mail to `to` holding every one of `lines`; returns it.
async fn mail_within_30s(log: &Log, to: &str, lines: &[&str]) -> String {
    poll(
        &format!("a mail to {to} with {lines:?} within 30 s"),
        Duration::from_secs(30),
        log,
        || async move {
            mails_to(to)
                .into_iter()
                .find(|m| lines.iter().all(|l| m.contains(l)))
        },
    )
    .await
}

/// Mails in the test SMTP server's Maildir addressed to `to`.
fn mails_to(to: &str) -> Vec<String> {
    let dir = PathBuf::from(std::env::var("CALLVAULT_TEST_SMTP_MAILDIR").unwrap());
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(dir.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(text) = std::fs::read_to_string(e.path())
                && text.contains(to)
            {
                found.push(text);
            }
        }
    }
    found
}

/// Issue 15: standalone says when it cannot record, in every place a cluster does. A profile
/// whose SIP port is taken shows `Ready: False` with the reason, `/readyz` is 503 naming it,
/// the RECORDER_UNAVAILABLE alarm is listed and mailed; when the port frees all of it clears.
/// Issue 17: a StorageTarget added while running is created and probed at once, and one that
/// cannot work shows the failing step and raises STORAGE_UNREACHABLE.
///
/// Needs `start_smtp` (CALLVAULT_TEST_SMTP_PORT, CALLVAULT_TEST_SMTP_MAILDIR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_reports_status_and_alarms_and_probes_new_storage() {
    let install = Install::minimal();
    let to = install.smtp_config("ops");
    // Another process holds the profile's SIP port.
    let squatter = UdpSocket::bind(install.sip).unwrap();
    let (mut child, log) = install.start_with(&["--smtp-config", "smtp.yaml"]).await;
    let http = install.http;

    let body = poll(
        "/readyz to say why it cannot record",
        Duration::from_secs(30),
        &log,
        || async move {
            let resp = reqwest::get(format!("http://{http}/readyz")).await.ok()?;
            (resp.status() == 503).then_some(())?;
            resp.text().await.ok()
        },
    )
    .await;
    assert!(
        body.contains("everyone") && body.contains("not listening"),
        "{body}"
    );

    let (admin, _) = Session::login(http, FIRST_PASSWORD).await;
    let admin = &admin;
    let profile = poll(
        "the profile's status to show the recorder down",
        Duration::from_secs(30),
        &log,
        || async move {
            let p = resource(admin, "recording-profiles", "everyone").await?;
            (condition(&p, "RecordersAvailable")?["status"] == "False").then_some(p)
        },
    )
    .await;
    let ready = condition(&profile, "Ready").unwrap();
    assert_eq!(ready["status"], "False", "{profile}");
    assert_eq!(ready["reason"], "RecordersUnavailable", "{profile}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("not listening for SIP"),
        "{profile}"
    );
    assert_eq!(profile["status"]["readyReplicas"], 0, "{profile}");
    assert_eq!(
        condition(&profile, "StorageBound").unwrap()["status"],
        "True",
        "{profile}"
    );

    let alarm = poll("the recorder alarm", Duration::from_secs(30), &log, || {
        active_alarm(admin, "RECORDER_UNAVAILABLE", "everyone")
    })
    .await;
    assert!(
        alarm["severity"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("critical"),
        "{alarm}"
    );
    let to_ref = to.as_str();
    let mail = poll(
        "the alarm mail",
        Duration::from_secs(30),
        &log,
        || async move {
            mails_to(to_ref).into_iter().find(|m| {
                m.contains("Alarm: Recording Resource Unavailable (RECORDER_UNAVAILABLE)")
            })
        },
    )
    .await;
    assert!(
        mail.contains("Severity: Critical") && mail.contains("Source: everyone"),
        "{mail}"
    );

    // The StorageTarget was probed: reachable, when, and what it holds.
    let target = resource(admin, "storage-targets", "local").await.unwrap();
    assert_eq!(
        condition(&target, "Reachable").unwrap()["status"],
        "True",
        "{target}"
    );
    assert!(target["status"]["lastProbeTime"].is_string(), "{target}");

    // The port frees: the recorder binds it, and everything clears.
    drop(squatter);
    poll(
        "/readyz 200",
        Duration::from_secs(30),
        &log,
        || async move {
            let resp = reqwest::get(format!("http://{http}/readyz")).await.ok()?;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
    let profile = poll(
        "the profile Ready",
        Duration::from_secs(30),
        &log,
        || async move {
            let p = resource(admin, "recording-profiles", "everyone").await?;
            (condition(&p, "Ready")?["status"] == "True").then_some(p)
        },
    )
    .await;
    assert_eq!(profile["status"]["readyReplicas"], 1, "{profile}");
    assert_eq!(profile["status"]["capacity"], 10, "{profile}");
    assert_eq!(profile["status"]["activeSessions"], 0, "{profile}");
    poll(
        "the alarm to clear",
        Duration::from_secs(30),
        &log,
        || async move {
            active_alarm(admin, "RECORDER_UNAVAILABLE", "everyone")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    poll(
        "the clear mail",
        Duration::from_secs(30),
        &log,
        || async move {
            mails_to(to_ref)
                .into_iter()
                .any(|m| {
                    m.contains("The condition has recovered.") && m.contains("Source: everyone")
                })
                .then_some(())
        },
    )
    .await;

    // Two StorageTargets added while running: one is created and probed at once, the other
    // cannot be created and says at which step it failed.
    let added = install.path("added-recordings");
    std::fs::write(
        install.path("resources/storage.yaml"),
        format!(
            "apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {{name: added, namespace: default}}
spec: {{type: filesystem, path: {}}}
---
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {{name: broken, namespace: default}}
spec: {{type: filesystem, path: /proc/callvault-cannot-be-here}}
",
            added.display()
        ),
    )
    .unwrap();
    let target = poll(
        "the added target probed",
        Duration::from_secs(30),
        &log,
        || async move {
            let t = resource(admin, "storage-targets", "added").await?;
            (condition(&t, "Reachable")?["status"] == "True").then_some(t)
        },
    )
    .await;
    assert!(added.is_dir(), "the added target's directory was created");
    assert_eq!(
        condition(&target, "Ready").unwrap()["status"],
        "True",
        "{target}"
    );
    let broken = poll(
        "the broken target probed",
        Duration::from_secs(30),
        &log,
        || async move {
            let t = resource(admin, "storage-targets", "broken").await?;
            (condition(&t, "Reachable")?["status"] == "False").then_some(t)
        },
    )
    .await;
    let reachable = condition(&broken, "Reachable").unwrap();
    assert_eq!(reachable["reason"], "ConnectFailed", "{broken}");
    assert!(
        reachable["message"]
            .as_str()
            .unwrap()
            .starts_with("connect step failed"),
        "{broken}"
    );
    let alarm = poll("the storage alarm", Duration::from_secs(30), &log, || {
        active_alarm(admin, "STORAGE_UNREACHABLE", "broken")
    })
    .await;
    assert!(
        alarm["message"]
            .as_str()
            .unwrap()
            .contains("callvault-cannot-be-here"),
        "{alarm}"
    );

    // "Test connection" runs the probe for an admin, step by step; the broken target was
    // never opened, and the answer says so.
    let tested = admin
        .post("/resources/storage-targets/added/test", json!({}))
        .await;
    assert_eq!(tested.status(), 200);
    let tested: Value = tested.json().await.unwrap();
    assert_eq!(tested["succeeded"], true, "{tested}");
    let steps: Vec<&str> = tested["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"write") && steps.contains(&"read"),
        "{tested}"
    );
    let refused = admin
        .post("/resources/storage-targets/broken/test", json!({}))
        .await;
    assert_eq!(refused.status(), 409);
    let unknown = admin
        .post("/resources/storage-targets/nowhere/test", json!({}))
        .await;
    assert_eq!(unknown.status(), 404);

    // Removing the broken target clears its alarm.
    std::fs::remove_file(install.path("resources/storage.yaml")).unwrap();
    poll(
        "the storage alarm to clear",
        Duration::from_secs(30),
        &log,
        || async move {
            active_alarm(admin, "STORAGE_UNREACHABLE", "broken")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    interrupt(&mut child, &log).await;
}

/// Runs `callvault <args>` to the end; returns whether it succeeded and its stderr.
async fn cli(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 17: "Run now" starts a SpeechJob outside its schedule: a job scheduled once a year
/// transcribes a call on request, its status counts it, and the request is audited; an unknown
/// SpeechJob is 404. Needs `start_speech_server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_transcribes_outside_the_schedule() {
    let install = Install::new();
    let speech = std::env::var("CALLVAULT_TEST_OPENAI_ENDPOINT").unwrap();
    std::fs::write(
        install.path("resources/on-demand.yaml"),
        format!(
            "apiVersion: callvault.io/v1alpha1\nkind: SpeechJob\n\
             metadata: {{name: on-demand, namespace: default}}\n\
             spec:\n  engine: {{type: openai, endpoint: '{speech}', model: whisper-1}}\n  \
             schedule: '0 0 1 1 *'\n"
        ),
    )
    .unwrap();
    let (mut child, log) = install.start().await;
    let (admin, _) = Session::login(install.http, FIRST_PASSWORD).await;
    let summary = call_with_client(install.sip, &["--duration", "2"]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");
    poll(
        "the call to be available",
        Duration::from_secs(60),
        &log,
        || async { (available(&admin.recordings().await) == 1).then_some(()) },
    )
    .await;

    let resp = admin
        .post("/resources/speech-jobs/no-such-job/run", json!({}))
        .await;
    assert_eq!(resp.status(), 404);
    let resp = admin
        .post("/resources/speech-jobs/on-demand/run", json!({}))
        .await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["name"], "on-demand");
    let admin = &admin;
    let status = poll(
        "the on-demand SpeechJob to count the call",
        Duration::from_secs(120),
        &log,
        || async move {
            let job = resource(admin, "speech-jobs", "on-demand").await?;
            (job["status"]["processed"].as_i64() == Some(1)).then_some(job)
        },
    )
    .await;
    assert!(status["status"]["lastRunTime"].is_string(), "{status}");
    let audit: Value = admin
        .get("/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit.to_string().contains("speech_job.run"),
        "the request is audited: {audit}"
    );
    interrupt(&mut child, &log).await;
}

/// Issue 16: `callvault verify --row` checks a recording offline against its catalogue row: the
/// row as stored passes with the seal covering the call's details; the same row with its
/// calling number, its start or its duration edited is reported TAMPERED (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_with_the_row_reports_edited_call_details() {
    let install = Install::minimal();
    let (mut child, log) = install.start().await;
    let summary = call_with_client(install.sip, &["--duration", "2"]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");
    let db = install.db().await;
    let row = poll(
        "the call to be stored",
        Duration::from_secs(60),
        &log,
        || {
            let db = db.clone();
            async move {
                let rows = db.recordings_to_archive("default", "none", 10).await.ok()?;
                rows.into_iter().find(|r| r.object_key.is_some())
            }
        },
    )
    .await;
    interrupt(&mut child, &log).await;
    let key = row.object_key.clone().unwrap();
    let file = walkdir(&install.path("data/recordings"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&key))
        .unwrap_or_else(|| panic!("no file for object key {key}"));
    let private = install.path("data/keys/recording-key/private.pem");
    let verify = |row: &callvault_store::db::Recording| {
        let json = install.path("row.json");
        std::fs::write(&json, serde_json::to_vec(row).unwrap()).unwrap();
        let out = std::process::Command::new(bin())
            .arg("verify")
            .arg(&file)
            .arg("--key")
            .arg(&private)
            .arg("--passphrase-file")
            .arg(install.path("passphrase"))
            .arg("--row")
            .arg(&json)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = verify(&row);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("seal: valid")
            && stdout.contains("sealed: the audio and the call's details"),
        "{stdout}"
    );

    let mut number = row.clone();
    number.calling.number = "+15559990000".into();
    let mut start = row.clone();
    start.start_time -= 3_600_000_000;
    let mut duration = row.clone();
    duration.duration_ms += 60_000;
    for (what, edited) in [
        ("calling number", number),
        ("start", start),
        ("duration", duration),
    ] {
        let (code, stdout, stderr) = verify(&edited);
        assert_eq!(code, Some(1), "edited {what}: {stdout}{stderr}");
        assert!(
            stderr.contains("TAMPERED") && stderr.contains("call details"),
            "edited {what}: {stderr}"
        );
    }
}

/// Every file under `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}

/// A recorded call, backed up (catalogue and configuration, no media), restored with the key
/// into a new, empty installation that reaches the same recordings directory, plays there as
/// it did: same admin, same key grants, the same decrypted audio through the portal. A wrong
/// key is refused before anything is created, and a restore never lands on a used system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_on_a_new_system_plays_every_recording() {
    let old = Install::minimal();
    let (mut child, log) = old.start().await;
    let summary = call_with_client(old.sip, &["--duration", "2"]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");
    let (admin, _) = Session::login(old.http, FIRST_PASSWORD).await;
    let recordings = poll(
        "the call to be available",
        Duration::from_secs(60),
        &log,
        || async {
            let r = admin.recordings().await;
            (available(&r) == 1).then_some(r)
        },
    )
    .await;
    let id = recordings[0]["id"].as_str().unwrap().to_owned();
    let (status, _, original) = admin
        .bytes(&format!("/recordings/{id}/download"), None)
        .await;
    assert_eq!(status, 200);
    assert!(original.starts_with(b"OggS"));
    interrupt(&mut child, &log).await;

    std::fs::write(old.path("backup.key"), "the backup key of this test\n").unwrap();
    let (ok, err) = cli(
        old.dir.path(),
        &[
            "backup",
            "--data",
            "data",
            "--resources",
            "resources",
            "--out",
            "cv.backup",
            "--key-file",
            "backup.key",
        ],
    )
    .await;
    assert!(ok, "backup failed: {err}");
    let sealed = std::fs::read(old.path("cv.backup")).unwrap();
    assert!(sealed.starts_with(b"CVBACKUP"));
    assert!(
        !sealed.windows(5).any(|w| w == b"admin"),
        "the catalogue is encrypted"
    );

    // The new machine: the user's passphrase and the backup file, nothing else.
    let new = Install {
        dir: tempfile::tempdir().unwrap(),
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port())),
        sip: old.sip,
    };
    std::fs::copy(old.path("passphrase"), new.path("passphrase")).unwrap();
    std::fs::copy(old.path("admin-password"), new.path("admin-password")).unwrap();
    std::fs::copy(old.path("cv.backup"), new.path("cv.backup")).unwrap();
    std::fs::write(new.path("wrong.key"), "not the key of this backup\n").unwrap();
    let restore = |key: &'static str| {
        let dir = new.dir.path().to_owned();
        async move {
            cli(
                &dir,
                &[
                    "restore",
                    "--data",
                    "data",
                    "--resources",
                    "resources",
                    "--in",
                    "cv.backup",
                    "--key-file",
                    key,
                ],
            )
            .await
        }
    };
    let (ok, err) = restore("wrong.key").await;
    assert!(!ok);
    assert!(err.contains("wrong backup key"), "{err}");
    assert!(
        !new.path("data").exists() && !new.path("resources").exists(),
        "nothing created with a wrong key"
    );

    std::fs::copy(old.path("backup.key"), new.path("backup.key")).unwrap();
    let (ok, err) = restore("backup.key").await;
    assert!(ok, "restore failed: {err}");
    assert!(new.path("data/keys/recording-key/private.pem").exists());
    assert!(new.path("resources/callvault.yaml").exists());
    let (ok, err) = restore("backup.key").await;
    assert!(!ok, "a second restore onto the restored system is refused");
    assert!(
        err.contains("not empty") || err.contains("exists already"),
        "{err}"
    );

    let (mut child, log) = new.start().await;
    let (admin, _) = Session::login(new.http, FIRST_PASSWORD).await;
    let recordings = admin.recordings().await;
    assert_eq!(available(&recordings), 1, "{recordings:?}");
    assert_eq!(recordings[0]["id"], id.as_str());
    let (status, _, played) = admin
        .bytes(&format!("/recordings/{id}/download"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        played, original,
        "the same audio, decrypted on the new system"
    );
    interrupt(&mut child, &log).await;
}

/// Issue 15, recording assurance: a test call every minute through the profile's own SIP
/// listener is found, its seal verified, decrypted and each channel compared. The profile shows
/// `Assured: True` with its last success, the audit trail holds the run, and the test call is
/// absent from a normal search (an explicit filter finds it). With the storage made unusable the
/// next run says why it failed in `Assured: False` and raises RECORDING_ASSURANCE_FAILED; with
/// the storage back, the next run clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_assurance_says_daily_that_recording_works_and_when_it_does_not() {
    let install = Install::minimal();
    install.profile(&Edit {
        assurance: true,
        ..Edit::default()
    });
    let (mut child, log) = install.start().await;
    let (admin, _) = Session::login(install.http, FIRST_PASSWORD).await;
    let admin = &admin;
    let assured = |status: &'static str| async move {
        let p = resource(admin, "recording-profiles", "everyone").await?;
        (condition(&p, "Assured")?["status"] == status).then_some(p)
    };

    // The first run is at the next whole minute.
    let profile = poll(
        "the profile Assured",
        Duration::from_secs(150),
        &log,
        || assured("True"),
    )
    .await;
    let assurance = &profile["status"]["assurance"];
    assert!(assurance["lastSuccessTime"].is_string(), "{profile}");
    assert!(assurance["lastFailureTime"].is_null(), "{profile}");
    let message = condition(&profile, "Assured").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("seal valid") && message.contains("channel 2 matched"),
        "{message}"
    );
    let test_call = assurance["lastRecordingId"].as_str().unwrap().to_owned();

    // The run is in the audit trail, naming the recording it checked.
    let audit: Vec<Value> = admin
        .get("/audit?limit=500")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = audit
        .iter()
        .find(|e| e["action"] == "recording_assurance")
        .unwrap_or_else(|| panic!("no assurance audit entry in {audit:?}"));
    assert_eq!(run["item_id"], "everyone", "{run}");
    let details: Value = serde_json::from_str(run["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["result"], "passed", "{details}");
    assert_eq!(details["recording_id"], test_call.as_str(), "{details}");

    // Hidden from the Interactions list and a normal search; an explicit filter finds it.
    assert!(
        admin
            .recordings()
            .await
            .iter()
            .all(|r| r["id"] != test_call.as_str()),
        "a test call is listed among the real ones"
    );
    let resp = admin
        .post("/recordings/search", json!({"query": {"assurance": true}}))
        .await;
    let page: Value = resp.json().await.unwrap();
    let found = page["items"].as_array().unwrap();
    let row = found
        .iter()
        .find(|r| r["id"] == test_call.as_str())
        .unwrap_or_else(|| panic!("the test call is not found with the filter: {page}"));
    assert_eq!(row["assurance"], true);
    // Its own short retention (7 days by default), not the profile's 30.
    let days = (row["expires_at"].as_i64().unwrap() - row["start_time"].as_i64().unwrap())
        / 86_400_000_000;
    assert_eq!(days, 7, "{row}");

    // Recording breaks: the storage directory is replaced by a file.
    let recordings = install.path("data/recordings");
    let moved = install.path("data/recordings-moved");
    std::fs::rename(&recordings, &moved).unwrap();
    std::fs::write(&recordings, "not a directory").unwrap();
    let profile = poll(
        "Assured to turn False",
        Duration::from_secs(150),
        &log,
        || assured("False"),
    )
    .await;
    let failed = condition(&profile, "Assured").unwrap();
    assert_eq!(failed["reason"], "RecordingNotCommitted", "{profile}");
    let why = profile["status"]["assurance"]["lastFailureReason"]
        .as_str()
        .unwrap();
    assert!(why.contains("not committed"), "{profile}");
    assert!(
        profile["status"]["assurance"]["lastSuccessTime"].is_string(),
        "the last success is kept: {profile}"
    );
    let alarm = poll("the assurance alarm", Duration::from_secs(30), &log, || {
        active_alarm(admin, "RECORDING_ASSURANCE_FAILED", "everyone")
    })
    .await;
    assert!(
        alarm["severity"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("critical")
            && alarm["message"].as_str().unwrap().contains("not committed"),
        "{alarm}"
    );

    // The storage comes back: the next run passes and the alarm clears.
    std::fs::remove_file(&recordings).unwrap();
    std::fs::rename(&moved, &recordings).unwrap();
    poll("Assured True again", Duration::from_secs(150), &log, || {
        assured("True")
    })
    .await;
    poll(
        "the assurance alarm to clear",
        Duration::from_secs(30),
        &log,
        || async move {
            active_alarm(admin, "RECORDING_ASSURANCE_FAILED", "everyone")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    interrupt(&mut child, &log).await;
}

/// How the fault suite's call source is told to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Offering,
    Paused,
    Done,
}

/// One call the fault suite offered: its calling number (the recording names it) and how it
/// ended for the source.
#[derive(Debug)]
struct Offer {
    number: String,
    /// The call's length in ms, as the source placed it.
    ms: i64,
    ended: Result<bool, String>,
}

/// A call source offering calls of 2 s, one every 700 ms, each from its own number, to a
/// recorder that is being broken and mended meanwhile.
struct CallSource {
    control: tokio::sync::watch::Sender<Source>,
    calls: Arc<tokio::sync::Mutex<Vec<tokio::task::JoinHandle<Offer>>>>,
    ended: Vec<Offer>,
    task: tokio::task::JoinHandle<()>,
}

impl CallSource {
    fn start(sip: SocketAddr) -> Self {
        let (control, mut state) = tokio::sync::watch::channel(Source::Offering);
        let calls = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        let offered = calls.clone();
        let task = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(700));
            let mut n = 0u32;
            loop {
                pace.tick().await;
                let now = *state.borrow_and_update();
                match now {
                    Source::Done => return,
                    Source::Paused => {
                        let _ = state.changed().await;
                        continue;
                    }
                    Source::Offering => {}
                }
                n += 1;
                let number = format!("+1555031{n:04}");
                let mut calls = offered.lock().await;
                calls.push(tokio::spawn(async move {
                    let ended = offer_call_from(sip, "2", &number).await;
                    Offer {
                        number,
                        ms: 2_000,
                        ended,
                    }
                }));
            }
        });
        Self {
            control,
            calls,
            ended: Vec::new(),
            task,
        }
    }

    /// Stops offering and waits for every call offered so far to end.
    async fn pause(&mut self) {
        self.control.send_replace(Source::Paused);
        let calls = std::mem::take(&mut *self.calls.lock().await);
        for call in calls {
            self.ended.push(call.await.unwrap());
        }
    }

    fn resume(&self) {
        self.control.send_replace(Source::Offering);
    }

    /// Stops for good; every call offered, and how it ended.
    async fn finish(mut self) -> Vec<Offer> {
        self.pause().await;
        self.control.send_replace(Source::Done);
        self.task.await.unwrap();
        self.ended
    }
}

/// Free MiB on the file system holding `path`.
fn free_mib(path: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1M"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// The active alarms `alarm_type` whose source contains `source`; `None` when the portal
/// could not be asked.
async fn active_alarms_about(
    admin: &Session,
    alarm_type: &str,
    source: &str,
) -> Option<Vec<Value>> {
    let all: Vec<Value> = admin.get("/alarms").send().await.ok()?.json().await.ok()?;
    let active = all.into_iter().filter(|a| {
        a["alarm_type"] == alarm_type
            && a["source"].as_str().is_some_and(|s| s.contains(source))
            && a["cleared_at"].is_null()
    });
    Some(active.collect())
}

/// Waits (at most 30 s, the bound) until the alarm `alarm_type` is active for a
/// source containing `source`; returns its text.
async fn alarm_within_30s(admin: &Session, log: &Log, alarm_type: &str, source: &str) -> String {
    poll(
        &format!("{alarm_type} alarm for {source} within 30 s"),
        Duration::from_secs(30),
        log,
        || async move {
            let active = active_alarms_about(admin, alarm_type, source).await?;
            active.first().map(|a| a["message"].to_string())
        },
    )
    .await
}

/// Waits until no alarm `alarm_type` for `source` is active.
async fn alarm_cleared(admin: &Session, log: &Log, alarm_type: &str, source: &str) {
    poll(
        &format!("{alarm_type} alarm for {source} cleared"),
        Duration::from_secs(60),
        log,
        || async move {
            let active = active_alarms_about(admin, alarm_type, source).await?;
            active.is_empty().then_some(())
        },
    )
    .await
}

/// Waits (at most 30 s) until the profile's condition `type_` is False with `reason`.
async fn profile_condition_within_30s(admin: &Session, log: &Log, type_: &str, reason: &str) {
    poll(
        &format!("RecordingProfile condition {type_} False ({reason}) within 30 s"),
        Duration::from_secs(30),
        log,
        || async move {
            let profile = resource(admin, "recording-profiles", "everyone").await?;
            let c = condition(&profile, type_)?;
            (c["status"] == "False" && c["reason"] == reason).then_some(())
        },
    )
    .await
}

/// Waits until the profile is Ready again.
async fn profile_ready_again(admin: &Session, log: &Log) {
    poll(
        "RecordingProfile Ready again",
        Duration::from_secs(60),
        log,
        || async move {
            let profile = resource(admin, "recording-profiles", "everyone").await?;
            (condition(&profile, "Ready")?["status"] == "True").then_some(())
        },
    )
    .await
}

/// Every committed recording of the installation, by calling number.
async fn recordings_by_number(
    db: &callvault_store::db::Db,
) -> std::collections::HashMap<String, callvault_store::db::Recording> {
    db.recordings_to_archive("default", "none", 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.calling.number.clone(), r))
        .collect()
}

/// Waits until the three calls whose calling numbers start with `prefix` are being recorded.
async fn live_calls(db: &callvault_store::db::Db, log: &Log, prefix: &str) {
    poll(
        &format!("three live calls from {prefix}…"),
        Duration::from_secs(20),
        log,
        || {
            let db = db.clone();
            async move {
                let live = db.active_recordings("default").await.ok()?;
                let ours = live.iter().filter(|r| r.calling.number.starts_with(prefix));
                (ours.count() == 3).then_some(())
            }
        },
    )
    .await;
}

/// Issue 15: the fault suite. A call source keeps offering calls while the installation is
/// edited and broken the ways a running system is: 20 RecordingProfile edits the recorder
/// takes and 20 it does not, call sources that vanish without a BYE, the storage unwritable
/// for 5 minutes, the spool filled, SIGTERM and SIGKILL. Every call offered must end in a
/// recording (complete, or incomplete with its reason and the length it holds) or in a 503 at
/// INVITE time — never in silence — and each failure must show as a status condition and an
/// alarm within 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_suite_every_call_offered_is_recorded_or_refused() {
    const EDITS: u32 = 20;
    const OUTAGE: Duration = Duration::from_secs(300);
    let install = Install::minimal();
    // Alarms are mailed too, the recorder's own (storage, spool) as the rest.
    let to = install.smtp_config("faults");
    let (mut child, log) = install.start_with(&["--smtp-config", "smtp.yaml"]).await;
    let (admin, _) = Session::login(install.http, FIRST_PASSWORD).await;
    let db = install.db().await;
    let mut source = CallSource::start(install.sip);
    // Calls that end another way than the source's: vanished, or cut by SIGKILL.
    let mut vanished = Vec::new();
    let mut killed = Vec::new();

    // Profile edits with calls in flight: the recorder's settings, then settings it does not
    // use (only the resources are reloaded).
    for n in 1..=EDITS {
        install.profile(&Edit {
            n,
            ..Edit::default()
        });
        applied(&install, &log, n as usize).await;
    }
    let reloaded = log.text().matches("resources reloaded").count();
    for k in 1..=EDITS {
        install.profile(&Edit {
            n: EDITS,
            replicas: k,
            ..Edit::default()
        });
        poll(
            "an edit the recorder does not take, reloaded",
            Duration::from_secs(30),
            &log,
            || async {
                (log.text().matches("resources reloaded").count() >= reloaded + k as usize)
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(
        log.text().matches("configuration applied").count(),
        EDITS as usize,
        "edits of settings the recorder does not use are not applied to it"
    );

    // Sources that vanish mid-call: no BYE, no more RTP.
    for i in 0..3 {
        let number = format!("+1555032000{i}");
        let mut caller = Command::new(bin())
            .args(["call", "--to", &format!("sip:{}", install.sip)])
            .args(["--duration", "60", "--from-number", &number])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let started = poll(
            "the vanishing call live",
            Duration::from_secs(20),
            &log,
            || {
                let db = db.clone();
                let number = number.clone();
                async move {
                    let live = db.active_recordings("default").await.ok()?;
                    live.iter()
                        .any(|r| r.calling.number == number)
                        .then_some(())
                }
            },
        );
        started.await;
        caller.kill().await.unwrap();
        vanished.push(number);
    }

    // The storage unwritable for 5 minutes: its directory replaced by a file.
    let recordings = install.path("data/recordings");
    let away = install.path("data/recordings.away");
    std::fs::rename(&recordings, &away).unwrap();
    std::fs::write(&recordings, "not a directory").unwrap();
    let broken = Instant::now();
    let text = alarm_within_30s(&admin, &log, "STORAGE_UNREACHABLE", "everyone").await;
    assert!(text.contains("local"), "{text}");
    profile_condition_within_30s(&admin, &log, "StorageBound", "StorageTargetUnreachable").await;
    mail_within_30s(
        &log,
        &to,
        &[
            "(STORAGE_UNREACHABLE)",
            "Source: recorder everyone",
            "Severity: Critical",
        ],
    )
    .await;
    tokio::time::sleep_until((broken + OUTAGE).into()).await;
    std::fs::remove_file(&recordings).unwrap();
    std::fs::rename(&away, &recordings).unwrap();
    alarm_cleared(&admin, &log, "STORAGE_UNREACHABLE", "everyone").await;
    mail_within_30s(
        &log,
        &to,
        &[
            "The condition has recovered",
            "(STORAGE_UNREACHABLE)",
            "Source: recorder everyone",
        ],
    )
    .await;
    profile_ready_again(&admin, &log).await;

    // The spool filled: less free than its minFreeMiB once 2 GiB are written to it. The
    // threshold sits 1 GiB under today's free space, so what else writes to the disk meanwhile
    // does not decide the outcome.
    let spool = install.path("data/spool/everyone");
    let free = free_mib(&spool);
    assert!(
        free > 4096,
        "the test needs 4 GiB free on the spool's disk ({free} MiB)"
    );
    let spool_edit = |min_free_mib| Edit {
        n: EDITS,
        replicas: EDITS,
        min_free_mib,
        ..Edit::default()
    };
    install.profile(&spool_edit(free - 1024));
    applied(&install, &log, EDITS as usize + 1).await;
    let filler = spool.join("filler");
    let status = std::process::Command::new("fallocate")
        .args(["-l", "2G"])
        .arg(&filler)
        .status()
        .unwrap();
    assert!(status.success(), "fallocate");
    let text = alarm_within_30s(&admin, &log, "SPOOL_DISK_FULL", "everyone").await;
    assert!(text.contains("refused"), "{text}");
    mail_within_30s(
        &log,
        &to,
        &["(SPOOL_DISK_FULL)", "Source: recorder everyone"],
    )
    .await;
    profile_condition_within_30s(&admin, &log, "Ready", "SpoolFull").await;
    // A call offered now is refused at INVITE, so its source can fail over.
    assert_eq!(
        offer_call_from(install.sip, "1", "+15550330001").await,
        Ok(false),
        "a call offered to a full spool gets 503"
    );
    std::fs::remove_file(&filler).unwrap();
    alarm_cleared(&admin, &log, "SPOOL_DISK_FULL", "everyone").await;
    profile_ready_again(&admin, &log).await;
    install.profile(&spool_edit(0));
    applied(&install, &log, EDITS as usize + 2).await;

    // SIGTERM with calls in flight: they are finished and committed; then back in service.
    source.pause().await;
    let draining: Vec<_> = (0..3)
        .map(|i| {
            let number = format!("+1555034000{i}");
            let sip = install.sip;
            tokio::spawn(async move {
                let ended = offer_call_from(sip, "3", &number).await;
                Offer {
                    number,
                    ms: 3_000,
                    ended,
                }
            })
        })
        .collect();
    live_calls(&db, &log, "+1555034000").await;
    stop_with(&mut child, &log, "-TERM").await;
    for call in draining {
        let offer = call.await.unwrap();
        assert_eq!(offer.ended, Ok(true), "{offer:?} drained on SIGTERM");
        source.ended.push(offer);
    }
    let (mut child, log) = install.start_with(&["--smtp-config", "smtp.yaml"]).await;
    source.resume();

    // SIGKILL with calls in flight: recovered at the next start, incomplete, with the
    // length they hold.
    source.pause().await;
    let cut: Vec<_> = (0..3)
        .map(|i| {
            let number = format!("+1555035000{i}");
            let sip = install.sip;
            (
                number.clone(),
                tokio::spawn(async move { offer_call_from(sip, "6", &number).await }),
            )
        })
        .collect();
    live_calls(&db, &log, "+1555035000").await;
    child.kill().await.unwrap();
    for (number, call) in cut {
        // The source may see the call cut or not; the recording is what must be there.
        let _ = call.await.unwrap();
        killed.push(number);
    }
    let (mut child, log) = install.start_with(&["--smtp-config", "smtp.yaml"]).await;
    // A last stretch of calls on the restarted installation.
    let before = recordings_by_number(&db).await.len();
    source.resume();
    poll(
        "calls recorded after the restart",
        Duration::from_secs(60),
        &log,
        || {
            let db = db.clone();
            async move { (recordings_by_number(&db).await.len() >= before + 5).then_some(()) }
        },
    )
    .await;
    let offers = source.finish().await;

    // Every call offered: recorded or refused, never lost.
    let rows = poll(
        "every answered call committed",
        Duration::from_secs(120),
        &log,
        || {
            let db = db.clone();
            let offers = &offers;
            async move {
                let rows = recordings_by_number(&db).await;
                offers
                    .iter()
                    .filter(|o| o.ended != Ok(false))
                    .all(|o| rows.contains_key(&o.number))
                    .then_some(rows)
            }
        },
    )
    .await;
    let (mut complete, mut refused, mut lost) = (0, 0, Vec::new());
    for offer in &offers {
        match (&offer.ended, rows.get(&offer.number)) {
            (Ok(false), _) => refused += 1,
            (Ok(true), Some(row)) => {
                assert_eq!(
                    row.status,
                    callvault_store::db::RecordingStatus::Available,
                    "{row:?}"
                );
                assert!(
                    (offer.ms - 100..=offer.ms + 200).contains(&row.duration_ms),
                    "a call of {} ms holds {} ms",
                    offer.ms,
                    row.duration_ms
                );
                complete += 1;
            }
            _ => lost.push(format!("{offer:?}")),
        }
    }
    let mut incomplete = 0;
    for number in &vanished {
        let row = rows
            .get(number)
            .unwrap_or_else(|| panic!("vanished call {number} recorded"));
        assert_eq!(row.stop_reason.as_deref(), Some("media-timeout"), "{row:?}");
        // Live for under a second before its source vanished, then the timeout's silence.
        let most = i64::from(MEDIA_TIMEOUT_SECONDS) * 1000 + 2000;
        assert!(
            row.duration_ms <= most,
            "{} ms recorded, {most} ms at most",
            row.duration_ms
        );
        incomplete += 1;
    }
    for number in &killed {
        let row = rows
            .get(number)
            .unwrap_or_else(|| panic!("cut call {number} recovered"));
        assert_eq!(
            row.status,
            callvault_store::db::RecordingStatus::Incomplete,
            "{row:?}"
        );
        let reason = row.stop_reason.as_deref().unwrap_or_default();
        assert!(reason.starts_with("recovered after crash at "), "{reason}");
        assert!(row.duration_ms <= 6_000, "{row:?}");
        incomplete += 1;
    }
    let offered = offers.len() + vanished.len() + killed.len() + 1;
    eprintln!(
        "fault suite: {offered} calls offered, {} recorded ({complete} complete, {incomplete} \
         incomplete with their reason), {} refused with 503, {} lost",
        complete + incomplete,
        refused + 1,
        lost.len()
    );
    assert!(lost.is_empty(), "calls lost without a word: {lost:#?}");
    interrupt(&mut child, &log).await;
}

/// Issue 17: resource changes the CRDs' rules forbid are refused in standalone as the API
/// server refuses them in a cluster, and the running resources stay: a RecordingProfile that
/// holds a recording cannot be removed (an alarm says why, and calls are still recorded), a
/// disabled one cannot be enabled again, and a restart with such a file runs what ran before
/// and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_changes_the_rules_forbid_are_refused_and_the_running_set_kept() {
    let install = Install::minimal();
    let (mut child, log) = install.start().await;
    let (admin, _) = Session::login(install.http, FIRST_PASSWORD).await;
    let file = install.path("resources/callvault.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let write = |text: &str| {
        let tmp = install.path("resources/.callvault.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, &file).unwrap();
    };
    let summary = call_with_client(install.sip, &["--duration", "1"]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");
    poll("the call stored", Duration::from_secs(60), &log, || async {
        (available(&admin.recordings().await) == 1).then_some(())
    })
    .await;

    // The profile removed from the files: refused, and it keeps recording.
    let without: Vec<&str> = original
        .split("---\n")
        .filter(|doc| !doc.contains("kind: RecordingProfile"))
        .collect();
    write(&without.join("---\n"));
    let text = alarm_within_30s(&admin, &log, "CONFIGURATION_REFUSED", "resource files").await;
    assert!(
        text.contains(
            "RecordingProfile \\\"everyone\\\" cannot be removed: it still holds 1 recording"
        ),
        "{text}"
    );
    let summary = call_with_client(install.sip, &["--duration", "1"]).await;
    assert_eq!(summary["callsCompleted"], 1, "{summary}");
    poll(
        "the second call stored",
        Duration::from_secs(60),
        &log,
        || async { (available(&admin.recordings().await) == 2).then_some(()) },
    )
    .await;

    // Disabling it is allowed; enabling it again is not.
    let disabled = original.replacen(
        "spec:\n  selector:",
        "spec:\n  disabled: true\n  selector:",
        1,
    );
    assert_ne!(disabled, original);
    write(&disabled);
    alarm_cleared(&admin, &log, "CONFIGURATION_REFUSED", "resource files").await;
    write(&original);
    let text = alarm_within_30s(&admin, &log, "CONFIGURATION_REFUSED", "resource files").await;
    assert!(text.contains("cannot be re-enabled"), "{text}");

    // Restarted with the file that enables it again: what ran before runs, and says why.
    interrupt(&mut child, &log).await;
    let (mut child, log) = install.start().await;
    let (admin, _) = Session::login(install.http, FIRST_PASSWORD).await;
    let text = alarm_within_30s(&admin, &log, "CONFIGURATION_REFUSED", "resource files").await;
    assert!(text.contains("cannot be re-enabled"), "{text}");
    write(&disabled);
    alarm_cleared(&admin, &log, "CONFIGURATION_REFUSED", "resource files").await;
    interrupt(&mut child, &log).await;
}
