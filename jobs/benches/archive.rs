//! Archive throughput between two buckets of a local S3-compatible server (MinIO), as a ratio
//! to a plain copy of the same objects in the same run: the store's streaming `copy_to` with
//! the same concurrency. The archive run does what a Connector does on top of that copy: it
//! lists pending recordings in PostgreSQL, tests the destination's connection, stages each
//! object while hashing it, uploads it with that digest checked (by the server, for S3) and
//! records it. Rounds alternate the two,
//! each round copying to a fresh prefix (the archive under a fresh Connector name).
//!
//! Needs `source scripts/services.sh && start_object_stores && start_postgres`.
//! Run: `cargo bench -p callvault-jobs --bench archive`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke run of a few small objects.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use callvault_jobs::archive::{ArchiveJob, ArchiveMode, RunOutcome, run_archive};
use callvault_store::db::testing::TestDb;
use callvault_store::db::{
    Direction, FinishRecording, NewRecording, RecordingStatus, ReleaseCause,
};
use callvault_store::format::{RecordingWriter, WriterOptions, sha256};
use callvault_store::keys::PrivateKey;
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};
use futures::StreamExt;
use serde_json::json;

const T: &str = "bench";
const SEC: i64 = 1_000_000;
const CONCURRENCY: usize = 4;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start_object_stores and start_postgres first")
    })
}

fn bucket(var: &str, prefix: &str) -> Storage {
    let spec = json!({"type": "s3", "endpoint": env("CALLVAULT_TEST_S3_ENDPOINT"),
        "region": env("CALLVAULT_TEST_S3_REGION"), "bucket": env(var), "prefix": prefix});
    objstore::open(
        &StorageConfig::from_spec(&spec).expect("spec"),
        &Credentials::s3(
            env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
            env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
        ),
    )
    .expect("open")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (objects, size, rounds) = if full {
        (120usize, 1usize << 20, 3usize)
    } else {
        (6, 64 << 10, 1)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let source = bucket("CALLVAULT_TEST_S3_BUCKET", &format!("bench/{run}/source"));
        let f = TestDb::postgres().await;
        let db = &f.db;
        let key = PrivateKey::generate(2048).expect("key");

        // Recordings as the recorder leaves them: an encrypted envelope per call, and its row.
        let mut keys = Vec::new();
        for n in 0..objects {
            let mut rec = NewRecording::new(
                format!("call-{n}"),
                1_750_000_000 * SEC + n as i64 * SEC,
                Direction::Inbound,
            );
            rec.profile = "bench".into();
            rec.storage_target = "primary".into();
            db.create_recording(T, &rec).await.expect("create");
            let plain: Vec<u8> = (0..size).map(|i| (i * 31 + n * 7) as u8).collect();
            let metadata_sha = sha256(rec.call_id.as_bytes());
            let mut w = RecordingWriter::new(Vec::new(), key.public_key(), WriterOptions::default())
                .expect("writer");
            std::io::Write::write_all(&mut w, &plain).expect("write");
            let (envelope, summary) = w.finish(&metadata_sha).expect("seal");
            let object_key = format!("{T}/{}.cvr", rec.id);
            source
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
                    object_key: object_key.clone(),
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
            keys.push((object_key, envelope.len()));
        }
        let bytes: usize = keys.iter().map(|k| k.1).sum();
        let sources = BTreeMap::from([("primary".to_owned(), source.clone())]);

        let (mut plain_t, mut archive_t) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let dest = bucket("CALLVAULT_TEST_S3_ARCHIVE_BUCKET", &format!("bench/{run}/plain-{r}"));
            let t = Instant::now();
            let copied: Vec<_> = futures::stream::iter(&keys)
                .map(|(k, _)| source.copy_to(k, &dest, k))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            plain_t.push(t.elapsed().as_secs_f64());
            assert!(copied.iter().all(Result::is_ok), "plain copy failed");

            let dest = bucket("CALLVAULT_TEST_S3_ARCHIVE_BUCKET", &format!("bench/{run}/archive-{r}"));
            let connector = format!("offsite-{r}");
            let t = Instant::now();
            let summary = run_archive(&ArchiveJob {
                db,
                tenant: T,
                connector: &connector,
                profiles: &[],
                sources: &sources,
                destination_name: "vault",
                destination: &dest,
                mode: ArchiveMode::Envelope,
                batch_size: 500,
                concurrency: CONCURRENCY,
            })
            .await
            .expect("archive run");
            archive_t.push(t.elapsed().as_secs_f64());
            assert_eq!(summary.outcome(), RunOutcome::Succeeded, "{:?}", summary.message());
            assert_eq!(summary.archived, objects as u64);
        }
        let (p, a) = (median(plain_t), median(archive_t));
        let mib = bytes as f64 / f64::from(1u32 << 20);
        println!(
            "archive: {objects} recordings, {mib:.1} MiB, concurrency {CONCURRENCY}, median of {rounds}"
        );
        println!("| path | seconds | MiB/s | recordings/s |");
        println!("|---|---|---|---|");
        for (name, s) in [("plain copy (copy_to)", p), ("archive run (envelope)", a)] {
            println!("| {name} | {s:.2} | {:.1} | {:.1} |", mib / s, objects as f64 / s);
        }
        println!("archive throughput / plain copy throughput: {:.2}", p / a);
    });
}
