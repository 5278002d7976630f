//! Typed runtime configuration of the CallVault workloads, each validated in one place.
//!
//! The recorder's [`RecorderConfig`] and the jobs' [`ArchiveJobConfig`] and
//! [`TranscribeJobConfig`] are rendered by the operator (cluster) or built in-process
//! (standalone) from the same resources. This crate links neither kube nor the CRD types, so
//! the recorder never does either.

mod jobs;
mod problem;
pub mod profiles;
mod recorder;
pub mod rules;

pub use jobs::{
    ArchiveJobConfig, AssuranceJobConfig, DEFAULT_JOB_CONFIG_PATH, DirectionFilter, EngineConfig,
    EngineKind, JOB_NAMESPACE_ENV, JobConfigError, KeyRingConfig, SmtpConfig, SmtpSecurity,
    SpaceCleanupJobConfig, SpeechFilterConfig, StorageBinding, TranscribeJobConfig, TranscribeMode,
    ValidArchiveJobConfig, ValidAssuranceJobConfig, ValidSpaceCleanupJobConfig,
    ValidStorageBinding, ValidTranscribeJobConfig,
};
pub use problem::{Invalid, Problem};
pub use recorder::{
    Advertise, ChannelLayout, EncryptionConfig, LoadError, MediaAddress, MediaConfig, OtherProfile,
    PortRange, RecorderConfig, SipConfig, SipTransport, SpoolLimits, SrtpPolicy,
    ValidRecorderConfig,
};
pub use rules::{RecordingRules, Rules};

/// Instants the recording rules are evaluated at (re-exported so callers need not depend on
/// the time library themselves).
pub use jiff::Timestamp;
