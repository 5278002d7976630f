//! Pure builders of the objects each controller applies.

pub mod assurance;
pub mod connector;
pub mod job;
pub mod meta;
pub mod pod;
pub mod recording_profile;
pub mod speech_job;
pub mod storage_target;

mod names;

pub use meta::{MANAGER, Owner};
pub use names::child_name;
