//! Every file in e2e/invalid/ is refused by the real API server with a message naming the field.
//!
//! Each file starts with `# expect: <substring of the error>`. When it holds several documents,
//! all but the last must be accepted (they set up a transition, e.g. `disabled: true`) and the
//! last must be refused.

use callvault_e2e::{ControlPlane, Error, apply_documents, callvault_crd_dir, read_yaml_documents};

fn expectation(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable");
    let first = text.lines().next().unwrap_or_default();
    first
        .strip_prefix("# expect: ")
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{} must start with `# expect: <message>`", path.display()))
}

#[tokio::test]
async fn every_invalid_resource_is_refused_with_its_reason() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir())
        .await
        .expect("CallVault CRDs install");
    let client = cp.client().expect("client");

    let files = callvault_e2e::yaml_files(&callvault_e2e::repo_path("e2e/invalid"))
        .expect("e2e/invalid readable");
    assert!(files.len() >= 15, "only {} invalid cases", files.len());

    let mut failures = Vec::new();
    for file in &files {
        let expect = expectation(file);
        let docs = read_yaml_documents(file).expect("YAML parses");
        let (last, setup) = docs.split_last().expect("at least one document");
        // A fresh namespace per case, so that setups and names never interfere.
        let ns = cp.create_namespace("invalid").await.expect("namespace");
        if let Err(e) = apply_documents(&client, setup, &ns).await {
            failures.push(format!("{}: setup refused: {e}", file.display()));
            continue;
        }
        match apply_documents(&client, std::slice::from_ref(last), &ns).await {
            Ok(_) => failures.push(format!("{}: accepted, expected {expect:?}", file.display())),
            Err(Error::Apply { source, .. }) => match *source {
                kube::Error::Api(status) if status.code == 422 => {
                    if !status.message.contains(&expect) {
                        failures.push(format!(
                            "{}: refused, but the message does not contain {expect:?}: {}",
                            file.display(),
                            status.message
                        ));
                    }
                }
                other => failures.push(format!("{}: unexpected error {other}", file.display())),
            },
            Err(other) => failures.push(format!("{}: {other}", file.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
