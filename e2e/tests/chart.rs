//! The Helm chart: it lints cleanly, its values are validated, what it renders is accepted by a
//! real API server, and the RBAC it grants is least privilege when a real API server decides.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use callvault_e2e::{
    ControlPlane, apply_yaml, bin_dir, callvault_crd_dir, parse_yaml_documents,
    read_yaml_documents, repo_path,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::discovery::ApiResource;

/// `helm` from the directory the control-plane binaries are built into.
fn helm() -> Command {
    let path = bin_dir().join("helm");
    assert!(
        path.is_file(),
        "helm not found at {}: build it with `source scripts/services.sh && build_control_plane` \
         (it is installed next to kube-apiserver), or point CALLVAULT_KUBE_BIN_DIR at a \
         directory holding helm",
        path.display()
    );
    Command::new(path)
}

fn chart_dir() -> String {
    repo_path("charts/callvault").display().to_string()
}

fn run(mut cmd: Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// `helm template <release> charts/callvault --namespace <ns> <args>`, however it ended.
fn template(release: &str, namespace: &str, args: &[&str]) -> Output {
    let mut cmd = helm();
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(args);
    run(cmd)
}

/// The rendered manifests; panics with helm's message if rendering fails.
fn render(release: &str, namespace: &str, args: &[&str]) -> String {
    let out = template(release, namespace, args);
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("rendered manifests are UTF-8")
}

/// helm's error message for values that must be refused.
fn refusal(args: &[&str]) -> String {
    let out = template("refused", "default", args);
    assert!(
        !out.status.success(),
        "helm template accepted {args:?}:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn recording_profiles() -> ApiResource {
    ApiResource {
        group: "callvault.io".into(),
        version: "v1alpha1".into(),
        api_version: "callvault.io/v1alpha1".into(),
        kind: "RecordingProfile".into(),
        plural: "recordingprofiles".into(),
    }
}

fn access_profiles() -> ApiResource {
    ApiResource {
        group: "callvault.io".into(),
        version: "v1alpha1".into(),
        api_version: "callvault.io/v1alpha1".into(),
        kind: "AccessProfile".into(),
        plural: "accessprofiles".into(),
    }
}

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn secret(name: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some([("private.pem".to_owned(), "not a real key".to_owned())].into()),
        ..Default::default()
    }
}

#[test]
fn helm_lint_strict_passes() {
    let mut cmd = helm();
    cmd.args(["lint", "--strict"]).arg(chart_dir());
    let out = run(cmd);
    assert!(
        out.status.success(),
        "helm lint --strict failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn invalid_values_are_refused_naming_the_value() {
    // The database URL is a credential: it can only come from a Secret.
    let message = refusal(&["--set", "database.url=postgres://cv:hunter2@db/cv"]);
    assert!(
        message.contains("/database") && message.contains("url"),
        "{message}"
    );
    let message = refusal(&["--set", "portal.auditRetentionDays=0"]);
    assert!(message.contains("auditRetentionDays"), "{message}");
    let message = refusal(&["--set", "portal.auditRetentionDays=3651"]);
    assert!(message.contains("auditRetentionDays"), "{message}");
    let message = refusal(&["--set", "podSecurityContext.runAsNonRoot=false"]);
    assert!(message.contains("runAsNonRoot"), "{message}");
    let message = refusal(&["--set", "portal.service.type=External"]);
    assert!(message.contains("/portal/service/type"), "{message}");
    let message = refusal(&["--set", "portal.session.idleTimeoutMinutes=900"]);
    assert!(
        message.contains("idleTimeoutMinutes (900) must not exceed"),
        "{message}"
    );
}

#[test]
fn rendered_manifests_carry_no_secret_values() {
    let rendered = render(
        "bank",
        "callvault",
        &[
            "--set",
            "database.existingSecret=bank-db",
            "--set",
            "database.key=dsn",
        ],
    );
    let docs = parse_yaml_documents(&rendered, "rendered").expect("rendered YAML parses");
    let kinds: Vec<&str> = docs
        .iter()
        .filter_map(|d| d.object["kind"].as_str())
        .collect();
    assert!(!kinds.contains(&"Secret"), "the chart renders a Secret");
    for kind in ["Deployment", "Service", "ServiceAccount", "ClusterRole"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }

    let portal = docs
        .iter()
        .find(|d| {
            d.object["kind"] == "Deployment"
                && d.object["metadata"]["name"] == "bank-callvault-portal"
        })
        .expect("portal Deployment rendered");
    let container = &portal.object["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["portal"]));
    let env = container["env"].as_array().expect("portal env");
    let database = env
        .iter()
        .find(|e| e["name"] == "CALLVAULT_DATABASE_URL")
        .expect("the portal gets the database URL");
    assert_eq!(
        database["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "bank-db", "key": "dsn"})
    );
    assert!(database.get("value").is_none(), "{database}");

    // No plain value anywhere looks like a credential-bearing URL.
    for doc in &docs {
        for container in doc.object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for e in container["env"].as_array().into_iter().flatten() {
                let value = e["value"].as_str().unwrap_or_default();
                assert!(!value.contains("://"), "{}: env {e}", doc.source);
            }
        }
    }
    // Pods run as non-root on a read-only root filesystem.
    let spec = &portal.object["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
}

/// Single sign-on and SCIM: their secrets reach the portal as mounted files named by
/// `*_FILE` variables, never as values; incomplete settings are refused at install time.
#[test]
fn identity_provider_secrets_are_mounted_files_never_values() {
    let rendered = render(
        "bank",
        "callvault",
        &[
            "--set",
            "portal.publicUrl=https://calls.bank.example",
            "--set",
            "portal.oidc.enabled=true",
            "--set",
            "portal.oidc.issuer=https://login.bank.example",
            "--set",
            "portal.oidc.clientId=callvault",
            "--set",
            "portal.oidc.clientSecret.existingSecret=bank-oidc",
            "--set",
            "portal.scim.enabled=true",
            "--set",
            "portal.scim.tokenSecret.existingSecret=bank-scim",
            "--set",
            "portal.scim.tokenSecret.key=bearer",
        ],
    );
    let docs = parse_yaml_documents(&rendered, "rendered").expect("rendered YAML parses");
    let portal = docs
        .iter()
        .find(|d| {
            d.object["kind"] == "Deployment"
                && d.object["metadata"]["name"] == "bank-callvault-portal"
        })
        .expect("portal Deployment rendered");
    let spec = &portal.object["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let env: std::collections::BTreeMap<&str, &str> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(env["CALLVAULT_OIDC_ISSUER"], "https://login.bank.example");
    assert_eq!(env["CALLVAULT_PUBLIC_URL"], "https://calls.bank.example");
    let secret_file = env["CALLVAULT_OIDC_CLIENT_SECRET_FILE"];
    let token_file = env["CALLVAULT_SCIM_TOKEN_FILE"];
    let volumes = spec["volumes"].as_array().expect("volumes");
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    for (file, secret, key) in [
        (secret_file, "bank-oidc", "client-secret"),
        (token_file, "bank-scim", "bearer"),
    ] {
        let volume = volumes
            .iter()
            .find(|v| v["secret"]["secretName"] == secret)
            .unwrap_or_else(|| panic!("{secret} mounted: {volumes:?}"));
        let mount = mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .expect("mounted");
        assert_eq!(mount["readOnly"], true);
        let item = &volume["secret"]["items"][0];
        assert_eq!(item["key"], key);
        assert_eq!(
            format!(
                "{}/{}",
                mount["mountPath"].as_str().expect("path"),
                item["path"].as_str().expect("item path")
            ),
            file,
            "the variable names the mounted file"
        );
    }

    let message = refusal(&["--set", "portal.oidc.enabled=true"]);
    assert!(message.contains("/portal/oidc/issuer"), "{message}");
    let message = refusal(&[
        "--set",
        "portal.oidc.enabled=true",
        "--set",
        "portal.oidc.issuer=https://login.bank.example",
        "--set",
        "portal.oidc.clientId=callvault",
    ]);
    assert!(message.contains("portal.publicUrl"), "{message}");
    let message = refusal(&["--set", "portal.oidc.scopes=profile email"]);
    assert!(message.contains("/portal/oidc/scopes"), "{message}");
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_api_server() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir())
        .await
        .expect("CallVault CRDs install");
    let ns = cp
        .create_namespace("chart-dry-run")
        .await
        .expect("namespace");

    let variants: [&[&str]; 2] = [
        &[],
        &[
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--set",
            "portal.keySecrets={retail-recording-key}",
            "--set",
            "portal.service.type=LoadBalancer",
        ],
    ];
    for args in variants {
        let rendered = render("dry", &ns, args);
        let mut kubectl = cp.kubectl().expect("kubectl");
        kubectl
            .args(["apply", "--dry-run=server", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = kubectl.spawn().expect("kubectl starts");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rendered.as_bytes())
            .expect("kubectl reads the manifests");
        let out = child.wait_with_output().expect("kubectl ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the API server refused the chart rendered with {args:?}:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for object in [
            "deployment.apps/dry-callvault-operator created (server dry run)",
            "deployment.apps/dry-callvault-portal created (server dry run)",
            "service/dry-callvault-portal created (server dry run)",
            "clusterrole.rbac.authorization.k8s.io/dry-callvault-operator created (server dry run)",
        ] {
            assert!(stdout.contains(object), "{object} missing from:\n{stdout}");
        }
    }
}

#[tokio::test]
async fn operator_service_account_has_least_privilege() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir())
        .await
        .expect("CallVault CRDs install");
    let admin = cp.client().expect("client");
    let ns = cp
        .create_namespace("chart-operator")
        .await
        .expect("namespace");

    let rendered = render("oprbac", &ns, &[]);
    apply_yaml(&admin, &rendered, "rendered chart", &ns)
        .await
        .expect("the rendered chart applies");
    let operator = cp
        .client_as_service_account(&ns, "oprbac-callvault-operator")
        .expect("impersonating client");

    // A RecordingProfile created by an admin; the operator reports on it.
    let mut docs = read_yaml_documents(&repo_path("examples/cluster/recordingprofile.yaml"))
        .expect("example parses");
    let mut profile = docs.remove(0);
    profile.object["metadata"]["namespace"] = serde_json::Value::String(ns.clone());
    let yaml = serde_yaml::to_string(&profile.object).expect("YAML");
    apply_yaml(&admin, &yaml, "recordingprofile", &ns)
        .await
        .expect("admin creates a RecordingProfile");
    let name = profile.object["metadata"]["name"].as_str().expect("name");

    let profiles: Api<DynamicObject> =
        Api::namespaced_with(operator.clone(), &ns, &recording_profiles());
    let patched = profiles
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .expect("the operator may patch a RecordingProfile's status");
    assert_eq!(patched.data["status"]["observedGeneration"], 1);
    // It may not delete what users declared.
    assert_forbidden(
        profiles.delete(name, &DeleteParams::default()).await,
        "operator deleting a RecordingProfile",
    );

    let statefulset: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "recorder"},
        "spec": {
            "serviceName": "recorder",
            "selector": {"matchLabels": {"app": "recorder"}},
            "template": {
                "metadata": {"labels": {"app": "recorder"}},
                "spec": {"containers": [{"name": "recorder", "image": "callvault:test"}]}
            }
        }
    }))
    .expect("StatefulSet");
    let statefulsets: Api<StatefulSet> = Api::namespaced(operator.clone(), &ns);
    statefulsets
        .create(&Default::default(), &statefulset)
        .await
        .expect("the operator may create a StatefulSet");

    // Secrets: readable (to check references), never deletable or creatable.
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&Default::default(), &secret("retail-recording-key"))
        .await
        .expect("admin creates a Secret");
    let secrets: Api<Secret> = Api::namespaced(operator.clone(), &ns);
    secrets
        .get("retail-recording-key")
        .await
        .expect("the operator may read a Secret");
    assert_forbidden(
        secrets
            .delete("retail-recording-key", &DeleteParams::default())
            .await,
        "operator deleting a Secret",
    );
    assert_forbidden(
        secrets
            .create(&Default::default(), &secret("planted"))
            .await,
        "operator creating a Secret",
    );

    // Pods: listable for recorder status, but their logs (call metadata) are not readable.
    let pods: Api<Pod> = Api::namespaced(operator, &ns);
    pods.list(&ListParams::default())
        .await
        .expect("the operator may list pods");
    assert_forbidden(
        pods.logs("recorder-0", &LogParams::default()).await,
        "operator reading pod logs",
    );
}

#[tokio::test]
async fn portal_reads_only_the_key_secrets_it_is_granted() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir())
        .await
        .expect("CallVault CRDs install");
    let admin = cp.client().expect("client");
    let ns = cp
        .create_namespace("chart-portal")
        .await
        .expect("namespace");

    let rendered = render(
        "portalrbac",
        &ns,
        &[
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--set",
            "portal.keySecrets={granted-key}",
        ],
    );
    apply_yaml(&admin, &rendered, "rendered chart", &ns)
        .await
        .expect("the rendered chart applies");
    let admin_secrets: Api<Secret> = Api::namespaced(admin, &ns);
    for name in ["granted-key", "other-key"] {
        admin_secrets
            .create(&Default::default(), &secret(name))
            .await
            .expect("admin creates a Secret");
    }

    let portal = cp
        .client_as_service_account(&ns, "portalrbac-callvault-portal")
        .expect("impersonating client");
    let secrets: Api<Secret> = Api::namespaced(portal.clone(), &ns);
    secrets
        .get("granted-key")
        .await
        .expect("the portal may read the key Secret it is granted");
    assert_forbidden(
        secrets.get("other-key").await,
        "portal reading another Secret",
    );
    assert_forbidden(
        secrets.list(&ListParams::default()).await,
        "portal listing Secrets",
    );

    let access: Api<DynamicObject> = Api::namespaced_with(portal.clone(), &ns, &access_profiles());
    access
        .list(&ListParams::default())
        .await
        .expect("the portal may list AccessProfiles");
    // "Run now": the portal sets a SpeechJob's run-now annotation for the operator.
    let speech = std::fs::read_to_string(repo_path("examples/cluster/speechjob.yaml"))
        .expect("example")
        .replace("namespace: contact-centre", &format!("namespace: {ns}"));
    apply_yaml(&cp.client().expect("client"), &speech, "speechjob", &ns)
        .await
        .expect("admin creates a SpeechJob");
    callvault_portal::JobRunner::run_speech_job(
        &callvault_portal::AnnotateRunNow::new(portal.clone()),
        &ns,
        "complaints-transcription",
    )
    .await
    .expect("the portal may ask for a run now");
    assert_forbidden(
        access.delete("anything", &DeleteParams::default()).await,
        "portal deleting an AccessProfile",
    );
    // Outside the watched namespaces it sees nothing.
    let elsewhere: Api<DynamicObject> = Api::namespaced_with(portal, "default", &access_profiles());
    assert_forbidden(
        elsewhere.list(&ListParams::default()).await,
        "portal listing AccessProfiles outside its namespaces",
    );
}

#[tokio::test]
async fn helm_install_deploys_the_release_and_says_how_to_reach_the_portal() {
    let cp = ControlPlane::shared().await.expect("control plane");
    // helm installs the chart's crds/ itself (and leaves CRDs that already exist alone).
    let ns = cp
        .create_namespace("chart-install")
        .await
        .expect("namespace");
    let mut cmd = helm();
    cmd.arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(["install", "inst"])
        .arg(chart_dir())
        .args(["--namespace", &ns]);
    let out = run(cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm install failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        &format!("kubectl -n {ns} port-forward service/inst-callvault-portal 8080:80"),
        "kubectl apply -f examples/cluster/",
        &format!("kubectl -n {ns} create secret generic callvault-database"),
    ] {
        assert!(stdout.contains(line), "NOTES lack {line:?}:\n{stdout}");
    }

    let client = cp.client().expect("client");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns);
    let operator = deployments
        .get("inst-callvault-operator")
        .await
        .expect("the operator Deployment exists");
    let operator = serde_json::to_value(operator).expect("JSON");
    assert_eq!(
        operator["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["operator"])
    );
    deployments
        .get("inst-callvault-portal")
        .await
        .expect("the portal Deployment exists");
    // The CRDs the operator serves are installed.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    crds.get("recordingprofiles.callvault.io")
        .await
        .expect("the RecordingProfile CRD is installed");
}
