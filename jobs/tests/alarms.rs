//! Alarms against real databases (SQLite and PostgreSQL) and a real SMTP server: aiosmtpd as
//! started by `scripts/services.sh` (`start_smtp`), which stores each accepted message in a
//! Maildir with its envelope recipients in `X-RcptTo`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callvault_config::{SmtpConfig, SmtpSecurity};
use callvault_jobs::alarms::{self, AlarmKind, Alarms, Mailer, Transition};
use callvault_jobs::archive::{ArchiveJob, ArchiveMode, RunOutcome, run_archive};
use callvault_store::db::{AlarmSeverity, Db};
use callvault_store::objstore::{self, Credentials, ProbeOptions, Storage, StorageConfig};
use serde_json::json;
use uuid::Uuid;

use callvault_store::db::testing::TestDb as Fixture;

callvault_store::on_both_backends!(
    raise_and_clear_are_stored_logged_and_mailed_to_everyone,
    every_alarm_kind_is_raised_by_its_condition_and_cleared_when_it_recovers,
);

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/test (it starts aiosmtpd)"))
}

fn smtp(to: Vec<String>) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: env("CALLVAULT_TEST_SMTP_PORT").parse().expect("port"),
        // A loopback relay; the configuration refuses a password without TLS.
        security: SmtpSecurity::None,
        from: "callvault@bank.example".into(),
        to,
        username_file: None,
        password_file: None,
    }
}

/// Messages in the test Maildir whose subject mentions `tenant`, waiting up to 20 s for `n`.
fn mails_for(tenant: &str, n: usize) -> Vec<String> {
    let dir = PathBuf::from(env("CALLVAULT_TEST_SMTP_MAILDIR"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut found = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path())
                    && text.contains(&format!("[CallVault {tenant}]"))
                {
                    found.push(text);
                }
            }
        }
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A header's value, unfolded (long subjects are folded over several lines, RFC 5322 §2.2.3).
fn header(mail: &str, name: &str) -> Option<String> {
    let mut lines = mail
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{name}: ")));
    let mut value = lines.next()?[name.len() + 2..].to_owned();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        value.push_str(l);
    }
    Some(value)
}

/// A tenant name no other test uses: the Maildir is shared.
fn fresh_tenant() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn recipients() -> Vec<String> {
    [
        "ops@bank.example",
        "sre@bank.example",
        "compliance@bank.example",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Every mail went to every recipient (envelope and To header) from the configured sender.
fn assert_addressed_to_everyone(mails: &[String]) {
    for mail in mails {
        let rcpt = header(mail, "X-RcptTo").expect("envelope recipients");
        let to = header(mail, "To").expect("To");
        for r in &recipients() {
            assert!(rcpt.contains(r.as_str()), "{r} in {rcpt}");
            assert!(to.contains(r.as_str()), "{r} in {to}");
        }
        assert_eq!(
            header(mail, "From").as_deref(),
            Some("callvault@bank.example")
        );
    }
}

fn fs_target(path: &Path) -> Storage {
    let spec = json!({"type": "filesystem", "path": path});
    objstore::open(
        &StorageConfig::from_spec(&spec).expect("spec"),
        &Credentials::none(),
    )
    .expect("open")
}

/// An S3 target whose endpoint refuses connections (a server down, a firewall).
fn unreachable_target() -> Storage {
    let spec = json!({"type": "s3", "bucket": "vault", "endpoint": "http://127.0.0.1:9"});
    objstore::open(
        &StorageConfig::from_spec(&spec).expect("spec"),
        &Credentials::s3("id", "secret"),
    )
    .expect("open")
}

async fn raise_and_clear_are_stored_logged_and_mailed_to_everyone(f: Fixture) {
    let db = &f.db;
    let tenant = fresh_tenant();
    let mailer = Mailer::new(&smtp(recipients())).expect("mailer");
    let alarms = Alarms {
        db,
        tenant: &tenant,
        mailer: Some(&mailer),
    };

    let full = alarms::spool_disk("recorder-traders-0", 85, 100, 80);
    let t = alarms
        .apply(&full)
        .await
        .expect("raise")
        .expect("a transition");
    assert!(matches!(
        &t,
        Transition::Raised {
            kind: AlarmKind::SpoolDiskFull,
            severity: AlarmSeverity::Major,
            ..
        }
    ));
    // The same condition on the next check is not news: no second row, no second mail.
    assert_eq!(alarms.apply(&full).await.expect("again"), None);
    let active = db.list_alarms(&tenant, false, 10).await.expect("list");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].alarm_type, "SPOOL_DISK_FULL");
    assert_eq!(active[0].source, "recorder-traders-0");
    assert_eq!(active[0].severity, AlarmSeverity::Major);

    // Worse: the severity changes, which is mailed.
    let worse = alarms::spool_disk("recorder-traders-0", 97, 100, 80);
    assert!(alarms.apply(&worse).await.expect("worse").is_some());
    let active = db.list_alarms(&tenant, false, 10).await.expect("list");
    assert_eq!(active.len(), 1, "updated in place");
    assert_eq!(active[0].severity, AlarmSeverity::Critical);

    // Recovered: cleared, logged, mailed.
    let ok = alarms::spool_disk("recorder-traders-0", 10, 100, 80);
    let t = alarms
        .apply(&ok)
        .await
        .expect("clear")
        .expect("a transition");
    assert!(matches!(t, Transition::Cleared { .. }));
    assert!(
        db.list_alarms(&tenant, false, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(alarms.apply(&ok).await.expect("clear again"), None);
    let all = db.list_alarms(&tenant, true, 10).await.expect("list");
    assert!(all[0].cleared_at.is_some());

    let log = db.activity(&tenant, None, 10).await.expect("activity");
    let kinds: Vec<&str> = log.iter().rev().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["alarm", "alarm", "alarm Clear"]);

    let mails = mails_for(&tenant, 3);
    assert_eq!(mails.len(), 3, "raise, severity change, clear");
    assert_addressed_to_everyone(&mails);
    let subjects: Vec<String> = mails.iter().filter_map(|m| header(m, "Subject")).collect();
    for want in [
        format!("[CallVault {tenant}] Major alarm: Spool disk nearly full (recorder-traders-0)"),
        format!("[CallVault {tenant}] Critical alarm: Spool disk nearly full (recorder-traders-0)"),
        format!("[CallVault {tenant}] Cleared: Spool disk nearly full (recorder-traders-0)"),
    ] {
        assert!(subjects.contains(&want), "{want} in {subjects:?}");
    }
    assert!(
        mails.iter().any(|m| m.contains("97% full")),
        "the body says what is wrong"
    );
}

/// One archive run of connector `offsite` to `destination` (no recordings to copy: the run
/// stands or falls by its destination).
async fn archive_run(
    db: &Db,
    tenant: &str,
    destination: &Storage,
) -> callvault_jobs::archive::ArchiveSummary {
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = BTreeMap::from([("primary".to_owned(), fs_target(dir.path()))]);
    run_archive(&ArchiveJob {
        db,
        tenant,
        connector: "offsite",
        profiles: &[],
        sources: &sources,
        destination_name: "vault",
        destination,
        mode: ArchiveMode::Envelope,
        batch_size: 10,
        concurrency: 2,
    })
    .await
    .expect("archive run")
}

/// Storage, recorder and connector alarms, each from the real condition (a connection test
/// against a closed port, an archive run to it, a profile's recorder counts), raised with its
/// severity, stored, mailed to every recipient, and cleared when the condition recovers.
async fn every_alarm_kind_is_raised_by_its_condition_and_cleared_when_it_recovers(f: Fixture) {
    let db = &f.db;
    let tenant = fresh_tenant();
    let mailer = Mailer::new(&smtp(recipients())).expect("mailer");
    let alarms = Alarms {
        db,
        tenant: &tenant,
        mailer: Some(&mailer),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let reachable = fs_target(dir.path());
    let unreachable = unreachable_target();
    let probe = ProbeOptions::default();

    // Down: the storage fails its connection test, the connector's run to it fails, and the
    // profile has no ready recorder.
    let report = unreachable.probe(&probe).await;
    let failed_run = archive_run(db, &tenant, &unreachable).await;
    assert_eq!(failed_run.outcome(), RunOutcome::Failed);
    for obs in [
        alarms::storage("primary", &report),
        alarms::connector("offsite", &failed_run),
        alarms::archive_destination("vault", &failed_run),
        alarms::recorders("traders", 0, 0, 0),
    ] {
        let t = alarms.apply(&obs).await.expect("apply");
        assert!(
            t.as_ref().is_some_and(Transition::is_raise),
            "{obs:?}: {t:?}"
        );
    }
    // The recorders come up but every session slot is taken: a lesser severity, mailed.
    let t = alarms
        .apply(&alarms::recorders("traders", 2, 400, 400))
        .await
        .expect("apply");
    assert!(
        matches!(
            t,
            Some(Transition::Raised {
                severity: AlarmSeverity::Major,
                ..
            })
        ),
        "{t:?}"
    );
    let mut active: Vec<(String, String, AlarmSeverity)> = db
        .list_alarms(&tenant, false, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|a| (a.alarm_type, a.source, a.severity))
        .collect();
    active.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        active,
        [
            (
                "CONNECTOR_FAILING".into(),
                "offsite".into(),
                AlarmSeverity::Critical
            ),
            (
                "RECORDER_UNAVAILABLE".into(),
                "traders".into(),
                AlarmSeverity::Major
            ),
            (
                "STORAGE_UNREACHABLE".into(),
                "primary".into(),
                AlarmSeverity::Critical
            ),
            (
                "STORAGE_UNREACHABLE".into(),
                "vault".into(),
                AlarmSeverity::Critical
            ),
        ]
    );
    let stored = db.list_alarms(&tenant, false, 10).await.expect("list");
    let primary = stored
        .iter()
        .find(|a| a.source == "primary")
        .expect("primary");
    assert!(
        primary.message.contains("127.0.0.1:9"),
        "{}",
        primary.message
    );

    // Recovered: every alarm clears, once.
    let report = reachable.probe(&probe).await;
    assert!(report.succeeded(), "{}", report.condition_message());
    let good_run = archive_run(db, &tenant, &reachable).await;
    assert_eq!(good_run.outcome(), RunOutcome::Succeeded);
    for obs in [
        alarms::storage("primary", &report),
        alarms::connector("offsite", &good_run),
        alarms::archive_destination("vault", &good_run),
        alarms::recorders("traders", 2, 400, 12),
    ] {
        let t = alarms.apply(&obs).await.expect("apply");
        assert!(
            matches!(t, Some(Transition::Cleared { .. })),
            "{obs:?}: {t:?}"
        );
        assert_eq!(alarms.apply(&obs).await.expect("again"), None, "{obs:?}");
    }
    assert!(
        db.list_alarms(&tenant, false, 10)
            .await
            .expect("list")
            .is_empty()
    );
    let history = db.list_alarms(&tenant, true, 10).await.expect("list");
    assert_eq!(history.len(), 4);
    assert!(
        history.iter().all(|a| a.cleared_at.is_some()),
        "{history:?}"
    );

    // Five raises (one a change of severity) and four clears reached the SMTP server.
    let mails = mails_for(&tenant, 9);
    assert_eq!(mails.len(), 9);
    assert_addressed_to_everyone(&mails);
    let subjects: Vec<String> = mails.iter().filter_map(|m| header(m, "Subject")).collect();
    for want in [
        "Critical alarm: Connection Failed (primary)",
        "Critical alarm: Connection Failed (vault)",
        "Critical alarm: Archive connector failing (offsite)",
        "Critical alarm: Recording Resource Unavailable (traders)",
        "Major alarm: Recording Resource Unavailable (traders)",
        "Cleared: Connection Failed (primary)",
        "Cleared: Connection Failed (vault)",
        "Cleared: Archive connector failing (offsite)",
        "Cleared: Recording Resource Unavailable (traders)",
    ] {
        let want = format!("[CallVault {tenant}] {want}");
        assert!(subjects.contains(&want), "{want} in {subjects:?}");
    }
    assert!(
        mails.iter().any(|m| m.contains("has no ready recorder")),
        "the body says what is wrong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mail_server_does_not_lose_the_alarm() {
    let f = Fixture::sqlite().await;
    let mut config = smtp(vec!["ops@bank.example".into()]);
    config.port = 9; // nothing listens there
    let mailer = Mailer::new(&config).expect("mailer");
    let alarms = Alarms {
        db: &f.db,
        tenant: "bank",
        mailer: Some(&mailer),
    };
    let obs = alarms::recorders("traders", 0, 0, 0);
    assert!(alarms.apply(&obs).await.expect("stored").is_some());
    let active = f.db.list_alarms("bank", false, 10).await.expect("list");
    assert_eq!(active[0].alarm_type, "RECORDER_UNAVAILABLE");
    assert_eq!(active[0].severity, AlarmSeverity::Critical);
}

#[test]
fn bad_addresses_are_refused_with_the_address() {
    let mut config = smtp(vec!["ops@bank.example".into()]);
    config.to.push("not an address".into());
    let err = Mailer::new(&config).expect_err("refused");
    assert!(err.to_string().contains("not an address"), "{err}");
}
