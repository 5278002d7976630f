//! Loading a directory of resources as standalone does: whole-set checks and error messages.

use std::path::Path;

use callvault_crds::{ResourceSet, SetError};

const TARGET: &str = "
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: local, namespace: default}
spec: {type: filesystem, path: ./data/recordings}
";

fn profile(name: &str, target: &str) -> String {
    format!(
        "
apiVersion: callvault.io/v1alpha1
kind: RecordingProfile
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{allUsers: true}}
  storageTargetRef: {{name: {target}}}
  encryption: {{keySecretRef: {{name: k, key: public.pem}}}}
"
    )
}

fn problems(result: Result<ResourceSet, SetError>) -> Vec<String> {
    match result {
        Err(SetError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn the_standalone_example_loads_with_defaults_applied() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone");
    let set = ResourceSet::load_dir(&dir).expect("the example loads");
    let profile = &set.recording_profiles["everyone"];
    assert_eq!(profile.spec.storage_target_ref.name, "local");
    assert!(set.storage_targets.contains_key("local"));
    assert!(set.access_profiles.contains_key("admins"));
    // A default the file leaves out is filled in, as the API server would.
    assert_eq!(profile.spec.max_duration_seconds, 18000);
}

#[test]
fn a_reference_to_an_undeclared_target_names_file_resource_and_field() {
    let text = profile("sales", "nowhere");
    let found = problems(ResourceSet::from_files([(
        Path::new("sales.yaml"),
        text.as_str(),
    )]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("sales.yaml: "), "{}", found[0]);
    assert!(
        found[0].contains("RecordingProfile \"sales\""),
        "{}",
        found[0]
    );
    assert!(
        found[0].contains("spec.storageTargetRef.name"),
        "{}",
        found[0]
    );
    assert!(found[0].contains("\"nowhere\""), "{}", found[0]);
}

#[test]
fn every_problem_of_every_file_is_reported_at_once() {
    let bad_yaml = "kind: [unclosed";
    let invalid = profile("x", "local").replace("allUsers: true", "allUsers: maybe");
    let duplicate = format!("{TARGET}\n---\n{}", profile("sales", "local"));
    let found = problems(ResourceSet::from_files([
        (Path::new("a.yaml"), TARGET),
        (Path::new("b.yaml"), bad_yaml),
        (Path::new("c.yaml"), invalid.as_str()),
        (Path::new("d.yaml"), duplicate.as_str()),
    ]));
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("b.yaml: ") && found[0].contains("YAML"));
    assert!(found[1].starts_with("c.yaml: ") && found[1].contains("spec.selector.allUsers"));
    assert!(
        found[2].starts_with("d.yaml: ")
            && found[2].contains("StorageTarget \"local\" is declared twice (first in a.yaml)"),
        "{}",
        found[2]
    );
}

#[test]
fn other_kinds_are_skipped_and_an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), profile("p", "nowhere")).expect("write");
    let err = ResourceSet::load_dir(dir.path()).expect_err("nothing to run");
    assert!(matches!(err, SetError::Empty(_)), "{err}");

    std::fs::write(dir.path().join("target.yml"), TARGET).expect("write");
    std::fs::write(dir.path().join("profile.yaml"), profile("p", "local")).expect("write");
    let set = ResourceSet::load_dir(dir.path()).expect("loads");
    assert_eq!(set.recording_profiles.len(), 1);
    assert_eq!(set.storage_targets.len(), 1);
}

fn set(docs: &[&str]) -> ResourceSet {
    ResourceSet::from_files([(Path::new("r.yaml"), docs.join("---\n").as_str())]).expect("loads")
}

#[test]
fn a_set_is_checked_as_an_update_of_the_running_one_with_the_crds_transition_rules() {
    let running = set(&[TARGET, &profile("a", "local"), &profile("b", "local")]);
    // Unchanged, or with a profile removed: allowed, and the removal is reported to the caller.
    assert_eq!(running.changes_from(&running).expect("same set"), vec![]);
    let fewer = set(&[TARGET, &profile("a", "local")]);
    assert_eq!(
        fewer.changes_from(&running).expect("a removal"),
        vec![("RecordingProfile", "b".to_owned())]
    );
    // A StorageTarget's location is immutable (`self == oldSelf`), as in a cluster.
    let moved = set(&[
        &TARGET.replace("./data/recordings", "./elsewhere"),
        &profile("a", "local"),
        &profile("b", "local"),
    ]);
    match moved.changes_from(&running) {
        Err(SetError::Refused(why)) => {
            assert_eq!(why.len(), 1, "{why:?}");
            assert!(why[0].starts_with("StorageTarget \"local\""), "{why:?}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Disabling is one way.
    let disabled = profile("a", "local").replace("spec:\n", "spec:\n  disabled: true\n");
    let off = set(&[TARGET, &disabled, &profile("b", "local")]);
    off.changes_from(&running).expect("disabling is allowed");
    let err = running
        .changes_from(&off)
        .expect_err("enabling again is refused");
    assert!(err.to_string().contains("cannot be re-enabled"), "{err}");
}
