//! Every example file validates, and the committed CRD files are what the code generates.

use std::path::{Path, PathBuf};

use serde::Deserialize;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives one level below the repository root")
        .to_path_buf()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// Whether every document of `text` is a Namespace (the file that creates the examples'
/// namespace before anything goes in it).
fn only_namespaces(text: &str) -> bool {
    serde_yaml::Deserializer::from_str(text).all(|doc| {
        serde_yaml::Value::deserialize(doc)
            .ok()
            .is_some_and(|v| v["kind"] == "Namespace")
    })
}

fn check_examples(dir: &str) -> Vec<callvault_crds::Resource> {
    let mut all = Vec::new();
    let files = yaml_files(&repo_root().join(dir));
    assert!(!files.is_empty(), "{dir} has no YAML files");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example is readable");
        match callvault_crds::validate_yaml(&text) {
            Ok(resources) => {
                assert!(
                    !resources.is_empty() || only_namespaces(&text),
                    "{} holds no CallVault resource",
                    file.display()
                );
                all.extend(resources);
            }
            Err(errors) => panic!(
                "{} is invalid:\n{}",
                file.display(),
                errors
                    .iter()
                    .map(|e| format!("  {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    all
}

fn kinds(resources: &[callvault_crds::Resource]) -> std::collections::BTreeSet<&'static str> {
    resources.iter().map(|r| r.kind()).collect()
}

#[test]
fn cluster_examples_are_valid_and_cover_every_kind() {
    let resources = check_examples("examples/cluster");
    let kinds = kinds(&resources);
    for kind in [
        "RecordingProfile",
        "AccessProfile",
        "StorageTarget",
        "Connector",
        "SpeechJob",
    ] {
        assert!(kinds.contains(kind), "no {kind} in examples/cluster");
    }
}

#[test]
fn standalone_example_is_valid_and_uses_local_files_only() {
    let resources = check_examples("examples/standalone");
    for r in &resources {
        match r {
            callvault_crds::Resource::StorageTarget(st) => {
                assert_eq!(st.spec.type_, callvault_crds::StorageType::Filesystem);
                let path = st
                    .spec
                    .path
                    .as_deref()
                    .expect("filesystem target has a path");
                assert!(
                    path.starts_with("./data"),
                    "standalone storage must live under ./data"
                );
                assert!(st.spec.claim_name.is_none(), "PVCs are cluster-only");
            }
            callvault_crds::Resource::Connector(_) | callvault_crds::Resource::SpeechJob(_) => {
                panic!("standalone example should stay minimal: found {}", r.kind())
            }
            _ => {}
        }
    }
    let kinds = kinds(&resources);
    assert!(kinds.contains("RecordingProfile") && kinds.contains("AccessProfile"));
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let dir = repo_root().join("charts/callvault/crds");
    let files = callvault_crds::crd_files().expect("CRDs render");
    assert_eq!(files.len(), 5);
    for file in files {
        let committed = std::fs::read_to_string(dir.join(&file.file_name)).unwrap_or_default();
        assert!(
            committed == file.yaml,
            "charts/callvault/crds/{} is stale: run `callvault crdgen`",
            file.file_name
        );
    }
}

#[test]
fn crd_output_is_deterministic() {
    let a = callvault_crds::crd_files().expect("CRDs render");
    let b = callvault_crds::crd_files().expect("CRDs render");
    assert_eq!(a, b);
}

#[test]
fn committed_resource_reference_matches_the_crds() {
    let generated = callvault_crds::reference_markdown().expect("reference renders");
    let committed =
        std::fs::read_to_string(repo_root().join("docs/resources.md")).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/resources.md is stale: run `callvault crdgen`"
    );
    for kind in [
        "RecordingProfile",
        "AccessProfile",
        "StorageTarget",
        "Connector",
        "SpeechJob",
    ] {
        assert!(
            generated.contains(&format!("\n## {kind}\n")),
            "no section for {kind}"
        );
    }
    // A field's description, default and limits reach the reference.
    assert!(generated.contains("| `spec.retention.days` | integer | `365` |"));
}
