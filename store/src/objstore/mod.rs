//! Object storage bindings: one [`Storage`] per StorageTarget, over S3, Azure Blob, GCS or a
//! local directory, with the target's `prefix` applied to every key.
//!
//! Keys passed to [`Storage`] are relative to the prefix (`2025/01/02/<id>.cvr`) and use `/`
//! as separator; listing returns keys in the same form. Every network call is bounded by the
//! timeouts in [`Timeouts`], so an unreachable server gives an error, not a hang.

mod config;
mod gcs;
mod probe;

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, Checksum};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig, WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

pub use config::{
    Backend, ConfigError, Credentials, CredentialsError, Secret, StorageConfig, StorageKind,
    ValidatedConfig,
};
pub use probe::{FailureReason, ProbeFailure, ProbeOptions, ProbeReport, ProbeStep, StepOutcome};

/// Size of one multipart part. S3 needs at least 5 MiB per part (except the last); 8 MiB keeps
/// the part count of a 5-hour recording low while memory stays bounded.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded in parallel; memory used by an upload is about (this + 1) × part size.
const MAX_PARTS_IN_FLIGHT: usize = 2;
/// Read buffer when streaming a local file into an upload.
const READ_CHUNK: usize = 256 * 1024;
/// The GCS JSON API when a target names no endpoint.
const GCS_BASE_URL: &str = "https://storage.googleapis.com";

/// Network bounds applied to every request of a cloud store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// One whole request, body included.
    pub request: Duration,
    /// Retries of a failed request (0 = none).
    pub max_retries: usize,
    /// No retry starts after this much time since the first attempt.
    pub retry_budget: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(120),
            max_retries: 3,
            retry_budget: Duration::from_secs(30),
        }
    }
}

/// An operation on a store, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Open,
    Put,
    Get,
    Head,
    Delete,
    List,
    Copy,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Open => "open",
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::Delete => "delete",
            Op::List => "list",
            Op::Copy => "copy",
        })
    }
}

/// Errors of the object storage bindings.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{kind} storage target needs credentials: {needed}")]
    MissingCredentials {
        kind: StorageKind,
        needed: &'static str,
    },
    #[error(transparent)]
    CredentialsFile(#[from] CredentialsError),
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("object {key:?} not found in {target}")]
    NotFound { key: String, target: String },
    #[error("{op} {key:?} on {target} failed: {source}")]
    Backend {
        op: Op,
        key: String,
        target: String,
        #[source]
        source: object_store::Error,
    },
    #[error("local file {path}: {source}")]
    LocalFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("byte range {start}..{end} of {key:?} is not satisfiable (object has {size} bytes)")]
    InvalidRange {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    #[error("{op} {key:?} on {target}: {detail}")]
    Integrity {
        op: Op,
        key: String,
        target: String,
        detail: String,
    },
}

impl StorageError {
    /// True when the object (or, for cloud stores, the bucket) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the target's prefix.
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    pub e_tag: Option<String>,
}

/// How far the store itself checked an upload made with an expected SHA-256
/// ([`Storage::put_checked`], [`Storage::put_file_checked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestCheck {
    /// The server recomputed a digest of every byte it received and compared it with the
    /// digest of the bytes sent (S3: `x-amz-checksum-sha256` on every PUT and part, refused
    /// on mismatch; GCS: MD5 and CRC32C declared with the upload, and compared with those the
    /// server reports for the stored object, which is deleted on mismatch), so the stored
    /// object is the bytes that were sent, whose SHA-256 was checked here.
    ByServer,
    /// Only the bytes sent were hashed here; the server checked nothing but the size. Read
    /// the object back to verify what was stored.
    SentOnly,
}

/// An upload made with an expected digest: what was stored and how it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPut {
    pub info: ObjectInfo,
    pub check: DigestCheck,
}

/// Objects and bytes under a target's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub objects: u64,
    pub bytes: u64,
    /// False when counting stopped at the limit: the figures are then lower bounds.
    pub complete: bool,
}

/// An opened storage target. Cheap to clone; share one per target.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    kind: StorageKind,
    target: Arc<str>,
    part_size: usize,
    /// GCS targets: writes go through the JSON API (see [`gcs`]).
    gcs: Option<Arc<gcs::GcsUploads>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Opens a storage target with the default [`Timeouts`].
pub fn open(config: &StorageConfig, credentials: &Credentials) -> Result<Storage, StorageError> {
    open_with(config, credentials, Timeouts::default())
}

/// Opens a storage target. Validates the configuration and credentials but makes no network
/// call: use [`Storage::probe`] to check that the target is reachable.
///
/// A filesystem target's directory must already exist: a missing mount must fail loudly
/// rather than silently fill the container's own disk.
pub fn open_with(
    config: &StorageConfig,
    credentials: &Credentials,
    timeouts: Timeouts,
) -> Result<Storage, StorageError> {
    let valid = config.validate()?;
    let kind = valid.backend.kind();
    let client = ClientOptions::new()
        .with_connect_timeout(timeouts.connect)
        .with_timeout(timeouts.request)
        .with_allow_http(true);
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: timeouts.max_retries,
        retry_timeout: timeouts.retry_budget,
    };
    let open_err = |location: String, source: object_store::Error| StorageError::Backend {
        op: Op::Open,
        key: String::new(),
        target: location,
        source,
    };
    let location = describe(&valid);
    let mut gcs_uploads = None;
    let base: Arc<dyn ObjectStore> = match &valid.backend {
        Backend::S3 {
            bucket,
            endpoint,
            region,
            virtual_hosted_style,
        } => {
            let (Some(id), Some(secret)) =
                (&credentials.access_key_id, &credentials.secret_access_key)
            else {
                return Err(StorageError::MissingCredentials {
                    kind,
                    needed: "files accessKeyId and secretAccessKey",
                });
            };
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_access_key_id(id.expose())
                .with_secret_access_key(secret.expose())
                .with_virtual_hosted_style_request(*virtual_hosted_style)
                // Every PUT and part carries its SHA-256, which the server recomputes and
                // refuses on mismatch: `DigestCheck::ByServer` relies on this.
                .with_checksum_algorithm(Checksum::SHA256)
                .with_client_options(client)
                .with_retry(retry);
            if let Some(ep) = endpoint {
                b = b.with_endpoint(ep.as_str().trim_end_matches('/'));
            }
            Arc::new(b.build().map_err(|e| open_err(location.clone(), e))?)
        }
        Backend::Azure {
            account,
            container,
            endpoint,
        } => {
            let mut b = MicrosoftAzureBuilder::new()
                .with_account(account)
                .with_container_name(container)
                .with_client_options(client)
                .with_retry(retry);
            b = match (&credentials.account_key, &credentials.sas_token) {
                (Some(key), _) => b.with_access_key(key.expose()),
                (None, Some(sas)) => {
                    b.with_config(AzureConfigKey::SasKey, sas.expose().trim_start_matches('?'))
                }
                (None, None) => {
                    return Err(StorageError::MissingCredentials {
                        kind,
                        needed: "file accountKey or sasToken",
                    });
                }
            };
            if let Some(ep) = endpoint {
                b = b.with_endpoint(ep.as_str().trim_end_matches('/').to_owned());
            }
            Arc::new(b.build().map_err(|e| open_err(location.clone(), e))?)
        }
        Backend::Gcs { bucket, endpoint } => {
            let Some(json) = &credentials.service_account_json else {
                return Err(StorageError::MissingCredentials {
                    kind,
                    needed: "file serviceAccountJson",
                });
            };
            let mut b = GoogleCloudStorageBuilder::new()
                .with_bucket_name(bucket)
                .with_service_account_key(json.expose())
                .with_client_options(client)
                .with_retry(retry);
            let base_url = endpoint
                .as_ref()
                .map_or(GCS_BASE_URL, |ep| ep.as_str().trim_end_matches('/'));
            b = b.with_base_url(base_url);
            let gcs = b.build().map_err(|e| open_err(location.clone(), e))?;
            let uploads = gcs::GcsUploads::new(
                base_url,
                bucket,
                valid.prefix.as_deref(),
                Arc::clone(gcs.credentials()),
                timeouts,
            )
            .map_err(|problem| {
                StorageError::Config(ConfigError::Invalid {
                    field: "endpoint",
                    problem,
                })
            })?;
            gcs_uploads = Some(Arc::new(uploads));
            Arc::new(gcs)
        }
        Backend::Filesystem { path } => {
            let fs = LocalFileSystem::new_with_prefix(path)
                .map_err(|e| open_err(location.clone(), e))?
                // A recording acknowledged as stored must survive a power cut.
                .with_fsync(true)
                .with_automatic_cleanup(true);
            Arc::new(fs)
        }
    };
    let store: Arc<dyn ObjectStore> = match &valid.prefix {
        Some(p) => Arc::new(PrefixStore::new(base, p.as_str())),
        None => base,
    };
    Ok(Storage {
        store,
        kind,
        target: location.into(),
        part_size: DEFAULT_PART_SIZE,
        gcs: gcs_uploads,
    })
}

/// A URL-like name of the target for messages (never contains credentials).
fn describe(valid: &ValidatedConfig) -> String {
    let base = match &valid.backend {
        Backend::S3 {
            bucket, endpoint, ..
        } => match endpoint {
            Some(ep) => format!("s3://{bucket} at {}", ep.as_str().trim_end_matches('/')),
            None => format!("s3://{bucket}"),
        },
        Backend::Azure {
            account,
            container,
            endpoint,
        } => match endpoint {
            Some(ep) => format!(
                "azure://{account}/{container} at {}",
                ep.as_str().trim_end_matches('/')
            ),
            None => format!("azure://{account}/{container}"),
        },
        Backend::Gcs { bucket, endpoint } => match endpoint {
            Some(ep) => format!("gs://{bucket} at {}", ep.as_str().trim_end_matches('/')),
            None => format!("gs://{bucket}"),
        },
        Backend::Filesystem { path } => format!("file://{}", path.display()),
    };
    match &valid.prefix {
        Some(p) => format!("{base} (prefix {p}/)"),
        None => base,
    }
}

fn parse_key(key: &str) -> Result<Path, StorageError> {
    let invalid = |reason: String| StorageError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("empty".into()));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(invalid("must not start or end with '/'".into()));
    }
    Path::parse(key).map_err(|e| invalid(e.to_string()))
}

fn parse_prefix(prefix: &str) -> Result<Option<Path>, StorageError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    parse_key(trimmed).map(Some)
}

fn info(meta: ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.to_string(),
        size: meta.size,
        last_modified: meta.last_modified.into(),
        e_tag: meta.e_tag,
    }
}

impl Storage {
    /// The target's kind.
    pub fn kind(&self) -> StorageKind {
        self.kind
    }

    /// A description of the target for logs and messages, e.g. `s3://calls at http://h:9000`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Changes the multipart part size (at least 5 MiB, the S3 minimum).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(5 * 1024 * 1024);
        self
    }

    fn err(&self, op: Op, key: &str, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } if op != Op::List => StorageError::NotFound {
                key: key.to_owned(),
                target: self.target.to_string(),
            },
            source => StorageError::Backend {
                op,
                key: key.to_owned(),
                target: self.target.to_string(),
                source,
            },
        }
    }

    /// Stores `data` under `key`, replacing any object there.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<ObjectInfo, StorageError> {
        let location = parse_key(key)?;
        let len = data.len() as u64;
        if self.gcs.is_some() {
            let body = futures::stream::once(async move { Ok(data) });
            return self.upload(Op::Put, &location, key, body, len, None).await;
        }
        self.store
            .put(&location, PutPayload::from_bytes(data))
            .await
            .map_err(|e| self.err(Op::Put, key, e))?;
        self.verify_size(Op::Put, key, len).await
    }

    /// Whether the server verifies the content of every upload against a digest sent with
    /// it (see [`DigestCheck::ByServer`]). True for S3, which this binding always configures
    /// with SHA-256 checksums, and GCS, whose uploads carry MD5 and CRC32C; Azure and
    /// filesystem targets only get a size check.
    pub fn verifies_digest_on_upload(&self) -> bool {
        matches!(self.kind, StorageKind::S3 | StorageKind::Gcs)
    }

    /// Stores `data` under `key` only if its SHA-256 is `sha256`: a mismatch is an
    /// [`StorageError::Integrity`] error and nothing is sent. The result says whether the
    /// server also verified the bytes it received.
    pub async fn put_checked(
        &self,
        key: &str,
        data: Bytes,
        sha256: &[u8; 32],
    ) -> Result<CheckedPut, StorageError> {
        let location = parse_key(key)?;
        let len = data.len() as u64;
        let body = futures::stream::once(async move { Ok(data) });
        let info = self
            .upload(Op::Put, &location, key, body, len, Some(sha256))
            .await?;
        Ok(self.checked(info))
    }

    /// [`Storage::put_file`] that stores the file only if the bytes uploaded have SHA-256
    /// `sha256` (hashed as they are sent; on mismatch a multipart upload is aborted before
    /// completing, so nothing is stored). The result says whether the server also verified
    /// the bytes it received.
    pub async fn put_file_checked(
        &self,
        key: &str,
        file: &FsPath,
        sha256: &[u8; 32],
    ) -> Result<CheckedPut, StorageError> {
        let info = self.put_file_inner(key, file, Some(sha256)).await?;
        Ok(self.checked(info))
    }

    fn checked(&self, info: ObjectInfo) -> CheckedPut {
        CheckedPut {
            info,
            check: if self.verifies_digest_on_upload() {
                DigestCheck::ByServer
            } else {
                DigestCheck::SentOnly
            },
        }
    }

    /// Uploads a local file (a spool file) under `key` with constant memory: files larger than
    /// one part go up as a multipart upload, which is aborted on any failure so no partial
    /// object is left. The stored size is checked against the file before returning.
    pub async fn put_file(&self, key: &str, file: &FsPath) -> Result<ObjectInfo, StorageError> {
        self.put_file_inner(key, file, None).await
    }

    async fn put_file_inner(
        &self,
        key: &str,
        file: &FsPath,
        sha256: Option<&[u8; 32]>,
    ) -> Result<ObjectInfo, StorageError> {
        let location = parse_key(key)?;
        let local_err = |source| StorageError::LocalFile {
            path: file.display().to_string(),
            source,
        };
        let f = tokio::fs::File::open(file).await.map_err(local_err)?;
        let len = f.metadata().await.map_err(local_err)?.len();
        let path_text = file.display().to_string();
        let chunks = futures::stream::try_unfold(f, move |mut f| {
            let path_text = path_text.clone();
            async move {
                let mut buf = vec![0u8; READ_CHUNK];
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(|source| StorageError::LocalFile {
                        path: path_text,
                        source,
                    })?;
                if n == 0 {
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some((Bytes::from(buf), f)))
            }
        });
        self.upload(Op::Put, &location, key, chunks, len, sha256)
            .await
    }

    /// Uploads a stream of exactly `len` bytes; with `sha256`, only if the bytes have that
    /// digest (checked before the object is committed).
    async fn upload<S>(
        &self,
        op: Op,
        location: &Path,
        key: &str,
        chunks: S,
        len: u64,
        sha256: Option<&[u8; 32]>,
    ) -> Result<ObjectInfo, StorageError>
    where
        S: Stream<Item = Result<Bytes, StorageError>> + Send,
    {
        let mut chunks = std::pin::pin!(chunks);
        let mut hash = sha256.map(|_| Sha256::new());
        let digest_mismatch = |hash: Option<Sha256>| -> Option<StorageError> {
            let (want, hash) = (sha256?, hash?);
            let got: [u8; 32] = hash.finalize().into();
            (got != *want).then(|| StorageError::Integrity {
                op,
                key: key.to_owned(),
                target: self.target.to_string(),
                detail: format!(
                    "bytes to upload have SHA-256 {}, {} was expected; nothing was stored",
                    hex::encode(got),
                    hex::encode(want)
                ),
            })
        };
        if let Some(gcs) = &self.gcs {
            // SHA-256 of the bytes as they pass to the uploader, checked before it commits.
            let hash = std::sync::Mutex::new(hash);
            let lock = || hash.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let body = chunks.inspect(|chunk| {
                if let (Ok(c), Some(h)) = (chunk, lock().as_mut()) {
                    h.update(c);
                }
            });
            let precommit = Box::new(|total: u64| {
                if total != len {
                    return Some(self.size_changed(op, key, len, total));
                }
                digest_mismatch(lock().take())
            });
            let outcome = gcs
                .upload(key, body, len, self.part_size, precommit)
                .await
                .map_err(|e| self.err(op, key, e.into_object_store()))?;
            match outcome {
                gcs::Outcome::Stored => {}
                gcs::Outcome::Refused(e) => return Err(e),
                gcs::Outcome::Mismatch(detail) => {
                    let deleted = match self.delete(key).await {
                        Ok(()) => "it was deleted",
                        Err(_) => "deleting it failed",
                    };
                    return Err(StorageError::Integrity {
                        op,
                        key: key.to_owned(),
                        target: self.target.to_string(),
                        detail: format!("{detail}; {deleted}"),
                    });
                }
            }
            return self.verify_size(op, key, len).await;
        }
        if len <= self.part_size as u64 {
            let mut payload = Vec::with_capacity(len as usize);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                if let Some(h) = &mut hash {
                    h.update(&chunk);
                }
                payload.extend_from_slice(&chunk);
            }
            if payload.len() as u64 != len {
                return Err(self.size_changed(op, key, len, payload.len() as u64));
            }
            if let Some(e) = digest_mismatch(hash) {
                return Err(e);
            }
            self.store
                .put(location, PutPayload::from(payload))
                .await
                .map_err(|e| self.err(op, key, e))?;
        } else {
            let upload = self
                .store
                .put_multipart(location)
                .await
                .map_err(|e| self.err(op, key, e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
            let streamed: Result<u64, StorageError> = async {
                let mut total = 0u64;
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk?;
                    // Back-pressure: never buffer more than the parts in flight.
                    writer
                        .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| self.err(op, key, e))?;
                    total += chunk.len() as u64;
                    if let Some(h) = &mut hash {
                        h.update(&chunk);
                    }
                    writer.put(chunk);
                }
                Ok(total)
            }
            .await;
            let failure = match streamed {
                Ok(total) if total == len => digest_mismatch(hash),
                Ok(total) => Some(self.size_changed(op, key, len, total)),
                Err(e) => Some(e),
            };
            match failure {
                // finish() aborts the upload itself when completing fails.
                None => {
                    writer.finish().await.map_err(|e| self.err(op, key, e))?;
                }
                Some(e) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(target = %self.target, key, error = %abort,
                            "could not abort multipart upload; the store's lifecycle rules must clean it up");
                    }
                    return Err(e);
                }
            }
        }
        self.verify_size(op, key, len).await
    }

    fn size_changed(&self, op: Op, key: &str, expected: u64, got: u64) -> StorageError {
        StorageError::Integrity {
            op,
            key: key.to_owned(),
            target: self.target.to_string(),
            detail: format!(
                "source had {got} bytes where {expected} were expected (changed while uploading?); nothing was stored"
            ),
        }
    }

    async fn verify_size(&self, op: Op, key: &str, len: u64) -> Result<ObjectInfo, StorageError> {
        let stored = self.head(key).await?;
        if stored.size != len {
            return Err(StorageError::Integrity {
                op,
                key: key.to_owned(),
                target: self.target.to_string(),
                detail: format!("stored object has {} bytes, {len} were sent", stored.size),
            });
        }
        Ok(stored)
    }

    /// Reads a whole object into memory. For large objects prefer [`Storage::get_stream`].
    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let location = parse_key(key)?;
        let res = self
            .store
            .get(&location)
            .await
            .map_err(|e| self.err(Op::Get, key, e))?;
        res.bytes().await.map_err(|e| self.err(Op::Get, key, e))
    }

    /// Streams an object: its metadata and the body in chunks.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(ObjectInfo, BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
        let location = parse_key(key)?;
        let res = self
            .store
            .get(&location)
            .await
            .map_err(|e| self.err(Op::Get, key, e))?;
        let mut meta = info(res.meta.clone());
        meta.key = key.to_owned();
        let this = self.clone();
        let key_owned = key.to_owned();
        let body = res
            .into_stream()
            .map_err(move |e| this.err(Op::Get, &key_owned, e))
            .boxed();
        Ok((meta, body))
    }

    /// Reads bytes `range.start..range.end` of an object. The whole range must lie inside the
    /// object: a short read is an error, never silently fewer bytes.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        let location = parse_key(key)?;
        let invalid = |size: u64| StorageError::InvalidRange {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size,
        };
        if range.start >= range.end {
            return Err(invalid(0));
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        // One request per read (the portal makes many); the object's size comes with it.
        let res = match self.store.get_opts(&location, opts).await {
            Ok(res) => res,
            Err(e) => {
                let err = self.err(Op::Get, key, e);
                if err.is_not_found() {
                    return Err(err);
                }
                // Stores reject ranges past the end in different ways (416, or a local
                // error); if the object exists and is too short, say so plainly.
                return match self.head(key).await {
                    Ok(meta) if range.end > meta.size => Err(invalid(meta.size)),
                    _ => Err(err),
                };
            }
        };
        let size = res.meta.size;
        if range.end > size {
            return Err(invalid(size));
        }
        let bytes = res.bytes().await.map_err(|e| self.err(Op::Get, key, e))?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(invalid(size));
        }
        Ok(bytes)
    }

    /// Size, modification time and entity tag of an object.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StorageError> {
        let location = parse_key(key)?;
        let meta = self
            .store
            .head(&location)
            .await
            .map_err(|e| self.err(Op::Head, key, e))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            ..info(meta)
        })
    }

    /// Whether an object exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object. Deleting an object that is already gone succeeds, so retried
    /// deletes (retention, after a crash) are safe.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let location = parse_key(key)?;
        match self.store.delete(&location).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(Op::Delete, key, e)),
        }
    }

    /// Streams the objects under a folder-like `prefix` (`""` = everything under the target's
    /// prefix). Matching is by whole path segments: `a/b` lists `a/b/x`, not `a/bc`.
    pub fn list_stream(
        &self,
        prefix: &str,
    ) -> Result<BoxStream<'static, Result<ObjectInfo, StorageError>>, StorageError> {
        let location = parse_prefix(prefix)?;
        let this = self.clone();
        let prefix_owned = prefix.to_owned();
        Ok(self
            .store
            .list(location.as_ref())
            .map_ok(info)
            .map_err(move |e| this.err(Op::List, &prefix_owned, e))
            .boxed())
    }

    /// Lists the objects under a folder-like `prefix`, sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut all: Vec<ObjectInfo> = self.list_stream(prefix)?.try_collect().await?;
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// Counts objects and bytes under the target's prefix, stopping after `max_objects`.
    pub async fn usage(&self, max_objects: u64) -> Result<Usage, StorageError> {
        let mut stream = self.list_stream("")?;
        let mut usage = Usage {
            objects: 0,
            bytes: 0,
            complete: true,
        };
        while let Some(obj) = stream.try_next().await? {
            if usage.objects >= max_objects {
                usage.complete = false;
                break;
            }
            usage.objects += 1;
            usage.bytes += obj.size;
        }
        Ok(usage)
    }

    /// Copies an object to another storage target (archive), streaming with bounded memory.
    /// The copy's size is checked against the source; a failed copy leaves no partial object.
    pub async fn copy_to(
        &self,
        key: &str,
        dest: &Storage,
        dest_key: &str,
    ) -> Result<ObjectInfo, StorageError> {
        let dest_location = parse_key(dest_key)?;
        let (meta, body) = self.get_stream(key).await?;
        dest.upload(Op::Copy, &dest_location, dest_key, body, meta.size, None)
            .await
    }

    /// Runs the connection test (write, read back, compare, delete a probe object).
    pub async fn probe(&self, options: &ProbeOptions) -> ProbeReport {
        probe::run(self, options).await
    }
}

/// Opens the target and runs the connection test; configuration and credential problems are
/// reported as a failed `connect` step, so the operator has one report to turn into status.
pub async fn test_connection(
    config: &StorageConfig,
    credentials: &Credentials,
    options: &ProbeOptions,
) -> ProbeReport {
    match open_with(config, credentials, options.timeouts) {
        Ok(storage) => storage.probe(options).await,
        Err(e) => ProbeReport::open_failed(config, &e),
    }
}
