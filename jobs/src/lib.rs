//! CronJob workloads: retention (expiry, deferred deletions, audit purge), space-based cleanup
//! of full filesystem targets, archive (Connector copies) and recording assurance (a test call
//! through a profile, checked end to end); transcription lives in its own module.
pub mod alarms;
pub mod archive;
pub mod assurance;
pub mod cluster;
pub mod retention;
pub mod space;
pub mod transcribe;
pub mod vault;

pub use archive::{
    ArchiveFailure, ArchiveJob, ArchiveMode, ArchiveSummary, RunOutcome, run_archive,
};
pub use retention::{
    DELETE_ACTION, EXPIRE_ACTION, FailedStep, HOLD_SKIP_ACTION, RetentionError, RetentionFailure,
    RetentionOptions, RetentionSummary, SYSTEM_ACTOR, Target, run_retention,
};
