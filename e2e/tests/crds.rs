//! CustomResourceDefinitions install on the real server, and their schemas and CEL rules are
//! enforced by it.

use callvault_e2e::{
    ControlPlane, DEFAULT_TIMEOUT, Error, apply_yaml, callvault_crd_dir, install_crd,
    read_yaml_documents, repo_path, wait_crd_established, yaml_files,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;

fn rejection(err: &Error) -> String {
    match err {
        Error::Apply { source, .. } => match source.as_ref() {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
                status.message.clone()
            }
            other => panic!("expected an API rejection, got {other}"),
        },
        other => panic!("expected an apply error, got {other}"),
    }
}

#[tokio::test]
async fn a_crd_with_cel_rules_is_established_and_enforced() {
    let cp = ControlPlane::shared().await.expect("control plane");
    let names = cp
        .install_crds(&repo_path("e2e/tests/fixtures"))
        .await
        .expect("fixture CRD installs");
    assert_eq!(names, ["widgets.e2e.callvault.io"]);
    let client = cp.client().expect("client");
    let ns = cp.create_namespace("widgets").await.expect("namespace");

    let widget = |min: i64, max: i64, locked: bool| {
        format!(
            "apiVersion: e2e.callvault.io/v1\nkind: Widget\nmetadata: {{name: w}}\n\
             spec: {{min: {min}, max: {max}, locked: {locked}}}\n"
        )
    };
    apply_yaml(&client, &widget(1, 5, false), "valid", &ns)
        .await
        .expect("a valid widget is accepted");

    let err = apply_yaml(&client, &widget(9, 5, false), "cel", &ns)
        .await
        .expect_err("min > max breaks the CEL rule");
    let message = rejection(&err);
    assert!(
        message.contains("spec.min must not exceed spec.max"),
        "{message}"
    );

    let err = apply_yaml(&client, &widget(-1, 5, false), "schema", &ns)
        .await
        .expect_err("a negative min breaks the schema");
    let message = rejection(&err);
    assert!(message.contains("spec.min"), "{message}");

    apply_yaml(&client, &widget(1, 5, true), "lock", &ns)
        .await
        .expect("locking is allowed");
    let err = apply_yaml(&client, &widget(1, 5, false), "unlock", &ns)
        .await
        .expect_err("the transition rule forbids unlocking");
    let message = rejection(&err);
    assert!(message.contains("spec.locked is one-way"), "{message}");

    // The stored object is the last accepted one.
    let resource = ApiResource {
        group: "e2e.callvault.io".into(),
        version: "v1".into(),
        api_version: "e2e.callvault.io/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &resource);
    let stored = api.get("w").await.expect("widget stored");
    assert_eq!(stored.data["spec"]["locked"], true);
}

#[tokio::test]
async fn the_callvault_crds_are_established() {
    let cp = ControlPlane::shared().await.expect("control plane");
    let client = cp.client().expect("client");
    let dir = callvault_crd_dir();
    // Every CRD is tried, so one run reports every refusal in the server's own words (a CEL cost
    // error, a default that breaks its own rule, ...).
    let mut names = Vec::new();
    let mut refused = Vec::new();
    for file in yaml_files(&dir).expect("CRD directory readable") {
        for doc in read_yaml_documents(&file).expect("CRD YAML parses") {
            let crd: CustomResourceDefinition =
                serde_json::from_value(doc.object.clone()).expect("a CustomResourceDefinition");
            let name = crd.metadata.name.clone().unwrap_or_default();
            let installed = match install_crd(&client, &crd, &doc.source).await {
                Ok(()) => wait_crd_established(&client, &name, DEFAULT_TIMEOUT).await,
                Err(e) => Err(e),
            };
            match installed {
                Ok(()) => names.push(name),
                Err(e) => refused.push(e.to_string()),
            }
        }
    }
    assert!(
        refused.is_empty(),
        "the API server refused CallVault CRDs:\n{}",
        refused.join("\n")
    );
    names.sort();
    assert_eq!(
        names,
        [
            "accessprofiles.callvault.io",
            "connectors.callvault.io",
            "recordingprofiles.callvault.io",
            "speechjobs.callvault.io",
            "storagetargets.callvault.io",
        ],
        "expected the five CallVault CRDs in {} (written by `callvault crdgen`)",
        dir.display()
    );
}
