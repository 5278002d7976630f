//! `callvault job transcribe`, run as the real binary on one standalone vault: a SQLite
//! database, a filesystem StorageTarget holding a recording encrypted as the recorder stores
//! it, a key ring directory, and the whisper engine (tiny.en through the faster-whisper worker,
//! with the interpreter from CALLVAULT_WHISPER_PYTHON). Needs `source scripts/services.sh &&
//! start_speech_server` (CALLVAULT_TEST_PYTHON, CALLVAULT_TEST_WHISPER_MODEL).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use callvault_store::db::{
    Db, Direction, FinishRecording, NewRecording, RecordingStatus, ReleaseCause,
};
use callvault_store::format::{RecordingWriter, WriterOptions, sha256};
use callvault_store::keys::PrivateKey;
use callvault_store::objstore::{self, Credentials, StorageConfig};

#[path = "../jobs/tests/transcribe_support/mod.rs"]
mod transcribe_support;

const T: &str = "default";
const SEC: i64 = 1_000_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `source scripts/services.sh && start_speech_server` first")
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn job(config: &Path, speech_job: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(["job", "transcribe", "--speech-job", speech_job, "--config"])
        .arg(config)
        .env("CALLVAULT_WHISPER_PYTHON", env("CALLVAULT_TEST_PYTHON"))
        // Standalone: the summary is printed, not written to a SpeechJob.
        .env_remove("CALLVAULT_POD_NAMESPACE")
        .stdin(Stdio::null())
        .output()
        .expect("run callvault")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stores one finished call spoken by party A and returns its row.
async fn store_call(db: &Db, media: &Path, key: &PrivateKey) -> NewRecording {
    let d = transcribe_support::short_call();
    let mut rec = NewRecording::new("cli-call", 1_750_000_000 * SEC, Direction::Inbound);
    rec.profile = "sales".into();
    rec.storage_target = "primary".into();
    db.create_recording(T, &rec).await.expect("create");
    let metadata_sha = sha256(rec.call_id.as_bytes());
    let mut w = RecordingWriter::new(Vec::new(), key.public_key(), WriterOptions::default())
        .expect("writer");
    std::io::Write::write_all(&mut w, &d.ogg()).expect("write");
    let (envelope, summary) = w.finish(&metadata_sha).expect("seal");
    let storage = objstore::open(
        &StorageConfig::from_spec(&serde_json::json!({"type": "filesystem", "path": media}))
            .expect("spec"),
        &Credentials::none(),
    )
    .expect("open");
    let object_key = format!("{T}/{}.cvr", rec.id);
    storage
        .put(&object_key, envelope.clone().into())
        .await
        .expect("put");
    db.finish_recording(
        T,
        rec.id,
        &FinishRecording {
            status: RecordingStatus::Available,
            end_time: rec.start_time + 10 * SEC,
            answer_time: Some(rec.start_time),
            release_cause: Some(ReleaseCause::Normal),
            answering: None,
            object_key,
            size_bytes: envelope.len() as i64,
            codec: "opus".into(),
            channels: 2,
            sha256: hex(&summary.plaintext_sha256),
            metadata_digest: hex(&metadata_sha),
            signature: summary.seal.to_hex(),
            key_id: summary.key_id.to_hex(),
            stop_reason: None,
        },
    )
    .await
    .expect("finish");
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcribes_a_standalone_vault_and_reports_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let media = dir.path().join("media");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&media).expect("mkdir");
    std::fs::create_dir_all(&keys).expect("mkdir");
    let url = format!("sqlite:{}", dir.path().join("vault.db").display());
    let url_file = dir.path().join("db-url");
    std::fs::write(&url_file, &url).expect("url file");
    let key = PrivateKey::generate(2048).expect("key");
    std::fs::write(
        keys.join("recording.pem"),
        key.to_pkcs8_pem().expect("pem").as_bytes(),
    )
    .expect("key file");

    let db = Db::connect(&url).await.expect("db");
    let id = store_call(&db, &media, &key).await.id;

    let config = dir.path().join("transcribe.yaml");
    std::fs::write(
        &config,
        format!(
            "tenant: {T}\nspeechJob: english\ndatabaseUrlFile: {}\nsources:\n  - name: primary\n    \
             storage: {{type: filesystem, path: {}}}\nkeyRing: {{dir: {}}}\n\
             engine: {{type: whisper, modelPath: {}}}\nmode: Incremental\n",
            url_file.display(),
            media.display(),
            keys.display(),
            env("CALLVAULT_TEST_WHISPER_MODEL")
        ),
    )
    .expect("config");

    // A configuration for another SpeechJob is refused before anything runs.
    let out = job(&config, "french");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("\"english\"") && err.contains("\"french\""),
        "{err}"
    );

    let out = job(&config, "english");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("transcribe english: transcribed 1 recordings"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 pending, 0 failed, 1 processed in all"),
        "{stdout}"
    );
    let ts = db.transcripts(T, id).await.expect("transcripts");
    assert_eq!(ts.len(), 2, "one transcript per channel");
    assert!(
        ts[0].body.to_lowercase().contains("morning"),
        "{:?}",
        ts[0].body
    );
    assert_eq!(ts[0].engine, "whisper");
    assert!(
        ts[1].body.is_empty(),
        "party B said nothing: {:?}",
        ts[1].body
    );

    // Incremental: the next run finds nothing new.
    let out = job(&config, "english");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("transcribed 0 recordings"), "{stdout}");
    db.close().await;
}
