//! The RecordingProfile controller's build step, from resource YAML to child objects.

use std::path::{Path, PathBuf};

use callvault_config::SipTransport;
use callvault_crds::{RecordingProfile, StorageTarget};
use callvault_operator::build::assurance::{self, AssuranceChildren};
use callvault_operator::build::job::KeyRingSecret;
use callvault_operator::build::pod::DatabaseSecret;
use callvault_operator::build::recording_profile::{
    ChildNames, Children, RecorderSettings, build, with_endpoints,
};
use callvault_operator::render::paths;
use callvault_operator::render_recorder_config;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

const KEY_ID: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn settings() -> RecorderSettings {
    RecorderSettings {
        image: "ghcr.io/callvault/callvault:0.1.0".to_owned(),
        database: DatabaseSecret {
            name: "callvault-database".to_owned(),
            key: "url".to_owned(),
        },
        spool_size: "20Gi".to_owned(),
        spool_storage_class: None,
    }
}

/// Every document of every YAML file in `examples/cluster`, by kind.
fn examples() -> (Vec<RecordingProfile>, Vec<StorageTarget>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/cluster exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let (mut profiles, mut targets) = (Vec::new(), Vec::new());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).expect("example is YAML");
            match value["kind"].as_str() {
                Some("RecordingProfile") => profiles.push(
                    serde_json::from_value(value)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display())),
                ),
                Some("StorageTarget") => targets.push(
                    serde_json::from_value(value)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display())),
                ),
                _ => {}
            }
        }
    }
    (profiles, targets)
}

fn target_of<'a>(profile: &RecordingProfile, targets: &'a [StorageTarget]) -> &'a StorageTarget {
    targets
        .iter()
        .find(|t| {
            t.metadata.namespace == profile.metadata.namespace
                && t.metadata.name.as_deref() == Some(profile.spec.storage_target_ref.name.as_str())
        })
        .expect("every example profile's StorageTarget is in the examples")
}

fn with_uid(mut profile: RecordingProfile) -> RecordingProfile {
    profile.metadata.uid = Some("0b6c7ad5-55a4-4c4e-9d7e-3f1e0c9b2a11".to_owned());
    profile
}

fn children(profile: &RecordingProfile, target: &StorageTarget, replicas: i32) -> Children {
    let ns = profile.metadata.namespace.as_deref().expect("namespaced");
    let config = render_recorder_config(ns, profile, target, KEY_ID).expect("renders");
    build(profile, target, &config, replicas, &settings()).expect("builds")
}

fn assurance(profile: &RecordingProfile, target: &StorageTarget) -> Option<AssuranceChildren> {
    let names = ChildNames::new(profile.metadata.name.as_deref().expect("named"));
    let s = settings();
    let ring = KeyRingSecret {
        name: "callvault-private-keys".to_owned(),
    };
    assurance::build(profile, target, &names.sip, &s.image, &s.database, &ring).expect("builds")
}

fn all_objects(c: &Children) -> Vec<serde_json::Value> {
    [
        serde_json::to_value(&c.stateful_set),
        serde_json::to_value(&c.headless_service),
        serde_json::to_value(&c.sip_service),
        serde_json::to_value(&c.config_map),
        serde_json::to_value(&c.pod_disruption_budget),
        serde_json::to_value(&c.retention_cron_job),
        serde_json::to_value(&c.endpoints_config_map),
    ]
    .into_iter()
    .map(|v| v.expect("serializes"))
    .collect()
}

fn recorder_pod(c: &Children) -> &PodSpec {
    c.stateful_set
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod spec")
}

#[test]
fn every_example_profile_renders_a_config_the_recorder_accepts() {
    let (profiles, targets) = examples();
    assert!(profiles.len() >= 2, "examples hold RecordingProfiles");
    for profile in &profiles {
        let ns = profile.metadata.namespace.as_deref().expect("namespaced");
        let config = render_recorder_config(ns, profile, target_of(profile, &targets), KEY_ID)
            .unwrap_or_else(|e| panic!("{:?}: {e}", profile.metadata.name));
        // What the ConfigMap carries is what the recorder parses and validates at start-up.
        let yaml = serde_yaml::to_string(&config).expect("serializes");
        let loaded = callvault_config::RecorderConfig::parse(&yaml).expect("parses back");
        assert_eq!(loaded, config);
        loaded.validate().expect("validates");
    }
}

#[test]
fn children_match_the_committed_snapshot() {
    let (profiles, targets) = examples();
    let profile = profiles
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some("retail-banking-agents"))
        .expect("example profile");
    let profile = with_uid(profile);
    let target = target_of(&profile, &targets);
    let c = children(&profile, target, 3);
    let a = assurance(&profile, target).expect("the example profile has assurance");
    let mut objects = all_objects(&c);
    objects.push(serde_json::to_value(&a.config_map).expect("serializes"));
    objects.push(serde_json::to_value(&a.cron_job).expect("serializes"));
    let mut actual = String::new();
    for object in objects {
        actual.push_str("---\n");
        actual.push_str(&serde_yaml::to_string(&object).expect("serializes"));
    }
    let snapshot =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/retail-banking-agents.yaml");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &actual).expect("snapshot written");
    }
    let expected = std::fs::read_to_string(&snapshot)
        .expect("snapshot exists (run with UPDATE_SNAPSHOTS=1 to create it)");
    assert!(
        actual == expected,
        "built objects differ from {}; review and rerun with UPDATE_SNAPSHOTS=1\n{actual}",
        snapshot.display()
    );
}

#[test]
fn an_edit_the_recorder_applies_in_place_changes_the_config_map_but_rolls_no_pod() {
    let (profiles, targets) = examples();
    let profile = with_uid(profiles[0].clone());
    let target = target_of(&profile, &targets);
    let before = children(&profile, target, 2);
    let mut edited = profile.clone();
    edited.spec.media.bitrate += 8000;
    edited.spec.retention.days += 30;
    edited.spec.max_duration_seconds += 600;
    let after = children(&edited, target, 2);
    assert_ne!(
        before.config_map.data, after.config_map.data,
        "the edit reaches the recorders' configuration"
    );
    assert_eq!(
        serde_json::to_value(&before.stateful_set.spec.template).expect("serializes"),
        serde_json::to_value(&after.stateful_set.spec.template).expect("serializes"),
        "a changed pod template would restart every recorder for a setting it applies live"
    );
}

#[test]
fn every_child_is_owned_labelled_and_deterministically_named() {
    let (profiles, targets) = examples();
    for profile in profiles.into_iter().map(with_uid) {
        let target = target_of(&profile, &targets);
        let first = children(&profile, target, 2);
        assert_eq!(
            first,
            children(&profile, target, 2),
            "same input, same objects"
        );
        let name = profile.metadata.name.clone().expect("named");
        for object in all_objects(&first) {
            let meta = &object["metadata"];
            let owners = meta["ownerReferences"]
                .as_array()
                .expect("owner references");
            assert_eq!(owners.len(), 1, "{meta}");
            assert_eq!(owners[0]["kind"], "RecordingProfile");
            assert_eq!(owners[0]["name"], name.as_str());
            assert_eq!(owners[0]["uid"], "0b6c7ad5-55a4-4c4e-9d7e-3f1e0c9b2a11");
            assert_eq!(owners[0]["controller"], true);
            assert_eq!(
                meta["namespace"],
                profile.metadata.namespace.as_deref().unwrap_or("")
            );
            let labels = &meta["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "callvault");
            assert_eq!(labels["app.kubernetes.io/instance"], name.as_str());
            assert_eq!(labels["app.kubernetes.io/managed-by"], "callvault-operator");
            assert_eq!(labels["app.kubernetes.io/part-of"], "callvault");
            assert!(labels["app.kubernetes.io/component"].is_string(), "{meta}");
            assert!(
                meta["name"].as_str().is_some_and(|n| n.starts_with(&name)),
                "{meta}"
            );
        }
    }
}

#[test]
fn a_recorder_gets_only_the_public_key_never_the_private_one() {
    let (profiles, targets) = examples();
    for profile in profiles.into_iter().map(with_uid) {
        let c = children(&profile, target_of(&profile, &targets), 2);
        let key = &profile.spec.encryption.key_secret_ref;
        let pod = recorder_pod(&c);
        let volumes = pod.volumes.as_deref().unwrap_or_default();
        let key_volumes: Vec<_> = volumes
            .iter()
            .filter_map(|v| v.secret.as_ref())
            .filter(|s| s.secret_name.as_deref() == Some(key.name.as_str()))
            .collect();
        assert_eq!(key_volumes.len(), 1, "the key Secret is mounted once");
        let items = key_volumes[0].items.as_deref().unwrap_or_default();
        assert_eq!(
            items.len(),
            1,
            "only one item of the key Secret is projected"
        );
        assert_eq!(items[0].key, key.key);
        assert_eq!(items[0].path, paths::PUBLIC_KEY_FILE);
        let yaml = serde_yaml::to_string(&c.stateful_set).expect("serializes");
        assert!(!yaml.to_lowercase().contains("private"), "{yaml}");
        // Every Secret is mounted read-only.
        for m in recorder_pod(&c).containers[0]
            .volume_mounts
            .iter()
            .flatten()
        {
            let is_secret = volumes
                .iter()
                .any(|v| v.name == m.name && v.secret.is_some());
            assert!(!is_secret || m.read_only == Some(true), "{m:?}");
        }
    }
}

#[test]
fn a_disabled_profile_keeps_its_children_with_no_recorders() {
    let (profiles, targets) = examples();
    let mut profile = with_uid(profiles.into_iter().next().expect("an example profile"));
    let target = target_of(&profile, &targets).clone();
    let enabled = children(&profile, &target, 3);
    assert_eq!(enabled.stateful_set.spec.replicas, Some(3));
    profile.spec.disabled = true;
    let disabled = children(&profile, &target, 3);
    assert_eq!(disabled.stateful_set.spec.replicas, Some(0));
    // Same objects, same names: only the replica count differs.
    let names = |c: &Children| -> Vec<serde_json::Value> {
        all_objects(c)
            .into_iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect()
    };
    assert_eq!(names(&enabled), names(&disabled));
}

#[test]
fn a_filesystem_target_on_a_claim_is_mounted_writable_at_its_path() {
    let (profiles, _) = examples();
    let profile = with_uid(profiles.into_iter().next().expect("an example profile"));
    let target: StorageTarget = serde_yaml::from_str(
        "
apiVersion: callvault.io/v1alpha1
kind: StorageTarget
metadata: {name: primary, namespace: contact-centre}
spec: {type: filesystem, path: /srv/recordings, claimName: recordings-nfs}
",
    )
    .expect("parses");
    let c = children(&profile, &target, 2);
    let pod = recorder_pod(&c);
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|p| p.claim_name == "recordings-nfs")
        })
        .expect("the claim is a volume");
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("the claim is mounted");
    assert_eq!(mount.mount_path, "/srv/recordings");
    assert_ne!(mount.read_only, Some(true));
    // No credentials Secret for a filesystem target.
    assert!(
        !pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == "storage-credentials")
    );
}

#[test]
fn the_recorder_runs_the_rendered_config_and_drains_before_it_is_killed() {
    let (profiles, targets) = examples();
    let profile = with_uid(profiles.into_iter().next().expect("an example profile"));
    let target = target_of(&profile, &targets);
    let ns = profile.metadata.namespace.as_deref().expect("namespaced");
    let config = render_recorder_config(ns, &profile, target, KEY_ID).expect("renders");
    let c = build(&profile, target, &config, 2, &settings()).expect("builds");

    let stored = &c.config_map.data.as_ref().expect("data")[paths::CONFIG_KEY];
    assert_eq!(
        callvault_config::RecorderConfig::parse(stored).expect("parses"),
        config
    );
    let pod = recorder_pod(&c);
    let container = &pod.containers[0];
    assert_eq!(
        container.command.as_deref().unwrap_or_default(),
        ["callvault", "recorder", "--config", paths::CONFIG_FILE]
    );
    assert!(
        pod.termination_grace_period_seconds
            .is_some_and(|s| s > i64::from(config.drain_grace_seconds)),
        "pods are not killed before the drain grace ends"
    );
    let retention = c
        .retention_cron_job
        .spec
        .job_template
        .spec
        .as_ref()
        .expect("job");
    let args = retention.template.spec.as_ref().expect("pod").containers[0]
        .command
        .clone()
        .unwrap_or_default();
    assert_eq!(args[1..4], ["job", "retention", "--profile"]);
    assert_eq!(Some(&args[4]), profile.metadata.name.as_ref());
}

/// A profile's drain grace, container resources and spool volume reach the recorder pods;
/// without them, pods are sized from the sessions they take and spool on the operator's
/// defaults; recorders spread over nodes and zones either way.
#[test]
fn recorder_pods_take_the_profiles_grace_resources_and_spool_or_sized_defaults() {
    let (profiles, targets) = examples();
    let mut profile = with_uid(profiles.into_iter().next().expect("an example profile"));
    let target = targets
        .iter()
        .find(|t| t.metadata.name.as_deref() == Some(&*profile.spec.storage_target_ref.name))
        .expect("target")
        .clone();
    let quantity = |map: &Option<std::collections::BTreeMap<String, Quantity>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    // The spool claim's size and class.
    let spool = |c: &Children| {
        let claims = c.stateful_set.spec.volume_claim_templates.as_ref();
        let claim = claims.expect("claims")[0].spec.clone().expect("claim spec");
        let size = claim.resources.and_then(|r| r.requests);
        (quantity(&size, "storage"), claim.storage_class_name)
    };

    profile.spec.recorder.sessions_per_replica = 200;
    profile.spec.recorder.drain_grace_seconds = None;
    let c = children(&profile, &target, 2);
    let pod = recorder_pod(&c);
    let resources = pod.containers[0].resources.clone().expect("resources");
    assert_eq!(
        quantity(&resources.requests, "cpu").as_deref(),
        Some("4100m")
    );
    assert_eq!(
        quantity(&resources.requests, "memory").as_deref(),
        Some("264Mi")
    );
    assert_eq!(
        quantity(&resources.limits, "memory").as_deref(),
        Some("528Mi")
    );
    assert_eq!(
        quantity(&resources.limits, "cpu"),
        None,
        "CPU is never throttled"
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(600 + 30));
    assert_eq!(spool(&c), (Some("20Gi".to_owned()), None));
    let spread = pod.topology_spread_constraints.as_ref().expect("spread");
    let keys: Vec<&str> = spread.iter().map(|s| s.topology_key.as_str()).collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    assert!(spread.iter().all(|s| {
        s.when_unsatisfiable == "ScheduleAnyway"
            && s.label_selector
                .as_ref()
                .and_then(|l| l.match_labels.as_ref())
                == c.stateful_set.spec.selector.match_labels.as_ref()
    }));

    profile.spec.recorder.drain_grace_seconds = Some(3600);
    profile.spec.recorder.resources = Some(
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "2", "memory": "1Gi"},
            "limits": {"memory": "2Gi"},
        }))
        .expect("resources"),
    );
    profile.spec.recorder.spool.size = Some("100Gi".to_owned());
    profile.spec.recorder.spool.storage_class_name = Some("fast-local".to_owned());
    let c = children(&profile, &target, 2);
    let pod = recorder_pod(&c);
    let resources = pod.containers[0].resources.clone().expect("resources");
    assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("2"));
    assert_eq!(
        quantity(&resources.requests, "memory").as_deref(),
        Some("1Gi")
    );
    assert_eq!(
        quantity(&resources.limits, "memory").as_deref(),
        Some("2Gi")
    );
    assert_eq!(quantity(&resources.limits, "cpu"), None);
    assert_eq!(pod.termination_grace_period_seconds, Some(3600 + 30));
    assert_eq!(
        spool(&c),
        (Some("100Gi".to_owned()), Some("fast-local".to_owned()))
    );
}

/// The endpoints ConfigMap lists each recorder taking calls once per transport, in address
/// order, in the three formats call sources read; IPv6 addresses are bracketed.
#[test]
fn the_endpoints_config_map_lists_each_recorder_per_transport() {
    let (profiles, targets) = examples();
    let profile = with_uid(profiles.into_iter().next().expect("an example profile"));
    let target = target_of(&profile, &targets);
    let ns = profile.metadata.namespace.as_deref().expect("namespaced");
    let mut config = render_recorder_config(ns, &profile, target, KEY_ID).expect("renders");
    config.sip.transports = vec![SipTransport::Udp, SipTransport::Tls];
    config.sip.port = 5060;
    config.sip.tls_port = 5061;
    let mut c = build(&profile, target, &config, 2, &settings()).expect("builds");
    let ips = ["10.0.0.7".to_owned(), "fd00::1".to_owned()];
    let uris = with_endpoints(&mut c, "desk", &config, &ips);
    assert_eq!(
        uris,
        [
            "sip:10.0.0.7:5060;transport=udp",
            "sip:10.0.0.7:5061;transport=tls",
            "sip:[fd00::1]:5060;transport=udp",
            "sip:[fd00::1]:5061;transport=tls",
        ]
    );
    let data = c.endpoints_config_map.data.expect("data");
    assert_eq!(data["endpoints"].lines().collect::<Vec<_>>(), uris);
    assert_eq!(
        data["addresses"],
        "10.0.0.7:5060 udp\n10.0.0.7:5061 tls\n[fd00::1]:5060 udp\n[fd00::1]:5061 tls\n"
    );
    let dispatcher: Vec<&str> = data["dispatcher.list"]
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(dispatcher[0], "1 sip:10.0.0.7:5060;transport=udp 0 0");
    assert_eq!(dispatcher.len(), 4);
    assert_eq!(
        c.endpoints_config_map.metadata.name.as_deref(),
        Some(
            ChildNames::new(profile.metadata.name.as_deref().expect("named"))
                .endpoints
                .as_str()
        )
    );
}

/// The recorders get the other profiles' selections in their ConfigMap, at the file their
/// configuration names, to leave out the users an older profile records.
#[test]
fn the_config_map_carries_the_other_profiles_selections() {
    let (profiles, targets) = examples();
    let profile = with_uid(profiles[0].clone());
    let mut c = children(&profile, target_of(&profile, &targets), 1);
    let others = [callvault_config::profiles::Selection {
        name: "older".into(),
        all_users: false,
        groups: vec!["desk".into()],
        created: Some("2020-01-01T00:00:00Z".into()),
    }];
    callvault_operator::build::recording_profile::with_other_profiles(&mut c.config_map, &others)
        .expect("written");
    let data = c.config_map.data.as_ref().expect("data");
    let written: Vec<callvault_config::profiles::Selection> =
        serde_json::from_str(&data[paths::OTHER_PROFILES_KEY]).expect("json");
    assert_eq!(written, others);
    let config: callvault_config::RecorderConfig =
        serde_yaml::from_str(&data[paths::CONFIG_KEY]).expect("config");
    assert_eq!(
        config.other_profiles_file.as_deref(),
        Some(Path::new(paths::OTHER_PROFILES_FILE))
    );
    assert!(paths::OTHER_PROFILES_FILE.starts_with(paths::CONFIG_DIR));
}

/// Recording assurance: the CronJob is owned by its profile, calls the profile's SIP Service,
/// mounts the private keys (which the recorders never get) and follows `spec.assurance`.
#[test]
fn assurance_is_a_cron_job_the_profile_owns_calling_its_sip_service() {
    let (profiles, targets) = examples();
    let profile = with_uid(
        profiles
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some("retail-banking-agents"))
            .expect("example profile"),
    );
    let target = target_of(&profile, &targets);
    let a = assurance(&profile, target).expect("built");
    let owner = &a
        .cron_job
        .metadata
        .owner_references
        .as_ref()
        .expect("owned")[0];
    assert_eq!(owner.kind, "RecordingProfile");
    assert_eq!(owner.uid, "0b6c7ad5-55a4-4c4e-9d7e-3f1e0c9b2a11");
    assert_eq!(owner.controller, Some(true));
    let spec = &a.cron_job.spec;
    assert_eq!(spec.schedule, "0 6 * * *");
    assert_eq!(spec.suspend, Some(false));
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .and_then(|j| j.template.spec.as_ref())
        .expect("pod");
    let command = pod.containers[0]
        .command
        .as_ref()
        .expect("command")
        .join(" ");
    assert!(
        command.starts_with("callvault job assurance --profile retail-banking-agents"),
        "{command}"
    );
    let volumes = pod.volumes.as_ref().expect("volumes");
    assert!(
        volumes.iter().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("callvault-private-keys"))),
        "the job decrypts with the key ring"
    );
    let config = a.config_map.data.as_ref().expect("data")["job.yaml"].clone();
    let config = callvault_config::AssuranceJobConfig::parse(&config).expect("parses");
    config.validate().expect("valid");
    assert_eq!(
        config.sip_uri,
        "sip:retail-banking-agents-recorder-sip.contact-centre.svc:5060"
    );
    assert_eq!(config.retention_days, 7, "the default short retention");
    assert!(
        !recorder_pod(&children(&profile, target, 1))
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .any(|v| v
                .secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some("callvault-private-keys"))),
        "the recorder never holds a private key"
    );

    let mut without = profile.clone();
    without.spec.assurance = None;
    assert!(assurance(&without, target).is_none());
    let mut disabled = profile;
    disabled.spec.disabled = true;
    let a = assurance(&disabled, target).expect("built");
    assert_eq!(a.cron_job.spec.suspend, Some(true), "no recorders to call");
}
