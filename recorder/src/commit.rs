//! Commits ended segments from the spool: object to the StorageTarget, then the row, then the
//! spool files go. Every step is retried with exponential back-off until it succeeds, so a
//! storage or database outage delays commits and loses nothing. Storage that cannot even be
//! opened (credentials not mounted yet, a missing directory) is one more such outage: the
//! recorder records into the spool and opens it again at each attempt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use callvault_config::Timestamp;
use callvault_store::db::{
    Db, DbError, FinishRecording, RecordingStatus, RecoveredRecording, now_micros,
};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig, StorageError};
use serde::Serialize;
use tokio::sync::{Mutex, Notify, Semaphore, watch};
use tracing::Instrument;

use crate::metrics::{self, Metrics};
use crate::spool::{Ended, Manifest, Spool, SpoolError};

/// Codec of every recording (Ogg Opus; its channels are the call's, see `RowFacts`).
pub const CODEC: &str = "opus";

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("database unreachable: connecting took longer than {0:?}")]
    DbTimeout(Duration),
    #[error("storage: {0}")]
    Storage(Box<StorageError>),
    #[error("storage credentials: {0}")]
    Credentials(#[from] objstore::CredentialsError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("segment {0} has not ended")]
    NotEnded(uuid::Uuid),
}

impl From<StorageError> for CommitError {
    fn from(e: StorageError) -> Self {
        CommitError::Storage(Box::new(e))
    }
}

/// The database, connected on first use and reconnected after a failed connect.
#[derive(Debug)]
pub struct DbSlot {
    url: String,
    db: Mutex<Option<Db>>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl DbSlot {
    pub fn new(url: String) -> Self {
        DbSlot {
            url,
            db: Mutex::new(None),
        }
    }

    /// An already connected database (tests, standalone).
    pub fn connected(db: Db) -> Self {
        DbSlot {
            url: String::new(),
            db: Mutex::new(Some(db)),
        }
    }

    pub async fn get(&self) -> Result<Db, CommitError> {
        let mut slot = self.db.lock().await;
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = tokio::time::timeout(CONNECT_TIMEOUT, Db::connect(&self.url))
            .await
            .map_err(|_| CommitError::DbTimeout(CONNECT_TIMEOUT))??;
        *slot = Some(db.clone());
        Ok(db)
    }
}

/// Where recordings are stored: the StorageTarget's spec and credentials directory.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSpec {
    /// The StorageTarget's name.
    pub target: String,
    pub config: StorageConfig,
    pub credentials_dir: Option<PathBuf>,
}

impl StorageSpec {
    /// Reads the credentials and opens the target (no network call).
    pub fn open(&self) -> Result<Storage, CommitError> {
        let credentials = match &self.credentials_dir {
            Some(dir) => Credentials::from_dir(dir)?,
            None => Credentials::none(),
        };
        Ok(objstore::open(&self.config, &credentials)?)
    }
}

/// Whether the recorder can store recordings now, as its last attempt found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum StorageHealth {
    /// Nothing stored or tried yet.
    Unknown,
    Reachable,
    /// Opening the target or storing a recording failed; retried with back-off while the
    /// recordings wait in the spool.
    #[serde(rename_all = "camelCase")]
    Unreachable {
        target: String,
        error: String,
        /// First failure of this outage, µs since the Unix epoch.
        since: i64,
    },
}

/// The StorageTarget, opened on first use and again after a failure to open it; its spec can
/// be replaced while the recorder runs (commits waiting for a retry then retry at once).
#[derive(Debug)]
pub struct StorageSlot {
    spec: std::sync::Mutex<(StorageSpec, Option<Storage>)>,
    health: watch::Sender<StorageHealth>,
    changed: Notify,
}

impl StorageSlot {
    pub fn new(spec: StorageSpec, opened: Option<Storage>) -> Self {
        StorageSlot {
            spec: std::sync::Mutex::new((spec, opened)),
            health: watch::channel(StorageHealth::Unknown).0,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (StorageSpec, Option<Storage>)> {
        self.spec.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn spec(&self) -> StorageSpec {
        self.lock().0.clone()
    }

    /// Uses `spec` from now on (a changed StorageTarget).
    pub fn replace(&self, spec: StorageSpec, opened: Option<Storage>) {
        *self.lock() = (spec, opened);
        self.changed.notify_waiters();
    }

    /// The opened target; opening failures are reported like any other storage failure.
    pub fn get(&self) -> Result<Storage, CommitError> {
        let mut slot = self.lock();
        if let Some(storage) = &slot.1 {
            return Ok(storage.clone());
        }
        match slot.0.open() {
            Ok(storage) => {
                slot.1 = Some(storage.clone());
                Ok(storage)
            }
            Err(e) => {
                drop(slot);
                self.failed(&e);
                Err(e)
            }
        }
    }

    pub fn health(&self) -> StorageHealth {
        self.health.borrow().clone()
    }

    /// Changes as the health does.
    pub fn subscribe(&self) -> watch::Receiver<StorageHealth> {
        self.health.subscribe()
    }

    pub fn reachable(&self) {
        self.health.send_if_modified(|h| {
            let was = std::mem::replace(h, StorageHealth::Reachable);
            if matches!(was, StorageHealth::Unreachable { .. }) {
                tracing::info!("storage reachable again: waiting recordings are being committed");
            }
            was != StorageHealth::Reachable
        });
    }

    pub fn failed(&self, error: &CommitError) {
        let target = self.lock().0.target.clone();
        let error = error.to_string();
        self.health.send_if_modified(|h| {
            let since = match h {
                StorageHealth::Unreachable { since, .. } => *since,
                _ => now_micros(),
            };
            let next = StorageHealth::Unreachable {
                target,
                error,
                since,
            };
            let changed = *h != next;
            *h = next;
            changed
        });
    }
}

/// Retry pacing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before retry `attempt` (0-based): doubling from `first`, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max)
    }
}

#[derive(Debug)]
struct Inner {
    spool: Spool,
    storage: Arc<StorageSlot>,
    db: Arc<DbSlot>,
    backoff: Backoff,
    slots: Semaphore,
    pending: AtomicU64,
    idle: Notify,
    metrics: Arc<Metrics>,
}

/// Hands ended segments to background commit tasks.
#[derive(Debug, Clone)]
pub struct Committer {
    inner: Arc<Inner>,
}

/// Commits running at once; the rest wait their turn (uploads share the link).
const CONCURRENT_COMMITS: usize = 4;

impl Committer {
    pub fn new(
        spool: Spool,
        storage: Arc<StorageSlot>,
        db: Arc<DbSlot>,
        backoff: Backoff,
        metrics: Arc<Metrics>,
    ) -> Self {
        Committer {
            inner: Arc::new(Inner {
                spool,
                storage,
                db,
                backoff,
                slots: Semaphore::new(CONCURRENT_COMMITS),
                pending: AtomicU64::new(0),
                idle: Notify::new(),
                metrics,
            }),
        }
    }

    pub fn storage(&self) -> &Arc<StorageSlot> {
        &self.inner.storage
    }

    pub fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::SeqCst)
    }

    /// Waits until no commit is pending, at most `timeout`; true when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.inner.idle.notified();
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.pending() == 0;
            }
        }
    }

    /// Commits an ended segment in the background, retrying until it is done.
    pub fn submit(&self, manifest: Manifest) {
        let inner = self.inner.clone();
        inner.pending.fetch_add(1, Ordering::SeqCst);
        metrics::inc(&inner.metrics.commits_pending);
        let span = tracing::info_span!("commit", call_id = %manifest.row.sip_call_id,
            recording = %manifest.id, segment = manifest.row.segment);
        tokio::spawn(
            async move {
                let mut attempt = 0;
                loop {
                    let result = {
                        let _slot = inner.slots.acquire().await;
                        inner.commit_once(&manifest).await
                    };
                    match result {
                        Ok(()) => break,
                        Err(e) => {
                            metrics::inc(&inner.metrics.commit_failures);
                            let delay = inner.backoff.delay(attempt);
                            tracing::warn!(error = %e, attempt, retry_in = ?delay,
                                "commit failed; the spool keeps the recording");
                            // A replaced StorageTarget is tried at once.
                            let _ =
                                tokio::time::timeout(delay, inner.storage.changed.notified()).await;
                            attempt = attempt.saturating_add(1);
                        }
                    }
                }
                metrics::dec(&inner.metrics.commits_pending);
                if inner.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                    inner.idle.notify_waiters();
                }
            }
            .instrument(span),
        );
    }
}

/// Removes a committed segment's files. The directory's fsync can take long on a busy disk,
/// so it runs on a blocking thread, not on a runtime thread the live calls' media need.
async fn remove_from_spool(spool: &Spool, id: uuid::Uuid) -> Result<(), SpoolError> {
    let spool = spool.clone();
    match tokio::task::spawn_blocking(move || spool.remove(id)).await {
        Ok(removed) => removed,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down: the files stay, and the next start finds the row
        // committed and removes them.
        Err(_) => Ok(()),
    }
}

/// Object key of a recording: `yyyy/mm/dd/<id>.cvr` by its start (UTC), under the target's
/// prefix.
pub fn object_key(m: &Manifest) -> String {
    let day = Timestamp::from_microsecond(m.row.start_time)
        .map(|t| t.strftime("%Y/%m/%d").to_string())
        .unwrap_or_else(|_| "0000/00/00".to_owned());
    format!("{day}/{}.cvr", m.id)
}

impl Inner {
    async fn commit_once(&self, m: &Manifest) -> Result<(), CommitError> {
        let ended = m.ended.as_ref().ok_or(CommitError::NotEnded(m.id))?;
        let db = self.db.get().await?;
        let row = match db.recording(&m.tenant, m.id).await? {
            Some(row) => row,
            // The database was unreachable when the call started.
            None => {
                db.create_recording(&m.tenant, &m.row.new_recording(m.id))
                    .await?
            }
        };
        if !matches!(
            row.status,
            RecordingStatus::Recording | RecordingStatus::Pending
        ) {
            // Committed before the spool files could be removed.
            tracing::info!(status = %row.status, "already committed");
            remove_from_spool(&self.spool, m.id).await?;
            return Ok(());
        }
        let key = object_key(m);
        let storage = self.storage.get()?;
        let info = match storage.put_file(&key, &self.spool.media_path(m.id)).await {
            Ok(info) => {
                self.storage.reachable();
                info
            }
            // The spool file itself unreadable is no storage outage.
            Err(e @ StorageError::LocalFile { .. }) => return Err(e.into()),
            Err(e) => {
                let e = CommitError::from(e);
                self.storage.failed(&e);
                return Err(e);
            }
        };
        let size = i64::try_from(info.size).unwrap_or(i64::MAX);
        let result = match ended {
            Ended::Sealed {
                end_time,
                release_cause,
                sha256,
                metadata_digest,
                signature,
                raw_metadata,
                participants,
                stop_reason: stop,
            } => {
                if row.raw_metadata.as_deref() != Some(raw_metadata.as_str()) {
                    db.update_recording_metadata(&m.tenant, m.id, participants, raw_metadata)
                        .await?;
                }
                db.finish_recording(
                    &m.tenant,
                    m.id,
                    &FinishRecording {
                        status: RecordingStatus::Available,
                        end_time: *end_time,
                        answer_time: None,
                        release_cause: Some(*release_cause),
                        answering: None,
                        object_key: key.clone(),
                        size_bytes: size,
                        codec: CODEC.into(),
                        channels: i64::from(m.row.channels),
                        sha256: sha256.clone(),
                        metadata_digest: metadata_digest.clone(),
                        signature: signature.clone(),
                        key_id: m.row.key_id.clone(),
                        stop_reason: stop.clone(),
                    },
                )
                .await
                .map(|_| false)
            }
            Ended::Recovered {
                end_time,
                metadata_digest,
                stop_reason,
            } => db
                .commit_recovered_recording(
                    &m.tenant,
                    m.id,
                    &RecoveredRecording {
                        end_time: *end_time,
                        object_key: key.clone(),
                        size_bytes: size,
                        codec: CODEC.into(),
                        channels: i64::from(m.row.channels),
                        metadata_digest: metadata_digest.clone(),
                        key_id: m.row.key_id.clone(),
                        stop_reason: stop_reason.clone(),
                    },
                )
                .await
                .map(|_| true),
        };
        match result {
            Ok(incomplete) => {
                metrics::inc(&self.metrics.commits);
                if incomplete {
                    metrics::inc(&self.metrics.commits_incomplete);
                }
                self.metrics.committed(ended.end_time());
                tracing::info!(object = %key, bytes = info.size, incomplete, "recording committed");
            }
            // A concurrent or earlier attempt finished it.
            Err(DbError::Conflict(e)) => tracing::info!(reason = %e, "already committed"),
            Err(e) => return Err(e.into()),
        }
        remove_from_spool(&self.spool, m.id).await?;
        Ok(())
    }
}
