//! `kubectl apply -f examples/cluster/` works on a fresh API server with the CallVault CRDs, as
//! the README says: every example is accepted, namespaces included.

use std::collections::BTreeSet;

use callvault_e2e::{ControlPlane, callvault_crd_dir, read_yaml_documents, repo_path, yaml_files};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};

#[tokio::test]
async fn every_cluster_example_is_accepted() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir())
        .await
        .expect("CallVault CRDs install");
    let client = cp.client().expect("client");

    let files = yaml_files(&repo_path("examples/cluster")).expect("examples readable");
    assert!(!files.is_empty(), "no examples in examples/cluster");
    let docs: Vec<_> = files
        .iter()
        .flat_map(|f| read_yaml_documents(f).expect("example YAML parses"))
        .collect();

    // Exactly as the README says, on a cluster where none of the examples' namespaces exist
    // yet: each is created by the examples themselves, before what goes in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let used: BTreeSet<String> = docs
        .iter()
        .filter_map(|d| {
            d.object["metadata"]["namespace"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    for ns in &used {
        assert!(
            namespaces
                .get_opt(ns)
                .await
                .expect("get namespace")
                .is_none(),
            "namespace {ns} exists before the examples are applied: the test would prove nothing"
        );
    }
    let output = cp
        .kubectl()
        .expect("kubectl")
        .args(["apply", "--server-side", "--field-manager"])
        .arg(callvault_e2e::FIELD_MANAGER)
        .arg("-f")
        .arg(repo_path("examples/cluster"))
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl apply -f examples/cluster/ failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut applied = Vec::new();
    for doc in &docs {
        let (gvk, name) = doc.identity().expect("example identity");
        let ns = doc.object["metadata"]["namespace"].as_str();
        let (resource, _) = kube::discovery::pinned_kind(&client, &gvk)
            .await
            .expect("discovery");
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        applied.push(api.get(&name).await.unwrap_or_else(|e| {
            panic!("{} {name} was not stored by kubectl apply: {e}", gvk.kind)
        }));
    }

    let callvault: Vec<_> = applied
        .iter()
        .filter(|o| {
            o.types
                .as_ref()
                .is_some_and(|t| t.api_version.starts_with("callvault.io/"))
        })
        .collect();
    let kinds: BTreeSet<&str> = callvault
        .iter()
        .filter_map(|o| o.types.as_ref().map(|t| t.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "AccessProfile",
            "Connector",
            "RecordingProfile",
            "SpeechJob",
            "StorageTarget"
        ]),
        "the examples should show every CallVault resource"
    );
    // Stored objects carry the server's defaults, so the examples really went through the schema.
    for object in &callvault {
        assert!(
            object.metadata.generation.is_some(),
            "{} was not stored",
            object.name_any()
        );
        assert!(
            object
                .managed_fields()
                .iter()
                .any(|m| m.manager.as_deref() == Some(callvault_e2e::FIELD_MANAGER)),
            "{} not applied server-side",
            object.name_any()
        );
    }
}
