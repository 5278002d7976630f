//! Object storage bindings against real servers: a local directory, MinIO (S3), Azurite
//! (Azure Blob) and fake-gcs-server (GCS), started by `start_object_stores` in
//! scripts/services.d/object-stores.sh. A test whose server variables are missing fails and
//! says how to start the servers; none is skipped silently.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use callvault_store::objstore::{
    self, Credentials, DigestCheck, FailureReason, ProbeOptions, ProbeStep, Storage, StorageConfig,
    StorageError, Timeouts,
};
use futures::TryStreamExt;
use object_store::signer::Url;
use serde_json::json;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test, or first run \
             `source scripts/services.sh && start_object_stores` and \
             `source \"$CALLVAULT_RUN/object-stores.env\"`"
        )
    })
}

/// A prefix no other test (or earlier run) uses, so tests share buckets safely.
fn unique(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!(
        "tests/{test}-{nanos:x}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Fs,
    S3,
    Azure,
    Gcs,
}

/// A target spec (as the StorageTarget resource JSON) and credentials for one backend.
struct Target {
    spec: serde_json::Value,
    creds: Credentials,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    fn new(kind: Kind, prefix: &str) -> Target {
        Self::with_container(kind, prefix, false)
    }

    fn archive(kind: Kind, prefix: &str) -> Target {
        Self::with_container(kind, prefix, true)
    }

    fn with_container(kind: Kind, prefix: &str, archive: bool) -> Target {
        match kind {
            Kind::Fs => {
                let dir = tempfile::tempdir().expect("tempdir");
                Target {
                    spec: json!({"type": "filesystem", "path": dir.path(), "prefix": prefix,
                                 "claimName": "recordings"}),
                    creds: Credentials::none(),
                    _dir: Some(dir),
                }
            }
            Kind::S3 => Target {
                spec: json!({
                    "type": "s3",
                    "bucket": env(if archive { "CALLVAULT_TEST_S3_ARCHIVE_BUCKET" } else { "CALLVAULT_TEST_S3_BUCKET" }),
                    "endpoint": env("CALLVAULT_TEST_S3_ENDPOINT"),
                    "region": env("CALLVAULT_TEST_S3_REGION"),
                    "prefix": prefix,
                    "credentialsSecretRef": {"name": "s3-credentials"},
                    "capacityAlarmPercent": 90,
                }),
                creds: Credentials::s3(
                    env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
                    env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
                ),
                _dir: None,
            },
            Kind::Azure => Target {
                spec: json!({
                    "type": "azure",
                    "account": env("CALLVAULT_TEST_AZURE_ACCOUNT"),
                    "container": env(if archive { "CALLVAULT_TEST_AZURE_ARCHIVE_CONTAINER" } else { "CALLVAULT_TEST_AZURE_CONTAINER" }),
                    "endpoint": env("CALLVAULT_TEST_AZURE_ENDPOINT"),
                    "prefix": prefix,
                }),
                creds: Credentials::azure_key(env("CALLVAULT_TEST_AZURE_ACCOUNT_KEY")),
                _dir: None,
            },
            Kind::Gcs => Target {
                spec: json!({
                    "type": "gcs",
                    "bucket": env(if archive { "CALLVAULT_TEST_GCS_ARCHIVE_BUCKET" } else { "CALLVAULT_TEST_GCS_BUCKET" }),
                    "endpoint": env("CALLVAULT_TEST_GCS_ENDPOINT"),
                    "prefix": prefix,
                }),
                creds: Credentials::gcs(env("CALLVAULT_TEST_GCS_SERVICE_ACCOUNT_JSON")),
                _dir: None,
            },
        }
    }

    fn config(&self) -> StorageConfig {
        StorageConfig::from_spec(&self.spec).expect("spec parses")
    }

    fn open(&self) -> Storage {
        objstore::open(&self.config(), &self.creds).expect("target opens")
    }
}

/// Deterministic, varied content so misplaced or truncated bytes are caught.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn keys(list: &[objstore::ObjectInfo]) -> Vec<&str> {
    list.iter().map(|o| o.key.as_str()).collect()
}

async fn operations(kind: Kind) {
    let t = Target::new(kind, &unique("ops"));
    let s = t.open();
    let body = Bytes::from(pattern(100_000, 1));

    let put = s
        .put("2025/01/02/call-1.cvr", body.clone())
        .await
        .expect("put");
    assert_eq!(put.size, 100_000);
    s.put("2025/01/02/call-2.cvr", Bytes::from_static(b"second"))
        .await
        .expect("put 2");
    s.put("2025/01/03/call-3.cvr", Bytes::from_static(b"third"))
        .await
        .expect("put 3");
    s.put("2025/01/020/not-in-day-02.cvr", Bytes::from_static(b"x"))
        .await
        .expect("put 4");

    assert_eq!(s.get("2025/01/02/call-1.cvr").await.expect("get"), body);
    let head = s.head("2025/01/02/call-1.cvr").await.expect("head");
    assert_eq!(
        (head.key.as_str(), head.size),
        ("2025/01/02/call-1.cvr", 100_000)
    );
    assert!(s.exists("2025/01/02/call-2.cvr").await.expect("exists"));
    assert!(!s.exists("2025/01/02/nope.cvr").await.expect("exists"));

    // Ranged reads: the portal decrypts chunks at arbitrary offsets.
    let r = s
        .get_range("2025/01/02/call-1.cvr", 65_530..70_000)
        .await
        .expect("range");
    assert_eq!(&r[..], &body[65_530..70_000]);
    let tail = s
        .get_range("2025/01/02/call-1.cvr", 99_999..100_000)
        .await
        .expect("last byte");
    assert_eq!(&tail[..], &body[99_999..]);
    let past_end = s.get_range("2025/01/02/call-1.cvr", 99_000..100_001).await;
    assert!(
        matches!(
            past_end,
            Err(StorageError::InvalidRange { size: 100_000, .. })
        ),
        "{past_end:?}"
    );

    let beyond = s.get_range("2025/01/02/call-1.cvr", 200_000..200_010).await;
    assert!(
        matches!(
            beyond,
            Err(StorageError::InvalidRange { size: 100_000, .. })
        ),
        "{beyond:?}"
    );
    let absent = s.get_range("2025/01/02/absent.cvr", 0..10).await;
    assert!(matches!(&absent, Err(e) if e.is_not_found()), "{absent:?}");

    // Listing is by whole segments: `2025/01/02` must not include `2025/01/020`.
    let day = s.list("2025/01/02").await.expect("list day");
    assert_eq!(
        keys(&day),
        ["2025/01/02/call-1.cvr", "2025/01/02/call-2.cvr"]
    );
    assert_eq!(s.list("").await.expect("list all").len(), 4);
    let streamed: Vec<_> = s
        .list_stream("2025/01/03")
        .expect("list stream")
        .try_collect()
        .await
        .expect("list stream items");
    assert_eq!(keys(&streamed), ["2025/01/03/call-3.cvr"]);

    let (meta, stream) = s.get_stream("2025/01/02/call-1.cvr").await.expect("stream");
    assert_eq!(meta.size, 100_000);
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("stream body");
    assert_eq!(chunks.concat(), body.to_vec());

    s.delete("2025/01/02/call-1.cvr").await.expect("delete");
    let gone = s.get("2025/01/02/call-1.cvr").await;
    assert!(matches!(&gone, Err(e) if e.is_not_found()), "{gone:?}");
    assert!(matches!(
        s.head("2025/01/02/call-1.cvr").await,
        Err(StorageError::NotFound { .. })
    ));
    // A retried delete (after a crash, or by retention) is not an error.
    s.delete("2025/01/02/call-1.cvr")
        .await
        .expect("delete again");
    assert_eq!(s.list("").await.expect("list all").len(), 3);

    for bad in ["", "/abs", "a//b", "a/../b", "dir/"] {
        assert!(
            matches!(
                s.put(bad, Bytes::new()).await,
                Err(StorageError::InvalidKey { .. })
            ),
            "key {bad:?} must be rejected"
        );
    }
}

async fn prefix_isolation(kind: Kind) {
    let parent = unique("prefix");
    // Same bucket (same directory for filesystem): only the prefix differs.
    let whole = Target::new(kind, &parent);
    let mut one_spec = whole.spec.clone();
    one_spec["prefix"] = json!(format!("{parent}/tenant-a"));
    let mut two_spec = whole.spec.clone();
    two_spec["prefix"] = json!(format!("/{parent}/tenant-ab/"));
    let open = |spec: &serde_json::Value| {
        objstore::open(&StorageConfig::from_spec(spec).expect("spec"), &whole.creds).expect("open")
    };
    let (one, two, all) = (open(&one_spec), open(&two_spec), whole.open());

    one.put("rec/x.cvr", Bytes::from_static(b"a"))
        .await
        .expect("put a");
    two.put("rec/x.cvr", Bytes::from_static(b"bb"))
        .await
        .expect("put b");

    assert_eq!(keys(&one.list("").await.expect("list a")), ["rec/x.cvr"]);
    assert_eq!(&one.get("rec/x.cvr").await.expect("get a")[..], b"a");
    assert_eq!(&two.get("rec/x.cvr").await.expect("get b")[..], b"bb");
    // The parent sees both, under each child's folder: the prefix is really in the key.
    assert_eq!(
        keys(&all.list("").await.expect("list parent")),
        ["tenant-a/rec/x.cvr", "tenant-ab/rec/x.cvr"]
    );
    one.delete("rec/x.cvr").await.expect("delete a");
    assert_eq!(&two.get("rec/x.cvr").await.expect("b survives")[..], b"bb");
    assert!(!one.exists("rec/x.cvr").await.expect("exists"));
}

async fn large_upload_from_file(kind: Kind) {
    let t = Target::new(kind, &unique("large"));
    let s = t.open();
    // Three 8 MiB parts (the last one short): exercises the multipart path.
    let len = 2 * objstore::DEFAULT_PART_SIZE + 3 * 1024 * 1024 + 17;
    let data = pattern(len, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spool.cvr");
    std::fs::write(&file, &data).expect("write spool file");

    let info = s
        .put_file("big/recording.cvr", &file)
        .await
        .expect("put_file");
    assert_eq!(info.size, len as u64);
    // Bytes across both part boundaries and the very end.
    for range in [
        objstore::DEFAULT_PART_SIZE - 100..objstore::DEFAULT_PART_SIZE + 100,
        2 * objstore::DEFAULT_PART_SIZE - 1..2 * objstore::DEFAULT_PART_SIZE + 1,
        len - 4096..len,
    ] {
        let got = s
            .get_range("big/recording.cvr", range.start as u64..range.end as u64)
            .await
            .expect("ranged read");
        assert_eq!(&got[..], &data[range.clone()], "range {range:?}");
    }
    assert!(s.get("big/recording.cvr").await.expect("get") == data);

    // A small spool file takes the single-request path.
    let small = dir.path().join("small.cvr");
    std::fs::write(&small, b"tiny recording").expect("write small");
    s.put_file("small.cvr", &small)
        .await
        .expect("small put_file");
    assert_eq!(
        &s.get("small.cvr").await.expect("get small")[..],
        b"tiny recording"
    );

    let missing = s.put_file("x.cvr", &dir.path().join("absent")).await;
    assert!(
        matches!(missing, Err(StorageError::LocalFile { .. })),
        "{missing:?}"
    );
    assert!(!s.exists("x.cvr").await.expect("exists"));
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Uploads with an expected digest: stored when the bytes match, refused with nothing left
/// behind when they do not, in one request and as a multipart upload alike.
async fn checked_uploads(kind: Kind) {
    let t = Target::new(kind, &unique("checked"));
    let s = t.open().with_part_size(5 * 1024 * 1024);
    let want = if matches!(kind, Kind::S3 | Kind::Gcs) {
        DigestCheck::ByServer
    } else {
        DigestCheck::SentOnly
    };
    assert_eq!(s.verifies_digest_on_upload(), want == DigestCheck::ByServer);

    let small = Bytes::from(pattern(4000, 11));
    let put = s
        .put_checked("c/small.cvr", small.clone(), &sha256(&small))
        .await
        .expect("put_checked");
    assert_eq!((put.info.size, put.check), (4000, want));
    assert!(s.get("c/small.cvr").await.expect("get") == small);

    let other = sha256(b"some other recording");
    let refused = s.put_checked("c/wrong.cvr", small.clone(), &other).await;
    assert!(
        matches!(&refused, Err(StorageError::Integrity { detail, .. }) if detail.contains("SHA-256")),
        "{refused:?}"
    );
    assert!(!s.exists("c/wrong.cvr").await.expect("exists"));

    // Two parts: the digest is checked before the upload is completed.
    let big = pattern(5 * 1024 * 1024 + 321, 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spool.cvr");
    std::fs::write(&file, &big).expect("write spool file");
    let put = s
        .put_file_checked("c/big.cvr", &file, &sha256(&big))
        .await
        .expect("put_file_checked");
    assert_eq!((put.info.size, put.check), (big.len() as u64, want));
    assert!(s.get("c/big.cvr").await.expect("get big") == big);
    let refused = s.put_file_checked("c/big-wrong.cvr", &file, &other).await;
    assert!(
        matches!(&refused, Err(StorageError::Integrity { .. })),
        "{refused:?}"
    );
    assert!(!s.exists("c/big-wrong.cvr").await.expect("exists"));
    assert_eq!(
        keys(&s.list("").await.expect("list")),
        ["c/big.cvr", "c/small.cvr"]
    );
}

async fn copy_between_targets(kind: Kind) {
    let prefix = unique("copy");
    let src_t = Target::new(kind, &prefix);
    let dst_t = Target::archive(kind, &prefix);
    let (src, dst) = (src_t.open(), dst_t.open());
    let big = pattern(objstore::DEFAULT_PART_SIZE + 1234, 3);
    src.put("a/big.cvr", Bytes::from(big.clone()))
        .await
        .expect("put big");
    src.put("a/small.cvr", Bytes::from_static(b"small"))
        .await
        .expect("put small");

    let copied = src
        .copy_to("a/big.cvr", &dst, "archive/big.cvr")
        .await
        .expect("copy big");
    assert_eq!(copied.size, big.len() as u64);
    src.copy_to("a/small.cvr", &dst, "archive/small.cvr")
        .await
        .expect("copy small");
    assert!(dst.get("archive/big.cvr").await.expect("get copy") == big);
    assert_eq!(
        &dst.get("archive/small.cvr").await.expect("get")[..],
        b"small"
    );
    // The source is untouched and the copy lives only in the archive bucket.
    assert_eq!(src.list("").await.expect("list src").len(), 2);
    assert!(!src.exists("archive/big.cvr").await.expect("exists"));

    let missing = src.copy_to("a/none.cvr", &dst, "archive/none.cvr").await;
    assert!(
        matches!(&missing, Err(e) if e.is_not_found()),
        "{missing:?}"
    );
    assert!(!dst.exists("archive/none.cvr").await.expect("exists"));
}

async fn probe_succeeds(kind: Kind) {
    let t = Target::new(kind, &unique("probe"));
    let s = t.open();
    s.put("r/1.cvr", Bytes::from_static(b"12345"))
        .await
        .expect("put");
    s.put("r/2.cvr", Bytes::from_static(b"123"))
        .await
        .expect("put");

    let report = s.probe(&ProbeOptions::default()).await;
    assert!(report.succeeded(), "{report:#?}");
    let steps: Vec<_> = report.steps.iter().map(|s| (s.step, s.ok)).collect();
    assert_eq!(
        steps,
        [
            (ProbeStep::Connect, true),
            (ProbeStep::Write, true),
            (ProbeStep::Read, true),
            (ProbeStep::Compare, true),
            (ProbeStep::Delete, true)
        ]
    );
    let usage = report.usage.expect("usage counted");
    assert_eq!((usage.objects, usage.bytes, usage.complete), (2, 8, true));
    assert_eq!(report.condition_reason(), "ProbeSucceeded");
    // The probe object is gone.
    assert_eq!(
        keys(&s.list("").await.expect("list")),
        ["r/1.cvr", "r/2.cvr"]
    );

    let capped = s
        .probe(&ProbeOptions {
            usage_max_objects: 1,
            ..ProbeOptions::default()
        })
        .await;
    let usage = capped.usage.expect("usage counted");
    assert_eq!((usage.objects, usage.complete), (1, false));
}

/// Runs the connection test through `test_connection` and returns (step, reason, message).
async fn probe_failure(
    spec: serde_json::Value,
    creds: &Credentials,
    options: &ProbeOptions,
) -> (ProbeStep, FailureReason, String) {
    let config = StorageConfig::from_spec(&spec).expect("spec");
    let report = objstore::test_connection(&config, creds, options).await;
    let f = report
        .failure
        .clone()
        .unwrap_or_else(|| panic!("probe should fail: {report:#?}"));
    assert!(!report.succeeded());
    assert_eq!(report.failed_step(), Some(f.step));
    assert!(report.condition_message().contains(&f.message));
    (f.step, f.reason, f.message)
}

async fn probe_missing_bucket(kind: Kind) {
    let mut t = Target::new(kind, &unique("nobucket"));
    let field = if kind == Kind::Azure {
        "container"
    } else {
        "bucket"
    };
    t.spec[field] = json!("callvault-does-not-exist");
    let (step, reason, message) =
        probe_failure(t.spec.clone(), &t.creds, &ProbeOptions::default()).await;
    assert_eq!(step, ProbeStep::Connect, "{message}");
    assert!(message.contains("callvault-does-not-exist"), "{message}");
    // fake-gcs-server answers 500 for a missing bucket where GCS answers 404.
    if kind != Kind::Gcs {
        assert_eq!(reason, FailureReason::NotFound, "{message}");
        assert!(message.contains("does not exist"), "{message}");
    }
}

/// A port nothing listens on: the listener is closed before the probe runs.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn with_endpoint(kind: Kind, endpoint: &str) -> Target {
    let mut t = Target::new(kind, "p");
    t.spec["endpoint"] = json!(if kind == Kind::Azure {
        format!("{endpoint}/{}", env("CALLVAULT_TEST_AZURE_ACCOUNT"))
    } else {
        endpoint.to_owned()
    });
    t
}

async fn probe_server_stopped(kind: Kind) {
    let t = with_endpoint(kind, &format!("http://127.0.0.1:{}", closed_port()));
    let started = std::time::Instant::now();
    let options = ProbeOptions::default();
    let (step, reason, message) = probe_failure(t.spec.clone(), &t.creds, &options).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::Unreachable),
        "{message}"
    );
    assert!(
        started.elapsed() < options.step_timeout,
        "took {:?}",
        started.elapsed()
    );
}

async fn probe_server_silent(kind: Kind) {
    // Accepts connections (the kernel backlog does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let t = with_endpoint(kind, &format!("http://127.0.0.1:{port}"));
    let options = ProbeOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
            max_retries: 0,
            retry_budget: Duration::from_secs(1),
        },
        step_timeout: Duration::from_secs(5),
        ..ProbeOptions::default()
    };
    let (step, reason, message) = probe_failure(t.spec.clone(), &t.creds, &options).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::Timeout),
        "{message}"
    );
    drop(listener);
}

macro_rules! backend_tests {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn put_get_range_head_list_delete() {
                operations($kind).await
            }
            #[tokio::test]
            async fn prefixes_isolate_targets_in_one_bucket() {
                prefix_isolation($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_spool_file_uploads_in_parts() {
                large_upload_from_file($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uploads_with_a_wrong_digest_are_refused() {
                checked_uploads($kind).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn copy_to_archive_target() {
                copy_between_targets($kind).await
            }
            #[tokio::test]
            async fn connection_test_passes_and_counts_usage() {
                probe_succeeds($kind).await
            }
        }
    };
}

backend_tests!(filesystem, Kind::Fs);
backend_tests!(s3, Kind::S3);
backend_tests!(azure, Kind::Azure);
backend_tests!(gcs, Kind::Gcs);

/// Reads an object seeded by start_object_stores with another client (curl, a `media`
/// upload), so reads do not only ever see objects this binding wrote.
#[tokio::test]
async fn gcs_reads_an_object_another_client_wrote() {
    let mut t = Target::new(Kind::Gcs, "seeded");
    t.spec["prefix"] = json!("seeded");
    let s = t.open();
    let want = b"hello from gcs, ranged reads work";
    assert_eq!(&s.get("hello.txt").await.expect("get")[..], want);
    assert_eq!(
        s.head("hello.txt").await.expect("head").size,
        want.len() as u64
    );
    assert_eq!(
        &s.get_range("hello.txt", 6..14).await.expect("range")[..],
        b"from gcs"
    );
    assert!(
        s.list("")
            .await
            .expect("list")
            .iter()
            .any(|o| o.key == "hello.txt")
    );
    assert!(!s.exists("absent.txt").await.expect("exists"));
}

/// Reads an HTTP message head (through the blank line) and returns it with what was read
/// past it; `None` when the connection closed first.
fn read_head(conn: &mut impl std::io::Read) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A proxy to the GCS emulator at `upstream` (`host:port`) that answers the first
/// `unavailable` requests itself with 503, and flips one bit in every occurrence of `marker`
/// in request bodies: a network that corrupts uploads. One request per connection: it asks
/// for `Connection: close`, sets the `Host` the emulator serves, and points the resumable
/// session URLs it answers back at itself.
fn gcs_proxy(upstream: String, marker: &'static [u8], unavailable: usize) -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let me = listener.local_addr().expect("proxy address").to_string();
    let own = me.clone();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { continue };
            if n < unavailable {
                // Read the whole request first, so the client sees an answer, not a reset.
                if let Some((head, rest)) = read_head(&mut client) {
                    let len: usize = head
                        .split("\r\n")
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len.saturating_sub(rest.len())];
                    let _ = client.read_exact(&mut body);
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
                continue;
            }
            let mut server = std::net::TcpStream::connect(&upstream).expect("connect upstream");
            let (mut client_w, mut server_r) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let up = upstream.clone();
            std::thread::spawn(move || {
                let Some((head, mut body)) = read_head(&mut client) else {
                    return;
                };
                let mut out = String::new();
                for line in head.trim_end().split("\r\n") {
                    let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
                    match name.as_str() {
                        "host" => out.push_str(&format!("Host: {up}\r\n")),
                        "connection" => {}
                        _ => out.push_str(&format!("{line}\r\n")),
                    }
                }
                out.push_str("Connection: close\r\n\r\n");
                if server.write_all(out.as_bytes()).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let mut at = 0;
                    while let Some(i) = body[at..].windows(marker.len()).position(|w| w == marker) {
                        body[at + i] ^= 0x01;
                        at += i + marker.len();
                    }
                    if server.write_all(&body).is_err() {
                        return;
                    }
                    match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => body = buf[..n].to_vec(),
                    }
                }
            });
            let up = upstream.clone();
            let me = own.clone();
            std::thread::spawn(move || {
                if let Some((head, rest)) = read_head(&mut server_r) {
                    let head = head.replace(&up, &me);
                    let _ = client_w.write_all(head.as_bytes());
                    let _ = client_w.write_all(&rest);
                    let _ = std::io::copy(&mut server_r, &mut client_w);
                }
                let _ = client_w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{me}")
}

/// What `DigestCheck::ByServer` rests on for GCS: bytes altered on their way to the server are
/// never reported as stored, and leave no object. A body sent in one request is refused by
/// the server (its MD5 and CRC32C are declared with it); a resumable upload's stored object is
/// caught by the digests the server reports for it, and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_uploads_altered_in_transit_are_not_stored() {
    const MARKER: &[u8] = b"<flip-this-bit-in-transit>";
    let upstream = env("CALLVAULT_TEST_GCS_ENDPOINT");
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
    let mut t = Target::new(Kind::Gcs, &unique("altered"));
    t.spec["endpoint"] = json!(gcs_proxy(upstream.to_owned(), MARKER, 0));
    let s = t.open().with_part_size(5 * 1024 * 1024);
    // Data with about 1 MB of markers in the middle, so whole markers lie inside every read.
    let with_markers = |len: usize| {
        let mut data = pattern(len, 31);
        let start = len / 2 - 500_000;
        for (i, b) in data[start..start + 1_000_000].iter_mut().enumerate() {
            *b = MARKER[i % MARKER.len()];
        }
        data
    };

    // The proxy passes clean bytes intact.
    let clean = Bytes::from(pattern(2_000_000, 32));
    s.put_checked("clean.cvr", clean.clone(), &sha256(&clean))
        .await
        .expect("an unaltered upload through the proxy");
    assert!(s.get("clean.cvr").await.expect("get") == clean);

    let small = Bytes::from(with_markers(2_000_000));
    let refused = s
        .put_checked("small.cvr", small.clone(), &sha256(&small))
        .await;
    assert!(
        matches!(&refused, Err(e @ StorageError::Backend { .. }) if e.to_string().contains("MD5")),
        "the server must refuse a body that does not match its declared digests: {refused:?}"
    );
    assert!(!s.exists("small.cvr").await.expect("exists"));

    let big = with_markers(11 * 1024 * 1024 + 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spool.cvr");
    std::fs::write(&file, &big).expect("write spool file");
    let refused = s.put_file_checked("big.cvr", &file, &sha256(&big)).await;
    assert!(
        matches!(&refused, Err(StorageError::Integrity { detail, .. }) if detail.contains("MD5")),
        "a resumable upload stored with other bytes must fail: {refused:?}"
    );
    assert!(!s.exists("big.cvr").await.expect("exists"));
    assert_eq!(keys(&s.list("").await.expect("list")), ["clean.cvr"]);
}

/// A GCS server that is briefly unavailable (503) delays an upload but does not fail it.
#[tokio::test]
async fn gcs_uploads_are_retried_while_the_server_is_unavailable() {
    let upstream = env("CALLVAULT_TEST_GCS_ENDPOINT");
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
    let mut t = Target::new(Kind::Gcs, &unique("retried"));
    // The first two requests are the upload's: the token of the emulator's credentials is
    // made without any request.
    t.spec["endpoint"] = json!(gcs_proxy(upstream.to_owned(), b"<never-sent>", 2));
    let s = t.open();
    let data = Bytes::from(pattern(50_000, 41));
    s.put_checked("r.cvr", data.clone(), &sha256(&data))
        .await
        .expect("the upload succeeds on its third attempt");
    assert!(s.get("r.cvr").await.expect("get") == data);
}

macro_rules! cloud_failure_tests {
    ($module:ident, $kind:expr) => {
        mod $module {
            use super::*;
            #[tokio::test]
            async fn connection_test_reports_missing_bucket() {
                probe_missing_bucket($kind).await
            }
            #[tokio::test]
            async fn connection_test_reports_stopped_server() {
                probe_server_stopped($kind).await
            }
            #[tokio::test]
            async fn connection_test_times_out_on_silent_server() {
                probe_server_silent($kind).await
            }
        }
    };
}

cloud_failure_tests!(s3_failures, Kind::S3);
cloud_failure_tests!(azure_failures, Kind::Azure);
cloud_failure_tests!(gcs_failures, Kind::Gcs);

/// Sends one PUT to a presigned URL over a plain connection, with the checksum header the
/// signature binds; returns the HTTP status and the whole answer.
fn raw_put(url: &Url, checksum: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let host = url.host_str().expect("host");
    let port = url.port_or_known_default().expect("port");
    let mut conn = std::net::TcpStream::connect((host, port)).expect("connect to MinIO");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host}:{port}\r\nx-amz-checksum-sha256: {checksum}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("send head");
    conn.write_all(body).expect("send body");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).expect("read answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
    (status, answer)
}

/// What `DigestCheck::ByServer` rests on: MinIO recomputes the SHA-256 of a body and refuses
/// it when it differs from the `x-amz-checksum-sha256` sent with it, for a whole object and
/// for a part of a multipart upload. The requests are presigned with an unsigned payload, so
/// the checksum is the only thing tying the body to the request.
#[tokio::test]
async fn s3_server_refuses_a_body_that_does_not_match_its_checksum() {
    use object_store::multipart::MultipartStore;
    use object_store::signer::{HeaderName, HeaderValue, Method, SignedUrlOptions, Signer};
    use object_store::{ObjectStoreExt, path::Path as StorePath};

    let s3 = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(env("CALLVAULT_TEST_S3_BUCKET"))
        .with_region(env("CALLVAULT_TEST_S3_REGION"))
        .with_endpoint(env("CALLVAULT_TEST_S3_ENDPOINT"))
        .with_access_key_id(env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"))
        .with_secret_access_key(env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"))
        .with_allow_http(true)
        .with_checksum_algorithm(object_store::aws::Checksum::SHA256)
        .build()
        .expect("s3 client");
    let prefix = unique("checksum");
    let good = pattern(70_000, 21);
    let mut bad = good.clone();
    bad[12_345] ^= 0x01;
    let checksum = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(sha256(&good))
    };
    let options = SignedUrlOptions::default().with_signed_header(
        HeaderName::from_static("x-amz-checksum-sha256"),
        HeaderValue::from_str(&checksum).expect("header"),
    );

    // One whole object.
    let path = StorePath::from(format!("{prefix}/object.cvr"));
    let url = s3
        .signed_url_opts(Method::PUT, &path, Duration::from_secs(300), &options)
        .await
        .expect("presign");
    let (status, answer) = raw_put(&url, &checksum, &bad);
    assert_eq!(status, 400, "a body one bit off its checksum: {answer}");
    assert!(
        matches!(
            s3.head(&path).await,
            Err(object_store::Error::NotFound { .. })
        ),
        "a refused body left an object"
    );
    let (status, answer) = raw_put(&url, &checksum, &good);
    assert_eq!(status, 200, "the matching body: {answer}");
    assert!(
        s3.get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body")
            == good
    );
    s3.delete(&path).await.expect("delete");

    // One part of a multipart upload (created with the SHA-256 checksum algorithm, as the
    // store's uploads are).
    let path = StorePath::from(format!("{prefix}/parts.cvr"));
    let upload = s3.create_multipart(&path).await.expect("create multipart");
    let part = options
        .clone()
        .with_query([("partNumber", "1"), ("uploadId", upload.as_str())]);
    let url = s3
        .signed_url_opts(Method::PUT, &path, Duration::from_secs(300), &part)
        .await
        .expect("presign part");
    let (bad_status, bad_answer) = raw_put(&url, &checksum, &bad);
    let (good_status, good_answer) = raw_put(&url, &checksum, &good);
    s3.abort_multipart(&path, &upload).await.expect("abort");
    assert_eq!(
        bad_status, 400,
        "a part one bit off its checksum: {bad_answer}"
    );
    assert_eq!(good_status, 200, "the matching part: {good_answer}");
}

#[tokio::test]
async fn s3_wrong_credentials_fail_authentication() {
    let t = Target::new(Kind::S3, "p");
    let wrong = Credentials::s3(
        env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
        "not-the-secret-access-key",
    );
    let (step, reason, message) =
        probe_failure(t.spec.clone(), &wrong, &ProbeOptions::default()).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::AuthenticationFailed),
        "{message}"
    );
    assert!(!message.contains("not-the-secret-access-key"), "{message}");
    let unknown_key = Credentials::s3("no-such-user", "whatever-secret");
    let (step, reason, _) =
        probe_failure(t.spec.clone(), &unknown_key, &ProbeOptions::default()).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::AuthenticationFailed)
    );
}

#[tokio::test]
async fn azure_wrong_account_key_fails_authentication() {
    let t = Target::new(Kind::Azure, "p");
    // A valid base64 key that is not the account's.
    let wrong = Credentials::azure_key("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LQ==");
    let (step, reason, message) =
        probe_failure(t.spec.clone(), &wrong, &ProbeOptions::default()).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::AuthenticationFailed),
        "{message}"
    );
}

#[tokio::test]
async fn missing_credentials_are_a_configuration_failure() {
    let t = Target::new(Kind::S3, "p");
    let (step, reason, message) = probe_failure(
        t.spec.clone(),
        &Credentials::none(),
        &ProbeOptions::default(),
    )
    .await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::InvalidConfiguration)
    );
    assert!(message.contains("accessKeyId"), "{message}");
}

#[tokio::test]
async fn s3_credentials_from_mounted_secret_directory() {
    let t = Target::new(Kind::S3, &unique("secretdir"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Secret volumes often end values with a newline.
    std::fs::write(
        dir.path().join("accessKeyId"),
        format!("{}\n", env("CALLVAULT_TEST_S3_ACCESS_KEY_ID")),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("secretAccessKey"),
        env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
    )
    .expect("write");
    let creds = Credentials::from_dir(dir.path()).expect("read secret dir");
    let s = objstore::open(&t.config(), &creds).expect("open");
    assert!(s.probe(&ProbeOptions::default()).await.succeeded());
    let shown = format!("{s:?} {creds:?}");
    assert!(
        !shown.contains(&env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY")),
        "{shown}"
    );
}

#[tokio::test]
async fn filesystem_path_under_a_regular_file_fails_to_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let spec = json!({"type": "filesystem", "path": file.join("recordings")});
    let (step, reason, message) =
        probe_failure(spec, &Credentials::none(), &ProbeOptions::default()).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::NotFound),
        "{message}"
    );
    // The missing mount is not created behind the user's back.
    assert!(!Path::new(&file.join("recordings")).exists());
}

#[tokio::test]
async fn filesystem_prefix_under_a_regular_file_fails_to_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("blocked"), b"x").expect("write");
    let spec = json!({"type": "filesystem", "path": dir.path(), "prefix": "blocked"});
    let (step, reason, message) =
        probe_failure(spec, &Credentials::none(), &ProbeOptions::default()).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Connect, FailureReason::NotFound),
        "{message}"
    );
    assert!(message.contains("Not a directory"), "{message}");
}

/// Unmounts the read-only bind mount when the test ends, pass or fail.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A directory mounted read-only (as a PVC mounted `readOnly`): listing works, writing fails
/// even for root. Needs root (or CAP_SYS_ADMIN) for `mount`, as the test runner has.
#[tokio::test]
async fn filesystem_read_only_mount_fails_the_write_step() {
    let src = tempfile::tempdir().expect("tempdir");
    let dst = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("existing.cvr"), b"old").expect("write");
    let status = std::process::Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(src.path())
        .arg(dst.path())
        .status()
        .expect("run mount");
    assert!(
        status.success(),
        "mount --bind -o ro failed: this test needs root"
    );
    let _guard = BindMount(dst.path().to_owned());

    let spec = json!({"type": "filesystem", "path": dst.path()});
    let (step, reason, message) =
        probe_failure(spec, &Credentials::none(), &ProbeOptions::default()).await;
    assert_eq!(
        (step, reason),
        (ProbeStep::Write, FailureReason::AccessDenied),
        "{message}"
    );
}

#[tokio::test]
async fn invalid_spec_is_reported_before_any_network_call() {
    let spec = json!({"type": "s3", "bucket": "Not_Valid", "endpoint": "http://127.0.0.1:1"});
    let config = StorageConfig::from_spec(&spec).expect("parses");
    let err = objstore::open(&config, &Credentials::s3("a", "b")).expect_err("invalid");
    assert!(err.to_string().contains("`bucket` is invalid"), "{err}");
    let report = objstore::test_connection(
        &config,
        &Credentials::s3("a", "b"),
        &ProbeOptions::default(),
    )
    .await;
    assert_eq!(report.condition_reason(), "ConnectInvalidConfiguration");
}
