//! `callvault portal`: the HTTP API (and later the web UI) over the vault database.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use callvault_portal::config::parse_trusted_proxies;
use callvault_portal::oidc::{OidcConfig, Secret};
use callvault_portal::{
    AccessSource, AuditKey, ConfigError, FileAccessSource, JobRunner, KubeAccessSource,
    NoJobRunner, Portal, PortalConfig, Storages,
};
use callvault_store::db::Db;
use callvault_store::keys::{KeyRing, PrivateKey, is_encrypted_pem};
use callvault_store::objstore::{self, Credentials, Storage, StorageConfig};

/// Options of `callvault portal`. The database URL is read from `CALLVAULT_DATABASE_URL`
/// only (it holds a password, so it is never an argument).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "CALLVAULT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// Address of `/metrics` (with `/healthz` and `/readyz`), apart from the users' address.
    #[arg(long, env = "CALLVAULT_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: String,
    /// Audit entries are kept this many days (1-3650).
    #[arg(long, env = "CALLVAULT_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    pub audit_retention_days: u32,
    /// Minutes without a request after which a session ends.
    #[arg(
        long,
        env = "CALLVAULT_SESSION_IDLE_TIMEOUT_MINUTES",
        default_value_t = 15
    )]
    pub session_idle_timeout_minutes: u64,
    /// Minutes after sign-in at which a session ends, active or not.
    #[arg(
        long,
        env = "CALLVAULT_SESSION_ABSOLUTE_TIMEOUT_MINUTES",
        default_value_t = 720
    )]
    pub session_absolute_timeout_minutes: u64,
    /// Tenant of sign-ins that name none (the pod's namespace in a cluster).
    #[arg(long, env = "CALLVAULT_POD_NAMESPACE", default_value = "default")]
    pub tenant: String,
    /// A directory of AccessProfile YAML (standalone). Without it, AccessProfiles are watched
    /// through the Kubernetes API.
    #[arg(long, env = "CALLVAULT_ACCESS_PROFILES_DIR")]
    pub access_profiles: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; empty = all.
    #[arg(long, env = "CALLVAULT_WATCH_NAMESPACES", default_value = "")]
    pub watch_namespaces: String,
    /// Directory of private keys (`<key-id>.pem`, PKCS#8) used to decrypt recordings.
    #[arg(long, env = "CALLVAULT_KEY_DIR")]
    pub key_dir: Option<PathBuf>,
    /// File holding the passphrase of protected private keys.
    #[arg(long, env = "CALLVAULT_KEY_PASSPHRASE_FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// Directory of StorageTarget YAML the recordings live on.
    #[arg(long, env = "CALLVAULT_STORAGE_TARGETS_DIR")]
    pub storage_targets: Option<PathBuf>,
    /// Directory with one sub-directory of credential files per StorageTarget name.
    #[arg(long, env = "CALLVAULT_STORAGE_CREDENTIALS_DIR")]
    pub storage_credentials: Option<PathBuf>,
    /// The portal's public URL (links in exports).
    #[arg(long, env = "CALLVAULT_PUBLIC_URL", default_value = "")]
    pub public_url: String,
    /// Send cookies without `Secure` (plain-HTTP development only).
    #[arg(long)]
    pub insecure_cookies: bool,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Who the portal believes the client is, shared by `callvault portal` and `callvault
/// standalone`.
#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose `X-Forwarded-For` is
    /// believed; every other peer is the client itself. Empty: the header is ignored.
    #[arg(long, env = "CALLVAULT_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// Seconds a request's headers may take to arrive; a kept-alive connection idle this long
    /// is closed (1-300).
    #[arg(
        long,
        env = "CALLVAULT_HTTP_HEADER_TIMEOUT_SECONDS",
        default_value_t = 10
    )]
    pub http_header_timeout_seconds: u64,
    /// Seconds a request's body may take to arrive after its headers (1-3600).
    #[arg(
        long,
        env = "CALLVAULT_HTTP_BODY_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub http_body_timeout_seconds: u64,
}

impl EdgeArgs {
    /// Sets the trusted proxies and the HTTP timeouts; validation is left to
    /// [`PortalConfig::validate`].
    pub fn apply(&self, config: &mut PortalConfig) -> Result<(), ConfigError> {
        config.trusted_proxies = parse_trusted_proxies(&self.trusted_proxies)?;
        config.header_timeout = Duration::from_secs(self.http_header_timeout_seconds);
        config.body_timeout = Duration::from_secs(self.http_body_timeout_seconds);
        Ok(())
    }
}

/// Single sign-on and SCIM provisioning, shared by `callvault portal` and `callvault
/// standalone`. Secrets are named by file, never given as values; [`IdentityArgs::apply`] puts
/// them in the portal's typed settings, which [`PortalConfig::validate`] checks.
#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    /// OpenID Connect issuer URL; single sign-on is on when set.
    #[arg(long, env = "CALLVAULT_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The portal's client id at the OpenID Connect provider.
    #[arg(long, env = "CALLVAULT_OIDC_CLIENT_ID", default_value = "")]
    pub oidc_client_id: String,
    /// File holding the client secret.
    #[arg(long, env = "CALLVAULT_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The portal's callback URL as registered at the provider; default: the public URL
    /// followed by `/api/v1/auth/oidc/callback`.
    #[arg(long, env = "CALLVAULT_OIDC_REDIRECT_URL", default_value = "")]
    pub oidc_redirect_url: String,
    /// Scopes requested, space-separated.
    #[arg(
        long,
        env = "CALLVAULT_OIDC_SCOPES",
        default_value = "openid profile email"
    )]
    pub oidc_scopes: String,
    /// The claim naming the user.
    #[arg(
        long,
        env = "CALLVAULT_OIDC_USERNAME_CLAIM",
        default_value = "preferred_username"
    )]
    pub oidc_username_claim: String,
    /// The claim listing the user's groups (their memberships follow it); empty = ignore groups.
    #[arg(long, env = "CALLVAULT_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// The provider as the sign-in page names it ("Sign in with NAME"); default: the
    /// issuer's host.
    #[arg(long, env = "CALLVAULT_OIDC_DISPLAY_NAME", value_name = "NAME")]
    pub oidc_display_name: Option<String>,
    /// File holding the bearer token of SCIM provisioning at `/scim/v2` (at least 32
    /// characters); SCIM is on when set.
    #[arg(long, env = "CALLVAULT_SCIM_TOKEN_FILE")]
    pub scim_token_file: Option<PathBuf>,
    /// Private key (PKCS#8 PEM, unprotected, e.g. from `callvault keys generate`) that signs
    /// checkpoints of the audit chain. Keep it out of the database's reach: with it, an audit
    /// trail rewritten in the database is detected up to the last checkpoint.
    #[arg(long, env = "CALLVAULT_AUDIT_KEY_FILE")]
    pub audit_key_file: Option<PathBuf>,
}

impl IdentityArgs {
    /// Sets `config.oidc` and `config.scim_token` (reading the secret files); `config` must
    /// already carry its public URL. Validation is left to [`PortalConfig::validate`].
    pub fn apply(&self, config: &mut PortalConfig) -> Result<(), ConfigError> {
        config.oidc = self.oidc(&config.public_url)?;
        config.scim_token = self
            .scim_token_file
            .as_deref()
            .map(|f| Secret::from_file("CALLVAULT_SCIM_TOKEN_FILE", f))
            .transpose()?;
        config.audit_key = self
            .audit_key_file
            .as_deref()
            .map(|f| {
                PrivateKey::read_pem_file(f, None)
                    .map(|k| AuditKey(Arc::new(k)))
                    .map_err(|e| ConfigError {
                        setting: "CALLVAULT_AUDIT_KEY_FILE",
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(())
    }

    fn oidc(&self, public_url: &str) -> Result<Option<OidcConfig>, ConfigError> {
        let Some(issuer) = self.oidc_issuer.as_deref().filter(|i| !i.trim().is_empty()) else {
            return Ok(None);
        };
        let secret = self.oidc_client_secret_file.as_deref().ok_or(ConfigError {
            setting: "CALLVAULT_OIDC_CLIENT_SECRET_FILE",
            reason: "is required with CALLVAULT_OIDC_ISSUER".to_owned(),
        })?;
        let redirect = match self.oidc_redirect_url.trim() {
            "" => format!(
                "{}/api/v1/auth/oidc/callback",
                public_url.trim_end_matches('/')
            ),
            url => url.to_owned(),
        };
        let mut c = OidcConfig::new(issuer.trim(), self.oidc_client_id.trim(), secret, redirect)?;
        c.scopes = self
            .oidc_scopes
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        c.username_claim = self.oidc_username_claim.trim().to_owned();
        c.groups_claim = Some(self.oidc_groups_claim.trim().to_owned()).filter(|g| !g.is_empty());
        if let Some(name) = &self.oidc_display_name {
            c.display_name = name.trim().to_owned();
        }
        Ok(Some(c))
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = PortalConfig {
        default_tenant: args.tenant.clone(),
        audit_retention_days: args.audit_retention_days,
        session_idle: Duration::from_secs(args.session_idle_timeout_minutes.saturating_mul(60)),
        session_absolute: Duration::from_secs(
            args.session_absolute_timeout_minutes.saturating_mul(60),
        ),
        secure_cookies: !args.insecure_cookies,
        public_url: args.public_url.clone(),
        ..PortalConfig::default()
    };
    args.edge.apply(&mut config)?;
    args.identity.apply(&mut config)?;
    let config = config.validate()?;
    let url = std::env::var("CALLVAULT_DATABASE_URL")
        .context("CALLVAULT_DATABASE_URL is not set (the vault database URL)")?;
    let keys = load_keys(args.key_dir.as_deref(), args.key_passphrase_file.as_deref())?;
    let storages = load_storages(
        args.storage_targets.as_deref(),
        args.storage_credentials.as_deref(),
    )?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let db = Db::connect(&url)
            .await
            .context("connecting to the database")?;
        // Jobs are started by the operator: only a portal that watches the cluster can ask it.
        let (access, jobs): (Arc<dyn AccessSource>, Arc<dyn JobRunner>) =
            match &args.access_profiles {
                Some(dir) => (
                    Arc::new(
                        FileAccessSource::load_dir(dir, &config.default_tenant)
                            .context("loading AccessProfiles")?,
                    ),
                    Arc::new(NoJobRunner),
                ),
                None => {
                    let ns: Vec<String> = args
                        .watch_namespaces
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                    let (access, jobs) = KubeAccessSource::connect(&ns).await.context(
                        "connecting to the Kubernetes API to watch AccessProfiles and start jobs",
                    )?;
                    (Arc::new(access), Arc::new(jobs))
                }
            };
        tracing::info!(
            keys = keys.len(),
            storages = storages.len(),
            "portal starting"
        );
        let portal = Portal::new(config, db, access, keys, storages, jobs);
        let listener = tokio::net::TcpListener::bind(&args.http_addr)
            .await
            .with_context(|| format!("binding {}", args.http_addr))?;
        let metrics = tokio::net::TcpListener::bind(&args.metrics_addr)
            .await
            .with_context(|| format!("binding {}", args.metrics_addr))?;
        tracing::info!(addr = %args.http_addr, metrics = %args.metrics_addr, "portal listening");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut ops_stopped = stopped.clone();
        let ops = tokio::spawn(callvault_portal::serve(
            metrics,
            portal.ops,
            portal.limits,
            async move {
                let _ = ops_stopped.wait_for(|s| *s).await;
            },
        ));
        let served = callvault_portal::serve(listener, portal.app, portal.limits, async {
            super::terminated().await;
        })
        .await;
        let _ = stop.send(true);
        ops.await.context("metrics server")??;
        drop(stopped);
        served?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn load_keys(dir: Option<&Path>, pass_file: Option<&Path>) -> anyhow::Result<KeyRing> {
    let mut ring = KeyRing::new();
    let Some(dir) = dir else {
        tracing::warn!("no key directory: recordings cannot be played or downloaded");
        return Ok(ring);
    };
    let pass = match pass_file {
        Some(p) => Some(zeroize::Zeroizing::new(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        )),
        None => None,
    };
    let needs = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|t| is_encrypted_pem(&zeroize::Zeroizing::new(t)));
    if needs && pass.is_none() {
        anyhow::bail!(
            "{} holds passphrase-protected keys: set CALLVAULT_KEY_PASSPHRASE_FILE",
            dir.display()
        );
    }
    ring.load_dir(dir, pass.as_ref().map(|p| p.as_bytes()))?;
    Ok(ring)
}

fn load_storages(dir: Option<&Path>, creds: Option<&Path>) -> anyhow::Result<Storages> {
    let out = Storages::new();
    let Some(dir) = dir else {
        return Ok(out);
    };
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let resources = callvault_crds::validate_yaml(&text).map_err(|errors| {
            anyhow::anyhow!(
                "{}: {}",
                path.display(),
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        for r in resources {
            if let callvault_crds::Resource::StorageTarget(st) = r {
                let name = st.metadata.name.clone().unwrap_or_default();
                let dir = creds.map(|c| c.join(&name)).filter(|p| p.is_dir());
                let storage = open_storage(&name, &st, dir.as_deref())?;
                out.insert(name, storage);
            }
        }
    }
    Ok(out)
}

/// Opens a StorageTarget, with its credentials from `credentials_dir` (one file per key, as a
/// mounted Secret) when it has one.
pub(crate) fn open_storage(
    name: &str,
    target: &callvault_crds::StorageTarget,
    credentials_dir: Option<&Path>,
) -> anyhow::Result<Storage> {
    let config = StorageConfig::from_spec(&serde_json::to_value(&target.spec)?)
        .with_context(|| format!("StorageTarget {name:?}"))?;
    let credentials = match credentials_dir {
        Some(dir) => Credentials::from_dir(dir)
            .with_context(|| format!("credentials of StorageTarget {name:?}"))?,
        None => Credentials::none(),
    };
    objstore::open(&config, &credentials).with_context(|| format!("opening StorageTarget {name:?}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        identity: IdentityArgs,
    }

    /// The options as the command line gives them (with their defaults).
    fn parse(args: &[&str]) -> IdentityArgs {
        Cli::try_parse_from(std::iter::once("callvault").chain(args.iter().copied()))
            .expect("options")
            .identity
    }

    fn file(dir: &Path, name: &str, content: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, content).expect("write");
        p.display().to_string()
    }

    fn base() -> PortalConfig {
        PortalConfig {
            public_url: "https://portal.example/".into(),
            ..PortalConfig::default()
        }
    }

    #[test]
    fn identity_settings_come_from_files_and_are_checked_with_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let token = format!("{}\n", "t".repeat(40));
        let args = parse(&[
            "--oidc-issuer=https://idp.example",
            "--oidc-client-id=portal",
            &format!("--oidc-client-secret-file={}", file(d, "cs", "s3cret\n")),
            "--oidc-scopes=openid profile groups",
            "--oidc-groups-claim=",
            &format!("--scim-token-file={}", file(d, "scim", &token)),
        ]);
        let mut config = base();
        args.apply(&mut config).expect("apply");
        let config = config.validate().expect("valid");
        let oidc = config.oidc.as_ref().expect("oidc on");
        assert_eq!(
            oidc.redirect_url, "https://portal.example/api/v1/auth/oidc/callback",
            "derived from the public URL"
        );
        assert_eq!(oidc.client_secret.expose(), "s3cret", "newline dropped");
        assert_eq!(oidc.scopes, ["openid", "profile", "groups"]);
        assert_eq!(oidc.username_claim, "preferred_username");
        assert_eq!(
            oidc.display_name, "idp.example",
            "the issuer's host by default"
        );
        assert_eq!(
            oidc.groups_claim, None,
            "an empty claim leaves groups alone"
        );
        assert_eq!(
            config.scim_token.as_ref().map(|t| t.expose().len()),
            Some(40)
        );
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("tttt"),
            "secrets are not printed: {printed}"
        );

        // Off unless set.
        let mut config = base();
        parse(&[]).apply(&mut config).expect("apply");
        assert!(config.oidc.is_none() && config.scim_token.is_none());

        // Each problem names its setting.
        let e = parse(&["--oidc-issuer=https://idp.example"])
            .apply(&mut base())
            .expect_err("no secret file");
        assert_eq!(e.setting, "CALLVAULT_OIDC_CLIENT_SECRET_FILE");
        let mut config = base();
        parse(&[&format!(
            "--scim-token-file={}",
            file(d, "short", "short-token")
        )])
        .apply(&mut config)
        .expect("apply");
        assert_eq!(
            config.validate().expect_err("short token").setting,
            "CALLVAULT_SCIM_TOKEN_FILE"
        );
        let absent = d.join("absent").display().to_string();
        let e = parse(&[&format!("--scim-token-file={absent}")])
            .apply(&mut base())
            .expect_err("absent");
        assert_eq!(e.setting, "CALLVAULT_SCIM_TOKEN_FILE");
        let mut config = base();
        parse(&[
            "--oidc-issuer=idp.example",
            "--oidc-client-id=portal",
            &format!("--oidc-client-secret-file={}", file(d, "cs2", "x")),
        ])
        .apply(&mut config)
        .expect("apply");
        assert_eq!(
            config.validate().expect_err("no scheme").setting,
            "CALLVAULT_OIDC_ISSUER"
        );

        // The sign-in button's name: set, or refused when blank.
        let secret = file(d, "cs3", "x");
        let named = |name: &str| {
            let mut config = base();
            parse(&[
                "--oidc-issuer=https://idp.example",
                "--oidc-client-id=portal",
                &format!("--oidc-client-secret-file={secret}"),
                &format!("--oidc-display-name={name}"),
            ])
            .apply(&mut config)
            .expect("apply");
            config.validate()
        };
        let config = named(" Example Bank SSO ").expect("valid");
        assert_eq!(
            config.oidc.as_ref().map(|o| o.display_name.as_str()),
            Some("Example Bank SSO")
        );
        assert_eq!(
            named("  ").expect_err("blank name").setting,
            "CALLVAULT_OIDC_DISPLAY_NAME"
        );
    }
}
