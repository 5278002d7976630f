//! Starting etcd and kube-apiserver, and clients for them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::process::Server;
use crate::{DEFAULT_TIMEOUT, Error, Result};

/// The field manager the harness applies objects with.
pub const FIELD_MANAGER: &str = "callvault-e2e";

/// When set, kube-apiserver writes an audit log (metadata of every request) to this file: run
/// the operator tests with it to see which verbs the operator's ServiceAccount really used.
pub const AUDIT_LOG_VARIABLE: &str = "CALLVAULT_E2E_AUDIT_LOG";

/// Start attempts: a port picked as free can be taken before the server binds it.
const START_ATTEMPTS: usize = 3;

const POLL: Duration = Duration::from_millis(100);

/// A running etcd + kube-apiserver pair on loopback, with a cluster-admin identity.
///
/// Both processes are killed when this value is dropped, and also when the test process exits
/// without dropping it (see [`ControlPlane::shared`]).
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: the API server goes before etcd, then the directory.
    apiserver: Server,
    // Held for its Drop, which stops etcd.
    _etcd: Server,
    config: Config,
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
}

static SHARED: OnceCell<ControlPlane> = OnceCell::const_new();

impl ControlPlane {
    /// Starts a fresh control plane from the binaries in [`crate::bin_dir`] and waits until it
    /// answers `/readyz` and the `default` namespace exists.
    pub async fn start() -> Result<Self> {
        Self::start_from(&crate::bin_dir(), DEFAULT_TIMEOUT).await
    }

    /// One control plane shared by every test of a test binary (each test has its own tokio
    /// runtime, so take a fresh [`ControlPlane::client`] per test). It is never dropped; its
    /// processes die and its directory is removed when the test binary exits.
    pub async fn shared() -> Result<&'static Self> {
        SHARED.get_or_try_init(Self::start).await
    }

    /// Starts a control plane from the binaries in `bin_dir`, giving up after `timeout`.
    pub async fn start_from(bin_dir: &Path, timeout: Duration) -> Result<Self> {
        for binary in ["etcd", "kube-apiserver"] {
            let path = bin_dir.join(binary);
            if !path.is_file() {
                return Err(Error::MissingBinary { binary, path });
            }
        }
        let mut attempt = 1;
        loop {
            match Self::start_once(bin_dir, timeout).await {
                Err(Error::NotReady { tail, .. })
                    if attempt < START_ATTEMPTS && tail.contains("address already in use") =>
                {
                    tracing::warn!(attempt, "control plane port was taken; retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(bin_dir: &Path, timeout: Duration) -> Result<Self> {
        install_crypto_provider();
        let deadline = Instant::now() + timeout;
        let dir = tempfile::Builder::new()
            .prefix("callvault-e2e-")
            .tempdir()
            .map_err(|source| io("creating the control plane directory", source))?;
        let root = dir.path().to_path_buf();
        let [etcd_port, peer_port, api_port] = free_ports()?;

        let etcd_data = root.join("etcd");
        let etcd = Server::spawn(
            "etcd",
            &bin_dir.join("etcd"),
            &[
                format!("--data-dir={}", etcd_data.display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
                // Test data is thrown away: durability only costs time.
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            root.join("etcd.log"),
            &etcd_data,
        )?;

        // The service-account token signer; ECDSA P-256 is accepted by kube-apiserver.
        let sa_key = rcgen::KeyPair::generate()?;
        write(&root.join("sa.key"), &sa_key.serialize_pem())?;
        write(&root.join("sa.pub"), &sa_key.public_key_pem())?;
        let token = random_token();
        // token,user,uid,"groups": system:masters bypasses RBAC, like a cluster's first admin.
        write(
            &root.join("tokens.csv"),
            &format!("{token},callvault-e2e-admin,callvault-e2e-admin,\"system:masters\"\n"),
        )?;
        let cert_dir = root.join("pki");
        let mut audit = Vec::new();
        if let Some(log) = std::env::var_os(AUDIT_LOG_VARIABLE).filter(|v| !v.is_empty()) {
            // Who did what to which resource, without bodies: enough to compare the requests
            // a component made with the permissions it was granted.
            write(
                &root.join("audit-policy.yaml"),
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
                 rules:\n  - level: Metadata\n",
            )?;
            audit.push(format!(
                "--audit-policy-file={}",
                root.join("audit-policy.yaml").display()
            ));
            audit.push(format!("--audit-log-path={}", Path::new(&log).display()));
        }
        let apiserver = Server::spawn(
            "kube-apiserver",
            &bin_dir.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={api_port}"),
                // No --tls-cert-file: the server writes a self-signed pair here.
                format!("--cert-dir={}", cert_dir.display()),
                format!("--service-account-issuer=https://127.0.0.1:{api_port}"),
                format!(
                    "--service-account-key-file={}",
                    root.join("sa.pub").display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    root.join("sa.key").display()
                ),
                format!("--token-auth-file={}", root.join("tokens.csv").display()),
                "--authorization-mode=RBAC".to_owned(),
                // Room for one SIP Service per RecordingProfile of the 1,000-profile benchmark.
                "--service-cluster-ip-range=10.0.0.0/16".to_owned(),
                "--allow-privileged=true".to_owned(),
                // No token controller runs, so ServiceAccount admission would refuse Pods.
                "--disable-admission-plugins=ServiceAccount".to_owned(),
                // As on hardened clusters: setting blockOwnerDeletion on a child needs `update`
                // on the owner's finalizers, so the operator's ClusterRole is checked for it.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".to_owned(),
            ]
            .into_iter()
            .chain(audit)
            .collect::<Vec<_>>(),
            root.join("kube-apiserver.log"),
            &root,
        )?;

        let kubeconfig = root.join("kubeconfig");
        let serving_cert = cert_dir.join("apiserver.crt");
        write(
            &kubeconfig,
            &kubeconfig_json(api_port, &serving_cert, &token),
        )?;
        let mut servers = [etcd, apiserver];
        let config = wait_ready(&mut servers, &kubeconfig, &serving_cert, deadline).await?;
        let [etcd, apiserver] = servers;
        tracing::info!(port = api_port, dir = %root.display(), "control plane ready");
        Ok(ControlPlane {
            apiserver,
            _etcd: etcd,
            config,
            kubeconfig,
            bin_dir: bin_dir.to_path_buf(),
            dir,
        })
    }

    /// A client authenticated as a cluster admin (group `system:masters`). Build one per tokio
    /// runtime: a client's connection pool lives on the runtime that created it.
    pub fn client(&self) -> Result<Client> {
        install_crypto_provider();
        Ok(Client::try_from(self.config.clone())?)
    }

    /// The admin client's configuration, to derive others from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client that acts as ServiceAccount `namespace/name` (admin impersonation), so RBAC
    /// decides exactly as it would for a pod running under that account.
    pub fn client_as_service_account(&self, namespace: &str, name: &str) -> Result<Client> {
        self.client_as(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
                "system:authenticated",
            ],
        )
    }

    /// A client that acts as `user` in `groups` (admin impersonation).
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client> {
        install_crypto_provider();
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        Ok(Client::try_from(config)?)
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server_url(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// A kubeconfig file for the admin, for kubectl, helm or an operator run as a process.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory the binaries (etcd, kube-apiserver, kubectl, helm) come from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The control plane's working directory (logs, certificates, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API server's log file, to print when a test fails.
    pub fn apiserver_log(&self) -> &Path {
        self.apiserver.log()
    }

    /// A `kubectl` command already pointed at this control plane.
    pub fn kubectl(&self) -> Result<std::process::Command> {
        let path = self.bin_dir.join("kubectl");
        if !path.is_file() {
            return Err(Error::MissingBinary {
                binary: "kubectl",
                path,
            });
        }
        let mut cmd = std::process::Command::new(path);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        Ok(cmd)
    }

    /// Creates a namespace with a unique name starting with `prefix` (no namespace controller
    /// runs, so deleted namespaces never go away: give each test its own).
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let api: Api<Namespace> = Api::all(self.client()?);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&kube::api::PostParams::default(), &ns).await?;
        Ok(name)
    }

    /// Server-side applies every CustomResourceDefinition in the `.yaml`/`.yml` files of `dir`
    /// and waits until each is Established. Returns the CRD names, in file order.
    pub async fn install_crds(&self, dir: &Path) -> Result<Vec<String>> {
        let client = self.client()?;
        let mut names = Vec::new();
        for file in crate::yaml_files(dir)? {
            for doc in crate::read_yaml_documents(&file)? {
                let crd: CustomResourceDefinition = serde_json::from_value(doc.object.clone())
                    .map_err(|e| Error::Yaml {
                        path: doc.source.clone(),
                        message: format!("not a CustomResourceDefinition: {e}"),
                    })?;
                let name = crd.metadata.name.clone().unwrap_or_default();
                install_crd(&client, &crd, &doc.source).await?;
                names.push(name);
            }
        }
        for name in &names {
            wait_crd_established(&client, name, DEFAULT_TIMEOUT).await?;
        }
        Ok(names)
    }
}

/// Server-side applies one CustomResourceDefinition (`source` names it in errors).
pub async fn install_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    source: &str,
) -> Result<()> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(crd))
        .await
        .map_err(|e| Error::Apply {
            path: source.to_owned(),
            kind: "CustomResourceDefinition".to_owned(),
            name: name.clone(),
            source: Box::new(e),
        })?;
    Ok(())
}

/// Polls until CRD `name` is Established (its names accepted and its API served).
pub async fn wait_crd_established(client: &Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let crd = api.get(name).await?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return Ok(());
        }
        let refused = conditions
            .iter()
            .find(|c| c.type_ == "NamesAccepted" && c.status == "False");
        if let Some(c) = refused {
            return Err(Error::CrdNotEstablished {
                name: name.to_owned(),
                reason: format!(
                    "NamesAccepted=False: {}",
                    c.message.clone().unwrap_or_default()
                ),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::CrdNotEstablished {
                name: name.to_owned(),
                reason: format!("timed out after {timeout:?}; conditions: {conditions:?}"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until the API server answers `/readyz` and has created the `default` namespace;
/// returns the admin configuration. `servers` are watched so that a crash fails fast.
async fn wait_ready(
    servers: &mut [Server],
    kubeconfig: &Path,
    serving_cert: &Path,
    deadline: Instant,
) -> Result<Config> {
    let mut last = String::from("no answer yet");
    loop {
        for server in servers.iter_mut() {
            if let Some(exit) = server.exited() {
                return Err(not_ready(server, exit));
            }
        }
        if Instant::now() > deadline {
            let apiserver = &servers[servers.len() - 1];
            return Err(not_ready(
                apiserver,
                format!("timed out; last error: {last}"),
            ));
        }
        // The server writes its certificate before it listens; the client needs it as CA.
        if serving_cert.is_file() {
            match probe(kubeconfig).await {
                Ok(config) => return Ok(config),
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn probe(kubeconfig: &Path) -> std::result::Result<Config, String> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    config.connect_timeout = Some(Duration::from_secs(2));
    let client = Client::try_from(config.clone()).map_err(|e| e.to_string())?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let body = client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())?;
    if body.trim() != "ok" {
        return Err(format!("/readyz answered {body:?}"));
    }
    let namespaces: Api<Namespace> = Api::all(client);
    if namespaces
        .get_opt("default")
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err("namespace default not created yet".to_owned());
    }
    config.connect_timeout = Some(Duration::from_secs(10));
    Ok(config)
}

/// rustls needs one process-wide crypto provider; pick ring explicitly so that another crate
/// enabling aws-lc-rs in the same test binary cannot leave the choice ambiguous (a panic).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn not_ready(server: &Server, reason: String) -> Error {
    Error::NotReady {
        what: server.name(),
        reason,
        log: server.log().to_path_buf(),
        tail: server.log_tail(30),
    }
}

fn io(context: &str, source: std::io::Error) -> Error {
    Error::Io {
        context: context.to_owned(),
        source,
    }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents)
        .map_err(|source| io(&format!("writing {}", path.display()), source))
}

/// Distinct ports the kernel reports free on 127.0.0.1 (all held open together so they differ).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| io("finding a free port", source))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|source| io("finding a free port", source))?
            .port();
    }
    Ok(ports)
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A kubeconfig (JSON is YAML) trusting the server's self-signed certificate, with the token.
fn kubeconfig_json(port: u16, ca: &Path, token: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "callvault-e2e", "cluster": {
            "server": format!("https://127.0.0.1:{port}"),
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "callvault-e2e", "context": {
            "cluster": "callvault-e2e", "user": "admin", "namespace": "default",
        }}],
        "current-context": "callvault-e2e",
    })
    .to_string()
}
