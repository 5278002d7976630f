//! Every resource in examples/cluster/ is accepted by a real API server with the CallVault CRDs.

use std::collections::BTreeSet;

use callvault_e2e::{
    ControlPlane, apply_documents, callvault_crd_dir, read_yaml_documents, repo_path, yaml_files,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, PostParams};

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

    // The examples name their namespaces; create those they do not declare themselves.
    let declared: BTreeSet<String> = docs
        .iter()
        .filter(|d| d.object["kind"] == "Namespace")
        .filter_map(|d| d.object["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let used: BTreeSet<String> = docs
        .iter()
        .filter_map(|d| {
            d.object["metadata"]["namespace"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in used.difference(&declared) {
        if namespaces
            .get_opt(ns)
            .await
            .expect("get namespace")
            .is_none()
        {
            let object = Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            namespaces
                .create(&PostParams::default(), &object)
                .await
                .expect("create namespace");
        }
    }

    // Namespaces first, then everything else in file order.
    let (first, rest): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| d.object["kind"] == "Namespace");
    apply_documents(&client, &first, "default")
        .await
        .expect("namespaces apply");
    let applied = match apply_documents(&client, &rest, "default").await {
        Ok(applied) => applied,
        Err(e) => panic!("the API server refused an example: {e}"),
    };

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
