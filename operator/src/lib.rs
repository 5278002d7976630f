//! The CallVault operator: one controller per custom resource. Each controller's build step is
//! pure (resources in, child objects out) so it is tested without a cluster.

pub mod build;
pub mod render;
pub mod scale;

pub use render::{RenderError, render_recorder_config};
pub use scale::desired_replicas;
