//! The CallVault portal: the HTTP API under `/api/v1` (OpenAPI at `/api/v1/openapi.json`),
//! local sign-in with cookie sessions, access control from AccessProfiles, playback and
//! downloads decrypted on the fly, exports, the audit trail, and the web UI that uses them.
//!
//! [`Portal::new`] builds the whole application in-process, so `callvault portal` and
//! `callvault standalone` serve the same router.

pub mod access;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod export;
pub mod media;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod scim;
pub mod ui;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use callvault_store::db::Db;
use callvault_store::keys::KeyRing;
use callvault_store::objstore::Storage;

pub use access::{AccessSource, FileAccessSource, KubeAccessSource};
pub use config::{AuditKey, ConfigError, PortalConfig};
pub use error::{ApiError, Code};

/// Storage targets by name (a recording row names its target; archive copies name theirs).
pub type Storages = HashMap<String, Storage>;

/// Everything a request handler needs; shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub config: PortalConfig,
    pub db: Db,
    pub access: Arc<dyn AccessSource>,
    pub keys: Arc<KeyRing>,
    pub storages: Storages,
    pub throttle: auth::Throttle,
    pub metrics: metrics::Metrics,
    /// Single sign-on, when configured.
    pub oidc: Option<oidc::Oidc>,
}

/// The portal application.
#[derive(Debug)]
pub struct Portal;

impl Portal {
    /// The portal's router: the web UI, the API, `/healthz`, `/readyz` and `/metrics`. `config` must have
    /// passed [`PortalConfig::validate`].
    // The application is its router: standalone nests it beside its own routes.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        config: PortalConfig,
        db: Db,
        access: Arc<dyn AccessSource>,
        keys: KeyRing,
        storages: Storages,
    ) -> axum::Router {
        let throttle =
            auth::Throttle::new(config.login_attempts_per_minute, Duration::from_secs(60));
        let oidc = config.oidc.clone().map(oidc::Oidc::new);
        let state = Arc::new(AppState {
            config,
            db,
            access,
            keys: Arc::new(keys),
            storages,
            throttle,
            metrics: metrics::Metrics::default(),
            oidc,
        });
        if state.config.audit_key.is_some()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(api::checkpoint_audit_chains(state.clone()));
        }
        api::router(state).merge(ui::router())
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
