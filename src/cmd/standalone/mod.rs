//! `callvault standalone`: the whole system in one process, on SQLite and local files, from the
//! same resource YAML a cluster runs.
//!
//! One recorder per RecordingProfile (each on its profile's SIP port), the portal, and the jobs'
//! schedules (retention and archive). The resource directory is polled; a valid change is applied
//! (AccessProfiles live, a changed profile applied to its running recorder in place, schedules
//! from their next run), an invalid one is reported and the last good configuration keeps
//! running. Every resource shows the status the operator would write, and the same alarms are
//! raised (listed in the portal, mailed with `--smtp-config`). `/readyz` answers 503, naming
//! the profile and why, while a recorder cannot take calls. SIGTERM and Ctrl-C both drain.

mod admin;
mod keys;
mod recorders;
mod resources;
mod schedules;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use callvault_crds::ResourceSet;
use callvault_portal::{AuditKey, FileAccessSource, Portal, PortalConfig, Storages};
use callvault_store::db::Db;

use crate::cmd::keys::PassphraseArgs;
use crate::cmd::portal::IdentityArgs;

/// The only tenant of a standalone installation.
pub const TENANT: &str = "default";
/// User name of the first admin, created on first start.
pub const FIRST_ADMIN: &str = "admin";

/// Options of `callvault standalone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of resource YAML (RecordingProfiles, AccessProfiles, StorageTargets, Connectors,
    /// SpeechJobs), reloaded when a file changes.
    #[arg(long, default_value = "examples/standalone")]
    pub resources: PathBuf,
    /// Where recordings, keys, the database and the spool live.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Address of the portal (web UI and API).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Address of the portal's `/metrics` (with `/healthz` and `/readyz`); not served without.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Who the portal believes the client is (`--trusted-proxies`).
    #[command(flatten)]
    pub edge: crate::cmd::portal::EdgeArgs,
    /// Address the recorders listen on for SIP and RTP and advertise in their SDP answers. Use
    /// this machine's address on the network the call source reaches.
    #[arg(long, default_value = "127.0.0.1")]
    pub media_address: String,
    /// File holding the first admin's password (created on first start). Without it a random
    /// password is generated and printed once.
    #[arg(long)]
    pub admin_password_file: Option<PathBuf>,
    /// Audit entries are kept this many days (1-3650), then purged by the retention job.
    #[arg(long, env = "CALLVAULT_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u32,
    #[command(flatten)]
    pub passphrase: PassphraseArgs,
    /// YAML file of the SMTP settings alarms are mailed with (`host`, `port`, `security`,
    /// `from`, `to`, and `usernameFile`/`passwordFile` for a server that wants a login).
    /// Without it, alarms are listed in the portal only.
    #[arg(long)]
    pub smtp_config: Option<PathBuf>,
    /// File holding the backup key (at least 16 characters; or CALLVAULT_BACKUP_KEY): with
    /// one, the catalogue and configuration are backed up daily into `<data>/backups/`.
    #[arg(long)]
    pub backup_key_file: Option<PathBuf>,
    /// Single sign-on and SCIM provisioning (the callback defaults to the portal's address).
    #[command(flatten)]
    pub identity: IdentityArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = PortalConfig {
        default_tenant: TENANT.to_owned(),
        // Plain HTTP on this machine: a `Secure` cookie would never come back.
        secure_cookies: false,
        public_url: format!("http://{}", args.http),
        audit_retention_days: args.audit_retention_days,
        ..PortalConfig::default()
    };
    args.edge.apply(&mut config)?;
    args.identity.apply(&mut config)?;
    // Settings are checked before anything is created on disk.
    let mut config = config.validate()?;
    let backup_key = if args.backup_key_file.is_some()
        || std::env::var_os(crate::cmd::backup::KEY_ENV).is_some()
    {
        let key = crate::cmd::backup::KeyArgs {
            key_file: args.backup_key_file.clone(),
        };
        Some(Arc::new(key.read()?))
    } else {
        None
    };
    let stop = crate::cmd::terminated();
    tokio::pin!(stop);
    let generated = args.data.join("resources");
    std::fs::create_dir_all(&generated)
        .with_context(|| format!("creating {}", generated.display()))?;
    let db = open_db(&args.data).await?;
    let loaded = resources::load(&args.resources, &generated)?;
    // Files edited while standalone was stopped are checked against what ran before; a change
    // the rules refuse leaves that running, and the portal says why.
    let (mut set, refused) = match resources::running(&args.data) {
        Some(running) => match resources::admit(&db, TENANT, &loaded, &running).await {
            Ok(()) => (loaded, None),
            Err(why) => {
                tracing::error!(error = %why, "keeping the resources that ran before");
                (running, Some(why))
            }
        },
        None => (loaded, None),
    };
    let mut keys = keys::ensure(&args.data, &set, &args.passphrase)?;
    if keys::write_grant(&generated, FIRST_ADMIN, &keys)? && refused.is_none() {
        // The grant file is part of the set: read it again with the new file.
        set = resources::load(&args.resources, &generated)?;
    }
    let mailer = match &args.smtp_config {
        Some(path) => {
            let smtp = callvault_config::SmtpConfig::load(path)
                .with_context(|| format!("SMTP settings in {}", path.display()))?;
            Some(callvault_jobs::alarms::Mailer::new(&smtp).context("SMTP settings")?)
        }
        None => None,
    };

    let access = Arc::new(FileAccessSource::from_resources(TENANT, declared(&set)));
    if config.audit_key.is_none() {
        config.audit_key = keys.audit.take().map(|k| AuditKey(Arc::new(k)));
    }
    let portal_storages = storages(&args.data, &set);
    let (run_now, run_now_requests) = schedules::run_now();
    let mut portal = Portal::new(
        config,
        db.clone(),
        access.clone(),
        keys.ring.clone(),
        portal_storages.clone(),
        Arc::new(run_now),
    );
    let board = status::Board::default();
    board.files(refused.clone());
    portal.app = portal.app.layer(axum::middleware::from_fn({
        let board = board.clone();
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let board = board.clone();
            async move {
                if req.uri().path() == "/readyz"
                    && let Some(reason) = board.cannot_record()
                {
                    use axum::response::IntoResponse as _;
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
                }
                next.run(req).await
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("binding the portal to {}", args.http))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = &args.metrics {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the portal's metrics to {addr}"))?;
        let mut stop = stop_rx.clone();
        tokio::spawn(callvault_portal::serve(
            metrics,
            portal.ops,
            portal.limits,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ));
    }
    let mut portal_stop = stop_rx.clone();
    let portal_task = tokio::spawn(callvault_portal::serve(
        listener,
        portal.app,
        portal.limits,
        async move {
            let _ = portal_stop.wait_for(|stop| *stop).await;
        },
    ));

    let local = recorders::Local {
        data: args.data.clone(),
        media_address: args.media_address.clone(),
        public_keys: keys.by_name.clone(),
    };
    let mut pool = recorders::Pool::default();
    pool.apply(&local, &set)?;
    board.set_recorders(pool.cells());
    let watched = [args.resources.as_path(), generated.as_path()];
    let mut last = resources::snapshot(&watched);
    if refused.is_none() {
        resources::remember(&args.data, &last)?;
    }
    let set = Arc::new(set);
    let (resources_tx, resources_rx) = tokio::sync::watch::channel(set.clone());
    // The portal shows the last set that loaded, even one the recorders refused (its
    // AccessProfiles apply at once), with the status of each resource.
    let (loaded_tx, loaded_rx) = tokio::sync::watch::channel(set.clone());
    let jobs_task = tokio::spawn(schedules::run(
        schedules::Context {
            db: db.clone(),
            data: args.data.clone(),
            ring: Arc::new(keys.ring),
            audit_retention_days: args.audit_retention_days,
            board: board.clone(),
            resources: args.resources.clone(),
            backup_key,
            media_address: args.media_address.clone(),
        },
        resources_rx,
        stop_rx.clone(),
        run_now_requests,
    ));
    let status_task = tokio::spawn(status::run(
        status::Context {
            db: db.clone(),
            data: args.data.clone(),
            mailer,
            key_ids: keys
                .by_name
                .iter()
                .map(|(name, k)| (name.clone(), k.id.to_hex()))
                .collect(),
            probe: callvault_store::objstore::ProbeOptions::default(),
        },
        board.clone(),
        loaded_rx,
        stop_rx.clone(),
        {
            let access = access.clone();
            move |set| access.set_resources(declared(&set))
        },
    ));
    // Last, once nothing else can fail: a generated password is shown only at creation.
    let first_admin = admin::ensure_first_admin(&db, args.admin_password_file.as_deref()).await?;

    eprintln!("CallVault standalone is running.");
    eprintln!("  portal:    http://{}/", args.http);
    for (name, sip) in pool.sip_addresses() {
        eprintln!("  recorder:  profile {name:?} takes SIPREC calls at sip:{sip}");
    }
    match &first_admin {
        admin::FirstAdmin::Created { password } => eprintln!(
            "  sign in as {FIRST_ADMIN:?} with password {password:?} (you will be asked to \
             change it); shown only this once"
        ),
        admin::FirstAdmin::FromFile => {
            eprintln!("  sign in as {FIRST_ADMIN:?} with the password from --admin-password-file")
        }
        admin::FirstAdmin::Exists => {}
    }
    eprintln!("  stop with Ctrl-C or SIGTERM: live calls are finished and committed first.");

    let mut running = set.clone();
    let mut tick = tokio::time::interval(resources::POLL);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let now = resources::snapshot(&watched);
        if now == last {
            continue;
        }
        last = now;
        let loaded = match resources::load(&args.resources, &generated) {
            Ok(set) => resources::admit(&db, TENANT, &set, &running)
                .await
                .map(|()| set)
                .map_err(|why| anyhow::anyhow!(why)),
            Err(e) => Err(e),
        };
        match loaded {
            Ok(set) => {
                let set = Arc::new(set);
                // Added or changed StorageTargets play back at once.
                portal_storages.replace(storages(&args.data, &set));
                loaded_tx.send_replace(set.clone());
                let applied = pool.apply(&local, &set);
                board.set_recorders(pool.cells());
                if let Err(e) = applied {
                    let why = format!("{e:#}");
                    tracing::error!(error = %why, "keeping the running recorders");
                    board.files(Some(why));
                } else {
                    if let Err(e) = resources::remember(&args.data, &last) {
                        let why = format!("{e:#}");
                        tracing::warn!(error = %why, "the running resources are not remembered");
                    }
                    running = set.clone();
                    resources_tx.send_replace(set);
                    board.files(None);
                    tracing::info!("resources reloaded");
                }
            }
            Err(e) => {
                let why = format!("{e:#}");
                tracing::error!(error = %why, "keeping the last good configuration");
                board.files(Some(why));
            }
        }
    }
    eprintln!("stopping: finishing live calls and pending commits");
    let _ = stop_tx.send(true);
    pool.stop_all().await;
    jobs_task.await.context("jobs task")?;
    status_task.await.context("status task")?;
    portal_task
        .await
        .context("portal task")?
        .context("portal server")?;
    Ok(ExitCode::SUCCESS)
}

/// The SQLite database under `<data>`, created and migrated on first start.
async fn open_db(data: &Path) -> anyhow::Result<Db> {
    let path = data.join("callvault.db");
    let db = Db::connect(&database_url(data))
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(db)
}

fn database_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("callvault.db").display())
}

/// Every StorageTarget opened by name; credentials of one that names a Secret come from
/// `<data>/secrets/<secret name>/` (one file per key, as a mounted Secret). A target that
/// cannot be opened is left out: its status and alarm say why (its connection test runs at
/// once), and the rest of the system runs on.
fn storages(data: &Path, set: &ResourceSet) -> Storages {
    let out = Storages::new();
    for (name, target) in &set.storage_targets {
        // A local directory is created when it is declared, as the rest of `<data>` is.
        if target.spec.type_ == callvault_crds::StorageType::Filesystem
            && let Some(path) = &target.spec.path
            && let Err(e) = std::fs::create_dir_all(path)
        {
            tracing::error!(target = %name, error = %e, "cannot create {path}");
            continue;
        }
        let dir = credentials_dir(data, target);
        match crate::cmd::portal::open_storage(name, target, dir.as_deref()) {
            Ok(storage) => out.insert(name.clone(), storage),
            Err(e) => {
                tracing::error!(target = %name, error = %format!("{e:#}"), "StorageTarget not opened")
            }
        }
    }
    out
}

fn credentials_dir(data: &Path, target: &callvault_crds::StorageTarget) -> Option<PathBuf> {
    target
        .spec
        .credentials_secret_ref
        .as_ref()
        .map(|r| data.join("secrets").join(&r.name))
}

/// Every resource of the set, for the portal (access from the AccessProfiles; the admin
/// screens show the rest).
fn declared(set: &callvault_crds::ResourceSet) -> Vec<callvault_crds::Resource> {
    use callvault_crds::Resource;
    let mut all: Vec<Resource> = Vec::new();
    all.extend(
        set.access_profiles
            .values()
            .cloned()
            .map(Resource::AccessProfile),
    );
    all.extend(
        set.recording_profiles
            .values()
            .cloned()
            .map(Resource::RecordingProfile),
    );
    all.extend(
        set.storage_targets
            .values()
            .cloned()
            .map(Resource::StorageTarget),
    );
    all.extend(set.connectors.values().cloned().map(Resource::Connector));
    all.extend(set.speech_jobs.values().cloned().map(Resource::SpeechJob));
    all
}
