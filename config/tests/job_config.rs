//! Loading and validating the archive, transcription and recording assurance job
//! configurations.

use callvault_config::{
    ArchiveJobConfig, AssuranceJobConfig, DirectionFilter, EngineKind, JobConfigError,
    SmtpSecurity, TranscribeJobConfig, TranscribeMode,
};

const ARCHIVE: &str = r#"
tenant: bank-emea
connector: offsite
databaseUrlFile: /etc/callvault/db/url
sources:
  - name: primary
    storage: {type: filesystem, path: /recordings}
destination:
  name: archive
  storage: {type: s3, bucket: calls-archive, endpoint: "http://minio:9000"}
  credentialsDir: /etc/callvault/storage/archive
"#;

const TRANSCRIBE: &str = r#"
tenant: bank-emea
speechJob: english
databaseUrlFile: /etc/callvault/db/url
sources:
  - name: primary
    storage: {type: filesystem, path: /recordings}
keyRing: {dir: /etc/callvault/keys}
engine: {type: whisper, modelPath: /models/tiny.en}
"#;

fn archive(text: &str) -> ArchiveJobConfig {
    ArchiveJobConfig::parse(text).expect("parses")
}

fn transcribe(text: &str) -> TranscribeJobConfig {
    TranscribeJobConfig::parse(text).expect("parses")
}

#[test]
fn archive_defaults_keep_the_envelope_and_need_no_key() {
    let valid = archive(ARCHIVE).validate().expect("valid");
    let c = &valid.config;
    assert!(c.encrypt);
    assert!(c.key_ring.is_none());
    assert!(c.recording_profiles.is_empty());
    assert_eq!(c.batch_size, 500);
    assert_eq!(c.concurrency, 4);
    assert_eq!(valid.sources.len(), 1);
    assert_eq!(valid.destination.binding.name, "archive");
}

#[test]
fn archive_plaintext_needs_a_key_ring_and_encrypting_refuses_one() {
    let plain = archive(&format!("{ARCHIVE}encrypt: false\n"));
    let err = plain.validate().expect_err("no key ring");
    assert!(err.has("keyRing"), "{err}");

    let with_ring = archive(&format!(
        "{ARCHIVE}encrypt: false\nkeyRing: {{dir: /etc/callvault/keys, passphraseFile: /etc/callvault/keys-pass/passphrase}}\n"
    ));
    with_ring
        .validate()
        .expect("plaintext with a key ring is valid");

    let encrypting_with_ring = archive(&format!("{ARCHIVE}keyRing: {{dir: /k}}\n"));
    let err = encrypting_with_ring.validate().expect_err("key not needed");
    assert!(
        err.to_string().contains("no private key is mounted"),
        "{err}"
    );
}

#[test]
fn archive_reports_every_problem_with_its_path() {
    let bad = archive(
        r#"
tenant: Bank_EMEA
connector: ""
databaseUrlFile: ""
recordingProfiles: [traders, "Not A Name"]
sources:
  - name: primary
    storage: {type: s3}
  - name: primary
    storage: {type: filesystem, path: /r}
destination:
  name: primary
  storage: {type: azure, account: acct, container: rec, bucket: b}
batchSize: 0
concurrency: 65
smtp:
  host: mail
  from: "CallVault <alarms@example.com>"
  to: []
  usernameFile: /u
  security: None
"#,
    );
    let err = bad.validate().expect_err("invalid");
    for path in [
        "tenant",
        "connector",
        "databaseUrlFile",
        "recordingProfiles[1]",
        "sources[0].storage.bucket",
        "sources[1].name",
        "destination.storage.bucket",
        "destination.name",
        "batchSize",
        "concurrency",
        "smtp.from",
        "smtp.to",
        "smtp.passwordFile",
        "smtp.security",
    ] {
        assert!(err.has(path), "no problem at {path}: {err}");
    }
}

#[test]
fn smtp_settings_parse_with_defaults() {
    let c = archive(&format!(
        "{ARCHIVE}smtp: {{host: mail.example.com, from: callvault@example.com, to: [ops@example.com, sre@example.com]}}\n"
    ));
    let valid = c.validate().expect("valid");
    let smtp = valid.config.smtp.expect("smtp");
    assert_eq!(smtp.port, 587);
    assert_eq!(smtp.security, SmtpSecurity::StartTls);
    assert_eq!(smtp.to.len(), 2);
}

#[test]
fn transcribe_defaults_follow_the_speech_job() {
    let valid = transcribe(TRANSCRIBE).validate().expect("valid");
    let c = &valid.config;
    assert_eq!(c.language, "en-US");
    assert_eq!(c.mode, TranscribeMode::Incremental);
    assert_eq!(c.concurrency, 2);
    assert_eq!(c.filter.direction, DirectionFilter::Any);
    assert_eq!(c.engine.kind, EngineKind::Whisper);
    assert!(valid.from.is_none() && valid.to.is_none());
}

#[test]
fn transcribe_engine_rules_match_the_speech_job_rules() {
    let cases = [
        ("{type: whisper}", "engine.modelPath"),
        (
            "{type: openai, modelPath: /m, endpoint: \"http://stt:8000\"}",
            "engine.modelPath",
        ),
        ("{type: openai}", "engine.apiKeyFile"),
        ("{type: google}", "engine.serviceAccountJsonFile"),
        (
            "{type: whisper, modelPath: /m, endpoint: \"http://x:1\"}",
            "engine.endpoint",
        ),
        (
            "{type: whisper, modelPath: /m, apiKeyFile: /k}",
            "engine.apiKeyFile",
        ),
        ("{type: openai, endpoint: \"ftp://stt\"}", "engine.endpoint"),
    ];
    for (engine, path) in cases {
        let text = TRANSCRIBE.replace("{type: whisper, modelPath: /models/tiny.en}", engine);
        let err = transcribe(&text)
            .validate()
            .expect_err(&format!("{engine} should be refused"));
        assert!(err.has(path), "{engine}: no problem at {path}: {err}");
    }
    for engine in [
        "{type: openai, endpoint: \"http://127.0.0.1:8000\", model: tiny.en}",
        "{type: openai, apiKeyFile: /etc/callvault/engine/apiKey}",
        "{type: google, serviceAccountJsonFile: /etc/callvault/engine/serviceAccountJson}",
    ] {
        let text = TRANSCRIBE.replace("{type: whisper, modelPath: /models/tiny.en}", engine);
        transcribe(&text)
            .validate()
            .unwrap_or_else(|e| panic!("{engine} should be valid: {e}"));
    }
}

#[test]
fn transcribe_filter_is_checked_and_instants_parsed() {
    let text = format!(
        "{TRANSCRIBE}filter: {{from: \"2026-02-01T00:00:00Z\", to: \"2026-01-01T00:00:00Z\", minDurationSeconds: 90, maxDurationSeconds: 30, direction: Inbound}}\nlanguage: english\nconcurrency: 0\nphraseHints: [\"\"]\n"
    );
    let err = transcribe(&text).validate().expect_err("invalid");
    for path in [
        "filter.from",
        "filter.minDurationSeconds",
        "language",
        "concurrency",
        "phraseHints[0]",
    ] {
        assert!(err.has(path), "no problem at {path}: {err}");
    }

    let text = format!(
        "{TRANSCRIBE}filter: {{from: \"2026-01-01T00:00:00Z\", to: \"2026-02-01T00:00:00+01:00\", direction: Outbound}}\nmode: Backfill\n"
    );
    let valid = transcribe(&text).validate().expect("valid");
    assert_eq!(
        valid.to.map(|t| t.to_string()).as_deref(),
        Some("2026-01-31T23:00:00Z")
    );
    assert_eq!(valid.config.mode, TranscribeMode::Backfill);

    let text = format!("{TRANSCRIBE}filter: {{from: yesterday}}\n");
    let err = transcribe(&text).validate().expect_err("not an instant");
    assert!(err.to_string().contains("RFC 3339"), "{err}");
}

#[test]
fn load_names_the_file_and_the_kind_of_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("job.yaml");
    let err = ArchiveJobConfig::load(&missing).expect_err("missing");
    assert!(
        matches!(&err, JobConfigError::Read { path, .. } if path == &missing),
        "{err}"
    );

    std::fs::write(&missing, "tenant: [").expect("write");
    let err = TranscribeJobConfig::load(&missing).expect_err("garbage");
    assert!(
        err.to_string()
            .starts_with("not a transcription job configuration"),
        "{err}"
    );

    std::fs::write(&missing, ARCHIVE).expect("write");
    let valid = ArchiveJobConfig::load(&missing).expect("loads");
    assert_eq!(valid.config.connector, "offsite");
}

#[test]
fn configs_round_trip_through_json() {
    let a = archive(ARCHIVE);
    let json = serde_json::to_string(&a).expect("serialise");
    assert!(json.contains("\"databaseUrlFile\"") && json.contains("\"credentialsDir\""));
    assert_eq!(ArchiveJobConfig::parse(&json).expect("reparse"), a);
    let t = transcribe(TRANSCRIBE);
    let json = serde_json::to_string(&t).expect("serialise");
    assert!(json.contains("\"speechJob\"") && json.contains("\"modelPath\""));
    assert_eq!(TranscribeJobConfig::parse(&json).expect("reparse"), t);
}

const ASSURANCE: &str = r#"
tenant: bank-emea
profile: agents
databaseUrlFile: /etc/callvault/db/url
sipUri: "sip:agents-recorder-sip.bank-emea.svc:5060"
transport: udp
fromNumber: "+15550100901"
toNumber: "+15550100902"
durationSeconds: 6
commitTimeoutSeconds: 120
retentionDays: 7
storage:
  name: primary
  storage: {type: filesystem, path: /recordings}
keyRing: {dir: /etc/callvault/keys}
"#;

#[test]
fn assurance_is_checked_in_one_place_naming_each_field() {
    let ok = AssuranceJobConfig::parse(ASSURANCE).expect("parses");
    let valid = ok.validate().expect("valid");
    assert_eq!(valid.storage.binding.name, "primary");

    let bad = AssuranceJobConfig {
        sip_uri: "agents-recorder-sip:5060".into(),
        transport: "tls".into(),
        from_number: "not a number".into(),
        duration_seconds: 2,
        commit_timeout_seconds: 5,
        retention_days: 0,
        ..ok
    };
    let e = bad.validate().expect_err("invalid");
    for path in [
        "sipUri",
        "transport",
        "fromNumber",
        "durationSeconds",
        "commitTimeoutSeconds",
        "retentionDays",
    ] {
        assert!(e.has(path), "{path} not reported: {e}");
    }
}
