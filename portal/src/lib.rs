//! The CallVault portal: the HTTP API under `/api/v1` (OpenAPI at `/api/v1/openapi.json`),
//! local sign-in with cookie sessions, access control from AccessProfiles, playback and
//! downloads decrypted on the fly, exports, the audit trail, and the web UI that uses them.
//!
//! [`Portal::new`] builds the whole application in-process, so `callvault portal` and
//! `callvault standalone` serve the same router. Metrics are served apart from it, on the
//! operations router, so the users' listener never exposes them.

pub mod access;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod export;
pub mod jobs;
pub mod media;
pub mod metrics;
pub mod net;
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
pub use jobs::{AnnotateRunNow, JobRunner, NoJobRunner};
pub use net::{ServerLimits, serve};

/// Storage targets by name (a recording row names its target; archive copies name theirs).
/// A shared handle: whoever opened the targets can add and replace them while the portal runs
/// (standalone, when a StorageTarget is added), and playback finds them at once.
#[derive(Debug, Clone, Default)]
pub struct Storages(Arc<std::sync::RwLock<HashMap<String, Storage>>>);

impl Storages {
    pub fn new() -> Self {
        Self::default()
    }

    /// The target `name`, if open.
    pub fn get(&self, name: &str) -> Option<Storage> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn insert(&self, name: String, storage: Storage) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, storage);
    }

    /// Replaces every target with `all`.
    pub fn replace(&self, all: Storages) {
        let all = std::mem::take(&mut *all.0.write().unwrap_or_else(|e| e.into_inner()));
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything a request handler needs; shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub config: PortalConfig,
    pub db: Db,
    pub access: Arc<dyn AccessSource>,
    pub keys: Arc<KeyRing>,
    pub storages: Storages,
    pub throttle: auth::Throttle,
    pub hasher: auth::Hasher,
    pub failed_sign_ins: auth::FailedSignIns,
    pub metrics: metrics::Metrics,
    /// Single sign-on, when configured.
    pub oidc: Option<oidc::Oidc>,
    /// Starts jobs on request ("Run now").
    pub jobs: Arc<dyn JobRunner>,
}

/// The portal application: the router users reach, and the operations router (`/metrics`,
/// `/healthz`, `/readyz`) for a separate, internal address.
#[derive(Debug)]
pub struct Portal {
    pub app: axum::Router,
    pub ops: axum::Router,
    /// The server timeouts to [`serve`] both with.
    pub limits: net::ServerLimits,
}

impl Portal {
    /// Builds the portal. `config` must have passed [`PortalConfig::validate`]. Must be
    /// called within a Tokio runtime (failed sign-in summaries are written by a task).
    pub fn new(
        config: PortalConfig,
        db: Db,
        access: Arc<dyn AccessSource>,
        keys: KeyRing,
        storages: Storages,
        jobs: Arc<dyn JobRunner>,
    ) -> Portal {
        let throttle = auth::Throttle::new(
            config.login_attempts_per_minute,
            Duration::from_secs(60),
            u32::try_from(config.lockout_failures).unwrap_or(u32::MAX),
            config.lockout,
        );
        let hasher = auth::Hasher::new(config.hashing_concurrency, config.hashing_queue);
        let failed_sign_ins =
            auth::FailedSignIns::new(config.failed_login_audit_window, &config.default_tenant);
        let limits = net::ServerLimits {
            header_timeout: config.header_timeout,
        };
        let oidc = config.oidc.clone().map(oidc::Oidc::new);
        let state = Arc::new(AppState {
            config,
            db,
            access,
            keys: Arc::new(keys),
            storages,
            throttle,
            hasher,
            failed_sign_ins,
            metrics: metrics::Metrics::default(),
            oidc,
            jobs,
        });
        tokio::spawn(api::write_failed_sign_in_summaries(Arc::downgrade(&state)));
        if state.config.audit_key.is_some() {
            tokio::spawn(api::checkpoint_audit_chains(Arc::downgrade(&state)));
        }
        Portal {
            app: api::router(state.clone()).merge(ui::router()).layer(
                axum::middleware::from_fn_with_state(state.clone(), net::edge),
            ),
            ops: api::ops_router(state),
            limits,
        }
    }
}
