//! Not built yet: see the project's issues.
pub mod media;
