//! The local, offline `whisper` engine: a CTranslate2 Whisper model run by faster-whisper in
//! supervised Python worker processes (the script is built into the binary).
//!
//! Why a worker and not a Rust binding: the binding (ct2rs) compiles CTranslate2 from C++
//! source into every build of the one `callvault` binary (minutes on two cores, a cmake
//! toolchain in every build), while faster-whisper ships CTranslate2 prebuilt, runs int8 on
//! CPU, and is what the OpenAI-compatible server runs too. The worker reads audio from a pipe,
//! never from a file, so no plaintext audio is written to disk.
//!
//! Supervision: a worker serves one request at a time; concurrent requests start more
//! workers (at most the job's concurrency). A worker that crashes, answers garbage or exceeds
//! its deadline is killed and dropped; the next request starts a fresh one. A model that
//! cannot load fails [`WhisperEngine::start`] at once, naming the path.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::audio::RATE;
use super::engine::{EngineError, EngineOutput, Request, SpeechEngine, Word, iso639};

const SCRIPT: &str = include_str!("whisper_worker.py");

/// How to start the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperOptions {
    /// Python interpreter with faster-whisper installed.
    pub python: PathBuf,
    /// CTranslate2 model directory (model.bin, tokenizer.json, vocabulary, config.json).
    pub model_path: PathBuf,
    /// CPU threads per worker (the job's concurrency multiplies it).
    pub threads: u32,
    /// How long a worker may take to load the model.
    pub startup_timeout: Duration,
}

impl WhisperOptions {
    pub fn new(python: impl Into<PathBuf>, model_path: impl Into<PathBuf>) -> Self {
        WhisperOptions {
            python: python.into(),
            model_path: model_path.into(),
            threads: 1,
            startup_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug)]
struct Worker {
    // Killed when dropped.
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The `whisper` engine.
#[derive(Debug)]
pub struct WhisperEngine {
    options: WhisperOptions,
    idle: Mutex<Vec<Worker>>,
    /// faster-whisper and CTranslate2 versions the first worker reported.
    versions: String,
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    versions: serde_json::Value,
}

#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    words: Vec<Word>,
}

async fn read_line(stdout: &mut BufReader<ChildStdout>) -> Result<String, EngineError> {
    let mut line = String::new();
    let n = stdout
        .read_line(&mut line)
        .await
        .map_err(|e| EngineError::Worker(format!("reading its answer: {e}")))?;
    if n == 0 {
        return Err(EngineError::Worker(
            "exited unexpectedly (see its messages in the job log)".into(),
        ));
    }
    Ok(line)
}

impl WhisperEngine {
    /// Starts the first worker, so a missing interpreter or model fails here, once.
    pub async fn start(options: WhisperOptions) -> Result<Self, EngineError> {
        if !options.model_path.exists() {
            return Err(EngineError::Config(format!(
                "whisper model path {} does not exist",
                options.model_path.display()
            )));
        }
        let (worker, versions) = Self::spawn(&options).await?;
        tracing::info!(model = %options.model_path.display(), %versions, "whisper worker ready");
        Ok(WhisperEngine {
            options,
            idle: Mutex::new(vec![worker]),
            versions,
        })
    }

    /// The faster-whisper and CTranslate2 versions in use.
    pub fn versions(&self) -> &str {
        &self.versions
    }

    async fn spawn(options: &WhisperOptions) -> Result<(Worker, String), EngineError> {
        let mut child = Command::new(&options.python)
            .arg("-u")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&options.model_path)
            .arg(options.threads.max(1).to_string())
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                EngineError::Config(format!(
                    "cannot start the whisper worker with {}: {e}",
                    options.python.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(EngineError::Worker("no pipes to the worker".into()));
        };
        let mut stdout = BufReader::new(stdout);
        let line = tokio::time::timeout(options.startup_timeout, read_line(&mut stdout))
            .await
            .map_err(|_| EngineError::Timeout(options.startup_timeout.as_secs()))??;
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|e| EngineError::Worker(format!("bad greeting {line:?}: {e}")))?;
        if !ready.ready {
            return Err(EngineError::Config(format!(
                "whisper model {} cannot be loaded: {}",
                options.model_path.display(),
                ready.error.unwrap_or_default()
            )));
        }
        Ok((
            Worker {
                _child: child,
                stdin,
                stdout,
            },
            ready.versions.to_string(),
        ))
    }

    /// Outer error: the worker is out of step or gone. Inner error: it reported a failure
    /// for this request and can serve the next one.
    async fn ask(
        worker: &mut Worker,
        samples: &[i16],
        request: &Request,
    ) -> Result<Result<EngineOutput, String>, EngineError> {
        let hotwords = (!request.phrase_hints.is_empty()).then(|| request.phrase_hints.join(", "));
        let header = serde_json::json!({
            "samples": samples.len(),
            "language": iso639(&request.language),
            "hotwords": hotwords,
        });
        let mut msg = header.to_string().into_bytes();
        msg.push(b'\n');
        msg.reserve(samples.len() * 2);
        for s in samples {
            msg.extend_from_slice(&s.to_le_bytes());
        }
        let io = |e: std::io::Error| EngineError::Worker(format!("sending audio: {e}"));
        worker.stdin.write_all(&msg).await.map_err(io)?;
        worker.stdin.flush().await.map_err(io)?;
        let line = read_line(&mut worker.stdout).await?;
        let answer: Answer = serde_json::from_str(&line)
            .map_err(|e| EngineError::Protocol(format!("{line:?}: {e}")))?;
        if !answer.ok {
            return Ok(Err(answer.error.unwrap_or_default()));
        }
        Ok(Ok(EngineOutput {
            text: answer.text,
            words: answer.words,
        }))
    }
}

impl SpeechEngine for WhisperEngine {
    fn name(&self) -> &'static str {
        "whisper"
    }

    fn max_seconds(&self) -> u32 {
        // faster-whisper windows long audio itself; pieces bound the memory of one request.
        600
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        request: &Request,
    ) -> Result<EngineOutput, EngineError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut worker = match idle {
            Some(w) => w,
            None => Self::spawn(&self.options).await?.0,
        };
        // Generous: tiny models run at a tenth of real time; a stuck worker must still end.
        let secs = 60 + 3 * samples.len() as u64 / u64::from(RATE);
        let answer = tokio::time::timeout(
            Duration::from_secs(secs),
            Self::ask(&mut worker, samples, request),
        )
        .await;
        match answer {
            // Answered (well or with an error): still in step, kept for the next request.
            Ok(Ok(result)) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(worker);
                }
                result.map_err(EngineError::Worker)
            }
            // Gone, out of step or stuck: dropped, which kills it.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EngineError::Timeout(secs)),
        }
    }
}
