//! Retention over a large vault: 1,000,000 recordings of one RecordingProfile in PostgreSQL
//! (bulk-inserted with generate_series), of which a day's worth have expired and are removed
//! (media file deleted, audit entry written, row marked deleted), then a second run that finds
//! nothing to do. Reports each run's time and the process's peak resident memory during it.
//!
//! Needs `source scripts/services.sh && start_postgres` (CALLVAULT_TEST_DATABASE_URL).
//! Run: `cargo bench -p callvault-jobs --bench retention`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it is a smoke run over a few thousand rows.

use std::time::Instant;

use callvault_jobs::retention::{RetentionOptions, Target, run_retention};
use callvault_store::db::Db;
use callvault_store::db::testing::TestDb;
use callvault_store::objstore::{self, Credentials, StorageConfig};
use serde_json::json;

const T: &str = "bench";
const DAY: i64 = 86_400 * 1_000_000;

/// Peak resident set size of this process, in KiB (VmHWM).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Starts a new peak: the kernel resets VmHWM to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (recordings, expired): (i64, i64) = if full {
        (1_000_000, 10_000)
    } else {
        (2_000, 50)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let f = TestDb::postgres().await;
        let Db::Postgres(pool) = &f.db else {
            panic!("TestDb::postgres is PostgreSQL")
        };
        let now = callvault_store::db::now_micros();
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = objstore::open(
            &StorageConfig::from_spec(&json!({"type": "filesystem", "path": dir.path()}))
                .expect("spec"),
            &Credentials::none(),
        )
        .expect("open");

        // Calls a minute apart; the first `expired` are past their expiry, the rest are kept
        // for 30 more days.
        let t = Instant::now();
        sqlx::query(
            "INSERT INTO recordings (tenant, id, call_id, start_time, end_time, duration_ms, \
               direction, profile, storage_target, object_key, size_bytes, codec, channels, \
               expires_at, status, created_at, updated_at) \
             SELECT $1, gen_random_uuid(), 'call-' || g, $2 + g * 60000000, \
               $2 + g * 60000000 + 45000000, 45000, 'inbound', 'sales', 'primary', \
               'bench/' || g || '.cvr', 1024, 'opus', 2, \
               CASE WHEN g <= $3 THEN $4 - 3600000000 ELSE $4 + 30 * $5 END, \
               'available', $4, $4 \
             FROM generate_series(1, $6::bigint) AS g",
        )
        .bind(T)
        .bind(now - 400 * DAY)
        .bind(expired)
        .bind(now)
        .bind(DAY)
        .bind(recordings)
        .execute(pool)
        .await
        .expect("bulk insert");
        sqlx::query("ANALYZE recordings")
            .execute(pool)
            .await
            .expect("analyze");
        let insert = t.elapsed().as_secs_f64();
        // The expired calls' media, so each removal deletes a real file.
        let media = dir.path().join("bench");
        std::fs::create_dir_all(&media).expect("mkdir");
        for g in 1..=expired {
            std::fs::write(media.join(format!("{g}.cvr")), [0u8; 1024]).expect("media");
        }

        let opts = RetentionOptions {
            batch_size: 1000,
            audit_retention_days: 365,
        };
        let target = Target {
            name: "primary",
            storage: &storage,
        };
        let mut rows = Vec::new();
        for pass in ["removes the expired", "nothing left to do"] {
            reset_peak_rss();
            let before = peak_rss_kib();
            let t = Instant::now();
            let s = run_retention(&f.db, target, T, "sales", now, opts)
                .await
                .expect("retention run");
            let secs = t.elapsed().as_secs_f64();
            assert!(s.failures.is_empty(), "{:?}", s.failures.first());
            rows.push((pass, s.expired, secs, before, peak_rss_kib()));
        }
        assert_eq!(rows[0].1, expired as u64, "every expired recording removed");
        assert_eq!(rows[1].1, 0);
        // The filesystem target prunes folders it empties.
        let left = std::fs::read_dir(&media).map_or(0, |d| d.count());
        assert_eq!(left, 0, "every expired recording's media deleted");

        // A million rows are too many to leave behind in the shared server.
        let (name,): (String,) = sqlx::query_as("SELECT current_database()")
            .fetch_one(pool)
            .await
            .expect("database name");
        f.db.close().await;
        let admin = sqlx::PgPool::connect(&std::env::var("CALLVAULT_TEST_DATABASE_URL").expect("url"))
            .await
            .expect("connect");
        // FORCE: the server may not have ended the closed pool's sessions yet.
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .expect("drop the benchmark's database");
        admin.close().await;

        println!(
            "retention: {recordings} recordings in PostgreSQL (inserted and analysed in {insert:.1} s), {expired} expired, batch 1000"
        );
        println!("| run | removed | seconds | removals/s | RSS before (MiB) | peak RSS (MiB) |");
        println!("|---|---|---|---|---|---|");
        for (pass, removed, secs, before, peak) in rows {
            println!(
                "| {pass} | {removed} | {secs:.2} | {:.0} | {:.1} | {:.1} |",
                removed as f64 / secs,
                before as f64 / 1024.0,
                peak as f64 / 1024.0
            );
        }
    });
}
