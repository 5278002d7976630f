//! The CallVault operator: one controller per custom resource. Each follows dereference →
//! validate → build (pure, in [`build`]) → apply (server-side apply, one field manager) →
//! status. [`run`] starts them all with the HTTP endpoints.

pub mod backoff;
pub mod build;
pub mod conditions;
pub mod controller;
pub mod drift;
pub mod load;
pub mod metrics;
pub mod render;
pub mod scale;
pub mod speech_config;
pub mod status;

pub use controller::{Config, ConfigError, Error, Scope, connect, run};
pub use render::{RenderError, render_recorder_config};
pub use scale::desired_replicas;
