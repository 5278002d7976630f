//! `callvault recorder`: loads the keys and bindings the configuration names, recovers the
//! spool, and runs SIP, the session layer, the committer and the operations endpoint until
//! told to stop; then drains.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callvault_config::ValidRecorderConfig;
use callvault_store::keys::PublicKey;
use callvault_store::objstore::{self, Credentials};
use tracing::Instrument;

use crate::call::{CallContext, recover};
use crate::commit::{Backoff, Committer, DbSlot};
use crate::media::OpusConfig;
use crate::metrics::Metrics;
use crate::ops::{self, OpsState};
use crate::ports::PortPool;
use crate::session::{Recorder, SessionSettings};
use crate::sip::server::{ServerConfig, SipServer};
use crate::spool::Spool;

/// Plaintext bytes per encrypted chunk: a killed recorder loses at most this much audio
/// (about two seconds at 32 kbit/s), and the tags cost 0.2 %.
pub const CHUNK_SIZE: u32 = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("public key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("media address: {0}")]
    Advertise(String),
    #[error("database URL file {path}: {source}")]
    DatabaseUrl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(Box<objstore::StorageError>),
    #[error("storage credentials: {0}")]
    Credentials(#[from] objstore::CredentialsError),
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
    #[error("SIP listeners: {0}")]
    Sip(#[from] crate::sip::transport::TransportError),
    #[error("operations endpoint {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Run-time knobs that are not part of the profile.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The operations endpoint (`/healthz`, `/readyz`, `/metrics`, `/status`).
    pub http: SocketAddr,
    pub backoff: Backoff,
    /// How long, after draining, pending commits may take before the process exits anyway
    /// (the spool keeps the rest for the next start).
    pub commit_grace: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            backoff: Backoff::default(),
            commit_grace: Duration::from_secs(20),
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Calls still live when the drain grace ran out (stopped and committed).
    pub cut_calls: usize,
    /// Commits left in the spool for the next start.
    pub pending_commits: u64,
}

fn advertise(valid: &ValidRecorderConfig) -> Result<IpAddr, ServiceError> {
    let a = &valid.config.media_address.advertise;
    let text = match (&a.from_env, &a.address) {
        (_, Some(addr)) => addr.clone(),
        (Some(var), None) => std::env::var(var).map_err(|_| {
            ServiceError::Advertise(format!("environment variable {var} is not set"))
        })?,
        (None, None) => return Err(ServiceError::Advertise("none configured".into())),
    };
    text.trim()
        .parse()
        .map_err(|_| ServiceError::Advertise(format!("{text:?} is not an IP address")))
}

/// Runs the recorder until `shutdown` resolves (SIGTERM), then drains.
pub async fn run(
    valid: ValidRecorderConfig,
    options: ServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, ServiceError> {
    let config = &valid.config;
    let key_path = config.encryption.public_key_path.display().to_string();
    let key = PublicKey::read_pem_file(&config.encryption.public_key_path).map_err(|e| {
        ServiceError::Key {
            path: key_path.clone(),
            reason: e.to_string(),
        }
    })?;
    if key.id().to_hex() != config.encryption.key_id {
        return Err(ServiceError::Key {
            path: key_path,
            reason: format!(
                "its key id is {}, the configuration says {}",
                key.id().to_hex(),
                config.encryption.key_id
            ),
        });
    }
    let advertise = advertise(&valid)?;
    let url = std::fs::read_to_string(&config.database_url_file).map_err(|source| {
        ServiceError::DatabaseUrl {
            path: config.database_url_file.display().to_string(),
            source,
        }
    })?;
    let credentials = match &config.storage_credentials_dir {
        Some(dir) => Credentials::from_dir(dir)?,
        None => Credentials::none(),
    };
    let storage = objstore::open(&config.storage, &credentials)
        .map_err(|e| ServiceError::Storage(Box::new(e)))?;
    // Rows name the StorageTarget, so the portal and the jobs open the media through it.
    let storage_target = config.storage_target.clone();
    let spool = Spool::open(&config.spool_dir)?;
    let metrics = Arc::new(Metrics::default());
    let db = Arc::new(DbSlot::new(url.trim().to_owned()));
    let committer = Committer::new(
        spool.clone(),
        storage,
        db.clone(),
        options.backoff,
        metrics.clone(),
    );

    // What a previous run left: ended segments wait for their commit, live ones died with it.
    for manifest in spool.manifests()? {
        let manifest = if manifest.ended.is_none() {
            tracing::warn!(recording = %manifest.id, call_id = %manifest.row.sip_call_id,
                "recovering a recording whose recorder stopped mid-call");
            recover(&spool, manifest)
        } else {
            manifest
        };
        committer.submit(manifest);
    }

    let ctx = Arc::new(CallContext {
        tenant: config.tenant.clone(),
        key,
        opus: OpusConfig {
            bitrate: i32::try_from(config.media.bitrate).unwrap_or(32_000),
            complexity: config.media.complexity,
            ..OpusConfig::default()
        },
        chunk_size: CHUNK_SIZE,
        max_duration: Duration::from_secs(u64::from(config.max_duration_seconds)),
        spool,
        committer: committer.clone(),
        db: db.clone(),
        metrics,
        ports: Arc::new(PortPool::new(
            config.rtp_port_range.start,
            config.rtp_port_range.end,
        )),
        encoders: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, usize::from),
        ),
    });
    let recorder = Arc::new(Recorder::new(
        SessionSettings {
            profile: config.profile.clone(),
            storage_target,
            key_id: config.encryption.key_id.clone(),
            media_bind: valid.bind,
            advertise,
            capacity: config.sessions_per_replica,
            fail_closed: config.fail_closed,
            retention_days: config.retention_days,
            rules: valid.rules.clone(),
        },
        ctx,
    ));
    let state = OpsState::new(recorder.clone());
    let (http, http_task) = ops::serve(options.http, state.clone())
        .await
        .map_err(|source| ServiceError::Http {
            addr: options.http,
            source,
        })?;
    let sip = SipServer::start(
        ServerConfig {
            bind: SocketAddr::new(valid.bind, config.sip.port),
            advertised_host: Some(advertise.to_string()),
            ..ServerConfig::default()
        },
        recorder.clone(),
    )
    .await?;
    state.sip_ready.store(true, Ordering::SeqCst);
    tracing::info!(sip_udp = %sip.udp_addr(), sip_tcp = %sip.tcp_addr(), %http,
        profile = %config.profile, "recorder ready");

    let users = {
        let (recorder, db) = (recorder.clone(), db.clone());
        let others_file = config.other_profiles_file.clone();
        tokio::spawn(
            async move {
                loop {
                    let others = others_file
                        .as_deref()
                        .map(read_other_profiles)
                        .unwrap_or_default();
                    if let Ok(db) = db.get().await {
                        match recorder.refresh_directory(&db, &others).await {
                            Ok(n) => recorder
                                .metrics()
                                .users_matched
                                .store(u64::from(n), Ordering::Relaxed),
                            Err(e) => tracing::debug!(error = %e, "users matched not counted"),
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
            .in_current_span(),
        )
    };

    shutdown.await;
    state.draining.store(true, Ordering::SeqCst);
    let grace = Duration::from_secs(u64::from(config.drain_grace_seconds));
    let report = sip.drain(grace).await;
    if report.remaining > 0 {
        tracing::warn!(
            remaining = report.remaining,
            "drain grace over: stopping live calls"
        );
    }
    recorder.stop_all().await;
    sip.shutdown();
    users.abort();
    let idle = committer.wait_idle(options.commit_grace).await;
    if !idle {
        tracing::warn!(
            pending = committer.pending(),
            "commits still pending at exit: the spool keeps them for the next start"
        );
    }
    http_task.abort();
    Ok(Outcome {
        cut_calls: report.remaining,
        pending_commits: committer.pending(),
    })
}

/// The other profiles' selections for conflict detection; a missing or unreadable file means
/// none (and says why), so a bad file never stops the recorder.
fn read_other_profiles(path: &std::path::Path) -> Vec<callvault_config::OtherProfile> {
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
    match parsed {
        Ok(others) => others,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "other profiles not read: conflicts not checked");
            Vec::new()
        }
    }
}
