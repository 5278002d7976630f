//! A real Kubernetes control plane (etcd + kube-apiserver) for tests.
//!
//! The binaries are built from Go modules by `build_control_plane` in
//! `scripts/services.d/control-plane.sh` into `CALLVAULT_KUBE_BIN_DIR` (default
//! `$XDG_CACHE_HOME/callvault/bin`). [`ControlPlane::start`] runs them on free loopback ports in a
//! temporary directory and hands out [`kube::Client`]s authenticated as a cluster admin; the
//! processes die with the `ControlPlane` value, or with the test process if it never drops it.
//!
//! There is no controller manager, scheduler or kubelet: objects are stored, validated (OpenAPI
//! schema, CEL, admission, RBAC) and watched, but no Pods run and nothing is garbage-collected.
//!
//! ```no_run
//! # async fn demo() -> Result<(), callvault_e2e::Error> {
//! let cp = callvault_e2e::ControlPlane::shared().await?;
//! cp.install_crds(&callvault_e2e::repo_path("charts/callvault/crds")).await?;
//! let client = cp.client()?;
//! # Ok(()) }
//! ```

mod apply;
mod control_plane;
pub mod operator;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use apply::{
    Document, apply_documents, apply_yaml, apply_yaml_file, parse_yaml_documents,
    read_yaml_documents,
};
pub use control_plane::{
    AUDIT_LOG_VARIABLE, ControlPlane, FIELD_MANAGER, install_crd, wait_crd_established,
};

/// Everything that can go wrong while starting or using the test control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control-plane binary has not been built.
    #[error(
        "{binary} not found at {path}: build the control plane first with \
         `source scripts/services.sh && build_control_plane` (needs Go >= 1.26; a cold build \
         takes about 10 minutes), or point CALLVAULT_KUBE_BIN_DIR at a directory holding \
         etcd, kube-apiserver and kubectl"
    )]
    MissingBinary {
        /// Binary name.
        binary: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The service-account signing key could not be generated.
    #[error("generating the service-account signing key: {0}")]
    KeyGen(#[from] rcgen::Error),
    /// A process exited or did not become ready in time.
    #[error("{what} did not become ready: {reason}\n--- last lines of {log} ---\n{tail}")]
    NotReady {
        /// Which component.
        what: &'static str,
        /// Why we gave up.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log, to show why.
        tail: String,
    },
    /// The kubeconfig we wrote could not be loaded.
    #[error("loading the generated kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A request to the API server failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// A YAML file could not be parsed.
    #[error("{path}: {message}")]
    Yaml {
        /// The file (or a label for inline YAML).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The API server refused one object of a YAML file.
    #[error("{path}: {kind} {name}: {source}")]
    Apply {
        /// The file (or a label for inline YAML).
        path: String,
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The server's answer.
        #[source]
        source: Box<kube::Error>,
    },
    /// A CustomResourceDefinition did not become Established.
    #[error("CustomResourceDefinition {name} not established: {reason}")]
    CrdNotEstablished {
        /// The CRD's name.
        name: String,
        /// The last condition seen, or a timeout.
        reason: String,
    },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long to wait for the control plane and for CRDs by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the control-plane binaries: `CALLVAULT_KUBE_BIN_DIR`, else the default
/// `build_control_plane` uses (`$CALLVAULT_CACHE/bin`, `$XDG_CACHE_HOME/callvault/bin`,
/// `$HOME/.cache/callvault/bin`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CALLVAULT_KUBE_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(cache) = std::env::var_os("CALLVAULT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(cache).join("bin");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("callvault").join("bin")
}

/// A path inside the repository (this crate lives one level below its root).
pub fn repo_path(relative: impl AsRef<Path>) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")))
        .join(relative)
}

/// Files in `dir` whose name ends in `.yaml` or `.yml`, sorted; none if `dir` does not exist.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                context: format!("reading {}", dir.display()),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| Error::Io {
                context: format!("reading {}", dir.display()),
                source,
            })?
            .path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The CallVault CRDs the tests install: `CALLVAULT_E2E_CRD_DIR` if set (to try CRDs from
/// another build), else the chart's `charts/callvault/crds`.
pub fn callvault_crd_dir() -> PathBuf {
    std::env::var_os("CALLVAULT_E2E_CRD_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("charts/callvault/crds"))
}
