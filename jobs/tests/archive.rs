//! The archive job against real databases (SQLite and PostgreSQL: CALLVAULT_TEST_DATABASE_URL)
//! and real storage: filesystem targets, MinIO (S3), Azurite (Azure Blob) and fake-gcs-server
//! (GCS) as started by `scripts/services.sh` (`start_object_stores`). Recordings are real
//! `.cvr` envelopes written with the store's format under a freshly generated key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use callvault_jobs::archive::{ArchiveJob, ArchiveMode, RunOutcome, run_archive};
use callvault_store::db::{
    CallType, Db, Direction, FinishRecording, NewRecording, Party, RecordingStatus, ReleaseCause,
};
use callvault_store::format::{MAGIC, RecordingWriter, WriterOptions, sha256};
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};
use serde_json::json;
use uuid::Uuid;

use callvault_store::db::testing::TestDb as Fixture;

const T: &str = "bank";
const P: &str = "sales";
const SEC: i64 = 1_000_000;
const T0: i64 = 1_750_000_000 * SEC;

callvault_store::on_both_backends!(
    envelopes_are_copied_as_stored_new_and_old_once,
    plaintext_archive_decrypts_and_writes_ogg_and_sidecar,
    a_copy_that_cannot_be_verified_is_not_recorded,
    unreachable_destination_copies_nothing_and_says_why,
);

/// Two RSA keys: the profile's (granted to the plaintext connector) and another one.
fn keys() -> &'static (PrivateKey, PrivateKey) {
    static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            PrivateKey::generate(2048).expect("key"),
            PrivateKey::generate(2048).expect("key"),
        )
    })
}

fn ring_of(key: &PrivateKey) -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(key.clone());
    ring
}

fn fs_target(path: &Path) -> Storage {
    let spec = json!({"type": "filesystem", "path": path});
    objstore::open(
        &StorageConfig::from_spec(&spec).expect("spec"),
        &Credentials::none(),
    )
    .expect("open")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test (it starts the object stores)")
    })
}

/// A fresh folder in the shared test bucket of a cloud emulator.
fn cloud_target(kind: &str, archive: bool) -> Storage {
    let prefix = format!("archive-tests/{}", Uuid::new_v4().simple());
    let (spec, creds) = match kind {
        "s3" => (
            json!({"type": "s3", "endpoint": env("CALLVAULT_TEST_S3_ENDPOINT"),
                   "region": env("CALLVAULT_TEST_S3_REGION"), "prefix": prefix,
                   "bucket": env(if archive { "CALLVAULT_TEST_S3_ARCHIVE_BUCKET" } else { "CALLVAULT_TEST_S3_BUCKET" })}),
            Credentials::s3(
                env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
                env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
            ),
        ),
        "azure" => (
            json!({"type": "azure", "endpoint": env("CALLVAULT_TEST_AZURE_ENDPOINT"),
                   "account": env("CALLVAULT_TEST_AZURE_ACCOUNT"), "prefix": prefix,
                   "container": env(if archive { "CALLVAULT_TEST_AZURE_ARCHIVE_CONTAINER" } else { "CALLVAULT_TEST_AZURE_CONTAINER" })}),
            Credentials::azure_key(env("CALLVAULT_TEST_AZURE_ACCOUNT_KEY")),
        ),
        "gcs" => (
            json!({"type": "gcs", "endpoint": env("CALLVAULT_TEST_GCS_ENDPOINT"), "prefix": prefix,
                   "bucket": env(if archive { "CALLVAULT_TEST_GCS_ARCHIVE_BUCKET" } else { "CALLVAULT_TEST_GCS_BUCKET" })}),
            Credentials::gcs(env("CALLVAULT_TEST_GCS_SERVICE_ACCOUNT_JSON")),
        ),
        other => panic!("unknown kind {other}"),
    };
    objstore::open(&StorageConfig::from_spec(&spec).expect("spec"), &creds).expect("open")
}

/// A primary target (name "primary") and an archive target (name "vault").
struct World {
    _dir: tempfile::TempDir,
    sources: BTreeMap<String, Storage>,
    archive: Storage,
    archive_root: Option<std::path::PathBuf>,
}

impl World {
    fn filesystem() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["primary", "vault"] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let sources =
            BTreeMap::from([("primary".to_owned(), fs_target(&dir.path().join("primary")))]);
        let archive = fs_target(&dir.path().join("vault"));
        World {
            archive_root: Some(dir.path().join("vault")),
            _dir: dir,
            sources,
            archive,
        }
    }

    fn with(source: Storage, archive: Storage) -> Self {
        World {
            _dir: tempfile::tempdir().expect("tempdir"),
            sources: BTreeMap::from([("primary".to_owned(), source)]),
            archive,
            archive_root: None,
        }
    }

    fn primary(&self) -> &Storage {
        &self.sources["primary"]
    }

    fn job<'a>(
        &'a self,
        db: &'a Db,
        profiles: &'a [String],
        mode: ArchiveMode<'a>,
    ) -> ArchiveJob<'a> {
        ArchiveJob {
            db,
            tenant: T,
            connector: "offsite",
            profiles,
            sources: &self.sources,
            destination_name: "vault",
            destination: &self.archive,
            mode,
            batch_size: 2,
            concurrency: 3,
        }
    }
}

/// The audio of call `n` (stands in for Ogg Opus: the archive never parses it).
fn audio(n: usize) -> Vec<u8> {
    (0..20_000 + n * 100).map(|i| (i * 7 + n) as u8).collect()
}

/// Stores a finished call of `profile` started `age` seconds before T0, encrypted under `key`.
async fn call(
    db: &Db,
    world: &World,
    profile: &str,
    age: i64,
    n: usize,
    key: &PrivateKey,
) -> (Uuid, Vec<u8>) {
    let mut rec = NewRecording::new(format!("call-{n}"), T0 - age * SEC, Direction::Inbound);
    rec.profile = profile.to_owned();
    rec.storage_target = "primary".to_owned();
    rec.call_type = CallType::PstnP2p;
    rec.calling = Party::new("+441234567890", "Caller");
    rec.called = Party::new("2001", "Dealer");
    rec.raw_metadata = Some(format!("{{\"call\":{n}}}"));
    db.create_recording(T, &rec).await.expect("create");
    let plain = audio(n);
    let metadata_sha = sha256(rec.raw_metadata.as_deref().unwrap_or("").as_bytes());
    let mut w = RecordingWriter::new(
        Vec::new(),
        key.public_key(),
        WriterOptions { chunk_size: 4096 },
    )
    .expect("writer");
    std::io::Write::write_all(&mut w, &plain).expect("write");
    let (envelope, summary) = w.finish(&metadata_sha).expect("finish");
    let object_key = format!("{T}/2025/06/{}.cvr", rec.id);
    world
        .primary()
        .put(&object_key, Bytes::from(envelope.clone()))
        .await
        .expect("put");
    db.finish_recording(
        T,
        rec.id,
        &FinishRecording {
            status: RecordingStatus::Available,
            end_time: rec.start_time + 60 * SEC,
            answer_time: Some(rec.start_time),
            release_cause: Some(ReleaseCause::Normal),
            answering: None,
            object_key,
            size_bytes: envelope.len() as i64,
            codec: "opus".into(),
            channels: 2,
            sha256: hex::encode(summary.plaintext_sha256),
            metadata_digest: hex::encode(metadata_sha),
            signature: summary.seal.to_hex(),
            key_id: summary.key_id.to_hex(),
            stop_reason: None,
        },
    )
    .await
    .expect("finish");
    (rec.id, envelope)
}

fn object_key(id: Uuid, ext: &str) -> String {
    format!("{T}/2025/06/{id}.{ext}")
}

async fn envelopes_are_copied_as_stored_new_and_old_once(f: Fixture) {
    let db = &f.db;
    let world = World::filesystem();
    let key = &keys().0;
    // An old call (a year back: archived although it predates the connector) and new ones.
    let mut calls = vec![call(db, &world, P, 365 * 86_400, 0, key).await];
    for n in 1..4 {
        calls.push(call(db, &world, P, 60, n, key).await);
    }
    let (other, _) = call(db, &world, "support", 60, 9, key).await;
    let profiles = vec![P.to_owned()];

    let summary = run_archive(&world.job(db, &profiles, ArchiveMode::Envelope))
        .await
        .expect("run");
    assert_eq!(summary.outcome(), RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.archived, 4);
    assert_eq!((summary.counts.pending, summary.counts.archived), (0, 4));
    for (id, envelope) in &calls {
        let copy = world
            .archive
            .get(&object_key(*id, "cvr"))
            .await
            .expect("copy");
        assert_eq!(
            &copy[..],
            &envelope[..],
            "the envelope is copied byte for byte"
        );
        assert!(copy.starts_with(&MAGIC), "still encrypted");
        let rows = db.archive_copies(T, *id).await.expect("copies");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].connector, "offsite");
        assert_eq!(rows[0].target, "vault");
        assert_eq!(rows[0].sha256, hex::encode(sha256(envelope)));
    }
    assert!(
        db.archive_copies(T, other)
            .await
            .expect("copies")
            .is_empty(),
        "another profile's call is not this connector's"
    );
    let root = world.archive_root.as_ref().expect("fs");
    assert!(
        !walk(root).iter().any(|p| p.ends_with(".ogg")),
        "nothing decrypted"
    );

    // The next run finds nothing to do; a new call is picked up by the one after.
    let again = run_archive(&world.job(db, &profiles, ArchiveMode::Envelope))
        .await
        .expect("second run");
    assert_eq!((again.archived, again.failures.len()), (0, 0));
    let (late, _) = call(db, &world, P, 1, 5, key).await;
    let third = run_archive(&world.job(db, &profiles, ArchiveMode::Envelope))
        .await
        .expect("third run");
    assert_eq!(third.archived, 1);
    assert_eq!(db.archive_copies(T, late).await.expect("copies").len(), 1);
    assert_eq!((third.counts.pending, third.counts.archived), (0, 5));

    // Without a profile list the connector takes the whole tenant.
    let all = run_archive(&world.job(db, &[], ArchiveMode::Envelope))
        .await
        .expect("all profiles");
    assert_eq!(all.archived, 1);
    assert_eq!(db.archive_copies(T, other).await.expect("copies").len(), 1);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

async fn plaintext_archive_decrypts_and_writes_ogg_and_sidecar(f: Fixture) {
    let db = &f.db;
    let world = World::filesystem();
    let key = &keys().0;
    let (id, _) = call(db, &world, P, 60, 1, key).await;
    let ring = ring_of(key);
    let summary = run_archive(&world.job(db, &[], ArchiveMode::Plaintext(&ring)))
        .await
        .expect("run");
    assert_eq!(summary.outcome(), RunOutcome::Succeeded, "{summary:?}");

    let ogg = world
        .archive
        .get(&object_key(id, "ogg"))
        .await
        .expect("ogg");
    assert_eq!(&ogg[..], &audio(1)[..], "decrypted audio as recorded");
    let sidecar: serde_json::Value = serde_json::from_slice(
        &world
            .archive
            .get(&object_key(id, "json"))
            .await
            .expect("sidecar"),
    )
    .expect("sidecar is JSON");
    let rec = db.recording(T, id).await.expect("get").expect("row");
    assert_eq!(sidecar["id"], id.to_string());
    assert_eq!(sidecar["callId"], "call-1");
    assert_eq!(sidecar["calling"]["number"], "+441234567890");
    assert_eq!(sidecar["direction"], "inbound");
    assert_eq!(sidecar["startTime"], "2025-06-15T15:05:40Z");
    assert_eq!(sidecar["audioSha256"], rec.sha256.clone().expect("digest"));
    assert!(
        !world
            .archive
            .exists(&object_key(id, "cvr"))
            .await
            .expect("head"),
        "a plaintext connector writes no envelope"
    );
    let copies = db.archive_copies(T, id).await.expect("copies");
    assert_eq!(copies[0].object_key, object_key(id, "ogg"));
    assert_eq!(Some(copies[0].sha256.clone()), rec.sha256);
}

async fn a_copy_that_cannot_be_verified_is_not_recorded(f: Fixture) {
    let db = &f.db;
    let world = World::filesystem();
    let (granted, other) = keys();
    let (good, _) = call(db, &world, P, 300, 1, granted).await;
    // Under a key the connector was not granted.
    let (unkeyed, _) = call(db, &world, P, 200, 2, other).await;
    // Its media no longer matches the digest the recorder stored.
    let (swapped, _) = call(db, &world, P, 100, 3, granted).await;
    let (_, foreign) = call(db, &world, "scratch", 50, 4, granted).await;
    world
        .primary()
        .put(&object_key(swapped, "cvr"), Bytes::from(foreign))
        .await
        .expect("swap media");
    // Its media is gone from primary storage.
    let (missing, _) = call(db, &world, P, 10, 5, granted).await;
    world
        .primary()
        .delete(&object_key(missing, "cvr"))
        .await
        .expect("delete");

    let ring = ring_of(granted);
    let profiles = vec![P.to_owned()];
    let summary = run_archive(&world.job(db, &profiles, ArchiveMode::Plaintext(&ring)))
        .await
        .expect("run");
    assert_eq!(summary.outcome(), RunOutcome::PartiallyFailed);
    assert_eq!(summary.archived, 1);
    let failed: Vec<Uuid> = summary.failures.iter().map(|f| f.recording_id).collect();
    for id in [unkeyed, swapped, missing] {
        assert!(failed.contains(&id), "{id} failed: {summary:?}");
        assert!(db.archive_copies(T, id).await.expect("copies").is_empty());
        assert!(
            !world
                .archive
                .exists(&object_key(id, "ogg"))
                .await
                .expect("head")
        );
    }
    let why = |id| {
        summary
            .failures
            .iter()
            .find(|f| f.recording_id == id)
            .map(|f| f.error.clone())
            .unwrap_or_default()
    };
    assert!(
        why(unkeyed).contains("not in the key ring"),
        "{}",
        why(unkeyed)
    );
    assert!(why(swapped).contains("SHA-256"), "{}", why(swapped));
    assert!(why(missing).contains("not found"), "{}", why(missing));
    assert_eq!(db.archive_copies(T, good).await.expect("copies").len(), 1);
    assert_eq!(summary.counts.pending, 3);
    assert!(
        summary.message().is_some_and(|m| m.starts_with("3 of 4")),
        "{:?}",
        summary.message()
    );
}

async fn unreachable_destination_copies_nothing_and_says_why(f: Fixture) {
    let db = &f.db;
    let mut world = World::filesystem();
    let (id, _) = call(db, &world, P, 60, 1, &keys().0).await;
    // The archive's S3 endpoint refuses connections (a server down, a firewall).
    let spec = json!({"type": "s3", "bucket": "vault", "endpoint": "http://127.0.0.1:9"});
    world.archive = objstore::open(
        &StorageConfig::from_spec(&spec).expect("spec"),
        &Credentials::s3("id", "secret"),
    )
    .expect("open");
    let summary = run_archive(&world.job(db, &[], ArchiveMode::Envelope))
        .await
        .expect("run");
    assert_eq!(summary.outcome(), RunOutcome::Failed);
    let why = summary.unreachable.clone().expect("unreachable");
    assert!(why.contains("step failed"), "{why}");
    assert_eq!(summary.message(), Some(why));
    assert_eq!(summary.archived, 0);
    assert_eq!(summary.counts.pending, 1);
    assert!(db.archive_copies(T, id).await.expect("copies").is_empty());
}

/// Envelope archive between two real cloud stores; SQLite is enough for the database side.
async fn cloud_round_trip(source: Storage, archive: Storage) {
    let f = Fixture::sqlite().await;
    let db = &f.db;
    let world = World::with(source, archive);
    let key = &keys().0;
    let mut calls = Vec::new();
    for n in 0..3 {
        calls.push(call(db, &world, P, 60 - n as i64, n, key).await);
    }
    let summary = run_archive(&world.job(db, &[], ArchiveMode::Envelope))
        .await
        .expect("run");
    assert_eq!(summary.outcome(), RunOutcome::Succeeded, "{summary:?}");
    assert_eq!(summary.archived, 3);
    for (id, envelope) in &calls {
        let copy = world
            .archive
            .get(&object_key(*id, "cvr"))
            .await
            .expect("copy");
        assert_eq!(&copy[..], &envelope[..]);
    }

    // A plaintext connector to the same store.
    let ring = ring_of(key);
    let mut job = world.job(db, &[], ArchiveMode::Plaintext(&ring));
    job.connector = "plain";
    let plain = run_archive(&job).await.expect("plaintext run");
    assert_eq!(plain.archived, 3, "{plain:?}");
    let ogg = world
        .archive
        .get(&object_key(calls[1].0, "ogg"))
        .await
        .expect("ogg");
    assert_eq!(&ogg[..], &audio(1)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_minio_to_minio() {
    cloud_round_trip(cloud_target("s3", false), cloud_target("s3", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_minio_to_azurite() {
    cloud_round_trip(cloud_target("s3", false), cloud_target("azure", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_minio_to_gcs() {
    cloud_round_trip(cloud_target("s3", false), cloud_target("gcs", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_gcs_to_gcs() {
    cloud_round_trip(cloud_target("gcs", false), cloud_target("gcs", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_from_azurite_to_a_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    cloud_round_trip(cloud_target("azure", false), fs_target(dir.path())).await;
}
