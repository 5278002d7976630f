//! Reporting to Kubernetes against a real kube-apiserver (etcd and kube-apiserver started by
//! the e2e crate's control plane from the binaries `build_control_plane` builds) with the
//! chart's CRDs: each job's part of its resource's status, written by server-side apply under
//! the job's field manager without erasing what the operator owns, and Events on the resource.

use callvault_crds::connector::Connector;
use callvault_crds::recording_profile::RecordingProfile;
use callvault_crds::speech_job::SpeechJob;
use callvault_e2e::ControlPlane;
use callvault_jobs::alarms::Transition;
use callvault_jobs::archive::ArchiveSummary;
use callvault_jobs::assurance::AssuranceReport;
use callvault_jobs::cluster::{ARCHIVE_FIELD_MANAGER, Cluster};
use callvault_jobs::transcribe::{self, TranscribeFailure, TranscribeSummary};
use callvault_store::db::{AlarmSeverity, ArchiveCounts, SpeechCounts};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const SEC: i64 = 1_000_000;
const T0: i64 = 1_750_000_000 * SEC;

/// The shared control plane with the CRDs installed, and a namespace of this test's own.
async fn cluster(prefix: &str) -> (kube::Client, String) {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_e2e::callvault_crd_dir())
        .await
        .expect("CRDs");
    let ns = cp.create_namespace(prefix).await.expect("namespace");
    (cp.client().expect("client"), ns)
}

/// Applies an example resource from `examples/cluster/` into `ns`.
async fn apply_example(client: &kube::Client, file: &str, ns: &str) {
    let path = callvault_e2e::repo_path(format!("examples/cluster/{file}"));
    let yaml = std::fs::read_to_string(&path)
        .expect("example")
        .replace("namespace: contact-centre", &format!("namespace: {ns}"));
    callvault_e2e::apply_yaml(client, &yaml, file, ns)
        .await
        .expect("apply the example");
}

/// Events in `ns` about the object named `name`.
async fn events_about(client: &kube::Client, ns: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Field managers of the object's status subresource.
fn status_managers(meta: &kube::api::ObjectMeta) -> Vec<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_status_and_events_keep_what_the_operator_owns() {
    let (client, ns) = cluster("jobs-archive").await;
    apply_example(&client, "connector.yaml", &ns).await;
    let connectors: Api<Connector> = Api::namespaced(client.clone(), &ns);
    // The operator's part of the status: its Ready condition.
    connectors
        .patch_status(
            "offsite-archive",
            &PatchParams::apply("callvault-operator").force(),
            &Patch::Apply(json!({
                "apiVersion": "callvault.io/v1alpha1", "kind": "Connector",
                "metadata": {"name": "offsite-archive"},
                "status": {"conditions": [{"type": "Ready", "status": "True",
                    "reason": "Reconciled", "message": "CronJob in place",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
            })),
        )
        .await
        .expect("operator status");

    let c = Cluster::new(client.clone(), ns.clone(), "archive-job-pod".into());
    let summary = ArchiveSummary {
        started_at: T0,
        finished_at: T0 + 30 * SEC,
        unreachable: None,
        archived: 7,
        failures: Vec::new(),
        counts: ArchiveCounts {
            pending: 2,
            archived: 40,
        },
    };
    c.report_archive("offsite-archive", &summary)
        .await
        .expect("report");

    let got = connectors.get("offsite-archive").await.expect("get");
    let status = got.status.clone().expect("status");
    assert_eq!(status.pending_files, 2);
    assert_eq!(status.archived_files, 40);
    assert!(status.last_successful_archive_time.is_some());
    assert!(status.last_run.is_some());
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    for want in ["Ready", "Reachable", "LastRunSucceeded"] {
        assert!(types.contains(&want), "{want} in {types:?}");
    }
    let managers = status_managers(&got.metadata);
    assert!(
        managers.iter().any(|m| m == ARCHIVE_FIELD_MANAGER),
        "{managers:?}"
    );
    assert!(
        managers.iter().any(|m| m == "callvault-operator"),
        "{managers:?}"
    );

    // A raised alarm is a Warning Event on the Connector.
    let t = Transition::Raised {
        kind: callvault_jobs::alarms::AlarmKind::ConnectorFailing,
        source: "offsite-archive".into(),
        severity: AlarmSeverity::Critical,
        message: "Connector offsite-archive archived nothing: connection refused".into(),
    };
    c.alarm_event::<Connector>("offsite-archive", ARCHIVE_FIELD_MANAGER, "bank", &t)
        .await
        .expect("alarm event");

    let events = events_about(&client, &ns, "offsite-archive").await;
    let reasons: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e.type_.as_deref().unwrap_or(""),
                e.reason.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert!(reasons.contains(&("Normal", "Archived")), "{reasons:?}");
    assert!(reasons.contains(&("Warning", "AlarmRaised")), "{reasons:?}");
    let alarm = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("AlarmRaised"))
        .expect("alarm");
    assert!(
        alarm
            .note
            .as_deref()
            .is_some_and(|n| n.contains("connection refused")),
        "{:?}",
        alarm.note
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcription_counters_land_in_the_speech_jobs_status() {
    let (client, ns) = cluster("jobs-speech").await;
    apply_example(&client, "speechjob.yaml", &ns).await;
    let c = Cluster::new(client.clone(), ns.clone(), "transcribe-job-pod".into());
    let summary = TranscribeSummary {
        run_time: T0,
        transcribed: 3,
        failures: vec![TranscribeFailure {
            recording_id: uuid::Uuid::nil(),
            error: "the engine did not answer within 600 s".into(),
        }],
        audio_seconds: 360.0,
        counts: SpeechCounts {
            processed: 12,
            failed: 1,
            pending: 5,
        },
        ..Default::default()
    };
    c.report_transcribe("complaints-transcription", &summary)
        .await
        .expect("report");
    let got = Api::<SpeechJob>::namespaced(client.clone(), &ns)
        .get("complaints-transcription")
        .await
        .expect("get");
    let status = got.status.clone().expect("status");
    assert_eq!(
        (status.processed, status.failed, status.pending),
        (12, 1, 5)
    );
    assert!(status.last_run_time.is_some());
    assert!(
        status.last_successful_run_time.is_none(),
        "the run had a failure"
    );
    let managers = status_managers(&got.metadata);
    assert!(
        managers.iter().any(|m| m == transcribe::FIELD_MANAGER),
        "{managers:?}"
    );
    let events = events_about(&client, &ns, "complaints-transcription").await;
    let e = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("TranscriptionPartiallyFailed"))
        .expect("a Warning Event for the failed recording");
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert!(
        e.note
            .as_deref()
            .is_some_and(|n| n.contains("transcribed 3 recordings")),
        "{:?}",
        e.note
    );
}

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// The jobs run as the chart's `callvault-job` ServiceAccount (the operator names it in their
/// pods): under it, as the real API server decides, each job's report reaches its resource's
/// status, and nothing else is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_report_under_the_charts_job_service_account_and_can_do_nothing_else() {
    let (admin, ns) = cluster("jobs-rbac").await;
    let cp = ControlPlane::shared().await.expect("control plane");
    let helm = cp.bin_dir().join("helm");
    let out = std::process::Command::new(&helm)
        .args(["template", "jobrbac"])
        .arg(callvault_e2e::repo_path("charts/callvault"))
        .args([
            "--namespace",
            &ns,
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).expect("UTF-8");
    callvault_e2e::apply_yaml(&admin, &rendered, "rendered chart", &ns)
        .await
        .expect("the rendered chart applies");
    for file in ["recordingprofile.yaml", "connector.yaml", "speechjob.yaml"] {
        apply_example(&admin, file, &ns).await;
    }
    let job = cp
        .client_as_service_account(&ns, "callvault-job")
        .expect("impersonating client");
    let c = Cluster::new(job.clone(), ns.clone(), "job-pod".into());

    let report = AssuranceReport::not_run("retail-banking-agents", "no test audio".into());
    c.report_assurance(&report)
        .await
        .expect("the assurance job writes the Assured condition");
    let profile = Api::<RecordingProfile>::namespaced(admin.clone(), &ns)
        .get("retail-banking-agents")
        .await
        .expect("profile");
    let assured = profile
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Assured")
        .expect("an Assured condition");
    assert_eq!(assured.status, callvault_crds::ConditionStatus::False);
    assert!(assured.message.contains("no test audio"), "{assured:?}");

    let summary = ArchiveSummary {
        started_at: T0,
        finished_at: T0 + SEC,
        unreachable: None,
        archived: 1,
        failures: Vec::new(),
        counts: ArchiveCounts {
            pending: 0,
            archived: 1,
        },
    };
    c.report_archive("offsite-archive", &summary)
        .await
        .expect("the archive job writes the Connector's status");
    c.report_transcribe("complaints-transcription", &TranscribeSummary::default())
        .await
        .expect("the transcription job writes the SpeechJob's status");

    // Nothing beyond reporting: no Secrets, no spec changes, no deletions, no listing.
    assert_forbidden(
        Api::<Secret>::namespaced(job.clone(), &ns)
            .get("recordings-s3-credentials")
            .await,
        "a job reading a Secret",
    );
    let profiles = Api::<RecordingProfile>::namespaced(job.clone(), &ns);
    assert_forbidden(
        profiles
            .patch(
                "retail-banking-agents",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"disabled": true}})),
            )
            .await,
        "a job changing a RecordingProfile's spec",
    );
    assert_forbidden(
        profiles
            .delete("retail-banking-agents", &DeleteParams::default())
            .await,
        "a job deleting a RecordingProfile",
    );
    assert_forbidden(
        profiles.list(&ListParams::default()).await,
        "a job listing RecordingProfiles",
    );
    // Nor in a namespace the chart did not prepare.
    let other = cp
        .create_namespace("jobs-rbac-other")
        .await
        .expect("namespace");
    apply_example(&admin, "recordingprofile.yaml", &other).await;
    let elsewhere = Cluster::new(job, other, "job-pod".into());
    assert!(
        elsewhere.report_assurance(&report).await.is_err(),
        "a job reported into a namespace it was not bound in"
    );
}
