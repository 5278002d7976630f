//! Configuration of the scheduled jobs (`callvault job archive|transcribe`): rendered by the
//! operator from a Connector or SpeechJob (and the StorageTargets they name) into a ConfigMap,
//! or built in-process by `callvault standalone`.
//!
//! The retention job needs no file of its own: it reads the recorder configuration of its
//! RecordingProfile. Secrets are never inline: database URL, storage credentials, private keys,
//! engine keys and the SMTP password are read from the files named here.

use std::path::{Path, PathBuf};

use callvault_store::objstore::{StorageConfig, ValidatedConfig};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::problem::{Invalid, Problems};
use crate::recorder::{check_path, check_storage, is_dns_label, is_dns_subdomain};

/// Where the operator mounts a job's configuration file.
pub const DEFAULT_JOB_CONFIG_PATH: &str = "/etc/callvault/job.yaml";
/// The environment variable a job pod finds its namespace in (the operator sets it from the
/// downward API); a job reports into its resource's status only when it is set.
pub const JOB_NAMESPACE_ENV: &str = "CALLVAULT_POD_NAMESPACE";

/// A StorageTarget bound into a job: its name (as stamped on recordings and archive copies),
/// its spec, and where its credentials Secret is mounted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageBinding {
    /// The StorageTarget's name.
    pub name: String,
    /// The StorageTarget's spec.
    pub storage: StorageConfig,
    /// Directory of the mounted credentials Secret (one file per key); absent when the target
    /// needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<PathBuf>,
}

/// A [`StorageBinding`] whose spec passed validation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidStorageBinding {
    /// The binding as given.
    pub binding: StorageBinding,
    /// The validated location.
    pub storage: ValidatedConfig,
}

/// Private keys a job decrypts with: a directory with one `<key-id>.pem` (PKCS#8) per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRingConfig {
    /// Directory of the mounted private keys Secret.
    pub dir: PathBuf,
    /// File holding the passphrase of protected keys; absent when the keys are not protected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
}

/// How alarms are emailed. Absent: alarms are stored and emitted as Events only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SmtpConfig {
    /// SMTP server host name or address.
    pub host: String,
    /// SMTP port (587 submission with STARTTLS, 465 implicit TLS, 25 relay).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Transport security.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// Sender address.
    pub from: String,
    /// Recipients; each alarm goes to all of them.
    pub to: Vec<String>,
    /// File holding the user name, when the server requires authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<PathBuf>,
    /// File holding the password (with `usernameFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

fn default_smtp_port() -> u16 {
    587
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmtpSecurity {
    /// Upgrade with STARTTLS; refuse a server that does not offer it.
    #[default]
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text, for a relay on the same host or a trusted network only.
    None,
}

/// What `callvault job archive --connector NAME` runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveJobConfig {
    /// Tenant: the Connector's namespace (`default` standalone).
    pub tenant: String,
    /// The Connector's name, recorded on each archive copy.
    pub connector: String,
    /// File holding the database URL.
    pub database_url_file: PathBuf,
    /// RecordingProfiles whose recordings are archived; empty means all of the tenant.
    #[serde(default)]
    pub recording_profiles: Vec<String>,
    /// The StorageTargets primary copies are read from, by name (each recording names its own).
    pub sources: Vec<StorageBinding>,
    /// The Connector's destination StorageTarget.
    pub destination: StorageBinding,
    /// Copy the envelope exactly as stored (true) or write decrypted `.ogg` plus a JSON sidecar
    /// (false, which needs `keyRing`).
    #[serde(default = "yes")]
    pub encrypt: bool,
    /// Private keys for `encrypt: false`; must be absent with `encrypt: true` so the key is
    /// never mounted where it is not needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ring: Option<KeyRingConfig>,
    /// Recordings read per database query.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Copies in flight at once.
    #[serde(default = "default_archive_concurrency")]
    pub concurrency: u32,
    /// Alarm emails (connector failing, storage unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
}

fn yes() -> bool {
    true
}
fn default_batch_size() -> u32 {
    500
}
fn default_archive_concurrency() -> u32 {
    4
}

/// An [`ArchiveJobConfig`] that passed [`ArchiveJobConfig::validate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidArchiveJobConfig {
    /// The configuration as given.
    pub config: ArchiveJobConfig,
    /// The sources, in the given order.
    pub sources: Vec<ValidStorageBinding>,
    /// The destination.
    pub destination: ValidStorageBinding,
}

/// What `callvault job space-cleanup --storage-target NAME` runs with: a filesystem
/// StorageTarget and its `spec.spaceCleanup` limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpaceCleanupJobConfig {
    /// Tenant: the StorageTarget's namespace (`default` standalone).
    pub tenant: String,
    /// File holding the database URL.
    pub database_url_file: PathBuf,
    /// The StorageTarget (filesystem only) recordings are deleted from.
    pub storage_target: StorageBinding,
    /// Bytes the files under the target's directory may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_used_bytes: Option<u64>,
    /// Percentage of the volume that must stay free (1-99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_percent: Option<u8>,
    /// Recordings read per database query.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Alarm emails (not enough storage space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
}

/// A [`SpaceCleanupJobConfig`] that passed [`SpaceCleanupJobConfig::validate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidSpaceCleanupJobConfig {
    /// The configuration as given.
    pub config: SpaceCleanupJobConfig,
    /// The target.
    pub storage_target: ValidStorageBinding,
    /// The directory the target's objects are under (`path`, then `prefix`): what is measured.
    pub root: PathBuf,
}

impl SpaceCleanupJobConfig {
    /// Parses YAML or JSON.
    pub fn parse(text: &str) -> Result<Self, JobConfigError> {
        serde_yaml::from_str(text).map_err(|e| JobConfigError::Parse {
            what: "a space cleanup job configuration",
            message: e.to_string(),
        })
    }

    /// Reads, parses and validates the file the operator mounted.
    pub fn load(path: &Path) -> Result<ValidSpaceCleanupJobConfig, JobConfigError> {
        Ok(Self::parse(&read(path)?)?.validate()?)
    }

    /// The one place the space cleanup job configuration is checked. Returns every problem
    /// found.
    pub fn validate(&self) -> Result<ValidSpaceCleanupJobConfig, Invalid> {
        let mut p = Problems::default();
        check_scope(
            &mut p,
            &self.tenant,
            "storageTarget.name",
            &self.storage_target.name,
        );
        check_path(&mut p, "databaseUrlFile", Some(&self.database_url_file));
        let target = check_binding(&mut p, "storageTarget", &self.storage_target);
        let root = target.as_ref().and_then(|t| match &t.storage.backend {
            callvault_store::objstore::Backend::Filesystem { path } => {
                Some(match &t.storage.prefix {
                    Some(prefix) => path.join(prefix),
                    None => path.clone(),
                })
            }
            _ => None,
        });
        if target.is_some() && root.is_none() {
            p.add(
                "storageTarget.storage.type",
                "must be filesystem: only a directory fills up",
            );
        }
        p.check(
            self.max_used_bytes.is_some() || self.min_free_percent.is_some(),
            "maxUsedBytes",
            "set maxUsedBytes, minFreePercent or both",
        );
        p.check(
            self.max_used_bytes != Some(0),
            "maxUsedBytes",
            "must be at least 1",
        );
        p.check(
            self.min_free_percent.is_none_or(|v| (1..=99).contains(&v)),
            "minFreePercent",
            "must be 1 to 99",
        );
        p.check(
            (1..=10_000).contains(&self.batch_size),
            "batchSize",
            "must be 1 to 10000",
        );
        if let Some(smtp) = &self.smtp {
            smtp.check(&mut p, "smtp");
        }
        match (target, root) {
            (Some(storage_target), Some(root)) => p.into_result(ValidSpaceCleanupJobConfig {
                config: self.clone(),
                storage_target,
                root,
            }),
            _ => Err(Invalid { problems: p.0 }),
        }
    }
}

/// What `callvault job transcribe --speech-job NAME` runs with (the SpeechJob's spec, with its
/// Secrets and volumes replaced by the paths they are mounted at).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscribeJobConfig {
    /// Tenant: the SpeechJob's namespace (`default` standalone).
    pub tenant: String,
    /// The SpeechJob's name, recorded on each transcript and its watermark.
    pub speech_job: String,
    /// File holding the database URL.
    pub database_url_file: PathBuf,
    /// The StorageTargets recordings are read from, by name.
    pub sources: Vec<StorageBinding>,
    /// Private keys to decrypt recordings with (transcription needs the audio).
    pub key_ring: KeyRingConfig,
    /// The speech-to-text engine.
    pub engine: EngineConfig,
    /// Spoken language, BCP 47.
    #[serde(default = "default_language")]
    pub language: String,
    /// Words and phrases the engine should expect.
    #[serde(default)]
    pub phrase_hints: Vec<String>,
    /// Which recordings are transcribed.
    #[serde(default)]
    pub filter: SpeechFilterConfig,
    /// Only recordings not yet transcribed by this job, or all matching ones again.
    #[serde(default)]
    pub mode: TranscribeMode,
    /// Recordings transcribed in parallel.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_language() -> String {
    "en-US".to_owned()
}
fn default_concurrency() -> u32 {
    2
}

/// Engine settings; which fields apply depends on `type` (as on the SpeechJob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineConfig {
    /// The engine.
    #[serde(rename = "type")]
    pub kind: EngineKind,
    /// Model name (`whisper-1`, `latest_long`, `base.en`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model directory or file inside the pod (whisper; required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<PathBuf>,
    /// Service base URL (openai, google).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// File holding the API key (openai; the Secret's `apiKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// File holding the service account JSON (google; the Secret's `serviceAccountJson`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_json_file: Option<PathBuf>,
}

/// Speech-to-text engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Local CTranslate2 Whisper model, offline.
    Whisper,
    /// An OpenAI-compatible `/v1/audio/transcriptions`.
    Openai,
    /// Google Cloud Speech-to-Text v1.
    Google,
}

/// Transcription mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TranscribeMode {
    /// Only recordings this job has not transcribed yet.
    #[default]
    Incremental,
    /// Every matching recording, including those already transcribed.
    Backfill,
}

/// Which recordings a SpeechJob transcribes; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeechFilterConfig {
    /// RecordingProfiles whose recordings are transcribed.
    #[serde(default)]
    pub recording_profiles: Vec<String>,
    /// Groups whose members' recordings are transcribed.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Shortest call, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration_seconds: Option<u32>,
    /// Longest call, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u32>,
    /// Calls that started at or after this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Calls that started before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Call direction.
    #[serde(default)]
    pub direction: DirectionFilter,
}

/// Call direction filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectionFilter {
    /// Every direction.
    #[default]
    Any,
    /// Calls received.
    Inbound,
    /// Calls placed.
    Outbound,
    /// Calls between users.
    Internal,
}

/// A [`TranscribeJobConfig`] that passed [`TranscribeJobConfig::validate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidTranscribeJobConfig {
    /// The configuration as given.
    pub config: TranscribeJobConfig,
    /// The sources, in the given order.
    pub sources: Vec<ValidStorageBinding>,
    /// `filter.from`, parsed.
    pub from: Option<Timestamp>,
    /// `filter.to`, parsed.
    pub to: Option<Timestamp>,
}

/// What `callvault job assurance --profile NAME` runs with: the test call to place through the
/// RecordingProfile's own SIP entry point, and what the check needs to find, verify and
/// decrypt its recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssuranceJobConfig {
    /// Tenant: the profile's namespace (`default` standalone).
    pub tenant: String,
    /// The RecordingProfile under test.
    pub profile: String,
    /// File holding the database URL.
    pub database_url_file: PathBuf,
    /// Where the test call goes: the profile's SIP Service (cluster) or listener (standalone),
    /// e.g. `sip:agents-recorder-sip.bank.svc:5060`.
    pub sip_uri: String,
    /// `udp` or `tcp`: one the profile's recorders listen on.
    pub transport: String,
    /// Calling number of the test call.
    pub from_number: String,
    /// Called number of the test call.
    pub to_number: String,
    /// Seconds of known audio on each channel.
    pub duration_seconds: u32,
    /// Seconds to wait, after the call ends, for its recording to be committed.
    pub commit_timeout_seconds: u32,
    /// Days a test recording is kept.
    pub retention_days: u32,
    /// The profile's StorageTarget, where its recordings are stored.
    pub storage: StorageBinding,
    /// Private keys to decrypt the test recording with (the recorder holds only the public key).
    pub key_ring: KeyRingConfig,
    /// Alarm emails (recording assurance failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
}

/// An [`AssuranceJobConfig`] that passed [`AssuranceJobConfig::validate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ValidAssuranceJobConfig {
    /// The configuration as given.
    pub config: AssuranceJobConfig,
    /// The profile's storage.
    pub storage: ValidStorageBinding,
}

impl AssuranceJobConfig {
    /// Parses YAML or JSON.
    pub fn parse(text: &str) -> Result<Self, JobConfigError> {
        serde_yaml::from_str(text).map_err(|e| JobConfigError::Parse {
            what: "a recording assurance job configuration",
            message: e.to_string(),
        })
    }

    /// Reads, parses and validates the file the operator mounted.
    pub fn load(path: &Path) -> Result<ValidAssuranceJobConfig, JobConfigError> {
        Ok(Self::parse(&read(path)?)?.validate()?)
    }

    /// The one place the assurance job configuration is checked (the CRD's ranges again, for
    /// configurations built without the API server). Returns every problem found.
    pub fn validate(&self) -> Result<ValidAssuranceJobConfig, Invalid> {
        let mut p = Problems::default();
        check_scope(&mut p, &self.tenant, "profile", &self.profile);
        check_path(&mut p, "databaseUrlFile", Some(&self.database_url_file));
        p.check(
            self.sip_uri.starts_with("sip:")
                && self.sip_uri.len() > 4
                && !self.sip_uri.contains(char::is_whitespace),
            "sipUri",
            format!("{:?} is not a sip: URI", self.sip_uri),
        );
        p.check(
            matches!(self.transport.as_str(), "udp" | "tcp"),
            "transport",
            "must be udp or tcp",
        );
        for (field, number) in [
            ("fromNumber", &self.from_number),
            ("toNumber", &self.to_number),
        ] {
            p.check(
                (1..=64).contains(&number.len())
                    && number
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+*#.:@_-".contains(c)),
                field,
                format!("{number:?} is not a number or sip: URI"),
            );
        }
        p.check(
            (3..=60).contains(&self.duration_seconds),
            "durationSeconds",
            "must be 3 to 60",
        );
        p.check(
            (10..=3600).contains(&self.commit_timeout_seconds),
            "commitTimeoutSeconds",
            "must be 10 to 3600",
        );
        p.check(
            (1..=365).contains(&self.retention_days),
            "retentionDays",
            "must be 1 to 365",
        );
        let storage = check_binding(&mut p, "storage", &self.storage);
        check_key_ring(&mut p, "keyRing", &self.key_ring);
        if let Some(smtp) = &self.smtp {
            smtp.check(&mut p, "smtp");
        }
        match storage {
            Some(storage) => p.into_result(ValidAssuranceJobConfig {
                config: self.clone(),
                storage,
            }),
            None => Err(Invalid { problems: p.0 }),
        }
    }
}

/// Why a job configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JobConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not such a configuration.
    #[error("not {what}: {message}")]
    Parse {
        /// What was expected.
        what: &'static str,
        /// The parser's message (with line and column).
        message: String,
    },
    /// It parsed but some settings are wrong.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

fn read(path: &Path) -> Result<String, JobConfigError> {
    std::fs::read_to_string(path).map_err(|source| JobConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl ArchiveJobConfig {
    /// Parses YAML or JSON.
    pub fn parse(text: &str) -> Result<Self, JobConfigError> {
        serde_yaml::from_str(text).map_err(|e| JobConfigError::Parse {
            what: "an archive job configuration",
            message: e.to_string(),
        })
    }

    /// Reads, parses and validates the file the operator mounted (or standalone wrote).
    pub fn load(path: &Path) -> Result<ValidArchiveJobConfig, JobConfigError> {
        Ok(Self::parse(&read(path)?)?.validate()?)
    }

    /// The one place the archive job configuration is checked. Returns every problem found.
    pub fn validate(&self) -> Result<ValidArchiveJobConfig, Invalid> {
        let mut p = Problems::default();
        check_scope(&mut p, &self.tenant, "connector", &self.connector);
        check_path(&mut p, "databaseUrlFile", Some(&self.database_url_file));
        check_names(&mut p, "recordingProfiles", &self.recording_profiles);
        let sources = check_sources(&mut p, &self.sources);
        let destination = check_binding(&mut p, "destination", &self.destination);
        if self.sources.iter().any(|s| s.name == self.destination.name) {
            p.add(
                "destination.name",
                format!(
                    "{:?} is also a source: archive copies must go to another StorageTarget",
                    self.destination.name
                ),
            );
        }
        match (&self.key_ring, self.encrypt) {
            (None, false) => p.add(
                "keyRing",
                "required when encrypt is false: plaintext archives are decrypted with a granted key",
            ),
            (Some(_), true) => p.add(
                "keyRing",
                "must be absent when encrypt is true: the envelope is copied as stored, so no private key is mounted",
            ),
            (Some(ring), false) => check_key_ring(&mut p, "keyRing", ring),
            (None, true) => {}
        }
        p.check(
            (1..=10_000).contains(&self.batch_size),
            "batchSize",
            "must be 1 to 10000",
        );
        p.check(
            (1..=64).contains(&self.concurrency),
            "concurrency",
            "must be 1 to 64",
        );
        if let Some(smtp) = &self.smtp {
            smtp.check(&mut p, "smtp");
        }
        match (sources, destination) {
            (Some(sources), Some(destination)) => p.into_result(ValidArchiveJobConfig {
                config: self.clone(),
                sources,
                destination,
            }),
            _ => Err(Invalid { problems: p.0 }),
        }
    }
}

impl TranscribeJobConfig {
    /// Parses YAML or JSON.
    pub fn parse(text: &str) -> Result<Self, JobConfigError> {
        serde_yaml::from_str(text).map_err(|e| JobConfigError::Parse {
            what: "a transcription job configuration",
            message: e.to_string(),
        })
    }

    /// Reads, parses and validates the file the operator mounted (or standalone wrote).
    pub fn load(path: &Path) -> Result<ValidTranscribeJobConfig, JobConfigError> {
        Ok(Self::parse(&read(path)?)?.validate()?)
    }

    /// The one place the transcription job configuration is checked (the SpeechJob's CEL
    /// rules, again, for configurations built without the API server). Returns every problem.
    pub fn validate(&self) -> Result<ValidTranscribeJobConfig, Invalid> {
        let mut p = Problems::default();
        check_scope(&mut p, &self.tenant, "speechJob", &self.speech_job);
        check_path(&mut p, "databaseUrlFile", Some(&self.database_url_file));
        let sources = check_sources(&mut p, &self.sources);
        check_key_ring(&mut p, "keyRing", &self.key_ring);
        self.engine.check(&mut p);

        let lang = &self.language;
        let mut parts = lang.split('-');
        let primary_ok = parts.next().is_some_and(|s| {
            (2..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
        });
        p.check(
            primary_ok
                && lang.len() <= 35
                && parts.all(|s| {
                    (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
                }),
            "language",
            format!("{lang:?} is not a BCP 47 language tag such as en-US"),
        );
        p.check(
            self.phrase_hints.len() <= 500,
            "phraseHints",
            "at most 500 phrases",
        );
        for (i, hint) in self.phrase_hints.iter().enumerate() {
            p.check(
                (1..=100).contains(&hint.chars().count()),
                format!("phraseHints[{i}]"),
                "must be 1 to 100 characters",
            );
        }
        p.check(
            (1..=64).contains(&self.concurrency),
            "concurrency",
            "must be 1 to 64",
        );

        let f = &self.filter;
        check_names(&mut p, "filter.recordingProfiles", &f.recording_profiles);
        for (i, g) in f.groups.iter().enumerate() {
            p.check(
                (1..=256).contains(&g.len()),
                format!("filter.groups[{i}]"),
                "must be 1 to 256 characters",
            );
        }
        for (field, v) in [
            ("filter.minDurationSeconds", f.min_duration_seconds),
            ("filter.maxDurationSeconds", f.max_duration_seconds),
        ] {
            p.check(v.is_none_or(|s| s <= 86_400), field, "must be 0 to 86400");
        }
        if let (Some(min), Some(max)) = (f.min_duration_seconds, f.max_duration_seconds) {
            p.check(
                min <= max,
                "filter.minDurationSeconds",
                "must not exceed filter.maxDurationSeconds",
            );
        }
        let from = parse_instant(&mut p, "filter.from", f.from.as_deref());
        let to = parse_instant(&mut p, "filter.to", f.to.as_deref());
        if let (Some(a), Some(b)) = (from, to) {
            p.check(a < b, "filter.from", "must be before filter.to");
        }

        match sources {
            Some(sources) => p.into_result(ValidTranscribeJobConfig {
                config: self.clone(),
                sources,
                from,
                to,
            }),
            None => Err(Invalid { problems: p.0 }),
        }
    }
}

impl EngineConfig {
    fn check(&self, p: &mut Problems) {
        let kind = match self.kind {
            EngineKind::Whisper => "whisper",
            EngineKind::Openai => "openai",
            EngineKind::Google => "google",
        };
        let whisper = self.kind == EngineKind::Whisper;
        p.check(
            whisper == self.model_path.is_some(),
            "engine.modelPath",
            if whisper {
                "required when engine.type is whisper".to_owned()
            } else {
                format!("only allowed when engine.type is whisper, not {kind}")
            },
        );
        check_path(p, "engine.modelPath", self.model_path.as_deref());
        if whisper {
            // It runs offline: nothing to reach, nothing to authenticate to.
            for (field, set) in [
                ("engine.endpoint", self.endpoint.is_some()),
                ("engine.apiKeyFile", self.api_key_file.is_some()),
                (
                    "engine.serviceAccountJsonFile",
                    self.service_account_json_file.is_some(),
                ),
            ] {
                p.check(
                    !set,
                    field,
                    "not allowed when engine.type is whisper (it runs offline)",
                );
            }
        }
        if self.kind == EngineKind::Openai {
            p.check(
                self.endpoint.is_some() || self.api_key_file.is_some(),
                "engine.apiKeyFile",
                "required when engine.type is openai and no endpoint is set",
            );
            p.check(
                self.service_account_json_file.is_none(),
                "engine.serviceAccountJsonFile",
                "only allowed when engine.type is google",
            );
        }
        if self.kind == EngineKind::Google {
            p.check(
                self.service_account_json_file.is_some(),
                "engine.serviceAccountJsonFile",
                "required when engine.type is google",
            );
            p.check(
                self.api_key_file.is_none(),
                "engine.apiKeyFile",
                "only allowed when engine.type is openai",
            );
        }
        check_path(p, "engine.apiKeyFile", self.api_key_file.as_deref());
        check_path(
            p,
            "engine.serviceAccountJsonFile",
            self.service_account_json_file.as_deref(),
        );
        if let Some(model) = &self.model {
            p.check(
                (1..=128).contains(&model.len()),
                "engine.model",
                "must be 1 to 128 characters",
            );
        }
        if let Some(endpoint) = &self.endpoint {
            let ok = endpoint.len() <= 2048
                && ["http://", "https://"].iter().any(|scheme| {
                    endpoint.strip_prefix(scheme).is_some_and(|rest| {
                        !rest.is_empty()
                            && !rest.starts_with(['/', '?', '#'])
                            && !rest.contains(char::is_whitespace)
                    })
                });
            p.check(
                ok,
                "engine.endpoint",
                format!("{endpoint:?} is not an http(s) URL with a host"),
            );
        }
    }
}

impl SmtpConfig {
    /// Reads, parses and validates an SMTP settings file (standalone's `--smtp-config`).
    pub fn load(path: &Path) -> Result<SmtpConfig, JobConfigError> {
        let config: SmtpConfig =
            serde_yaml::from_str(&read(path)?).map_err(|e| JobConfigError::Parse {
                what: "SMTP settings",
                message: e.to_string(),
            })?;
        let mut p = Problems::default();
        config.check(&mut p, "smtp");
        Ok(p.into_result(config)?)
    }

    fn check(&self, p: &mut Problems, at: &str) {
        p.check(
            !self.host.trim().is_empty() && !self.host.contains(char::is_whitespace),
            format!("{at}.host"),
            "must be a host name or address",
        );
        p.check(self.port != 0, format!("{at}.port"), "must be 1 to 65535");
        p.check(
            is_mailbox(&self.from),
            format!("{at}.from"),
            format!("{:?} is not an email address", self.from),
        );
        p.check(
            !self.to.is_empty(),
            format!("{at}.to"),
            "name at least one recipient",
        );
        for (i, to) in self.to.iter().enumerate() {
            p.check(
                is_mailbox(to),
                format!("{at}.to[{i}]"),
                format!("{to:?} is not an email address"),
            );
        }
        p.check(
            self.username_file.is_some() == self.password_file.is_some(),
            format!("{at}.passwordFile"),
            "usernameFile and passwordFile go together",
        );
        check_path(
            p,
            &format!("{at}.usernameFile"),
            self.username_file.as_deref(),
        );
        check_path(
            p,
            &format!("{at}.passwordFile"),
            self.password_file.as_deref(),
        );
        p.check(
            self.username_file.is_none() || self.security != SmtpSecurity::None,
            format!("{at}.security"),
            "a password is never sent without TLS: use StartTls or Tls",
        );
    }
}

/// `local@domain`, one `@`, no spaces or angle brackets (enough to catch a typo or a pasted
/// display name; the server has the last word).
fn is_mailbox(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(|c: char| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
}

fn check_scope(p: &mut Problems, tenant: &str, field: &str, name: &str) {
    p.check(
        is_dns_label(tenant),
        "tenant",
        "must be a namespace name (lowercase letters, digits, `-`; at most 63)",
    );
    p.check(
        is_dns_subdomain(name),
        field,
        "must be a resource name (lowercase letters, digits, `-`, `.`; at most 253)",
    );
}

fn check_names(p: &mut Problems, field: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        p.check(
            is_dns_subdomain(name),
            format!("{field}[{i}]"),
            format!("{name:?} is not a resource name"),
        );
    }
}

fn check_binding(p: &mut Problems, at: &str, b: &StorageBinding) -> Option<ValidStorageBinding> {
    p.check(
        is_dns_subdomain(&b.name),
        format!("{at}.name"),
        "must be a StorageTarget name",
    );
    check_path(
        p,
        &format!("{at}.credentialsDir"),
        b.credentials_dir.as_deref(),
    );
    check_storage(p, &format!("{at}.storage"), &b.storage).map(|storage| ValidStorageBinding {
        binding: b.clone(),
        storage,
    })
}

fn check_sources(p: &mut Problems, sources: &[StorageBinding]) -> Option<Vec<ValidStorageBinding>> {
    p.check(
        !sources.is_empty(),
        "sources",
        "name at least one StorageTarget recordings are read from",
    );
    let mut valid = Vec::with_capacity(sources.len());
    let mut ok = true;
    for (i, b) in sources.iter().enumerate() {
        if sources[..i].iter().any(|s| s.name == b.name) {
            p.add(
                format!("sources[{i}].name"),
                format!("{:?} is listed twice", b.name),
            );
        }
        match check_binding(p, &format!("sources[{i}]"), b) {
            Some(v) => valid.push(v),
            None => ok = false,
        }
    }
    ok.then_some(valid)
}

fn check_key_ring(p: &mut Problems, at: &str, ring: &KeyRingConfig) {
    check_path(p, &format!("{at}.dir"), Some(&ring.dir));
    check_path(
        p,
        &format!("{at}.passphraseFile"),
        ring.passphrase_file.as_deref(),
    );
}

fn parse_instant(p: &mut Problems, field: &str, raw: Option<&str>) -> Option<Timestamp> {
    let raw = raw?;
    match raw.parse::<Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(
                field,
                format!("{raw:?} is not an RFC 3339 instant such as 2026-01-31T09:00:00Z: {e}"),
            );
            None
        }
    }
}
