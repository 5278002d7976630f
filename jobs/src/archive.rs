//! The archive job of one Connector: copies finished recordings that the Connector has not
//! archived yet (new ones and older ones alike) to its destination StorageTarget.
//!
//! - `encrypt: true` ([`ArchiveMode::Envelope`]): the stored `.cvr` envelope is copied byte for
//!   byte; it is never decrypted and the job holds no private key.
//! - `encrypt: false` ([`ArchiveMode::Plaintext`]): the envelope is decrypted with a key from
//!   the job's key ring (the grant), its plaintext digest is checked against the recording's
//!   row, and the `.ogg` is written with a `.json` sidecar of the call's metadata.
//!
//! A copy is recorded in `recording_copies` only after its SHA-256 was verified, so a row there
//! always means a verified copy. The bytes uploaded are hashed as they are sent and must match
//! the digest taken when the object was staged; then, where the destination verifies each
//! upload against the digest sent with it (S3 with checksums, GCS with MD5 and CRC32C, see
//! [`Storage::verifies_digest_on_upload`]), its acceptance is the check; elsewhere (filesystem,
//! Azure) the copy is read back from the destination and its digest compared. The
//! digest recorded is that of the archived object (the envelope's bytes, or the plaintext
//! Ogg's, which is also the recording's own digest). Keys keep the source's folder layout.
//! A run killed at any point leaves the recording without a copy row; the next run copies it
//! again over whatever partial object was left.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};

use bytes::Bytes;
use callvault_store::db::{ArchiveCopy, ArchiveCounts, Db, DbError, Recording, RecordingStatus};
use callvault_store::format::{self, FormatError};
use callvault_store::keys::KeyRing;
use callvault_store::objstore::{DigestCheck, ProbeOptions, Storage, StorageError};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Objects up to this size are staged in memory; larger ones in a temporary file, so memory
/// stays bounded whatever the recording's length.
const MEMORY_STAGE_MAX: u64 = 8 * 1024 * 1024;

/// How archive copies are written.
#[derive(Debug, Clone, Copy)]
pub enum ArchiveMode<'a> {
    /// Copy the encrypted envelope as stored.
    Envelope,
    /// Decrypt with a key of this ring and write `.ogg` plus a `.json` sidecar.
    Plaintext(&'a KeyRing),
}

/// One Connector's run.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveJob<'a> {
    pub db: &'a Db,
    pub tenant: &'a str,
    /// The Connector's name, recorded on each copy.
    pub connector: &'a str,
    /// Source RecordingProfiles; empty = every profile of the tenant.
    pub profiles: &'a [String],
    /// Storage targets the primary copies are on, by the name recordings carry.
    pub sources: &'a BTreeMap<String, Storage>,
    /// The destination StorageTarget's name and binding.
    pub destination_name: &'a str,
    pub destination: &'a Storage,
    pub mode: ArchiveMode<'a>,
    /// Recordings read per query (at least 1).
    pub batch_size: u32,
    /// Copies in flight at once (at least 1).
    pub concurrency: usize,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every recording found was archived.
    Succeeded,
    /// Some recordings failed; they are retried by the next run.
    PartiallyFailed,
    /// Nothing could be done (destination unreachable).
    Failed,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// µs since the epoch.
    pub started_at: i64,
    pub finished_at: i64,
    /// Why the destination failed its connection test; `None` = reachable.
    pub unreachable: Option<String>,
    /// Recordings archived by this run.
    pub archived: u64,
    /// Recordings that could not be archived this run.
    pub failures: Vec<ArchiveFailure>,
    /// Pending and archived totals after the run.
    pub counts: ArchiveCounts,
}

impl ArchiveSummary {
    pub fn outcome(&self) -> RunOutcome {
        if self.unreachable.is_some() {
            RunOutcome::Failed
        } else if self.failures.is_empty() {
            RunOutcome::Succeeded
        } else {
            RunOutcome::PartiallyFailed
        }
    }

    /// The first problem, for the status's `lastRun.message`.
    pub fn message(&self) -> Option<String> {
        self.unreachable.clone().or_else(|| {
            self.failures.first().map(|f| {
                format!(
                    "{} of {} recordings failed; first: {}: {}",
                    self.failures.len(),
                    self.failures.len() as u64 + self.archived,
                    f.recording_id,
                    f.error
                )
            })
        })
    }
}

/// One recording not archived, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFailure {
    pub recording_id: Uuid,
    pub error: String,
}

/// Errors that stop a run (per-recording problems are in the summary instead).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid archive option {field}: {reason}")]
    InvalidOption { field: &'static str, reason: String },
    #[error("archive query failed: {0}")]
    Db(#[from] DbError),
}

/// Why one copy failed.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error("its storage target {0:?} is not bound to this job")]
    UnknownSource(String),
    #[error("it has no media object")]
    NoMedia,
    #[error(transparent)]
    Storage(Box<StorageError>),
    #[error("staging file: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decrypt: {0}")]
    Decrypt(#[from] FormatError),
    #[error(
        "decrypted audio has SHA-256 {got}, the recording's row says {want}: not archived (tampered or wrong object)"
    )]
    PlaintextDigest { got: String, want: String },
    #[error(
        "copy at {key:?} read back with SHA-256 {got}, {want} was sent: not recorded as archived"
    )]
    ReadBack {
        key: String,
        got: String,
        want: String,
    },
    #[error("recording the copy: {0}")]
    Db(#[from] DbError),
    #[error("decryption task failed: {0}")]
    Task(String),
}

impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> Self {
        CopyError::Storage(Box::new(e))
    }
}

/// Runs the archive job once.
pub async fn run_archive(job: &ArchiveJob<'_>) -> Result<ArchiveSummary, ArchiveError> {
    if job.batch_size == 0 {
        return Err(ArchiveError::InvalidOption {
            field: "batch_size",
            reason: "must be at least 1".into(),
        });
    }
    if job.concurrency == 0 {
        return Err(ArchiveError::InvalidOption {
            field: "concurrency",
            reason: "must be at least 1".into(),
        });
    }
    let started_at = callvault_store::db::now_micros();
    let span = tracing::info_span!("archive", tenant = job.tenant, connector = job.connector);
    let _guard = span.enter();

    let probe = job
        .destination
        .probe(&ProbeOptions {
            usage_max_objects: 0,
            ..ProbeOptions::default()
        })
        .await;
    let unreachable = (!probe.succeeded()).then(|| probe.condition_message());
    let mut archived = 0;
    let mut failures = Vec::new();
    if let Some(why) = &unreachable {
        tracing::warn!(error = %why, "archive destination unreachable; nothing copied");
    } else {
        let mut after = None;
        loop {
            let rows = job
                .db
                .recordings_to_archive_after(
                    job.tenant,
                    job.connector,
                    job.profiles,
                    after,
                    i64::from(job.batch_size),
                )
                .await?;
            let Some(last) = rows.last() else { break };
            // The cursor moves past failed rows so the run ends; the next run retries them.
            after = Some((last.start_time, last.id));
            let full = rows.len() == job.batch_size as usize;
            let results: Vec<(Uuid, Result<(), CopyError>)> =
                futures::stream::iter(rows.into_iter().map(|rec| async move {
                    let id = rec.id;
                    (id, archive_one(job, &rec).await)
                }))
                .buffer_unordered(job.concurrency)
                .collect()
                .await;
            for (id, result) in results {
                match result {
                    Ok(()) => archived += 1,
                    Err(e) => {
                        tracing::warn!(recording = %id, error = %e,
                            "recording not archived; the next run retries it");
                        failures.push(ArchiveFailure {
                            recording_id: id,
                            error: e.to_string(),
                        });
                    }
                }
            }
            if !full {
                break;
            }
        }
    }
    let counts = job
        .db
        .archive_counts(job.tenant, job.connector, job.profiles)
        .await?;
    let summary = ArchiveSummary {
        started_at,
        finished_at: callvault_store::db::now_micros(),
        unreachable,
        archived,
        failures,
        counts,
    };
    tracing::info!(
        archived = summary.archived,
        failed = summary.failures.len(),
        pending = summary.counts.pending,
        archived_total = summary.counts.archived,
        outcome = ?summary.outcome(),
        "archive run finished"
    );
    Ok(summary)
}

async fn archive_one(job: &ArchiveJob<'_>, rec: &Recording) -> Result<(), CopyError> {
    let source = job
        .sources
        .get(&rec.storage_target)
        .ok_or_else(|| CopyError::UnknownSource(rec.storage_target.clone()))?;
    let key = rec.object_key.as_deref().ok_or(CopyError::NoMedia)?;
    let envelope = Staged::download(source, key).await?;
    let (object_key, sha256) = match job.mode {
        ArchiveMode::Envelope => {
            let digest = envelope.sha256();
            envelope.upload_verified(job.destination, key).await?;
            (key.to_owned(), digest)
        }
        ArchiveMode::Plaintext(ring) => {
            let ogg = decrypt(envelope, ring.clone(), rec.status).await?;
            if let Some(want) = &rec.sha256
                && !want.eq_ignore_ascii_case(&ogg.sha256())
            {
                return Err(CopyError::PlaintextDigest {
                    got: ogg.sha256(),
                    want: want.clone(),
                });
            }
            let stem = key.strip_suffix(".cvr").unwrap_or(key);
            let ogg_key = format!("{stem}.ogg");
            let digest = ogg.sha256();
            ogg.upload_verified(job.destination, &ogg_key).await?;
            let sidecar = Staged::memory(Bytes::from(sidecar_json(rec, &digest)));
            sidecar
                .upload_verified(job.destination, &format!("{stem}.json"))
                .await?;
            (ogg_key, digest)
        }
    };
    job.db
        .mark_archived(
            job.tenant,
            rec.id,
            &ArchiveCopy {
                connector: job.connector.to_owned(),
                target: job.destination_name.to_owned(),
                object_key,
                sha256,
                archived_at: callvault_store::db::now_micros(),
            },
        )
        .await?;
    Ok(())
}

/// An object's bytes, held in memory or in a temporary file, with their SHA-256.
struct Staged {
    body: Body,
    len: u64,
    digest: [u8; 32],
}

enum Body {
    Memory(Bytes),
    File(tempfile::NamedTempFile),
}

impl Staged {
    fn memory(data: Bytes) -> Self {
        Staged {
            len: data.len() as u64,
            digest: Sha256::digest(&data).into(),
            body: Body::Memory(data),
        }
    }

    /// The SHA-256 in hex, as recorded.
    fn sha256(&self) -> String {
        hex::encode(self.digest)
    }

    /// Streams an object out of `storage`, hashing as it goes.
    async fn download(storage: &Storage, key: &str) -> Result<Self, CopyError> {
        let (info, mut body) = storage.get_stream(key).await?;
        let mut hash = Sha256::new();
        if info.size <= MEMORY_STAGE_MAX {
            let mut buf = Vec::with_capacity(info.size as usize);
            while let Some(chunk) = body.try_next().await? {
                hash.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            return Ok(Staged {
                len: buf.len() as u64,
                digest: hash.finalize().into(),
                body: Body::Memory(Bytes::from(buf)),
            });
        }
        let mut file = tempfile::NamedTempFile::new()?;
        let mut len = 0u64;
        while let Some(chunk) = body.try_next().await? {
            hash.update(&chunk);
            len += chunk.len() as u64;
            file.write_all(&chunk)?;
        }
        file.flush()?;
        Ok(Staged {
            body: Body::File(file),
            len,
            digest: hash.finalize().into(),
        })
    }

    /// Writes the object to `dest` under `key` and verifies the stored copy's digest: by the
    /// server as it received it where the destination does that, else by reading it back.
    async fn upload_verified(self, dest: &Storage, key: &str) -> Result<(), CopyError> {
        let put = match &self.body {
            Body::Memory(data) => dest.put_checked(key, data.clone(), &self.digest).await?,
            Body::File(file) => {
                dest.put_file_checked(key, file.path(), &self.digest)
                    .await?
            }
        };
        if put.check == DigestCheck::ByServer {
            return Ok(());
        }
        let (_, mut body) = dest.get_stream(key).await?;
        let mut hash = Sha256::new();
        while let Some(chunk) = body.try_next().await? {
            hash.update(&chunk);
        }
        let got = hex::encode(hash.finalize());
        if got != self.sha256() {
            return Err(CopyError::ReadBack {
                key: key.to_owned(),
                got,
                want: self.sha256(),
            });
        }
        Ok(())
    }
}

/// Decrypts a staged envelope (off the async threads: RSA and AES are CPU work). A recording
/// committed as incomplete after a crash has no final chunk; its authenticated prefix is
/// what was recorded.
async fn decrypt(
    envelope: Staged,
    ring: KeyRing,
    status: RecordingStatus,
) -> Result<Staged, CopyError> {
    tokio::task::spawn_blocking(move || -> Result<Staged, CopyError> {
        let incomplete = status == RecordingStatus::Incomplete;
        let run = |input: &mut dyn Read, out: &mut dyn Write| -> Result<[u8; 32], CopyError> {
            Ok(if incomplete {
                format::recover_truncated(input, &ring, out)?.plaintext_sha256
            } else {
                format::decrypt_stream(input, &ring, out)?.plaintext_sha256
            })
        };
        let mut input: Box<dyn Read> = match envelope.body {
            Body::Memory(data) => Box::new(std::io::Cursor::new(data)),
            Body::File(file) => Box::new(std::io::BufReader::new(file.reopen()?)),
        };
        // Plaintext is never larger than the envelope.
        if envelope.len <= MEMORY_STAGE_MAX {
            let mut out = Vec::with_capacity(envelope.len as usize);
            let digest = run(&mut input, &mut out)?;
            Ok(Staged {
                len: out.len() as u64,
                digest,
                body: Body::Memory(Bytes::from(out)),
            })
        } else {
            let mut file = tempfile::NamedTempFile::new()?;
            let digest = {
                let mut out = std::io::BufWriter::new(file.as_file_mut());
                let d = run(&mut input, &mut out)?;
                out.flush()?;
                d
            };
            let len = file.as_file_mut().seek(std::io::SeekFrom::End(0))?;
            Ok(Staged {
                body: Body::File(file),
                len,
                digest,
            })
        }
    })
    .await
    .map_err(|e| CopyError::Task(e.to_string()))?
}

/// The sidecar written next to a plaintext `.ogg`: the call's metadata as the portal shows it,
/// with the digests that let a reader check the audio and the row it came from.
pub fn sidecar_json(rec: &Recording, ogg_sha256: &str) -> String {
    let time = |us: i64| {
        jiff::Timestamp::from_microsecond(us)
            .map(|t| t.to_string())
            .ok()
    };
    let value = json!({
        "id": rec.id,
        "tenant": rec.tenant,
        "callId": rec.call_id,
        "sipCallId": rec.sip_call_id,
        "sessionId": rec.session_id,
        "segment": rec.segment,
        "startTime": time(rec.start_time),
        "answerTime": rec.answer_time.and_then(time),
        "endTime": rec.end_time.and_then(time),
        "durationMs": rec.duration_ms,
        "direction": rec.direction.as_str(),
        "callType": rec.call_type.as_str(),
        "calling": rec.calling,
        "called": rec.called,
        "answering": rec.answering,
        "onBehalfOf": rec.on_behalf_of,
        "transferredBy": rec.transferred_by,
        "transferredTo": rec.transferred_to,
        "queueName": rec.queue_name,
        "participants": rec.participants,
        "releaseCause": rec.release_cause.map(|c| c.as_str()),
        "ownerUserId": rec.owner_user_id,
        "ownerItem": rec.owner_item,
        "agents": rec.agents,
        "skills": rec.skills,
        "profile": rec.profile,
        "status": rec.status.as_str(),
        "codec": rec.codec,
        "channels": rec.channels,
        "audioSha256": ogg_sha256,
        "metadataDigest": rec.metadata_digest,
        "signature": rec.signature,
        "keyId": rec.key_id,
        "sourceStorageTarget": rec.storage_target,
        "sourceObjectKey": rec.object_key,
    });
    // A json! value always serialises.
    serde_json::to_string_pretty(&value).unwrap_or_default()
}
