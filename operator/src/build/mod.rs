//! Pure builders of the objects each controller applies.

pub mod recording_profile;

mod names;

pub use names::child_name;
