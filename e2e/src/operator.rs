//! The operator run in-process against the test control plane, under the permissions the
//! Helm chart grants its ServiceAccount (the client impersonates it).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use callvault_operator::Config;
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{ControlPlane, Error, Result, apply_yaml, repo_path};

/// Release name the chart is rendered with for the operator's RBAC.
pub const RELEASE: &str = "e2e";

/// `helm` from the directory the control-plane binaries are built into.
pub fn helm() -> Result<Command> {
    let path = crate::bin_dir().join("helm");
    if !path.is_file() {
        return Err(Error::MissingBinary {
            binary: "helm",
            path,
        });
    }
    Ok(Command::new(path))
}

/// `helm template <release> charts/callvault --namespace <namespace> <args>`.
pub fn render_chart(release: &str, namespace: &str, args: &[&str]) -> Result<String> {
    let out = helm()?
        .args(["template", release])
        .arg(repo_path("charts/callvault"))
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .map_err(|source| Error::Io {
            context: "running helm template".to_owned(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Yaml {
            path: "helm template".to_owned(),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    String::from_utf8(out.stdout).map_err(|e| Error::Yaml {
        path: "helm template".to_owned(),
        message: e.to_string(),
    })
}

/// Installs the chart's RBAC for an operator watching only `namespace` (its ServiceAccount,
/// ClusterRole and RoleBinding, as `helm install --set watchNamespaces={namespace}` would)
/// and returns a client acting as that ServiceAccount.
pub async fn operator_client(cp: &ControlPlane, namespace: &str) -> Result<Client> {
    let rendered = render_chart(
        RELEASE,
        namespace,
        &["--set", &format!("watchNamespaces={{{namespace}}}")],
    )?;
    let docs: Vec<crate::Document> = crate::parse_yaml_documents(&rendered, "chart")?
        .into_iter()
        .filter(|d| {
            let kind = d.object["kind"].as_str().unwrap_or_default();
            let name = d.object["metadata"]["name"].as_str().unwrap_or_default();
            matches!(kind, "ServiceAccount" | "ClusterRole" | "RoleBinding")
                && name.ends_with("-operator")
        })
        .collect();
    crate::apply_documents(&cp.client()?, &docs, namespace).await?;
    cp.client_as_service_account(namespace, &format!("{RELEASE}-callvault-operator"))
}

/// Settings for a test operator watching `namespace`.
pub fn test_config(namespace: &str) -> Config {
    let mut config = Config::from_env(|name| match name {
        "CALLVAULT_IMAGE" => Some("ghcr.io/callvault/callvault:e2e".to_owned()),
        "CALLVAULT_METRICS_ADDR" => Some("127.0.0.1:0".to_owned()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("test operator settings: {e}"));
    config.namespaces = vec![namespace.to_owned()];
    config
}

/// An operator running on the test's runtime.
#[derive(Debug)]
pub struct Operator {
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::result::Result<(), callvault_operator::Error>>>,
    /// Where its `/healthz`, `/readyz` and `/metrics` are served.
    pub http: SocketAddr,
}

impl Operator {
    /// Starts the operator with `config` (its HTTP endpoints on a free loopback port) and
    /// waits until `/readyz` answers 200.
    pub async fn start(client: Client, mut config: Config) -> Result<Self> {
        let http = free_port()?;
        config.metrics_addr = Some(http);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(callvault_operator::run(client, config, async {
            let _ = rx.await;
        }));
        let operator = Self {
            shutdown: Some(tx),
            task: Some(task),
            http,
        };
        let deadline = Instant::now() + crate::DEFAULT_TIMEOUT;
        loop {
            if let Ok((200, _)) = operator.get("/readyz").await {
                return Ok(operator);
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: "operator",
                    reason: "/readyz did not answer 200".to_owned(),
                    log: Default::default(),
                    tail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` on the operator's HTTP endpoint: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let io = |source| Error::Io {
            context: format!("GET {path} from the operator"),
            source,
        };
        let mut stream = tokio::net::TcpStream::connect(self.http)
            .await
            .map_err(io)?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: operator\r\n\r\n").as_bytes())
            .await
            .map_err(io)?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.map_err(io)?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// The value of a counter or histogram count line of `/metrics` starting with `series`
    /// (e.g. `callvault_operator_reconciles_total{controller="recordingprofile"}`), 0 if absent.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics").await?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Stops the operator and returns how it ended.
    pub async fn stop(mut self) -> std::result::Result<(), callvault_operator::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| Error::Io {
        context: "finding a free port".to_owned(),
        source,
    })?;
    listener.local_addr().map_err(|source| Error::Io {
        context: "finding a free port".to_owned(),
        source,
    })
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with `what`
/// and the last value seen.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Applies YAML as the test's admin.
pub async fn admin_apply(cp: &ControlPlane, yaml: &str, namespace: &str) -> Result<()> {
    apply_yaml(&cp.client()?, yaml, "test", namespace).await?;
    Ok(())
}
