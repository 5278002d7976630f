//! Not built yet: see the project's issues.
pub mod media;
pub mod metadata;
pub mod multipart;
pub mod rules;
pub mod sdp;
pub mod sip;
