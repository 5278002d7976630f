//! `callvault job …`: the scheduled workloads.

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Remove expired recordings and carry out deferred deletions.
    Retention,
    /// Copy recordings to a Connector's destination.
    Archive,
    /// Transcribe recordings for a SpeechJob.
    Transcribe,
}

pub fn run(job: JobCommand) -> anyhow::Result<ExitCode> {
    super::not_built(match job {
        JobCommand::Retention => "job retention",
        JobCommand::Archive => "job archive",
        JobCommand::Transcribe => "job transcribe",
    })
}
