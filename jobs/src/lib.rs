//! CronJob workloads: retention (expiry, deferred deletions, audit purge); archive and
//! transcription come later.
pub mod retention;

pub use retention::{
    DELETE_ACTION, EXPIRE_ACTION, FailedStep, HOLD_SKIP_ACTION, RetentionError, RetentionFailure,
    RetentionOptions, RetentionSummary, SYSTEM_ACTOR, Target, run_retention,
};
