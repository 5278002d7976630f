//! `callvault recorder`: loads the keys and bindings the configuration names, recovers the
//! spool, and runs SIP, the session layer, the committer and the operations endpoint until
//! told to stop; then drains. A new configuration is applied to the running recorder (one
//! lifecycle for standalone and cluster): nothing restarts, a new SIP address is bound before
//! the old one stops taking calls, and a bind that fails is retried and reported.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callvault_config::{RecorderConfig, SipTransport, ValidRecorderConfig};
use callvault_store::keys::PublicKey;
use callvault_store::objstore::Storage;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::alarms::{self, Reporter};
use crate::call::CallContext;
use crate::commit::{
    Backoff, CommitError, Committer, DbSlot, StorageHealth, StorageSlot, StorageSpec,
};
use crate::media::OpusConfig;
use crate::metrics::{self, Metrics};
use crate::ops::{self, Health, HealthCell, OpsState, StatusCell};
use crate::ports::PortPool;
use crate::session::{Live, Recorder, SessionSettings};
use crate::sip::server::{ServerConfig, SipServer};
use crate::sip::tls::{TlsFiles, TlsIdentity};
use crate::sip::transport::{ListenOn, TcpTimeouts, TransportError};
use crate::spool::{Recovery, Spool};

/// Plaintext bytes per encrypted chunk: a killed recorder loses at most this much audio
/// (about two seconds at 32 kbit/s), and the tags cost 0.2 %.
pub const CHUNK_SIZE: u32 = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("configuration: {0}")]
    Config(String),
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
    #[error("storage {target}: {error}")]
    Storage {
        target: String,
        error: Box<CommitError>,
    },
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
    /// Where the recorder says whether it can take calls now (standalone reads it for its
    /// status and alarms).
    pub health: HealthCell,
    /// This recorder's name in its alarms (a cluster recorder's pod); `None`: named after its
    /// profile.
    pub instance: Option<String>,
    /// Where the recorder's `/status` can be read in-process (standalone's status).
    pub status: StatusCell,
    /// Whether the recorder stores its own alarms in the database. Standalone turns it off:
    /// it reads them from `/status` and stores and mails them with its other alarms.
    pub stores_alarms: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            backoff: Backoff::default(),
            commit_grace: Duration::from_secs(20),
            health: HealthCell::default(),
            instance: None,
            status: StatusCell::default(),
            stores_alarms: true,
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

/// Runs the recorder on one fixed configuration until `shutdown` resolves, then drains.
pub async fn run(
    valid: ValidRecorderConfig,
    options: ServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, ServiceError> {
    run_with_updates(watch::channel(Ok(valid)).1, options, shutdown).await
}

/// A configuration for the running recorder, or why the one offered is unusable (refused
/// there, visibly, while the last good one keeps running).
pub type ConfigUpdate = Result<ValidRecorderConfig, String>;

/// Runs the recorder until `shutdown` resolves (SIGTERM or SIGINT), then drains. Each value
/// `configs` receives after the first is applied in place ([`apply`]): standalone sends its
/// edited profiles, `callvault recorder` its reloaded ConfigMap.
pub async fn run_with_updates(
    configs: watch::Receiver<ConfigUpdate>,
    options: ServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, ServiceError> {
    let health = options.health.clone();
    let outcome = serve(configs, options, shutdown).await;
    if let Err(e) = &outcome {
        health.set(Health::Failed {
            error: e.to_string(),
        });
    }
    outcome
}

async fn serve(
    mut configs: watch::Receiver<ConfigUpdate>,
    options: ServiceOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Outcome, ServiceError> {
    let mut current = configs
        .borrow_and_update()
        .clone()
        .map_err(ServiceError::Config)?;
    let metrics = Arc::new(Metrics::default());
    let (live, _) = build(&current, None, &metrics, options.backoff)?;
    // Storage that cannot be opened does not stop the recorder: calls go into the spool and
    // the committer opens it again at each attempt. Tried once now so the alarm and
    // `/status` say so before the first call.
    if let Err(e) = live.ctx.committer.storage().get() {
        tracing::error!(error = %e,
            "storage cannot be opened: recordings wait in the spool until it can");
    }
    let mut committers = vec![live.ctx.committer.clone()];
    // What a previous run left: ended segments wait for their commit, live ones died with it.
    for manifest in live.ctx.spool.manifests()? {
        let manifest = if manifest.ended.is_none() {
            tracing::warn!(recording = %manifest.id, call_id = %manifest.row.sip_call_id,
                "recovering a recording whose recorder stopped mid-call");
            live.ctx.spool.recover(manifest, Recovery::Crash)
        } else {
            manifest
        };
        live.ctx.committer.submit(manifest);
    }
    let recorder = Arc::new(Recorder::new(
        live.settings.as_ref().clone(),
        live.ctx.clone(),
    ));
    let state = OpsState::new(recorder.clone(), options.health.clone());
    options.status.set(state.clone());
    let (http, http_task) = ops::serve(options.http, state.clone())
        .await
        .map_err(|source| ServiceError::Http {
            addr: options.http,
            source,
        })?;
    tracing::info!(%http, profile = %current.config.profile, "operations endpoint up");
    let (applied_tx, applied) = watch::channel(current.clone());
    let users = spawn_directory_refresh(recorder.clone(), applied);
    let source = options
        .instance
        .clone()
        .unwrap_or_else(|| format!("recorder {}", current.config.profile));
    let conditions = spawn_conditions(state.clone(), source, options.stores_alarms);

    let mut listeners = Listeners::default();
    let mut updates_open = true;
    tokio::pin!(shutdown);
    loop {
        let want = sip_address(&current);
        if !listeners.serves(&want) && Instant::now() >= listeners.next_attempt {
            listeners.bind(&want, &current, &recorder, &state).await;
        }
        if let Some((_, server)) = &listeners.current {
            // Applied in place: connections opened from now on use the current timeouts.
            server.set_tcp_timeouts(tcp_timeouts(&current));
        }
        let retry = listeners.next_attempt;
        let waiting = !listeners.serves(&want);
        tokio::select! {
            () = &mut shutdown => break,
            changed = configs.changed(), if updates_open => {
                if changed.is_err() {
                    // Nobody sends configurations any more: keep the last one.
                    updates_open = false;
                    continue;
                }
                let next = configs.borrow_and_update().clone();
                let applied = next.map_err(ServiceError::Config).and_then(|next| {
                    apply(&recorder, &current, &next, &metrics, options.backoff)
                        .map(|committer| (next, committer))
                });
                match applied {
                    Ok((next, new_committer)) => {
                        committers.extend(new_committer);
                        metrics::inc(&metrics.config_applied);
                        state.configuration_applied();
                        tracing::info!(profile = %next.config.profile,
                            "configuration applied: new calls take it, live calls finish on theirs");
                        if sip_address(&next) != want {
                            listeners.retry_now();
                        }
                        current = next;
                        applied_tx.send_replace(current.clone());
                    }
                    Err(e) => {
                        metrics::inc(&metrics.config_refused);
                        state.configuration_refused(e.to_string());
                        tracing::error!(error = %e,
                            "configuration refused: the recorder keeps running the previous one");
                    }
                }
            }
            () = tokio::time::sleep_until(retry), if waiting => {}
        }
    }

    state.set_health(Health::Draining);
    let grace = Duration::from_secs(u64::from(current.config.drain_grace_seconds));
    let remaining = listeners.drain(grace).await;
    if remaining > 0 {
        tracing::warn!(remaining, "drain grace over: stopping live calls");
        listeners.hang_up_all().await;
    }
    recorder.stop_all().await;
    listeners.shutdown();
    users.abort();
    conditions.abort();
    let mut idle = true;
    for committer in &committers {
        idle &= committer.wait_idle(options.commit_grace).await;
    }
    let pending_commits = committers.iter().map(Committer::pending).sum();
    if !idle {
        tracing::warn!(
            pending = pending_commits,
            "commits still pending at exit: the spool keeps them for the next start"
        );
    }
    http_task.abort();
    Ok(Outcome {
        cut_calls: remaining,
        pending_commits,
    })
}

/// Applies `next` to the running recorder in place: new calls take it from now on, live
/// calls finish on what they started with. Returns the committer built when the storage,
/// spool or database changed (recordings already handed to the old one finish there). The
/// SIP listener follows in [`run_with_updates`]. Refused, with nothing changed, when a part
/// of `next` cannot work (a key file that does not match, storage that cannot be opened).
pub fn apply(
    recorder: &Recorder,
    current: &ValidRecorderConfig,
    next: &ValidRecorderConfig,
    metrics: &Arc<Metrics>,
    backoff: Backoff,
) -> Result<Option<Committer>, ServiceError> {
    let (live, new_committer) = build(
        next,
        Some((&current.config, &recorder.live().ctx)),
        metrics,
        backoff,
    )?;
    let spec = storage_spec(&next.config);
    if new_committer.is_none() && live.ctx.committer.storage().spec() != spec {
        // Same spool and database, another StorageTarget spec: opened now so a change that
        // cannot work is refused while the previous target keeps storing; recordings waiting
        // in the spool are retried with the new one at once.
        let opened = open_storage(&spec)?;
        live.ctx.committer.storage().replace(spec, Some(opened));
    }
    recorder.reconfigure(live);
    Ok(new_committer)
}

/// The SIP address a configuration listens on.
/// Where and how a configuration listens for SIP: a change of any of it needs new sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listen {
    addr: SocketAddr,
    udp: bool,
    tcp: bool,
    tls: Option<(u16, TlsFiles)>,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut transports: Vec<&str> = Vec::new();
        if self.udp {
            transports.push("UDP");
        }
        if self.tcp {
            transports.push("TCP");
        }
        write!(f, "{} ({})", self.addr, transports.join(", "))?;
        if let Some((port, _)) = &self.tls {
            write!(f, ", TLS port {port}")?;
        }
        Ok(())
    }
}

/// The listeners `at` names, with the TLS identity loaded from its files.
fn listen_on(at: &Listen) -> Result<ListenOn, TransportError> {
    let tls = match &at.tls {
        Some((port, files)) => Some((*port, Arc::new(TlsIdentity::new(files.clone())?))),
        None => None,
    };
    Ok(ListenOn {
        addr: at.addr,
        udp: at.udp,
        tcp: at.tcp,
        tls,
    })
}

fn sip_address(valid: &ValidRecorderConfig) -> Listen {
    let sip = &valid.config.sip;
    let has = |t| sip.transports.contains(&t);
    Listen {
        addr: SocketAddr::new(valid.bind, sip.port),
        udp: has(SipTransport::Udp),
        tcp: has(SipTransport::Tcp),
        // Validation makes sure a TLS transport has its directory.
        tls: sip
            .tls_dir
            .clone()
            .filter(|_| has(SipTransport::Tls))
            .map(|dir| {
                (
                    sip.tls_port,
                    TlsFiles {
                        dir,
                        verify_clients: sip.tls_verify_client,
                    },
                )
            }),
    }
}

/// Whether two configurations commit through the same committer: same spool and database
/// (a changed storage is given to that committer).
fn same_commit_path(a: &RecorderConfig, b: &RecorderConfig) -> bool {
    a.spool_dir == b.spool_dir && a.database_url_file == b.database_url_file
}

/// Opens the storage of a configuration offered to a running recorder (refused if it cannot).
fn open_storage(spec: &StorageSpec) -> Result<Storage, ServiceError> {
    spec.open().map_err(|e| ServiceError::Storage {
        target: spec.target.clone(),
        error: Box::new(e),
    })
}

fn storage_spec(config: &RecorderConfig) -> StorageSpec {
    StorageSpec {
        target: config.storage_target.clone(),
        config: config.storage.clone(),
        credentials_dir: config.storage_credentials_dir.clone(),
    }
}

/// The session settings and call context of `valid`. The committer, spool, database and RTP
/// port pool of `previous` are kept where `valid` does not change them; a new committer is
/// returned when it does.
fn build(
    valid: &ValidRecorderConfig,
    previous: Option<(&RecorderConfig, &Arc<CallContext>)>,
    metrics: &Arc<Metrics>,
    backoff: Backoff,
) -> Result<(Live, Option<Committer>), ServiceError> {
    let config = &valid.config;
    let key = read_key(config)?;
    let advertise = advertise(valid)?;
    let (spool, committer, db, new_committer) = match previous {
        Some((old, ctx)) if same_commit_path(old, config) => (
            ctx.spool.clone(),
            ctx.committer.clone(),
            ctx.db.clone(),
            None,
        ),
        _ => {
            let url = std::fs::read_to_string(&config.database_url_file).map_err(|source| {
                ServiceError::DatabaseUrl {
                    path: config.database_url_file.display().to_string(),
                    source,
                }
            })?;
            let spec = storage_spec(config);
            let storage = match previous {
                // A running recorder keeps its previous commit path unless the new one opens.
                Some(_) => {
                    let opened = open_storage(&spec)?;
                    StorageSlot::new(spec, Some(opened))
                }
                None => StorageSlot::new(spec, None),
            };
            let spool = Spool::open(&config.spool_dir)?;
            let db = Arc::new(DbSlot::new(url.trim().to_owned()));
            let committer = Committer::new(
                spool.clone(),
                Arc::new(storage),
                db.clone(),
                backoff,
                metrics.clone(),
            );
            (spool, committer.clone(), db, Some(committer))
        }
    };
    let ports = match previous {
        Some((old, ctx)) if old.rtp_port_range == config.rtp_port_range => ctx.ports.clone(),
        _ => Arc::new(PortPool::new(
            config.rtp_port_range.start,
            config.rtp_port_range.end,
        )),
    };
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
        committer,
        db,
        metrics: metrics.clone(),
        ports,
        encoders: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, usize::from),
        ),
    });
    let settings = Arc::new(SessionSettings {
        profile: config.profile.clone(),
        // Rows name the StorageTarget, so the portal and the jobs open the media through it.
        storage_target: config.storage_target.clone(),
        key_id: config.encryption.key_id.clone(),
        media_bind: valid.bind,
        advertise,
        capacity: config.sessions_per_replica,
        fail_closed: config.fail_closed,
        retention_days: config.retention_days,
        rules: valid.rules.clone(),
        spool: config.spool.clone(),
        media_timeout: seconds(config.media_timeout_seconds),
        options_probe: seconds(config.options_probe_seconds),
        created: config.profile_created.clone(),
        srtp: config.srtp,
        channels: config.media.channels,
    });
    Ok((Live { settings, ctx }, new_committer))
}

/// A setting in seconds where 0 turns its check off.
fn seconds(n: u32) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(u64::from(n)))
}

fn read_key(config: &RecorderConfig) -> Result<PublicKey, ServiceError> {
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
    Ok(key)
}

/// The SIP TCP timeouts `valid` sets.
fn tcp_timeouts(valid: &ValidRecorderConfig) -> TcpTimeouts {
    let t = valid.config.sip.tcp_timeouts;
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    TcpTimeouts {
        message: secs(t.message_seconds),
        idle: secs(t.idle_seconds),
        write: secs(t.write_seconds),
    }
}

/// First and longest wait between attempts to bind a SIP address that is taken.
const BIND_RETRY_FIRST: Duration = Duration::from_millis(500);
const BIND_RETRY_MAX: Duration = Duration::from_secs(5);
/// Replaced listeners kept open: they answer new offers 503 (so a source that still sends
/// there fails over at once rather than into silence), serve their live calls to the end, and
/// are taken back into service if the configuration returns to their address. Beyond this
/// many, those without live calls are closed.
const RETIRED_KEPT: usize = 4;

type Server = Arc<SipServer<Recorder>>;

/// The SIP listener of the current configuration and those it replaced.
struct Listeners {
    current: Option<(Listen, Server)>,
    retired: Vec<(Listen, Server)>,
    failures: u32,
    next_attempt: Instant,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            current: None,
            retired: Vec::new(),
            failures: 0,
            next_attempt: Instant::now(),
        }
    }
}

impl Listeners {
    /// A new address is tried at once, with no back-off left over from the previous one.
    fn retry_now(&mut self) {
        self.failures = 0;
        self.next_attempt = Instant::now();
    }

    fn serves(&self, at: &Listen) -> bool {
        self.current.as_ref().is_some_and(|(a, _)| a == at)
    }

    /// Makes `addr` the current listener: a replaced listener still open there is taken back,
    /// otherwise `addr` is bound while the previous listener still runs. Then the previous one
    /// is retired. On failure the previous one keeps its calls, readiness drops and a retry is
    /// planned.
    async fn bind(
        &mut self,
        at: &Listen,
        valid: &ValidRecorderConfig,
        recorder: &Arc<Recorder>,
        state: &OpsState,
    ) {
        let addr = at.to_string();
        // A TLS transport without a usable certificate is a failure to listen, shown and
        // retried as any other.
        let on = match listen_on(at) {
            Ok(on) => on,
            Err(e) => return self.failed(&addr, &e, recorder, state),
        };
        // The same SIP address: its listener changes transports in place, so the sockets live
        // calls use stay (a new one could not bind their port anyway).
        if let Some((current, server)) = self.current.as_mut()
            && current.addr == at.addr
        {
            if let Err(e) = server.reconcile(on).await {
                return self.failed(&addr, &e, recorder, state);
            }
            tracing::info!(%addr, "SIP transports changed in place");
            *current = at.clone();
            self.failures = 0;
            state.set_health(Health::Ready);
            return;
        }
        let server = match self.retired.iter().position(|(a, _)| a.addr == at.addr) {
            Some(i) => {
                let (_, server) = self.retired.remove(i);
                if let Err(e) = server.reconcile(on).await {
                    self.retired.push((at.clone(), server));
                    return self.failed(&addr, &e, recorder, state);
                }
                server.resume();
                tracing::info!(%addr, "previous SIP listener taken back into service");
                server
            }
            None => {
                let config = ServerConfig {
                    bind: at.addr,
                    listen_udp: on.udp,
                    listen_tcp: on.tcp,
                    listen_tls: on.tls,
                    advertised_host: advertise(valid).ok().map(|a| a.to_string()),
                    tcp: tcp_timeouts(valid),
                    ..ServerConfig::default()
                };
                match SipServer::start(config, recorder.clone()).await {
                    Ok(server) => Arc::new(server),
                    Err(e) => return self.failed(&addr, &e, recorder, state),
                }
            }
        };
        tracing::info!(sip_udp = ?server.udp_addr(), sip_tcp = ?server.tcp_addr(),
            sip_tls = ?server.tls_addr(), profile = %valid.config.profile, "recorder listening");
        self.failures = 0;
        if let Some((old_addr, old)) = self.current.replace((at.clone(), server)) {
            tracing::info!(%old_addr, live = old.live_dialogs(),
                "previous SIP listener answers new calls 503 and serves its live ones to the end");
            // Sets the listener draining; its calls are waited for at the final drain.
            old.drain(Duration::ZERO).await;
            self.retired.push((old_addr, old));
        }
        while self.retired.len() > RETIRED_KEPT {
            let Some(i) = self.retired.iter().position(|(_, s)| s.live_dialogs() == 0) else {
                break;
            };
            let (closed, server) = self.retired.remove(i);
            server.shutdown();
            tracing::info!(%closed, "previous SIP listener closed");
        }
        state.set_health(Health::Ready);
    }

    /// Listening at `addr` failed: readiness drops, the metric counts it and a retry is
    /// planned with back-off.
    fn failed(&mut self, addr: &str, e: &TransportError, recorder: &Recorder, state: &OpsState) {
        self.failures += 1;
        metrics::inc(&recorder.metrics().sip_bind_failures);
        let wait = BIND_RETRY_FIRST
            .saturating_mul(1 << self.failures.min(8))
            .min(BIND_RETRY_MAX);
        self.next_attempt = Instant::now() + wait;
        tracing::error!(%addr, error = %e, attempts = self.failures, retry_in = ?wait,
            "cannot listen for SIP: calls to this address are not answered");
        state.set_health(Health::NotListening {
            address: addr.to_owned(),
            error: e.to_string(),
            attempts: self.failures,
        });
    }

    fn all(&self) -> impl Iterator<Item = &Server> {
        self.current
            .iter()
            .chain(self.retired.iter())
            .map(|(_, s)| s)
    }

    /// Every listener answers new offers 503 while live calls go on, for at most `grace`;
    /// returns the calls still live then.
    async fn drain(&self, grace: Duration) -> usize {
        let drains: Vec<_> = self
            .all()
            .cloned()
            .map(|s| tokio::spawn(async move { s.drain(grace).await.remaining }))
            .collect();
        let mut remaining = 0;
        for d in drains {
            remaining += d.await.unwrap_or(0);
        }
        remaining
    }

    async fn hang_up_all(&self) {
        for s in self.all() {
            s.hang_up_all().await;
        }
    }

    fn shutdown(&self) {
        for s in self.all() {
            s.shutdown();
        }
    }
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("current", &self.current.as_ref().map(|(a, _)| a))
            .field("retired", &self.retired.len())
            .field("failures", &self.failures)
            .finish()
    }
}

/// How often the spool and the storage are looked at for the metrics and alarms.
const CONDITIONS_PERIOD: Duration = Duration::from_secs(2);

/// Measures the spool and reads the storage's health into the metrics and `/status`, and
/// (when `stores` says so) raises or clears their alarms (named `source`) as they change.
fn spawn_conditions(state: Arc<OpsState>, source: String, stores: bool) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            let recorder = state.recorder.clone();
            let mut reporter = Reporter::new(recorder.live().ctx.tenant.clone(), source);
            loop {
                let live = recorder.live();
                let m = recorder.metrics();
                let health = live.ctx.committer.storage().health();
                let reachable = !matches!(health, StorageHealth::Unreachable { .. });
                m.storage_reachable
                    .store(u64::from(reachable), Ordering::Relaxed);
                let storage = alarms::storage(
                    reporter.source(),
                    &health,
                    m.commits_pending.load(Ordering::Relaxed),
                );
                let spool = match live.ctx.spool.space() {
                    Ok(space) => {
                        m.spool_free_bytes
                            .store(space.free_bytes, Ordering::Relaxed);
                        m.spool_used_percent
                            .store(u64::from(space.used_percent()), Ordering::Relaxed);
                        Some(alarms::spool(
                            reporter.source(),
                            space,
                            &live.settings.spool,
                        ))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "spool space not measured");
                        None
                    }
                };
                state.set_alarm(alarms::STORAGE_UNREACHABLE, reporter.source(), &storage);
                if let Some(spool) = &spool {
                    state.set_alarm(alarms::SPOOL_DISK_FULL, reporter.source(), spool);
                }
                if stores && let Ok(db) = live.ctx.db.get().await {
                    reporter
                        .report(&db, alarms::STORAGE_UNREACHABLE, storage)
                        .await;
                    if let Some(spool) = spool {
                        reporter.report(&db, alarms::SPOOL_DISK_FULL, spool).await;
                    }
                }
                let mut changed = live.ctx.committer.storage().subscribe();
                let _ = tokio::time::timeout(CONDITIONS_PERIOD, changed.changed()).await;
            }
        }
        .in_current_span(),
    )
}

/// Counts the users the profile records and the conflicts with other profiles, once a
/// minute, with the configuration applied last.
fn spawn_directory_refresh(
    recorder: Arc<Recorder>,
    applied: watch::Receiver<ValidRecorderConfig>,
) -> JoinHandle<()> {
    tokio::spawn(
        async move {
            loop {
                let others = applied
                    .borrow()
                    .config
                    .other_profiles_file
                    .clone()
                    .as_deref()
                    .map(read_other_profiles)
                    .unwrap_or_default();
                if let Ok(db) = recorder.live().ctx.db.get().await {
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
