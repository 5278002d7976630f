//! The transcription job of one SpeechJob: selects recordings by the job's filter, decrypts
//! each with the key ring, splits its two channels, transcribes each party's channel with the
//! configured engine, and stores one transcript per channel with word timings.
//!
//! Bookkeeping (store `speech_job_*`): every attempt is recorded per recording, complete or
//! failed; failed ones are retried by the next run. `Incremental` reads only past the job's
//! watermark (plus its failures); `Backfill` transcribes every matching recording again. The
//! watermark is saved at the end of a run and never passes a call still being recorded, so a
//! run killed midway loses nothing and redoes at most the recordings it had in flight.

pub mod audio;
pub mod engine;
pub mod google;
pub mod openai;
pub mod whisper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use callvault_config::{DirectionFilter, EngineKind, TranscribeMode, ValidTranscribeJobConfig};
use callvault_store::db::{
    Db, DbError, Direction, Recording, RecordingStatus, SpeechCounts, SpeechPosition,
    SpeechSelection, Transcript, now_micros,
};
use callvault_store::format;
use callvault_store::keys::KeyRing;
use callvault_store::objstore::Storage;
use futures::StreamExt;
use serde_json::json;
use tracing::Instrument;

use crate::vault::{self, SetupError};

pub use engine::{EngineError, EngineOutput, Request, SpeechEngine, Word, word_error_rate};
pub use openai::{OpenAiEngine, OpenAiOptions};
pub use whisper::{WhisperEngine, WhisperOptions};

/// Field manager of the status the job writes to its SpeechJob.
pub const FIELD_MANAGER: &str = "callvault-job-transcribe";
/// Environment variable naming the Python interpreter of the whisper worker (the image's).
pub const WHISPER_PYTHON_ENV: &str = "CALLVAULT_WHISPER_PYTHON";

/// Recordings read per query.
const BATCH: i64 = 64;

/// What one run works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub tenant: String,
    /// The SpeechJob's name.
    pub job: String,
    pub language: String,
    pub phrase_hints: Vec<String>,
    pub selection: SpeechSelection,
    /// `true`: only recordings this job has not transcribed (Incremental).
    pub incremental: bool,
    /// Recordings transcribed at once (at least 1).
    pub concurrency: usize,
}

/// One recording a run could not transcribe (retried by the next run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscribeFailure {
    pub recording_id: uuid::Uuid,
    pub error: String,
}

/// What a run did, and the job's counters after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscribeSummary {
    /// Start of the run (µs).
    pub run_time: i64,
    /// Recordings transcribed by this run.
    pub transcribed: u64,
    /// Recordings this run failed on.
    pub failures: Vec<TranscribeFailure>,
    /// Seconds of audio (all channels) transcribed by this run.
    pub audio_seconds: f64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The job's counters over its selection, after the run.
    pub counts: SpeechCounts,
    /// Start of the latest run without failures (µs), this one included.
    pub last_success_time: Option<i64>,
}

impl TranscribeSummary {
    /// The SpeechJob `status` fields this job owns, for a server-side apply with
    /// [`FIELD_MANAGER`]: `{"status": {processed, failed, pending, lastRunTime,
    /// lastSuccessfulRunTime}}`.
    pub fn status_patch(&self) -> serde_json::Value {
        let mut status = json!({
            "processed": self.counts.processed,
            "failed": self.counts.failed,
            "pending": self.counts.pending,
            "lastRunTime": rfc3339(self.run_time),
        });
        if let Some(t) = self.last_success_time {
            status["lastSuccessfulRunTime"] = json!(rfc3339(t));
        }
        json!({ "status": status })
    }
}

fn rfc3339(micros: i64) -> String {
    callvault_config::Timestamp::from_microsecond(micros)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Errors that stop a run (a recording's own problems are counted as failures instead).
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("database: {0}")]
    Db(#[from] DbError),
    #[error("speech engine: {0}")]
    Engine(#[from] EngineError),
    #[error("invalid job: {0}")]
    Invalid(String),
}

/// The engines a job can be configured with.
#[derive(Debug)]
pub enum Engine {
    Whisper(WhisperEngine),
    OpenAi(OpenAiEngine),
}

impl SpeechEngine for Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Whisper(e) => e.name(),
            Engine::OpenAi(e) => e.name(),
        }
    }
    fn max_seconds(&self) -> u32 {
        match self {
            Engine::Whisper(e) => e.max_seconds(),
            Engine::OpenAi(e) => e.max_seconds(),
        }
    }
    async fn transcribe(
        &self,
        samples: &[i16],
        request: &Request,
    ) -> Result<EngineOutput, EngineError> {
        match self {
            Engine::Whisper(e) => e.transcribe(samples, request).await,
            Engine::OpenAi(e) => e.transcribe(samples, request).await,
        }
    }
}

/// The job spec of a validated configuration (pure).
pub fn job_spec(config: &ValidTranscribeJobConfig) -> JobSpec {
    let c = &config.config;
    let f = &c.filter;
    JobSpec {
        tenant: c.tenant.clone(),
        job: c.speech_job.clone(),
        language: c.language.clone(),
        phrase_hints: c.phrase_hints.clone(),
        selection: SpeechSelection {
            profiles: f.recording_profiles.clone(),
            groups: f.groups.clone(),
            min_duration_ms: f.min_duration_seconds.map(|s| i64::from(s) * 1000),
            max_duration_ms: f.max_duration_seconds.map(|s| i64::from(s) * 1000),
            from: config.from.map(|t| t.as_microsecond()),
            to: config.to.map(|t| t.as_microsecond()),
            direction: match f.direction {
                DirectionFilter::Any => None,
                DirectionFilter::Inbound => Some(Direction::Inbound),
                DirectionFilter::Outbound => Some(Direction::Outbound),
                DirectionFilter::Internal => Some(Direction::Internal),
            },
        },
        incremental: c.mode == TranscribeMode::Incremental,
        concurrency: usize::try_from(c.concurrency).unwrap_or(1).max(1),
    }
}

/// Builds the configured engine. `whisper` runs its worker with the interpreter named by
/// [`WHISPER_PYTHON_ENV`] (default `python3`).
pub async fn build_engine(config: &ValidTranscribeJobConfig) -> Result<Engine, TranscribeError> {
    let e = &config.config.engine;
    match e.kind {
        EngineKind::Whisper => {
            let model = e.model_path.clone().ok_or_else(|| {
                TranscribeError::Invalid("engine.modelPath is required for whisper".into())
            })?;
            let python = std::env::var_os(WHISPER_PYTHON_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("python3"));
            Ok(Engine::Whisper(
                WhisperEngine::start(WhisperOptions::new(python, model)).await?,
            ))
        }
        EngineKind::Openai => {
            let key = e
                .api_key_file
                .as_deref()
                .map(|p| vault::read_secret_file(p, "the engine API key"))
                .transpose()?;
            Ok(Engine::OpenAi(OpenAiEngine::new(OpenAiOptions::new(
                e.endpoint.as_deref(),
                e.model.as_deref(),
                key.map(|k| k.to_string()),
            ))?))
        }
        EngineKind::Google => Err(TranscribeError::Invalid(
            "engine google: requests are built and parsed, but service-account sign-in is not \
             implemented yet, so this build cannot call Speech-to-Text"
                .into(),
        )),
    }
}

/// `callvault job transcribe`: everything from the validated configuration file. Returns the
/// run's summary; the caller writes [`TranscribeSummary::status_patch`] to the SpeechJob.
pub async fn run(config: &ValidTranscribeJobConfig) -> Result<TranscribeSummary, TranscribeError> {
    let c = &config.config;
    let sources = vault::open_bindings(&config.sources)?;
    let ring = vault::load_key_ring(&c.key_ring)?;
    let engine = build_engine(config).await?;
    let db = vault::connect_db(&c.database_url_file).await?;
    let summary = transcribe_job(&db, &sources, &ring, &engine, &job_spec(config)).await;
    db.close().await;
    summary
}

/// One run of a SpeechJob over the vault. `sources` maps storage target names (as stamped on
/// recordings) to opened targets.
pub async fn transcribe_job<E: SpeechEngine>(
    db: &Db,
    sources: &BTreeMap<String, Storage>,
    ring: &KeyRing,
    engine: &E,
    spec: &JobSpec,
) -> Result<TranscribeSummary, TranscribeError> {
    let span = tracing::info_span!("transcribe", tenant = %spec.tenant, job = %spec.job);
    run_job(db, sources, ring, engine, spec)
        .instrument(span)
        .await
}

async fn run_job<E: SpeechEngine>(
    db: &Db,
    sources: &BTreeMap<String, Storage>,
    ring: &KeyRing,
    engine: &E,
    spec: &JobSpec,
) -> Result<TranscribeSummary, TranscribeError> {
    let started = Instant::now();
    let run_time = now_micros();
    let state = db.speech_job_state(&spec.tenant, &spec.job).await?;
    // Read before selecting: a call that starts later cannot sort before what we read.
    let open = db.earliest_open_recording(&spec.tenant).await?;
    let request = Request {
        language: spec.language.clone(),
        phrase_hints: spec.phrase_hints.clone(),
    };
    let mut summary = TranscribeSummary {
        run_time,
        ..TranscribeSummary::default()
    };
    let mut watermark = state.watermark;
    let mut cursor: Option<SpeechPosition> = None;
    loop {
        let batch = db
            .speech_candidates(
                &spec.tenant,
                &spec.job,
                &spec.selection,
                spec.incremental,
                cursor,
                BATCH,
            )
            .await?;
        let Some(last) = batch.last() else { break };
        cursor = Some((last.start_time, last.id));
        let results: Vec<(SpeechPosition, Result<f64, String>)> =
            futures::stream::iter(batch.iter().map(|rec| async {
                let pos = (rec.start_time, rec.id);
                let outcome = transcribe_recording(db, sources, ring, engine, &request, spec, rec)
                    .await
                    .map_err(|e| e.to_string());
                (pos, outcome)
            }))
            .buffer_unordered(spec.concurrency.max(1))
            .collect()
            .await;
        for (pos, outcome) in results {
            match outcome {
                Ok(seconds) => {
                    db.record_speech_result(&spec.tenant, &spec.job, pos.1, None)
                        .await?;
                    summary.transcribed += 1;
                    summary.audio_seconds += seconds;
                }
                Err(error) => {
                    tracing::warn!(recording = %pos.1, %error, "transcription failed");
                    db.record_speech_result(&spec.tenant, &spec.job, pos.1, Some(&error))
                        .await?;
                    summary.failures.push(TranscribeFailure {
                        recording_id: pos.1,
                        error,
                    });
                }
            }
            // Settled (failures are retried from their record): the watermark may pass it,
            // unless a call still being recorded sorts before it.
            if open.is_none_or(|o| pos < o) && watermark.is_none_or(|w| pos > w) {
                watermark = Some(pos);
            }
        }
    }
    let succeeded = summary.failures.is_empty();
    db.finish_speech_run(&spec.tenant, &spec.job, watermark, run_time, succeeded)
        .await?;
    summary.counts = db
        .speech_counts(&spec.tenant, &spec.job, &spec.selection)
        .await?;
    summary.last_success_time = if succeeded {
        Some(run_time)
    } else {
        state.last_success_time
    };
    summary.elapsed = started.elapsed();
    tracing::info!(
        transcribed = summary.transcribed,
        failed = summary.failures.len(),
        audio_seconds = summary.audio_seconds,
        processed = summary.counts.processed,
        pending = summary.counts.pending,
        "transcription run finished"
    );
    Ok(summary)
}

/// Why one recording could not be transcribed.
#[derive(Debug, thiserror::Error)]
enum RecordingError {
    #[error("storage target {0:?} is not bound into this job")]
    UnknownTarget(String),
    #[error("recording has no media object")]
    NoMedia,
    #[error("fetching the media: {0}")]
    Fetch(String),
    #[error("decrypting: {0}")]
    Decrypt(#[from] format::FormatError),
    #[error("the decrypted media does not match the recording's SHA-256")]
    DigestMismatch,
    #[error("reading the audio: {0}")]
    Audio(#[from] audio::AudioError),
    #[error("channel {channel}: {source}")]
    Engine { channel: usize, source: EngineError },
    #[error("storing the transcript: {0}")]
    Store(#[from] DbError),
    #[error("decoder task: {0}")]
    Task(String),
}

/// Transcribes every channel of one recording and stores the transcripts. Returns the seconds
/// of audio transcribed.
async fn transcribe_recording<E: SpeechEngine>(
    db: &Db,
    sources: &BTreeMap<String, Storage>,
    ring: &KeyRing,
    engine: &E,
    request: &Request,
    spec: &JobSpec,
    rec: &Recording,
) -> Result<f64, RecordingError> {
    let storage = sources
        .get(&rec.storage_target)
        .ok_or_else(|| RecordingError::UnknownTarget(rec.storage_target.clone()))?;
    let key = rec.object_key.as_deref().ok_or(RecordingError::NoMedia)?;
    let object = storage
        .get(key)
        .await
        .map_err(|e| RecordingError::Fetch(e.to_string()))?;
    let expected = rec.sha256.clone();
    let incomplete = rec.status == RecordingStatus::Incomplete;
    let ring = ring.clone();
    // Decryption and Opus decoding are CPU work: off the async threads.
    let pcm = tokio::task::spawn_blocking(move || -> Result<_, RecordingError> {
        let mut plain = Vec::with_capacity(object.len());
        let mut input = &object[..];
        // A recording committed as incomplete after a crash has no final chunk: its
        // authenticated prefix is what was recorded.
        let digest = if incomplete {
            format::recover_truncated(&mut input, &ring, &mut plain)?.plaintext_sha256
        } else {
            format::decrypt_stream(&mut input, &ring, &mut plain)?.plaintext_sha256
        };
        if expected.is_some_and(|e| e != hex_lower(&digest)) {
            return Err(RecordingError::DigestMismatch);
        }
        Ok(audio::decode_ogg_opus(&plain)?)
    })
    .await
    .map_err(|e| RecordingError::Task(e.to_string()))??;

    let max = engine.max_seconds() as usize * audio::RATE as usize;
    let mut transcripts = Vec::with_capacity(pcm.channels.len());
    for (channel, samples) in pcm.channels.iter().enumerate() {
        let mut text: Vec<String> = Vec::new();
        let mut words: Vec<Word> = Vec::new();
        for piece in audio::speech_pieces(samples, max) {
            let (start, end) = (piece.start, piece.end);
            let out = engine
                .transcribe(&samples[start..end], request)
                .await
                .map_err(|source| RecordingError::Engine { channel, source })?;
            let offset = start as f64 / f64::from(audio::RATE);
            let length = (end - start) as f64 / f64::from(audio::RATE);
            // Engines round timestamps (Whisper to its 20 ms tokens, segment ends further):
            // a word never lies outside the piece it was heard in.
            words.extend(out.words.into_iter().map(|w| Word {
                w: w.w,
                start: offset + w.start.clamp(0.0, length),
                end: offset + w.end.clamp(0.0, length),
            }));
            if !out.text.is_empty() {
                text.push(out.text);
            }
        }
        transcripts.push(Transcript {
            recording_id: rec.id,
            channel: channel as i64,
            engine: engine.name().to_owned(),
            language: spec.language.clone(),
            body: text.join(" "),
            words: serde_json::to_string(&words).unwrap_or_else(|_| "[]".into()),
            created_at: now_micros(),
        });
    }
    for t in &transcripts {
        db.put_transcript(&spec.tenant, t).await?;
    }
    tracing::debug!(recording = %rec.id, channels = transcripts.len(), "transcribed");
    Ok(pcm.seconds() * pcm.channels.len() as f64)
}

fn hex_lower(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
