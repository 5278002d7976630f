//! Test fixture: a portal over a throwaway database (PostgreSQL or SQLite), a filesystem
//! storage target in a temporary directory, a generated key pair, recordings written with the
//! store's writer, and an in-process client that keeps its session cookie and CSRF token.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use callvault_crds::access_profile::AccessProfile;
use callvault_portal::{FileAccessSource, Portal, PortalConfig, Storages};
use callvault_store::db::testing::TestDb;
use callvault_store::db::{
    Db, Direction, FinishRecording, NewRecording, NewUser, Party, Recording, RecordingStatus,
    ReleaseCause,
};
use callvault_store::format::{RecordingWriter, WriterOptions};
use callvault_store::keys::{KeyRing, PrivateKey};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

pub const T: &str = "default";
pub const TARGET: &str = "primary";
pub const ARCHIVE: &str = "archive";
pub const PASSWORD: &str = "a long test passphrase";
/// The password of the provider accounts in tests/idp/idp.mjs.
pub const IDP_PASSWORD: &str = "idp test password";
/// Small chunks so that short recordings span many of them.
pub const CHUNK: u32 = 4096;

pub struct Fixture {
    pub db: Db,
    pub router: Router,
    /// The operations router (`/metrics`), served apart from `router`.
    pub ops: Router,
    pub access: Arc<FileAccessSource>,
    pub key: PrivateKey,
    pub key_id: String,
    pub storage: Storage,
    pub archive: Storage,
    _testdb: TestDb,
    _dir: tempfile::TempDir,
}

fn fs_storage(dir: &std::path::Path, name: &str) -> Storage {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).expect("storage dir");
    let config: StorageConfig =
        serde_json::from_value(json!({"type": "filesystem", "path": path})).expect("config");
    objstore::open(&config, &Credentials::none()).expect("open storage")
}

/// One key pair for every test of a binary: RSA generation is the slow part.
fn test_key() -> PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(2048).expect("generate key"))
        .clone()
}

pub fn config() -> PortalConfig {
    PortalConfig {
        secure_cookies: false,
        login_attempts_per_minute: 1000,
        ..PortalConfig::default()
    }
}

impl Fixture {
    pub async fn postgres() -> Self {
        Self::with(TestDb::postgres().await, config()).await
    }

    pub async fn sqlite() -> Self {
        Self::with(TestDb::sqlite().await, config()).await
    }

    pub async fn with(testdb: TestDb, config: PortalConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = fs_storage(dir.path(), TARGET);
        let archive = fs_storage(dir.path(), ARCHIVE);
        let key = test_key();
        let key_id = key.id().to_hex();
        let mut ring = KeyRing::new();
        ring.insert(key.clone());
        let storages = Storages::new();
        storages.insert(TARGET.to_owned(), storage.clone());
        storages.insert(ARCHIVE.to_owned(), archive.clone());
        let access = Arc::new(FileAccessSource::from_profiles(T, vec![]));
        let portal = Portal::new(
            config.validate().expect("config"),
            testdb.db.clone(),
            access.clone(),
            ring,
            storages,
            Arc::new(callvault_portal::NoJobRunner),
        );
        Fixture {
            db: testdb.db.clone(),
            router: portal.app,
            ops: portal.ops,
            access,
            key,
            key_id,
            storage,
            archive,
            _testdb: testdb,
            _dir: dir,
        }
    }

    /// A local user with the test password and the given groups (created when missing).
    pub async fn user(&self, name: &str, groups: &[&str]) -> Uuid {
        let hash = callvault_portal::auth::hash_password(PASSWORD).expect("hash");
        let mut nu = NewUser::local(name, format!("{name} display"));
        nu.password_hash = Some(hash);
        let u = self.db.create_user(T, &nu).await.expect("user");
        for g in groups {
            let gid = self.group(g).await;
            self.db.add_member(T, gid, u.id).await.expect("member");
        }
        u.id
    }

    pub async fn group(&self, name: &str) -> Uuid {
        if let Some(g) = self
            .db
            .list_groups(T)
            .await
            .expect("groups")
            .into_iter()
            .find(|g| g.name == name)
        {
            return g.id;
        }
        self.db.create_group(T, name, "").await.expect("group").id
    }

    /// Sets the tenant's AccessProfiles from YAML (validated like files in standalone).
    pub fn profiles(&self, yaml: &str) {
        let list: Vec<AccessProfile> = callvault_crds::validate_yaml(yaml)
            .unwrap_or_else(|e| panic!("invalid profiles: {e:?}"))
            .into_iter()
            .filter_map(|r| match r {
                callvault_crds::Resource::AccessProfile(p) => Some(p),
                _ => None,
            })
            .collect();
        self.access.set(list);
    }

    /// Declares resources of the other kinds beside the current AccessProfiles (as if their
    /// files were added, or kubectl applied them).
    pub fn declare(&self, others: Vec<callvault_crds::Resource>) {
        use callvault_portal::AccessSource;
        let mut all: Vec<_> = self
            .access
            .resources(T)
            .into_iter()
            .filter(|r| matches!(r, callvault_crds::Resource::AccessProfile(_)))
            .collect();
        all.extend(others);
        self.access.set_resources(all);
    }

    /// A call being recorded now: its row exists with status `recording`, no media yet.
    pub async fn active_recording(
        &self,
        owner: Option<Uuid>,
        groups: Vec<Uuid>,
        calling: &str,
        called: &str,
    ) -> Recording {
        let mut rec = NewRecording::new(
            format!("live-{}", Uuid::new_v4()),
            // Started within the last ten minutes.
            callvault_store::db::now_micros() - i64::from(rand_small() % 600) * 1_000_000,
            Direction::Outbound,
        );
        rec.calling = Party::new(calling, format!("{calling} name"));
        rec.called = Party::new(called, format!("{called} name"));
        // As the recorder writes them: the metadata's participants, the two parties first.
        rec.participants = vec![rec.calling.clone(), rec.called.clone()];
        rec.owner_user_id = owner;
        rec.groups = groups;
        rec.storage_target = TARGET.to_owned();
        rec.key_id = Some(self.key_id.clone());
        // As the recorder does: the expiry is known from the call's start.
        rec.expires_at = Some(rec.start_time + 365 * 86_400_000_000);
        self.db.create_recording(T, &rec).await.expect("create")
    }

    /// Ends a live call of [`Fixture::active_recording`] five seconds after its start, as the
    /// recorder commits one it recovered (`incomplete`).
    pub async fn end_live_call(&self, live: &Recording) {
        self.db
            .finish_recording(
                T,
                live.id,
                &FinishRecording {
                    status: RecordingStatus::Incomplete,
                    end_time: live.start_time + 5_000_000,
                    answer_time: Some(live.start_time),
                    release_cause: Some(ReleaseCause::Normal),
                    answering: None,
                    object_key: format!("{T}/{}.cvr", live.id),
                    size_bytes: 0,
                    codec: "opus".into(),
                    channels: 2,
                    sha256: "ab".repeat(32),
                    metadata_digest: "cd".repeat(32),
                    signature: "ef".repeat(32),
                    key_id: self.key_id.clone(),
                    stop_reason: None,
                },
            )
            .await
            .expect("finish");
    }

    /// Writes an encrypted recording of `plaintext` to the primary target and commits its row
    /// (a call of one minute).
    pub async fn recording(
        &self,
        owner: Option<Uuid>,
        groups: Vec<Uuid>,
        calling: &str,
        called: &str,
        plaintext: &[u8],
    ) -> Recording {
        self.recording_lasting(owner, groups, calling, called, plaintext, 60)
            .await
    }

    /// [`Fixture::recording`] of a call that lasted `seconds`.
    pub async fn recording_lasting(
        &self,
        owner: Option<Uuid>,
        groups: Vec<Uuid>,
        calling: &str,
        called: &str,
        plaintext: &[u8],
        seconds: i64,
    ) -> Recording {
        self.recording_sealed(owner, groups, calling, called, plaintext, seconds, false)
            .await
    }

    /// [`Fixture::recording_lasting`]; `version_1` seals it as recorders did before call
    /// details were sealed (the metadata digest covers the SIPREC metadata alone).
    #[allow(clippy::too_many_arguments)]
    pub async fn recording_sealed(
        &self,
        owner: Option<Uuid>,
        groups: Vec<Uuid>,
        calling: &str,
        called: &str,
        plaintext: &[u8],
        seconds: i64,
        version_1: bool,
    ) -> Recording {
        let mut rec = NewRecording::new(
            format!("call-{}", Uuid::new_v4()),
            1_750_000_000_000_000 + i64::from(rand_small()) * 1_000_000,
            Direction::Inbound,
        );
        rec.calling = Party::new(calling, format!("{calling} name"));
        rec.called = Party::new(called, format!("{called} name"));
        // As the recorder writes them: the metadata's participants, the two parties first.
        rec.participants = vec![rec.calling.clone(), rec.called.clone()];
        rec.owner_user_id = owner;
        rec.groups = groups;
        self.store_recording(rec, plaintext, seconds, version_1)
            .await
    }

    /// Writes `rec` (its parties, owner and groups set by the caller) as the recorder does:
    /// encrypted `plaintext` on the primary target, the row committed `seconds` long.
    pub async fn store_recording(
        &self,
        mut rec: NewRecording,
        plaintext: &[u8],
        seconds: i64,
        version_1: bool,
    ) -> Recording {
        rec.storage_target = TARGET.to_owned();
        rec.key_id = Some(self.key_id.clone());
        rec.answer_time = Some(rec.start_time);
        let id = rec.id;
        self.db.create_recording(T, &rec).await.expect("create");
        let end_time = rec.start_time + seconds * 1_000_000;
        // Sealed as the recorder seals: the call's details as the row will hold them.
        let meta = if version_1 {
            callvault_store::db::raw_metadata_digest(rec.raw_metadata.as_deref().unwrap_or(""))
        } else {
            rec.sealed_digest(end_time)
        };
        let mut w = RecordingWriter::new(
            Vec::new(),
            self.key.public_key(),
            WriterOptions { chunk_size: CHUNK },
        )
        .expect("writer");
        std::io::Write::write_all(&mut w, plaintext).expect("write");
        let (bytes, summary) = w.finish(&meta).expect("finish");
        let key = format!("{T}/{id}.cvr");
        self.storage
            .put(&key, bytes::Bytes::from(bytes.clone()))
            .await
            .expect("put");
        self.db
            .finish_recording(
                T,
                id,
                &FinishRecording {
                    status: RecordingStatus::Available,
                    end_time,
                    answer_time: Some(rec.start_time),
                    release_cause: Some(ReleaseCause::Normal),
                    answering: None,
                    object_key: key,
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
            .expect("finish")
    }

    /// An in-process client signed in as `name`.
    pub async fn login(&self, name: &str) -> Client {
        let mut c = Client::new(self.router.clone());
        let (status, body) = c
            .json(
                Method::POST,
                "/api/v1/auth/login",
                json!({"username": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {name}: {body}");
        c
    }
}

fn rand_small() -> u16 {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).expect("random");
    u16::from_le_bytes(b)
}

/// Resources as an administrator declares them (YAML, validated like resource files).
pub fn parse_resources(yaml: &str) -> Vec<callvault_crds::Resource> {
    callvault_crds::validate_yaml(yaml).unwrap_or_else(|e| panic!("invalid resources: {e:?}"))
}

/// The four kinds the admin screens show besides AccessProfiles, one of each, with the status
/// a controller would report: a Ready RecordingProfile, a Reachable StorageTarget.
pub fn declared_resources() -> Vec<callvault_crds::Resource> {
    use callvault_crds::{Condition, ConditionStatus, Resource};
    let condition = |type_: &str, reason: &str, message: &str| Condition {
        type_: type_.to_owned(),
        status: ConditionStatus::True,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_760_000_000).expect("time"),
        ),
        observed_generation: Some(1),
    };
    parse_resources(RESOURCES)
        .into_iter()
        .map(|r| match r {
            Resource::RecordingProfile(mut p) => {
                p.status = Some(callvault_crds::RecordingProfileStatus {
                    conditions: vec![condition("Ready", "Reconciled", "2 of 2 recorders ready")],
                    replicas: 2,
                    ready_replicas: 2,
                    ..Default::default()
                });
                Resource::RecordingProfile(p)
            }
            Resource::StorageTarget(mut t) => {
                t.status = Some(callvault_crds::StorageTargetStatus {
                    conditions: vec![condition("Reachable", "ProbeSucceeded", "")],
                    used_bytes: 123_456,
                    objects: 7,
                    ..Default::default()
                });
                Resource::StorageTarget(t)
            }
            r => r,
        })
        .collect()
}

pub const RESOURCES: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {name: retail-banking-agents}
spec:
  description: Retail banking agents
  selector: {groups: [agents]}
  retention: {days: 2557}
  storageTargetRef: {name: primary-s3}
  encryption: {keySecretRef: {name: recording-key, key: public.pem}}
---
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: primary-s3}
spec:
  type: s3
  bucket: northbank-call-recordings
  region: eu-west-2
  credentialsSecretRef: {name: s3-credentials}
---
apiVersion: callvault.io/v1alpha1
kind: Connector
metadata: {name: offsite-archive}
spec:
  storageTargetRef: {name: primary-s3}
  active: true
---
apiVersion: callvault.io/v1alpha1
kind: SpeechJob
metadata: {name: complaints-transcription}
spec:
  engine: {type: whisper, model: base.en, modelPath: /models/base.en.bin}
  language: en-GB
"#;

/// A playable recording as the recorder writes it: Ogg/Opus, two uncoupled mono streams (a
/// tone per party), so Chromium has to demux and decode what the portal really serves.
pub fn ogg_opus(seconds: u32) -> Vec<u8> {
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

/// Deterministic pseudo-random bytes (stands in for Ogg/Opus: the portal never parses it).
pub fn audio(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

/// A response: status, headers, body bytes.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Keeps the session cookie and CSRF token like a browser would.
#[derive(Clone)]
pub struct Client {
    router: Router,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    /// Send the CSRF header on unsafe requests (tests turn it off to see the refusal).
    pub send_csrf: bool,
    /// The socket address the portal sees the requests come from (none: in-process).
    pub peer: Option<std::net::SocketAddr>,
}

impl Client {
    pub fn new(router: Router) -> Self {
        Client {
            router,
            cookie: None,
            csrf: None,
            send_csrf: true,
            peer: None,
        }
    }

    /// A client whose requests come from `ip`, as a socket peer.
    pub fn from_peer(router: Router, ip: &str) -> Self {
        let mut c = Client::new(router);
        c.peer = Some(std::net::SocketAddr::new(ip.parse().expect("ip"), 40_000));
        c
    }

    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method.clone()).uri(path);
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        if self.send_csrf
            && let Some(t) = &self.csrf
            && method != Method::GET
        {
            req = req.header("x-csrf-token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(peer) = self.peer {
            req = req.extension(axum::extract::ConnectInfo(peer));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(60), self.router.clone().oneshot(req))
            .await
            .expect("response in time")
            .expect("infallible");
        let (parts, body) = resp.into_parts();
        for v in parts.headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap_or_default();
            let first = v.split(';').next().unwrap_or_default();
            if let Some(val) = first.strip_prefix("cv_session=") {
                self.cookie = (!val.is_empty()).then(|| format!("cv_session={val}"));
            }
            if let Some(val) = first.strip_prefix("cv_csrf=") {
                self.csrf = (!val.is_empty()).then(|| val.to_owned());
            }
        }
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// A request with `body` sent as is, under `content_type` (for malformed bodies).
    pub async fn send_raw(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(t) = &self.csrf {
            req = req.header("x-csrf-token", t);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).expect("request"))
            .await
            .expect("infallible");
        let (parts, body) = resp.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn json(&mut self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.send(method, path, Some(body), &[]).await;
        (r.status, r.json())
    }

    /// The active-calls list's Export button: every live call, as CSV.
    pub async fn export_active_calls(&mut self) -> Resp {
        let query = json!({"format": "csv", "query": {"statuses": ["recording"]}});
        self.send(Method::POST, "/api/v1/recordings/export", Some(query), &[])
            .await
    }
}
