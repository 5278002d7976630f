//! Portal: search and playback with 1,000,000 recordings in PostgreSQL.
//!
//! ```sh
//! source scripts/services.sh && start_postgres
//! cargo bench -p callvault-portal --bench portal
//! ```
//!
//! Seeds the database `cv_bench_portal_<n>` on the `CALLVAULT_TEST_DATABASE_URL` server once
//! (kept for later runs; drop it to start over): `CALLVAULT_BENCH_RECORDINGS` calls (default
//! 1,000,000) over one year, owned by 100 agents, a tenth of each agent's calls tagged with one
//! of 10 tags.
//! Then, through the portal's router in process (sign-in, access check, search, count, audit
//! entry; no network), it times `CALLVAULT_BENCH_SEARCHES` (default 200) typical searches
//! (a 30-day range, a calling-party prefix wildcard, a tag) as a supervisor (scope All) and
//! as an agent (scope Own), and the time to the first audio byte of a 1-hour recording and to
//! the first byte after a seek into it (50 requests each, decrypting on the fly).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use callvault_crds::access_profile::AccessProfile;
use callvault_portal::{FileAccessSource, Portal, PortalConfig, Storages};
use callvault_store::db::{
    Db, Direction, FinishRecording, NewRecording, NewUser, Party, RecordingStatus, ReleaseCause,
};
use callvault_store::format::{RecordingWriter, WriterOptions};
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

const T: &str = "default";
const PASSWORD: &str = "a long benchmark passphrase";
const AGENTS: usize = 100;
const TAGS: usize = 10;
const YEAR_US: i64 = 365 * 86_400 * 1_000_000;
/// 2025-01-01T00:00:00Z.
const BASE_US: i64 = 1_735_689_600 * 1_000_000;
/// One hour of two-party Opus at 32 kbit/s.
const HOUR_BYTES: usize = 3600 * 32_000 / 8;
const SEEDED: &str = "callvault portal benchmark: seeded (v2)";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator: the searches are the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(name: &str, mut times: Vec<Duration>, extra: &str) {
    times.sort();
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {extra} |",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 1.0),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench targets without `--bench`: seeding a million rows
    // does not belong in the test suite, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "portal: a benchmark; run it with `cargo bench -p callvault-portal --bench portal`"
        );
        return;
    }
    let n = env_or("CALLVAULT_BENCH_RECORDINGS", 1_000_000);
    let searches = env_or("CALLVAULT_BENCH_SEARCHES", 200);
    let url = std::env::var("CALLVAULT_TEST_DATABASE_URL")
        .expect("CALLVAULT_TEST_DATABASE_URL: run `source scripts/services.sh && start_postgres`");
    let (db, pool) = database(&url, n).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let storage = fs_storage(dir.path());
    let key = PrivateKey::generate(2048).expect("key");
    let key_id = key.id().to_hex();
    let mut ring = KeyRing::new();
    ring.insert(key.clone());
    let storages = Storages::new();
    storages.insert("primary".into(), storage.clone());
    let access = Arc::new(FileAccessSource::from_profiles(T, profiles(&key_id)));
    let router = Portal::new(
        PortalConfig {
            secure_cookies: false,
            ..PortalConfig::default()
        }
        .validate()
        .expect("config"),
        db.clone(),
        access,
        ring,
        storages,
        Arc::new(callvault_portal::NoJobRunner),
    )
    .app;
    let supervisor = login(&router, "supervisor").await;
    let agent = login(&router, "agent007").await;
    let tags: Vec<String> = db
        .list_tags(T)
        .await
        .expect("tags")
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();

    println!(
        "\n{n} recordings; {searches} searches per scope (30-day range + calling-party prefix + tag)\n"
    );
    println!("| measurement | requests | p50 ms | p95 ms | max ms | |");
    println!("|---|---|---|---|---|---|");
    for (name, session) in [
        ("search, scope All", &supervisor),
        ("search, scope Own", &agent),
    ] {
        let mut rng = Rng(0x5eed_cafe);
        let mut times = Vec::with_capacity(searches);
        let mut totals = 0i64;
        for _ in 0..searches {
            let from = BASE_US + rng.below(335) as i64 * 86_400 * 1_000_000;
            let query = json!({"query": {
                "from": from,
                "to": from + 30 * 86_400 * 1_000_000,
                "calling": format!("+1555{}*", rng.below(10)),
                "tags": [tags[rng.below(tags.len() as u64) as usize]],
            }});
            let started = Instant::now();
            let (status, body) = request(
                &router,
                session,
                "POST",
                "/api/v1/recordings/search",
                Some(query),
                None,
            )
            .await;
            times.push(started.elapsed());
            assert_eq!(status, StatusCode::OK, "search: {body:?}");
            let page: Value = serde_json::from_slice(&body).expect("json");
            totals += page["total"].as_i64().expect("total");
        }
        summary(
            name,
            times,
            &format!("{:.0} matches on average", totals as f64 / searches as f64),
        );
    }

    // A 1-hour recording: first byte of playback, and first byte after a seek into it.
    let owner = db
        .user_by_username(T, "agent007")
        .await
        .expect("db")
        .expect("agent")
        .id;
    let id = hour_recording(&db, &storage, &key, owner).await;
    let media = format!("/api/v1/recordings/{id}/media");
    let mut first = Vec::new();
    let mut seek = Vec::new();
    let mut rng = Rng(0xfeed);
    for _ in 0..50 {
        first.push(first_byte(&router, &supervisor, &media, 0).await);
        let offset = HOUR_BYTES / 4 + rng.below(HOUR_BYTES as u64 / 2) as usize;
        seek.push(first_byte(&router, &supervisor, &media, offset).await);
    }
    summary(
        "first audio byte, 1-hour recording",
        first,
        "Range: bytes=0-",
    );
    summary(
        "first byte after a seek, 1-hour recording",
        seek,
        "Range: bytes=N- at 15–45 min",
    );
    pool.close().await;
}

/// Opens (seeding when missing or incomplete) the benchmark database.
async fn database(url: &str, n: usize) -> (Db, sqlx::PgPool) {
    let name = format!("cv_bench_portal_{n}");
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').expect("database URL has a path");
    let bench_url = format!("{server}/{name}{query}");
    let admin = sqlx::PgPool::connect(url).await.expect("connect");
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&admin)
        .await
        .expect("query");
    let mut seeded = false;
    if exists.is_some() {
        let pool = sqlx::PgPool::connect(&bench_url).await.expect("connect");
        // Marked when the seeding finished (indexes and statistics included).
        let mark: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(&name)
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten();
        seeded = mark.is_some_and(|(m,)| m.as_deref() == Some(SEEDED));
        pool.close().await;
        if !seeded {
            sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&admin)
                .await
                .expect("drop");
        }
    }
    if !seeded {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create");
    }
    admin.close().await;
    let db = Db::connect(&bench_url).await.expect("connect and migrate");
    let pool = sqlx::PgPool::connect(&bench_url).await.expect("connect");
    if seeded {
        eprintln!("reusing {name}");
        // The previous run's 1-hour recording lives in a deleted temporary directory.
        sqlx::query("DELETE FROM recordings WHERE call_id = 'bench-hour'")
            .execute(&pool)
            .await
            .expect("delete");
    } else {
        seed(&db, &pool, n).await;
        sqlx::query(&format!("COMMENT ON DATABASE {name} IS '{SEEDED}'"))
            .execute(&pool)
            .await
            .expect("mark");
    }
    (db, pool)
}

async fn seed(db: &Db, pool: &sqlx::PgPool, n: usize) {
    let started = Instant::now();
    let hash = callvault_portal::auth::hash_password(PASSWORD).expect("hash");
    let mut nu = NewUser::local("supervisor", "Supervisor");
    nu.password_hash = Some(hash.clone());
    db.create_user(T, &nu).await.expect("user");
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let mut nu = NewUser::local(format!("agent{i:03}"), format!("Agent {i}"));
        nu.password_hash = Some(hash.clone());
        agents.push(db.create_user(T, &nu).await.expect("user").id.to_string());
    }
    let mut tags = Vec::new();
    for i in 0..TAGS {
        tags.push(
            db.create_tag(T, &format!("Tag {i}"), "")
                .await
                .expect("tag")
                .id
                .to_string(),
        );
    }
    // Bulk loading is faster with the secondary indexes built afterwards, from the migrations'
    // own definitions.
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename IN ('recordings', 'recording_tags') \
         AND indexname NOT LIKE '%_pkey'",
    )
    .fetch_all(pool)
    .await
    .expect("indexes");
    for (name, _) in &indexes {
        sqlx::query(&format!("DROP INDEX {name}"))
            .execute(pool)
            .await
            .expect("drop index");
    }
    let names = [
        "Alice Smith",
        "Bob Jones",
        "Carol White",
        "David Brown",
        "Erin Miller",
        "Frank Davis",
        "Grace Wilson",
        "Henry Moore",
        "Ivy Taylor",
        "Jack Anderson",
        "Karen Thomas",
        "Liam Jackson",
    ];
    let batch = 100_000;
    for lo in (1..=n).step_by(batch) {
        let hi = (lo + batch - 1).min(n);
        sqlx::query(
            "INSERT INTO recordings (tenant, id, call_id, start_time, answer_time, end_time, duration_ms, \
             direction, calling_number, calling_name, calling_norm, called_number, called_name, called_norm, \
             release_cause, owner_user_id, storage_target, object_key, size_bytes, codec, channels, status, \
             search_text, created_at, updated_at) \
             SELECT $1, md5('rec' || g)::uuid, 'call-' || g, s, s, s + d * 1000, d, \
               (ARRAY['inbound', 'outbound', 'internal'])[(1 + g % 3)::int], \
               '+1555' || lpad(((g * 48271) % 10000000)::text, 7, '0'), nm, ' ' || lower(nm) || ' ', \
               '2' || lpad((g % 100)::text, 3, '0'), 'Agent ' || (g % 100), ' agent ' || (g % 100) || ' ', \
               'normal', (($2::text[])[(1 + g % 100)::int])::uuid, 'primary', 'default/' || md5('rec' || g)::uuid || '.cvr', \
               d * 4, 'opus', 2, 'available', \
               lower('call-' || g || E'\\n+1555' || lpad(((g * 48271) % 10000000)::text, 7, '0') || E'\\n' || nm), s, s \
             FROM (SELECT g, $3::bigint + g * ($4::bigint / $5::bigint) AS s, \
                   (30 + (g * 7919) % 570) * 1000 AS d, ($6::text[])[(1 + (g * 31) % 12)::int] AS nm \
                   FROM generate_series($7::bigint, $8::bigint) g) x",
        )
        .bind(T)
        .bind(&agents)
        .bind(BASE_US)
        .bind(YEAR_US)
        .bind(n as i64)
        .bind(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .bind(lo as i64)
        .bind(hi as i64)
        .execute(pool)
        .await
        .expect("insert recordings");
        eprintln!(
            "seeded {hi} of {n} recordings ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    sqlx::query(
        "INSERT INTO recording_tags (tenant, recording_id, tag_id, start_time) \
         SELECT $1, r.id, (($2::text[])[(1 + (g / 1000) % 10)::int])::uuid, r.start_time \
         FROM generate_series(1, $3::bigint) g \
         JOIN recordings r ON r.tenant = $1 AND r.id = md5('rec' || g)::uuid \
         WHERE (g * 7 + g / 100) % 10 = 0",
    )
    .bind(T)
    .bind(&tags)
    .bind(n as i64)
    .execute(pool)
    .await
    .expect("insert tags");
    for (_, def) in &indexes {
        sqlx::query(def).execute(pool).await.expect("create index");
    }
    sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
    eprintln!("seeded in {:.0} s", started.elapsed().as_secs_f64());
}

fn profiles(key_id: &str) -> Vec<AccessProfile> {
    let yaml = format!(
        "apiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: supervisor}}\n\
         spec:\n  subjects: {{users: [supervisor]}}\n  calls: {{scope: All, actions: {{play: true}}}}\n  keys: [{key_id}]\n\
         ---\napiVersion: callvault.io/v1alpha1\nkind: AccessProfile\nmetadata: {{name: agents}}\n\
         spec:\n  subjects: {{users: [agent007]}}\n  calls: {{scope: Own, actions: {{play: true}}}}\n  keys: [{key_id}]\n"
    );
    callvault_crds::validate_yaml(&yaml)
        .expect("profiles")
        .into_iter()
        .filter_map(|r| match r {
            callvault_crds::Resource::AccessProfile(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn fs_storage(dir: &std::path::Path) -> Storage {
    let config: StorageConfig =
        serde_json::from_value(json!({"type": "filesystem", "path": dir})).expect("config");
    objstore::open(&config, &Credentials::none()).expect("open storage")
}

/// A 1-hour recording (pseudo-random bytes of a 1-hour Opus file's size: the portal never
/// parses the audio) written with the store's writer, owned by `owner`.
async fn hour_recording(db: &Db, storage: &Storage, key: &PrivateKey, owner: Uuid) -> Uuid {
    let mut x: u32 = 0x9e37_79b9;
    let plain: Vec<u8> = (0..HOUR_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut rec = NewRecording::new("bench-hour", BASE_US + YEAR_US / 2, Direction::Inbound);
    rec.calling = Party::new("+15550000001", "Long Call");
    rec.called = Party::new("2007", "Agent 7");
    rec.owner_user_id = Some(owner);
    rec.storage_target = "primary".into();
    rec.key_id = Some(key.id().to_hex());
    rec.answer_time = Some(rec.start_time);
    let id = rec.id;
    db.create_recording(T, &rec).await.expect("create");
    let mut w = RecordingWriter::new(Vec::new(), key.public_key(), WriterOptions::default())
        .expect("writer");
    std::io::Write::write_all(&mut w, &plain).expect("write");
    let (bytes, summary) = w
        .finish(&rec.sealed_digest(rec.start_time + 3_600_000_000))
        .expect("finish");
    let object_key = format!("{T}/{id}.cvr");
    storage
        .put(&object_key, bytes::Bytes::from(bytes.clone()))
        .await
        .expect("put");
    db.finish_recording(
        T,
        id,
        &FinishRecording {
            status: RecordingStatus::Available,
            end_time: rec.start_time + 3_600_000_000,
            answer_time: Some(rec.start_time),
            release_cause: Some(ReleaseCause::Normal),
            answering: None,
            object_key,
            size_bytes: bytes.len() as i64,
            codec: "opus".into(),
            channels: 2,
            sha256: hex::encode(summary.plaintext_sha256),
            metadata_digest: hex::encode(summary.metadata_sha256),
            signature: summary.seal.to_hex(),
            key_id: summary.key_id.to_hex(),
            stop_reason: None,
        },
    )
    .await
    .expect("finish");
    id
}

/// A signed-in session: the cookie header and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn login(router: &Router, user: &str) -> Session {
    let req = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"username": user, "password": PASSWORD}).to_string(),
        ))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK, "login {user}");
    let mut cookie = Vec::new();
    let mut csrf = String::new();
    for v in resp.headers().get_all(header::SET_COOKIE) {
        let first = v
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default();
        if let Some(t) = first.strip_prefix("cv_csrf=") {
            csrf = t.to_owned();
        }
        cookie.push(first.to_owned());
    }
    Session {
        cookie: cookie.join("; "),
        csrf,
    }
}

async fn request(
    router: &Router,
    s: &Session,
    method: &str,
    path: &str,
    body: Option<Value>,
    range: Option<&str>,
) -> (StatusCode, bytes::Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::COOKIE, &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(r) = range {
        req = req.header(header::RANGE, r);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body)
}

/// Time from sending a Range request at `offset` to receiving the first body bytes.
async fn first_byte(router: &Router, s: &Session, path: &str, offset: usize) -> Duration {
    let req = Request::get(path)
        .header(header::COOKIE, &s.cookie)
        .header(header::RANGE, format!("bytes={offset}-"))
        .body(Body::empty())
        .expect("request");
    let started = Instant::now();
    let resp = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    let mut body = resp.into_body();
    loop {
        let frame = body.frame().await.expect("a frame").expect("body");
        if frame.data_ref().is_some_and(|d| !d.is_empty()) {
            return started.elapsed();
        }
    }
}
