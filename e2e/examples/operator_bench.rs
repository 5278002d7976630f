//! Operator benchmark: applies N RecordingProfiles (default 1,000) to a real API server and
//! measures the time until every one is Ready, and the operator's peak RSS. The operator runs as
//! a separate process of the real `callvault` binary, so the RSS is its own.
//!
//! ```text
//! cargo build --release --bin callvault
//! cargo run --release -p callvault-e2e --example operator_bench -- [--profiles 1000] [--binary PATH]
//! ```
//!
//! No kubelet or controller manager runs, so this program also plays the StatefulSet
//! controller: when a recorder StatefulSet appears it reports its pods ready (status only), as
//! a real cluster would once the pods start. A profile is Ready when its children are applied,
//! its storage is bound and its recorders are available.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callvault_crds::RecordingProfile;
use callvault_e2e::{ControlPlane, apply_yaml, callvault_crd_dir};
use callvault_store::keys::PrivateKey;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

struct Options {
    profiles: usize,
    binary: PathBuf,
}

fn options() -> Options {
    let mut profiles = 1000;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| callvault_e2e::repo_path("target"));
    let mut binary = target.join("release/callvault");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--profiles" => {
                profiles = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--profiles takes a number")
            }
            "--binary" => binary = PathBuf::from(args.next().expect("--binary takes a path")),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        binary.is_file(),
        "{} not found: build it with `cargo build --release --bin callvault` or pass --binary",
        binary.display()
    );
    Options { profiles, binary }
}

/// Peak and current resident set size of `pid`, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0)
}

#[tokio::main]
async fn main() {
    let opts = options();
    let cp = ControlPlane::start().await.expect("control plane");
    cp.install_crds(&callvault_crd_dir()).await.expect("CRDs");
    let ns = cp.create_namespace("bench").await.expect("namespace");
    let admin = cp.client().expect("client");

    let key = PrivateKey::generate(2048).expect("key");
    let pem = key.public_key().to_pem().expect("PEM");
    let recordings = tempfile::tempdir().expect("recordings directory");
    let setup = json!([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "key"},
         "stringData": {"public.pem": pem}},
        {"apiVersion": "callvault.io/v1alpha1", "kind": "StorageTarget", "metadata": {"name": "local"},
         "spec": {"type": "filesystem", "path": recordings.path()}},
    ]);
    for doc in setup.as_array().expect("list") {
        apply_yaml(&admin, &doc.to_string(), "setup", &ns)
            .await
            .expect("setup");
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let log = std::fs::File::create(cp.dir().join("operator.log")).expect("log file");
    let mut operator = Command::new(&opts.binary)
        .arg("operator")
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("CALLVAULT_IMAGE", "ghcr.io/callvault/callvault:bench")
        .env("CALLVAULT_WATCH_NAMESPACES", &ns)
        .env("CALLVAULT_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("operator starts");
    let pid = operator.id();

    // The StatefulSet controller's part: each recorder StatefulSet's pods become ready.
    let sts_api: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let controller_api = sts_api.clone();
    let statefulsets = tokio::spawn(async move {
        watcher(controller_api.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each_concurrent(16, |sts| {
                let api = controller_api.clone();
                async move {
                    let want = sts.spec.replicas.unwrap_or(0);
                    let ready = sts.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
                    if ready != want {
                        let status = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                            "status": {"replicas": want, "readyReplicas": want, "availableReplicas": want}});
                        let name = sts.metadata.name.clone().unwrap_or_default();
                        let _ = api
                            .patch_status(&name, &PatchParams::apply("bench-statefulset-controller").force(), &Patch::Apply(status))
                            .await;
                    }
                    Ok(())
                }
            })
            .await
    });

    // Wait until the operator serves /readyz.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = operator.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(cp.dir().join("operator.log")).unwrap_or_default();
            panic!("the operator did not start ({exited:?}):\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let profiles: Api<RecordingProfile> = Api::namespaced(admin.clone(), &ns);
    let start = Instant::now();
    futures::stream::iter(0..opts.profiles)
        .for_each_concurrent(32, |i| {
            let profiles = profiles.clone();
            async move {
                let profile = json!({"apiVersion": "callvault.io/v1alpha1", "kind": "RecordingProfile",
                    "metadata": {"name": format!("profile-{i:04}")},
                    "spec": {"selector": {"groups": [format!("group-{i}")]},
                             "storageTargetRef": {"name": "local"},
                             "encryption": {"keySecretRef": {"name": "key"}},
                             "recorder": {"minReplicas": 1, "maxReplicas": 2}}});
                profiles
                    .patch(&format!("profile-{i:04}"), &PatchParams::apply("bench"), &Patch::Apply(profile))
                    .await
                    .expect("profile applies");
            }
        })
        .await;
    let applied = start.elapsed();

    let ready_after = loop {
        let list = profiles.list(&ListParams::default()).await.expect("list");
        let ready = list
            .items
            .iter()
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.type_ == "Ready" && c.status == callvault_crds::ConditionStatus::True
                    })
                })
            })
            .count();
        if ready == opts.profiles {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "only {ready} of {} Ready after 15 minutes",
            opts.profiles
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (peak, now) = rss(pid);
    let sts_count = sts_api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .len();

    println!(
        "profiles applied:        {} in {:.1} s",
        opts.profiles,
        applied.as_secs_f64()
    );
    println!(
        "all Ready after:         {:.1} s (from the first apply)",
        ready_after.as_secs_f64()
    );
    println!("recorder StatefulSets:   {sts_count}");
    println!("operator peak RSS:       {peak:.1} MiB (VmHWM); {now:.1} MiB at the end");
    statefulsets.abort();
    let _ = operator.kill();
    let _ = operator.wait();
}
