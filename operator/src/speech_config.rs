//! Renders a SpeechJob into the [`TranscribeJobConfig`] `callvault job transcribe` runs with:
//! its spec as it is, with each Secret and volume replaced by the path it is mounted at. Pure,
//! so a cluster's job pod and standalone's in-process run read the same SpeechJob the same way.

use std::path::PathBuf;

use callvault_config::{
    DirectionFilter, EngineConfig, EngineKind, KeyRingConfig, SpeechFilterConfig, StorageBinding,
    TranscribeJobConfig, TranscribeMode,
};
use callvault_crds::SpeechJob;
use callvault_crds::speech_job::{self as sj, EngineType, SpeechMode};

/// Secret key holding an OpenAI-compatible service's API key.
pub const API_KEY_ITEM: &str = "apiKey";
/// Secret key holding a Google service account.
pub const SERVICE_ACCOUNT_ITEM: &str = "serviceAccountJson";

/// Where the job finds what is not in the SpeechJob itself.
#[derive(Debug, Clone)]
pub struct JobFiles {
    /// The database URL file.
    pub database_url_file: PathBuf,
    /// The private keys recordings are decrypted with.
    pub key_ring: KeyRingConfig,
    /// Where the engine's credentials Secret is (one file per key), when it names one.
    pub engine_credentials_dir: Option<PathBuf>,
}

/// Why a SpeechJob could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum SpeechConfigError {
    #[error("the SpeechJob has no metadata.name")]
    MissingName,
    #[error("spec.filter.{field} = {value} is out of range")]
    OutOfRange { field: &'static str, value: i64 },
}

/// The configuration of `job` in `tenant`, reading recordings from `sources`.
pub fn transcribe_job_config(
    tenant: &str,
    job: &SpeechJob,
    sources: Vec<StorageBinding>,
    files: JobFiles,
) -> Result<TranscribeJobConfig, SpeechConfigError> {
    let name = job
        .metadata
        .name
        .clone()
        .ok_or(SpeechConfigError::MissingName)?;
    let spec = &job.spec;
    let engine = &spec.engine;
    let credential = |item: &str| {
        engine
            .credentials_secret_ref
            .as_ref()
            .and(files.engine_credentials_dir.as_ref())
            .map(|dir| dir.join(item))
    };
    let f = &spec.filter;
    Ok(TranscribeJobConfig {
        tenant: tenant.to_owned(),
        speech_job: name,
        database_url_file: files.database_url_file,
        sources,
        key_ring: files.key_ring,
        engine: EngineConfig {
            kind: match engine.type_ {
                EngineType::Whisper => EngineKind::Whisper,
                EngineType::Openai => EngineKind::Openai,
                EngineType::Google => EngineKind::Google,
            },
            model: engine.model.clone(),
            model_path: engine.model_path.as_ref().map(PathBuf::from),
            endpoint: engine.endpoint.clone(),
            api_key_file: match engine.type_ {
                EngineType::Openai => credential(API_KEY_ITEM),
                _ => None,
            },
            service_account_json_file: match engine.type_ {
                EngineType::Google => credential(SERVICE_ACCOUNT_ITEM),
                _ => None,
            },
        },
        language: spec.language.clone(),
        phrase_hints: spec.phrase_hints.clone(),
        filter: SpeechFilterConfig {
            recording_profiles: f.recording_profiles.clone(),
            groups: f.groups.clone(),
            min_duration_seconds: seconds("minDurationSeconds", f.min_duration_seconds)?,
            max_duration_seconds: seconds("maxDurationSeconds", f.max_duration_seconds)?,
            from: f.from.as_ref().map(|t| t.0.to_string()),
            to: f.to.as_ref().map(|t| t.0.to_string()),
            direction: match f.direction {
                sj::DirectionFilter::Any => DirectionFilter::Any,
                sj::DirectionFilter::Inbound => DirectionFilter::Inbound,
                sj::DirectionFilter::Outbound => DirectionFilter::Outbound,
                sj::DirectionFilter::Internal => DirectionFilter::Internal,
            },
        },
        mode: match spec.mode {
            SpeechMode::Incremental => TranscribeMode::Incremental,
            SpeechMode::Backfill => TranscribeMode::Backfill,
        },
        // The CRD bounds it to 1..=64.
        concurrency: u32::try_from(spec.concurrency).unwrap_or(1).max(1),
    })
}

fn seconds(field: &'static str, value: Option<i64>) -> Result<Option<u32>, SpeechConfigError> {
    value
        .map(|v| u32::try_from(v).map_err(|_| SpeechConfigError::OutOfRange { field, value: v }))
        .transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use callvault_crds::ResourceSet;

    fn job(yaml: &str) -> SpeechJob {
        let set = ResourceSet::from_files([(std::path::Path::new("job.yaml"), yaml)]).unwrap();
        set.speech_jobs.into_values().next().unwrap()
    }

    fn files() -> JobFiles {
        JobFiles {
            database_url_file: "/db/url".into(),
            key_ring: KeyRingConfig {
                dir: "/keys".into(),
                passphrase_file: None,
            },
            engine_credentials_dir: Some("/creds".into()),
        }
    }

    #[test]
    fn an_openai_job_with_a_filter_renders_to_a_valid_configuration() {
        let sj = job("
apiVersion: callvault.io/v1alpha1
kind: SpeechJob
metadata: {name: complaints, namespace: bank}
spec:
  engine: {type: openai, endpoint: 'http://speech.local:8000', credentialsSecretRef: {name: speech}}
  language: en-GB
  phraseHints: [overdraft]
  mode: Backfill
  concurrency: 4
  filter:
    groups: [complaints-team]
    minDurationSeconds: 30
    from: '2026-01-01T00:00:00Z'
    direction: Inbound
");
        let source = StorageBinding {
            name: "local".into(),
            storage: callvault_store::objstore::StorageConfig::from_spec(&serde_json::json!({
                "type": "filesystem", "path": "/var/lib/callvault/recordings"
            }))
            .unwrap(),
            credentials_dir: None,
        };
        let config = transcribe_job_config("bank", &sj, vec![source], files()).unwrap();
        assert_eq!(config.speech_job, "complaints");
        assert_eq!(config.engine.kind, EngineKind::Openai);
        assert_eq!(
            config.engine.api_key_file.as_deref(),
            Some(std::path::Path::new("/creds/apiKey"))
        );
        assert_eq!(config.engine.service_account_json_file, None);
        assert_eq!(config.mode, TranscribeMode::Backfill);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.filter.groups, ["complaints-team"]);
        assert_eq!(config.filter.min_duration_seconds, Some(30));
        assert_eq!(config.filter.direction, DirectionFilter::Inbound);
        let valid = config.validate().unwrap();
        assert_eq!(
            valid.from.map(|t| t.to_string()).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_whisper_job_has_no_credentials_and_keeps_its_model_path() {
        let sj = job("
apiVersion: callvault.io/v1alpha1
kind: SpeechJob
metadata: {name: all, namespace: default}
spec:
  engine: {type: whisper, modelPath: /models/tiny.en}
");
        let config = transcribe_job_config("default", &sj, Vec::new(), files()).unwrap();
        assert_eq!(config.engine.kind, EngineKind::Whisper);
        assert_eq!(config.engine.api_key_file, None);
        assert_eq!(
            config.engine.model_path.as_deref(),
            Some(std::path::Path::new("/models/tiny.en"))
        );
        assert_eq!(config.mode, TranscribeMode::Incremental);
    }
}
