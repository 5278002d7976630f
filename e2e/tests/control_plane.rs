//! The harness itself: a real etcd + kube-apiserver that stores objects, enforces RBAC and
//! leaves nothing running behind it.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use callvault_e2e::{ControlPlane, Error};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

#[tokio::test]
async fn starts_stores_objects_and_leaves_nothing_behind() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let client = cp.client().expect("admin client");

    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.git_version, "v1.34.4", "{version:?}");

    let ns = cp.create_namespace("store").await.expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("greeting".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("hello".into(), "world".into())])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let stored = api.get("greeting").await.expect("read back");
    assert_eq!(stored.data, cm.data);

    let url = cp.server_url();
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let dir = cp.dir().to_path_buf();
    assert!(
        TcpStream::connect(&addr).is_ok(),
        "API server listens on {addr}"
    );
    drop(cp);
    // Drop waits for the processes, so the port is closed at once.
    assert!(
        TcpStream::connect(&addr).is_err(),
        "API server still answers on {addr} after drop"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
async fn rbac_governs_an_impersonated_service_account() {
    let cp = ControlPlane::shared().await.expect("control plane");
    let ns = cp.create_namespace("rbac").await.expect("namespace");
    let other = cp.create_namespace("rbac-other").await.expect("namespace");
    let sa = cp
        .client_as_service_account(&ns, "operator")
        .expect("impersonating client");
    let sa_configmaps: Api<ConfigMap> = Api::namespaced(sa.clone(), &ns);

    let err = sa_configmaps
        .list(&ListParams::default())
        .await
        .expect_err("a service account without a role cannot list ConfigMaps");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "expected 403 Forbidden, got {err}"
    );

    let rbac = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: read-configmaps, namespace: {ns}}}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: operator-reads-configmaps, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-configmaps}}
subjects:
  - {{kind: ServiceAccount, name: operator, namespace: {ns}}}
"#
    );
    let admin = cp.client().expect("admin client");
    callvault_e2e::apply_yaml(&admin, &rbac, "rbac", &ns)
        .await
        .expect("role and binding apply");

    // The authorizer sees new bindings through an informer: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sa_configmaps.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("not yet allowed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the RoleBinding never took effect: {e}"),
        }
    }
    let elsewhere: Api<ConfigMap> = Api::namespaced(sa, &other);
    let err = elsewhere
        .list(&ListParams::default())
        .await
        .expect_err("the Role grants nothing outside its namespace");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_is_built_with_its_version_and_reaches_the_server() {
    let cp = ControlPlane::shared().await.expect("control plane");
    let out = cp
        .kubectl()
        .expect("kubectl built")
        .args(["version", "-o", "json"])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(version["clientVersion"]["gitVersion"], "v1.34.4");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.34.4");

    let out = cp
        .kubectl()
        .expect("kubectl built")
        .args(["get", "namespace", "default", "-o", "name"])
        .output()
        .expect("run kubectl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default"
    );
}

#[tokio::test]
async fn missing_binaries_fail_with_instructions() {
    let empty = tempfile::tempdir().expect("temp dir");
    let err = ControlPlane::start_from(empty.path(), Duration::from_secs(5))
        .await
        .expect_err("no binaries, no control plane");
    assert!(
        matches!(err, Error::MissingBinary { binary: "etcd", .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("build_control_plane"), "{message}");
    assert!(message.contains("CALLVAULT_KUBE_BIN_DIR"), "{message}");
}

#[tokio::test]
async fn a_crashing_api_server_is_reported_with_its_log() {
    // Real etcd, and an "API server" that fails the way a bad flag would.
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(
        callvault_e2e::bin_dir().join("etcd"),
        dir.path().join("etcd"),
    )
    .expect("link etcd");
    let fake = dir.path().join("kube-apiserver");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Error: unknown flag: --bogus' >&2\nexit 1\n",
    )
    .expect("write fake");
    let mut perms = std::fs::metadata(&fake).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&fake, perms).expect("chmod");

    let started = Instant::now();
    let err = ControlPlane::start_from(dir.path(), Duration::from_secs(60))
        .await
        .expect_err("a crashing API server cannot become ready");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the crash was only noticed at the deadline"
    );
    let message = err.to_string();
    assert!(message.contains("kube-apiserver exited"), "{message}");
    assert!(message.contains("unknown flag: --bogus"), "{message}");
}
