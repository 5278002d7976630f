//! The cluster access source against a real kube-apiserver (started by the e2e crate's control
//! plane, with the chart's CRDs): every resource kind is watched, with the status a controller
//! wrote, and changes apply without a restart.

mod common;

use std::time::Duration;

use callvault_crds::Resource;
use callvault_e2e::ControlPlane;
use callvault_portal::{AccessSource, KubeAccessSource};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;

const ACCESS: &str = r#"
apiVersion: callvault.io/v1alpha1
kind: AccessProfile
metadata: {name: supervisors}
spec:
  subjects: {groups: [supervisors]}
  calls: {scope: All, actions: {}}
"#;

/// Polls `f` until it is true; fails after 30 s with `what`.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(source: &KubeAccessSource, ns: &str) -> Vec<String> {
    let mut n: Vec<String> = source
        .resources(ns)
        .iter()
        .map(|r| format!("{} {}", r.kind(), r.name()))
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_is_watched_live_with_its_status() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_e2e::callvault_crd_dir())
        .await
        .expect("CRDs");
    let ns = cp
        .create_namespace("portal-source")
        .await
        .expect("namespace");
    let other = cp
        .create_namespace("portal-other")
        .await
        .expect("namespace");
    let client = cp.client().expect("client");
    let yaml = format!("{ACCESS}---{}", common::RESOURCES);
    callvault_e2e::apply_yaml(&client, &yaml, "resources", &ns)
        .await
        .expect("apply");
    // Another tenant's profile must not show in this one.
    callvault_e2e::apply_yaml(&client, ACCESS, "other", &other)
        .await
        .expect("apply");
    // The status a controller reports, on its subresource.
    let rps: Api<callvault_crds::RecordingProfile> = Api::namespaced(client.clone(), &ns);
    rps.patch_status(
        "retail-banking-agents",
        &PatchParams::apply("callvault-operator").force(),
        &Patch::Apply(json!({
            "apiVersion": "callvault.io/v1alpha1",
            "kind": "RecordingProfile",
            "status": {
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Reconciled",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"
                }],
                "replicas": 2, "readyReplicas": 2
            }
        })),
    )
    .await
    .expect("status");

    let source = KubeAccessSource::start(client.clone(), &[ns.clone(), other.clone()]);
    eventually("the source is ready", || source.is_ready()).await;
    assert_eq!(
        names(&source, &ns),
        [
            "AccessProfile supervisors",
            "Connector offsite-archive",
            "RecordingProfile retail-banking-agents",
            "SpeechJob complaints-transcription",
            "StorageTarget primary-s3",
        ]
    );
    assert_eq!(names(&source, &other), ["AccessProfile supervisors"]);
    assert_eq!(source.profiles(&ns).len(), 1);
    let ready = source.resources(&ns).into_iter().find_map(|r| match r {
        Resource::RecordingProfile(p) => p.status,
        _ => None,
    });
    let ready = ready.expect("the RecordingProfile's status");
    assert_eq!(ready.ready_replicas, 2);
    assert_eq!(ready.conditions[0].type_, "Ready");

    // Deleting a resource shows without a restart.
    let connectors: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<callvault_crds::Connector>(&()),
    );
    connectors
        .delete("offsite-archive", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the Connector is gone", || {
        !names(&source, &ns).contains(&"Connector offsite-archive".to_owned())
    })
    .await;
}
