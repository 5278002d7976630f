//! `callvault operator` run as the real binary against a real API server (the e2e control
//! plane): it connects over TLS, serves `/readyz`, and reconciles. The operator's behaviour is
//! tested in-process in `e2e/tests/operator.rs`; this checks what only the binary does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use callvault_crds::{ConditionStatus, StorageTarget};
use callvault_e2e::{ControlPlane, apply_yaml, callvault_crd_dir};
use kube::api::Api;

/// Kills the operator when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn readyz(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: operator\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

#[tokio::test]
async fn the_operator_binary_connects_serves_readyz_and_reconciles() {
    let cp = ControlPlane::shared().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir()).await.expect("CRDs");
    let ns = cp.create_namespace("op-binary").await.expect("namespace");
    let admin = cp.client().expect("admin client");
    let recordings = tempfile::tempdir().expect("recordings directory");
    let target = format!(
        "apiVersion: callvault.io/v1alpha1\nkind: StorageTarget\nmetadata: {{name: local}}\nspec: {{type: filesystem, path: '{}'}}\n",
        recordings.path().display()
    );
    apply_yaml(&admin, &target, "target", &ns)
        .await
        .expect("StorageTarget");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log_path = cp.dir().join(format!("operator-{ns}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut operator = Running(
        Command::new(env!("CARGO_BIN_EXE_callvault"))
            .arg("operator")
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("CALLVAULT_IMAGE", "ghcr.io/callvault/callvault:test")
            .env("CALLVAULT_WATCH_NAMESPACES", &ns)
            .env("CALLVAULT_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("callvault operator starts"),
    );
    let failed = |why: &str, operator: &mut Running| -> ! {
        let status = operator.0.try_wait().ok().flatten();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("{why} (exit: {status:?}); operator log:\n{log}");
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while !readyz(port) {
        if operator.0.try_wait().ok().flatten().is_some() {
            failed("the operator exited", &mut operator);
        }
        if Instant::now() > deadline {
            failed("/readyz never answered 200", &mut operator);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The probe of a local directory succeeds: the operator read, decided and wrote.
    let targets: Api<StorageTarget> = Api::namespaced(admin, &ns);
    loop {
        let target = targets.get("local").await.expect("StorageTarget");
        let reachable = target
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Reachable"))
            .map(|c| c.status);
        if reachable == Some(ConditionStatus::True) {
            break;
        }
        if Instant::now() > deadline {
            failed(
                &format!("StorageTarget never Reachable: {:?}", target.status),
                &mut operator,
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
