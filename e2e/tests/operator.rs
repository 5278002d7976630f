//! The operator against a real API server: it runs in-process, under the chart's operator
//! ServiceAccount (impersonated), so every call it makes is also an RBAC check of the chart's
//! ClusterRole. No controller manager or kubelet runs: where a test needs a StatefulSet's pods
//! to be ready, it writes the StatefulSet's status itself, as the StatefulSet controller would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_config::{RecorderConfig, TranscribeJobConfig};
use callvault_crds::{Connector, RecordingProfile, SpeechJob, StorageTarget};
use callvault_e2e::operator::{Operator, eventually, operator_client, test_config};
use callvault_e2e::{
    ControlPlane, apply_yaml, callvault_crd_dir, read_yaml_documents, repo_path, yaml_files,
};
use callvault_operator::build::child_name;
use callvault_operator::build::speech_job::run_now_job_name;
use callvault_portal::JobRunner as _;
use callvault_store::keys::PrivateKey;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A fresh namespace with the CRDs installed and the database URL Secret its workloads mount,
/// the admin client and the operator's client.
async fn setup(prefix: &str) -> (&'static ControlPlane, String, Client, Client) {
    let setup = setup_without_database(prefix).await;
    apply_yaml(&setup.2, DATABASE_SECRET, "database", &setup.1)
        .await
        .expect("database Secret");
    setup
}

/// [`setup`] without the database URL Secret.
async fn setup_without_database(prefix: &str) -> (&'static ControlPlane, String, Client, Client) {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir())
        .await
        .expect("CRDs install");
    let ns = cp.create_namespace(prefix).await.expect("namespace");
    let admin = cp.client().expect("admin client");
    let operator = operator_client(cp, &ns)
        .await
        .expect("operator RBAC from the chart");
    (cp, ns, admin, operator)
}

/// The database URL Secret under the chart's default name (nothing here dials it).
const DATABASE_SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: callvault-database}\nstringData: {url: 'postgres://callvault@db.invalid/callvault'}\n";

/// A real RSA public key (PEM) and its key id.
fn public_key() -> (String, String) {
    let key = PrivateKey::generate(2048).expect("key generation");
    let pem = key.public_key().to_pem().expect("PEM");
    (pem, key.id().to_hex())
}

/// The private keys Secret the decrypting jobs mount (`<key-id>.pem` items), holding a new key.
fn key_ring_secret() -> String {
    let key = PrivateKey::generate(2048).expect("key generation");
    let pem = key.to_pkcs8_pem().expect("PEM");
    let indented = pem
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {KEY_RING}}}\nstringData:\n  {}.pem: |\n{indented}\n",
        key.id().to_hex()
    )
}

/// The private keys Secret name the test operator is configured with (the chart's default).
const KEY_RING: &str = "callvault-private-keys";

fn key_secret(name: &str, pem: &str) -> String {
    let indented = pem
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData:\n  public.pem: |\n{indented}\n"
    )
}

fn condition(status: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
                c["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

async fn status_of<K>(api: &Api<K>, name: &str) -> Result<(serde_json::Value, K), String>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object = api.get(name).await.map_err(|e| e.to_string())?;
    let value = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    Ok((value["status"].clone(), object))
}

/// Waits until condition `type_` of `name` has `status` (and, if given, `reason`); returns the
/// whole status.
async fn wait_condition<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> serde_json::Value
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    eventually(
        &format!("{name} {type_}={status} {reason:?}"),
        WAIT,
        || async {
            let (s, _) = status_of(api, name).await?;
            match condition(&s, type_) {
                Some((st, r, _)) if st == status && reason.is_none_or(|want| want == r) => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

fn owned_by<K: Resource<DynamicType = ()>>(child: &impl Resource, owner: &K) {
    let refs = child.meta().owner_references.clone().unwrap_or_default();
    assert!(
        refs.iter().any(|r| r.kind == K::kind(&())
            && Some(&r.name) == owner.meta().name.as_ref()
            && Some(&r.uid) == owner.meta().uid.as_ref()
            && r.controller == Some(true)),
        "{:?} is not controlled by {:?}: {refs:?}",
        child.meta().name,
        owner.meta().name
    );
    let labels = child.meta().labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("callvault-operator")
    );
}

#[tokio::test]
async fn cluster_examples_become_children_with_owners_and_conditions() {
    let (cp, ns, admin, op_client) = setup("op-examples").await;
    let (pem, key_id) = public_key();

    // Every example, moved into the test's namespace; the placeholder public key replaced by a
    // real one (the examples say to), and the key Secret the bank example names added.
    let mut yaml = String::new();
    for file in yaml_files(&repo_path("examples/cluster")).expect("examples") {
        for mut doc in read_yaml_documents(&file).expect("example parses") {
            if doc.object["kind"] == "Namespace" {
                continue;
            }
            doc.object["metadata"]["namespace"] = json!(ns);
            if doc.object["kind"] == "Secret"
                && doc.object["metadata"]["name"] == "recording-key-2025"
            {
                doc.object["stringData"] = json!({"public.pem": pem});
            }
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&doc.object).expect("YAML"));
        }
    }
    yaml.push_str("---\n");
    yaml.push_str(&key_secret("retail-recording-key", &pem));
    yaml.push_str("---\n");
    yaml.push_str(&key_ring_secret());
    apply_yaml(&admin, &yaml, "examples", &ns)
        .await
        .expect("examples apply");

    let operator = Operator::start(op_client, test_config(&ns))
        .await
        .expect("operator starts");

    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    let targets: Api<StorageTarget> = Api::namespaced(admin.clone(), &ns);
    // The examples' buckets are on the public cloud, which this network cannot reach.
    for target in targets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let status = wait_condition(&targets, &target.name_any(), "Reachable", "False", None).await;
        let (_, reason, message) = condition(&status, "Reachable").expect("Reachable");
        assert!(reason.starts_with("Connect"), "{reason}: {message}");
        assert!(message.contains("connect step failed"), "{message}");
        assert!(status["lastProbeTime"].is_string(), "{status}");
    }

    let list = profiles
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    assert_eq!(list.len(), 4, "the examples hold four RecordingProfiles");
    for profile in &list {
        let name = profile.name_any();
        let status = wait_condition(
            &profiles,
            &name,
            "StorageBound",
            "False",
            Some("StorageTargetUnreachable"),
        )
        .await;
        assert_eq!(
            status["observedGeneration"],
            json!(profile.metadata.generation)
        );
        let (st, reason, _) = condition(&status, "RecordersAvailable").expect("RecordersAvailable");
        assert_eq!(
            (st.as_str(), reason.as_str()),
            ("False", "RecordersUnavailable")
        );
        let (st, reason, _) = condition(&status, "Ready").expect("Ready");
        assert_eq!(
            (st.as_str(), reason.as_str()),
            ("False", "StorageTargetUnreachable")
        );
        for c in status["conditions"].as_array().expect("conditions") {
            assert_eq!(
                c["observedGeneration"],
                json!(profile.metadata.generation),
                "{c}"
            );
        }

        // The children exist, are owned and labelled, and carry the spec.
        let sts: StatefulSet = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "recorder"))
            .await
            .expect("StatefulSet");
        owned_by(&sts, profile);
        assert_eq!(sts.spec.replicas, Some(profile.spec.recorder.min_replicas));
        let pod = sts.spec.template.spec.as_ref().expect("pod spec");
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("ghcr.io/callvault/callvault:e2e")
        );
        let cm: ConfigMap = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "recorder-config"))
            .await
            .expect("ConfigMap");
        owned_by(&cm, profile);
        let config = RecorderConfig::parse(&cm.data.as_ref().expect("data")["recorder.yaml"])
            .expect("recorder config parses");
        assert_eq!(config.profile, name);
        assert_eq!(config.tenant, ns);
        assert_eq!(config.encryption.key_id, key_id);
        assert_eq!(
            i64::from(config.retention_days),
            i64::from(profile.spec.retention.days)
        );
        for service in ["recorder-headless", "recorder-sip"] {
            let svc: Service = Api::namespaced(admin.clone(), &ns)
                .get(&child_name(&name, service))
                .await
                .expect("Service");
            owned_by(&svc, profile);
            let port = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .expect("ports")[0]
                .port;
            assert_eq!(port, profile.spec.recorder.sip.port);
        }
        let pdb: PodDisruptionBudget = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "recorder"))
            .await
            .expect("PDB");
        owned_by(&pdb, profile);
        let cron: CronJob = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "retention"))
            .await
            .expect("retention CronJob");
        owned_by(&cron, profile);
        let command = cron
            .spec
            .job_template
            .spec
            .as_ref()
            .expect("job")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0]
            .command
            .clone()
            .expect("command");
        assert_eq!(
            command,
            ["callvault", "job", "retention", "--profile", name.as_str()]
        );
    }

    // Connectors: archive CronJob every 5 minutes, finalizer set.
    let connectors: Api<Connector> = Api::namespaced(admin.clone(), &ns);
    for connector in connectors
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let name = connector.name_any();
        wait_condition(&connectors, &name, "Ready", "True", Some("Reconciled")).await;
        let connector = connectors.get(&name).await.expect("connector");
        assert!(
            connector
                .finalizers()
                .contains(&"callvault.io/archive-copies".to_owned())
        );
        let cron: CronJob = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "archive"))
            .await
            .expect("archive CronJob");
        owned_by(&cron, &connector);
        assert_eq!(cron.spec.schedule, "*/5 * * * *");
        assert_eq!(cron.spec.suspend, Some(false));
        let command = cron
            .spec
            .job_template
            .spec
            .as_ref()
            .expect("job")
            .template
            .spec
            .as_ref()
            .expect("pod")
            .containers[0]
            .command
            .clone()
            .expect("command");
        assert_eq!(
            command,
            [
                "callvault",
                "job",
                "archive",
                "--connector",
                name.as_str(),
                "--config",
                "/etc/callvault/job.yaml"
            ]
        );
        // The job's configuration: every profile's target is a source, credentials by path.
        let cm: ConfigMap = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "archive-config"))
            .await
            .expect("archive ConfigMap");
        owned_by(&cm, &connector);
        let job =
            callvault_config::ArchiveJobConfig::parse(&cm.data.as_ref().expect("data")["job.yaml"])
                .expect("job config parses");
        job.validate().expect("the job accepts it");
        let mut sources: Vec<&str> = job.sources.iter().map(|s| s.name.as_str()).collect();
        sources.sort();
        assert_eq!(sources, ["primary", "primary-s3"]);
        assert_eq!(job.destination.name, connector.spec.storage_target_ref.name);
        assert!(
            !cm.data.as_ref().expect("data")["job.yaml"].contains("REPLACE-WITH"),
            "a secret value leaked into the ConfigMap"
        );
        let status = wait_condition(
            &connectors,
            &name,
            "Reachable",
            "False",
            Some("StorageTargetUnreachable"),
        )
        .await;
        assert_eq!(
            status["observedGeneration"],
            json!(connector.metadata.generation)
        );
    }

    // SpeechJobs: the job's configuration in a ConfigMap (file paths only, never key
    // material), the private keys by Secret reference, and a CronJob on their schedule.
    let speech: Api<SpeechJob> = Api::namespaced(admin.clone(), &ns);
    for job in speech
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
    {
        let name = job.name_any();
        wait_condition(&speech, &name, "Ready", "True", Some("Reconciled")).await;
        let cron: CronJob = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "transcribe"))
            .await
            .expect("transcribe CronJob");
        owned_by(&cron, &job);
        assert_eq!(Some(cron.spec.schedule.clone()), job.spec.schedule);
        let cm: ConfigMap = Api::namespaced(admin.clone(), &ns)
            .get(&child_name(&name, "transcribe-config"))
            .await
            .expect("transcription ConfigMap");
        owned_by(&cm, &job);
        let text = &cm.data.as_ref().expect("data")["job.yaml"];
        assert!(
            !text.contains("PRIVATE KEY"),
            "key material in the ConfigMap:\n{text}"
        );
        let config = TranscribeJobConfig::parse(text).expect("job config parses");
        config.validate().expect("the job accepts it");
        assert_eq!(
            (config.tenant.as_str(), config.speech_job.as_str()),
            (ns.as_str(), name.as_str())
        );
        // Its sources: the StorageTargets of the profiles it transcribes.
        let wanted = &job.spec.filter.recording_profiles;
        let mut expected: Vec<String> = list
            .iter()
            .filter(|p| wanted.is_empty() || wanted.contains(&p.name_any()))
            .map(|p| p.spec.storage_target_ref.name.clone())
            .collect();
        expected.sort();
        expected.dedup();
        let sources: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
        assert_eq!(sources, expected);
        assert_eq!(
            config.filter.recording_profiles,
            job.spec.filter.recording_profiles
        );
        let pod = cron
            .spec
            .job_template
            .spec
            .as_ref()
            .and_then(|j| j.template.spec.clone())
            .expect("pod");
        let keys_volume = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(KEY_RING))
            .expect("the private keys Secret is a volume");
        let container = &pod.containers[0];
        let mount = container
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == keys_volume.name)
            .expect("the private keys are mounted");
        assert_eq!(std::path::Path::new(&mount.mount_path), config.key_ring.dir);
        assert_eq!(mount.read_only, Some(true));
        let command = container.command.clone().expect("command");
        assert_eq!(
            command,
            [
                "callvault",
                "job",
                "transcribe",
                "--speech-job",
                name.as_str(),
                "--config",
                "/etc/callvault/job.yaml"
            ]
        );
    }

    // AccessProfiles: validated; a granted key no profile uses is named.
    let access: Api<callvault_crds::AccessProfile> = Api::namespaced(admin.clone(), &ns);
    let status = wait_condition(&access, "compliance-officers", "Ready", "True", None).await;
    let (_, _, message) = condition(&status, "Ready").expect("Ready");
    assert!(message.contains("3f7a1c9e2b4d"), "{message}");

    // The unreachable targets were reported as Warning Events an SRE sees.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let warnings: Vec<Event> = eventually("Warning Events", WAIT, || async {
        let all = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let w: Vec<Event> = all
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .collect();
        if w.iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("StorageTarget"))
        {
            Ok(w)
        } else {
            Err(format!("{} warnings", w.len()))
        }
    })
    .await;
    assert!(
        warnings
            .iter()
            .all(|e| e.reporting_controller.as_deref() == Some("callvault-operator")),
        "{warnings:#?}"
    );

    // Metrics count the reconciles.
    let reconciles = operator
        .metric("callvault_operator_reconciles_total{controller=\"recordingprofile\"}")
        .await
        .expect("metrics");
    assert!(reconciles >= 4.0, "{reconciles}");
    assert_eq!(operator.get("/healthz").await.expect("healthz").0, 200);
    operator.stop().await.expect("operator stops cleanly");
    let _ = cp;
}

/// Resource versions of a profile, its target and its six children.
async fn versions(
    admin: &Client,
    ns: &str,
    profile: &str,
    target: &str,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let rv = |o: &dyn Fn() -> Option<String>| o().unwrap_or_default();
    let p: RecordingProfile = Api::namespaced(admin.clone(), ns)
        .get(profile)
        .await
        .expect("profile");
    v.insert("profile".into(), rv(&|| p.resource_version()));
    let t: StorageTarget = Api::namespaced(admin.clone(), ns)
        .get(target)
        .await
        .expect("target");
    v.insert("target".into(), rv(&|| t.resource_version()));
    let s: StatefulSet = Api::namespaced(admin.clone(), ns)
        .get(&child_name(profile, "recorder"))
        .await
        .expect("sts");
    v.insert("statefulset".into(), rv(&|| s.resource_version()));
    let c: ConfigMap = Api::namespaced(admin.clone(), ns)
        .get(&child_name(profile, "recorder-config"))
        .await
        .expect("cm");
    v.insert("configmap".into(), rv(&|| c.resource_version()));
    for svc in ["recorder-headless", "recorder-sip"] {
        let s: Service = Api::namespaced(admin.clone(), ns)
            .get(&child_name(profile, svc))
            .await
            .expect("svc");
        v.insert(svc.into(), rv(&|| s.resource_version()));
    }
    let d: PodDisruptionBudget = Api::namespaced(admin.clone(), ns)
        .get(&child_name(profile, "recorder"))
        .await
        .expect("pdb");
    v.insert("pdb".into(), rv(&|| d.resource_version()));
    let j: CronJob = Api::namespaced(admin.clone(), ns)
        .get(&child_name(profile, "retention"))
        .await
        .expect("cronjob");
    v.insert("cronjob".into(), rv(&|| j.resource_version()));
    v
}

fn s3_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start MinIO first with `source scripts/services.sh && start_object_stores`")
    })
}

/// A StorageTarget on the test MinIO (through `endpoint`), its credentials Secret and a key.
fn minio_target(name: &str, endpoint: &str, prefix: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-credentials}}\nstringData: {{accessKeyId: {id}, secretAccessKey: {secret}}}\n---\n\
         apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: {name}}}\n\
         spec: {{type: s3, bucket: {bucket}, endpoint: '{endpoint}', region: us-east-1, prefix: {prefix}, credentialsSecretRef: {{name: {name}-credentials}}}}\n",
        id = s3_env("CALLVAULT_TEST_S3_ACCESS_KEY_ID"),
        secret = s3_env("CALLVAULT_TEST_S3_SECRET_ACCESS_KEY"),
        bucket = s3_env("CALLVAULT_TEST_S3_BUCKET"),
    )
}

#[tokio::test]
async fn children_follow_the_spec_and_nothing_is_written_when_nothing_changed() {
    let (_cp, ns, admin, op_client) = setup("op-lifecycle").await;
    let (pem, _) = public_key();
    let yaml = format!(
        "{}---\n{}---\napiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {{name: sales}}\n\
         spec:\n  selector: {{groups: [sales]}}\n  storageTargetRef: {{name: primary}}\n  encryption: {{keySecretRef: {{name: key}}}}\n  retention: {{days: 90}}\n  recorder: {{minReplicas: 2, maxReplicas: 4}}\n",
        minio_target(
            "primary",
            &s3_env("CALLVAULT_TEST_S3_ENDPOINT"),
            &format!("{ns}/primary")
        ),
        key_secret("key", &pem),
    );
    apply_yaml(&admin, &yaml, "lifecycle", &ns)
        .await
        .expect("apply");
    let mut config = test_config(&ns);
    // Only a spec change probes again within this test.
    config.probe_interval = Duration::from_secs(3600);
    let operator = Operator::start(op_client.clone(), config.clone())
        .await
        .expect("operator");

    let targets: Api<StorageTarget> = Api::namespaced(admin.clone(), &ns);
    let status = wait_condition(
        &targets,
        "primary",
        "Reachable",
        "True",
        Some("ProbeSucceeded"),
    )
    .await;
    assert!(status["lastProbeTime"].is_string());
    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    wait_condition(
        &profiles,
        "sales",
        "StorageBound",
        "True",
        Some("Reconciled"),
    )
    .await;
    let status = wait_condition(
        &profiles,
        "sales",
        "Ready",
        "False",
        Some("RecordersUnavailable"),
    )
    .await;
    assert_eq!(status["readyReplicas"], 0);

    // Play the StatefulSet controller: both recorder pods became ready.
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let sts_name = child_name("sales", "recorder");
    assert_eq!(
        statefulsets
            .get(&sts_name)
            .await
            .expect("sts")
            .spec
            .replicas,
        Some(2)
    );
    statefulsets
        .patch_status(
            &sts_name,
            &PatchParams::apply("e2e-statefulset-controller").force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2}})),
        )
        .await
        .expect("StatefulSet status");
    let status = wait_condition(&profiles, "sales", "Ready", "True", Some("Reconciled")).await;
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(status["replicas"], 2);
    let (_, _, message) = condition(&status, "RecordersAvailable").expect("RecordersAvailable");
    assert_eq!(message, "2 of 2 recorders ready");

    // A restarted operator reconciles everything again and writes nothing.
    let before = versions(&admin, &ns, "sales", "primary").await;
    operator.stop().await.expect("stops");
    let operator = Operator::start(op_client.clone(), config.clone())
        .await
        .expect("operator again");
    for controller in ["recordingprofile", "storagetarget"] {
        let series = format!(
            "callvault_operator_reconcile_duration_seconds_count{{controller=\"{controller}\"}}"
        );
        eventually(
            &format!("a finished {controller} reconcile"),
            WAIT,
            || async {
                let n = operator.metric(&series).await.map_err(|e| e.to_string())?;
                if n >= 1.0 {
                    Ok(())
                } else {
                    Err(format!("{n}"))
                }
            },
        )
        .await;
    }
    let after = versions(&admin, &ns, "sales", "primary").await;
    assert_eq!(
        before, after,
        "a reconcile with nothing changed wrote something"
    );

    // A spec change: the children follow.
    profiles
        .patch(
            "sales",
            &PatchParams::apply("e2e-user").force(),
            &Patch::Apply(json!({"apiVersion": "callvault.io/v1alpha1", "kind": "RecordingProfile",
                "spec": {"selector": {"groups": ["sales"]}, "storageTargetRef": {"name": "primary"},
                         "encryption": {"keySecretRef": {"name": "key"}}, "retention": {"days": 120},
                         "recorder": {"minReplicas": 3, "maxReplicas": 4, "sip": {"port": 5070}}}})),
        )
        .await
        .expect("spec change");
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    eventually("the ConfigMap to follow", WAIT, || async {
        let cm = cms
            .get(&child_name("sales", "recorder-config"))
            .await
            .map_err(|e| e.to_string())?;
        let config = RecorderConfig::parse(&cm.data.unwrap_or_default()["recorder.yaml"])
            .map_err(|e| e.to_string())?;
        if config.retention_days == 120 && config.sip.port == 5070 {
            Ok(())
        } else {
            Err(format!("{} {}", config.retention_days, config.sip.port))
        }
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let sip = svcs
        .get(&child_name("sales", "recorder-sip"))
        .await
        .expect("svc");
    assert_eq!(sip.spec.and_then(|s| s.ports).expect("ports")[0].port, 5070);
    let sts = statefulsets.get(&sts_name).await.expect("sts");
    assert_eq!(sts.spec.replicas, Some(3), "minReplicas 3 raises the pool");
    eventually("generation 2 observed and Ready", WAIT, || async {
        let (s, _) = status_of(&profiles, "sales").await?;
        let ready = condition(&s, "Ready").map(|c| c.0);
        if s["observedGeneration"] == 2 && ready.as_deref() == Some("True") {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;

    // Disabling scales to zero and keeps everything else (the recordings stay readable).
    profiles
        .patch(
            "sales",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"disabled": true}})),
        )
        .await
        .expect("disable");
    wait_condition(&profiles, "sales", "Ready", "False", Some("Disabled")).await;
    eventually("zero recorders", WAIT, || async {
        let r = statefulsets
            .get(&sts_name)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .replicas;
        if r == Some(0) {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    cms.get(&child_name("sales", "recorder-config"))
        .await
        .expect("ConfigMap kept");
    operator.stop().await.expect("stops");
}

#[tokio::test]
async fn a_connector_that_archived_cannot_be_deleted_until_its_count_is_zero() {
    let (_cp, ns, admin, op_client) = setup("op-connector").await;
    let yaml = "apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {name: archive}\nspec: {type: filesystem, path: /nonexistent/archive}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {name: primary}\nspec: {type: filesystem, path: /nonexistent/primary}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {name: sales}\nspec: {selector: {allUsers: true}, storageTargetRef: {name: primary}, encryption: {keySecretRef: {name: key}}}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: Connector\nmetadata: {name: used}\nspec: {storageTargetRef: {name: archive}}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: Connector\nmetadata: {name: unused}\nspec: {storageTargetRef: {name: archive}, active: false}\n";
    apply_yaml(&admin, yaml, "connectors", &ns)
        .await
        .expect("apply");
    let operator = Operator::start(op_client, test_config(&ns))
        .await
        .expect("operator");
    let connectors: Api<Connector> = Api::namespaced(admin.clone(), &ns);
    for name in ["used", "unused"] {
        wait_condition(&connectors, name, "Ready", "True", None).await;
    }
    let cron: CronJob = Api::namespaced(admin.clone(), &ns)
        .get(&child_name("unused", "archive"))
        .await
        .expect("CronJob");
    assert_eq!(
        cron.spec.suspend,
        Some(true),
        "an inactive Connector's CronJob is suspended"
    );

    // The archive job reports its count under its own field manager.
    connectors
        .patch_status(
            "used",
            &PatchParams::apply("callvault-job-archive").force(),
            &Patch::Apply(
                json!({"apiVersion": "callvault.io/v1alpha1", "kind": "Connector",
                "status": {"archivedFiles": 3, "pendingFiles": 1}}),
            ),
        )
        .await
        .expect("job status");

    // Never archived: deletion goes through.
    connectors
        .delete("unused", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("unused to go", WAIT, || async {
        match connectors
            .get_opt("unused")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(c) => Err(format!("still there: {:?}", c.metadata.finalizers)),
        }
    })
    .await;

    // Archived: deletion is held, and the condition says why.
    connectors
        .delete("used", &DeleteParams::default())
        .await
        .expect("delete");
    let status = wait_condition(
        &connectors,
        "used",
        "DeletionBlocked",
        "True",
        Some("ArchivesExist"),
    )
    .await;
    let (_, _, message) = condition(&status, "DeletionBlocked").expect("DeletionBlocked");
    assert!(message.contains("3 recordings were archived"), "{message}");
    // The operator's writes left the job's counters alone.
    assert_eq!(status["archivedFiles"], 3);
    assert_eq!(status["pendingFiles"], 1);
    assert!(
        connectors
            .get("used")
            .await
            .expect("still there")
            .metadata
            .deletion_timestamp
            .is_some()
    );

    connectors
        .patch_status(
            "used",
            &PatchParams::apply("callvault-job-archive").force(),
            &Patch::Apply(
                json!({"apiVersion": "callvault.io/v1alpha1", "kind": "Connector",
                "status": {"archivedFiles": 0, "pendingFiles": 0}}),
            ),
        )
        .await
        .expect("job status");
    eventually("used to go", WAIT, || async {
        match connectors
            .get_opt("used")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    operator.stop().await.expect("stops");
}

/// Issue 17: a RecordingProfile whose recordings are stored cannot be deleted (reference
/// products: disable it instead): the operator holds it with a finalizer and says why until
/// the retention job reports none stored. One that never recorded goes at once. The
/// StorageTarget they store on stays while either of them does.
#[tokio::test]
async fn a_profile_with_stored_recordings_cannot_be_deleted_until_retention_removed_them() {
    let (_cp, ns, admin, op_client) = setup("op-profile-delete").await;
    let yaml = "apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {name: primary}\nspec: {type: filesystem, path: /nonexistent/primary}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {name: sales}\nspec: {selector: {allUsers: true}, storageTargetRef: {name: primary}, encryption: {keySecretRef: {name: key}}}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {name: idle}\nspec: {selector: {allUsers: true}, storageTargetRef: {name: primary}, encryption: {keySecretRef: {name: key}}}\n";
    apply_yaml(&admin, yaml, "profiles", &ns)
        .await
        .expect("apply");
    let operator = Operator::start(op_client, test_config(&ns))
        .await
        .expect("operator");
    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    for name in ["sales", "idle"] {
        eventually("the finalizer", WAIT, || async {
            let p = profiles.get(name).await.map_err(|e| e.to_string())?;
            p.finalizers()
                .contains(&"callvault.io/recordings".to_owned())
                .then_some(())
                .ok_or_else(|| format!("finalizers {:?}", p.metadata.finalizers))
        })
        .await;
    }
    // The retention job counts 5 stored recordings of sales, under its own field manager.
    let retention = |stored: i64| {
        json!({"apiVersion": "callvault.io/v1alpha1", "kind": "RecordingProfile",
        "status": {"retention": {"days": 30, "lastRunTime": "2026-12-07T02:00:00Z",
            "storedRecordings": stored}}})
    };
    profiles
        .patch_status(
            "sales",
            &PatchParams::apply("callvault-job-retention").force(),
            &Patch::Apply(retention(5)),
        )
        .await
        .expect("job status");

    // The target both store on: held while they are there.
    let targets: Api<StorageTarget> = Api::namespaced(admin.clone(), &ns);
    targets
        .delete("primary", &DeleteParams::default())
        .await
        .expect("delete");
    let status = wait_condition(
        &targets,
        "primary",
        "DeletionBlocked",
        "True",
        Some("StorageInUse"),
    )
    .await;
    let (_, _, message) = condition(&status, "DeletionBlocked").expect("DeletionBlocked");
    assert!(
        message.starts_with("RecordingProfile idle, RecordingProfile sales stores"),
        "{message}"
    );

    let gone = |name: &'static str| {
        let profiles = profiles.clone();
        async move {
            eventually(&format!("{name} to go"), WAIT, || async {
                match profiles.get_opt(name).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(p) => Err(format!("still there: {:?}", p.metadata.finalizers)),
                }
            })
            .await;
        }
    };
    profiles
        .delete("idle", &DeleteParams::default())
        .await
        .expect("delete");
    gone("idle").await;

    profiles
        .delete("sales", &DeleteParams::default())
        .await
        .expect("delete");
    let status = wait_condition(
        &profiles,
        "sales",
        "DeletionBlocked",
        "True",
        Some("RecordingsExist"),
    )
    .await;
    let (_, _, message) = condition(&status, "DeletionBlocked").expect("DeletionBlocked");
    assert!(
        message.contains("5 recordings of this profile are stored"),
        "{message}"
    );
    assert_eq!(
        status["retention"]["storedRecordings"], 5,
        "the job's count is left alone"
    );

    profiles
        .patch_status(
            "sales",
            &PatchParams::apply("callvault-job-retention").force(),
            &Patch::Apply(retention(0)),
        )
        .await
        .expect("job status");
    gone("sales").await;
    eventually(
        "the target to go once nothing stores on it",
        WAIT,
        || async {
            match targets
                .get_opt("primary")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(t) => Err(format!("still there: {:?}", t.metadata.finalizers)),
            }
        },
    )
    .await;
    operator.stop().await.expect("stops");
}

#[tokio::test]
async fn speech_job_counters_written_by_the_job_survive_reconciles() {
    let (_cp, ns, admin, op_client) = setup("op-speech").await;
    let yaml = "apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {name: primary}\nspec: {type: filesystem, path: /nonexistent/primary}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {name: sales}\nspec: {selector: {allUsers: true}, storageTargetRef: {name: primary}, encryption: {keySecretRef: {name: key}}}\n---\n\
                apiVersion: callvault.io/v1alpha1\nkind: SpeechJob\nmetadata: {name: calls}\n\
                spec: {engine: {type: openai, endpoint: 'http://127.0.0.1:9/v1'}, schedule: '0 * * * *'}\n";
    apply_yaml(&admin, yaml, "speech", &ns)
        .await
        .expect("apply");
    let operator = Operator::start(op_client, test_config(&ns))
        .await
        .expect("operator");
    let jobs: Api<SpeechJob> = Api::namespaced(admin.clone(), &ns);

    // Without the private keys Secret the job's pods could not start: Ready says so.
    let status = wait_condition(&jobs, "calls", "Ready", "False", Some("KeySecretNotFound")).await;
    let (_, _, message) = condition(&status, "Ready").expect("Ready");
    assert!(message.contains(KEY_RING), "{message}");
    apply_yaml(&admin, &key_ring_secret(), "keys", &ns)
        .await
        .expect("key ring");
    wait_condition(&jobs, "calls", "Ready", "True", None).await;
    let crons: Api<CronJob> = Api::namespaced(admin.clone(), &ns);
    let cron = crons
        .get(&child_name("calls", "transcribe"))
        .await
        .expect("CronJob");
    assert_eq!(cron.spec.schedule, "0 * * * *");

    jobs.patch_status(
        "calls",
        &PatchParams::apply("callvault-job-transcribe").force(),
        &Patch::Apply(
            json!({"apiVersion": "callvault.io/v1alpha1", "kind": "SpeechJob",
            "status": {"processed": 5, "failed": 1, "pending": 7}}),
        ),
    )
    .await
    .expect("job status");

    // A new schedule: the CronJob follows, the counters stay.
    jobs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": "*/30 * * * *"}})),
    )
    .await
    .expect("spec change");
    eventually("the CronJob schedule to follow", WAIT, || async {
        let c = crons
            .get(&child_name("calls", "transcribe"))
            .await
            .map_err(|e| e.to_string())?;
        if c.spec.schedule == "*/30 * * * *" {
            Ok(())
        } else {
            Err(c.spec.schedule)
        }
    })
    .await;
    let status = eventually("observedGeneration 2", WAIT, || async {
        let (s, _) = status_of(&jobs, "calls").await?;
        if s["observedGeneration"] == 2 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(
        (
            status["processed"].clone(),
            status["failed"].clone(),
            status["pending"].clone()
        ),
        (json!(5), json!(1), json!(7))
    );

    // "Run now", as the portal asks for it: a Job from the same pod template, once per
    // request; a newer request replaces an older one's Job.
    let run_now = callvault_portal::AnnotateRunNow::new(admin.clone());
    let job_api: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let mut requested = Vec::new();
    for _ in 0..2 {
        run_now.run_speech_job(&ns, "calls").await.expect("run now");
        let value = jobs.get("calls").await.expect("SpeechJob").annotations()
            [callvault_crds::RUN_NOW_ANNOTATION]
            .clone();
        let name = run_now_job_name("calls", &value);
        let job = eventually("the run-now Job", WAIT, || async {
            job_api
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_owned())
        })
        .await;
        owned_by(&job, &jobs.get("calls").await.expect("SpeechJob"));
        let command = job
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].command.clone());
        assert!(format!("{command:?}").contains("transcribe"), "{command:?}");
        // The value is the request's time to the nanosecond: the next request is another.
        requested.push(name);
    }
    assert_ne!(requested[0], requested[1]);
    eventually("the older run-now Job to be removed", WAIT, || async {
        match job_api
            .get_opt(&requested[0])
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;

    // Without a schedule it runs once: a Job replaces the CronJob.
    jobs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": null}})),
    )
    .await
    .expect("run once");
    let job = eventually("the run-once Job", WAIT, || async {
        job_api
            .get_opt(&child_name("calls", "transcribe-3"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "absent".to_owned())
    })
    .await;
    let owner = jobs.get("calls").await.expect("SpeechJob");
    owned_by(&job, &owner);
    eventually("the CronJob to be removed", WAIT, || async {
        match crons
            .get_opt(&child_name("calls", "transcribe"))
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    let (status, _) = status_of(&jobs, "calls").await.expect("status");
    assert_eq!(status["processed"], 5);

    // Scheduled again: the CronJob is back and the finished run's Job goes.
    jobs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"schedule": "0 * * * *"}})),
    )
    .await
    .expect("scheduled again");
    eventually("the Job to go and the CronJob to return", WAIT, || async {
        let job = job_api
            .get_opt(&child_name("calls", "transcribe-3"))
            .await
            .map_err(|e| e.to_string())?;
        let cron = crons
            .get_opt(&child_name("calls", "transcribe"))
            .await
            .map_err(|e| e.to_string())?;
        match (job, cron) {
            (None, Some(_)) => Ok(()),
            (j, c) => Err(format!("job {:?}, cronjob {:?}", j.is_some(), c.is_some())),
        }
    })
    .await;

    // Its only profile removed, nothing is left to transcribe: the workload and its
    // configuration go, and Ready says why.
    Api::<RecordingProfile>::namespaced(admin.clone(), &ns)
        .delete("sales", &DeleteParams::default())
        .await
        .expect("delete the profile");
    let status = wait_condition(
        &jobs,
        "calls",
        "Ready",
        "False",
        Some("StorageTargetNotFound"),
    )
    .await;
    let (_, _, message) = condition(&status, "Ready").expect("Ready");
    assert!(message.contains("nothing to transcribe"), "{message}");
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    eventually("the ConfigMap and CronJob to go", WAIT, || async {
        let cm = cms
            .get_opt(&child_name("calls", "transcribe-config"))
            .await
            .map_err(|e| e.to_string())?;
        let cron = crons
            .get_opt(&child_name("calls", "transcribe"))
            .await
            .map_err(|e| e.to_string())?;
        match (cm, cron) {
            (None, None) => Ok(()),
            (c, j) => Err(format!(
                "configmap {:?}, cronjob {:?}",
                c.is_some(),
                j.is_some()
            )),
        }
    })
    .await;
    operator.stop().await.expect("stops");
}

/// Forwards connections on `listener` to `to` until dropped: the S3 server "is up" while this
/// runs, and refuses connections once it is stopped.
fn forward(listener: tokio::net::TcpListener, to: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn a_stopped_s3_server_is_unreachable_naming_the_step_and_reachable_once_started() {
    let (_cp, ns, admin, op_client) = setup("op-reach").await;
    // A port nothing listens on yet; MinIO is reached through it once "started".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let minio = s3_env("CALLVAULT_TEST_S3_ENDPOINT");
    let minio_addr = minio
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    apply_yaml(
        &admin,
        &minio_target(
            "flaky",
            &format!("http://127.0.0.1:{port}"),
            &format!("{ns}/flaky"),
        ),
        "target",
        &ns,
    )
    .await
    .expect("apply");
    let mut config = test_config(&ns);
    config.probe_interval = Duration::from_secs(2);
    let operator = Operator::start(op_client, config).await.expect("operator");

    let targets: Api<StorageTarget> = Api::namespaced(admin.clone(), &ns);
    let status = wait_condition(
        &targets,
        "flaky",
        "Reachable",
        "False",
        Some("ConnectUnreachable"),
    )
    .await;
    let (_, _, message) = condition(&status, "Reachable").expect("Reachable");
    assert!(message.starts_with("connect step failed"), "{message}");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the S3 port");
    let server = forward(listener, minio_addr);
    let status = wait_condition(
        &targets,
        "flaky",
        "Reachable",
        "True",
        Some("ProbeSucceeded"),
    )
    .await;
    assert!(status["objects"].is_number(), "{status}");

    // The Events follow the status write that shows the transition: wait for them.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    let seen = |list: &[Event], type_: &str, reason: &str| {
        list.iter()
            .any(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
    };
    eventually("the unreachable and reachable Events", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        (seen(&list, "Warning", "ConnectUnreachable") && seen(&list, "Normal", "ProbeSucceeded"))
            .then_some(())
            .ok_or_else(|| format!("{} events, not both", list.len()))
    })
    .await;

    server.abort();
    operator.stop().await.expect("stops");
}

/// How long a hand edit of a child may last: the child's watch event reconciles its owner.
const HEAL: Duration = Duration::from_secs(10);

/// The kinds of children a RecordingProfile has, as the applies metric names them.
const CHILD_KINDS: [&str; 5] = [
    "ConfigMap",
    "Service",
    "PodDisruptionBudget",
    "StatefulSet",
    "CronJob",
];

/// Children the operator applied so far (every kind a profile has).
async fn applies(operator: &Operator) -> f64 {
    let mut total = 0.0;
    for kind in CHILD_KINDS {
        total += operator
            .metric(&format!(
                "callvault_operator_applies_total{{kind=\"{kind}\"}}"
            ))
            .await
            .expect("metrics");
    }
    total
}

/// Triggers reconciles of `profile` that have nothing to change (a label of another field
/// manager on its ConfigMap is no field of the operator) until one finishes with no apply in
/// between; returns how many reconciles that took. Panics when every reconcile applied
/// something.
async fn idle_reconcile_writes_nothing(
    operator: &Operator,
    cms: &Api<ConfigMap>,
    profile: &str,
) -> usize {
    let finished =
        "callvault_operator_reconcile_duration_seconds_count{controller=\"recordingprofile\"}";
    static TOUCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for attempt in 1..=5 {
        // A new value each time: applying the same label again would change nothing.
        let touch = TOUCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (applied, reconciled) = (
            applies(operator).await,
            operator.metric(finished).await.expect("metrics"),
        );
        cms.patch(
            &child_name(profile, "recorder-config"),
            &PatchParams::apply("e2e-someone-else"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"labels": {"e2e-touched": touch.to_string()}}})),
        )
        .await
        .expect("label the ConfigMap");
        eventually("a reconcile after the touch", WAIT, || async {
            let n = operator.metric(finished).await.map_err(|e| e.to_string())?;
            if n > reconciled {
                Ok(())
            } else {
                Err(format!("{n}"))
            }
        })
        .await;
        if applies(operator).await == applied {
            return attempt;
        }
    }
    panic!("five reconciles with nothing changed each applied a child");
}

#[tokio::test]
async fn hand_edits_of_every_child_are_reverted_within_seconds() {
    let (_cp, ns, admin, op_client) = setup("op-drift").await;
    let (pem, _) = public_key();
    let yaml = format!(
        "apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: primary}}\nspec: {{type: filesystem, path: /nonexistent/drift}}\n---\n{}---\n\
         apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {{name: sales}}\n\
         spec: {{selector: {{allUsers: true}}, storageTargetRef: {{name: primary}}, encryption: {{keySecretRef: {{name: key}}}}, retention: {{days: 30}}, recorder: {{minReplicas: 2, maxReplicas: 4}}}}\n",
        key_secret("key", &pem)
    );
    apply_yaml(&admin, &yaml, "drift", &ns)
        .await
        .expect("apply");
    let config = test_config(&ns);
    let operator = Operator::start(op_client.clone(), config.clone())
        .await
        .expect("operator");

    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    let cron_jobs: Api<CronJob> = Api::namespaced(admin.clone(), &ns);
    let (sts, cm, sip, headless, pdb, retention) = (
        child_name("sales", "recorder"),
        child_name("sales", "recorder-config"),
        child_name("sales", "recorder-sip"),
        child_name("sales", "recorder-headless"),
        child_name("sales", "recorder"),
        child_name("sales", "retention"),
    );
    // What the operator applied, as the API server stores it.
    let original = eventually("every child", WAIT, || async {
        let e = |e: kube::Error| e.to_string();
        Ok::<_, String>((
            statefulsets.get(&sts).await.map_err(e)?.spec.replicas,
            cms.get(&cm).await.map_err(e)?.data,
            svcs.get(&sip).await.map_err(e)?.spec.and_then(|s| s.ports),
            pdbs.get(&pdb).await.map_err(e)?.spec,
            cron_jobs.get(&retention).await.map_err(e)?.spec.schedule,
        ))
    })
    .await;
    assert_eq!(original.0, Some(2));
    let config_data = original.1.clone().expect("ConfigMap data");
    let ports = original.2.clone().expect("SIP Service ports");
    let pdb_spec = original.3.clone().expect("PDB spec");
    let schedule = original.4.clone();

    // Once settled, a reconcile with nothing to change writes nothing.
    let tries = idle_reconcile_writes_nothing(&operator, &cms, "sales").await;
    println!("idle reconcile without writes after {tries} touch(es)");

    let by_hand = PatchParams {
        field_manager: Some("e2e-hand-edit".to_owned()),
        ..PatchParams::default()
    };
    let healed = |what: &'static str, started: std::time::Instant| {
        println!("{what} restored in {:?}", started.elapsed());
    };

    // StatefulSet replicas, as `kubectl scale` would.
    let started = std::time::Instant::now();
    statefulsets
        .patch(
            &sts,
            &by_hand,
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .expect("scale by hand");
    eventually("the replicas restored", HEAL, || async {
        let r = statefulsets
            .get(&sts)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .replicas;
        if r == Some(2) {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;
    healed("StatefulSet replicas", started);

    // ConfigMap data, as `kubectl edit` would.
    let started = std::time::Instant::now();
    let mut edited = config_data.clone();
    for value in edited.values_mut() {
        value.push_str("\n# edited by hand\n");
    }
    cms.patch(&cm, &by_hand, &Patch::Merge(json!({"data": edited})))
        .await
        .expect("edit the ConfigMap");
    eventually("the ConfigMap data restored", HEAL, || async {
        let data = cms.get(&cm).await.map_err(|e| e.to_string())?.data;
        if data.as_ref() == Some(&config_data) {
            Ok(())
        } else {
            Err(format!("{data:?}"))
        }
    })
    .await;
    healed("ConfigMap data", started);

    // Service ports: the SIP port sent somewhere else.
    let started = std::time::Instant::now();
    let mut moved = ports.clone();
    moved[0].target_port =
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9999));
    svcs.patch(
        &sip,
        &by_hand,
        &Patch::Merge(json!({"spec": {"ports": moved}})),
    )
    .await
    .expect("edit the Service");
    eventually("the Service ports restored", HEAL, || async {
        let now = svcs
            .get(&sip)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .and_then(|s| s.ports);
        if now.as_ref() == Some(&ports) {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    healed("Service ports", started);

    // PodDisruptionBudget: more recorders allowed down at once.
    let started = std::time::Instant::now();
    pdbs.patch(
        &pdb,
        &by_hand,
        &Patch::Merge(json!({"spec": {"maxUnavailable": 3}})),
    )
    .await
    .expect("edit the PDB");
    eventually("the PDB restored", HEAL, || async {
        let spec = pdbs.get(&pdb).await.map_err(|e| e.to_string())?.spec;
        if spec.as_ref() == Some(&pdb_spec) {
            Ok(())
        } else {
            Err(format!("{spec:?}"))
        }
    })
    .await;
    healed("PodDisruptionBudget", started);

    // CronJob schedule: retention once a year instead of daily.
    let started = std::time::Instant::now();
    cron_jobs
        .patch(
            &retention,
            &by_hand,
            &Patch::Merge(json!({"spec": {"schedule": "0 0 1 1 *"}})),
        )
        .await
        .expect("edit the CronJob");
    eventually("the CronJob schedule restored", HEAL, || async {
        let now = cron_jobs
            .get(&retention)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .schedule;
        if now == schedule { Ok(()) } else { Err(now) }
    })
    .await;
    healed("CronJob schedule", started);

    // A deleted child comes back.
    let started = std::time::Instant::now();
    svcs.delete(&headless, &DeleteParams::default())
        .await
        .expect("delete the headless Service");
    eventually("the headless Service recreated", HEAL, || async {
        svcs.get_opt(&headless)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "absent".to_owned())
    })
    .await;
    healed("deleted Service", started);

    // Edits made while the operator is down are reverted when it starts again.
    operator.stop().await.expect("stops");
    statefulsets
        .patch(
            &sts,
            &by_hand,
            &Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await
        .expect("scale by hand");
    cron_jobs
        .patch(
            &retention,
            &by_hand,
            &Patch::Merge(json!({"spec": {"schedule": "0 0 1 1 *"}})),
        )
        .await
        .expect("edit the CronJob");
    let started = std::time::Instant::now();
    let operator = Operator::start(op_client, config)
        .await
        .expect("operator again");
    eventually("edits made while stopped reverted", HEAL, || async {
        let r = statefulsets
            .get(&sts)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .replicas;
        let s = cron_jobs
            .get(&retention)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .schedule;
        if r == Some(2) && s == schedule {
            Ok(())
        } else {
            Err(format!("{r:?} {s}"))
        }
    })
    .await;
    healed("edits made while the operator was stopped", started);
    let reverted = applies(&operator).await;
    assert!(
        (2.0..=4.0).contains(&reverted),
        "a restart reverting two edits applied {reverted} children"
    );
    idle_reconcile_writes_nothing(&operator, &cms, "sales").await;
    operator.stop().await.expect("stops");
}

#[tokio::test]
async fn a_child_the_api_server_refuses_is_a_false_condition_with_its_message() {
    let (_cp, ns, admin, op_client) = setup("op-refused").await;
    let (pem, _) = public_key();
    let yaml = format!(
        "apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: primary}}\nspec: {{type: filesystem, path: /nonexistent/refused}}\n---\n{}---\n\
         apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {{name: sales}}\n\
         spec: {{selector: {{allUsers: true}}, storageTargetRef: {{name: primary}}, encryption: {{keySecretRef: {{name: key}}}}}}\n",
        key_secret("key", &pem)
    );
    apply_yaml(&admin, &yaml, "refused", &ns)
        .await
        .expect("apply");
    // A spool StorageClass name no volume claim can have (a typo in the chart's values): the
    // StatefulSet is refused by the API server.
    let mut config = test_config(&ns);
    config.spool_storage_class = Some("Fast SSD".to_owned());
    let operator = Operator::start(op_client, config).await.expect("operator");
    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    let status = wait_condition(&profiles, "sales", "Ready", "False", Some("InvalidSpec")).await;
    let (_, _, message) = condition(&status, "Ready").expect("Ready");
    assert!(
        message.contains("the API server refused StatefulSet")
            && message.contains("storageClassName")
            && message.contains("Fast SSD"),
        "{message}"
    );
    // Said once as an Event too, not only in a log line.
    let events: Api<Event> = Api::namespaced(admin.clone(), &ns);
    eventually("a Warning Event for the refusal", WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidSpec")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("refused StatefulSet"))
            })
            .map(|_| ())
            .ok_or_else(|| format!("{} events", list.items.len()))
    })
    .await;
    operator.stop().await.expect("stops");
}

#[tokio::test]
async fn a_credentials_secret_created_after_its_storage_target_is_noticed_in_seconds() {
    let (_cp, ns, admin, op_client) = setup("op-late-secret").await;
    let (secret, target) = minio_target(
        "late",
        &s3_env("CALLVAULT_TEST_S3_ENDPOINT"),
        &format!("{ns}/late"),
    )
    .split_once("---\n")
    .map(|(s, t)| (s.to_owned(), t.to_owned()))
    .expect("a Secret and a StorageTarget");
    apply_yaml(&admin, &target, "late-target", &ns)
        .await
        .expect("apply the target");
    // The default interval: only the Secret's watch can make the probe run again in time.
    let config = test_config(&ns);
    assert!(config.probe_interval >= Duration::from_secs(300));
    let operator = Operator::start(op_client, config).await.expect("operator");
    let targets: Api<StorageTarget> = Api::namespaced(admin.clone(), &ns);
    wait_condition(
        &targets,
        "late",
        "Reachable",
        "False",
        Some("CredentialsNotFound"),
    )
    .await;
    wait_condition(
        &targets,
        "late",
        "Ready",
        "False",
        Some("CredentialsNotFound"),
    )
    .await;

    let started = std::time::Instant::now();
    apply_yaml(&admin, &secret, "late-secret", &ns)
        .await
        .expect("apply the Secret");
    eventually("the target probed with its new Secret", HEAL, || async {
        let (s, _) = status_of(&targets, "late").await?;
        match (condition(&s, "Reachable"), condition(&s, "Ready")) {
            (Some((r, _, _)), Some((ready, _, _))) if r == "True" && ready == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    println!("late Secret noticed in {:?}", started.elapsed());
    operator.stop().await.expect("stops");
}

/// Every workload of a namespace mounts the database URL Secret. Without it a profile's
/// recorders, a Connector's archive runs and a SpeechJob's runs could never start: each says so
/// (Ready False `DatabaseSecretNotFound`, naming the Secret), and the Secret created later is
/// noticed through its watch, well before any periodic look.
#[tokio::test]
async fn a_missing_database_secret_is_named_by_every_resource_and_noticed_once_created() {
    let (_cp, ns, admin, op_client) = setup_without_database("op-no-database").await;
    let (pem, _) = public_key();
    let yaml = format!(
        "{}---\n{}---\n\
         apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: primary}}\nspec: {{type: filesystem, path: /nonexistent/primary}}\n---\n\
         apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: offsite}}\nspec: {{type: filesystem, path: /nonexistent/offsite}}\n---\n\
         apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {{name: sales}}\nspec: {{selector: {{allUsers: true}}, storageTargetRef: {{name: primary}}, encryption: {{keySecretRef: {{name: key}}}}}}\n---\n\
         apiVersion: callvault.io/v1alpha1\nkind: Connector\nmetadata: {{name: offsite}}\nspec: {{storageTargetRef: {{name: offsite}}, schedule: '0 3 * * *'}}\n---\n\
         apiVersion: callvault.io/v1alpha1\nkind: SpeechJob\nmetadata: {{name: calls}}\n\
         spec: {{engine: {{type: openai, endpoint: 'http://127.0.0.1:9/v1'}}, schedule: '0 * * * *'}}\n",
        key_secret("key", &pem),
        key_ring_secret(),
    );
    apply_yaml(&admin, &yaml, "no-database", &ns)
        .await
        .expect("apply");
    let operator = Operator::start(op_client, test_config(&ns))
        .await
        .expect("operator");
    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    let connectors: Api<Connector> = Api::namespaced(admin.clone(), &ns);
    let jobs: Api<SpeechJob> = Api::namespaced(admin.clone(), &ns);
    let missing = Some("DatabaseSecretNotFound");
    let statuses = [
        wait_condition(&profiles, "sales", "Ready", "False", missing).await,
        wait_condition(&connectors, "offsite", "Ready", "False", missing).await,
        wait_condition(&jobs, "calls", "Ready", "False", missing).await,
    ];
    for status in &statuses {
        let (_, _, message) = condition(status, "Ready").expect("Ready");
        assert!(
            message.contains("Secret callvault-database") && message.contains(&ns),
            "{message}"
        );
    }

    apply_yaml(&admin, DATABASE_SECRET, "database", &ns)
        .await
        .expect("database Secret");
    eventually("every resource past the missing Secret", HEAL, || async {
        let mut reasons = Vec::new();
        reasons.push(condition(&status_of(&profiles, "sales").await?.0, "Ready"));
        reasons.push(condition(
            &status_of(&connectors, "offsite").await?.0,
            "Ready",
        ));
        reasons.push(condition(&status_of(&jobs, "calls").await?.0, "Ready"));
        let reasons: Vec<String> = reasons
            .into_iter()
            .map(|c| c.map(|(_, r, _)| r).unwrap_or_default())
            .collect();
        // The profile moves on to what else keeps it from recording here (its target is
        // not there, no kubelet runs its recorders).
        (reasons[0] != "DatabaseSecretNotFound" && reasons[1..] == ["Reconciled", "Reconciled"])
            .then_some(())
            .ok_or_else(|| format!("{reasons:?}"))
    })
    .await;
    operator.stop().await.expect("stops");
}

/// A recorder's operations endpoint on `ip`:8080 answering `/status` with what `report` holds
/// at the time, as a recorder pod does; no kubelet runs pods here.
async fn fake_recorder(
    ip: &str,
    report: Arc<Mutex<serde_json::Value>>,
) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind((ip, 8080))
        .await
        .unwrap_or_else(|e| panic!("{ip}:8080 for a fake recorder: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let body = report.lock().expect("report").to_string();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    })
}

/// The profile's status and the ConfigMap `<profile>-recorder-endpoints` list the recorders
/// that take calls now: a ready one with room is listed (its URI per transport, a dispatcher
/// line, an address line), a draining one is not, and one that fills up leaves the list.
#[tokio::test]
async fn call_sources_learn_the_recorders_taking_calls() {
    let (_cp, ns, admin, op_client) = setup("op-endpoints").await;
    let (pem, _) = public_key();
    let yaml = format!(
        "{}---\napiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: primary}}\nspec: {{type: filesystem, path: /nonexistent/primary}}\n---\n\
         apiVersion: callvault.io/v1alpha1\nkind: RecordingProfile\nmetadata: {{name: desk}}\nspec: {{selector: {{allUsers: true}}, storageTargetRef: {{name: primary}}, encryption: {{keySecretRef: {{name: key}}}}, recorder: {{minReplicas: 2}}}}\n",
        key_secret("key", &pem)
    );
    apply_yaml(&admin, &yaml, "endpoints", &ns)
        .await
        .expect("apply");
    let report = |active: u32, draining: bool| {
        json!({"profile": "desk", "activeSessions": active, "capacity": 200,
               "draining": draining, "usersMatched": 0})
    };
    let taking = Arc::new(Mutex::new(report(3, false)));
    let draining = Arc::new(Mutex::new(report(1, true)));
    let _servers = [
        fake_recorder("127.0.0.2", taking.clone()).await,
        fake_recorder("127.0.0.3", draining.clone()).await,
    ];
    let mut config = test_config(&ns);
    config.load_interval = Duration::from_secs(1);
    let operator = Operator::start(op_client, config).await.expect("operator");

    // Two ready recorder pods, as the kubelet would report them.
    let sets: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let set_name = child_name("desk", "recorder");
    let set = eventually("the recorder StatefulSet", WAIT, || async {
        sets.get(&set_name).await.map_err(|e| e.to_string())
    })
    .await;
    let labels = set.spec.selector.match_labels.unwrap_or_default();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin.clone(), &ns);
    for (i, ip) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        let name = format!("{set_name}-{i}");
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "recorder", "image": "ghcr.io/callvault/callvault:e2e"}]}});
        pods.patch(
            &name,
            &PatchParams::apply("e2e-kubelet").force(),
            &Patch::Apply(&pod),
        )
        .await
        .expect("pod");
        let status = json!({"apiVersion": "v1", "kind": "Pod", "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(
            &name,
            &PatchParams::apply("e2e-kubelet").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("pod status");
    }
    let ready = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
    sets.patch_status(
        &set_name,
        &PatchParams::apply("e2e-kubelet").force(),
        &Patch::Apply(&ready),
    )
    .await
    .expect("StatefulSet status");

    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let map_name = child_name("desk", "recorder-endpoints");
    let listed = [
        "sip:127.0.0.2:5060;transport=udp",
        "sip:127.0.0.2:5060;transport=tcp",
    ];
    eventually(
        "the recorder taking calls listed, the draining one not",
        WAIT,
        || async {
            let (s, _) = status_of(&profiles, "desk").await?;
            (s["endpoints"] == json!(listed))
                .then_some(())
                .ok_or_else(|| format!("endpoints {}", s["endpoints"]))
        },
    )
    .await;
    let map = maps.get(&map_name).await.expect("endpoints ConfigMap");
    let data = map.data.unwrap_or_default();
    assert_eq!(data["endpoints"], format!("{}\n{}\n", listed[0], listed[1]));
    assert!(
        data["dispatcher.list"].contains(&format!("1 {} 0 0\n1 {} 0 0\n", listed[0], listed[1])),
        "{}",
        data["dispatcher.list"]
    );
    assert_eq!(
        data["addresses"],
        "127.0.0.2:5060 udp\n127.0.0.2:5060 tcp\n"
    );

    // Full: it leaves the list (its OPTIONS answer 503 meanwhile).
    *taking.lock().expect("report") = report(200, false);
    eventually("the full recorder off the list", WAIT, || async {
        let (s, _) = status_of(&profiles, "desk").await?;
        let map = maps.get(&map_name).await.map_err(|e| e.to_string())?;
        let none = map
            .data
            .unwrap_or_default()
            .get("endpoints")
            .is_some_and(String::is_empty);
        (s["endpoints"].is_null() && none)
            .then_some(())
            .ok_or_else(|| format!("endpoints {}", s["endpoints"]))
    })
    .await;
    operator.stop().await.expect("stops");
}
