//! SIP over TLS (RFC 3261 §26.2, RFC 5630). The certificate and key come from a directory that
//! holds a kubernetes.io/tls Secret (`tls.crt`, `tls.key`, and `ca.crt` when call sources must
//! present a certificate of their own). The files are looked at again on every new connection:
//! a renewed certificate (cert-manager rotates them in place) is served without a restart, and
//! a renewal that does not load leaves the previous certificate in service, loudly.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use thiserror::Error;

/// File names of a kubernetes.io/tls Secret (and cert-manager's CA entry).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("SIP over TLS: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SIP over TLS: {path} {problem}")]
    Content { path: PathBuf, problem: String },
    #[error("SIP over TLS: {}/{{{CERT_FILE},{KEY_FILE}}} do not make a usable server identity: {source}", dir.display())]
    Identity { dir: PathBuf, source: rustls::Error },
}

/// Where the TLS identity comes from and whether clients must prove theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub dir: PathBuf,
    pub verify_clients: bool,
}

impl TlsFiles {
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.dir.join(CERT_FILE), self.dir.join(KEY_FILE)];
        if self.verify_clients {
            files.push(self.dir.join(CA_FILE));
        }
        files
    }

    /// Modification times of the files in use: a change means a renewal to load.
    fn stamp(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reads the files into a server configuration (TLS 1.2 and 1.3, ring).
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let cert_path = self.dir.join(CERT_FILE);
        let certs: Vec<CertificateDer<'static>> = pem_items(&cert_path, |bytes| {
            CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>()
        })?;
        if certs.is_empty() {
            return Err(content(&cert_path, "holds no PEM certificate"));
        }
        let key_path = self.dir.join(KEY_FILE);
        let key = pem_items(&key_path, PrivateKeyDer::from_pem_slice)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = |source| TlsError::Identity {
            dir: self.dir.clone(),
            source,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(identity)?;
        let builder = if self.verify_clients {
            let ca_path = self.dir.join(CA_FILE);
            let roots = roots(&ca_path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| content(&ca_path, &format!("cannot verify clients: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        builder.with_single_cert(certs, key).map_err(identity)
    }
}

/// What a SIP client (the call client, `callvault call`) trusts and presents over TLS: the CAs
/// the recorder's certificate must chain to, and a certificate of its own for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientFiles {
    pub ca: PathBuf,
    /// Certificate chain and private key (PEM), for recorders that verify their sources.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsClientFiles {
    /// Reads the files into a client configuration (TLS 1.2 and 1.3, ring).
    pub fn load(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = roots(&self.ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Identity {
                dir: self.ca.clone(),
                source,
            })?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some((cert_path, key_path)) => {
                let certs = pem_items(cert_path, |bytes| {
                    CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>()
                })?;
                if certs.is_empty() {
                    return Err(content(cert_path, "holds no PEM certificate"));
                }
                let key = pem_items(key_path, PrivateKeyDer::from_pem_slice)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| content(cert_path, &format!("and its key do not match: {e}")))
            }
        }
    }
}

/// The CA certificates in the PEM file `path`, as trust anchors.
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let cas = pem_items(path, |bytes| {
        CertificateDer::pem_slice_iter(bytes).collect::<Result<Vec<_>, _>>()
    })?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| content(path, &format!("holds an unusable CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(content(path, "holds no PEM certificate"));
    }
    Ok(roots)
}

fn content(path: &Path, problem: &str) -> TlsError {
    TlsError::Content {
        path: path.to_owned(),
        problem: problem.to_owned(),
    }
}

/// Reads `path` and parses it; a PEM error names the file, never its contents (a key).
fn pem_items<T>(
    path: &Path,
    parse: impl FnOnce(&[u8]) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|e| content(path, &format!("is not valid PEM: {e}")))
}

/// The configuration new TLS connections get, reloaded when its files change.
#[derive(Debug)]
pub struct TlsIdentity {
    files: TlsFiles,
    current: Mutex<(Vec<Option<SystemTime>>, Arc<ServerConfig>)>,
}

impl TlsIdentity {
    /// Loads the identity; an unusable one is an error, so a TLS listener never starts
    /// without a certificate it can serve.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = files.stamp();
        let config = Arc::new(files.load()?);
        Ok(Self {
            files,
            current: Mutex::new((stamp, config)),
        })
    }

    /// Where the identity comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for a new connection: the files are loaded again when they changed
    /// since the last load; if the new ones do not load, the previous identity stays.
    pub fn config(&self) -> Arc<ServerConfig> {
        let stamp = self.files.stamp();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != stamp {
            match self.files.load() {
                Ok(config) => {
                    tracing::info!(dir = %self.files.dir.display(),
                        "SIP over TLS: renewed certificate loaded");
                    *current = (stamp, Arc::new(config));
                }
                Err(e) => {
                    tracing::error!(error = %e,
                        "SIP over TLS: renewed files do not load; the previous certificate stays in service");
                    // Not retried on every connection: the next change of the files is.
                    current.0 = stamp;
                }
            }
        }
        current.1.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write_identity(dir: &Path, name: &str) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        std::fs::write(dir.join(CERT_FILE), cert.cert.pem()).unwrap();
        std::fs::write(dir.join(KEY_FILE), cert.signing_key.serialize_pem()).unwrap();
    }

    fn files(dir: &Path, verify_clients: bool) -> TlsFiles {
        TlsFiles {
            dir: dir.to_owned(),
            verify_clients,
        }
    }

    #[test]
    fn missing_or_broken_files_are_refused_naming_the_file_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = TlsIdentity::new(files(dir.path(), false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.crt"), "{e}");

        write_identity(dir.path(), "recorder.example");
        let secret = "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n";
        std::fs::write(dir.path().join(KEY_FILE), secret).unwrap();
        let e = TlsIdentity::new(files(dir.path(), false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key") && !e.contains("not base64"), "{e}");

        // A CA is needed to verify clients.
        write_identity(dir.path(), "recorder.example");
        let e = TlsIdentity::new(files(dir.path(), true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.crt"), "{e}");
        TlsIdentity::new(files(dir.path(), false)).unwrap();
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_keeps_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        write_identity(dir.path(), "one.example");
        let id = TlsIdentity::new(files(dir.path(), false)).unwrap();
        let first = id.config();
        assert!(
            Arc::ptr_eq(&first, &id.config()),
            "unchanged files: same config"
        );

        // Renewal: new files (a later modification time).
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        write_identity(dir.path(), "two.example");
        for f in [CERT_FILE, KEY_FILE] {
            std::fs::File::options()
                .write(true)
                .open(dir.path().join(f))
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        let second = id.config();
        assert!(!Arc::ptr_eq(&first, &second), "renewal loaded");

        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(CERT_FILE))
            .unwrap()
            .set_modified(later + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(
            Arc::ptr_eq(&second, &id.config()),
            "broken renewal: previous kept"
        );
    }
}
